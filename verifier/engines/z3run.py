"""Run z3 on exactly the SMT-LIB text we emit, with a time limit."""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction

import z3


@dataclass(frozen=True, slots=True)
class Z3Result:
    answer: str  # "sat" | "unsat" | "unknown" | "timeout"
    model: dict[str, Fraction] | None  # SMT name (unquoted) → value, for sat
    reason: str = ""


def _value(v) -> Fraction | None:
    if z3.is_rational_value(v):
        f = v.as_fraction()
        return Fraction(f.numerator, f.denominator)
    if z3.is_algebraic_value(v):
        # an irrational model value: a 40-digit rational approximation, replayed exactly later
        return Fraction(v.as_decimal(40).rstrip("?"))
    return None


def run_z3(text: str, timeout: float) -> Z3Result:
    """Answer the script's `check-sat`; `timeout` in seconds, reported as its own answer.

    z3's nonlinear `qfnra-nlsat` tactic answers our abstraction queries several times faster
    than its default arithmetic solver; when it gives up (not on time) the default solver
    gets the rest of the time. Either way the answer is about exactly this text.
    """
    start = time.perf_counter()
    first = _check(z3.Tactic("qfnra-nlsat").solver(), text, timeout)
    if first.answer in ("sat", "unsat", "timeout"):
        return first
    left = timeout - (time.perf_counter() - start)
    if left <= 0.05:
        return Z3Result("timeout", None, "time limit reached")
    return _check(z3.Solver(), text, left)


def _check(solver, text: str, timeout: float) -> Z3Result:
    solver.set("timeout", max(1, int(timeout * 1000)))
    try:
        solver.from_string(text)
    except z3.Z3Exception as exc:  # our own text is malformed: a bug, not a user error
        from ..diagnostics import InternalError

        raise InternalError(f"z3 rejected emitted SMT-LIB: {exc}") from exc
    res = solver.check()
    if res == z3.unsat:
        return Z3Result("unsat", None)
    if res == z3.sat:
        m = solver.model()
        values = {d.name(): _value(m[d]) for d in m.decls() if d.arity() == 0}
        model = {k: v for k, v in values.items() if v is not None}
        return Z3Result("sat", model)
    reason = solver.reason_unknown()
    if "interrupted from keyboard" in reason:  # z3 takes Ctrl-C for itself: pass it on
        raise KeyboardInterrupt
    if "timeout" in reason or "canceled" in reason:
        return Z3Result("timeout", None, reason)
    return Z3Result("unknown", None, reason)
