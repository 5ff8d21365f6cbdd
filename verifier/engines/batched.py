"""Enclosures of a `Tape` on many input boxes at once, in float64 with outward rounding.

`BatchTape.run(lo, hi, hint)` evaluates the tape on B boxes (rows of `lo`, `hi`) with one
numpy operation per instruction: every slot gets an interval (B,) and affine lower/upper
forms (B, n + 1) in the inputs, as `Tape.run` does for one box with `linforms` and
`envelopes`. Soundness does not rest on the rounding mode. Every float result carries an
a-priori bound on its rounding error that is added outward (Higham's gamma_n for dot
products, doubled, plus relative 4u and an absolute 1e-290 for single operations, as in
`linforms` and `crown`); exact rational coefficients enter as their nearest floats and that
relative error (at most u) is part of the same bound. Values of tanh, sigmoid, softplus and
sech^2 come from numpy (libm quality, a few ulp) widened by a relative 1e-12, far above that.
Envelope lines of the smooth functions take any slope a float heuristic suggests (tangent at
the point where the bound is attained, chord, CROWN's tangent through the far end) and then
*certify* the offset: on each piece where the function is convex or concave, the gap between
line and function is bounded below at the piece's ends (where the gap is concave) or by the
tangent of the gap at a stationary-point estimate (where it is convex), so any slope is
valid and the heuristic only affects tightness.

`batched_branch_and_bound` splits input boxes best-first, a batch of the worst boxes per
round, until every box proves the goal atoms, time runs out, or a bound tolerance is met.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import sympy as sp

from ..layers.activations import sigmoid, softplus
from .crown import TINY, U, nd, nu
from .envelopes import INF, Sech2
from .intervals import Tape
from .linforms import down, up

REL = 1e-12  # relative widening of numpy's smooth function values (error a few ulp)
BATCH = 1024  # boxes split per round (children evaluated: twice as many)
ROUND_SECONDS = 0.3  # the batch doubles while a round takes less than this (or 10 % of the
# time left)
OPS = {"<=", "<", ">=", ">"}
_R1, _R2 = 0.6584789, 0.658479  # sech^2's inflection atanh(1/sqrt 3) lies strictly between


class Unsupported(Exception):
    """The batched path does not cover this tape or obligation (the exact path takes it)."""


def gamma(n: int) -> float:
    """Higham's gamma_{n+2}, doubled (crown.gamma takes 1.01)."""
    return 2.0 * (n + 2) * U / (1.0 - (n + 2) * U)


# ---- smooth functions in floats: enclosures of values and derivatives ----------------------


def _widen(v, lo_cap, hi_cap):
    w = np.abs(v) * REL + TINY
    return np.clip(v - w, lo_cap, hi_cap), np.clip(v + w, lo_cap, hi_cap)


def _sig(z):
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _sech2(z):
    c = np.cosh(np.minimum(np.abs(z), 350.0))
    return 1.0 / (c * c)


@dataclass(frozen=True)
class _Fn:
    shape: str  # "s", "convex" or "bell"
    value: Callable  # float approximation (a few ulp)
    deriv: Callable
    range: tuple
    inverse: Callable | None = None  # (k, convex_piece) -> z with f'(z) = k, or None: bisect
    pieces: tuple | None = None  # (a, b, curvature) for shape "power"
    inverse_pq: Callable | None = None  # (k, p, q) -> z in the piece [p, q] with f'(z) ~ k


def _inv_tanh(k, convex):
    t = np.sqrt(np.clip(1.0 - k, 0.0, 1.0))
    z = np.arctanh(np.minimum(t, 1 - 1e-16))
    return -z if convex else z


def _inv_sigmoid(k, convex):
    r = np.sqrt(np.clip(1.0 - 4.0 * k, 0.0, 1.0))
    s = np.clip(0.5 * (1.0 - r) if convex else 0.5 * (1.0 + r), 1e-300, 1 - 1e-16)
    return np.log(s) - np.log1p(-s)


def _inv_softplus(k, convex):
    s = np.clip(k, 1e-300, 1 - 1e-16)
    return np.log(s) - np.log1p(-s)


def _inv_sech2(k, convex):
    """sech^2'(w) = -2 t (1 - t^2), t = tanh w: the roots of t^3 - t - k/2 = 0 (trigonometric
    formula); the middle one on the concave piece, else the outer one on k's side."""
    phi = np.arccos(np.clip(k * (0.75 * np.sqrt(3.0)), -1.0, 1.0)) / 3.0
    ts = np.sort(np.stack([np.cos(phi - 2.0 * np.pi * j / 3.0) for j in range(3)]), 0)
    ts *= 2.0 / np.sqrt(3.0)
    t = ts[1] if not convex else np.where(k < 0, ts[2], ts[0])
    return np.arctanh(np.clip(t, -1 + 1e-16, 1 - 1e-16))


# ---- powers x^r (integer r, or rational r with x >= 0) ----------------------------------------
#
# Values by repeated multiplication (a relative error below 2 |r| u for |r| <= MAX_POWER, far
# under REL), sqrt (correctly rounded) for halves, numpy's pow for other rationals: there the
# float exponent is off by at most u |r| relative, which moves x^r by at most
# u |r| |ln x| <= 745 * 3 u < 3e-13 relative, also under REL with pow's own ulp.

MAX_POWER = 64  # |r| of integer and half-integer exponents with a batched rule
MAX_RATIONAL = 3  # |r| of other rational exponents


def _ipow(z, n: int):
    """z ** n for an integer n != 0 by repeated squaring (and one division for n < 0)."""
    m, out, base = abs(n), None, z
    while m:
        if m & 1:
            out = base if out is None else out * base
        m >>= 1
        if m:
            base = base * base
    return 1.0 / out if n < 0 else out


def _power_code(r: Fraction):
    """z -> z ** r as numpy code (z >= 0 where it matters; nan elsewhere)."""
    if r.denominator == 1:
        n = int(r)
        return (lambda z: np.ones_like(z)) if n == 0 else (lambda z: _ipow(z, n))
    if r.denominator == 2:
        n = r.numerator
        return lambda z: _ipow(np.sqrt(z), n)
    rf = float(r)
    return lambda z: np.power(z, rf)


