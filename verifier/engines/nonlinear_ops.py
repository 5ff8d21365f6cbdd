"""VNN-LIB 1.0 properties on ONNX graphs with sin, cos, integer powers, floor, sign and
products of two input-dependent values (`onnx_ops.RULES`), which the ReLU engine refuses.

1. counterexample search in float64 (random points of each disjunct's box, its corners and
   centre, then random local steps from the best); a candidate counts only after replay on
   the imported graph: exactly in Fractions, or with mpmath at 60 digits and a margin of
   1e-30 when the graph has sin, cos, sigmoid or tanh;
2. branch and bound on the input box: per batch of boxes, interval bounds of every value of
   the graph (`bounds`), each affine map in mid-radius form widened by its a-priori rounding
   bound, each activation by its outward-rounded rule (`onnx_ops`; products by the interval
   product of their factors), then forward linear forms in the inputs (`FormGraph`), then
   backward linear bounds (`nonlinear_backward`: every pre-activation that needs one, block
   after block, and each constraint row of the property itself over [X; Y]); a disjunct is
   closed on a box when one of its constraints is certainly false there (its lower bound,
   rounded down, is above zero), the box when every disjunct is. Open boxes are split in
   half along the input with the largest width times its coefficients in the open rows.

`unsat` only when every box is closed; `sat` only with a replayed witness; otherwise
`unknown` (boxes too small to split) or `timeout`.
"""

from __future__ import annotations

import time
from fractions import Fraction

import numpy as np

from ..onnx_ops import ENGINE_LESS
from ..onnx_ops import bounds as op_bounds
from .crown import TINY, gamma, smooth_bounds
from .nonlinear_backward import BackGraph
from .relu_bab import Result

BATCH = 64  # boxes bounded together at most
BATCH_SECONDS = 1.0  # ... and about this long a batch (the time limit is checked between)
MIN_WIDTH = 1e-12
SEARCH_SHARE = 0.15
SMOOTH = ("sigmoid", "tanh", "softmax", "sin", "cos")


class _Timeout(Exception):
    pass


def takes(net) -> bool:
    """The graph holds an activation only this engine bounds."""
    return any(b.act is not None and b.act.kind in ENGINE_LESS for b in net.blocks)


def _up(x):
    return np.nextafter(x, np.inf)


def _down(x):
    return np.nextafter(x, -np.inf)


class FloatGraph:
    """The blocks of an `OnnxNet` as float64 arrays, for batched interval bounds."""

    def __init__(self, net):
        self.net = net
        self.blocks = []
        for blk, (terms, b) in zip(net.blocks, net.float_blocks(), strict=True):
            terms = [(s, W.T.copy()) for s, W in terms]
            terms = [(s, Wt, np.abs(Wt)) for s, Wt in terms]
            n = 1 + sum(W.shape[1] for _, W in blk.terms)
            self.blocks.append((terms, b, blk.act, gamma(n)))
        self.smooth = any(b.act is not None and b.act.kind in SMOOTH for b in net.blocks)

    def bounds(self, L: np.ndarray, H: np.ndarray):
        """Intervals (B, n_out) certainly holding the outputs over the boxes [L, H] (B, n_in)."""
        ivs = [(L, H)]
        for terms, b, act, g in self.blocks:
            ivs.append(_act_bounds(act, *_affine_interval(terms, b, g, ivs, L.shape[0])))
        return ivs[-1]


def _affine_interval(terms, b, g, ivs, B):
    """Interval of sum_s W_s h_s + b over h_s in ivs[s]: mid-radius form, widened by the
    a-priori rounding bound of the products (and of the weights' own rounding to floats)."""
    zc = np.broadcast_to(b, (B, len(b))).copy()
    zr = np.zeros_like(zc)
    acc = np.broadcast_to(np.abs(b), zc.shape).copy()
    for s, Wt, Aw in terms:
        lo, hi = ivs[s]
        with np.errstate(invalid="ignore", over="ignore"):
            c = 0.5 * lo + 0.5 * hi
            r = _up(np.maximum(hi - c, c - lo))
        c = np.where(np.isfinite(c), c, 0.0)
        r = np.where(np.isnan(r), np.inf, r)
        zc += c @ Wt
        with np.errstate(invalid="ignore"):
            rr = r @ Aw
            acc += np.abs(c) @ Aw + rr
        zr += np.where(np.isnan(rr), np.inf, rr)
    err = 2.0 * g * np.where(np.isnan(acc), np.inf, acc) + TINY
    with np.errstate(invalid="ignore", over="ignore"):
        zl = _down(zc - zr - err)
        zh = _up(zc + zr + err)
    return np.where(np.isnan(zl), -np.inf, zl), np.where(np.isnan(zh), np.inf, zh)


