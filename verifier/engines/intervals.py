"""Sound interval enclosures and linear envelopes over a `Program` slice.

Endpoints are exact `Fraction`s, or `-math.inf` / `math.inf` for unbounded sides (use
`bounds_of` to read them with `None` for infinity). Transcendental values are computed with
mpmath at 192 bits, widened by a margin far above mpmath's error and rounded outward to a
64-bit dyadic rational, so every enclosure contains the true value. A `Tape` compiles the slice
once (one instruction per sub-term, in program order) and re-runs it on many boxes, which is
what branch and bound needs. Linear envelopes of smooth activations (`envelope`) are chosen
by the usual chord / tangent / CROWN rules in floats, then *certified*: the offset of each line
is recomputed from a rigorous bound on the gap between line and function, so the float
heuristics affect tightness only, never soundness.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Callable

import mpmath
import sympy as sp

from ..layers.activations import (
    MP_FUNCTIONS, SMOOTH_FUNCTIONS, leaky_relu, leaky_step, relu, sigmoid, softplus, step,
)
from ..symbolic.program import Program

INF = math.inf
TOP = (-INF, INF)
PREC = 192  # bits for mpmath evaluations
BITS = 64  # significant bits kept in outward-rounded endpoints
_TIDY_BITS = 160  # denominators longer than this are rounded outward to BITS + 32 bits


def dyadic_out(t: Fraction, up: bool, bits: int = BITS) -> Fraction:
    """A rational with at most `bits` significant bits, >= t when `up`, else <= t."""
    if t == 0:
        return Fraction(0)
    k = bits - (t.numerator.bit_length() - t.denominator.bit_length())
    scaled = t * (Fraction(2) ** k)
    n = math.ceil(scaled) if up else math.floor(scaled)
    return Fraction(n) / (Fraction(2) ** k)


def _tidy(x, up: bool):
    if isinstance(x, Fraction) and x.denominator.bit_length() > _TIDY_BITS:
        return dyadic_out(x, up, BITS + 32)
    return x


def bounds_of(iv) -> tuple[Fraction | None, Fraction | None]:
    """The interval with None for infinite endpoints."""
    lo, hi = iv
    return (None if lo == -INF else lo, None if hi == INF else hi)


def _mpf(q: Fraction):
    return mpmath.mpf(q.numerator) / q.denominator


def _enclose(v) -> tuple[Fraction, Fraction]:
    """Outward-rounded rationals around an mpmath value accurate to far below the margin."""
    exact = _mp_to_fraction(v)
    slack = abs(exact) / (Fraction(2) ** 120) + Fraction(1, 2**160)
    return dyadic_out(exact - slack, False), dyadic_out(exact + slack, True)


def _mp_to_fraction(v) -> Fraction:
    man, exp = mpmath.mpf(v).man_exp
    return Fraction(man) * (Fraction(2) ** exp)


# ---- smooth functions: values, derivatives, shapes ---------------------------------------------


def _fl_sigmoid(x: float) -> float:
    return 0.5 * (1.0 + math.tanh(0.5 * x))


def _fl_softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


@dataclass(frozen=True, slots=True)
class SmoothFn:
    """What the enclosures need to know about one smooth increasing function."""

    name: str
    mp: Callable  # value at an mpf
    dmp: Callable  # derivative at an mpf
    fl: Callable[[float], float]
    dfl: Callable[[float], float]
    shape: str  # "s" (convex below 0, concave above), "convex" or "concave"
    range: tuple  # closed hull of the output range
    exact: dict  # rational points with rational values


SMOOTH: dict[type, SmoothFn] = {
    sp.tanh: SmoothFn("tanh", mpmath.tanh, lambda x: 1 - mpmath.tanh(x) ** 2, math.tanh,
                      lambda x: 1.0 - math.tanh(x) ** 2, "s", (-1, 1), {0: 0}),
    sigmoid: SmoothFn("sigmoid", MP_FUNCTIONS[sigmoid],
                      lambda x: MP_FUNCTIONS[sigmoid](x) * (1 - MP_FUNCTIONS[sigmoid](x)),
                      _fl_sigmoid, lambda x: _fl_sigmoid(x) * (1.0 - _fl_sigmoid(x)), "s",
                      (0, 1), {0: Fraction(1, 2)}),
    softplus: SmoothFn("softplus", MP_FUNCTIONS[softplus], MP_FUNCTIONS[sigmoid], _fl_softplus,
                       _fl_sigmoid, "convex", (0, INF), {}),
    sp.exp: SmoothFn("exp", mpmath.exp, mpmath.exp, math.exp, math.exp, "convex", (0, INF),
                     {0: 1}),
    sp.log: SmoothFn("log", mpmath.log, lambda x: 1 / x, math.log, lambda x: 1.0 / x,
                     "concave", (-INF, INF), {1: 0}),
}
_EXP_LIMIT = 2000  # |x| beyond which exp is bounded by its value at the limit


@lru_cache(maxsize=1 << 16)
def fn_value(fn: type, x: Fraction) -> tuple[Fraction, Fraction]:
    """A rigorous rational enclosure of fn(x) for a smooth function class and rational x."""
    f = SMOOTH[fn]
    if x in f.exact:
        v = Fraction(f.exact[x])
        return v, v
    if fn is sp.log and x <= 0:
        return TOP
    if fn is sp.exp and abs(x) > _EXP_LIMIT:
        lo, hi = fn_value(fn, Fraction(_EXP_LIMIT if x > 0 else -_EXP_LIMIT))
        return (lo, INF) if x > 0 else (Fraction(0), hi)
    with mpmath.workprec(PREC):
        lo, hi = _enclose(f.mp(_mpf(x)))
    return max(lo, f.range[0]), min(hi, f.range[1])


@lru_cache(maxsize=1 << 16)
def fn_deriv(fn: type, x: Fraction) -> tuple[Fraction, Fraction]:
    """A rigorous rational enclosure of fn'(x)."""
    with mpmath.workprec(PREC):
        lo, hi = _enclose(SMOOTH[fn].dmp(_mpf(x)))
    return max(lo, Fraction(0)), hi  # every registered function is increasing


