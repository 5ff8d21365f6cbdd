"""ONNX operators beyond dense layers: their import rules, and the elementwise rules of the
activations that no engine relaxes (sin, cos, sign, integer powers), side by side.

Import-time lowerings (exact, so the ReLU engine and its certificates need no change):

- `Conv` (any number of spatial axes; pads, strides, dilations, groups, auto_pad) is an
  affine map: output entry (m, o) = B[m] + sum over taps W[m, c, k] x[g C/G + c, o s - p + k d],
  built tap by tap with exact rational weights (batch 1);
- `MaxPool` is a tree of max(a, b) = a + relu(b - a) over each window (taps in the padding
  are left out, as their value -inf never wins); the `Indices` output is refused;
- `Slice`, `Pad` (constant mode) and `Concat` of input-dependent tensors are index maps.

Elementwise activations, one `Rule` each in `RULES`: float forward, high-precision forward
(mpmath at the caller's precision; `sign` and integer `pow` exactly on rationals), and sound
interval bounds (outward rounded: libm's sin/cos are within 1 ulp, widened by 4 ulps plus a
tiny absolute margin; extrema of sin/cos at k pi/2 found with an enclosure of pi), plus
`floor` and `mul`, the product of two input-dependent tensors: a block whose pre-activation
is [x; y] and whose output is [x*y; x*y], so each block keeps as many outputs as inputs.
Neither the ReLU engine nor the polynomial engine relaxes them: a network holding one goes to
`engines.nonlinear_ops` (interval branch and bound, search and replay).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import numpy as np

U = 2.0 ** -53
TINY = 1e-300
WIDEN_ULPS = 4.0
PI_LO = 3.141592653589793  # float(pi) < pi
PI_HI = float(np.nextafter(PI_LO, np.inf))  # > pi


def _down(x):
    return np.nextafter(x, -np.inf)


def _up(x):
    return np.nextafter(x, np.inf)


def _widen(lo, hi):
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    return (lo - (np.abs(lo) * (WIDEN_ULPS * U) + 1e-300),
            hi + (np.abs(hi) * (WIDEN_ULPS * U) + 1e-300))


# ---- sin / cos ----------------------------------------------------------------------------

def _has_point(l, u, offset: float):
    """Whether [l, u] may hold a point offset*pi/2 + 2 k pi (k an integer): sin's maxima are
    offset 1, its minima 3; cos's maxima 0, minima 2. k = x / (2 pi) - offset / 4, taken on
    both ends of the enclosure [PI_LO, PI_HI] of pi and widened outward, so a point that is
    there is always found (one that is not may be reported: a looser, still sound bound)."""
    with np.errstate(over="ignore", invalid="ignore"):
        qa = np.minimum(l / (2 * PI_LO), l / (2 * PI_HI)) - offset / 4
        qb = np.maximum(u / (2 * PI_LO), u / (2 * PI_HI)) - offset / 4
    qa = qa - (np.abs(qa) * 1e-15 + 1e-12)
    qb = qb + (np.abs(qb) * 1e-15 + 1e-12)
    return np.floor(qb) >= np.ceil(qa)


def _trig_bounds(f, l, u, top: float, bottom: float):
    """Bounds of sin or cos (`f`) over [l, u]: the ends' values widened, and +-1 where the
    interval holds a maximum (at (top + 4k) pi/2) or a minimum (at (bottom + 4k) pi/2)."""
    l = np.asarray(l, dtype=np.float64)
    u = np.asarray(u, dtype=np.float64)
    lo, hi = _widen(np.minimum(f(l), f(u)), np.maximum(f(l), f(u)))
    wide = ~np.isfinite(l) | ~np.isfinite(u) | (u - l >= 2 * PI_LO)
    hi = np.where(wide | _has_point(l, u, top), 1.0, np.minimum(hi, 1.0))
    lo = np.where(wide | _has_point(l, u, bottom), -1.0, np.maximum(lo, -1.0))
    return lo, hi


def sin_bounds(l, u):
    return _trig_bounds(np.sin, l, u, 1.0, 3.0)  # maxima at pi/2 + 2 k pi, minima at 3 pi/2


def cos_bounds(l, u):
    return _trig_bounds(np.cos, l, u, 0.0, 2.0)  # maxima at 2 k pi, minima at pi + 2 k pi


# ---- sign, integer power --------------------------------------------------------------------

def sign_bounds(l, u):
    return np.sign(np.asarray(l, dtype=np.float64)), np.sign(np.asarray(u, dtype=np.float64))


def pow_bounds(l, u, p: int):
    l = np.asarray(l, dtype=np.float64)
    u = np.asarray(u, dtype=np.float64)
    if p == 0:
        return np.ones_like(l), np.ones_like(u)
    with np.errstate(over="ignore"):
        pl, pu = l ** p, u ** p
    # float ** int is within a few ulps per multiplication; widen by p ulps, 4 at least
    w = max(4.0, 2.0 * p) * U
    if p % 2:  # odd: monotone
        lo, hi = pl, pu
    else:
        lo = np.where((l <= 0) & (u >= 0), 0.0, np.minimum(pl, pu))
        hi = np.maximum(pl, pu)
    lo = lo - (np.abs(lo) * w + TINY)
    hi = hi + (np.abs(hi) * w + TINY)
    if p % 2 == 0:
        lo = np.maximum(lo, 0.0)
    return lo, hi


# ---- bilinear product -------------------------------------------------------------------

def _halves(v):
    v = np.asarray(v)
    n = v.shape[-1] // 2
    return v[..., :n], v[..., n:]


def mul_float(v, p=None):
    """Pre-activation [x; y] (last axis, 2n entries) -> [x*y; x*y]."""
    x, y = _halves(v)
    xy = x * y
    return np.concatenate([xy, xy], axis=-1)


def mul_exact(v: np.ndarray, p=None) -> np.ndarray:
    x, y = _halves(v)
    xy = np.array([a * b for a, b in zip(x, y)], dtype=object)
    return np.concatenate([xy, xy])


def mul_bounds(l, u, p=None):
    """Interval product of the halves, outward rounded (each float product is within half an
    ulp; one ulp down and up covers it, and a product of zero stays exact)."""
    a, b = _halves(np.asarray(l, dtype=np.float64))
    c, d = _halves(np.asarray(u, dtype=np.float64))
    lo, hi = imul(a, c, b, d)
    return np.concatenate([lo, lo], axis=-1), np.concatenate([hi, hi], axis=-1)


def imul(xl, xh, yl, yh):
    """[xl, xh] * [yl, yh] outward rounded; infinities times zero count as zero (the interval
    of a product with an exact zero factor), never nan."""
    with np.errstate(invalid="ignore", over="ignore"):
        p = np.stack([xl * yl, xl * yh, xh * yl, xh * yh])
    p = np.where(np.isnan(p), 0.0, p)
    lo, hi = p.min(axis=0), p.max(axis=0)
    return np.where(lo == 0, lo, _down(lo)), np.where(hi == 0, hi, _up(hi))


def _floor_exact(t):
    if isinstance(t, Fraction):
        return Fraction(t.numerator // t.denominator)
    return _mp().floor(t)


def _sign_exact(t):
    return (t > 0) - (t < 0) + 0 * t


@dataclass(frozen=True)
class Rule:
    """An elementwise activation: float forward, high-precision forward, interval bounds."""

    float: Callable
    exact: Callable  # on Fractions (exact) or mpmath numbers (at the caller's precision)
    bounds: Callable
    smooth: bool  # needs mpmath to replay (transcendental)


def _mp():
    import mpmath

    return mpmath


RULES: dict[str, Rule] = {
    "sin": Rule(float=np.sin, exact=lambda t, p=None: _mp().sin(_to_mp(t)),
                bounds=lambda l, u, p=None: sin_bounds(l, u), smooth=True),
    "cos": Rule(float=np.cos, exact=lambda t, p=None: _mp().cos(_to_mp(t)),
                bounds=lambda l, u, p=None: cos_bounds(l, u), smooth=True),
    "sign": Rule(float=lambda v, p=None: np.sign(v), exact=lambda t, p=None: _sign_exact(t),
                 bounds=lambda l, u, p=None: sign_bounds(l, u), smooth=False),
    "pow": Rule(float=lambda v, p: np.power(v, int(p)), exact=lambda t, p: t ** int(p),
                bounds=lambda l, u, p: pow_bounds(l, u, int(p)), smooth=False),
    "floor": Rule(float=np.floor, exact=lambda t, p=None: _floor_exact(t),
                  bounds=lambda l, u, p=None: (np.floor(np.asarray(l, dtype=np.float64)),
                                               np.floor(np.asarray(u, dtype=np.float64))),
                  smooth=False),
    "mul": Rule(float=mul_float, exact=mul_exact, bounds=mul_bounds, smooth=False),
}

ENGINE_LESS = frozenset(RULES)  # activations no engine relaxes
PAIRWISE = frozenset({"mul"})  # rules over the whole pre-activation, not entry by entry


def _to_mp(t):
    mp = _mp()
    if isinstance(t, Fraction):
        return mp.mpf(t.numerator) / t.denominator
    return t


def apply_float(kind: str, v, param=None):
    rule = RULES[kind]
    return rule.float(v, param) if kind in ("pow", "sign", "mul") else rule.float(v)


def apply_exact(kind: str, v: np.ndarray, param=None) -> np.ndarray:
    if kind in PAIRWISE:
        return RULES[kind].exact(v, param)
    return np.array([RULES[kind].exact(t, param) for t in v], dtype=object)


def bounds(kind: str, l, u, param=None):
    return RULES[kind].bounds(l, u, param)


# ---- import-time lowerings ------------------------------------------------------------------

def _pads(attrs, spatial: tuple[int, ...], kernel: tuple[int, ...], strides, dilations,
          fail, ceil_mode: bool = False):
    n = len(spatial)
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("NOTSET", ""):
        pads = list(attrs.get("pads", [0] * (2 * n)))
        if len(pads) != 2 * n:
            raise fail(f"pads has {len(pads)} entries, expected {2 * n}")
        begin, end = pads[:n], pads[n:]
    elif auto == "VALID":
        begin, end = [0] * n, [0] * n
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for d, k, s, dl in zip(spatial, kernel, strides, dilations):
            out = -(-d // s)
            total = max(0, (out - 1) * s + (k - 1) * dl + 1 - d)
            small = total // 2
            begin.append(small if auto == "SAME_UPPER" else total - small)
            end.append(total - begin[-1])
    else:
        raise fail(f"auto_pad `{auto}` is not an ONNX value")
    outs = []
    for d, k, s, dl, b, e in zip(spatial, kernel, strides, dilations, begin, end):
        span = d + b + e - dl * (k - 1) - 1
        if span < 0:
            raise fail(f"the kernel (size {k}, dilation {dl}) is larger than the padded "
                       f"input ({d} + {b} + {e})")
        o = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (o - 1) * s >= d + b:  # the last window must start inside
            o -= 1
        outs.append(o)
    return begin, outs


def _taps(spatial, kernel, strides, dilations, begin, outs):
    """For each output position (row-major) and each kernel tap (row-major): the input
    position's flat index, or -1 in the padding. Shape (prod outs, prod kernel)."""
    n = len(spatial)
    o_idx = np.stack(np.meshgrid(*[np.arange(o) for o in outs], indexing="ij"),
                     -1).reshape(-1, n)
    k_idx = np.stack(np.meshgrid(*[np.arange(k) for k in kernel], indexing="ij"),
                     -1).reshape(-1, n)
    pos = (o_idx[:, None, :] * np.array(strides) - np.array(begin)
           + k_idx[None, :, :] * np.array(dilations))
    inside = np.all((pos >= 0) & (pos < np.array(spatial)), axis=-1)
    flat = np.ravel_multi_index(tuple(np.clip(pos, 0, np.array(spatial) - 1)
                                      .transpose(2, 0, 1)), spatial)
    return np.where(inside, flat, -1)