def power_fn(r: Fraction) -> _Fn:
    """x^r with its convexity pieces: integers on the line (x != 0 for r < 0), rationals on
    x >= 0 (x > 0 for r < 0), the domain the caller checks per box."""
    value, dpow, rf = _power_code(r), _power_code(r - 1), float(r)
    integer = r.denominator == 1
    if integer and r > 0:
        pieces = ((-INF, 0.0, -1), (0.0, INF, 1)) if r % 2 else ((-INF, INF, 1),)
    elif integer:
        pieces = ((-INF, 0.0, 1 if r % 2 == 0 else -1), (0.0, INF, 1))
    else:
        pieces = ((0.0, INF, 1 if (r > 1 or r < 0) else -1),)
    nonneg = not integer or r % 2 == 0
    e = 1.0 / float(r - 1)

    def inverse_pq(k, p, q):  # r c^(r-1) = k, c on the piece's side of 0
        mag = np.power(np.abs(k / rf), e)
        return np.where(q <= 0, -mag, mag)

    return _Fn("power", value, lambda z: rf * dpow(z), (0.0 if nonneg else -INF, INF),
               pieces=pieces, inverse_pq=inverse_pq)


def _box_curvature(fn: _Fn, lo, hi):
    """Per box +1 where f is convex on [lo, hi], -1 where concave, 0 where both occur."""
    convex = np.ones(lo.shape, dtype=bool)
    concave = np.ones(lo.shape, dtype=bool)
    for a, b, curv in _pieces(fn):
        on = np.maximum(lo, a) < np.minimum(hi, b)
        if curv > 0:
            concave &= ~on
        else:
            convex &= ~on
    return np.where(convex & ~concave, 1, np.where(concave & ~convex, -1, 0))


def power_domain(r: Fraction, xl, xu):
    """Per box: x^r is defined on all of [xl, xu]."""
    if r.denominator == 1:
        return (xl > 0) | (xu < 0) if r < 0 else np.ones(np.shape(xl), dtype=bool)
    return xl > 0 if r < 0 else xl >= 0


FNS: dict[type, _Fn] = {
    sp.tanh: _Fn("s", np.tanh, _sech2, (-1.0, 1.0), _inv_tanh),
    sigmoid: _Fn("s", _sig, lambda z: _sig(z) * _sig(-z), (0.0, 1.0), _inv_sigmoid),
    softplus: _Fn("convex", lambda z: np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z))), _sig,
                  (0.0, INF), _inv_softplus),
    Sech2: _Fn("bell", _sech2, lambda z: -2.0 * _sech2(z) * np.tanh(z), (0.0, 1.0),
               _inv_sech2),
}


def _enc(fn: _Fn, z):
    return _widen(fn.value(z), *fn.range)


def _denc(fn: _Fn, z):
    return _widen(fn.deriv(z), -INF, INF)


def _pieces(fn: _Fn):
    """(a, b, curvature) with curvature +1 convex, -1 concave, 0 monotone."""
    if fn.shape == "s":
        return [(-INF, 0.0, 1), (0.0, INF, -1)]
    if fn.shape == "convex":
        return [(-INF, INF, 1)]
    if fn.shape == "power":
        return list(fn.pieces)
    return [(-INF, -_R2, 1), (-_R2, -_R1, 0), (-_R1, _R1, -1), (_R1, _R2, 0), (_R2, INF, 1)]


def _stationary(fn: _Fn, k, p, q, convex: bool):
    """A point of [p, q] where f' is close to k (f' is monotone on a curvature piece)."""
    if fn.inverse_pq is not None:
        with np.errstate(all="ignore"):
            c = fn.inverse_pq(k, p, q)
    elif fn.inverse is not None:
        with np.errstate(all="ignore"):
            c = fn.inverse(k, convex)
    else:
        a, b = p.copy(), q.copy()
        rising = convex  # f' increases on convex pieces
        for _ in range(24):  # any c is sound; 2^-24 of the piece is close enough
            m = 0.5 * (a + b)
            below = (fn.deriv(m) < k) == rising
            a, b = np.where(below, m, a), np.where(below, b, m)
        c = 0.5 * (a + b)
    c = np.where(np.isfinite(c), c, 0.5 * (p + q))
    return np.minimum(np.maximum(c, p), q)


def offset(fn: _Fn, k, lo, hi, upper: bool):
    """For lines of slope k (exact floats): a float offset b with k z + b >= f(z) (upper) or
    <= f(z) (lower) for every z in [lo, hi], per box; -inf/inf where nothing is certified."""
    best = np.full(lo.shape, -INF if upper else INF)  # max of f - kz (upper) / min (lower)
    for a, b, curv in _pieces(fn):
        p, q = np.maximum(lo, a), np.minimum(hi, b)
        on = p <= q
        if not on.any():
            continue
        p, q = np.where(on, p, lo), np.where(on, q, lo)  # dummy values off the piece
        if curv == 0:
            fp, fq = _enc(fn, p), _enc(fn, q)
            if upper:
                g = nu(np.maximum(fp[1], fq[1]) - nd(np.minimum(k * p, k * q)))
            else:
                g = nd(np.minimum(fp[0], fq[0]) - nu(np.maximum(k * p, k * q)))
        elif (curv > 0) == upper:  # the gap is concave: its extreme is at an end
            g = None
            for z in (p, q):
                fz = _enc(fn, z)
                kz = k * z
                gz = nu(fz[1] - nd(kz)) if upper else nd(fz[0] - nu(kz))
                g = gz if g is None else (np.maximum(g, gz) if upper else np.minimum(g, gz))
        else:  # the gap is convex: above its tangent at c
            c = _stationary(fn, k, p, q, curv > 0)
            fc, dc = _enc(fn, c), _denc(fn, c)
            slope = nu(np.maximum(np.abs(nu(dc[1] - k)), np.abs(nd(dc[0] - k))))
            reach = nu(np.maximum(nu(c - p), nu(q - c)))
            drift = nu(slope * reach)
            kc = k * c
            g = nu(nu(fc[1] - nd(kc)) + drift) if upper else nd(nd(fc[0] - nu(kc)) - drift)
        g = np.where(np.isnan(g), INF if upper else -INF, g)
        if upper:
            best = np.where(on, np.maximum(best, g), best)
        else:
            best = np.where(on, np.minimum(best, g), best)
    return best


