"""Re-validate a ReLU branch-and-bound certificate (`verify-check`), independently of the engine.

A certificate of the ReLU engine (written by `verify-vnn --certificate FILE`, or by `verify -o`
for a spec claim that went to that engine) holds, per group of disjuncts of the property, the
root box and the split tree of input boxes that the engine closed, and per leaf how it was
closed: by a bound (with the nonnegative weights of the constraint rows whose combination was
certified negative there) or by z3. Nothing of the engine is used here; the network and the
property come from their loaders (`onnx_import`, `vnnlib`, or the spec's own network), and:

- a leaf closed by a bound is re-bounded by this module's own linear relaxation (interval
  bounds, then backward linear bounds for every activation layer, then for the weighted row),
  in float64 with every rounding error bounded a priori (Higham's gamma_n for sums, one unit
  in the last place for each product) and added to the bound, so each computed bound is an
  upper bound of the exact rational quantity; the weights are only a hint (any nonnegative
  weights are sound). A leaf the checker cannot close is bisected, up to
  `check.MAX_BOXES_PER_LEAF` boxes;
- a leaf closed by z3 is encoded again here (z3's Python API, exact rationals, the network's
  ReLUs as `If` terms except where this module's own bounds fix their phase) and must be
  answered `unsat`.

The root boxes must contain the property's boxes, the splits must lie inside their boxes and the
leaves must form a tree, so that the leaves cover each root exactly.

Trees of format 2 (`tree` 2) also split a ReLU neuron's phase: its two children are the same
box with the neuron's pre-activation p <= 0 and p >= 0, which cover it whatever p is. Each leaf
is then bounded on its box intersected with the phases on its path: this module's bounds of
every block hold on those points, a fixed neuron's interval is cut to its side before the next
blocks are bounded, and a leaf where that leaves an interval empty has no point at all (a
leaf the certificate calls "empty" must be shown so). Nonnegative multipliers of the phase
constraints (`beta`, beta-CROWN's) may come with a leaf's weights; any such are sound.
"""

from __future__ import annotations

import hashlib
import os
import time
from fractions import Fraction

import numpy as np

U = 2.0 ** -53
TINY = 1e-300  # absolute allowance per term for underflow
CHUNK = 256  # leaves bounded per numpy batch
MODES = ("adaptive", "chord")  # lower lines tried for every bound
SMOOTH = ("sigmoid", "tanh")
SMOOTH_ERROR = 1e-13  # allowance for libm's tanh (correctly rounded to within a few ulp)
Z3_LEAF_SECONDS = 30.0
Z3_BISECT = 32  # boxes a z3 leaf may be bisected into before z3 gets what is left open


class Invalid(Exception):
    """Raised (as check.Invalid) when the certificate does not establish the property."""


def _gam(n: int) -> float:
    """A generous gamma_n: relative error of a float sum of n+2 products (any order, FMA)."""
    k = n + 2
    return 1.01 * k * U / (1.0 - k * U)


def _up(x):
    """Above x by more than one rounding of x (x + 4u|x| + TINY, itself rounded, stays above
    every real within u|x| of x): applied after each float operation on a bound."""
    return x + (np.abs(x) * (4 * U) + TINY)