def conv_matrix(x_shape, W, B, attrs, fail):
    """The exact sparse rows (per output entry: input columns and weights, no two taps on one
    column since taps of one output are distinct positions), the bias and the output shape
    of an ONNX Conv on a batch-1 input."""
    from .onnx_import import fractions

    if len(x_shape) < 3 or x_shape[0] != 1:
        raise fail(f"Conv input of shape {list(x_shape)}: expected (1, C, spatial...)")
    C, spatial = x_shape[1], tuple(x_shape[2:])
    M, Cg, kernel = W.shape[0], W.shape[1], tuple(W.shape[2:])
    n = len(spatial)
    group = int(attrs.get("group", 1))
    if "kernel_shape" in attrs and tuple(attrs["kernel_shape"]) != kernel:
        raise fail(f"kernel_shape {list(attrs['kernel_shape'])} does not match the weights' "
                   f"{list(kernel)}")
    if group < 1 or C != Cg * group or M % group:
        raise fail(f"Conv with {C} input channels, weights {list(W.shape)} and group {group}")
    strides = tuple(attrs.get("strides", [1] * n))
    dilations = tuple(attrs.get("dilations", [1] * n))
    if len(strides) != n or len(dilations) != n or min(strides + dilations) < 1:
        raise fail("Conv strides and dilations need one positive entry per spatial axis")
    begin, outs = _pads(attrs, spatial, kernel, strides, dilations, fail)
    taps = _taps(spatial, kernel, strides, dilations, begin, outs)  # (O, K)
    Wf = fractions(W).reshape(M, Cg, -1)
    S, O = int(np.prod(spatial)), taps.shape[0]
    per = M // group
    rows = []  # per output entry: (input columns, exact weights)
    for m in range(M):
        g = m // per
        nz = [(c, k) for c in range(Cg) for k in range(taps.shape[1]) if Wf[m, c, k] != 0]
        for o in range(O):
            cols, ws = [], []
            for c, k in nz:
                t = taps[o, k]
                if t >= 0:
                    cols.append((g * Cg + c) * S + int(t))
                    ws.append(Wf[m, c, k])
            rows.append((np.array(cols, dtype=np.int64), np.array(ws, dtype=object)))
    bias = np.full((M * O,), Fraction(0), dtype=object)
    if B is not None:
        Bf = fractions(B).ravel()
        if Bf.size != M:
            raise fail(f"Conv bias has {Bf.size} entries, {M} output channels")
        bias = np.repeat(Bf, O)
    return rows, bias, (1, M) + tuple(outs)


