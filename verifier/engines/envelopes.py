"""Smooth functions and their certified linear envelopes.

Transcendental values are computed with mpmath at 192 bits, widened by a margin far above
mpmath's error and rounded outward to a 64-bit dyadic rational, so every enclosure contains
the true value (`fn_value`, `fn_deriv`, `fn_interval`). Linear envelopes (`envelope`,
`bell_envelope`) are chosen by the usual chord / tangent / CROWN rules in floats, or tangent at
a requested point, then *certified*: the offset of each line is recomputed from a rigorous
bound on the gap between line and function (`min_gap`), so the float heuristics affect
tightness only, never soundness.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import mpmath
import sympy as sp

from ..layers.activations import MP_FUNCTIONS, sigmoid, softplus

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


# sigmoid'(z) = s (1 - s) = sech^2(z/2) / 4: the same bell, halved in z and quartered in value
# (both scalings are exact on rationals, so certified sech^2 bounds carry over unchanged)


def half_bell_interval(iv) -> tuple:
    """Enclosure of sech^2(z/2)/4 (the sigmoid derivative) over an interval of z."""
    lo, hi = bell_interval((iv[0] / 2, iv[1] / 2))
    return lo / 4, hi / 4


def half_bell_envelope(lo: Fraction, hi: Fraction, at: float | None = None):
    """Certified lines in z of sech^2(z/2)/4 on [lo, hi]: sech^2's lines in w = z/2, where
    sech^2(w) <= k w + c gives sech^2(z/2)/4 <= (k/8) z + c/4 (and the same below)."""
    lowers, uppers = bell_envelope(lo / 2, hi / 2, None if at is None else at / 2)
    return ([Line(ln.slope / 8, ln.offset / 4) for ln in lowers],
            [Line(ln.slope / 8, ln.offset / 4) for ln in uppers])
