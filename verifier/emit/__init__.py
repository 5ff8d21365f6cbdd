"""Emitters write artifacts; each is registered with what it can express."""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Emitter:
    name: str
    module: str  # verifier.emit.<module> exposes emit(model, verdicts) -> {file: text}
    suffix: str
    # emit(model, verdicts, others) also gets the names of the files the other emitters write
    # for the same spec (the HTML report links them), so it runs after them
    links: bool = False

    def emit(self, model, verdicts, others=()) -> dict[str, str]:
        module = importlib.import_module(f"verifier.emit.{self.module}")
        if self.links:
            return module.emit(model, verdicts, tuple(sorted(others)))
        return module.emit(model, verdicts)


def render(model, verdicts, targets) -> dict[str, str]:
    """{file: text} of every target, the linking emitters last (they see the others' files)."""
    files: dict[str, str] = {}
    order = list(EMITTERS)  # the registry's order: the JSON export after the Coq file
    for t in sorted(targets, key=lambda t: (EMITTERS[t].links, order.index(t))):
        files.update(EMITTERS[t].emit(model, verdicts, files))
    return files


EMITTERS: dict[str, Emitter] = {
    "smtlib": Emitter("smtlib", "smtlib", ".smt2"),
    "coq": Emitter("coq", "coq", ".v"),
    "lean": Emitter("lean", "lean", ".lean"),
    "json": Emitter("json", "json_export", ".json"),
    "latex": Emitter("latex", "latex", ".tex"),
    "cert": Emitter("cert", "certificate", ".cert.json"),
    "html": Emitter("html", "html", ".html", links=True),
}