def maxpool_windows(x_shape, attrs, fail):
    """Per output entry (row-major over (1, C, outs...)), the flat input indices of its
    window (padding taps left out), and the output shape."""
    if len(x_shape) < 3 or x_shape[0] != 1:
        raise fail(f"MaxPool input of shape {list(x_shape)}: expected (1, C, spatial...)")
    C, spatial = x_shape[1], tuple(x_shape[2:])
    n = len(spatial)
    if "kernel_shape" not in attrs:
        raise fail("MaxPool without kernel_shape")
    kernel = tuple(attrs["kernel_shape"])
    strides = tuple(attrs.get("strides", [1] * n))
    dilations = tuple(attrs.get("dilations", [1] * n))
    if attrs.get("storage_order", 0) not in (0, 1):
        raise fail("MaxPool storage_order must be 0 or 1")
    if len(kernel) != n or len(strides) != n or len(dilations) != n:
        raise fail("MaxPool kernel_shape, strides and dilations need one entry per axis")
    begin, outs = _pads(attrs, spatial, kernel, strides, dilations, fail,
                        ceil_mode=bool(attrs.get("ceil_mode", 0)))
    taps = _taps(spatial, kernel, strides, dilations, begin, outs)
    S = int(np.prod(spatial))
    windows = []
    for c in range(C):
        for row in taps:
            valid = [c * S + int(t) for t in row if t >= 0]
            if not valid:
                raise fail("a MaxPool window lies wholly in the padding")
            windows.append(valid)
    return windows, (1, C) + tuple(outs)


