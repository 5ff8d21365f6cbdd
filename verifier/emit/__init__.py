"""Emitters write artifacts; each is registered with what it can express."""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Emitter:
    name: str
    module: str  # verifier.emit.<module> exposes emit(model, verdicts) -> {file: text}
    suffix: str

    def emit(self, model, verdicts) -> dict[str, str]:
        return importlib.import_module(f"verifier.emit.{self.module}").emit(model, verdicts)


EMITTERS: dict[str, Emitter] = {
    "smtlib": Emitter("smtlib", "smtlib", ".smt2"),
    "coq": Emitter("coq", "coq", ".v"),
    "lean": Emitter("lean", "lean", ".lean"),
    "json": Emitter("json", "json_export", ".json"),
    "latex": Emitter("latex", "latex", ".tex"),
}