def fn_interval(fn: type, iv) -> tuple:
    """Enclosure of fn over an interval, by monotonicity."""
    lo, hi = iv
    if fn is sp.log:
        if hi <= 0:
            return TOP
        lo = lo if lo > 0 else None
    rng = SMOOTH[fn].range
    out_lo = fn_value(fn, lo)[0] if lo not in (None, -INF) else rng[0]
    out_hi = fn_value(fn, hi)[1] if hi != INF else rng[1]
    return out_lo, out_hi


# ---- interval operations ---------------------------------------------------------------------


def _emul(x, y):
    if x == 0 or y == 0:
        return Fraction(0)  # 0 * inf = 0: the values themselves are finite
    return x * y


def iv_add(a, b):
    return _tidy(a[0] + b[0], False), _tidy(a[1] + b[1], True)


def iv_scale(c: Fraction, a):
    lo, hi = _emul(c, a[0]), _emul(c, a[1])
    return (lo, hi) if c >= 0 else (hi, lo)


def iv_mul(a, b):
    """Product of two intervals (any signs)."""
    ps = [_emul(x, y) for x in a for y in b]
    return _tidy(min(ps), False), _tidy(max(ps), True)


def iv_recip(a):
    lo, hi = a
    if lo > 0 or hi < 0:
        return (Fraction(0) if hi == INF else _tidy(1 / Fraction(hi), False),
                Fraction(0) if lo == -INF else _tidy(1 / Fraction(lo), True))
    return TOP


def iv_pow(a, n: int):
    """a ** n for an integer n; even powers are non-negative and exact at 0."""
    if n == 0:
        return Fraction(1), Fraction(1)
    if n < 0:
        return iv_recip(iv_pow(a, -n))
    lo, hi = a
    if n % 2 == 1 or lo >= 0:
        return lo**n, hi**n
    if hi <= 0:
        return hi**n, lo**n
    return Fraction(0), max(-lo, hi) ** n


def iv_rpow(a, r: Fraction):
    """a ** r for a non-integer rational r (defined for a >= 0), by monotonicity."""
    lo, hi = max(a[0], Fraction(0)), a[1]
    if hi < 0 or (r < 0 and lo == 0):
        return TOP
    with mpmath.workprec(PREC):
        ends = [(_enclose(mpmath.power(_mpf(x), _mpf(r))) if x != INF else (INF, INF))
                if x != 0 else (Fraction(0), Fraction(0)) for x in (lo, hi)]
    if r > 0:
        return ends[0][0], ends[1][1]
    return (Fraction(0) if hi == INF else ends[1][0]), ends[0][1]


def iv_abs(a):
    lo, hi = a
    if lo >= 0:
        return a
    if hi <= 0:
        return -hi, -lo
    return Fraction(0), max(-lo, hi)


def iv_relu(a):
    return max(a[0], Fraction(0)), max(a[1], Fraction(0))


def iv_step(a):
    if a[0] > 0:
        return Fraction(1), Fraction(1)
    if a[1] <= 0:
        return Fraction(0), Fraction(0)
    return Fraction(0), Fraction(1)


def hull(*ivs):
    return min(i[0] for i in ivs), max(i[1] for i in ivs)


def iv_leaky(a, alpha):
    parts = []
    if a[1] > 0:
        parts.append((max(a[0], Fraction(0)), a[1]))
    if a[0] <= 0:
        parts.append(iv_mul(alpha, (a[0], min(a[1], Fraction(0)))))
    return hull(*parts)


def iv_leaky_step(a, alpha):
    if a[0] > 0:
        return Fraction(1), Fraction(1)
    if a[1] <= 0:
        return alpha
    return hull((Fraction(1), Fraction(1)), alpha)


def const_interval(e: sp.Expr):
    """A rational enclosure of a sympy number."""
    if e.is_Rational:
        q = Fraction(int(e.p), int(e.q))
        return q, q
    if e.is_Float:  # its binary value and its decimal text may differ; take both
        a, b = Fraction(str(sp.Rational(e))), Fraction(str(sp.Rational(str(e))))
        return min(a, b), max(a, b)
    if e.is_number and e.is_real:
        with mpmath.workprec(PREC):
            return _enclose(mpmath.mpf(str(e.evalf(70))))
    return TOP
