"""Sound interval enclosures and linear envelopes over a `Program` slice.

Endpoints are exact `Fraction`s, or `-math.inf` / `math.inf` for unbounded sides (use
`bounds_of` to read them with `None` for infinity). Transcendental values are computed with
mpmath at 192 bits, widened by a margin far above mpmath's error and rounded outward to a
64-bit dyadic rational, so every enclosure contains the true value. A `Tape` compiles the slice
once (one instruction per sub-term, in program order) and re-runs it on many boxes, which is
what branch and bound needs; each run also carries affine lower/upper bounds in the box's
inputs through the slice (forward DeepPoly / CROWN) and intersects them with the intervals.
Linear envelopes of smooth activations (`envelope`) are chosen by the usual chord / tangent /
CROWN rules in floats, then *certified*: the offset of each line is recomputed from a rigorous
bound on the gap between line and function, so the float heuristics affect tightness only,
never soundness. `Tape.enclosures` hands them to the SMT-LIB encoder.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache

import mpmath
import numpy as np
import sympy as sp

from ..layers.activations import (
    MP_FUNCTIONS,
    SMOOTH_FUNCTIONS,
    leaky_relu,
    leaky_step,
    relu,
    sigmoid,
    softplus,
    step,
)
from ..symbolic.program import Program
from .linforms import FloatForms, convertible, down, mul_planes, up

INF = math.inf
TOP = (-INF, INF)
PREC = 192  # bits for mpmath evaluations
BITS = 64  # significant bits kept in outward-rounded endpoints
_TIDY_BITS = 160  # denominators longer than this are rounded outward to BITS + 32 bits


def dyadic_out(t: Fraction, up: bool, bits: int = BITS) -> Fraction:
    """A rational with at most `bits` significant bits, >= t when `up`, else <= t."""
    n, d = t.numerator, t.denominator
    if n == 0:
        return Fraction(0)
    k = bits - (abs(n).bit_length() - d.bit_length())
    q, r = divmod(n << k, d) if k >= 0 else divmod(n, d << -k)
    if up and r:
        q += 1
    return Fraction(q, 1 << k) if k >= 0 else Fraction(q << -k)


def _tidy(x, up: bool):
    if isinstance(x, Fraction) and x.denominator.bit_length() > _TIDY_BITS:
        return dyadic_out(x, up, BITS + 32)
    return x


def _short(x, up: bool):
    """Round an endpoint outward to BITS significant bits (keeps later arithmetic cheap)."""
    if isinstance(x, Fraction) and x.denominator.bit_length() > BITS:
        return dyadic_out(x, up)
    return x


def bounds_of(iv) -> tuple[Fraction | None, Fraction | None]:
    """The interval with None for infinite endpoints."""
    lo, hi = iv
    return (None if lo == -INF else lo, None if hi == INF else hi)


def _mpf(q: Fraction):
    return mpmath.mpf(q.numerator) / q.denominator


def _enclose(v) -> tuple[Fraction, Fraction]:
    """Outward-rounded rationals around an mpmath value computed at PREC bits.

    The result brackets v by one unit of a grid of 2^-63 relative (or 2^-160 absolute near
    zero), a margin far above the error of mpmath's functions at PREC bits.
    """
    sign, man, exp, bc = mpmath.mpf(v)._mpf_
    if not man:
        if exp:  # inf or nan: a bug upstream, never a bound
            raise ArithmeticError(f"non-finite value {v}")
        tiny = Fraction(1, 1 << 160)
        return -tiny, tiny
    n = -man if sign else man  # v = n * 2^exp exactly
    k = min(BITS - 1 - (bc + exp), 160)  # grid 2^-k
    shift = exp + k
    if shift >= 0:
        lo = hi = n << shift
    else:
        lo = n >> -shift  # floor
        hi = -((-n) >> -shift)  # ceil
    lo, hi = lo - 1, hi + 1
    return (Fraction(lo, 1 << k), Fraction(hi, 1 << k)) if k >= 0 else \
        (Fraction(lo << -k), Fraction(hi << -k))


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
    shape: str  # "s" (convex below 0, concave above), "convex", "concave" or "bell"
    range: tuple  # closed hull of the output range
    exact: dict  # rational points with rational values
    increasing: bool = True  # False only for the bell `Sech2`


SMOOTH: dict[type, SmoothFn] = {
    sp.tanh: SmoothFn("tanh", mpmath.tanh, lambda x: mpmath.sech(x) ** 2, math.tanh,
                      lambda x: 1.0 - math.tanh(x) ** 2, "s", (-1, 1), {0: 0}),
    sigmoid: SmoothFn("sigmoid", MP_FUNCTIONS[sigmoid],
                      lambda x: MP_FUNCTIONS[sigmoid](x) * MP_FUNCTIONS[sigmoid](-x),
                      _fl_sigmoid, lambda x: _fl_sigmoid(x) * (1.0 - _fl_sigmoid(x)), "s",
                      (0, 1), {0: Fraction(1, 2)}),
    softplus: SmoothFn("softplus", MP_FUNCTIONS[softplus], MP_FUNCTIONS[sigmoid], _fl_softplus,
                       _fl_sigmoid, "convex", (0, INF), {}),
    sp.exp: SmoothFn("exp", mpmath.exp, mpmath.exp, math.exp, math.exp, "convex", (0, INF),
                     {0: 1}),
    sp.log: SmoothFn("log", mpmath.log, lambda x: 1 / x, math.log, lambda x: 1.0 / x,
                     "concave", (-INF, INF), {1: 0}),
}


class Sech2:
    """sech(z)^2 = 1 - tanh(z)^2 = tanh'(z), the bell in every tanh derivative program. Not a
    sympy function: only a key of `SMOOTH`, so `1 - tanh(z)^2` can be bounded as one function
    of z (`Tape` recognises the pattern) instead of a square of a bounded tanh."""


# sech^2 is concave on (-t0, t0) and convex outside, t0 = atanh(1/sqrt(3)) = 0.65847894846...
_INFLECTION = (Fraction(6584789, 10**7), Fraction(658479, 10**6))  # t0 strictly inside


def _fl_sech2(x: float) -> float:
    return (1.0 / math.cosh(min(abs(x), 350.0))) ** 2


SMOOTH[Sech2] = SmoothFn("sech2", lambda x: mpmath.sech(x) ** 2,
                         lambda x: -2 * mpmath.sech(x) ** 2 * mpmath.tanh(x), _fl_sech2,
                         lambda x: -2.0 * _fl_sech2(x) * math.tanh(x), "bell", (0, 1), {0: 1},
                         increasing=False)


def bell_interval(iv) -> tuple:
    """Enclosure of sech^2 over an interval: largest nearest 0, smallest at the far end."""
    lo, hi = iv
    if lo <= 0 <= hi:
        top = Fraction(1)
    else:
        top = fn_value(Sech2, lo if lo > 0 else hi)[1]
    if lo == -INF or hi == INF:
        return Fraction(0), top
    return min(fn_value(Sech2, lo)[0], fn_value(Sech2, hi)[0]), top


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
    return (max(lo, Fraction(0)), hi) if SMOOTH[fn].increasing else (lo, hi)


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


# ---- linear envelopes of smooth functions ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Line:
    """The line z -> slope * z + offset."""

    slope: Fraction
    offset: Fraction

    def at(self, z):
        return self.slope * z + self.offset


def _pieces(f: SmoothFn, lo: Fraction, hi: Fraction) -> list[tuple]:
    """(p, q, convex) pieces covering [lo, hi] on which f is convex or concave; convex is
    None on the short pieces around an irrational inflection point (f is monotone there)."""
    if f.shape == "bell":
        r1, r2 = _INFLECTION
        cuts = [(-INF, -r2, True), (-r2, -r1, None), (-r1, r1, False), (r1, r2, None),
                (r2, INF, True)]
        return [(max(lo, a), min(hi, b), c) for a, b, c in cuts if max(lo, a) < min(hi, b)]
    if f.shape != "s":
        return [(lo, hi, f.shape == "convex")]
    out = []
    if lo < 0:
        out.append((lo, min(hi, Fraction(0)), True))
    if hi > 0:
        out.append((max(lo, Fraction(0)), hi, False))
    return out


def _bisect(phi: Callable[[float], float], a: float, b: float) -> float:
    """A float where phi changes sign between a and b (phi(a) and phi(b) of opposite signs)."""
    neg_at_a = phi(a) < 0
    for _ in range(52):
        m = 0.5 * (a + b)
        if (phi(m) < 0) == neg_at_a:
            a = m
        else:
            b = m
    return 0.5 * (a + b)


def _tangent_point(f: SmoothFn, k: float, p: Fraction, q: Fraction, convex: bool) -> Fraction:
    """A rational c in [p, q] with f'(c) close to k (f' is monotone on a convexity piece)."""
    sign = 1.0 if convex else -1.0
    a, b = float(p), float(q)
    if sign * (f.dfl(a) - k) >= 0:
        return p
    if sign * (f.dfl(b) - k) <= 0:
        return q
    c = dyadic_out(Fraction(_bisect(lambda x: f.dfl(x) - k, a, b)), False, 48)
    return min(max(c, p), q)


def _gap_lo(fn: type, line: Line, upper: bool, z: Fraction):
    flo, fhi = fn_value(fn, z)
    return line.at(z) - fhi if upper else flo - line.at(z)


def min_gap(fn: type, line: Line, upper: bool, lo: Fraction, hi: Fraction):
    """A rigorous lower bound on [lo, hi] of line - fn (upper) or fn - line (lower).

    Where the gap is concave its minimum is at an end of the piece; where it is convex it lies
    above its tangent at the float estimate c of the stationary point, bounded with an
    enclosure of fn'(c).
    """
    f, m = SMOOTH[fn], INF
    for p, q, convex in _pieces(f, lo, hi):
        if convex is None:  # f monotone on [p, q]: its extreme value against the line's
            fp, fq = fn_value(fn, p), fn_value(fn, q)
            lp, lq = line.at(p), line.at(q)
            g = min(lp, lq) - max(fp[1], fq[1]) if upper else min(fp[0], fq[0]) - max(lp, lq)
        elif convex == upper:
            g = min(_gap_lo(fn, line, upper, p), _gap_lo(fn, line, upper, q))
        else:
            c = _tangent_point(f, float(line.slope), p, q, convex)
            dlo, dhi = fn_deriv(fn, c)
            d = (line.slope - dhi, line.slope - dlo) if upper else (dlo - line.slope, dhi - line.slope)
            g = _gap_lo(fn, line, upper, c) + min(x * y for x in d for y in (p - c, q - c))
        m = min(m, g)
    return m


def _crown_slope(f: SmoothFn, a: float, b: float, upper: bool) -> float:
    """Slope of the CROWN line for an S-shaped f on a < 0 < b: the chord when it is valid,
    else the tangent (in the concave part for upper, convex part for lower) through the far end."""
    fa, fb, chord = f.fl(a), f.fl(b), (f.fl(b) - f.fl(a)) / (b - a)
    if upper and chord <= f.dfl(b) or not upper and chord <= f.dfl(a):
        return chord
    if upper:
        d = _bisect(lambda t: f.fl(t) + f.dfl(t) * (a - t) - fa, 0.0, b)
    else:
        d = _bisect(lambda t: f.fl(t) + f.dfl(t) * (b - t) - fb, a, 0.0)
    return f.dfl(d)


def _slopes(f: SmoothFn, a: float, b: float) -> tuple[list[float], list[float]]:
    """Candidate slopes (lower lines, upper lines) from the chord, tangent and CROWN rules;
    the first of each list is the one linear forms use."""
    chord = (f.fl(b) - f.fl(a)) / (b - a) if b > a else f.dfl(a)
    tangents = [f.dfl(0.5 * (a + b)), f.dfl(a), f.dfl(b)]
    if f.shape == "convex" or (f.shape == "s" and b <= 0):
        return tangents, [chord]
    if f.shape == "concave" or (f.shape == "s" and a >= 0):
        return [chord], tangents
    flat = min(f.dfl(a), f.dfl(b))  # DeepPoly's parallel lines
    return ([_crown_slope(f, a, b, False), flat, f.dfl(a)],
            [_crown_slope(f, a, b, True), flat, f.dfl(b)])


_ENVELOPE_RANGE = 1e6
LINE_BITS = 40  # significant bits of slopes and offsets: short numerals keep z3 fast


@lru_cache(maxsize=1 << 14)
def certified_line(fn: type, slope: Fraction, upper: bool, lo: Fraction, hi: Fraction):
    """The line of this slope that bounds fn on [lo, hi] from above (or below) most tightly,
    up to rounding; None when no finite offset works."""
    m = min_gap(fn, Line(slope, Fraction(0)), upper, lo, hi)
    if not isinstance(m, Fraction):
        return None
    return Line(slope, dyadic_out(-m, True, LINE_BITS) if upper else dyadic_out(m, False, LINE_BITS))


def _tangent_at(f: SmoothFn, a: float, b: float, z: float, upper: bool) -> float | None:
    """The slope of the tangent at z when that tangent bounds f on [a, b] on this side (in
    floats: a heuristic, the line is certified afterwards), else None."""
    z = min(max(z, a), b)
    fz, k = f.fl(z), f.dfl(z)
    if f.shape == "s":
        if upper != (z >= 0):
            return None
        end = a if upper else b  # the far end, in the other curvature piece
        gap = fz + k * (end - z) - f.fl(end)
        return k if (gap >= 0) == upper else None
    return k if (f.shape == "concave") == upper else None


def envelope(fn: type, lo: Fraction, hi: Fraction, full: bool = True, at: float | None = None):
    """Sound linear bounds of fn on [lo, hi]: every lower line <= fn <= every upper line.

    Slopes come from float heuristics; each offset is then set from `min_gap`, so the line
    touches the function up to rounding and is valid whatever the heuristic chose. With
    `full=False` only the primary line of each side (CROWN's choice) is computed; with `at`,
    the primary line of a side is the tangent at that point where a tangent bounds that side
    (the optimised choice: tight where the bound is attained).
    """
    if not (-_ENVELOPE_RANGE < lo < hi < _ENVELOPE_RANGE) or (fn is sp.log and lo <= 0):
        return [], []
    try:
        f = SMOOTH[fn]
        low_k, up_k = _slopes(f, float(lo), float(hi))
        if at is not None and math.isfinite(at):
            for ks, upper in ((low_k, False), (up_k, True)):
                k = _tangent_at(f, float(lo), float(hi), at, upper)
                if k is not None:
                    ks.insert(0, k)
    except (OverflowError, ValueError, ZeroDivisionError):
        return [], []
    out: tuple[list[Line], list[Line]] = ([], [])
    for upper, ks in ((False, low_k), (True, up_k)):
        seen = set()
        for k in ks if full else ks[:1]:
            if not math.isfinite(k):
                continue
            slope = dyadic_out(Fraction(k), False, LINE_BITS)
            if slope not in seen:
                seen.add(slope)
                line = certified_line(fn, slope, upper, lo, hi)
                if line is not None:
                    out[upper].append(line)
    return out


def bell_envelope(lo: Fraction, hi: Fraction, at: float | None = None):
    """Certified lines of sech^2 on [lo, hi]: per side the chord slope and the tangent slope
    at `at` (or the middle), each offset set by `min_gap` as for `envelope`."""
    if not (-_ENVELOPE_RANGE < lo < hi < _ENVELOPE_RANGE):
        return [], []
    f = SMOOTH[Sech2]
    a, b = float(lo), float(hi)
    t = min(max(at, a), b) if at is not None and math.isfinite(at) else 0.5 * (a + b)
    ks = [(f.fl(b) - f.fl(a)) / (b - a) if b > a else f.dfl(a), f.dfl(t)]
    out: tuple[list[Line], list[Line]] = ([], [])
    for upper in (False, True):
        for slope in {dyadic_out(Fraction(k), False, LINE_BITS) for k in ks if math.isfinite(k)}:
            line = certified_line(Sech2, slope, upper, lo, hi)
            if line is not None:
                out[upper].append(line)
    return out


# ---- linear forms: bounds that are affine in the box's leaves (forward CROWN / DeepPoly) ------


def _pick(lines: list[Line], lo, hi, upper: bool) -> Line | None:
    """The line closest to the function at the middle of [lo, hi]."""
    if not lines:
        return None
    mid = (lo + hi) / 2
    return (min if upper else max)(lines, key=lambda ln: ln.at(mid))


# ---- tapes: a program slice compiled for repeated runs ---------------------------------------


def _op_affine(v, args):
    c0, terms = args
    lo, hi = c0, c0
    for c, s in terms:
        a = v[s]
        if c > 0:
            lo, hi = lo + c * a[0], hi + c * a[1]
        else:
            lo, hi = lo + c * a[1], hi + c * a[0]
    return _tidy(lo, False), _tidy(hi, True)


def _op_mul(v, args):
    out = v[args[0]]
    for s in args[1:]:
        out = iv_mul(out, v[s])
    return out


_OPS: dict[str, Callable] = {
    "affine": _op_affine,
    "mul": _op_mul,
    "pow": lambda v, a: iv_pow(v[a[0]], a[1]),
    "rpow": lambda v, a: iv_rpow(v[a[0]], a[1]),
    "fn": lambda v, a: fn_interval(a[0], v[a[1]]),
    "abs": lambda v, a: iv_abs(v[a]),
    "relu": lambda v, a: iv_relu(v[a]),
    "step": lambda v, a: iv_step(v[a]),
    "leaky": lambda v, a: iv_leaky(v[a[0]], v[a[1]]),
    "leaky_step": lambda v, a: iv_leaky_step(v[a[0]], v[a[1]]),
    "max": lambda v, a: (max(v[s][0] for s in a), max(v[s][1] for s in a)),
    "min": lambda v, a: (min(v[s][0] for s in a), min(v[s][1] for s in a)),
    "hull": lambda v, a: hull(*(v[s] for s in a)),
    "top": lambda v, a: TOP,
}
_FLOAT_OPS: dict[str, Callable] = {
    "affine": lambda x, a: float(a[0]) + sum(float(c) * x[s] for c, s in a[1]),
    "mul": lambda x, a: math.prod(x[s] for s in a),
    "pow": lambda x, a: x[a[0]] ** a[1],
    "fn": lambda x, a: SMOOTH[a[0]].fl(x[a[1]]),
    "abs": lambda x, a: abs(x[a]),
    "relu": lambda x, a: max(x[a], 0.0),
}
_UNARY = {sp.Abs: "abs", relu: "relu", step: "step"}
_BINARY = {leaky_relu: "leaky", leaky_step: "leaky_step"}
_NARY = {sp.Max: "max", sp.Min: "min"}
EXACT_TERMS = 8  # affine steps with more terms get their interval in rigorous floats
LINEAR_DIMS = 64  # linear forms only for boxes with at most this many bounded leaves


@dataclass(slots=True)
class Evaluation:
    """One run of a tape on a box: the interval of every slot, the envelope lines used."""

    values: list
    lines: dict  # slot of a smooth application -> (lower lines, upper lines)
    dims: list = field(default_factory=list)  # leaves the linear forms range over
    forms: FloatForms | None = None  # affine lower/upper bounds of every slot in those leaves


class Tape:
    """The slice of `program` computing `exprs`, compiled once into interval instructions.

    `run(box)` encloses every slot; `outputs[k]` is the slot of `exprs[k]`; `apps` lists each
    smooth application with its slot and its argument's slot.
    """

    def __init__(self, program: Program, exprs) -> None:
        self.slots: dict[sp.Basic, int] = {}
        self.base: list = []
        self.code: list[tuple] = []
        self.leaves: dict[sp.Symbol, int] = {}
        self.apps: list[tuple[sp.Expr, int, int]] = []
        self._affine_prep: dict[int, tuple] = {}
        for sym, d in program.slice(exprs):
            self.slots[sym] = self._compile(d)
        self.outputs = [self._compile(sp.sympify(e)) for e in exprs]
        self.bells = self._find_bells()
        self.formless = self._formless()

    def _formless(self) -> set[int]:
        """Slots of tanh(z) and tanh(z)^2 read only on the way to bells: their envelopes and
        forms would be computed for nothing (the bell takes its forms from z)."""
        readers: dict[int, list[int]] = {}
        for _, kind, out, args in self.code:
            for s in _reads(kind, args):
                readers.setdefault(s, []).append(out)
        outputs = set(self.outputs)
        squares = {self.bells[b][1]: b for b in self.bells}  # a -> a bell reading a^2
        drop = set()
        for b, (_, a) in self.bells.items():
            sq = next(s for _, k, s, args in self.code if k == "pow" and args == (a, 2))
            if sq not in outputs and all(r in self.bells for r in readers.get(sq, [])):
                drop.add(sq)
        for a in squares:
            if a not in outputs and all(r in drop for r in readers.get(a, [])):
                drop.add(a)
        return drop

    def _find_bells(self) -> dict[int, tuple[int, int]]:
        """Affine slots `1 - a^2` with a = tanh(z): slot -> (slot of z, slot of a)."""
        defs = {out: (kind, args) for _, kind, out, args in self.code}
        out = {}
        for slot, (kind, args) in defs.items():
            if kind != "affine" or args[0] != 1 or len(args[1]) != 1 or args[1][0][0] != -1:
                continue
            sq = defs.get(args[1][0][1])
            if sq is None or sq[0] != "pow" or sq[1][1] != 2:
                continue
            a = defs.get(sq[1][0])
            if a is not None and a[0] == "fn" and a[1][0] is sp.tanh:
                out[slot] = (a[1][1], sq[1][0])
        return out

    def _new(self, e, op: str | None, args, init=TOP) -> int:
        slot = len(self.base)
        self.base.append(init)
        if op is not None:
            self.code.append((_OPS[op], op, slot, args))
        self.slots[e] = slot
        return slot

    def _compile(self, e: sp.Expr) -> int:
        """Slot of one (small) expression; recursion depth is that of a single definition."""
        hit = self.slots.get(e)
        if hit is not None:
            return hit
        if e.is_Symbol:
            slot = self._new(e, None, None)
            self.leaves[e] = slot
            return slot
        if e.is_number:
            return self._new(e, None, None, const_interval(e))
        if e.is_Add:
            c0, terms = Fraction(0), []
            for a in e.args:
                coeff, rest = a.as_coeff_Mul()
                if a.is_Rational:
                    c0 += Fraction(int(a.p), int(a.q))
                elif coeff.is_Rational:
                    terms.append((Fraction(int(coeff.p), int(coeff.q)), self._compile(rest)))
                else:
                    terms.append((Fraction(1), self._compile(a)))
            return self._new(e, "affine", (c0, terms))
        if e.is_Mul:
            coeff, rest = e.as_coeff_Mul()
            if coeff.is_Rational and coeff != 1:
                c = Fraction(int(coeff.p), int(coeff.q))
                return self._new(e, "affine", (Fraction(0), [(c, self._compile(rest))]))
            return self._new(e, "mul", [self._compile(a) for a in e.args])
        if e.is_Pow:
            base, ex = e.args
            if ex.is_Integer:
                return self._new(e, "pow", (self._compile(base), int(ex)))
            if ex.is_Rational:
                return self._new(e, "rpow", (self._compile(base), Fraction(int(ex.p), int(ex.q))))
            return self._new(e, "top", None)
        return self._compile_function(e)

    def _compile_function(self, e: sp.Expr) -> int:
        f = type(e)
        if isinstance(e, SMOOTH_FUNCTIONS) and f in SMOOTH:
            arg = self._compile(e.args[0])
            slot = self._new(e, "fn", (f, arg))
            self.apps.append((e, slot, arg))
            return slot
        if f in _UNARY:
            return self._new(e, _UNARY[f], self._compile(e.args[0]))
        if f in _BINARY:
            return self._new(e, _BINARY[f], (self._compile(e.args[0]), self._compile(e.args[1])))
        if f in _NARY:
            return self._new(e, _NARY[f], [self._compile(a) for a in e.args])
        if f is sp.Piecewise:  # one of the branches is taken: their hull, conditions ignored
            return self._new(e, "hull", [self._compile(expr) for expr, _ in e.args])
        return self._new(e, "top", None)  # unknown: unbounded, which is always sound

    def run(self, box: dict, linear: bool = True, parent: Evaluation | None = None,
            at: dict | None = None) -> Evaluation:
        """Enclosures of all slots for leaf intervals `box` (missing leaves are unbounded).

        With `linear`, each slot also gets affine lower/upper bounds in the bounded leaves
        (`linforms`), propagated through affine steps, through activations by their envelope
        (DeepPoly's choice), through products by McCormick planes and through squares and
        `abs` by chords and tangents; the interval is intersected with their range over the
        box. With `parent` (a run on a box containing this one) every interval is also
        intersected with the parent's, so splitting never loosens a bound. `at` maps slots of
        smooth applications to points of their argument where the envelope should be tight
        (`point_values` of a point where the bound is attained).
        """
        v = list(self.base)
        for sym, slot in self.leaves.items():
            iv = box.get(sym)
            if iv is not None:
                v[slot] = (-INF if iv[0] is None else Fraction(iv[0]),
                           INF if iv[1] is None else Fraction(iv[1]))
        dims = [slot for slot in self.leaves.values() if v[slot][0] != -INF and v[slot][1] != INF]
        forms = None
        if linear and 0 < len(dims) <= LINEAR_DIMS:
            forms = FloatForms([v[s] for s in dims], len(v))
            for i, slot in enumerate(dims):
                forms.set_unit(slot, i)
            for slot, iv in enumerate(v):
                forms.set_const(slot, iv)  # constants and unbounded leaves
        names = {slot: sym for sym, slot in self.leaves.items()}
        ev = Evaluation(v, {}, [(names[s], *v[s]) for s in dims], forms)
        pv = parent.values if parent is not None else None
        for op, kind, out, args in self.code:
            fast = self._fast_affine(forms, out, args) if kind == "affine" and forms else None
            lo, hi = fast if fast is not None else op(v, args)
            if out in self.bells:
                blo, bhi = bell_interval(v[self.bells[out][0]])
                if max(lo, blo) <= min(hi, bhi):
                    lo, hi = max(lo, blo), min(hi, bhi)
            if pv is not None:
                plo, phi = pv[out]
                if max(lo, plo) <= min(hi, phi):
                    lo, hi = max(lo, plo), min(hi, phi)
            v[out] = (lo, hi)
            if out in self.formless:
                if kind == "fn":
                    ev.lines[out] = ([], [])  # bounded argument; no line is needed here
                if forms is not None:
                    forms.set_const(out, v[out])
                continue
            if kind == "fn":
                self._envelope(ev, out, *args, at=None if at is None else at.get(out))
            if forms is not None:
                self._linear(forms, ev, kind, out, args, at)
        return ev

    @staticmethod
    def _envelope(ev: Evaluation, out: int, fn: type, arg: int, at=None) -> None:
        zlo, zhi = ev.values[arg]
        if zlo != -INF and zhi != INF and zlo < zhi:
            ev.lines[out] = envelope(fn, zlo, zhi, full=False, at=at)

    def point_values(self, point: dict) -> dict:
        """Float values of every smooth application's argument at a point of the leaves
        (slot of the application -> value); a heuristic input for `run(at=...)`."""
        x = [math.nan] * len(self.base)
        for i, iv in enumerate(self.base):
            if iv[0] == iv[1] and iv[0] not in (-INF, INF):
                x[i] = float(iv[0])
        for sym, slot in self.leaves.items():
            x[slot] = float(point.get(sym, math.nan))
        out = {}
        with np.errstate(all="ignore"):
            for _, kind, slot, args in self.code:
                try:
                    x[slot] = _FLOAT_OPS[kind](x, args) if kind in _FLOAT_OPS else math.nan
                except (OverflowError, ValueError, ZeroDivisionError):
                    x[slot] = math.nan
                if kind == "fn":
                    out[slot] = x[args[1]]
        return out

    def corner(self, ev: Evaluation, slot: int, upper: bool) -> dict:
        """The corner of the box where the slot's upper (lower) affine form is extreme."""
        forms = ev.forms
        if forms is None or not (forms.has_u if upper else forms.has_l)[slot]:
            return {}
        c = (forms.U if upper else forms.L)[slot][1:]
        return {sym: (hi if (ci > 0) == upper else lo) for (sym, lo, hi), ci in zip(ev.dims, c)}

    def _linear(self, forms: FloatForms, ev: Evaluation, kind, out, args, at=None) -> None:
        v = ev.values
        lo_f = up_f = None
        if kind == "affine":
            lo_f, up_f = self._affine_forms(forms, out, args)
            if out in self.bells:
                z, a = self.bells[out]
                b_lo, b_up = _bell_forms(forms, v[z], z, None if at is None else at.get(a))
                # the bell's own lines, even where a constant concretizes as well: the
                # interval is kept anyway, and the lines carry the dependence on the inputs
                lo_f, up_f = (b_lo if b_lo is not None else lo_f), (b_up if b_up is not None else up_f)
        elif kind == "fn" and out in ev.lines:
            lo_f, up_f = _line_forms(forms, ev, out, args[1])
        elif kind == "relu":
            lo_f, up_f = _relu_forms(forms, v[args], args)
        elif kind == "mul" and len(args) == 2:
            lo_f, up_f = _mul_forms(forms, v, args[0], args[1])
        elif kind == "pow" and args[1] == 2:
            lo_f, up_f = _square_forms(forms, v[args[0]], args[0])
        elif kind == "abs":
            lo_f, up_f = _abs_forms(forms, v[args], args)
        lo, hi = v[out]
        if lo_f is not None:
            forms.L[out], forms.has_l[out] = lo_f, True
            lo = max(lo, forms.low(lo_f))
        if up_f is not None:
            forms.U[out], forms.has_u[out] = up_f, True
            hi = min(hi, forms.high(up_f))
        if lo > hi:  # both are sound, so this is a rounding bug: keep the interval
            lo, hi = v[out]
        v[out] = (lo, hi)
        forms.set_const(out, v[out])

    def _fast_affine(self, forms: FloatForms, out: int, args):
        """The interval of a wide affine step in rigorous floats; exact rationals were most of
        the cost of a run on dense layers. Short sums stay exact, so ties at an exactly
        attained bound (x/2 + 1/2 <= 1) still prove."""
        if len(args[1]) <= EXACT_TERMS:
            return None
        slots, cf, pos, ok = self._prep(out, args)
        if not ok:
            return None
        return forms.affine_interval(args[0], cf, slots, pos)

    def _prep(self, out: int, args):
        prep = self._affine_prep.get(out)
        if prep is None:
            c0, terms = args
            ok = all(convertible(c) for c, _ in terms)
            prep = (np.array([s for _, s in terms], dtype=np.intp),
                    np.array([float(c) for c, _ in terms]),
                    np.array([c > 0 for c, _ in terms], dtype=bool), ok)
            self._affine_prep[out] = prep
        return prep

    def _affine_forms(self, forms: FloatForms, out: int, args):
        slots, cf, pos, ok = self._prep(out, args)
        if not ok:
            return None, None
        c0 = args[0]
        res = []
        for lower in (True, False):
            want_l = pos if lower else ~pos
            if not (forms.has_l[slots[want_l]].all() and forms.has_u[slots[~want_l]].all()):
                res.append(None)
                continue
            rows = np.where(want_l[:, None], forms.L[slots], forms.U[slots])
            res.append(forms.combine(c0, cf, rows, lower))
        return res[0], res[1]

    def enclosures(self, ev: Evaluation) -> dict[sp.Expr, list[tuple[str, sp.Expr]]]:
        """Per smooth application: interval bounds and all certified lines in its argument,
        in the `(op, bound_term)` form `emit.smtlib.encode` takes."""
        out: dict[sp.Expr, list[tuple[str, sp.Expr]]] = {}
        for app, slot, arg in self.apps:
            lo, hi = ev.values[slot]
            cons = [(">=", _rat(dyadic_out(lo, False, LINE_BITS)))] if lo != -INF else []
            cons += [("<=", _rat(dyadic_out(hi, True, LINE_BITS)))] if hi != INF else []
            zlo, zhi = ev.values[arg]
            lowers, uppers = envelope(type(app), zlo, zhi) if slot in ev.lines else ([], [])
            z = app.args[0]
            cons += [(">=", _rat(ln.slope) * z + _rat(ln.offset)) for ln in lowers]
            cons += [("<=", _rat(ln.slope) * z + _rat(ln.offset)) for ln in uppers]
            out[app] = cons
        return out


def _reads(kind: str, args) -> list[int]:
    """Slots an instruction reads."""
    if kind == "affine":
        return [s for _, s in args[1]]
    if kind in ("mul", "max", "min", "hull"):
        return list(args)
    if kind in ("pow", "rpow", "leaky", "leaky_step"):
        return [args[0]] if kind in ("pow", "rpow") else list(args)
    if kind == "fn":
        return [args[1]]
    if kind in ("abs", "relu", "step"):
        return [args]
    return []


def _line_forms(forms: FloatForms, ev: Evaluation, out: int, arg: int):
    """Forms of a smooth application through its envelope lines (the one closest mid-range)."""
    zlo, zhi = ev.values[arg]
    lowers, uppers = ev.lines[out]
    res = []
    for lines, upper in ((lowers, False), (uppers, True)):
        ln = _pick(lines, zlo, zhi, upper)
        f = None
        if ln is not None and convertible(ln.slope):
            # an upper line with slope >= 0 takes the argument's upper form, and so on
            use_upper = upper == (ln.slope >= 0)
            if (forms.has_u if use_upper else forms.has_l)[arg]:
                row = (forms.U if use_upper else forms.L)[arg][None, :]
                f = forms.combine(ln.offset, np.array([float(ln.slope)]), row, not upper)
        res.append(f)
    return res[0], res[1]


def _side(forms: FloatForms, slot: int, coeff: float, lower: bool):
    """The row of `slot` that a term `coeff * slot` of a lower (upper) form needs."""
    use_l = (coeff >= 0) == lower
    if not (forms.has_l if use_l else forms.has_u)[slot]:
        return None
    return (forms.L if use_l else forms.U)[slot]


def _plane(forms: FloatForms, c0, terms, lower: bool):
    """The form of c0 + sum c * slot over (c, slot) terms with float c, or None."""
    rows = [_side(forms, s, c, lower) for c, s in terms]
    if any(r is None for r in rows):
        return None
    return forms.combine(c0, np.array([c for c, _ in terms]), np.array(rows), lower)


def _best(forms: FloatForms, cands, lower: bool):
    cands = [f for f in cands if f is not None]
    if not cands:
        return None
    return max(cands, key=forms.low) if lower else min(cands, key=forms.high)


def _bell_forms(forms: FloatForms, iv, z: int, at: float | None):
    """sech^2(z) through its own certified lines in z (the best of each side)."""
    if not _finite(iv) or iv[0] >= iv[1]:
        return None, None
    lowers, uppers = bell_envelope(iv[0], iv[1], at)
    res = []
    for lines, upper in ((lowers, False), (uppers, True)):
        cands = [_plane(forms, ln.offset, [(float(ln.slope), z)], not upper)
                 for ln in lines if convertible(ln.slope)]
        res.append(_best(forms, cands, not upper))
    return res[0], res[1]


def _finite(*ivs) -> bool:
    return all(lo != -INF and hi != INF for lo, hi in ivs)


def _relu_forms(forms: FloatForms, iv, arg: int):
    """DeepPoly's relu: identity or zero when stable, else the chord above and 0 or x below."""
    lo, hi = iv
    zero = np.zeros(forms.n + 1)
    if lo >= 0:
        return _plane(forms, 0, [(1.0, arg)], True), _plane(forms, 0, [(1.0, arg)], False)
    if hi <= 0:
        return zero, zero
    if not _finite(iv):
        return None, None
    k = hi / (hi - lo)
    upper = _plane(forms, -k * lo, [(float(k), arg)], False) if convertible(k) else None
    lower = zero if hi < -lo else _plane(forms, 0, [(1.0, arg)], True)
    return lower, upper


def _mul_forms(forms: FloatForms, v, x: int, y: int):
    """McCormick: the better of the two planes on each side, at float corners taken outward."""
    if not _finite(v[x], v[y]):
        return None, None
    xl, xu, yl, yu = down(v[x][0]), up(v[x][1]), down(v[y][0]), up(v[y][1])
    lowers, uppers = mul_planes(xl, xu, yl, yu)
    lo_f = _best(forms, [_plane(forms, c0, [(cx, x), (cy, y)], True) for cx, cy, c0 in lowers],
                 True)
    up_f = _best(forms, [_plane(forms, c0, [(cx, x), (cy, y)], False) for cx, cy, c0 in uppers],
                 False)
    return lo_f, up_f


def _square_forms(forms: FloatForms, iv, x: int):
    """x^2: the tangent at the clamped middle below, the chord above."""
    if not _finite(iv):
        return None, None
    xl, xu = down(iv[0]), up(iv[1])
    d = float((iv[0] + iv[1]) / 2)
    d = min(max(d, xl), xu)
    lower = _plane(forms, -Fraction(d) ** 2, [(2.0 * d, x)], True)  # (x - d)^2 >= 0
    k = Fraction(xl) + Fraction(xu)  # (x - xl)(x - xu) <= 0
    upper = _plane(forms, -Fraction(xl) * Fraction(xu), [(float(k), x)], False) \
        if convertible(k) else None
    return lower, upper


def _abs_forms(forms: FloatForms, iv, x: int):
    """|x|: x or -x when the sign is fixed, else the chord above and the better side below."""
    lo, hi = iv
    if lo >= 0:
        return _plane(forms, 0, [(1.0, x)], True), _plane(forms, 0, [(1.0, x)], False)
    if hi <= 0:
        return _plane(forms, 0, [(-1.0, x)], True), _plane(forms, 0, [(-1.0, x)], False)
    if not _finite(iv):
        return None, None
    xl, xu = Fraction(down(lo)), Fraction(up(hi))
    a = float((xu + xl) / (xu - xl))  # any slope; the offset makes it valid
    b = max(-xl - Fraction(a) * xl, xu - Fraction(a) * xu)  # |x| - a x is convex: ends
    upper = _plane(forms, b, [(a, x)], False)
    lower = _plane(forms, 0, [(1.0 if hi >= -lo else -1.0, x)], True)  # |x| >= +-x
    return lower, upper


def _rat(q: Fraction) -> sp.Rational:
    return sp.Rational(q.numerator, q.denominator)


def interval_of(program: Program, expr: sp.Expr, box: dict, linear: bool = True) -> tuple:
    """The enclosure of one term over a box of leaf intervals (a one-off `Tape` run)."""
    tape = Tape(program, [expr])
    return tape.run(box, linear).values[tape.outputs[0]]