def _crown_slope(fn: _Fn, lo, hi, upper: bool):
    """CROWN's slope for an S-shaped f on lo < 0 < hi: the tangent through the far end."""
    end = lo if upper else hi
    fend = fn.value(end)
    a, b = (np.zeros_like(lo), hi) if upper else (lo, np.zeros_like(lo))
    for _ in range(20):
        d = 0.5 * (a + b)
        above = fn.value(d) + fn.deriv(d) * (end - d) - fend >= 0
        # upper: the tangent at d passes above f(end) once d is far enough right
        # upper: valid from the root rightwards; lower: valid from the root leftwards
        a, b = np.where(above, a, d), np.where(above, d, b)
    return fn.deriv(b if upper else a)


def _slopes(fn: _Fn, lo, hi, at, upper: bool) -> list:
    """Candidate slopes for one side: the first from CROWN's rules, then the tangent at `at`."""
    w = hi - lo
    with np.errstate(all="ignore"):
        chord = np.where(w > 0, (fn.value(hi) - fn.value(lo)) / np.where(w > 0, w, 1.0),
                         fn.deriv(lo))
    tan_at = fn.deriv(at)
    if fn.shape == "bell":
        return [chord, tan_at]
    if fn.shape == "power":  # chord on the side where the gap is concave, else tangents
        curv = _box_curvature(fn, lo, hi)
        tangent_side = (curv < 0) if upper else (curv > 0)
        mid = fn.deriv(0.5 * (lo + hi))
        return [np.where(tangent_side, tan_at, chord), np.where(tangent_side, mid, tan_at)]
    mid = fn.deriv(0.5 * (lo + hi))
    if fn.shape == "convex":
        return [chord] if upper else [tan_at, mid]
    # S-shaped: convex below 0, concave above
    tangent_side = (lo >= 0) if upper else (hi <= 0)
    chord_side = (hi <= 0) if upper else (lo >= 0)
    straddle = ~(tangent_side | chord_side)
    primary = np.where(chord_side, chord, mid)
    if straddle.any():
        with np.errstate(all="ignore"):
            crown = _crown_slope(fn, lo, hi, upper)
        ok = chord <= (fn.deriv(hi) if upper else fn.deriv(lo))
        primary = np.where(straddle, np.where(ok, chord, crown), primary)
    return [primary, tan_at]


def envelope_lines(fn: _Fn, lo, hi, at, upper: bool):
    """Per box the certified line (slope, offset) of one side closest to f at `at`."""
    best_k = best_b = None
    for k in _slopes(fn, lo, hi, at, upper):
        k = np.where(np.isfinite(k), k, 0.0)
        b = offset(fn, k, lo, hi, upper)
        if best_k is None:
            best_k, best_b = k, b
            continue
        val, old = k * at + b, best_k * at + best_b
        better = (val < old) if upper else (val > old)
        better |= ~np.isfinite(best_b)
        better &= np.isfinite(b)
        best_k, best_b = np.where(better, k, best_k), np.where(better, b, best_b)
    return best_k, best_b


# ---- the batched tape ------------------------------------------------------------------------


@dataclass
class Batch:
    """One run: per slot intervals (B,) and forms (B, n + 1) (None where not kept)."""

    lo: np.ndarray  # (B, n) input boxes, floats
    hi: np.ndarray
    vlo: list = field(default_factory=list)
    vhi: list = field(default_factory=list)
    L: list = field(default_factory=list)
    U: list = field(default_factory=list)
    x: list = field(default_factory=list)  # float value of each slot at the hint point
    rel: dict = field(default_factory=dict)  # slot -> its relaxation in its arguments