# ---- linear bounds in the inputs (forward mode) ---------------------------------------------
#
# Every value v of the graph gets, per box, float affine forms FL, FU in the inputs (last
# column the constant) and slacks eL, eU >= 0 with FL.[x; 1] - eL <= v <= FU.[x; 1] + eU for
# every x of the box, exactly: each slack collects the a-priori rounding bound of the products
# that made the form, so the forms' float coefficients need not be exact.

class _Form:
    __slots__ = ("FL", "FU", "eL", "eU", "lo", "hi", "sig")

    def __init__(self, FL, FU, eL, eU, lo, hi, xmag):
        self.FL, self.FU, self.eL, self.eU, self.lo, self.hi = FL, FU, eL, eU, lo, hi
        with np.errstate(invalid="ignore", over="ignore"):
            self.sig = _mv(np.abs(FL) + np.abs(FU), xmag)  # (B, size): sum |coef| |x|


def _mv(F, v):
    """(B, i, j) forms times (B, j) vectors."""
    return np.einsum("bij,bj->bi", F, v)


def _matrix(W):
    """W as a sparse matrix when most of it is zero (the linearised sin/cos pieces)."""
    if np.count_nonzero(W) * 4 < W.size:
        import scipy.sparse

        return scipy.sparse.csr_matrix(W)
    return np.ascontiguousarray(W)


def _wmul(W, F):
    """W (m, k) times each form (B, k, c) -> (B, m, c), as one BLAS product."""
    B, k, c = F.shape
    X = np.ascontiguousarray(F.transpose(1, 0, 2)).reshape(k, B * c)
    return (W @ X).reshape(W.shape[0], B, c).transpose(1, 0, 2)


