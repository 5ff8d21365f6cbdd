"""Affine relaxations of single instructions, in the float forms of `linforms`.

Each function returns a (lower, upper) pair of forms for one tape slot from the forms of its
arguments and their intervals, or None for a side it cannot bound: smooth activations through
their certified envelope lines, sech^2 through its own lines, ReLU by DeepPoly's rule,
products by McCormick planes at float corners taken outward, squares by tangent and chord,
|x| by the chord and +-x. Every constant is exact or rounded outward, and `FloatForms.combine`
accounts for the rounding of the rest.
"""

from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

from .envelopes import INF, Line, bell_envelope
from .linforms import FloatForms, convertible, down, mul_planes, up

if TYPE_CHECKING:
    from .intervals import Evaluation


def _pick(lines: list[Line], lo, hi, upper: bool) -> Line | None:
    """The line closest to the function at the middle of [lo, hi]."""
    if not lines:
        return None
    mid = (lo + hi) / 2
    return (min if upper else max)(lines, key=lambda ln: ln.at(mid))


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


def _bell_forms(forms: FloatForms, iv, z: int, at: float | None, envelope=bell_envelope):
    """sech^2(z) through its own certified lines in z (the best of each side); with
    `envelope=half_bell_envelope`, sech^2(z/2)/4 = sigmoid'(z) likewise."""
    if not _finite(iv) or iv[0] >= iv[1]:
        return None, None
    lowers, uppers = envelope(iv[0], iv[1], at)
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