class BatchTape:
    """A `Tape` compiled for batched float runs; raises `Unsupported` for what it lacks."""

    SUPPORTED = frozenset({"affine", "mul", "pow", "rpow", "fn", "abs"})

    def __init__(self, tape: Tape, leaves: list) -> None:
        self.tape = tape
        self.leaves = list(leaves)  # input order of the box columns
        self.n = len(self.leaves)
        slot_of = {s: tape.leaves[s] for s in self.leaves if s in tape.leaves}
        self.dim_of = {slot: i for i, (_, slot) in enumerate(slot_of.items())}
        if len(slot_of) != len(tape.leaves):
            raise Unsupported("a leaf of the tape is not a bounded input")
        self.consts = {}
        for slot, iv in enumerate(tape.base):
            if slot in self.dim_of:
                continue
            if iv[0] == -INF or iv[1] == INF:
                if any(out == slot for _, _, out, _ in tape.code):
                    continue
                raise Unsupported("an unbounded constant or unknown term")
            self.consts[slot] = (down(iv[0]), up(iv[1]))
        self.code = []
        self.nslots = len(tape.base)
        self.powers: dict[Fraction, _Fn] = {}
        self.domain = None  # per box of the last run: an operation's domain was not certified
        for _, kind, out, args in tape.code:
            if kind not in self.SUPPORTED:
                raise Unsupported(f"no batched rule for {kind}")
            if kind == "fn" and args[0] not in FNS:
                raise Unsupported(f"no batched enclosure of {args[0]}")
            if kind in ("pow", "rpow"):
                r = Fraction(args[1])
                limit = MAX_POWER if r.denominator <= 2 else MAX_RATIONAL
                if r == 0 or abs(r) > limit:
                    raise Unsupported(f"the power {r} (batched rules take |exponent| <= "
                                      f"{limit})")
                if r not in (1, 2) and r not in self.powers:
                    self.powers[r] = power_fn(r)
            if kind == "mul" and len(args) > 2:  # a chain of binary products in new slots
                acc = args[0]
                for s in args[1:-1]:
                    self.code.append(("mul", self.nslots, (acc, s)))
                    acc, self.nslots = self.nslots, self.nslots + 1
                args = (acc, args[-1])
            self.code.append((kind, out, self._prep(kind, args)))
        self.bells = tape.bells
        self.sigmoid_bells = tape.sigmoid_bells
        self.formless = tape.formless

    @staticmethod
    def _prep(kind, args):
        if kind != "affine":
            return args
        c0, terms = args
        slots = np.array([s for _, s in terms], dtype=np.intp)
        cf = np.array([float(c) for c, _ in terms])
        if any(c != 0 and abs(c) < 2.0**-900 for c, _ in terms) or not np.all(np.isfinite(cf)):
            raise Unsupported("coefficients outside the float range")
        return float(c0), slots, cf, cf > 0

    # ---- forms ---------------------------------------------------------------------------------

    def _const_form(self, b: Batch, v):
        f = np.zeros((v.shape[0], self.n + 1))
        f[:, 0] = v
        return f

    def _row(self, b: Batch, slot: int, lower: bool):
        f = (b.L if lower else b.U)[slot]
        if f is None:
            f = self._const_form(b, b.vlo[slot] if lower else b.vhi[slot])
        return f

    def combine(self, b: Batch, c0, coeffs, rows, lower: bool):
        """A lower (upper) form of c0 + sum_t c_t f_t for forms rows (T, B, n+1) already
        chosen by the signs of the coefficients (T,) or (B, T); c0 a float or (B,)."""
        T = rows.shape[0]
        if coeffs.ndim == 1:
            s = np.tensordot(coeffs, rows, axes=(0, 0))
            a = np.tensordot(np.abs(coeffs), np.abs(rows), axes=(0, 0))
        else:
            s = np.einsum("bt,tbk->bk", coeffs, rows)
            a = np.einsum("bt,tbk->bk", np.abs(coeffs), np.abs(rows))
        err = a * (gamma(T) + 4 * U) + TINY
        r0 = s[:, 0] + c0
        pen = err[:, 0] + (err[:, 1:] * b.mag).sum(1) + 4 * U * (np.abs(c0) + np.abs(r0)
                                                                   + np.abs(s[:, 0]))
        pen = (pen + TINY) * (1.0 + 8 * (self.n + 2) * U)
        s[:, 0] = np.nextafter(r0 - pen, -INF) if lower else np.nextafter(r0 + pen, INF)
        return s

    def concretize(self, b: Batch, f, upper: bool):
        """Per box a float bound of the form over the box (max if upper, else min)."""
        c = f[:, 1:]
        pick = np.where((c > 0) == upper, b.hi, b.lo)
        v = f[:, 0] + (c * pick).sum(1)
        e = gamma(self.n + 1) * (np.abs(f[:, 0]) + (np.abs(c) * b.mag).sum(1)) + TINY
        return np.nextafter(v + e, INF) if upper else np.nextafter(v - e, -INF)

    def _line(self, b: Batch, k, off, arg: int, upper: bool):
        """The form of k * arg + off (a line above the value if upper) with per-box k."""
        use_u = (k >= 0) == upper
        rows = np.where(use_u[:, None], self._row(b, arg, False), self._row(b, arg, True))
        return self.combine(b, off, k[:, None], rows[None], not upper)

    # ---- the run ---------------------------------------------------------------------------------

    def run(self, lo: np.ndarray, hi: np.ndarray, at: np.ndarray | None = None) -> Batch:
        """Intervals and forms of every slot on the boxes [lo, hi] (B, n); `at` (B, n) is the
        point where envelopes should be tight (default: the centres)."""
        B = lo.shape[0]
        b = Batch(lo, hi, [None] * self.nslots, [None] * self.nslots, [None] * self.nslots,
                  [None] * self.nslots, [None] * self.nslots)
        b.mag = np.maximum(np.abs(lo), np.abs(hi))
        at = 0.5 * (lo + hi) if at is None else np.clip(at, lo, hi)
        for slot, i in self.dim_of.items():
            b.vlo[slot], b.vhi[slot], b.x[slot] = lo[:, i], hi[:, i], at[:, i]
            f = np.zeros((B, self.n + 1))
            f[:, i + 1] = 1.0
            b.L[slot] = b.U[slot] = f
        for slot, (clo, chi) in self.consts.items():
            b.vlo[slot], b.vhi[slot] = np.full(B, clo), np.full(B, chi)
            b.x[slot] = np.full(B, 0.5 * (clo + chi))
        self.domain = None
        with np.errstate(all="ignore"):
            for kind, out, args in self.code:
                getattr(self, "_" + kind)(b, out, args)
                # an unbounded operand (outside a power's domain, or overflow) can give nan
                # (inf * 0, inf - inf): the interval is then the whole line
                b.vlo[out] = np.where(np.isnan(b.vlo[out]), -INF, b.vlo[out])
                b.vhi[out] = np.where(np.isnan(b.vhi[out]), INF, b.vhi[out])
                if out in self.formless:
                    b.L[out] = b.U[out] = None
                    continue
                for side, upper in ((b.L, False), (b.U, True)):
                    if side[out] is None:
                        continue
                    v = self.concretize(b, side[out], upper)
                    # fmin/fmax: a bound that came out nan is dropped, the other kept
                    if upper:
                        b.vhi[out] = np.fmin(b.vhi[out], v)
                    else:
                        b.vlo[out] = np.fmax(b.vlo[out], v)
        return b

    def _affine(self, b: Batch, out: int, args) -> None:
        c0, slots, cf, pos = args
        vlo = np.stack([b.vlo[s] for s in slots])
        vhi = np.stack([b.vhi[s] for s in slots])
        T = len(slots)
        for lower in (True, False):
            w = np.where(pos[:, None] == lower, vlo, vhi)
            v = cf @ w + c0
            e = (gamma(T) + 4 * U) * (np.abs(cf) @ np.abs(w) + abs(c0) + np.abs(v)) + TINY
            e *= 1.0 + 8 * U
            if lower:
                b.vlo[out] = np.nextafter(v - e, -INF)
            else:
                b.vhi[out] = np.nextafter(v + e, INF)
        if c0 >= 0:  # a sum of non-negative terms (x^2 + y^2 under a sqrt) is >= 0 exactly
            nonneg = np.where(pos[:, None], vlo >= 0, vhi <= 0).all(0)
            b.vlo[out] = np.where(nonneg, np.maximum(b.vlo[out], 0.0), b.vlo[out])
        b.x[out] = cf @ np.stack([b.x[s] for s in slots]) + c0
        if out in self.bells:
            self._bell(b, out, self.bells[out][0])
            return
        if out in self.formless:
            return
        for lower in (True, False):
            rows = np.stack([self._row(b, s, pl == lower) for s, pl in zip(slots, pos)])
            (b.L if lower else b.U)[out] = self.combine(b, c0, cf, rows, lower)

    def _bell(self, b: Batch, out: int, z: int, half: bool = False) -> None:
        """1 - tanh(z)^2 as sech^2(z), or with `half` s (1 - s), s = sigmoid(z), as
        sech^2(z/2)/4: interval and certified lines in z."""
        fn = FNS[Sech2]
        zl, zh = b.vlo[z], b.vhi[z]
        x = np.clip(b.x[z], zl, zh)
        if half:  # the bell in w = z/2 (nd/nu: exact but for underflow)
            zl, zh, x = nd(0.5 * zl), nu(0.5 * zh), 0.5 * x
        el, eh = _enc(fn, zl), _enc(fn, zh)
        lo = np.minimum(el[0], eh[0])
        top = np.where((zl <= 0) & (zh >= 0), 1.0, np.maximum(eh[1], el[1]))
        if half:
            lo, top = nd(0.25 * lo), nu(0.25 * top)
        b.vlo[out] = np.fmax(b.vlo[out], lo)
        b.vhi[out] = np.fmin(b.vhi[out], top)
        for upper in (False, True):
            k, off = envelope_lines(fn, zl, zh, x, upper)
            if half:  # sech^2(w) <= k w + off gives sech^2(z/2)/4 <= (k/8) z + off/4
                k8 = 0.125 * k
                slip = np.where(8.0 * k8 == k, 0.0, nu(1e-300 * nu(np.maximum(-zl, zh))))
                k, off = k8, (nu(nu(0.25 * off) + slip) if upper else nd(nd(0.25 * off) - slip))
            f = self._line(b, k, off, z, upper)
            (b.U if upper else b.L)[out] = _finite_or_const(self, b, f, out, upper)
            b.rel.setdefault(out, [z, None, None])[1 + upper] = ((k,), off)

    def _fn(self, b: Batch, out: int, args) -> None:
        fn = FNS[args[0]]
        z = args[1]
        zl, zh = b.vlo[z], b.vhi[z]
        b.vlo[out] = _enc(fn, zl)[0]
        b.vhi[out] = _enc(fn, zh)[1]
        b.x[out] = fn.value(b.x[z])
        if out in self.formless:
            return
        x = np.clip(b.x[z], zl, zh)
        for upper in (False, True):
            k, off = envelope_lines(fn, zl, zh, x, upper)
            f = self._line(b, k, off, z, upper)
            (b.U if upper else b.L)[out] = _finite_or_const(self, b, f, out, upper)
            b.rel.setdefault(out, [z, None, None])[1 + upper] = ((k,), off)

    def _mul(self, b: Batch, out: int, args) -> None:
        x, y = args
        xl, xu, yl, yu = b.vlo[x], b.vhi[x], b.vlo[y], b.vhi[y]
        ps = [xl * yl, xl * yu, xu * yl, xu * yu]
        b.vlo[out] = nd(np.minimum(np.minimum(ps[0], ps[1]), np.minimum(ps[2], ps[3])))
        b.vhi[out] = nu(np.maximum(np.maximum(ps[0], ps[1]), np.maximum(ps[2], ps[3])))
        b.x[out] = b.x[x] * b.x[y]
        if out in self.formless:
            return
        # McCormick: xy >= yl x + xl y - xl yl, >= yu x + xu y - xu yu; <= yu x + xl y - xl yu,
        # <= yl x + xu y - xu yl (valid for the float corners, which enclose the intervals)
        planes = {False: [(yl, xl, -nu(xl * yl)), (yu, xu, -nu(xu * yu))],
                  True: [(yu, xl, -nd(xl * yu)), (yl, xu, -nd(xu * yl))]}
        for upper, cands in planes.items():
            best = bval = chosen = None
            for cx, cy, c0 in cands:
                rows = np.stack([
                    np.where(((cx >= 0) == upper)[:, None], self._row(b, x, False),
                             self._row(b, x, True)),
                    np.where(((cy >= 0) == upper)[:, None], self._row(b, y, False),
                             self._row(b, y, True))])
                f = self.combine(b, c0, np.stack([cx, cy], 1), rows, not upper)
                v = self.concretize(b, f, upper)
                if best is None:
                    best, bval, chosen = f, v, (cx, cy, c0)
                else:
                    take = (v < bval) if upper else (v > bval)
                    best, bval = np.where(take[:, None], f, best), np.where(take, v, bval)
                    chosen = tuple(np.where(take, new, old) for new, old in
                                   zip((cx, cy, c0), chosen))
            (b.U if upper else b.L)[out] = _finite_or_const(self, b, best, out, upper)
            b.rel.setdefault(out, [(x, y), None, None])[1 + upper] = (chosen[:2], chosen[2])
        if out in self.sigmoid_bells:
            self._bell_or_planes(b, out, x, y)

    def _bell_or_planes(self, b: Batch, out: int, x: int, y: int) -> None:
        """s (1 - s) = sigmoid'(z): per box and side, McCormick's plane (stored) or the bell's
        line in z, whichever concretizes tighter; on narrow boxes either can win."""
        forms, planes = (b.L[out], b.U[out]), b.rel.pop(out)
        self._bell(b, out, self.sigmoid_bells[out][0], half=True)
        z, bell = b.rel[out][0], b.rel[out]
        rel = [(x, y, z), None, None]
        for upper in (False, True):
            side = b.U if upper else b.L
            vm, vb = self.concretize(b, forms[upper], upper), self.concretize(b, side[out], upper)
            take = (vm < vb) if upper else (vm > vb)  # McCormick's plane is tighter
            side[out] = np.where(take[:, None], forms[upper], side[out])
            (kx, ky), cm = planes[1 + upper]
            (kz,), cb = bell[1 + upper]
            rel[1 + upper] = ((np.where(take, kx, 0.0), np.where(take, ky, 0.0),
                               np.where(take, 0.0, kz)), np.where(take, cm, cb))
        b.rel[out] = rel

    def _rpow(self, b: Batch, out: int, args) -> None:
        self._power(b, out, args[0], Fraction(args[1]))

    def _power(self, b: Batch, out: int, x: int, r: Fraction) -> None:
        """x^r other than x and x^2: the interval from the ends (x^r is monotone on the box
        but for even powers around 0, whose minimum is 0), and per side a certified line
        (chord where the gap is concave, tangent at the hint where it is convex). Boxes where
        x^r is not defined on all of x's interval (x <= 0 for r < 0, x < 0 for fractional r)
        get the whole line and are counted in `domain`: they never close."""
        fn = self.powers[r]
        xl, xu = b.vlo[x], b.vhi[x]
        ok = power_domain(r, xl, xu)
        b.x[out] = fn.value(b.x[x])
        el, eu = _enc(fn, xl), _enc(fn, xu)
        lo, hi = np.fmin(el[0], eu[0]), np.fmax(el[1], eu[1])
        lo = np.where(np.isnan(el[0]) | np.isnan(eu[0]), fn.range[0], lo)
        hi = np.where(np.isnan(el[1]) | np.isnan(eu[1]), INF, hi)
        if r.denominator == 1 and r > 0 and r % 2 == 0:
            lo = np.where((xl < 0) & (xu > 0), 0.0, lo)
        b.vlo[out], b.vhi[out] = np.where(ok, lo, -INF), np.where(ok, hi, INF)
        if not ok.all():
            self.domain = ~ok if self.domain is None else self.domain | ~ok
        if out in self.formless:
            return
        hint = np.clip(b.x[x], xl, xu)
        for upper in (False, True):
            k, off = envelope_lines(fn, xl, xu, hint, upper)
            k = np.where(ok & np.isfinite(off), k, 0.0)
            off = np.where(ok & np.isfinite(off), off, INF if upper else -INF)
            f = self._line(b, k, off, x, upper)
            (b.U if upper else b.L)[out] = _finite_or_const(self, b, f, out, upper)
            b.rel.setdefault(out, [x, None, None])[1 + upper] = ((k,), off)

    def _pow(self, b: Batch, out: int, args) -> None:
        x, n = args
        if n not in (1, 2):
            self._power(b, out, x, Fraction(n))
            return
        xl, xu = b.vlo[x], b.vhi[x]
        b.x[out] = b.x[x] ** n
        if n == 1:
            b.vlo[out], b.vhi[out], b.L[out], b.U[out] = xl, xu, b.L[x], b.U[x]
            return
        m = np.maximum(np.abs(xl), np.abs(xu))
        b.vlo[out] = np.where(xl > 0, nd(xl * xl), np.where(xu < 0, nd(xu * xu), 0.0))
        b.vhi[out] = nu(m * m)
        if out in self.formless:
            return
        d = np.clip(0.5 * (xl + xu), xl, xu)  # (x - d)^2 >= 0: x^2 >= 2 d x - d^2
        lower = self.combine(b, -nu(d * d), (2.0 * d)[:, None],
                             np.where((d >= 0)[:, None], self._row(b, x, True),
                                      self._row(b, x, False))[None], True)
        k = xl + xu  # (x - xl)(x - xu) <= 0: x^2 <= (xl + xu) x - xl xu (k within u)
        upper = self.combine(b, -nd(xl * xu), k[:, None],
                             np.where((k >= 0)[:, None], self._row(b, x, False),
                                      self._row(b, x, True))[None], False)
        b.L[out] = _finite_or_const(self, b, lower, out, False)
        b.U[out] = _finite_or_const(self, b, upper, out, True)
        b.rel[out] = [x, ((2.0 * d,), -nu(d * d)), ((k,), -nd(xl * xu))]

    def _abs(self, b: Batch, out: int, args) -> None:
        x = args
        xl, xu = b.vlo[x], b.vhi[x]
        b.x[out] = np.abs(b.x[x])
        b.vlo[out] = np.where(xl >= 0, xl, np.where(xu <= 0, -xu, 0.0))
        b.vhi[out] = np.maximum(-xl, xu)
        if out in self.formless:
            return
        # below: |x| >= x and |x| >= -x; the sign that is larger on the box
        s = np.where(xu >= -xl, 1.0, -1.0)
        lower = self.combine(b, 0.0, s[:, None], np.where(
            (s > 0)[:, None], self._row(b, x, True), self._row(b, x, False))[None], True)
        # above: a x + c with a the chord slope (any a; c from the convex ends)
        w = xu - xl
        a = np.where(xl >= 0, 1.0, np.where(xu <= 0, -1.0,
                                            (xu + xl) / np.where(w > 0, w, 1.0)))
        c = np.maximum(nu(-xl - nd(a * xl)), nu(xu - nd(a * xu)))
        c = np.where(xl >= 0, 0.0, np.where(xu <= 0, 0.0, c))
        upper = self.combine(b, c, a[:, None], np.where(
            (a >= 0)[:, None], self._row(b, x, False), self._row(b, x, True))[None], False)
        b.L[out] = _finite_or_const(self, b, lower, out, False)
        b.U[out] = _finite_or_const(self, b, upper, out, True)
        b.rel[out] = [x, ((s,), np.zeros_like(s)), ((a,), c)]

    # ---- backward substitution (CROWN) for one output ------------------------------------------

    def backward(self, b: Batch, slot: int, sign: float):
        """`_backward` (inf * 0 where a slot is unbounded gives nan there, then inf)."""
        with np.errstate(all="ignore"):
            return self._backward(b, slot, sign)

    def _backward(self, b: Batch, slot: int, sign: float):
        """Per box a float upper bound of sign * slot over the box, by substituting each
        slot's relaxation in reverse program order (the side by the sign of its coefficient).

        Invariant: sign * slot <= sum_s lam_s * s + C on the box. Float updates of a
        coefficient are off by at most e = 4u (|old| + |added|) (this also covers the
        affine weights' conversion to float, relative u); that error times a bound on |s|
        goes into C, every addition to C rounded up."""
        B = b.lo.shape[0]
        lam: dict[int, np.ndarray] = {slot: np.full(B, float(sign))}
        C = np.zeros(B)
        mag = {}

        def bound_of(s):
            m = mag.get(s)
            if m is None:
                m = mag[s] = np.maximum(np.abs(b.vlo[s]), np.abs(b.vhi[s]))
            return m

        def add(s, inc):
            nonlocal C
            old = lam.get(s)
            if old is None:
                lam[s] = inc
                e = np.abs(inc) * (4 * U)
            else:
                lam[s] = old + inc
                e = (np.abs(old) + np.abs(inc)) * (4 * U)
            C = nu(C + nu(e * bound_of(s)))

        for kind, out, args in reversed(self.code):
            lm = lam.pop(out, None)
            if lm is None:
                continue
            if kind == "affine" and out not in self.bells:
                c0, slots, cf, _ = args
                C = nu(C + nu(lm * c0))
                for s_, c in zip(slots, cf):
                    add(s_, lm * c)
                continue
            r = b.rel.get(out)
            if r is None or r[1] is None or r[2] is None:  # no relaxation: the interval
                C = nu(C + nu(np.maximum(lm * b.vlo[out], lm * b.vhi[out])))
                continue
            pos = lm >= 0
            (k_lo, off_lo), (k_up, off_up) = r[1], r[2]
            off = np.where(pos, off_up, off_lo)
            C = nu(C + nu(lm * off))
            srcs = r[0] if isinstance(r[0], tuple) else (r[0],)
            for s_, kl, ku in zip(srcs, k_lo, k_up):
                add(s_, lm * np.where(pos, ku, kl))
        for s_, lm in lam.items():
            if s_ in self.dim_of:
                continue
            # constants (and any slot left over): by the interval
            C = nu(C + nu(np.maximum(lm * b.vlo[s_], lm * b.vhi[s_])))
        coef = np.zeros((B, self.n))
        for s_, i in self.dim_of.items():
            if s_ in lam:
                coef[:, i] = lam[s_]
        f = np.concatenate([C[:, None], coef], 1)
        bound = self.concretize(b, f, True)
        return np.where(np.isnan(bound), INF, bound), coef  # nan: an unbounded slot met 0