def _span(F, e, XL, XH, xmag, lower: bool):
    """Certain lower (upper) end of F.[x; 1] -/+ e over the boxes."""
    A, c = F[..., :-1], F[..., -1]
    Ap, An = np.maximum(A, 0.0), np.minimum(A, 0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        if lower:
            v = np.einsum("bij,bj->bi", Ap, XL) + np.einsum("bij,bj->bi", An, XH) + c
        else:
            v = np.einsum("bij,bj->bi", Ap, XH) + np.einsum("bij,bj->bi", An, XL) + c
        err = 2.0 * gamma(F.shape[-1] + 2) * _mv(np.abs(F), xmag) + e + TINY
        out = _down(v - err) if lower else _up(v + err)
    return np.where(np.isnan(out), -np.inf if lower else np.inf, out)


def _scaled(a, c, f: _Form, lower: bool):
    """The form of a*v + c (a, c per entry, floats used as they are) bounding from below
    (above) when v is bounded by f: (F, e)."""
    ap, an = np.maximum(a, 0.0), np.minimum(a, 0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        if lower:
            F = ap[..., None] * f.FL + an[..., None] * f.FU
            e = ap * f.eL - an * f.eU
        else:
            F = ap[..., None] * f.FU + an[..., None] * f.FL
            e = ap * f.eU - an * f.eL
        F[..., -1] += c
        e = e * (1 + 4 * U) + 4 * U * (np.abs(a) * f.sig + np.abs(c)) + TINY
    return F, e


U = 2.0 ** -53


def _half(f: _Form, part: slice, xmag) -> _Form:
    return _Form(f.FL[:, part], f.FU[:, part], f.eL[:, part], f.eU[:, part], f.lo[:, part],
                 f.hi[:, part], xmag)


def _relu_lines(lo, hi):
    """(lower slope, lower intercept, upper slope, upper intercept) valid on [lo, hi]."""
    unstable = (lo < 0) & (hi > 0)
    la = np.where(hi <= 0, 0.0, np.where(lo >= 0, 1.0, (hi > -lo).astype(float)))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        lam = _up(hi / _down(hi - lo))
        mu = _up(-lam * lo)
    ua = np.where(unstable, lam, la)
    uc = np.where(unstable, mu, 0.0)
    bad = unstable & ~(np.isfinite(lam) & np.isfinite(mu))
    return la, np.zeros_like(lo), np.where(bad, 0.0, ua), np.where(bad, hi, uc)


def _square_lines(lo, hi):
    """z^2 on [lo, hi]: tangent at the midpoint below ((z - m)^2 >= 0), chord above (z^2 - a z
    is convex, so its largest value on [lo, hi] is at an end)."""
    m = 0.5 * lo + 0.5 * hi
    la, lc = 2.0 * m, -_up(m * m)
    a = lo + hi
    with np.errstate(invalid="ignore", over="ignore"):
        ends = np.maximum(_up(_up(lo * lo) - _down(a * lo)), _up(_up(hi * hi) - _down(a * hi)))
        ends = np.maximum(ends, _up(_up(lo * lo) - _up(a * lo)))
        ends = np.maximum(ends, _up(_up(hi * hi) - _up(a * hi)))
    return la, lc, a, ends


class FormGraph:
    """Forward linear bounds of every value of the graph, intersected with intervals."""

    def __init__(self, graph: FloatGraph):
        self.g = graph
        self.parts = {id(Wt): (_matrix(np.maximum(Wt.T, 0.0)), _matrix(np.minimum(Wt.T, 0.0)))
                      for terms, _, _, _ in graph.blocks for _, Wt, _ in terms}

    def bounds(self, XL, XH):
        """Intervals (B, n_out) of the outputs over the boxes [XL, XH] (B, n_in)."""
        B, n = XL.shape
        xmag = np.concatenate([np.maximum(np.abs(XL), np.abs(XH)), np.ones((B, 1))], axis=1)
        eye = np.zeros((B, n, n + 1))
        eye[:, np.arange(n), np.arange(n)] = 1.0
        forms = [_Form(eye, eye.copy(), np.zeros((B, n)), np.zeros((B, n)), XL, XH, xmag)]
        self.pre = []  # per block, its pre-activation interval
        for terms, b, act, g in self.g.blocks:
            ilo, ihi = _affine_interval(terms, b, g, [(f.lo, f.hi) for f in forms], B)
            FL = np.zeros((B, len(b), n + 1))
            FL[..., -1] += b
            FU = FL.copy()
            eL = np.broadcast_to(4 * U * np.abs(b) + TINY, (B, len(b))).copy()
            eU = eL.copy()
            with np.errstate(invalid="ignore", over="ignore"):
                for s, Wt, Aw in terms:
                    f = forms[s]
                    Wp, Wn = self.parts[id(Wt)]
                    FL += _wmul(Wp, f.FL) + _wmul(Wn, f.FU)
                    FU += _wmul(Wp, f.FU) + _wmul(Wn, f.FL)
                    Wp, Wn = np.maximum(Wt, 0.0), np.minimum(Wt, 0.0)
                    m = np.maximum(np.abs(f.lo), np.abs(f.hi))
                    err = 2.0 * g * ((f.sig + m) @ Aw)
                    eL += f.eL @ Wp - f.eU @ Wn + err
                    eU += f.eU @ Wp - f.eL @ Wn + err
                eL, eU = eL * (1 + 2 * g), eU * (1 + 2 * g)
            eL = np.where(np.isnan(eL), np.inf, eL)
            eU = np.where(np.isnan(eU), np.inf, eU)
            lo = np.maximum(_span(FL, eL, XL, XH, xmag, True), ilo)
            hi = np.minimum(_span(FU, eU, XL, XH, xmag, False), ihi)
            self.pre.append((lo, hi))
            forms.append(self._act(act, _Form(FL, FU, eL, eU, lo, hi, xmag), XL, XH, xmag))
        self.last = forms[-1]
        return forms[-1].lo, forms[-1].hi

    def _act(self, act, z: _Form, XL, XH, xmag) -> _Form:
        if act is None:
            return z
        k = act.kind
        if k == "mul":
            return self._mul(z, XL, XH, xmag)
        lines = _lines(act, z.lo, z.hi)
        if lines is None:  # the interval rule as constant lines
            lo, hi = _act_bounds(act, z.lo, z.hi)
            zero = np.zeros_like(lo)
            lines = (zero, lo, zero, hi)
        la, lc, ua, uc = lines
        FL, eL = _scaled(la, lc, z, True)
        FU, eU = _scaled(ua, uc, z, False)
        return self._finish(FL, FU, eL, eU, act, z, XL, XH, xmag)

    def _finish(self, FL, FU, eL, eU, act, z, XL, XH, xmag):
        ilo, ihi = _act_bounds(act, z.lo, z.hi)
        lo = np.maximum(_span(FL, eL, XL, XH, xmag, True), ilo)
        hi = np.minimum(_span(FU, eU, XL, XH, xmag, False), ihi)
        return _Form(FL, FU, eL, eU, lo, hi, xmag)

    def _mul(self, z: _Form, XL, XH, xmag) -> _Form:
        """McCormick: x y - (xl y + yl x - xl yl) = (x - xl)(y - yl) >= 0 and its three
        siblings, exact identities in the float corners; of the two lines each side, the one
        with the better bound over the box."""
        n = z.lo.shape[1] // 2
        x, y = _half(z, slice(0, n), xmag), _half(z, slice(n, None), xmag)
        cands = {True: [], False: []}
        for lower, xc, yc in ((True, x.lo, y.lo), (True, x.hi, y.hi),
                              (False, x.hi, y.lo), (False, x.lo, y.hi)):
            with np.errstate(invalid="ignore", over="ignore"):
                p = xc * yc
                c = _up(-p) if not lower else _down(-p)
            Fx, ex = _scaled(yc, c, x, lower)
            Fy, ey = _scaled(xc, np.zeros_like(c), y, lower)
            F, e = Fx + Fy, (ex + ey) * (1 + 4 * U) + 4 * U * _mv(np.abs(Fx) + np.abs(Fy), xmag)
            F = np.where(np.isfinite(F), F, 0.0)
            bad = ~np.all(np.isfinite(Fx + Fy), axis=-1) | ~np.isfinite(e)
            e = np.where(bad, np.inf, e)
            cands[lower].append((F, e, _span(F, e, XL, XH, xmag, lower)))
        (F1, e1, b1), (F2, e2, b2) = cands[True]
        pick = (b1 >= b2)[..., None]
        FL, eL = np.where(pick, F1, F2), np.where(pick[..., 0], e1, e2)
        (F1, e1, b1), (F2, e2, b2) = cands[False]
        pick = (b1 <= b2)[..., None]
        FU, eU = np.where(pick, F1, F2), np.where(pick[..., 0], e1, e2)
        from ..onnx_import import Act

        ilo, ihi = _act_bounds(Act("mul"), z.lo, z.hi)
        FL, FU = np.concatenate([FL, FL], axis=1), np.concatenate([FU, FU], axis=1)
        eL, eU = np.concatenate([eL, eL], axis=1), np.concatenate([eU, eU], axis=1)
        lo = np.maximum(_span(FL, eL, XL, XH, xmag, True), ilo)
        hi = np.minimum(_span(FU, eU, XL, XH, xmag, False), ihi)
        return _Form(FL, FU, eL, eU, lo, hi, xmag)


def _lines(act, zl, zh):
    """Linear lower and upper bounds (slope, intercept) per entry of the activations that have
    them, valid on [zl, zh] with their float values as they are; None for the others."""
    if act.kind == "relu":
        return _relu_lines(zl, zh)
    if act.kind == "pow" and act.param == 2:
        return _square_lines(zl, zh)
    if act.kind in CURVATURE:
        return _tangent_lines(act.kind, zl, zh)
    return None


# max |f''| of the smooth activations (sigmoid'' <= 1 / (6 sqrt 3) = 0.0962..., tanh'' <=
# 4 / (3 sqrt 3) = 0.7698...) and the error allowed for libm's f(m) and the float slope
CURVATURE = {"sin": 1.0, "cos": 1.0, "sigmoid": 0.0963, "tanh": 0.7699}
LIBM_ERR = {"sin": 1e-15, "cos": 1e-15, "sigmoid": 1e-14, "tanh": 1e-14}


def _tangent_lines(kind, zl, zh):
    """sin, cos, sigmoid or tanh on [zl, zh]: the tangent at the midpoint m shifted down and
    up by K r^2 / 2 (r the half width, K >= |f''| from CURVATURE), where that band is narrower
    than the interval; elsewhere the interval as constant lines. With a the float slope and
    f(m) the float value (each within LIBM_ERR = e of the true ones, all values at most 1 in
    size), f(z) >= a z + f(m) - a m - K r^2/2 - e (1 + r), and the intercepts are computed
    with a slack for their own rounding."""
    from ..onnx_import import Act, apply_float

    lo, hi = _act_bounds(Act(kind), zl, zh)
    with np.errstate(invalid="ignore", over="ignore"):
        m = 0.5 * zl + 0.5 * zh
        r = _up(np.maximum(zh - m, m - zl))
        if kind == "sin":
            f, a = np.sin(m), np.cos(m)
        elif kind == "cos":
            f, a = np.cos(m), -np.sin(m)
        else:
            f = apply_float(Act(kind), m)
            a = f * (1.0 - f) if kind == "sigmoid" else 1.0 - f * f
        am = a * m
        c = f - am
        band = _up(0.5 * CURVATURE[kind] * _up(r * r) + LIBM_ERR[kind] * (1.0 + r))
        slack = 4 * U * (np.abs(am) + np.abs(f) + np.abs(c) + band) + TINY
        cl, cu = _down(c - band - slack), _up(c + band + slack)
    use = np.isfinite(cl) & np.isfinite(cu) & np.isfinite(a) & (2 * band < hi - lo)
    a = np.where(use, a, 0.0)
    return a, np.where(use, cl, lo), a, np.where(use, cu, hi)


def _act_bounds(act, zl, zh):
    if act is None:
        return zl, zh
    k = act.kind
    if k == "relu":
        return np.maximum(zl, 0.0), np.maximum(zh, 0.0)
    if k == "leaky_relu":
        a = float(act.alpha)
        with np.errstate(invalid="ignore", over="ignore"):
            cands = np.stack([zl, zh, a * zl, a * zh])
        cands = np.where(np.isnan(cands), 0.0, cands)
        w = np.abs(cands) * 1e-15 + TINY
        return (cands - w).min(axis=0), (cands + w).max(axis=0)
    if k in ("tanh", "sigmoid"):
        return smooth_bounds(k, zl, zh)
    if k in ENGINE_LESS:
        lo, hi = op_bounds(k, zl, zh, act.param)
        return (np.where(np.isnan(lo), -np.inf, lo), np.where(np.isnan(hi), np.inf, hi))
    return np.zeros_like(zl), np.ones_like(zh)  # softmax


class _Rows:
    """Every disjunct's non-box constraints as float rows over [X; Y] with a rounding slack,
    so `lower` is a certain lower bound of each constraint's left side over a box."""

    def __init__(self, prop):
        n, m = prop.n_inputs, prop.n_outputs
        rows, consts, owner, strict = [], [], [], []
        for k, d in enumerate(prop.disjuncts):
            for c in d.output_constraints():
                row = np.zeros(n + m)
                for i, a in c.x:
                    row[i] += float(a)
                for j, a in c.y:
                    row[n + j] += float(a)
                rows.append(row)
                consts.append(float(c.const))
                owner.append(k)
                strict.append(c.strict)
        self.M = np.array(rows).reshape(len(rows), n + m)
        self.c0 = np.array(consts)
        self.owner = np.array(owner, dtype=np.int64)
        self.strict = np.array(strict, dtype=bool)
        self.g = gamma(int(np.count_nonzero(self.M, axis=1).max(initial=0)) + 2)
        self.Mp, self.Mn = np.maximum(self.M, 0.0), np.minimum(self.M, 0.0)
        self.Ma = np.abs(self.M)

    def lower(self, VL, VH):
        """(B, rows) lower bounds of each row's left side over the boxes [VL, VH]."""
        with np.errstate(invalid="ignore", over="ignore"):
            lo = VL @ self.Mp.T + VH @ self.Mn.T + self.c0
            mag = np.maximum(np.abs(VL), np.abs(VH))
            slack = 2.0 * self.g * (mag @ self.Ma.T + np.abs(self.c0)) + TINY
            out = _down(lo - slack)
        return np.where(np.isnan(out), -np.inf, out)

    def value(self, V):
        return V @ self.M.T + self.c0


class Engine:
    def __init__(self, net, prop, timeout: float, seed: int = 0, backward: bool = True):
        self.net, self.prop = net, prop
        self.deadline = time.perf_counter() + timeout
        self.rng = np.random.default_rng(seed)
        self.graph = FloatGraph(net)
        self.forms = FormGraph(self.graph)
        self.back = BackGraph(self.graph, _lines) if backward else None
        self.rows = _Rows(prop)
        self.nd = len(prop.disjuncts)
        self.dlo = np.array([[_fdown(v) for v in d.lo] for d in prop.disjuncts])
        self.dhi = np.array([[_fup(v) for v in d.hi] for d in prop.disjuncts])
        self.lo, self.hi = self.dlo.min(axis=0), self.dhi.max(axis=0)
        self.stats = {"engine": "nonlinear_ops linear bounds", "boxes": 0, "replays": 0}

    def check_time(self):
        if time.perf_counter() > self.deadline:
            raise _Timeout

    # ---- replay and search
    def replay(self, xf, k: int):
        """Exact (or 60-digit) check of disjunct k at the float point xf: (x, y) or None."""
        from .relu_bab import _holds_margin

        self.stats["replays"] += 1
        d = self.prop.disjuncts[k]
        x = [min(max(Fraction(float(v)), a), b) for v, a, b in zip(xf, d.lo, d.hi)]
        y = self.net.evaluate_exact(x)
        if not self.graph.smooth:
            return (x, y) if all(c.holds(x, y) for c in d.constraints) else None
        import mpmath

        with mpmath.workdps(60):
            xs = [mpmath.mpf(v.numerator) / v.denominator for v in x]
            ok = all(_holds_margin(c, xs, y) for c in d.constraints)
        return (x, y) if ok else None

    def margins(self, X):
        """Per point, the best disjunct and its float margin min over rows of -lhs."""
        Y = self.graph.net.evaluate_float(X)
        V = np.concatenate([X, Y], axis=1)
        r = -self.rows.value(V)
        r = np.where(self.rows.strict, r - 1e-9, r)
        best = np.full((len(X), self.nd), np.inf)
        np.minimum.at(best.T, self.rows.owner, r.T) if r.size else None
        inside = np.all((X[:, None, :] >= self.dlo) & (X[:, None, :] <= self.dhi), axis=2)
        best = np.where(inside, best, -np.inf)
        k = np.argmax(best, axis=1)
        return best[np.arange(len(X)), k], k

    def corners(self):
        """Per constraint row, the corner of its disjunct's box where the row's backward
        lower form (last bounded at the root) is least: where a row can be made true first."""
        G = self.back.last_rows if self.back is not None else None
        if G is None or not G.size:
            return np.zeros((0, len(self.lo)))
        k = self.rows.owner
        return np.where(G[0] > 0, self.dlo[k], self.dhi[k])

    def search(self, seconds: float, extra=None):
        end = time.perf_counter() + seconds
        n = len(self.lo)
        pts = [self.dlo, self.dhi, 0.5 * (self.dlo + self.dhi)]
        if extra is not None:
            pts.append(extra)
        for k in range(self.nd):
            pts.append(self.dlo[k] + self.rng.random((64, n)) * (self.dhi[k] - self.dlo[k]))
        X = np.concatenate(pts)
        tried: set = set()
        while True:
            m, ks = self.margins(X)
            order = np.argsort(-m)
            for i in order[:3]:
                key = X[i].tobytes()
                if m[i] >= -1e-12 and key not in tried:
                    tried.add(key)
                    hit = self.replay(X[i], int(ks[i]))
                    if hit is not None:
                        return hit
            if time.perf_counter() > end:
                return None
            top = X[order[:32]]
            scale = (self.hi - self.lo) * self.rng.choice([0.3, 1e-1, 1e-2, 1e-3])
            X = np.clip(np.repeat(top, 8, axis=0) + self.rng.normal(size=(256, n)) * scale,
                        self.lo, self.hi)
            X = np.concatenate([X, self.lo + self.rng.random((128, n)) * (self.hi - self.lo)])

    # ---- branch and bound
    def alive(self, L, H):
        """(B, disjuncts) not yet closed on the box, and (B, inputs) split scores: per input,
        its width times its coefficients in the output forms of the rows still open."""
        YL, YH = self.forms.bounds(L, H)
        n = L.shape[1]
        if self.back is not None:
            st = self.back.bounds(L, H, pre=self.forms.pre)
            YL, YH = np.maximum(YL, st.ivs[-1][0]), np.minimum(YH, st.ivs[-1][1])
        low = self.rows.lower(np.concatenate([L, YL], axis=1), np.concatenate([H, YH], axis=1))
        G = None
        if self.back is not None and low.size:
            M = self.rows.M
            low = np.maximum(low, self.back.rows_lower(st, M[:, n:], M[:, :n], self.rows.c0,
                                                       L, H))
            G = self.back.last_rows = self.back.last_inputs  # (B, rows, inputs): row forms
        false = np.where(self.rows.strict, low >= 0, low > 0)
        closed = np.zeros((len(L), self.nd), dtype=bool)
        if false.size:
            np.logical_or.at(closed.T, self.rows.owner, false.T)
        meets = np.all((L[:, None, :] <= self.dhi) & (H[:, None, :] >= self.dlo), axis=2)
        alive = meets & ~closed
        open_rows = (~false & alive[:, self.rows.owner]).astype(float)  # (B, rows)
        if G is not None:
            G = np.where(np.isfinite(G), np.abs(G), 0.0)
            return alive, np.einsum("br,bri->bi", open_rows, G) * (H - L)
        f = self.forms.last
        G = np.abs(f.FL[..., :n]) + np.abs(f.FU[..., :n])  # (B, outputs, inputs)
        G = np.where(np.isfinite(G), G, 0.0)
        My = np.abs(self.rows.M[:, n:])  # (rows, outputs)
        w = np.einsum("br,ro->bo", open_rows, My)
        score = (np.einsum("bo,boi->bi", w, G) + open_rows @ np.abs(self.rows.M[:, :n]))
        return alive, score * (H - L)

    def bab(self):
        queue = [(self.lo.copy(), self.hi.copy())]
        span = np.maximum(self.hi - self.lo, 1e-300)
        small, size = 0, 4
        while queue:
            self.check_time()
            batch, queue = queue[-size:], queue[:-size]
            L = np.array([b[0] for b in batch])
            H = np.array([b[1] for b in batch])
            self.stats["boxes"] += len(batch)
            t = time.perf_counter()
            alive, score = self.alive(L, H)
            per_box = (time.perf_counter() - t) / len(batch)
            size = int(min(max(BATCH_SECONDS / max(per_box, 1e-9), 1), BATCH))
            alive = alive.any(axis=1)
            open_ = np.nonzero(alive)[0]
            if len(open_):
                mid = 0.5 * (L[open_] + H[open_])
                m, ks = self.margins(mid)
                for i, j in enumerate(open_):
                    if m[i] >= -1e-12:
                        hit = self.replay(mid[i], int(ks[i]))
                        if hit is not None:
                            return hit
            for i in open_:
                d = int(np.argmax(score[i])) if score[i].max() > 0 else \
                    int(np.argmax((H[i] - L[i]) / span))
                c = 0.5 * (L[i][d] + H[i][d])
                if H[i][d] - L[i][d] < MIN_WIDTH or not L[i][d] < c < H[i][d]:
                    small += 1
                    continue
                h1, l2 = H[i].copy(), L[i].copy()
                h1[d], l2[d] = c, c
                queue.append((L[i], h1))
                queue.append((l2, H[i]))
        return small

    def run(self) -> Result:
        try:
            hit = None
            if self.alive(self.lo[None], self.hi[None])[0].any():  # else closed at the root
                left = self.deadline - time.perf_counter()
                hit = self.search(max(min(SEARCH_SHARE * left, 5.0), 0.2), self.corners())
            if hit is None:
                small = self.bab()
        except _Timeout:
            return Result("timeout", reason="time limit reached in the nonlinear-operator "
                          "engine (interval branch and bound)", stats=self.stats)
        if hit is not None:
            return Result("sat", witness_x=hit[0], witness_y=hit[1], stats=self.stats)
        if small:
            return Result("unknown", reason=f"{small} boxes too small to split stayed open",
                          stats=self.stats)
        return Result("unsat", reason=f"linear and interval bounds (outward rounded) closed "
                      f"every disjunct "
                      f"on {self.stats['boxes']} boxes", stats=self.stats)


def _fdown(q: Fraction) -> float:
    f = float(q)
    return float(_down(f)) if Fraction(f) > q else f


def _fup(q: Fraction) -> float:
    f = float(q)
    return float(_up(f)) if Fraction(f) < q else f


def decide(net, prop, timeout: float, seed: int = 0) -> Result:
    """Answer a VNN-LIB 1.0 property on a graph with `onnx_ops` activations."""
    return Engine(net, prop, timeout, seed=seed).run()


__all__ = ["Engine", "FloatGraph", "decide", "takes"]
