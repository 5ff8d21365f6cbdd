"""Affine lower/upper bounds in the box's inputs, in float64 with rigorous rounding.

A form `[c0, c_1, ..., c_n]` stands for `c0 + sum c_i x_i`; a *lower* form is below the slot's
value everywhere on the box, an *upper* form above. Forms are combined with numpy (one
gather and one matrix product per instruction) instead of exact rationals, which made the
propagation the bottleneck of branch and bound. Soundness does not rest on the rounding
mode: every combination also computes an a-priori bound on its rounding error (Higham's
gamma_n bound for dot products, times two for the error of that bound itself) and moves the
constant outward by that error times the largest |x_i| on the box, then one more ulp.
Coefficients that would underflow are refused rather than rounded.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

U = 2.0**-53  # unit roundoff of float64
TINY = 2.0**-960  # absolute slack for underflow in any one combination
_MAX = 1.7976931348623157e308
SMALLEST = 2.0**-900  # exact coefficients below this in magnitude are not converted


def _float(q) -> float:
    try:
        return float(q)
    except OverflowError:  # a rational beyond the float range
        return math.inf if q > 0 else -math.inf


def down(q) -> float:
    """The largest float <= q (q a Fraction, int or float; infinities pass through)."""
    x = _float(q)
    if x == math.inf and q != math.inf:
        return _MAX
    if math.isinf(x) or Fraction(x) <= q:
        return x
    return math.nextafter(x, -math.inf)


def up(q) -> float:
    """The smallest float >= q."""
    x = _float(q)
    if x == -math.inf and q != -math.inf:
        return -_MAX
    if math.isinf(x) or Fraction(x) >= q:
        return x
    return math.nextafter(x, math.inf)


def gamma(n: int) -> float:
    """Higham's gamma_n = n u / (1 - n u), doubled to cover the error of computing the bound."""
    return 2.0 * (n + 2) * U / (1.0 - (n + 2) * U)


def convertible(c: Fraction) -> bool:
    return c == 0 or abs(c) >= SMALLEST


