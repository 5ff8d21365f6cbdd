"""α-CROWN: choose the lower-relaxation slopes of unstable ReLUs per box and per row.

Backward CROWN bounds `Lam . act(z)` from above with the chord for rows with `Lam >= 0`
and a line `act(z) >= beta z` for rows with `Lam < 0`; every `beta` in `[alpha, 1]` (alpha the
leaky slope, 0 for ReLU) is sound, and the best one depends on the box and the row. Here the
bound is a function of all those `beta`s, minimised by projected Adam steps on its gradient
(computed by hand: the backward pass is linear in `Lam` between sign changes).

The optimisation runs in plain float64 and is only a heuristic to pick slopes: the bound that
is *used* is recomputed by `crown.backward_bound` with the chosen slopes, which adds every
rounding error outward, so a bad or imprecise optimum can only loosen a bound, never make it
unsound.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .crown import Bounds, Box, FLayer


def _chord(la: FLayer, l, u):
    """Upper chord slope s and offset t of act on [l, u] for unstable neurons (float)."""
    alpha = la.alpha if la.act == "leaky_relu" else 0.0
    unstable = (l < 0) & (u > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(unstable, (u - alpha * l) / (u - l), 1.0)
    s = np.clip(s, 0.0, 1.0)
    t = np.where(unstable, np.maximum(np.where(l > 0, l, alpha * l) - s * l,
                                      np.where(u > 0, u, alpha * u) - s * u), 0.0)
    return alpha, unstable, s, t


def crown_value_grad(spec: FLayer, D: np.ndarray, bounds: Bounds, box: Box,
                     layers: list[FLayer], betas: list[np.ndarray], rows_grad: bool = False,
                     phase: list | None = None, coef_out: list | None = None):
    """Float CROWN upper bound (B, k) of rows `spec(a) + D x` with lower slopes `betas`
    (one (B, k, m) array per layer) and its gradient with respect to each of them. `D` is
    (k, n) or per box (B, k, n). `rows_grad`: also return the gradients with respect to the
    rows themselves, (d/d spec.W (B, k, m), d/d D (B, k, n)); d/d spec.b is 1.

    `phase`: per layer None or signed multipliers (B, k, m) of phase constraints, added to
    the coefficients of the pre-activations as in `crown.backward_bound`; the gradients with
    respect to them then follow those of the slopes in the list (one per layer, None where
    phase[j] is None). `coef_out`: a list that gets (layer, the rows' coefficients (B, k, m)
    on the layer's output before its relaxation) for every layer with an activation."""
    B = box.lo.shape[0]
    if spec.W.ndim == 3:
        Lam = spec.W
        K = spec.b.copy()
    else:
        Lam = np.broadcast_to(spec.W, (B,) + spec.W.shape)
        K = np.broadcast_to(spec.b, (B, spec.W.shape[0])).copy()
    k = Lam.shape[1]
    tape = []
    for j in range(len(layers) - 1, -1, -1):
        la = layers[j]
        if la.act in ("relu", "leaky_relu"):
            alpha, unstable, s, t = _chord(la, bounds.l[j], bounds.u[j])
            active = bounds.l[j] >= 0
            s_pos = np.where(unstable, s, np.where(active, 1.0, alpha))[:, None, :]
            s_neg = np.where(unstable[:, None, :], betas[j],
                             np.where(active, 1.0, alpha)[:, None, :])
            pos = Lam >= 0
            Lam2 = np.where(pos, Lam * s_pos, Lam * s_neg)
            if phase is not None and phase[j] is not None:
                Lam2 = Lam2 + phase[j]
            K = K + np.einsum("bkm,bm->bk", np.where(pos, Lam, 0.0), t)
            tape.append((j, Lam, pos, s_pos, s_neg, t, unstable))
            if coef_out is not None:
                coef_out.append((j, Lam))
        elif la.act is None:
            Lam2 = Lam
            tape.append((j, None, None, None, None, None, None))
        else:
            raise ValueError("α-CROWN handles piecewise-linear layers only")
        K = K + Lam2 @ la.b
        m = Lam2.shape[2]
        Lam = (Lam2.reshape(B * k, m) @ la.W).reshape(B, k, la.W.shape[1])
    G = Lam + (D if D.ndim == 3 else D[None, :, :])
    ub = np.einsum("bkn,bn->bk", G, box.ctr) + np.einsum("bkn,bn->bk", np.abs(G),
                                                          box.rad) + K
    dLam = box.ctr[:, None, :] + np.sign(G) * box.rad[:, None, :]
    grads: list = [None] * (len(layers) if phase is None else 2 * len(layers))
    for j, Lam_in, pos, s_pos, s_neg, t, unstable in reversed(tape):
        la = layers[j]
        dLam2 = dLam @ la.W.T + la.b[None, None, :]
        if phase is not None and phase[j] is not None:
            grads[len(layers) + j] = dLam2
        if Lam_in is None:
            dLam = dLam2
            continue
        grads[j] = np.where((~pos) & unstable[:, None, :], dLam2 * Lam_in, 0.0)
        dLam = np.where(pos, dLam2 * s_pos + t[:, None, :], dLam2 * s_neg)
    if rows_grad:
        xstar = box.ctr[:, None, :] + np.sign(G) * box.rad[:, None, :]
        return ub, grads, dLam, xstar
    return ub, grads


def initial_betas(layers: list[FLayer], bounds: Bounds, k: int) -> list[np.ndarray]:
    """CROWN's adaptive choice (1 where u > -l, else the leaky slope), per row."""
    out = []
    for j, la in enumerate(layers):
        l, u = bounds.l[j], bounds.u[j]
        alpha = la.alpha if la.act == "leaky_relu" else 0.0
        beta = np.where(u > -l, 1.0, alpha)
        out.append(np.repeat(beta[:, None, :], k, axis=1))
    return out


def optimize_betas(spec: FLayer, D: np.ndarray, bounds: Bounds, box: Box,
                   layers: list[FLayer], iters: int = 20, lr: float = 0.25,
                   betas: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """Lower slopes that (approximately) minimise the CROWN bound of each row on each box:
    projected Adam from `betas` (default: CROWN's adaptive choice), keeping per box and
    row the best slopes seen."""
    k = spec.W.shape[-2]
    betas = betas or initial_betas(layers, bounds, k)
    lows = [(la.alpha if la.act == "leaky_relu" else 0.0) for la in layers]
    best = [b.copy() for b in betas]
    best_ub = None
    m1 = [np.zeros_like(b) for b in betas]
    m2 = [np.zeros_like(b) for b in betas]
    b1, b2, eps = 0.9, 0.999, 1e-12
    for it in range(1, iters + 1):
        ub, grads = crown_value_grad(spec, D, bounds, box, layers, betas)
        if best_ub is None:
            best_ub = ub
        else:
            better = ub < best_ub
            best_ub = np.where(better, ub, best_ub)
            for j, b in enumerate(betas):
                best[j] = np.where(better[:, :, None], b, best[j])
        if it == iters:
            break
        for j, g in enumerate(grads):
            if g is None:
                continue
            m1[j] = b1 * m1[j] + (1 - b1) * g
            m2[j] = b2 * m2[j] + (1 - b2) * g * g
            step = lr * (m1[j] / (1 - b1 ** it)) / (np.sqrt(m2[j] / (1 - b2 ** it)) + eps)
            betas[j] = np.clip(betas[j] - step, lows[j], 1.0)
    return best


@dataclass
class Combination:
    """What `optimize_combination` found per box and group: the row weights `lam` (B, G, k),
    the lower slopes per layer (B, G, m), the phase multipliers per layer (B, G, m) >= 0 (None
    for a layer without phase constraints, or all None) and the softmax parameters `theta` of
    the weights; `warm` starts a child box's optimisation from them."""

    lam: np.ndarray
    slopes: list
    mults: list
    theta: np.ndarray

    def take(self, mask) -> Combination:
        return Combination(self.lam[mask], [a[mask] for a in self.slopes],
                           [None if a is None else a[mask] for a in self.mults],
                           self.theta[mask])

    def signed(self, sign: list) -> list | None:
        """The multipliers with the sign of their phase (`crown.backward_bound`'s `phase`)."""
        if all(a is None for a in self.mults):
            return None
        return [None if a is None else a * sg[:, None, :] for a, sg in zip(self.mults, sign)]


def initial_combination(k: int, groups: list[np.ndarray], bounds: Bounds,
                        layers: list[FLayer], row_ub: np.ndarray | None = None) -> Combination:
    """Where `optimize_combination` starts without a parent: equal weights (or, with the
    single rows' bounds `row_ub` (B, k), weights leaning towards each group's tightest rows),
    CROWN's adaptive slopes, no phase multipliers."""
    B = bounds.l[0].shape[0]
    G = len(groups)
    theta = np.zeros((B, G, k))
    if row_ub is not None:
        for g, idx in enumerate(groups):
            r = row_ub[:, idx]
            spread = np.maximum(r.max(axis=1, keepdims=True) - r.min(axis=1, keepdims=True),
                                1e-12)
            theta[:, g, idx] = -4.0 * (r - r.min(axis=1, keepdims=True)) / spread
    slopes = initial_betas(layers, bounds, G)
    return Combination(np.zeros((B, G, k)), slopes, [None] * len(layers), theta)


def optimize_combination(spec: FLayer, D: np.ndarray, groups: list[np.ndarray],
                         bounds: Bounds, box: Box, layers: list[FLayer], iters: int = 20,
                         lr: float = 0.5, row_ub: np.ndarray | None = None,
                         sign: list | None = None, warm: Combination | None = None,
                         lr_mult: float = 0.1) -> Combination:
    """Per box and per group of rows (the rows of one conjunction, all >= 0 at an unsafe
    point), weights lam >= 0 summing to 1 and lower slopes that (approximately) minimise the
    CROWN bound of the combined row `sum_k lam_k row_k`: the box is safe for the group as soon
    as one such combination is negative on it. With optimised slopes this is the LP bound of
    the triangle relaxation for all rows at once (its dual), where fixed rows or averages see
    one row at a time. `row_ub` (B, k): bounds of the single rows, to start from weights
    favouring the tightest ones.

    `sign`: per layer (B, m) the boxes' phase constraints (+1: pre-activation >= 0, -1: <= 0,
    0: none), or None: their multipliers beta >= 0 are optimised with the rest (beta-CROWN:
    the bound then holds on the points of the box meeting the phases, for any beta >= 0).
    Adam steps on a multiplier are `lr_mult` times the size of the row's coefficient on the
    neuron. `warm`: a parent box's result to start from (for the same boxes, in order).

    Float heuristic, like `optimize_betas`: the caller recomputes the bound soundly."""
    B = box.lo.shape[0]
    k = spec.W.shape[0]
    G = len(groups)
    L = len(layers)
    mask = np.zeros((G, k), dtype=bool)
    for g, idx in enumerate(groups):
        mask[g, idx] = True
    warm = warm or initial_combination(k, groups, bounds, layers, row_ub)
    theta = warm.theta.copy()
    lows = [(la.alpha if la.act == "leaky_relu" else 0.0) for la in layers]

    def lam_of(th):
        z = np.where(mask[None], th, -np.inf)
        z = np.exp(z - z.max(axis=2, keepdims=True))
        return z / z.sum(axis=2, keepdims=True)

    slopes = [a.copy() for a in warm.slopes]
    sign = [None] * L if sign is None else [
        None if sg is None or not np.any(sg) else sg for sg in sign]
    has_mult = [sg is not None for sg in sign]
    # the warm multipliers where there are any (a phase new in the child starts at 0)
    mults = [(np.zeros((B, G, layers[j].W.shape[0])) if b is None else b)
             * (sign[j] != 0)[:, None, :] if has_mult[j] else None
             for j, b in enumerate(warm.mults)]
    params = [theta] + slopes + mults
    m1 = [None if p is None else np.zeros_like(p) for p in params]
    m2 = [None if p is None else np.zeros_like(p) for p in params]
    scale: list = [None] * L
    best_ub, best = None, None
    b1, b2, eps = 0.9, 0.999, 1e-12
    for it in range(1, iters + 1):
        lam = lam_of(params[0])
        row = FLayer(W=np.einsum("bgk,km->bgm", lam, spec.W), b=lam @ spec.b, EW=None,
                     Eb=None, exact=None, act=None)
        Dg = np.einsum("bgk,kn->bgn", lam, D)
        signed = None
        if any(has_mult):
            signed = [None if a is None else a * sg[:, None, :]
                      for a, sg in zip(params[1 + L:], sign)]
        coefs: list | None = [] if any(has_mult) and it == 1 else None
        ub, grads, dW, dD = crown_value_grad(row, Dg, bounds, box, layers, params[1:1 + L],
                                             rows_grad=True, phase=signed, coef_out=coefs)
        if coefs:
            for j, c in coefs:
                if has_mult[j]:  # the step size of a multiplier: the row's coefficient
                    a = np.abs(c)
                    scale[j] = np.maximum(a, a.mean(axis=2, keepdims=True) + 1e-12)
        if best_ub is None:
            best_ub, best = ub, [None if p is None else p.copy() for p in params]
        else:
            better = ub < best_ub
            best_ub = np.where(better, ub, best_ub)
            best = [None if p is None else np.where(better[:, :, None], p, q)
                    for p, q in zip(params, best)]
        if it == iters:
            break
        glam = np.einsum("bgm,km->bgk", dW, spec.W) + spec.b[None, None, :] + np.einsum(
            "bgn,kn->bgk", dD, D)
        gtheta = lam * (glam - np.sum(lam * glam, axis=2, keepdims=True))
        gmult = [None] * L
        if any(has_mult):
            gmult = [None if g is None else g * sg[:, None, :]
                     for g, sg in zip(grads[L:], sign)]
        allg = [gtheta] + list(grads[:L]) + gmult
        for j, g in enumerate(allg):
            if g is None or params[j] is None:
                continue
            m1[j] = b1 * m1[j] + (1 - b1) * g
            m2[j] = b2 * m2[j] + (1 - b2) * g * g
            step = (m1[j] / (1 - b1 ** it)) / (np.sqrt(m2[j] / (1 - b2 ** it)) + eps)
            if j > L:  # a phase multiplier: beta >= 0
                params[j] = np.maximum(params[j] - lr_mult * scale[j - 1 - L] * step, 0.0)
                params[j] = params[j] * (sign[j - 1 - L] != 0)[:, None, :]
            elif j:
                params[j] = np.clip(params[j] - lr * step, lows[j - 1], 1.0)
            else:
                params[j] = params[j] - lr * step
    return Combination(lam_of(best[0]), best[1:1 + L], best[1 + L:], best[0])


__all__ = ["Combination", "crown_value_grad", "initial_betas", "optimize_betas",
           "optimize_combination"]


def tighten_layers(net, box: Box, bounds: Bounds, iters: int = 8, first: int = 1,
                   last: int | None = None) -> Bounds:
    """Intermediate bounds with optimised slopes: for each hidden layer from `first`, the
    still-unstable neurons' pre-activations get an α-CROWN bound over the earlier layers
    (whose bounds were tightened first), intersected with `bounds`. Returns new Bounds."""
    from .crown import _act_mag, backward_bound

    ls = [a.copy() for a in bounds.l]
    us = [a.copy() for a in bounds.u]
    mags = list(bounds.amag)
    hidden = net.hidden
    last = len(hidden) if last is None else last
    n = box.lo.shape[1]
    for j in range(first, last):
        la = hidden[j]
        if la.act not in ("relu", "leaky_relu"):
            continue
        l, u = ls[j], us[j]
        unst = (l < 0) & (u > 0)
        cnt = unst.sum(axis=1)
        sel = np.nonzero(cnt)[0]
        if not len(sel):
            continue
        unst = unst[sel]
        R = int(cnt[sel].max())
        idx = np.argsort(~unst, axis=1, kind="stable")[:, :R]
        valid = np.arange(R)[None, :] < cnt[sel][:, None]
        W = la.W[idx] * valid[:, :, None]
        b = la.b[idx] * valid
        EW = la.EW[idx] * valid[:, :, None]
        Eb = la.Eb[idx] * valid
        rows = FLayer(W=np.concatenate([W, -W], axis=1), b=np.concatenate([b, -b], axis=1),
                      EW=np.concatenate([EW, EW], axis=1),
                      Eb=np.concatenate([Eb, Eb], axis=1), exact=la.exact, act=None)
        sub = Box(box.lo[sel], box.hi[sel])
        prev = Bounds([a[sel] for a in ls[:j]], [a[sel] for a in us[:j]],
                      [a[sel] for a in mags[:j + 1]])
        zeroD = np.zeros((2 * R, n))
        betas = optimize_betas(rows, zeroD, prev, sub, hidden[:j], iters=iters)
        ub, _ = backward_bound(rows, zeroD, zeroD, prev, sub, hidden[:j], betas=betas)
        bi = np.broadcast_to(sel[:, None], idx.shape)[valid]
        ni = idx[valid]
        u[bi, ni] = np.minimum(u[bi, ni], ub[:, :R][valid])
        l[bi, ni] = np.maximum(l[bi, ni], -ub[:, R:][valid])
        mags[j + 1] = np.minimum(mags[j + 1], _act_mag(la, l, u))
    return Bounds(ls, us, mags)
