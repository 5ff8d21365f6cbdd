"""Sound linear bounds for piecewise-linear networks on batches of input boxes, in float64.

`FloatNet` holds a network as float64 affine maps with a per-entry bound on the difference to
the exact weights (zero for weights read from a file, which are floats already). `bounds()`
runs, for a batch of boxes at once:

1. a forward pass of symbolic linear bounds (each neuron between two affine functions of the
   input, as in Neurify / DeepPoly), which gives every hidden pre-activation an interval;
2. a backward pass (CROWN) for the property rows `r = R y + D x + e`, which gives an upper
   bound of every row over each box and its linear coefficients on the input (used to choose
   the dimension to split).

Soundness with floating point: every computed quantity carries an a-priori rounding error
bound added outward. For a dot product of length n, |fl(a.b) - a.b| <= gamma_n sum|a_i||b_i|
with gamma_n = n u / (1 - n u), u = 2^-53 (we use n + 2 and a 1 % margin, which also covers the
rounding of the error terms themselves); single operations are rounded outward with
`nextafter`. Relaxation offsets (a <= s z + t) are not trusted from the float formula but
recomputed as the maximum gap at the candidate points where it is attained, rounded up, so a
slope that is off by rounding only loosens the bound. Smooth activations (sigmoid, tanh) get
constant bounds from their monotone values, widened by far more than libm's error.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from operator import attrgetter

import numpy as np

from ..onnx_import import Affine, OnnxNet, identity_affine

U = 2.0 ** -53
TINY = 1e-290  # absolute allowance for underflow, per dot product
SMOOTH_WIDEN = 1e-13  # absolute widening of sigmoid/tanh values (libm error is ~1e-16)
INF = np.inf


class single_thread_blas:
    """Run numpy's OpenBLAS on one thread: the engine's many small products are several
    times slower with threads on small machines. Restores the previous setting on exit.
    Also keeps freed memory in the heap (see `_keep_heap`)."""

    def __enter__(self):
        _keep_heap()
        self.lib, self.prev = _openblas(), None
        if self.lib is not None:
            get, set_ = self.lib
            self.prev = get()
            set_(1)
        return self

    def __exit__(self, *exc):
        if self.lib is not None and self.prev:
            self.lib[1](self.prev)
        return False


_HEAP_TUNED = False


def _keep_heap() -> None:
    """Keep freed memory in the heap (glibc mallopt): the engine allocates many short-lived
    arrays of a few MB, and returning each to the OS costs page faults (measured 2x)."""
    global _HEAP_TUNED
    if _HEAP_TUNED:
        return
    _HEAP_TUNED = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def _openblas():
    import ctypes
    import glob
    import os

    here = os.path.dirname(np.__file__)
    for path in sorted(glob.glob(os.path.join(here, "..", "numpy.libs", "*openblas*"))
                       + glob.glob(os.path.join(here, ".dylibs", "*openblas*"))):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", ""):
                get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                set_ = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                if get is not None and set_ is not None:
                    return get, set_
    return None


class Unsupported(Exception):
    """The network has a layer this engine does not handle (softmax, leaky slope > 1)."""


def gamma(n: int) -> float:
    k = (n + 2) * U
    return 1.01 * k / (1.0 - k)


def nu(x):
    """An upper bound of the exact result of the float operation that produced x."""
    return x + (np.abs(x) * (4 * U) + TINY)


def nd(x):
    """A lower bound of the exact result of the float operation that produced x."""
    return x - (np.abs(x) * (4 * U) + TINY)


def float_error(W: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """A bound on |exact - W| per entry, W the nearest floats of `exact`: 0 where the float
    is exact, else one ulp (see `float_and_error`)."""
    return float_and_error(exact, W)[1]


_NUM, _DEN = attrgetter("numerator"), attrgetter("denominator")
_I62 = 2 ** 62


def float_and_error(exact: np.ndarray, W: np.ndarray | None = None):
    """The nearest float64 of each exact rational entry (`W` if given: those floats already)
    and a bound on |exact - float| per entry: 0 where the float is the exact value, else one
    ulp, `spacing(|float|)`, which bounds the error of a correctly rounded conversion.

    Vectorised: numerators and denominators are read once; an entry n / d with d = 2^k and
    |n| <= 2^53 (both within 62 bits) is the float n * 2^-k exactly (a normal number:
    |n / d| >= 2^-62), converted by `ldexp`; a denominator that is not a power of two, or an
    odd numerator above 2^53 over a power of two, is surely inexact (one ulp, the float by
    Python's correctly rounded int division). Only the remaining entries (huge integers,
    values below 2^-62) are compared with their float one by one."""
    shape = exact.shape
    flat = exact.reshape(-1)
    n = flat.size
    if n == 0:
        return np.zeros(shape), np.zeros(shape)
    try:
        nums = list(map(_NUM, flat))
        dens = list(map(_DEN, flat))
    except AttributeError:  # floats among the entries
        flat = [Fraction(t) for t in flat]
        nums = list(map(_NUM, flat))
        dens = list(map(_DEN, flat))
    try:
        N = np.array(nums, dtype=np.int64)
        D = np.array(dens, dtype=np.int64)
        small = np.ones(n, dtype=bool)
    except OverflowError:
        No, Do = np.array(nums, dtype=object), np.array(dens, dtype=object)
        small = np.array([-_I62 < a < _I62 and b < _I62 for a, b in zip(nums, dens)],
                         dtype=bool)
        N = np.where(small, No, 0).astype(np.int64)
        D = np.where(small, Do, 1).astype(np.int64)
    pow2 = (D & (D - 1)) == 0
    fits = small & pow2 & (np.abs(N) <= 2 ** 53)
    k = np.frexp(D.astype(np.float64))[1] - 1  # d = 2^k exactly where pow2
    out = np.ldexp(N.astype(np.float64), -k.astype(np.int32)) if W is None else \
        np.array(W, dtype=np.float64).reshape(-1)
    err = np.zeros(n)
    rest = np.nonzero(~fits)[0]
    if len(rest):
        if W is None:
            out[rest] = [nums[i] / dens[i] for i in rest]  # correctly rounded
        # surely inexact: not dyadic, or an odd numerator of more than 53 bits
        inexact = (small & ~pow2) | (small & pow2 & (D > 1) & (np.abs(N) > 2 ** 53))
        for i in rest:
            if not small[i]:
                d = dens[i]
                inexact[i] = (d & (d - 1)) != 0 or (d > 1 and abs(nums[i]).bit_length() > 53)
        err[rest] = np.where(inexact[rest], np.spacing(np.abs(out[rest])), 0.0)
        for i in rest[~inexact[rest]]:  # one by one: huge integers, tiny values
            if Fraction(float(out[i])) != Fraction(nums[i], dens[i]):
                err[i] = np.spacing(abs(out[i]))
    return out.reshape(shape), err.reshape(shape)


@dataclass
class FLayer:
    """z = W v + b (|W_exact - W| <= EW, |b_exact - b| <= Eb), then act (None: identity)."""

    W: np.ndarray
    b: np.ndarray
    EW: np.ndarray
    Eb: np.ndarray
    exact: Affine
    act: str | None
    alpha: float = 0.0
    alpha_exact: Fraction | None = None

    @classmethod
    def of(cls, aff: Affine, act: str | None, alpha: Fraction | None = None) -> FLayer:
        (W, EW), (b, Eb) = float_and_error(aff.W), float_and_error(aff.b)
        a = float(alpha) if alpha is not None else 0.0
        if alpha is not None and Fraction(a) != alpha:
            raise Unsupported("leaky_relu slope is not a float")
        return cls(W=W, b=b, EW=EW, Eb=Eb, exact=aff,
                   act=act, alpha=a, alpha_exact=alpha)


class FloatNet:
    """A chain of FLayers; the last one has no activation.

    A graph network (skips, branches) is lowered to a chain on the input box [lo, hi]
    (`OnnxNet.chain`); the chain equals the network on that box and every box inside it.
    """

    def __init__(self, net: OnnxNet, lo=None, hi=None):
        chain = net.chain(lo, hi)
        layers = []
        for aff, act in chain:
            kind = act.kind if act is not None else None
            if kind == "softmax":
                raise Unsupported("softmax layers are not supported by the ReLU engine")
            if kind == "leaky_relu" and not (0 <= act.alpha <= 1):
                raise Unsupported("leaky_relu with a slope outside [0, 1]")
            layers.append(FLayer.of(aff, kind, act.alpha if act is not None else None))
        if layers[-1].act is not None:
            layers.append(FLayer.of(identity_affine(layers[-1].W.shape[0]), None))
        self.layers = layers
        self.n_in = net.n_in
        self.n_out = layers[-1].W.shape[0]
        self.piecewise_linear = all(la.act in (None, "relu", "leaky_relu") for la in layers)

    @property
    def hidden(self) -> list[FLayer]:
        return self.layers[:-1]

    def forward(self, x: np.ndarray, upto: int | None = None) -> np.ndarray:
        """Float forward pass of a batch (B, n_in); outputs of the last layer (B, n_out)."""
        v = x
        for la in self.layers[:upto]:
            v = v @ la.W.T + la.b
            v = act_float(la, v)
        return v

    def spec_layer(self, R: list[list[Fraction]], e: list[Fraction]) -> FLayer:
        """The last affine map composed with the property rows: R (W_L v + b_L) + e, exact."""
        last = self.layers[-1].exact
        Rm = np.array(R, dtype=object).reshape(len(R), self.n_out)
        W = Rm.dot(last.W) if Rm.size else np.zeros((len(R), last.W.shape[1]), dtype=object)
        b = (Rm.dot(last.b) if Rm.size else np.zeros(len(R), dtype=object)) + np.array(
            e, dtype=object)
        W = np.vectorize(Fraction, otypes=[object])(W) if W.size else W
        b = np.array([Fraction(t) for t in b], dtype=object)
        return FLayer.of(Affine(W=W, b=b), None)


def act_float(la: FLayer, v: np.ndarray) -> np.ndarray:
    if la.act is None:
        return v
    if la.act == "relu":
        return np.maximum(v, 0.0)
    if la.act == "leaky_relu":
        return np.where(v > 0, v, la.alpha * v)
    if la.act == "sigmoid":
        return 0.5 * (1.0 + np.tanh(0.5 * v))
    if la.act == "tanh":
        return np.tanh(v)
    raise Unsupported(la.act)


def smooth_bounds(act: str, l: np.ndarray, u: np.ndarray):
    """Sound [act(l), act(u)] for monotone smooth activations."""
    f = np.tanh if act == "tanh" else (lambda z: 0.5 * (1.0 + np.tanh(0.5 * z)))
    lo_lim, hi_lim = (-1.0, 1.0) if act == "tanh" else (0.0, 1.0)
    with np.errstate(invalid="ignore"):
        lo = np.maximum(f(l) - SMOOTH_WIDEN, lo_lim)
        hi = np.minimum(f(u) + SMOOTH_WIDEN, hi_lim)
    return lo, hi


@dataclass
class Box:
    """A batch of boxes: lo, hi (B, n) with a rigorous centre/radius enclosure."""

    lo: np.ndarray
    hi: np.ndarray

    def __post_init__(self):
        self.ctr = 0.5 * (self.lo + self.hi)
        rad = np.maximum(self.hi - self.ctr, self.ctr - self.lo)
        self.rad = nu(nu(rad))
        self.mag = np.maximum(np.abs(self.lo), np.abs(self.hi))


def _upper(A, c, box: Box):
    """Rigorous max over each box of A x + c; A (B, m, n), c (B, m)."""
    Aa = np.abs(A)
    t1 = np.einsum("bmn,bn->bm", A, box.ctr)
    t2 = np.einsum("bmn,bn->bm", Aa, box.rad)
    err = gamma(A.shape[2] + 2) * (np.einsum("bmn,bn->bm", Aa, np.abs(box.ctr)) + t2
                                   + np.abs(c)) + TINY
    return nu(nu(t1 + t2 + c) + err)


def _lower(A, c, box: Box):
    Aa = np.abs(A)
    t1 = np.einsum("bmn,bn->bm", A, box.ctr)
    t2 = np.einsum("bmn,bn->bm", Aa, box.rad)
    err = gamma(A.shape[2] + 2) * (np.einsum("bmn,bn->bm", Aa, np.abs(box.ctr)) + t2
                                   + np.abs(c)) + TINY
    return nd(nd(t1 - t2 + c) - err)


def _mm(W: np.ndarray, A: np.ndarray) -> np.ndarray:
    """W (m, p) applied to a batch of coefficient matrices A (B, p, n) → (B, m, n)."""
    B, p, n = A.shape
    out = W @ A.transpose(1, 0, 2).reshape(p, B * n)
    return out.reshape(W.shape[0], B, n).transpose(1, 0, 2)


@dataclass
class Bounds:
    """Per hidden layer: pre-activation bounds l, u (B, m) and |post-activation| bound."""

    l: list
    u: list
    amag: list  # rigorous bound of |a_k|; amag[0] is the input magnitude

    def flat(self) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate(self.l, axis=1), np.concatenate(self.u, axis=1)

    @staticmethod
    def unflat(net: FloatNet, L: np.ndarray, Uf: np.ndarray) -> Bounds:
        cuts = np.cumsum([la.W.shape[0] for la in net.hidden])[:-1]
        return Bounds(np.split(L, cuts, axis=1), np.split(Uf, cuts, axis=1), [])

    def take(self, mask) -> Bounds:
        return Bounds([a[mask] for a in self.l], [a[mask] for a in self.u],
                      [a[mask] for a in self.amag])

    def unstable(self, net: FloatNet) -> np.ndarray:
        """Number of unstable piecewise-linear neurons per box."""
        count = np.zeros(self.l[0].shape[0], dtype=np.int64) if self.l else None
        for la, l, u in zip(net.hidden, self.l, self.u):
            if la.act in ("relu", "leaky_relu"):
                count += np.sum((l < 0) & (u > 0), axis=1)
        return count


def forward_bounds(net: FloatNet, box: Box, prior: Bounds | None = None,
                   tighten: bool = False) -> Bounds:
    """Symbolic forward pass: interval of every hidden pre-activation over each box.

    `prior`: bounds certified on boxes containing these (a parent's), intersected in.
    `tighten`: before relaxing a layer, its unstable neurons get backward CROWN bounds
    (each box only its own), so later layers start from the tighter intervals.
    """
    B, n = box.lo.shape
    eye = np.broadcast_to(np.eye(n), (B, n, n))
    AL, AU = eye.copy(), eye.copy()
    cL, cU = np.zeros((B, n)), np.zeros((B, n))
    X = box.mag
    ls, us, mags = [], [], [X]
    for la in net.hidden:
        Wp, Wn = np.maximum(la.W, 0.0), np.minimum(la.W, 0.0)
        magU = np.einsum("bpn,bn->bp", np.abs(AU), X) + np.abs(cU)
        magL = np.einsum("bpn,bn->bp", np.abs(AL), X) + np.abs(cL)
        p = la.W.shape[1]
        err = (gamma(p + 1) * (magU @ np.abs(Wp).T + magL @ np.abs(Wn).T + np.abs(la.b))
               + np.maximum(magU, magL) @ la.EW.T + la.Eb + TINY)
        AU2 = _mm(Wp, AU) + _mm(Wn, AL)
        AL2 = _mm(Wp, AL) + _mm(Wn, AU)
        cU2 = nu(nu(cU @ Wp.T + cL @ Wn.T + la.b) + err)
        cL2 = nd(nd(cL @ Wp.T + cU @ Wn.T + la.b) - err)
        AU, AL, cU, cL = AU2, AL2, cU2, cL2
        l, u = _lower(AL, cL, box), _upper(AU, cU, box)
        j = len(ls)
        if prior is not None:
            l, u = np.maximum(l, prior.l[j]), np.minimum(u, prior.u[j])
        if tighten and j:
            unst = (l < 0) & (u > 0)
            counts = unst.sum(axis=1)
            order = np.argsort(counts, kind="stable")
            order = order[counts[order] > 0]
            prev = Bounds(ls, us, mags)
            for start in range(0, len(order), CHUNK):
                sel = order[start:start + CHUNK]
                _tighten(net, la, j, box, prev, sel, unst[sel], l, u)
        ls.append(l)
        us.append(u)
        AL, cL, AU, cU, mag = _relax_forward(la, AL, cL, AU, cU, l, u, X)
        mags.append(mag)
    return Bounds(ls, us, mags)


def _scale_form(A, c, s, X, up: bool):
    """s * (A x + c) with s >= 0 per row (B, m), rounding moved into the constant."""
    A2 = A * s[:, :, None]
    c2 = c * s
    err = 4 * U * (np.einsum("bmn,bn->bm", np.abs(A2), X) + np.abs(c2)) + TINY
    return A2, (nu(c2 + err) if up else nd(c2 - err))


def _relax_forward(la: FLayer, AL, cL, AU, cU, l, u, X):
    """Linear bounds of a = act(z) from those of z; returns new forms and |a| bound."""
    if la.act is None:
        mag = np.maximum(np.abs(l), np.abs(u))
        return AL, cL, AU, cU, mag
    if la.act in ("sigmoid", "tanh"):
        lo, hi = smooth_bounds(la.act, l, u)
        zero = np.zeros_like(AL)
        return zero, lo, zero.copy(), hi, np.maximum(np.abs(lo), np.abs(hi))
    alpha = la.alpha if la.act == "leaky_relu" else 0.0
    active = l >= 0
    inactive = u <= 0
    unstable = ~(active | inactive)
    # upper: chord s z + t on unstable neurons, certified offset
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(unstable, (u - alpha * l) / (u - l), 1.0)
    s = np.clip(s, 0.0, 1.0)
    t = _chord_offset(l, u, s, alpha)
    slope_up = np.where(active, 1.0, np.where(inactive, alpha, s))
    AU2, cU2 = _scale_form(AU, cU, slope_up, X, up=True)
    cU2 = np.where(unstable, nu(cU2 + t), cU2)
    # lower: beta z with beta in {alpha, 1}: exact for 0/1
    beta = np.where(active, 1.0, np.where(inactive, alpha, np.where(u > -l, 1.0, alpha)))
    if alpha == 0.0:
        AL2 = AL * beta[:, :, None]
        cL2 = cL * beta
    else:
        AL2, cL2 = _scale_form(AL, cL, beta, X, up=False)
    amax = np.maximum(np.maximum(u, 0.0), np.abs(alpha * l) * (1 + 4 * U))
    return AL2, cL2, AU2, cU2, amax


def _act_pl(z, alpha):
    return np.where(z > 0, z, alpha * z)


def _chord_offset(l, u, s, alpha):
    """Smallest t (rounded up) with act(z) <= s z + t on [l, u] (act convex: endpoints)."""
    vals = []
    for z in (l, u):
        fz = _act_pl(z, alpha)
        v = fz - s * z
        err = 4 * U * (np.abs(fz) + np.abs(s * z)) + TINY
        vals.append(nu(v + err))
    return np.maximum(vals[0], vals[1])


def best_backward_bound(spec: FLayer, D, ED, bounds: Bounds, box: Box, layers,
                        modes=("adaptive", "chord", "zero", "one")):
    """The smallest of `backward_bound` over several lower-slope choices, per box and row."""
    best_ub, best_G = None, None
    for mode in modes:
        ub, G = backward_bound(spec, D, ED, bounds, box, layers, mode)
        if best_ub is None:
            best_ub, best_G = ub, G
            continue
        better = ub < best_ub
        best_ub = np.where(better, ub, best_ub)
        best_G = np.where(better[:, :, None], G, best_G)
    return best_ub, best_G


def backward_bound(spec: FLayer, D: np.ndarray, ED: np.ndarray, bounds: Bounds, box: Box,
                   layers: list[FLayer], mode: str = "adaptive", betas: list | None = None,
                   phase: list | None = None):
    """CROWN: rigorous upper bound (B, k) of rows spec(a_{L-1}) + D x over each box.

    `spec.W` is (k, m) for rows shared by the boxes or (B, k, m) per box; `D`, `ED` likewise
    (k, n) or (B, k, n).

    `betas`: per layer, lower slopes (B, k, m) of the unstable neurons per box and row (from
    `alpha_crown.optimize_betas`), used instead of `mode`; any slope in [alpha, 1] is sound.

    `phase`: per layer None or signed multipliers (B, k, m) of the boxes' phase constraints
    (beta-CROWN's Lagrangian): +beta on a neuron whose pre-activation z is >= 0 on the
    points bounded, -beta on one with z <= 0, 0 elsewhere. After the layer's relaxation
    `Lam . a <= Lam' . z + c` the pass goes on with fl(Lam' + phase): rounding is monotone, so
    the change has the sign of the multiplier and adds a term >= 0 at every point meeting the
    phases; the bound holds there (not on the rest of the box) for any beta >= 0.

    Returns (ub, G) with G (B, k, n) the input coefficients of the final linear bound.
    Every neglected term is added to the constant K as an upper bound: relaxation offsets,
    the slope rounding, and gamma |Lam| |W| |a| for each product with a weight matrix.
    """
    B = box.lo.shape[0]
    amag_last = bounds.amag[len(layers)]
    if spec.W.ndim == 3:  # per-box rows (B, k, m)
        Lam = spec.W
        k = spec.W.shape[1]
        K = nu(spec.b + (np.einsum("bkm,bm->bk", spec.EW, amag_last) + spec.Eb + TINY))
    else:
        k = spec.W.shape[0]
        Lam = np.broadcast_to(spec.W, (B,) + spec.W.shape)
        K = nu(spec.b[None, :] + (amag_last @ spec.EW.T + spec.Eb + TINY))
    for j in range(len(layers) - 1, -1, -1):
        la = layers[j]
        Lam, extra, extra_abs = _relax_backward(la, Lam, bounds.l[j], bounds.u[j], mode,
                                                None if betas is None else betas[j])
        if phase is not None and phase[j] is not None:
            Lam = Lam + phase[j]
        m = Lam.shape[2]
        # Lam' . (W a + b): Lam' W rounded, error gamma |Lam'| |W| |a| (+ |Lam'| EW |a|)
        amag = bounds.amag[j]  # |a_{j-1}| (the input for j = 0)
        err_vec = gamma(m + 1) * (amag @ np.abs(la.W).T + np.abs(la.b))
        if np.any(la.EW) or np.any(la.Eb):
            err_vec = err_vec + amag @ la.EW.T + la.Eb
        err = np.einsum("bkm,bm->bk", np.abs(Lam), err_vec) + gamma(m) * extra_abs
        K = nu(nu(nu(K + extra) + Lam @ la.b) + (err + TINY))
        Lam = (Lam.reshape(B * k, m) @ la.W).reshape(B, k, la.W.shape[1])
    if D.ndim == 2:  # rows shared by all boxes; (B, k, n): per-box rows
        D, ED = D[None, :, :], ED[None, :, :]
    G = Lam + D
    gerr = 2 * U * np.abs(G) + ED
    K = nu(K + (np.einsum("bkn,bn->bk", gerr, box.mag) + TINY))
    ub = _upper(G, K, box)
    return ub, G


def _relax_backward(la: FLayer, Lam, l, u, mode: str = "adaptive", beta_rows=None):
    """Lam . act(z) <= Lam' . z + extra per row; returns (Lam', extra, bound of |terms|).

    Rows with Lam >= 0 use the upper chord a <= s z + t (t certified by `_chord_offset`),
    rows with Lam < 0 the lower line a >= beta z. The rounding of Lam * slope, at most
    2u |Lam| slope |z|, is added wherever the slope is not 0 or 1. Sigmoid and tanh use the
    constant interval of act(z).
    """
    Lp = np.maximum(Lam, 0.0)
    Ln = Lam - Lp
    if la.act is None:
        zero = np.zeros(Lam.shape[:2])
        return Lam, zero, zero
    if la.act in ("sigmoid", "tanh"):
        lo, hi = smooth_bounds(la.act, l, u)
        extra = np.einsum("bkm,bm->bk", Lp, hi) + np.einsum("bkm,bm->bk", Ln, lo)
        extra_abs = np.einsum("bkm,bm->bk", np.abs(Lam), np.maximum(np.abs(lo), np.abs(hi)))
        return np.zeros_like(Lam), extra, extra_abs
    alpha = la.alpha if la.act == "leaky_relu" else 0.0
    active = l >= 0
    inactive = u <= 0
    unstable = ~(active | inactive)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(unstable, (u - alpha * l) / (u - l), 1.0)
    s = np.clip(s, 0.0, 1.0)
    t = np.where(unstable, _chord_offset(l, u, s, alpha), 0.0)
    if mode == "chord":  # the lower line parallel to the upper chord
        beta = np.maximum(s, alpha)
    elif mode == "zero":
        beta = np.full_like(s, alpha)
    elif mode == "one":
        beta = np.ones_like(s)
    else:
        beta = np.where(u > -l, 1.0, alpha)
    s_pos = np.where(active, 1.0, np.where(inactive, alpha, s))
    zmag = 2 * U * np.maximum(np.abs(l), np.abs(u))
    e_pos = np.where((s_pos == 0.0) | (s_pos == 1.0), 0.0, zmag)
    off_pos = nu(t + s_pos * e_pos)  # all terms >= 0
    if beta_rows is not None:  # per box and row: (B, k, m), clipped into the sound range
        beta = np.clip(beta_rows, alpha, 1.0)
        s_neg = np.where(active[:, None, :], 1.0,
                         np.where(inactive[:, None, :], alpha, beta))
        e_neg = np.where((s_neg == 0.0) | (s_neg == 1.0), 0.0, zmag[:, None, :])
        Lam2 = Lp * s_pos[:, None, :] + Ln * s_neg
        off_neg = nu(s_neg * e_neg)
        extra = np.einsum("bkm,bm->bk", Lp, off_pos) - np.sum(Ln * off_neg, axis=2)
        return Lam2, extra, extra
    s_neg = np.where(active, 1.0, np.where(inactive, alpha, beta))
    e_neg = np.where((s_neg == 0.0) | (s_neg == 1.0), 0.0, zmag)
    Lam2 = Lp * s_pos[:, None, :] + Ln * s_neg[:, None, :]
    off_neg = nu(s_neg * e_neg)
    extra = np.einsum("bkm,bm->bk", Lp, off_pos) - np.einsum("bkm,bm->bk", Ln, off_neg)
    return Lam2, extra, extra


CHUNK = 64  # boxes per backward pass in crown_bounds, grouped by their unstable count


def crown_bounds(net: FloatNet, box: Box, fwd: Bounds | None = None) -> Bounds:
    """Intermediate bounds by backward CROWN per layer (intersected with `fwd` when given).

    Tighter than the forward pass on deep networks, at O(L^2) cost per box; each box
    recomputes only its own unstable neurons (boxes with similar counts share a pass).
    """
    fwd = fwd or forward_bounds(net, box)
    ls, us, mags = [], [], [box.mag]
    for j, la in enumerate(net.hidden):
        l, u = fwd.l[j].copy(), fwd.u[j].copy()
        if j and la.act is not None:
            unst = (l < 0) & (u > 0)
            counts = unst.sum(axis=1)
            order = np.argsort(counts, kind="stable")
            order = order[counts[order] > 0]
            prev = Bounds(ls, us, mags)
            for start in range(0, len(order), CHUNK):
                sel = order[start:start + CHUNK]
                _tighten(net, la, j, box, prev, sel, unst[sel], l, u)
        ls.append(l)
        us.append(u)
        mags.append(np.minimum(fwd.amag[j + 1], _act_mag(la, l, u)))
    return Bounds(ls, us, mags)


def _tighten(net, la, j, box, prev, sel, unst, l, u) -> None:
    """Backward CROWN for the unstable neurons of boxes `sel`; updates l, u in place."""
    cnt = unst.sum(axis=1)
    R = int(cnt.max())
    idx = np.argsort(~unst, axis=1, kind="stable")[:, :R]  # unstable neurons first
    valid = np.arange(R)[None, :] < cnt[:, None]
    W = la.W[idx] * valid[:, :, None]
    b = la.b[idx] * valid
    EW = la.EW[idx] * valid[:, :, None]
    Eb = la.Eb[idx] * valid
    rows = FLayer(W=np.concatenate([W, -W], axis=1), b=np.concatenate([b, -b], axis=1),
                  EW=np.concatenate([EW, EW], axis=1), Eb=np.concatenate([Eb, Eb], axis=1),
                  exact=la.exact, act=None)
    sub = Box(box.lo[sel], box.hi[sel])
    zeroD = np.zeros((2 * R, box.lo.shape[1]))
    ub, _ = backward_bound(rows, zeroD, zeroD, prev.take(sel), sub, net.hidden[:j])
    bi = np.broadcast_to(sel[:, None], idx.shape)[valid]
    ni = idx[valid]
    u[bi, ni] = np.minimum(u[bi, ni], ub[:, :R][valid])
    l[bi, ni] = np.maximum(l[bi, ni], -ub[:, R:][valid])


def _act_mag(la: FLayer, l, u):
    """Rigorous bound of |act(z)| for z in [l, u]."""
    if la.act in ("sigmoid", "tanh"):
        lo, hi = smooth_bounds(la.act, l, u)
        return np.maximum(np.abs(lo), np.abs(hi))
    if la.act in ("relu", "leaky_relu"):
        alpha = la.alpha if la.act == "leaky_relu" else 0.0
        return np.maximum(np.maximum(u, 0.0), np.abs(alpha * l) * (1 + 4 * U))
    return np.maximum(np.abs(l), np.abs(u))