class FloatForms:
    """Lower and upper forms of every slot of one tape run, as rows of two float arrays."""

    def __init__(self, box: list, nslots: int) -> None:
        n = len(box)
        self.n = n
        self.lo = np.array([down(a) for a, _ in box], dtype=float)
        self.hi = np.array([up(b) for _, b in box], dtype=float)
        self.mag = np.maximum(np.abs(self.lo), np.abs(self.hi))  # >= |x_i| on the box
        self.L = np.zeros((nslots, n + 1))
        self.U = np.zeros((nslots, n + 1))
        self.has_l = np.zeros(nslots, dtype=bool)
        self.has_u = np.zeros(nslots, dtype=bool)
        self.vlo = np.full(nslots, -math.inf)  # every slot's interval, rounded outward
        self.vhi = np.full(nslots, math.inf)

    # ---- setting forms -------------------------------------------------------------------------

    def set_unit(self, slot: int, i: int) -> None:
        self.L[slot, :] = 0.0
        self.L[slot, i + 1] = 1.0
        self.U[slot] = self.L[slot]
        self.has_l[slot] = self.has_u[slot] = True

    def set_const(self, slot: int, iv) -> None:
        """Constant forms from the slot's interval, where it is finite (and its float copy)."""
        lo, hi = iv
        self.vlo[slot], self.vhi[slot] = down(lo), up(hi)
        if lo != -math.inf and not self.has_l[slot]:
            self.L[slot, :] = 0.0
            self.L[slot, 0] = down(lo)
            self.has_l[slot] = True
        if hi != math.inf and not self.has_u[slot]:
            self.U[slot, :] = 0.0
            self.U[slot, 0] = up(hi)
            self.has_u[slot] = True

    def rows(self, slots, lower_side) -> np.ndarray | None:
        """Rows of the given slots, each lower or upper as `lower_side` says; None if missing."""
        out = np.empty((len(slots), self.n + 1))
        for j, (s, low) in enumerate(zip(slots, lower_side)):
            if low:
                if not self.has_l[s]:
                    return None
                out[j] = self.L[s]
            else:
                if not self.has_u[s]:
                    return None
                out[j] = self.U[s]
        return out

    # ---- the one rigorous primitive ------------------------------------------------------------

    def combine(self, c0, coeffs: np.ndarray, rows: np.ndarray, lower: bool) -> np.ndarray:
        """A lower (or upper) form of `c0 + sum_t c_t f_t`, given float approximations
        `coeffs` of the exact c_t (within relative u, same sign) and forms `rows` f_t.

        The caller picks each f_t as a lower or upper form by the sign of c_t, so the exact
        combination bounds the value; this returns floats whose form bounds that combination.
        """
        c0f = float(c0)
        if coeffs.size:
            s = coeffs @ rows
            a = np.abs(coeffs) @ np.abs(rows)
            err = a * (gamma(len(coeffs)) + 4 * U) + TINY
        else:
            s = np.zeros(self.n + 1)
            err = np.full(self.n + 1, TINY)
        r0 = s[0] + c0f
        pen = err[0] + float(np.dot(err[1:], self.mag)) + 4 * U * (abs(c0f) + abs(r0) + abs(s[0]))
        pen = (pen + TINY) * (1.0 + 8 * (self.n + 2) * U)
        out = s.copy()
        out[0] = math.nextafter(r0 - pen, -math.inf) if lower else math.nextafter(r0 + pen, math.inf)
        if not np.all(np.isfinite(out)):
            raise ArithmeticError("overflow in affine bounds")
        return out

    def affine_interval(self, c0, coeffs: np.ndarray, slots: np.ndarray, pos: np.ndarray):
        """Rational bounds of `c0 + sum c_t v_t` from the float copies of the slots' intervals,
        or None when one of them is unbounded."""
        lo_in = np.where(pos, self.vlo[slots], self.vhi[slots])
        hi_in = np.where(pos, self.vhi[slots], self.vlo[slots])
        if not (np.all(np.isfinite(lo_in)) and np.all(np.isfinite(hi_in))):
            return None
        c0f = float(c0)
        out = []
        for w, lower in ((lo_in, True), (hi_in, False)):
            v = float(coeffs @ w) + c0f
            e = (gamma(len(coeffs)) + 4 * U) * (float(np.abs(coeffs) @ np.abs(w)) + abs(c0f)
                                                 + abs(v)) + TINY
            e *= 1.0 + 8 * U
            r = math.nextafter(v - e, -math.inf) if lower else math.nextafter(v + e, math.inf)
            if not math.isfinite(r):
                return None
            out.append(Fraction(r))
        return out[0], out[1]

    # ---- reading forms -------------------------------------------------------------------------

    def low(self, f: np.ndarray, box: tuple | None = None) -> Fraction:
        """A rational <= the minimum of the form over the box (or over a sub-box `box`, a pair
        of float arrays rounded outward, as from `sub_box`)."""
        lo, hi = box if box is not None else (self.lo, self.hi)
        mag = np.maximum(np.abs(lo), np.abs(hi))
        c = f[1:]
        v = f[0] + float(np.dot(c, np.where(c > 0, lo, hi)))
        e = gamma(self.n + 1) * (abs(f[0]) + float(np.dot(np.abs(c), mag))) + TINY
        return Fraction(math.nextafter(v - e, -math.inf))

    def high(self, f: np.ndarray, box: tuple | None = None) -> Fraction:
        """A rational >= the maximum of the form over the box (or over a sub-box)."""
        lo, hi = box if box is not None else (self.lo, self.hi)
        mag = np.maximum(np.abs(lo), np.abs(hi))
        c = f[1:]
        v = f[0] + float(np.dot(c, np.where(c > 0, hi, lo)))
        e = gamma(self.n + 1) * (abs(f[0]) + float(np.dot(np.abs(c), mag))) + TINY
        return Fraction(math.nextafter(v + e, math.inf))


def sub_box(box: list) -> tuple:
    """Float arrays (lo, hi) rounded outward for a list of rational (lo, hi) pairs."""
    return (np.array([down(a) for a, _ in box], dtype=float),
            np.array([up(b) for _, b in box], dtype=float))


def mul_planes(xl: float, xu: float, yl: float, yu: float):
    """McCormick planes of x*y as (cx, cy, c0) with float corners taken outward, so that
    xy >= cx x + cy y + c0 (lower) or <= (upper) on the exact box; c0 exact as a Fraction."""
    lowers = [(yl, xl, -Fraction(xl) * Fraction(yl)), (yu, xu, -Fraction(xu) * Fraction(yu))]
    uppers = [(yu, xl, -Fraction(xl) * Fraction(yu)), (yl, xu, -Fraction(xu) * Fraction(yl))]
    return lowers, uppers
