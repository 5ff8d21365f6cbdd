"""Backward linear bounds (CROWN style) on the graphs of `nonlinear_ops`: products, ReLU,
squares and the interval-bounded operators (sin, cos, floor, ...).

For a row c over some value of the graph, `lower` substitutes, block by block from the last
to the first, each activation by one of its linear bounds (the lower line where the row's
coefficient is positive, the upper one where it is negative) and each affine map by its
weights, until c.v is a linear form in the inputs, whose least value on the box is the bound.
Relaxations: ReLU by its triangle (lower slope 0 or 1), x*y by a McCormick plane of each side
(the one higher, resp. lower, at the centre of the factors' box), x^2 by tangent and chord,
every other operator by its interval. Intermediate bounds are computed the same way, block
after block (each block's pre-activation rows that need one), and intersected with the
forward ones.

Soundness in floats: the lines are valid in real arithmetic with their float coefficients
(intercepts rounded outward). Every float product and sum that forms a coefficient or a
constant is off by at most its a-priori bound gamma(n) |a| |b|; that error times the largest
magnitude of the value it multiplies (known from the intervals) is collected in a slack `err`
that the bound subtracts, as is the rounding of the weights themselves to floats.
"""

from __future__ import annotations

import numpy as np

from .crown import TINY, gamma

U = 2.0 ** -53


def _down(x):
    return np.nextafter(x, -np.inf)


def _up(x):
    return np.nextafter(x, np.inf)


def _fin(a, fill):
    return np.where(np.isnan(a), fill, a)


def _rmul(A, W):
    """A (B, r, out) times W (out, in), W dense or scipy sparse -> (B, r, in)."""
    B, r, o = A.shape
    out = A.reshape(B * r, o) @ W
    return np.asarray(out).reshape(B, r, W.shape[1])


def _times(A, c):
    """A * c with c broadcast over rows, a zero coefficient times an infinite constant
    counting as zero (the term is absent)."""
    with np.errstate(invalid="ignore", over="ignore"):
        p = A * c[:, None, :]
    return p if np.isfinite(c).all() else np.where(A == 0, 0.0, p)


def mul_lines(xl, xh, yl, yh):
    """McCormick planes of x*y on the box: lower (cx, cy, c) with x y >= cx x + cy y + c and
    upper with x y <= ..., each of the two candidates per side chosen at the box centre; the
    intercepts rounded outward so the planes hold exactly with these float coefficients.
    Entries with an infinite end get the zero plane and an infinite intercept."""
    with np.errstate(invalid="ignore", over="ignore"):
        xm, ym = 0.5 * xl + 0.5 * xh, 0.5 * yl + 0.5 * yh
        # lower: (x - xl)(y - yl) >= 0 and (x - xh)(y - yh) >= 0
        l1 = (yl, xl, _down(-(xl * yl)))
        l2 = (yh, xh, _down(-(xh * yh)))
        # upper: (x - xh)(y - yl) <= 0 and (x - xl)(y - yh) <= 0
        u1 = (yl, xh, _up(-(xh * yl)))
        u2 = (yh, xl, _up(-(xl * yh)))
        pick_l = (l1[0] * xm + l1[1] * ym + l1[2]) >= (l2[0] * xm + l2[1] * ym + l2[2])
        pick_u = (u1[0] * xm + u1[1] * ym + u1[2]) <= (u2[0] * xm + u2[1] * ym + u2[2])
    ok = np.isfinite(xl) & np.isfinite(xh) & np.isfinite(yl) & np.isfinite(yh)
    lower = [np.where(pick_l, a, b) for a, b in zip(l1, l2)]
    upper = [np.where(pick_u, a, b) for a, b in zip(u1, u2)]
    for side, inf in ((lower, -np.inf), (upper, np.inf)):
        good = ok & np.isfinite(side[2])
        side[0] = np.where(good, side[0], 0.0)
        side[1] = np.where(good, side[1], 0.0)
        side[2] = np.where(good, side[2], inf)
    return tuple(lower), tuple(upper)