def _finite_or_const(bt: BatchTape, b: Batch, f, out: int, upper: bool):
    """A computed form, with boxes where it overflowed replaced by the constant interval form."""
    bad = ~np.isfinite(f).all(1)
    if not bad.any():
        return f
    v = b.vhi[out] if upper else b.vlo[out]
    const = bt._const_form(b, np.where(np.isnan(v), INF if upper else -INF, v))
    return np.where(bad[:, None], const, f)


# ---- branch and bound over input boxes -------------------------------------------------------


KEEP_NODES = 50_000  # split-tree nodes kept for a proof's certificate


@dataclass
class BabResult:
    """How a batched branch and bound ended: "proved" (every box closed), "timeout" or
    "stalled" (a box that can no longer be split), with the boxes evaluated and closed and
    the largest certified badness over all boxes (<= 0 proves non-strict atoms)."""

    status: str
    evaluated: int
    closed: int
    bound: float
    worst: tuple | None = None  # (lo, hi) float arrays of the worst open box
    stopped: object = None  # what `on_round` returned, when it ended the run
    where_closed: int = 0  # boxes closed because a `where` atom is false on all of them
    domain_boxes: int = 0  # boxes where a power's argument left its domain (never closed)


class _Pool:
    """Open boxes as rows of arrays."""

    def __init__(self, n: int, k: int) -> None:
        self.lo = np.empty((0, n))
        self.hi = np.empty((0, n))
        self.at = np.empty((0, n))
        self.ab = np.empty((0, k))  # per atom badness bound (inherited by children)
        self.dim = np.empty(0, dtype=np.intp)
        self.ids = np.empty(0, dtype=np.int64)  # node of the split tree

    def __len__(self) -> int:
        return self.lo.shape[0]

    def bad(self) -> np.ndarray:
        return self.ab.max(1)

    def add(self, keep, lo, hi, at, ab, dim, ids) -> None:
        self.ids = np.concatenate([self.ids, ids[keep]])
        self.lo = np.concatenate([self.lo, lo[keep]])
        self.hi = np.concatenate([self.hi, hi[keep]])
        self.at = np.concatenate([self.at, at[keep]])
        self.ab = np.concatenate([self.ab, ab[keep]])
        self.dim = np.concatenate([self.dim, dim[keep]])

    def take(self, idx) -> tuple:
        out = (self.lo[idx], self.hi[idx], self.at[idx], self.ab[idx], self.dim[idx],
               self.ids[idx])
        rest = np.ones(len(self), dtype=bool)
        rest[idx] = False
        self.lo, self.hi, self.at = self.lo[rest], self.hi[rest], self.at[rest]
        self.ab, self.dim, self.ids = self.ab[rest], self.dim[rest], self.ids[rest]
        return out


