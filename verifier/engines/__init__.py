"""Engines decide obligations. Each is registered by the obligation kind it accepts."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .verdict import PROVED, REFUTED, UNKNOWN, Verdict

if TYPE_CHECKING:  # sympy stays unimported for users of one engine (verify-vnn)
    from ..obligations import Obligation
    from ..symbolic.program import Program


def _identity(ob, program, timeout):
    from .identity import decide_identity

    return decide_identity(ob, program, timeout)


def _bound(ob, program, timeout):
    from .bounds import decide_bound

    return decide_bound(ob, program, timeout)


@dataclass(frozen=True, slots=True)
class Engine:
    name: str
    decide: Callable[[Obligation, Program, float], Verdict]
    kinds: tuple[str, ...]  # obligation kinds it accepts


ENGINES: dict[str, Engine] = {
    "identity": Engine("identity", _identity, ("identity",)),
    "bound": Engine("bound", _bound, ("bound",)),
}


def decide(ob: Obligation, program: Program, timeout: float) -> Verdict:
    """Run the engine that accepts this obligation's kind; time it."""
    start = time.perf_counter()
    if ob.shape_mismatch:
        return Verdict(name=ob.name, kind=ob.kind, verdict=REFUTED, engine="shapes",
                       reason=ob.shape_mismatch, artifact="shape check",
                       counterexample={"sizes": ob.shape_mismatch.rsplit(" at sizes ", 1)[-1]})
    empty = [v for v in ob.variables if v.lo is not None and v.hi is not None and v.lo > v.hi]
    if empty:
        e = empty[0]
        return Verdict(name=ob.name, kind=ob.kind, verdict=PROVED, engine="domain",
                       artifact=f"vacuous: the conditions confine {e.symbol} to the empty range "
                                f"[{e.lo}, {e.hi}]")
    for engine in ENGINES.values():
        if ob.kind in engine.kinds:
            try:
                v = engine.decide(ob, program, timeout)
            except (ArithmeticError, ValueError) as err:
                # an overflow or singular point inside an engine: no verdict, say why
                v = Verdict(name=ob.name, kind=ob.kind, verdict=UNKNOWN, engine=engine.name,
                            reason=f"numeric failure in the {engine.name} engine: "
                                   f"{type(err).__name__}: {err}")
            if v.smt is None and not v.details.pop("no_whole_box_smt", False):
                _attach_smt(v, ob, program)
            v.seconds = time.perf_counter() - start
            return v
    return Verdict(name=ob.name, kind=ob.kind, verdict=UNKNOWN, engine="none",
                   reason=f"no engine accepts {ob.kind} obligations")


def _attach_smt(v: Verdict, ob: Obligation, program: Program) -> None:
    """Every obligation gets its SMT-LIB file where that file backs the verdict: the plain
    encoding, with z3's answer on it.

    For a claim refuted by a replayed search point, z3 answers `sat` on this text (or runs out
    of its short budget, which the report then says). For a proved claim the file is written
    only when z3 answers `unsat`: with smooth functions the whole-box encoding is an
    abstraction coarser than the branch and bound that proved the claim, and a file that z3
    answers `sat` must never stand next to a `proved`.
    """
    from ..emit.smtlib import encode
    from .z3run import run_z3

    try:
        query = encode(ob, program)
    except NotImplementedError:
        return
    answer = run_z3(query.text, 2.0).answer
    if v.verdict == PROVED and answer != "unsat":
        v.details.setdefault("notes", []).append(
            f"no whole-box SMT-LIB file: z3 answers `{answer}` on the whole-box encoding, "
            "which is coarser than the proof")
        return
    v.smt = query.text
    v.smt_answer = answer