def slice_indices(shape, starts, ends, axes, steps):
    """numpy index tuple of ONNX Slice (clamped as the spec says)."""
    rank = len(shape)
    idx = [slice(None)] * rank
    axes = list(range(len(starts))) if axes is None else list(axes)
    steps = [1] * len(starts) if steps is None else list(steps)
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = a + rank if a < 0 else a
        d = shape[a]
        if st == 0:
            raise ValueError("Slice step 0")
        s = s + d if s < 0 else s
        e = e + d if e < 0 else e
        if st > 0:
            s, e = min(max(s, 0), d), min(max(e, 0), d)
        else:
            s, e = min(max(s, -1), d - 1), min(max(e, -1), d - 1)
        idx[a] = slice(s, None if e < 0 and st < 0 else e, st)
    return tuple(idx)


def has_engine_less(blocks) -> str | None:
    """The first activation of `blocks` that no engine relaxes, as `kind (node)`."""
    for blk in blocks:
        if blk.act is not None and blk.act.kind in ENGINE_LESS:
            return f"{blk.act.kind} (node `{blk.node}`)"
    return None


__all__ = ["ENGINE_LESS", "RULES", "Rule", "apply_exact", "apply_float", "bounds",
           "conv_matrix", "cos_bounds", "has_engine_less", "maxpool_windows", "pow_bounds",
           "sign_bounds", "sin_bounds", "slice_indices"]