class BatchedBab:
    """Best-first branch and bound for goal atoms `lhs - rhs op 0` (ops in `OPS`) on a
    `BatchTape`, over the float box [root_lo, root_hi] (which must contain the real one)."""

    def __init__(self, bt: BatchTape, ops: list[str], outputs: list[int], root_lo, root_hi,
                 tol: float = 0.0, batch: int = BATCH, hyps: list[tuple[str, int]] = ()) -> None:
        self.bt, self.ops, self.outputs = bt, ops, outputs
        # `where` atoms `h op 0` (op, slot of h): a box where one is false everywhere closes,
        # with badness -inf (it holds no point of the claim)
        self.hyps = [(op, o) for op, o in hyps if op != "!="]  # != is never refuted on a box
        self.where_closed = 0
        self.domain_boxes = 0  # evaluated boxes where a power was not certified defined
        self.upper = np.array([op in ("<=", "<") for op in ops])
        self.strict = np.array([op in ("<", ">") for op in ops])
        self.root_lo = np.asarray(root_lo, dtype=float)
        self.root_hi = np.asarray(root_hi, dtype=float)
        self.width = np.where(self.root_hi > self.root_lo, self.root_hi - self.root_lo, 1.0)
        self.tol, self.batch = tol, batch
        self.evaluated = self.closed = 0
        self.closed_bound = -INF
        self.pool = _Pool(bt.n, len(ops))
        # the split tree, for a proof's certificate: node -> (dim, mid, low child, high
        # child); closed node -> its certified badness per atom (None once too large)
        self.splits: dict[int, tuple] | None = {}
        self.closed_nodes: dict[int, list[float]] = {}
        self._next_id = 1

    def _closes(self, ab) -> np.ndarray:
        ok = np.where(self.strict, ab < self.tol, ab <= self.tol)
        return ok.all(1)

    def evaluate(self, lo, hi, at, parent_ab=None):
        """Per box: badness per atom (B, K), the corner hint and the split dimension."""
        b = self.bt.run(lo, hi, at)
        B = lo.shape[0]
        ab = np.empty((B, len(self.ops)))
        forms = []
        with np.errstate(all="ignore"):
            for j, (o, up_) in enumerate(zip(self.outputs, self.upper)):
                bw, coef = self.bt.backward(b, o, 1.0 if up_ else -1.0)
                ab[:, j] = np.fmin(b.vhi[o] if up_ else -b.vlo[o], bw)
                forms.append(np.concatenate([bw[:, None], coef if up_ else -coef], 1))
        ab = np.where(np.isnan(ab), INF, ab)
        if parent_ab is not None:
            ab = np.minimum(ab, parent_ab)
        outside = self.refuted(b) if self.hyps else np.zeros(B, dtype=bool)
        if self.hyps:
            self.where_closed += int(outside.sum())
            ab[outside] = -INF
        if self.bt.domain is not None:
            self.domain_boxes += int((self.bt.domain & ~outside).sum())
        worst = ab.argmax(1)
        coef = np.zeros((B, self.bt.n))
        for j, f in enumerate(forms):
            if f is not None:
                sel = worst == j
                c = f[:, 1:] if self.upper[j] else -f[:, 1:]
                coef[sel] = c[sel]
        coef = np.where(np.isfinite(coef), coef, 0.0)
        corner = np.where(coef > 0, hi, np.where(coef < 0, lo, 0.5 * (lo + hi)))
        w = hi - lo
        score = np.abs(coef) * w + 1e-3 * w / self.width * np.abs(coef).max(1, keepdims=True) \
            + 1e-12 * w / self.width
        self.evaluated += B
        return ab, corner, score.argmax(1)

    def refuted(self, b: Batch) -> np.ndarray:
        """Per box: some `where` atom is false at every point of the box (its float bounds,
        interval and CROWN, are rounded outward; a strict atom is refuted at equality)."""
        out = np.zeros(b.lo.shape[0], dtype=bool)
        with np.errstate(all="ignore"):
            for op, o in self.hyps:
                if op in ("<=", "<", "=="):
                    low = np.fmax(b.vlo[o], -self.bt.backward(b, o, -1.0)[0])
                    out |= (low >= 0) if op == "<" else (low > 0)
                if op in (">=", ">", "=="):
                    high = np.fmin(b.vhi[o], self.bt.backward(b, o, 1.0)[0])
                    out |= (high <= 0) if op == ">" else (high < 0)
        return out

    def run(self, deadline: float, on_round: Callable | None = None) -> BabResult:
        lo, hi = self.root_lo[None].copy(), self.root_hi[None].copy()
        ab, at, dim = self.evaluate(lo, hi, None)
        self._file(lo, hi, at, ab, dim, np.zeros(1, dtype=np.int64))
        rounds, size = 0, 8  # the batch grows while rounds stay short (deadlines stay sharp)
        while len(self.pool):
            start = time.perf_counter()
            if start > deadline:
                return self._result("timeout")
            bad = self.pool.bad()
            m = min(size, len(bad))
            idx = np.argpartition(-bad, m - 1)[:m] if m < len(bad) else np.arange(len(bad))
            plo, phi, pat, pab, pdim, pids = self.pool.take(idx)
            rows = np.arange(m)
            mid = 0.5 * (plo[rows, pdim] + phi[rows, pdim])
            if not np.all((plo[rows, pdim] < mid) & (mid < phi[rows, pdim])):
                self.pool.add(np.ones(m, dtype=bool), plo, phi, pat, pab, pdim, pids)
                return self._result("stalled")
            ids = self._next_id + np.arange(2 * m, dtype=np.int64)
            self._next_id += 2 * m
            self._record_splits(pids, pdim, mid, ids)
            lo = np.concatenate([plo, plo])
            hi = np.concatenate([phi, phi])
            hi[rows, pdim] = mid
            lo[m + rows, pdim] = mid
            ab, at, dim = self.evaluate(lo, hi, np.concatenate([pat, pat]),
                                        np.concatenate([pab, pab]))
            self._file(lo, hi, at, ab, dim, ids)
            rounds += 1
            now = time.perf_counter()
            spent, left = now - start, deadline - now
            # a round costs much the same for 8 boxes as for hundreds (one numpy call per
            # instruction), so grow while a round stays a small part of the time left
            if spent < max(ROUND_SECONDS, 0.1 * left) and m == size:
                size = min(2 * size, self.batch)
            elif spent > max(ROUND_SECONDS, 0.25 * left):
                size = max(8, size // 2)
            if on_round is not None and len(self.pool):
                stop = on_round(self, rounds)
                if stop is not None:
                    res = self._result("stopped")
                    res.stopped = stop
                    return res
        return self._result("proved")

    def _record_splits(self, pids, pdim, mid, ids) -> None:
        if self.splits is None:
            return
        m = len(pids)
        if len(self.splits) + m > KEEP_NODES:
            self.splits = None  # too large for a certificate file
            self.closed_nodes = {}
            return
        for r in range(m):
            self.splits[int(pids[r])] = (int(pdim[r]), float(mid[r]), int(ids[r]),
                                         int(ids[m + r]))

    def certificate_tree(self) -> dict | None:
        """The split tree of a finished proof: {"splits": {node: [dim, mid, lo, hi]},
        "closed": {node: badness per atom}}, floats exact; None when it was too large."""
        if self.splits is None:
            return None
        return {"splits": {n: [d, float(m_), a, b] for n, (d, m_, a, b) in self.splits.items()},
                "closed": dict(self.closed_nodes)}

    def closed_boxes(self, limit: int) -> list | None:
        """(lo, hi) of every closed box, in the order they closed (node ids grow with time),
        read off the split tree; None when the tree was not kept or has over `limit`."""
        if self.splits is None or len(self.closed_nodes) > limit:
            return None
        found = {}
        stack = [(0, self.root_lo, self.root_hi)]
        while stack:
            node, lo, hi = stack.pop()
            if node in self.closed_nodes:
                found[node] = (lo, hi)
            elif node in self.splits:
                d, mid, low, high = self.splits[node]
                h, l_ = hi.copy(), lo.copy()
                h[d] = l_[d] = mid
                stack += [(low, lo, h), (high, l_, hi)]
        return [found[n] for n in sorted(found)]

    def _file(self, lo, hi, at, ab, dim, ids) -> None:
        done = self._closes(ab)
        if done.any() and self.splits is not None:
            for i in np.flatnonzero(done):
                self.closed_nodes[int(ids[i])] = [float(t) if t > -INF else None
                                                  for t in ab[i]]  # None: `where` refuted
        if done.any():
            self.closed += int(done.sum())
            self.closed_bound = max(self.closed_bound, float(ab[done].max()))
        self.pool.add(~done, lo, hi, at, ab, dim, ids)

    def worst_box(self):
        if not len(self.pool):
            return None
        i = int(self.pool.bad().argmax())
        return self.pool.lo[i], self.pool.hi[i]

    def bound(self) -> float:
        """The largest certified badness over every box (closed and open)."""
        open_bad = float(self.pool.bad().max()) if len(self.pool) else -INF
        return max(open_bad, self.closed_bound)

    def _result(self, status: str) -> BabResult:
        return BabResult(status, self.evaluated, self.closed, self.bound(), self.worst_box(),
                         where_closed=self.where_closed, domain_boxes=self.domain_boxes)