def _bdot(A: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Per box p and row r: A[p, r] . v[p] (float, unrounded-up)."""
    return (A @ v[:, :, None])[:, :, 0]


def _dot_up(A: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Upper bound of the exact A @ v for float A (P, R, n) and v (P, n)."""
    n = A.shape[-1]
    s = _bdot(A, v)
    m = _bdot(np.abs(A), np.abs(v))
    return _up(_up(s) + _up(_gam(n + 1) * m + (n + 1) * TINY))


def _err_up(x: np.ndarray, n: int) -> np.ndarray:
    """x, a float sum of n nonnegative products, raised to bound the exact sum."""
    return _up(x * (1.0 + 2.0 * _gam(n)) + (n + 1) * TINY)


def _split_float(q: np.ndarray):
    """Floats nearest to exact rationals (object array) and an upper bound of the difference."""
    flat = [Fraction(v) for v in np.asarray(q, dtype=object).ravel()]
    f = np.array([float(v) for v in flat], dtype=np.float64)
    e = np.array([abs(Fraction(a) - b) for a, b in zip(f, flat)], dtype=object)
    ef = np.array([float(v) for v in e], dtype=np.float64)
    ef = np.where(ef > 0, _up(_up(ef)), 0.0)
    shape = np.shape(q)
    return f.reshape(shape), ef.reshape(shape)


def _slope_bracket(alpha: Fraction) -> tuple[float, float]:
    a = float(alpha)
    lo = a if Fraction(a) <= alpha else float(np.nextafter(a, -np.inf))
    hi = a if Fraction(a) >= alpha else float(np.nextafter(a, np.inf))
    return lo, hi


class Net:
    """The network's blocks as floats with bounds of their rounding (see `onnx_import.Block`)."""

    def __init__(self, net) -> None:
        self.net = net
        self.n_in = net.n_in
        self.sizes = net.sizes()
        self.blocks = []
        for blk in net.blocks:
            kind = None if blk.act is None else blk.act.kind
            if kind not in (None, "relu", "leaky_relu", "sigmoid", "tanh"):
                raise Invalid(f"the checker handles ReLU, leaky ReLU, sigmoid and tanh "
                              f"activations, not {kind}")
            alpha = Fraction(0) if kind == "relu" else (
                blk.act.alpha if kind == "leaky_relu" else None)
            if alpha is not None and not 0 <= alpha <= 1:
                raise Invalid("leaky ReLU slope outside [0, 1]")
            terms = [(s, *_split_float(W)) for s, W in blk.terms]
            terms = [(s, Wf, EW if EW.any() else None, np.abs(Wf)) for s, Wf, EW in terms]
            b, eb = _split_float(blk.b)
            self.blocks.append({"terms": terms, "b": b, "eb": eb, "kind": kind,
                                "slope": None if alpha is None else _slope_bracket(alpha)})

    # ---- one backward pass -------------------------------------------------------------------
    def backward(self, start: int, coef: dict, box, L, Uu, H, on_pre: bool,
                 mode: str = "adaptive", betas: dict | None = None
                 ) -> tuple[np.ndarray, np.ndarray | None]:
        """Upper bound (P, R) of sum_k coef[k] . v_k over each of P boxes, v_k the output of
        block k, or for k == `start` with `on_pre` its pre-activation; and the coefficients
        the pass ends with on the input (P, R, n_in), None where it reaches no input.

        coef: {value index: float (P, R, size)}, the coefficients taken as exact; L, Uu: per
        block the certified pre-activation bounds (P, size) of the blocks the pass relaxes;
        H: per value index a bound of |value| (P, size); box: (lo, hi) floats (P, n_in);
        mode: the lower lines of unstable neurons (see `_relax`).

        betas: {block: (P, R, size)} signed multipliers of phase constraints, +beta on a
        neuron fixed active (p >= 0), -beta on one fixed inactive (p <= 0), 0 elsewhere
        (`phase_betas`): after the block's relaxation `lam . h <= mu . p + c`, the pass goes on
        with nu = fl(mu + beta) instead of mu. Rounding is monotone, so nu >= mu where beta >= 0
        and nu <= mu where beta <= 0, and (nu - mu) . p >= 0 at every point meeting the phases:
        the bound holds there (the Lagrangian bound of beta-CROWN) without any error term."""
        lo, hi = box
        P = lo.shape[0]
        R = next(iter(coef.values())).shape[1]
        const = np.zeros((P, R))
        coef = dict(coef)
        for k in range(start, 0, -1):
            lam = coef.pop(k, None)
            if lam is None:
                continue
            blk = self.blocks[k - 1]
            if blk["kind"] in SMOOTH and not (on_pre and k == start):
                lam, c = _relax_smooth(lam, L[k], Uu[k], blk["kind"])
                const = _up(const + c)
            elif blk["kind"] is not None and not (on_pre and k == start):
                lam, c = _relax(lam, L[k], Uu[k], blk["slope"], mode)
                const = _up(const + c)
                if betas is not None and k in betas:
                    lam = lam + betas[k]
            const = _up(const + self._substitute(blk, lam, coef, H, P))
        lam = coef.pop(0, None)
        if coef:
            raise Invalid("a block reads a value that comes after it")
        if lam is None:
            return const, None
        n = lam.shape[-1]  # the largest of lam . x over the box, each product rounded
        t = np.maximum(lam * lo[:, None, :], lam * hi[:, None, :])
        s = t.sum(axis=-1)
        return _up(const + _up(s + _err_up(_gam(n + 1) * np.abs(t).sum(axis=-1), n))), lam

    @staticmethod
    def _substitute(blk, lam, coef, H, P) -> np.ndarray:
        """lam . (sum_t W_t v_t + b) <= sum_t nu_t . v_t + (returned bound): the float
        coefficients nu_t are added to coef[t], every rounding bounded through |v_t| <= H[t]."""
        mag = np.abs(lam)
        m = lam.shape[-1]
        const = _dot_up(lam, np.broadcast_to(blk["b"], (P, m)))
        const = _up(const + _err_up(np.einsum("prm,m->pr", mag, blk["eb"]), m))
        for s, Wf, EW, absW in blk["terms"]:
            nu = lam @ Wf
            err = _gam(m + 1) * (mag @ absW)
            if EW is not None:
                err = err + mag @ EW
            err = _err_up(err, m)
            if s in coef:  # the float sum of two coefficient arrays: one rounding each
                nu = coef[s] + nu
                err = _up(err + _up(U * np.abs(nu)))
            coef[s] = nu
            const = _up(const + _err_up(_bdot(err, H[s]), Wf.shape[1]))
        return const

    # ---- bounds of every block on a batch of boxes -----------------------------------------
    def bounds(self, lo: np.ndarray, hi: np.ndarray):
        """Certified pre-activation bounds L[k], U[k] (P, size) of every block k >= 1 and the
        magnitude bounds H of every value: intervals, then backward linear bounds for the
        blocks with an activation (the tighter of the two per neuron)."""
        L, Uu, H, _ = self.bounds_phased(lo, hi, {})
        return L, Uu, H

    def bounds_phased(self, lo: np.ndarray, hi: np.ndarray, clamp: dict):
        """`bounds` on each box intersected with its phase constraints: clamp {block: (on,
        off)}, boolean (P, size) masks of the neurons fixed active (p >= 0) and inactive
        (p <= 0). Each block's bounds hold on the points of the box meeting the phases of the
        blocks before it; a fixed neuron's interval is then cut to its side, and where that
        leaves it empty (l > u) no point of the box meets the phases: `empty` (P,) is True
        there (the box is closed: there is nothing to bound)."""
        P = lo.shape[0]
        empty = np.zeros(P, dtype=bool)
        H = {0: np.maximum(np.abs(lo), np.abs(hi))}
        L: dict = {}
        Uu: dict = {}
        lows = {0: lo}
        highs = {0: hi}
        for k, blk in enumerate(self.blocks, start=1):
            size = len(blk["b"])
            l, u = self._interval(blk, lows, highs, P)
            if k > 1 and not {t[0] for t in blk["terms"]} <= {0}:
                eye = np.broadcast_to(np.eye(size), (P, size, size))
                start = {k: np.concatenate([eye, -eye], axis=1)}
                for mode in MODES:
                    up_, _ = self.backward(k, start, (lo, hi), L, Uu, H, on_pre=True,
                                           mode=mode)
                    u = np.minimum(u, up_[:, :size])
                    l = np.maximum(l, -up_[:, size:])
            if k in clamp:
                on, off = clamp[k]
                l = np.where(on, np.maximum(l, 0.0), l)
                u = np.where(off, np.minimum(u, 0.0), u)
                empty |= np.any(l > u, axis=1)
                l = np.where(empty[:, None], np.minimum(l, u), l)  # keep the arithmetic tame
            L[k], Uu[k] = l, u
            if blk["kind"] is None:
                lows[k], highs[k] = l, u
            elif blk["kind"] in SMOOTH:
                lows[k], highs[k] = _smooth_range(blk["kind"], l, u)
            else:
                a_lo, a_hi = blk["slope"]
                # h = max(p, a p): its range from the range of p (a in [a_lo, a_hi])
                lows[k] = np.where(l >= 0, l, np.nextafter(np.minimum(a_hi * l, 0.0), -np.inf))
                highs[k] = np.where(u >= 0, u, np.nextafter(a_lo * u, np.inf))
            H[k] = np.maximum(np.abs(lows[k]), np.abs(highs[k]))
        return L, Uu, H, empty

    def _interval(self, blk, lows, highs, P):
        """Interval bounds of the block's pre-activation from its sources' ranges."""
        size = len(blk["b"])
        ub = np.zeros((P, size))
        lb = np.zeros((P, size))
        for sign, out in ((1.0, ub), (-1.0, lb)):
            # sign * b is exact in floats; the exact bias is within eb of b
            acc = np.broadcast_to(_up(sign * blk["b"] + blk["eb"]), (P, size))
            for s, Wf, EW, _ in blk["terms"]:
                A = sign * Wf  # (size, n): the largest of A . v over the value's range
                n = Wf.shape[1]
                t = np.maximum(A[None] * lows[s][:, None, :], A[None] * highs[s][:, None, :])
                mag = np.maximum(np.abs(lows[s]), np.abs(highs[s]))
                err = _gam(n + 1) * np.abs(t).sum(axis=-1)
                if EW is not None:
                    err = err + mag @ EW.T
                acc = _up(acc + _up(t.sum(axis=-1) + _err_up(err, n)))
            out[:] = acc
        return -lb, ub


def _relax(lam: np.ndarray, l: np.ndarray, u: np.ndarray, slope, mode: str) -> tuple:
    """Coefficients on the pre-activation p and an upper bound of the constant, such that
    lam . h <= mu . p + const for h = max(p, a p), a in [a_lo, a_hi], l <= p <= u.

    Where lam >= 0 an unstable neuron takes the chord of max(p, a_lo p) from l to u, slope s
    rounded up: h <= s (p - l) + a_lo l. Where lam < 0 it needs a lower line h >= beta p, valid
    for any beta in [a_hi, 1]: `adaptive` takes 1 where u >= -l, else a_hi (CROWN's choice);
    `chord` the chord's slope clipped into [a_hi, 1]. A stable neuron is p or a p."""
    a_lo, a_hi = slope
    active = l >= 0
    inactive = u <= 0
    unstable = ~active & ~inactive
    with np.errstate(divide="ignore", invalid="ignore"):
        num = _up(u + _up(a_lo * -l))
        den = (u - l) * (1 - 4 * U)  # below the exact u - l
        s = np.where(unstable, _up(num / den), 1.0)
        if mode == "chord":
            beta = np.clip(np.where(unstable, u / np.where(unstable, u - l, 1.0), 1.0), a_hi,
                           1.0)
        else:
            beta = np.where(u >= -l, 1.0, a_hi)
    fpos = np.where(active, 1.0, np.where(inactive, a_lo, s))[:, None, :]
    fneg = np.where(active, 1.0, np.where(inactive, a_hi, beta))[:, None, :]
    pos = lam >= 0
    mu = np.where(pos, lam * fpos, lam * fneg)
    pmax = np.maximum(np.abs(l), np.abs(u))
    # lam (a_lo l - s l) = lam (-l) (s - a_lo) >= 0 on unstable neurons with lam >= 0
    c = np.where(unstable, _up(_up(-l * (s - a_lo)) * (1 + 4 * U)), 0.0)
    m = lam.shape[-1]
    chord = _bdot(np.where(pos, lam, 0.0), c)
    err = U * _bdot(np.abs(mu), pmax)  # each product mu rounded once
    return mu, _err_up(chord + err, m)


def _smooth(kind: str, z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return np.tanh(z) if kind == "tanh" else 0.5 * (1.0 + np.tanh(0.5 * z))


def _smooth_range(kind: str, l: np.ndarray, u: np.ndarray):
    """[f(l), f(u)] widened by the libm allowance (f is increasing), within f's range."""
    lo_lim = -1.0 if kind == "tanh" else 0.0
    return (np.maximum(_smooth(kind, l) - SMOOTH_ERROR, lo_lim),
            np.minimum(_smooth(kind, u) + SMOOTH_ERROR, 1.0))


def _relax_smooth(lam: np.ndarray, l: np.ndarray, u: np.ndarray, kind: str) -> tuple:
    """lam . f(p) <= mu . p + const for f = sigmoid or tanh, l <= p <= u: with a slope a
    at most min f' on [l, u] (f' is unimodal, so its minimum is at an end), f(p) - a p is
    nondecreasing there, so a p + f(l) - a l <= f(p) <= a p + f(u) - a u."""
    fl_, fu = _smooth_range(kind, l, u)
    if kind == "tanh":
        d = np.minimum(1.0 - fu * fu, 1.0 - fl_ * fl_)
        d = np.minimum(d, np.minimum(1.0 - _smooth(kind, l) ** 2, 1.0 - _smooth(kind, u) ** 2))
    else:
        d = np.minimum(fu * (1.0 - fu), fl_ * (1.0 - fl_))
        sl, su = _smooth(kind, l), _smooth(kind, u)
        d = np.minimum(d, np.minimum(sl * (1.0 - sl), su * (1.0 - su)))
    a = np.maximum(d * (1.0 - 1e-6) - 1e-12, 0.0)  # well below the computed minimum slope
    a = np.where(np.isfinite(l) & np.isfinite(u), a, 0.0)
    pos = lam >= 0
    mu = lam * a[:, None, :]
    with np.errstate(invalid="ignore"):
        # the intercepts f(u) - a u (upper line) and f(l) - a l (lower line), rounded outward
        cu = _up(fu + _up(-a * u))
        cl = -_up(-fl_ + _up(a * l))
    cu = np.where(a == 0, fu, cu)
    cl = np.where(a == 0, fl_, cl)
    c = np.where(pos, lam * cu[:, None, :], lam * cl[:, None, :])  # both upper bounds
    m = lam.shape[-1]
    pmax = np.maximum(np.abs(l), np.abs(u))
    pmax = np.where(a > 0, pmax, 0.0)
    err = U * _bdot(np.abs(mu), pmax)  # each product mu rounded once
    s = c.sum(axis=-1)
    return mu, _up(s + _err_up(_gam(m + 1) * np.abs(c).sum(axis=-1) + err, m))


# ---- the property's rows ---------------------------------------------------------------------

def rows_block(constraints, n_in: int, n_out: int, K: int) -> dict:
    """The rows r_k = -(lhs_k) of a disjunct's constraints as an affine block over the network
    output (value K) and the input (value 0): unsafe points have every r_k >= 0 (> 0 if the
    constraint is strict)."""
    R = len(constraints)
    B = np.full((R, n_out), Fraction(0), dtype=object)
    A = np.full((R, n_in), Fraction(0), dtype=object)
    c = np.full((R,), Fraction(0), dtype=object)
    for k, con in enumerate(constraints):
        for j, a in con.y:
            B[k, j] -= a
        for i, a in con.x:
            A[k, i] -= a
        c[k] = -con.const
    terms = [(s, Wf, EW if EW.any() else None, np.abs(Wf)) for s, (Wf, EW) in
             ((K, _split_float(B)), (0, _split_float(A)))]
    b, eb = _split_float(c)
    return {"terms": terms, "b": b, "eb": eb, "kind": None, "slope": None,
            "strict": np.array([con.strict for con in constraints], dtype=bool)}


def row_bound(net: Net, rows: dict, w: np.ndarray, box, L, Uu, H,
              mode: str = "adaptive", with_input: bool = False, betas: dict | None = None):
    """Upper bound (P,) of sum_k w_k r_k over each box (w: nonnegative floats (P, R)); with
    `with_input` also the bound's coefficients on the input (P, n_in) or None. `betas`:
    signed multipliers of the boxes' phase constraints (see `Net.backward`)."""
    P = w.shape[0]
    coef: dict = {}
    const = Net._substitute(rows, w[:, None, :], coef, H, P)
    K = len(net.blocks)
    rest, lam = net.backward(K, coef, box, L, Uu, H, on_pre=False, mode=mode,
                             betas=betas) if coef else (np.zeros_like(const), None)
    ub = _up(const + rest)[:, 0]
    return (ub, None if lam is None else lam[:, 0, :]) if with_input else ub


# ---- z3 on one leaf ----------------------------------------------------------------------------

def z3_leaf(net: Net, disjuncts, lo, hi, L, Uu, seconds: float, phases=()) -> str:
    """z3's answer on one box: some disjunct's constraints all hold at a point of the box
    meeting the phase constraints `phases` ((block, neuron, side) with side "on": p >= 0,
    "off": p <= 0). Exact rationals; a ReLU is linear where this module's bounds fix its
    phase (bounds that hold wherever the phases do)."""
    import z3

    def q(v) -> z3.ArithRef:
        v = Fraction(v)
        return z3.RealVal(f"{v.numerator}/{v.denominator}")

    s = z3.Solver()
    s.set("timeout", int(seconds * 1000))
    xs = [z3.Real(f"x{i}") for i in range(net.n_in)]
    for i, x in enumerate(xs):
        s.add(q(float(lo[i])) <= x, x <= q(float(hi[i])))
    values = [xs]
    fixed = {(k, n): side for k, n, side in phases}
    for k, blk in enumerate(net.net.blocks, start=1):
        if blk.act is not None and blk.act.kind not in ("relu", "leaky_relu"):
            raise Invalid(f"a z3 leaf on a network with {blk.act.kind} activations")
        out = []
        for j in range(blk.size):
            p = q(blk.b[j])
            for src, W in blk.terms:
                p = p + z3.Sum([q(W[j, i]) * v for i, v in enumerate(values[src])
                                if W[j, i] != 0] or [q(0)])
            if blk.act is None:
                out.append(p)
                continue
            a = q(blk.act.alpha if blk.act.kind == "leaky_relu" else 0)
            side = fixed.get((k, j))
            if side is not None:
                s.add(p >= 0 if side == "on" else p <= 0)
            if L[k][j] >= 0:
                out.append(p)
            elif Uu[k][j] <= 0:
                out.append(a * p)
            else:
                out.append(z3.If(p > 0, p, a * p))
        values.append(out)
    ys = values[-1]
    cases = []
    for d in disjuncts:
        atoms = []
        for con in d:
            lhs = q(con.const) + z3.Sum([q(a) * xs[i] for i, a in con.x] +
                                        [q(a) * ys[j] for j, a in con.y] + [q(0)])
            atoms.append(lhs < 0 if con.strict else lhs <= 0)
        cases.append(z3.And(atoms))
    s.add(z3.Or(cases))
    ans = s.check()
    if ans == z3.unknown and "interrupted from keyboard" in s.reason_unknown():
        raise KeyboardInterrupt  # z3 takes Ctrl-C for itself: pass it on
    return str(ans)


# ---- the certificate ---------------------------------------------------------------------------

def sha256_file(path: str, limit: int) -> str:
    from .fileio import read_regular_file

    return hashlib.sha256(read_regular_file(path, limit, "file")).hexdigest()


def _floats(pairs, what: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2
                                              for p in pairs):
        raise Invalid(f"{what} is not a list of [lo, hi] pairs")
    try:
        lo = np.array([float.fromhex(p[0]) for p in pairs])
        hi = np.array([float.fromhex(p[1]) for p in pairs])
    except (TypeError, ValueError):
        raise Invalid(f"{what} is not a list of hexadecimal floats") from None
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(lo <= hi)):
        raise Invalid(f"{what} is not a box")
    return lo, hi


class _Report:
    leaves = 0
    boxes = 0


TREE_VERSIONS = (1, 2)  # 1: input splits only; 2: also phase splits of ReLU neurons


def tree_version(doc: dict) -> int:
    """The split-tree format of a ReLU certificate (`tree`; absent in the first format)."""
    v = doc.get("tree", 1)
    if not isinstance(v, int) or isinstance(v, bool) or v not in TREE_VERSIONS:
        raise Invalid(f"the certificate's split trees have format {v!r}; this checker reads "
                      f"formats {', '.join(map(str, TREE_VERSIONS))}")
    return v


def check_groups(net, prop_disjuncts, groups, deadline: float, report,
                 max_boxes: int, version: int = 1) -> None:
    """Every disjunct is in a group whose tree closes: raise Invalid where one does not.

    prop_disjuncts: per disjunct (constraints that are rows, exact lo, exact hi); version:
    the trees' format (`tree_version`): phase splits only from 2 on."""
    fnet = Net(net)
    covered: set[int] = set()
    if not isinstance(groups, list) or not groups:
        raise Invalid("the certificate has no groups of disjuncts")
    for gi, grp in enumerate(groups):
        if not isinstance(grp, dict):
            raise Invalid(f"group {gi} is malformed")
        members = grp.get("disjuncts")
        if (not isinstance(members, list) or not members or any(
                not isinstance(k, int) or not 0 <= k < len(prop_disjuncts) for k in members)
                or len(set(members)) != len(members)):
            raise Invalid(f"group {gi}: `disjuncts` are not disjuncts of the property")
        covered.update(members)
        lo, hi = _floats(grp.get("root"), f"group {gi}: root")
        if len(lo) != fnet.n_in:
            raise Invalid(f"group {gi}: the root box has {len(lo)} inputs, the network "
                          f"{fnet.n_in}")
        for k in members:
            rows, dlo, dhi = prop_disjuncts[k]
            if not rows:
                raise Invalid(f"disjunct {k} has no output constraint: its box is the "
                              "unsafe region and cannot be closed")
            if any(Fraction(a) > b for a, b in zip(lo, dlo)) or any(
                    Fraction(a) < b for a, b in zip(hi, dhi)):
                raise Invalid(f"group {gi}: the root box does not contain disjunct {k}'s box")
        leaves = _leaves(grp, gi, lo, hi, fnet if version >= 2 else None)
        _close(fnet, [prop_disjuncts[k][0] for k in members], leaves, gi, deadline, report,
               max_boxes)
    missing = set(range(len(prop_disjuncts))) - covered
    if missing:
        raise Invalid(f"disjunct {min(missing)} of the property is in no group")


def _phase_split(rec, node: str, gi: int, net) -> tuple[int, int]:
    """The (block, neuron) of a phase split ["relu", block, neuron, off child, on child]."""
    if net is None:
        raise Invalid(f"group {gi}: node {node} splits a ReLU phase, which certificates of "
                      "tree format 1 cannot")
    ok = len(rec) == 5 and all(isinstance(v, int) and not isinstance(v, bool)
                               for v in rec[1:3])
    if ok:
        k, n = rec[1], rec[2]
        ok = 1 <= k < len(net.blocks) and net.blocks[k - 1]["kind"] in (
            "relu", "leaky_relu") and 0 <= n < len(net.blocks[k - 1]["b"])
    if not ok:
        raise Invalid(f"group {gi}: phase split of node {node} does not name a ReLU neuron "
                      "of the network")
    return rec[1], rec[2]


def _leaves(grp: dict, gi: int, lo, hi, net=None) -> list:
    """The leaves (box, phase constraints, how) of a group's tree, checking that it is one.
    A phase split (tree format 2, `net` given) keeps the box and adds p <= 0 to its first
    child and p >= 0 to its second for the pre-activation p of one ReLU neuron: the two
    cover the parent whatever p is."""
    splits, closed = grp.get("splits"), grp.get("closed")
    if not isinstance(splits, dict) or not isinstance(closed, dict):
        raise Invalid(f"group {gi}: `splits` and `closed` must be objects")
    out = []
    seen: set[str] = set()
    stack = [("0", lo, hi, ())]
    while stack:
        node, blo, bhi, phases = stack.pop()
        if node in seen:
            raise Invalid(f"group {gi}: node {node} is reached twice: not a tree")
        seen.add(node)
        if node in splits and isinstance(splits[node], list) and splits[node][:1] == [
                "relu"]:
            rec = splits[node]
            k, n = _phase_split(rec, node, gi, net)
            stack.append((str(rec[3]), blo, bhi, phases + ((k, n, "off"),)))
            stack.append((str(rec[4]), blo, bhi, phases + ((k, n, "on"),)))
        elif node in splits:
            rec = splits[node]
            if (not isinstance(rec, list) or len(rec) != 4 or not isinstance(rec[0], int)
                    or not 0 <= rec[0] < len(blo)):
                raise Invalid(f"group {gi}: split of node {node} is malformed")
            d = rec[0]
            try:
                mid = float.fromhex(rec[1])
            except (TypeError, ValueError):
                raise Invalid(f"group {gi}: split point of node {node} is not a float") \
                    from None
            if not blo[d] < mid < bhi[d]:
                raise Invalid(f"group {gi}: split point of node {node} is not inside its box")
            h1, l2 = bhi.copy(), blo.copy()
            h1[d] = l2[d] = mid
            stack.append((str(rec[2]), blo, h1, phases))
            stack.append((str(rec[3]), l2, bhi, phases))
        elif node in closed:
            out.append((node, blo, bhi, phases, closed[node]))
        else:
            raise Invalid(f"group {gi}: node {node} is neither split nor closed: the tree "
                          "has a hole")
    unused = (set(splits) | set(closed)) - seen
    if unused:
        raise Invalid(f"group {gi}: {len(unused)} node(s) are not in the tree")
    return out


def _weights(how, node: str, gi: int, rows_per: list[int]) -> np.ndarray | None:
    w = how.get("w")
    if w is None:
        return None
    if not isinstance(w, list) or len(w) != len(rows_per) or any(
            not isinstance(v, list) or len(v) != n for v, n in zip(w, rows_per)):
        raise Invalid(f"group {gi}: leaf {node} has malformed weights")
    try:
        out = [np.array([float(Fraction(t)) if isinstance(t, str) and len(t) < 400 else
                         float("nan") for t in v]) for v in w]
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        raise Invalid(f"group {gi}: leaf {node} has weights that are not numbers") from None
    if any(not np.all(np.isfinite(v)) or np.any(v < 0) or not np.any(v > 0) for v in out):
        raise Invalid(f"group {gi}: leaf {node} has weights that are not nonnegative")
    return out


def _betas(how, node: str, gi: int, n_members: int, phases) -> list | None:
    """A leaf's multipliers of its phase constraints, per member a nonnegative float per
    phase split on the leaf's path (root first), or None."""
    b = how.get("beta")
    if b is None:
        return None
    if not isinstance(b, list) or len(b) != n_members or any(
            not isinstance(v, list) or len(v) != len(phases) for v in b):
        raise Invalid(f"group {gi}: leaf {node} has malformed phase multipliers")
    try:
        out = [np.array([float(t) if isinstance(t, str) and len(t) < 40 else float("nan")
                         for t in v], dtype=np.float64) for v in b]
    except (TypeError, ValueError):
        raise Invalid(f"group {gi}: leaf {node} has phase multipliers that are not numbers") \
            from None
    if any(not np.all(np.isfinite(v)) or np.any(v < 0) for v in out):
        raise Invalid(f"group {gi}: leaf {node} has phase multipliers that are not "
                      "nonnegative")
    return out


def _clamps(fnet: Net, batch) -> dict:
    """{block: (on, off)} masks (P, size) of the batch's phase constraints."""
    out: dict = {}
    for p, item in enumerate(batch):
        for k, n, side in item[5]:
            if k not in out:
                size = len(fnet.blocks[k - 1]["b"])
                out[k] = (np.zeros((len(batch), size), dtype=bool),
                          np.zeros((len(batch), size), dtype=bool))
            out[k][0 if side == "on" else 1][p, n] = True
    return out


def phase_betas(fnet: Net, batch, g: int) -> dict | None:
    """Member g's signed multipliers per block (P, 1, size) from the batch's leaves (+beta for
    a neuron fixed active, -beta for one fixed inactive), or None if no leaf has any."""
    if not any(item[6] is not None and len(item[5]) for item in batch):
        return None
    out: dict = {}
    for p, item in enumerate(batch):
        if item[6] is None:
            continue
        for (k, n, side), beta in zip(item[5], item[6][g]):
            if k not in out:
                out[k] = np.zeros((len(batch), 1, len(fnet.blocks[k - 1]["b"])))
            out[k][p, 0, n] += beta if side == "on" else -beta
    return out


def _close(fnet: Net, members: list, leaves: list, gi: int, deadline: float, report,
           max_boxes: int) -> None:
    K = len(fnet.blocks)
    rows = [rows_block(c, fnet.n_in, fnet.net.n_out, K) for c in members]
    rows_per = [len(c) for c in members]
    # (lo, hi, weights per member, leaf name, closed by z3, phase constraints, multipliers,
    # claimed empty): a z3 leaf is bisected a little first (`Z3_BISECT` boxes), and what
    # bounds leave open of it goes to z3, smaller; a leaf whose phases are said to contradict
    # its box ("empty") must be shown so by this module's bounds (bisected if need be)
    pending = []
    z3_leaves = []
    for node, lo, hi, phases, how in leaves:
        report.leaves += 1
        if not isinstance(how, dict) or how.get("by") not in ("bound", "z3", "empty"):
            raise Invalid(f"group {gi}: leaf {node} does not say how it was closed")
        by_z3 = how["by"] == "z3"
        w = _weights(how, node, gi, rows_per) if how["by"] == "bound" else None
        betas = _betas(how, node, gi, len(members), phases) if w is not None else None
        pending.append((lo, hi, w, node, by_z3, phases, betas, how["by"] == "empty"))
    spent: dict[str, int] = {}
    while pending:
        if time.perf_counter() > deadline:
            raise Invalid("time limit reached before every leaf was re-validated")
        batch, pending = pending[:CHUNK], pending[CHUNK:]
        lo = np.array([b[0] for b in batch])
        hi = np.array([b[1] for b in batch])
        report.boxes += len(batch)
        L, Uu, H, empty = fnet.bounds_phased(lo, hi, _clamps(fnet, batch))
        # a leaf claimed empty must be shown empty (its side was the point of its split)
        claim = np.array([b[7] for b in batch], dtype=bool)
        safe = np.ones(len(batch), dtype=bool)
        smear = np.zeros_like(lo)
        for g, rb in enumerate(rows):
            if claim.all():
                break
            ok = empty | claim
            betas = phase_betas(fnet, batch, g)
            tries, given = _weight_choices(batch, g, rows_per[g])
            for ti, W in enumerate(tries):
                strict = (W[:, rb["strict"]] > 0).any(axis=1)
                for mode in MODES:
                    ub, grad = row_bound(fnet, rb, W, (lo, hi), L, Uu, H, mode,
                                         with_input=True,
                                         betas=betas if given and ti == 0 else None)
                    ok |= np.where(strict, ub <= 0, ub < 0)
                    if ok.all():
                        break
                if ok.all():
                    break
            safe &= ok
            if grad is not None:  # where to split: |d row / dx| x width
                score = np.abs(grad) * (hi - lo)
                smear = np.where(ok[:, None], smear, np.maximum(smear, score))
        safe = np.where(claim, empty, safe)
        for i in np.nonzero(~safe)[0]:
            blo, bhi, w, node, by_z3, phases, betas, is_empty = batch[i]
            if by_z3 and spent.get(node, 1) >= Z3_BISECT:
                z3_leaves.append((node, blo, bhi, phases))
                continue
            spent[node] = spent.get(node, 1) + 2
            if spent[node] > max_boxes:
                raise Invalid(f"group {gi}: leaf {node} is not closed by the checker's bounds "
                              f"in {max_boxes} boxes")
            d = int(np.argmax(smear[i])) if smear[i].max() > 0 else int(np.argmax(bhi - blo))
            mid = 0.5 * (blo[d] + bhi[d])
            if not blo[d] < mid < bhi[d]:
                raise Invalid(f"group {gi}: leaf {node} is not closed by the checker's bounds "
                              "and cannot be split further")
            h1, l2 = bhi.copy(), blo.copy()
            h1[d] = l2[d] = mid
            pending += [(blo, h1, w, node, by_z3, phases, betas, is_empty),
                        (l2, bhi, w, node, by_z3, phases, betas, is_empty)]
    for node, lo, hi, phases in z3_leaves:
        left = deadline - time.perf_counter()
        if left <= 0:
            raise Invalid("time limit reached before every leaf was re-validated")
        L, Uu, _, empty = fnet.bounds_phased(
            lo[None], hi[None], _clamps(fnet, [(None,) * 5 + (phases,)]))
        report.boxes += 1
        if empty[0]:
            continue
        ans = z3_leaf(fnet, members, lo, hi, {k: v[0] for k, v in L.items()},
                      {k: v[0] for k, v in Uu.items()}, min(left, Z3_LEAF_SECONDS), phases)
        if ans != "unsat":
            raise Invalid(f"group {gi}: leaf {node}: z3 answers {ans} on the checker's own "
                          "encoding of the box")


def _weight_choices(batch, g: int, n: int) -> tuple[list[np.ndarray], bool]:
    """Row weights to try for member g: the certificate's, then each row alone, then all;
    and whether the first are the certificate's."""
    out = []
    given = [b[2][g] if b[2] is not None else None for b in batch]
    if all(v is not None for v in given):
        out.append(np.array(given))
    first = bool(out)
    for k in range(n):
        e = np.zeros((len(batch), n))
        e[:, k] = 1.0
        out.append(e)
    if n > 1:
        out.append(np.full((len(batch), n), 1.0 / n))
    return out, first


# ---- the two kinds of certificate ----------------------------------------------------------------

MAX_INPUT_BYTES = 1 << 30


def _resolve(rec, given: str | None, cert_path: str, what: str) -> str:
    """The file a certificate names: `given` on the command line, else its recorded path
    (relative to the working directory), else its name next to the certificate; its sha256
    must match the recorded one."""
    if not isinstance(rec, dict) or not isinstance(rec.get("file"), str) or not isinstance(
            rec.get("sha256"), str):
        raise Invalid(f"the certificate does not name its {what} file")
    choices = [given] if given else [rec["file"], os.path.join(
        os.path.dirname(cert_path) or ".", os.path.basename(rec["file"]))]
    for path in choices:
        if os.path.isfile(path):
            if sha256_file(path, MAX_INPUT_BYTES) != rec["sha256"]:
                raise Invalid(f"{path} is not the {what} this certificate was made for "
                              "(its sha256 differs)")
            return path
    raise ValueError(f"{what} file not found: {choices[0]} (give it with --{what})")


def check_vnn(doc: dict, cert_path: str, report, deadline: float, max_boxes: int,
              onnx: str | None = None, vnnlib: str | None = None) -> str:
    """A `verify-vnn` certificate: the ONNX network and VNN-LIB property it names, read by
    their loaders, and every disjunct's tree closed; returns a description."""
    from .onnx_import import load_onnx
    from .vnnlib import read_vnnlib

    net_path = _resolve(doc.get("network"), onnx, cert_path, "onnx")
    prop_path = _resolve(doc.get("property"), vnnlib, cert_path, "vnnlib")
    net = load_onnx(net_path)
    prop = read_vnnlib(prop_path)
    if prop.n_inputs != net.n_in or prop.n_outputs != net.n_out:
        raise Invalid("the property does not fit the network")
    disjuncts = [(d.output_constraints(), d.lo, d.hi) for d in prop.disjuncts]
    check_groups(net, disjuncts, doc.get("groups"), deadline, report, max_boxes,
                 tree_version(doc))
    return (f"valid: {os.path.basename(prop_path)} holds on {os.path.basename(net_path)} "
            f"(unsat), {report.leaves} leaves re-validated ({report.boxes} boxes bounded)")


def _exact(text, what: str) -> Fraction:
    if not isinstance(text, str) or len(text) > 10_000:
        raise Invalid(f"{what} is not an exact number")
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise Invalid(f"{what} is not an exact number") from None


def _disjuncts_of(doc: dict, n_in: int, n_out: int) -> list:
    """The certificate's disjuncts (the claim's violations as polyhedra): (rows, lo, hi)."""
    from .vnnlib import Constraint

    out = []
    ds = doc.get("disjuncts")
    if not isinstance(ds, list) or not ds:
        raise Invalid("the certificate lists no disjuncts")
    for k, d in enumerate(ds):
        if not isinstance(d, dict) or not isinstance(d.get("rows"), list):
            raise Invalid(f"disjunct {k} is malformed")
        rows = []
        for r in d["rows"]:
            if not isinstance(r, dict) or not isinstance(r.get("strict"), bool):
                raise Invalid(f"a row of disjunct {k} is malformed")
            terms = {}
            for var, size in (("x", n_in), ("y", n_out)):
                pairs = r.get(var)
                if not isinstance(pairs, list) or any(
                        not isinstance(p, list) or len(p) != 2 or not isinstance(p[0], int)
                        or not 0 <= p[0] < size for p in pairs):
                    raise Invalid(f"a row of disjunct {k} is malformed")
                terms[var] = tuple((p[0], _exact(p[1], "a coefficient")) for p in pairs)
            rows.append(Constraint(x=terms["x"], y=terms["y"],
                                   const=_exact(r.get("const"), "a constant"),
                                   strict=r["strict"]))
        lo, hi = d.get("lo"), d.get("hi")
        if not isinstance(lo, list) or not isinstance(hi, list) or len(lo) != n_in or len(
                hi) != n_in:
            raise Invalid(f"disjunct {k} has no box over the {n_in} inputs")
        out.append((rows, [_exact(v, "a bound") for v in lo], [_exact(v, "a bound")
                                                                for v in hi]))
    return out


def _z3_of(program, outputs: dict, inputs: dict, xs, ys):
    """z3 terms of the claim's expressions over the network's inputs and outputs: +, *,
    integer powers, abs, max, min, relu, leaky_relu and rational numbers."""
    import sympy as sp
    import z3

    from .layers.activations import leaky_relu, relu

    memo: dict = {}

    def term(e):
        hit = memo.get(e)
        if hit is not None:
            return hit
        if e.is_Number:
            if not e.is_Rational:
                raise Invalid("the claim has an irrational constant")
            out = z3.RealVal(f"{e.p}/{e.q}")
        elif isinstance(e, sp.Symbol):
            if e in outputs:
                out = ys[outputs[e]]
            elif e in inputs:
                out = xs[inputs[e]]
            elif program.is_defined(e):
                out = term(program.defs[e])
            else:
                raise Invalid(f"the claim reads {e}, which is neither an input nor an output "
                              "of its network")
        elif isinstance(e, sp.Add):
            out = z3.Sum([term(a) for a in e.args])
        elif isinstance(e, sp.Mul):
            out = z3.Product([term(a) for a in e.args])
        elif isinstance(e, sp.Pow) and e.exp.is_Integer and 0 < e.exp <= 64:
            b = term(e.base)  # no division: z3's x / 0 is any number, not an error
            out = b
            for _ in range(int(e.exp) - 1):
                out = out * b
        elif isinstance(e, sp.Abs):
            a = term(e.args[0])
            out = z3.If(a >= 0, a, -a)
        elif isinstance(e, (sp.Max, sp.Min)):
            args = [term(a) for a in e.args]
            out = args[0]
            for a in args[1:]:
                out = z3.If(a > out, a, out) if isinstance(e, sp.Max) else z3.If(a < out, a, out)
        elif isinstance(e, relu):
            a = term(e.args[0])
            out = z3.If(a > 0, a, z3.RealVal(0))
        elif isinstance(e, leaky_relu):
            a, s = term(e.args[0]), term(e.args[1])
            out = z3.If(a > 0, a, s * a)
        else:
            raise Invalid(f"the checker does not translate {type(e).__name__} in the claim")
        memo[e] = out
        return out

    return term


def check_spec(doc: dict, cert_path: str, spec: str | None, report, deadline: float,
               max_boxes: int) -> str:
    """A certificate of a spec's bound claim decided by the ReLU engine: the obligation (by
    its digest), its network (the spec's concrete weights), z3's proof that the certificate's
    disjuncts cover every violation of the claim, and every disjunct's tree closed."""
    import z3

    from . import run
    from .check import obligation_digest
    from .engines.relu_route import network_of

    spec_path = spec or os.path.join(os.path.dirname(cert_path) or ".", str(doc.get("spec")))
    model = run.load(spec_path)
    obs = [ob for ob in model.obligations if ob.name == doc.get("claim")]
    if not obs or obs[0].kind != "bound":
        raise Invalid(f"the spec has no bound claim `{doc.get('claim')}`")
    ob, program = obs[0], model.program
    if obligation_digest(ob, program) != doc.get("obligation_digest"):
        raise Invalid(f"claim `{ob.name}` of {os.path.basename(spec_path)} is not the "
                      "obligation this certificate was made for (the spec, an import or a "
                      "weight file changed)")
    if ob.hypotheses:
        raise Invalid("a ReLU certificate is for claims without `where` conditions")
    used = set(program.closure([t for a in ob.goal for t in (a.lhs, a.rhs)]))
    apps = {id(o[0]): o[0] for s, o in program.network_terms.items()
            if o[1] == "output" and s in used}
    if len(apps) != 1:
        raise Invalid("the claim does not read exactly one network application")
    app = next(iter(apps.values()))
    net = network_of(app)
    disjuncts = _disjuncts_of(doc, net.n_in, net.n_out)
    box = {v.symbol: (v.lo, v.hi) for v in ob.variables}
    inputs = {s: i for i, s in enumerate(app.inputs)}
    outputs = {s: j for j, s in enumerate(app.outputs) if hasattr(s, "name")}
    if any(s not in inputs for s in box) or any(
            s not in box or None in box[s] for s in inputs):
        raise Invalid("the claim's variables are not the network's inputs, each in a range")
    # z3: x in the claim's box and the claim violated => some disjunct holds
    xs = [z3.Real(f"x{i}") for i in range(net.n_in)]
    ys = [z3.Real(f"y{j}") for j in range(net.n_out)]
    term = _z3_of(program, outputs, inputs, xs, ys)

    def q(v) -> z3.ArithRef:
        v = Fraction(v) if not hasattr(v, "p") else Fraction(int(v.p), int(v.q))
        return z3.RealVal(f"{v.numerator}/{v.denominator}")

    solver = z3.Solver()
    solver.set("timeout", int(max(deadline - time.perf_counter(), 1.0) * 1000))
    for s, i in inputs.items():
        solver.add(q(box[s][0]) <= xs[i], xs[i] <= q(box[s][1]))
    ops = {"<=": lambda a, b: a <= b, "<": lambda a, b: a < b, ">=": lambda a, b: a >= b,
           ">": lambda a, b: a > b}
    if any(a.op not in ops for a in ob.goal):
        raise Invalid("the claim is not made of inequalities")
    solver.add(z3.Or([z3.Not(ops[a.op](term(a.lhs), term(a.rhs))) for a in ob.goal]))
    cases = []
    for rows, lo, hi in disjuncts:
        atoms = [q(lo[i]) <= xs[i] for i in range(net.n_in)] + [
            xs[i] <= q(hi[i]) for i in range(net.n_in)]
        for c in rows:
            lhs = z3.Sum([q(c.const)] + [q(a) * xs[i] for i, a in c.x] +
                         [q(a) * ys[j] for j, a in c.y])
            atoms.append(lhs < 0 if c.strict else lhs <= 0)
        cases.append(z3.And(atoms))
    solver.add(z3.Not(z3.Or(cases)))
    ans = solver.check()
    if ans != z3.unsat:
        raise Invalid(f"the certificate's disjuncts do not cover every violation of the claim "
                      f"(z3: {ans})")
    check_groups(net, disjuncts, doc.get("groups"), deadline, report, max_boxes,
                 tree_version(doc))
    return (f"valid: claim `{ob.name}` of {os.path.basename(spec_path)}, violations covered "
            f"by {len(disjuncts)} polyhedra (z3), {report.leaves} leaves re-validated "
            f"({report.boxes} boxes bounded)")


def z3_box_closes(ob, program, box: dict, deadline: float) -> bool:
    """z3 on this module's own encoding: no point of the box (leaf -> (lo, hi) Fractions)
    meets the claim's `where` conditions and violates its goal. False where the claim has a
    function z3 cannot take exactly (tanh, exp, division, ...) or z3 does not answer
    `unsat`."""
    import z3

    leaves = {s: z3.Real(f"v{i}") for i, s in enumerate(box)}
    inputs = {s: i for i, s in enumerate(box)}
    xs = list(leaves.values())
    try:
        term = _z3_of(program, {}, inputs, xs, [])
        ops = {"<=": lambda a, b: a <= b, "<": lambda a, b: a < b,
               ">=": lambda a, b: a >= b, ">": lambda a, b: a > b,
               "==": lambda a, b: a == b, "!=": lambda a, b: a != b}
        goal = [ops[a.op](term(a.lhs), term(a.rhs)) for a in ob.goal]
        hyps = [ops[a.op](term(a.lhs), term(a.rhs)) for a in ob.hypotheses]
    except (Invalid, KeyError, RecursionError):
        return False
    solver = z3.Solver()
    solver.set("timeout", int(max(min(deadline - time.perf_counter(), 30.0), 0.1) * 1000))
    for s, x in leaves.items():
        lo, hi = box[s]
        solver.add(z3.RealVal(f"{lo.numerator}/{lo.denominator}") <= x,
                   x <= z3.RealVal(f"{hi.numerator}/{hi.denominator}"))
    solver.add(*hyps)
    solver.add(z3.Not(z3.And(goal)) if goal else z3.BoolVal(True))
    return solver.check() == z3.unsat
