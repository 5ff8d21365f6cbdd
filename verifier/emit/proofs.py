"""Per obligation: how many of its Coq lemmas are closed by `Qed`, how many are `Admitted` (and
why), and how many Lean theorems are `sorry`, read off the emitted files themselves so that
the counts are those of the artifacts.

Each obligation's part of a file starts at its comment `(* obligation NAME (kind): ... *)`
(`-- obligation NAME (kind): ...` in Lean) and runs to the next one; the Jacobian lemmas of
the Derivations section belong to no obligation and are not counted.
"""

from __future__ import annotations

import re

from ..engines.verdict import Verdict
from ..obligations import Model

_COQ_OBLIGATION = re.compile(r"^\(\* obligation (\S+) \(", re.MULTILINE)
_COQ_END = re.compile(r"^(Qed|Admitted)\.$", re.MULTILINE)
_COQ_REASON = re.compile(r"^\(\* Admitted: (.*) \*\)$", re.MULTILINE)
_COQ_NOT_STATED = re.compile(r"^\(\* not stated(?: as a lemma)?: (.*) \*\)$"
                             r"|^\(\* (entries \S+ are not stated .*) \*\)$", re.MULTILINE)
_LEAN_OBLIGATION = re.compile(r"^-- obligation (\S+) \(", re.MULTILINE)
_LEAN_SORRY = re.compile(r"^  sorry$", re.MULTILINE)


def _blocks(pattern: re.Pattern, text: str) -> dict[str, str]:
    """obligation name -> its part of the file."""
    starts = [(m.start(), m.group(1)) for m in pattern.finditer(text)]
    ends = [pos for pos, _ in starts[1:]] + [len(text)] * bool(starts)
    return {name: text[pos:end] for (pos, name), end in zip(starts, ends, strict=True)}


def coq_counts(text: str) -> dict[str, dict]:
    """{obligation: {coq_qed, coq_admitted, admitted_reasons, not_stated}} of a `.v` file's
    text; `not_stated`: why the claim (or some of its entries) has no lemma, else None."""
    out = {}
    for name, block in _blocks(_COQ_OBLIGATION, text).items():
        ends = _COQ_END.findall(block)
        missing = [a or b for a, b in _COQ_NOT_STATED.findall(block)]
        out[name] = {"coq_qed": ends.count("Qed"), "coq_admitted": ends.count("Admitted"),
                     "admitted_reasons": sorted(set(_COQ_REASON.findall(block))),
                     "not_stated": "; ".join(missing) if missing else None}
    return out


def lean_counts(text: str) -> dict[str, int]:
    """{obligation: number of `sorry` proofs} of a `.lean` file's text."""
    return {name: len(_LEAN_SORRY.findall(block))
            for name, block in _blocks(_LEAN_OBLIGATION, text).items()}


def counts_of(model: Model, coq_text: str, lean_text: str) -> dict[str, dict]:
    """{obligation: {coq_qed, coq_admitted, lean_sorry, admitted_reasons, not_stated}} of the
    two files, every obligation of the model present (zeros where it has no lemma)."""
    coq, lean = coq_counts(coq_text), lean_counts(lean_text)
    empty = {"coq_qed": 0, "coq_admitted": 0, "admitted_reasons": [],
             "not_stated": "no obligation comment in the Coq file"}
    return {ob.name: {**coq.get(ob.name, empty), "lean_sorry": lean.get(ob.name, 0)}
            for ob in model.obligations}


def proof_counts(model: Model, verdicts: list[Verdict], *, coqc: str | None = "auto"
                 ) -> dict[str, dict]:
    """Emit the Coq and Lean files of `model` (as `verify` writes them; the Coq emission is
    shared with a `.v` emitted for the same model and verdicts) and count their proofs."""
    from . import coq, lean  # coq imports json_export, which calls this

    (coq_text,) = coq.emit(model, verdicts, coqc=coqc).values()
    (lean_text,) = lean.emit(model, verdicts).values()
    return counts_of(model, coq_text, lean_text)