class BackGraph:
    """Backward bounds over a `FloatGraph`; `bounds` returns the intervals of every value."""

    def __init__(self, graph, line_rules):
        self.g = graph
        self.last_inputs = self.last_rows = None
        self.lines_of = line_rules  # act, zl, zh -> (la, lc, ua, uc) per entry, or None
        self.mats = []
        for terms, _, _, _ in graph.blocks:
            from .nonlinear_ops import _matrix

            self.mats.append([(s, _matrix(Wt.T), np.ascontiguousarray(Aw.T))
                              for s, Wt, Aw in terms])

    # ---- one backward pass
    def lower(self, st, top: int, lam: dict, const, err, XL, XH):
        """Lower bounds (B, r) of const + sum_s lam[s] . v_s, where lam holds values up to
        top + 1 (the output of block `top`); `lam` is consumed."""
        for j in range(top, -1, -1):
            A = lam.pop(j + 1, None)
            if A is None:
                continue
            Az, const, err = self._act(st, j, A, const, err)
            const, err = self._affine(st, j, Az, lam, const, err)
        return self._inputs(lam.pop(0, None), const, err, XL, XH)

    def _act(self, st, j, A, const, err):
        act = self.g.blocks[j][2]
        if act is None:
            return A, const, err
        zl, zh = st.pre[j]
        zmag = np.maximum(np.abs(zl), np.abs(zh))
        if act.kind == "mul":
            n = zl.shape[1] // 2
            vl, vh = st.ivs[j + 1]
            vmag = np.maximum(np.abs(vl[:, :n]), np.abs(vh[:, :n]))
            lam = A[..., :n] + A[..., n:]
            with np.errstate(invalid="ignore", over="ignore"):
                err = err + 2 * U * _fin(np.einsum("bri,bi->br", np.abs(lam), vmag), np.inf)
            (lx, ly, lc), (ux, uy, uc) = st.lines[j]
            P, N = np.maximum(lam, 0.0), np.minimum(lam, 0.0)
            Az = np.concatenate([P * lx[:, None] + N * ux[:, None],
                                 P * ly[:, None] + N * uy[:, None]], axis=2)
            k = _times(P, lc) + _times(N, uc)
        else:
            la, lc, ua, uc = st.lines[j]
            # entries with one line both ways and no intercept (stable ReLUs) multiply only
            cols = np.nonzero(((la != ua) | (lc != 0) | (uc != 0)).any(axis=0))[0]
            with np.errstate(invalid="ignore", over="ignore"):
                Az = A * la[:, None]
                if len(cols) == la.shape[1]:
                    P, N = np.maximum(A, 0.0), np.minimum(A, 0.0)
                    Az = P * la[:, None] + N * ua[:, None]
                    k = _times(P, lc) + _times(N, uc)
                elif len(cols):
                    Ac = A[:, :, cols]
                    P, N = np.maximum(Ac, 0.0), np.minimum(Ac, 0.0)
                    Az[:, :, cols] = P * la[:, None, cols] + N * ua[:, None, cols]
                    k = _times(P, lc[:, cols]) + _times(N, uc[:, cols])
                else:
                    k = np.zeros(A.shape[:2] + (1,))
        bad = ~np.isfinite(Az).all(axis=2)
        Az = np.where(np.isfinite(Az), Az, 0.0)
        err = np.where(bad, np.inf, err)
        with np.errstate(invalid="ignore", over="ignore"):
            add = k.sum(axis=2)
            const = const + add
            size = k.shape[2]
            err = (err + 2 * U * _fin(np.einsum("bri,bi->br", np.abs(Az), zmag), np.inf)
                   + 2 * gamma(size + 2) * np.abs(k).sum(axis=2) + 2 * U * np.abs(const))
        return Az, const, _fin(err, np.inf)

    def _affine(self, st, j, Az, lam, const, err):
        _, b, _, _ = self.g.blocks[j]
        out = Az.shape[2]
        g = 2 * gamma(out + 2)
        with np.errstate(invalid="ignore", over="ignore"):
            const = const + Az @ b
            aA = np.abs(Az)
            err = err + g * (aA @ np.abs(b)) + 2 * U * np.abs(const)
            for s, W, Aw in self.mats[j]:
                vl, vh = st.ivs[s]
                vmag = np.maximum(np.abs(vl), np.abs(vh))
                t = _fin(vmag @ Aw.T, np.inf)  # (B, out): sum_in |W| |v|
                err = err + g * _fin(np.einsum("bro,bo->br", aA, t), np.inf)
                C = _rmul(Az, W)
                bad = ~np.isfinite(C).all(axis=2)
                C = np.where(np.isfinite(C), C, 0.0)
                err = np.where(bad, np.inf, err)
                if s in lam:
                    lam[s] = lam[s] + C
                    err = err + 2 * U * _fin(np.einsum("bri,bi->br", np.abs(lam[s]), vmag),
                                             np.inf)
                else:
                    lam[s] = C
        return const, _fin(err, np.inf)

    def _inputs(self, A, const, err, XL, XH):
        with np.errstate(invalid="ignore", over="ignore"):
            if A is not None:
                P, N = np.maximum(A, 0.0), np.minimum(A, 0.0)
                v = np.einsum("bri,bi->br", P, XL) + np.einsum("bri,bi->br", N, XH)
                xmag = np.maximum(np.abs(XL), np.abs(XH))
                err = (err + 2 * gamma(A.shape[2] + 2)
                       * (np.einsum("bri,bi->br", np.abs(A), xmag) + np.abs(const)))
                const = const + v
            out = _down(const - err - TINY)
        self.last_inputs = A
        return np.where(np.isnan(out), -np.inf, out)

    # ---- every value's interval, block after block
    def bounds(self, XL, XH, pre=None):
        """State with the intervals `ivs` of every value, pre-activation intervals `pre` and
        the relaxations `lines`, over the boxes [XL, XH]. `pre`: known sound pre-activation
        intervals per block (from the forward bounds) to intersect with."""
        from .nonlinear_ops import _act_bounds, _affine_interval

        st = _State()
        st.ivs = [(XL, XH)]
        B = XL.shape[0]
        for j, (terms, b, act, g) in enumerate(self.g.blocks):
            zl, zh = _affine_interval(terms, b, g, st.ivs, B)
            if pre is not None:
                zl, zh = np.maximum(zl, pre[j][0]), np.minimum(zh, pre[j][1])
            if act is not None:
                need = np.ones(zl.shape[1], dtype=bool)
                if act.kind == "relu":
                    need = ((zl < 0) & (zh > 0)).any(axis=0)
                idx = np.nonzero(need)[0]
                if len(idx):
                    r = len(idx)
                    C = np.zeros((B, 2 * r, zl.shape[1]))
                    C[:, np.arange(r), idx] = 1.0
                    C[:, r + np.arange(r), idx] = -1.0
                    zero = np.zeros((B, 2 * r))
                    Az, const, err = C, zero, zero.copy()
                    lam: dict = {}
                    const, err = self._affine(st, j, Az, lam, const, err)
                    low = self.lower(st, j - 1, lam, const, err, XL, XH)
                    zl[:, idx] = np.maximum(zl[:, idx], low[:, :r])
                    zh[:, idx] = np.minimum(zh[:, idx], -low[:, r:])
            st.pre.append((zl, zh))
            if act is not None:
                st.lines.append(self._lines(act, zl, zh))
            else:
                st.lines.append(None)
            st.ivs.append(_act_bounds(act, zl, zh))
        return st

    def _lines(self, act, zl, zh):
        if act.kind == "mul":
            n = zl.shape[1] // 2
            return mul_lines(zl[:, :n], zh[:, :n], zl[:, n:], zh[:, n:])
        got = self.lines_of(act, zl, zh)
        if got is not None:
            return got
        from .nonlinear_ops import _act_bounds

        lo, hi = _act_bounds(act, zl, zh)
        zero = np.zeros_like(lo)
        return zero, lo, zero, hi

    def rows_lower(self, st, My, Mx, c0, XL, XH):
        """Lower bounds (B, rows) of Mx.x + My.y + c0 over the boxes, y the graph's output."""
        B = XL.shape[0]
        T = len(self.g.blocks)
        lam = {T: np.broadcast_to(My, (B,) + My.shape).copy(),
               0: np.broadcast_to(Mx, (B,) + Mx.shape).copy()}
        const = np.broadcast_to(c0, (B, len(c0))).copy()
        return self.lower(st, T - 1, lam, const, np.zeros_like(const), XL, XH)


class _State:
    def __init__(self):
        self.ivs, self.pre, self.lines = [], [], []


__all__ = ["BackGraph", "mul_lines"]
