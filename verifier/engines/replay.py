"""Re-evaluate an obligation at a point, exactly or in high precision.

A candidate counterexample (from z3, sampling or random testing) becomes `refuted` only if it
replays here: every domain bound and hypothesis holds and some goal atom fails, exactly in
rational arithmetic when the terms are piecewise rational, otherwise with mpmath at 60 digits
and a margin far above the rounding error.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import mpmath
import sympy as sp

from ..layers.activations import MP_FUNCTIONS, leaky_relu, leaky_step, relu, step
from ..obligations import Atom, Obligation
from ..symbolic.program import Program

DPS = 60
MARGIN = mpmath.mpf(10) ** (-30)


class _NotExact(Exception):
    pass


def _mp(e: sp.Expr, env: dict):
    """Evaluate a small expression with mpmath (recursion depth = expression depth)."""
    if e in env:
        return env[e]
    if e.is_Rational:
        return mpmath.mpf(e.p) / e.q
    if e.is_Number:
        return mpmath.mpf(str(e))
    if isinstance(e, sp.Piecewise):
        for expr, cond in e.args:
            if _mp_bool(cond, env):
                return _mp(expr, env)
        raise _NotExact("Piecewise with no branch taken")
    args = [_mp(a, env) for a in e.args]
    if e.is_Add:
        return mpmath.fsum(args)
    if e.is_Mul:
        out = mpmath.mpf(1)
        for a in args:
            out *= a
        return out
    if e.is_Pow:
        if not e.exp.is_Integer and (args[0] < 0 or (args[0] == 0 and args[1] < 0)):
            raise OutsideDomain(f"{e.base} = {mpmath.nstr(args[0], 8)} outside the domain "
                                f"of the real power x^({e.exp})")
        return args[0] ** args[1]
    f = type(e)
    if f in MP_FUNCTIONS:
        return MP_FUNCTIONS[f](args[0])
    if f is relu:
        return args[0] if args[0] > 0 else mpmath.mpf(0)
    if f is step:
        return mpmath.mpf(1) if args[0] > 0 else mpmath.mpf(0)
    if f is leaky_relu:
        return args[0] if args[0] > 0 else args[1] * args[0]
    if f is leaky_step:
        return mpmath.mpf(1) if args[0] > 0 else args[1]
    if isinstance(e, sp.Abs):
        return abs(args[0])
    if isinstance(e, sp.Max):
        return max(args)
    if isinstance(e, sp.Min):
        return min(args)
    if e == sp.pi:
        return mpmath.pi
    raise _NotExact(f"cannot evaluate {f}")


class OutsideDomain(ArithmeticError):
    """A real power x^(p/q) evaluated at x < 0 (or x = 0 for p/q < 0)."""


def _mp_bool(c, env) -> bool:
    if c is sp.true:
        return True
    if c is sp.false:
        return False
    if isinstance(c, sp.And):
        return all(_mp_bool(a, env) for a in c.args)
    if isinstance(c, sp.Or):
        return any(_mp_bool(a, env) for a in c.args)
    if isinstance(c, sp.Not):
        return not _mp_bool(c.args[0], env)
    left, right = _mp(c.lhs, env), _mp(c.rhs, env)
    if abs(left - right) < MARGIN and c.rel_op != "==":
        raise _NotExact("a branch condition is too close to its boundary to decide")
    return {"==": left == right, "!=": left != right, "<=": left <= right, "<": left < right,
            ">=": left >= right, ">": left > right}[c.rel_op]


def _fraction(e: sp.Expr, env: dict) -> Fraction:
    """Exact value of a piecewise-rational expression (recursion depth = expression depth);
    `_NotExact` for anything else (tanh, exp, sqrt, ... or a division by zero)."""
    if e in env:
        return env[e]
    if e.is_Rational:
        return Fraction(int(e.p), int(e.q))
    if isinstance(e, sp.Add):
        return sum((_fraction(a, env) for a in e.args), Fraction(0))
    if isinstance(e, sp.Mul):
        out = Fraction(1)
        for a in e.args:
            out *= _fraction(a, env)
        return out
    if isinstance(e, sp.Pow) and e.exp.is_Integer:
        b = _fraction(e.base, env)
        if b == 0 and e.exp < 0:
            raise _NotExact
        return b ** int(e.exp)
    if isinstance(e, relu):
        return max(_fraction(e.args[0], env), Fraction(0))
    if isinstance(e, leaky_relu):
        x, a = _fraction(e.args[0], env), _fraction(e.args[1], env)
        return x if x > 0 else a * x
    if isinstance(e, (sp.Max, sp.Min)):
        vals = [_fraction(a, env) for a in e.args]
        return max(vals) if isinstance(e, sp.Max) else min(vals)
    if isinstance(e, sp.Abs):
        return abs(_fraction(e.args[0], env))
    # anything else: sympy's own evaluation, kept only when it is an exact rational
    sub = {s: sp.Rational(v.numerator, v.denominator) for s, v in env.items()
           if s in e.free_symbols}
    v = e.xreplace(sub)
    if not v.is_Rational:
        raise _NotExact
    return Fraction(int(v.p), int(v.q))


def evaluate(program: Program, exprs, point: dict[sp.Symbol, Fraction]):
    """Values of the expressions at the point: exact sympy Rationals where possible.

    Returns (values, exact) where exact tells whether all values are exact rationals.
    """
    exact_env = {s: sp.Rational(v.numerator, v.denominator) for s, v in point.items()}
    steps = program.slice(exprs)
    try:
        env = {s: Fraction(v) for s, v in point.items()}
        for sym, d in steps:
            env[sym] = _fraction(d, env)
        vals = [_fraction(sp.sympify(e), env) for e in exprs]
        return [sp.Rational(v.numerator, v.denominator) for v in vals], True
    except _NotExact:
        pass
    with mpmath.workdps(DPS):
        env_mp = {s: mpmath.mpf(v.p) / v.q for s, v in exact_env.items()}
        for sym, d in steps:
            env_mp[sym] = _mp(d, env_mp)
        return [_mp(sp.sympify(e), env_mp) for e in exprs], False


@dataclass(frozen=True, slots=True)
class Replay:
    violated: bool
    exact: bool
    atom: Atom | None = None
    lhs: object = None
    rhs: object = None


def _fails(atom: Atom, left, right, exact: bool) -> bool:
    if exact:
        return not atom.holds(left, right)
    return atom.slack(left, right) < -MARGIN if atom.op != "!=" else abs(left - right) < MARGIN


def _holds_surely(atom: Atom, left, right, exact: bool) -> bool:
    if exact:
        return atom.holds(left, right)
    if atom.op == "==":
        return False  # an equality hypothesis cannot be confirmed in floating point
    return atom.slack(left, right) > MARGIN


def replay(ob: Obligation, program: Program, point: dict[sp.Symbol, Fraction]) -> Replay:
    """Does the point violate the obligation? Only a sure violation counts."""
    for v in ob.variables:
        x = point.get(v.symbol)
        if x is None:
            return Replay(False, True)
        if (v.lo is not None and x < Fraction(str(v.lo))) or (
            v.hi is not None and x > Fraction(str(v.hi))
        ):
            return Replay(False, True)
    atoms = list(ob.hypotheses) + list(ob.goal)
    terms = [t for a in atoms for t in (a.lhs, a.rhs)]
    with mpmath.workdps(DPS):
        try:
            vals, exact = evaluate(program, terms, point)
        except OutsideDomain:  # the claim says nothing there: not a counterexample
            return Replay(False, False)
        hyp_n = len(ob.hypotheses)
        for k, a in enumerate(ob.hypotheses):
            if not _holds_surely(a, vals[2 * k], vals[2 * k + 1], exact):
                return Replay(False, exact)
        for k, a in enumerate(ob.goal):
            left, right = vals[2 * (hyp_n + k)], vals[2 * (hyp_n + k) + 1]
            if _fails(a, left, right, exact):
                return Replay(True, exact, a, left, right)
    return Replay(False, exact)


def show_value(v) -> str:
    """A printable exact or 20-digit value."""
    if isinstance(v, sp.Rational):
        return str(v)
    if isinstance(v, Fraction):
        return str(v)
    return mpmath.nstr(v, 20)
