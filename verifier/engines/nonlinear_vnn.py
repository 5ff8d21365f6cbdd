"""Queries with polynomial constraints (VNN-LIB 2.0) on piecewise-linear networks.

The unsafe region is a disjunction of conjunctions of polynomial atoms `p(X, Y) <= 0` (`< 0`)
over the inputs X and the outputs Y of a (combined, `multinet`) ReLU network.

1. counterexample search in float64 (random points in each disjunct's box, then random local
   steps from the best ones); a candidate counts only after exact replay: the outputs computed
   in Fractions on every original network and every atom evaluated exactly;
2. branch and bound on the input box: per batch of boxes, certified pre-activation intervals
   (`crown.forward_bounds`) and CROWN output intervals (`crown.best_backward_bound`, outward
   rounded), then each atom's polynomial in interval arithmetic with outward rounding (the
   inputs' box, the outputs' intervals); a disjunct is closed on a box when one of its atoms
   is certainly false there, the box when every disjunct is. Open boxes are split in half
   along the input widest relative to the root box;
3. boxes with few unstable ReLUs go to z3 as an exact nonlinear query (stable ReLUs fixed to
   their phase, unstable ones as `If`, the atoms as they are): `unsat` closes the box, a model
   is replayed like any other candidate.

`unsat` only when every box is closed; `sat` only with an exact replay; otherwise `unknown`
or `timeout`. With `unsat` on a query over one network the result carries the closed tree
(`certificate`): the root box, every split, per node the disjuncts an atom closed there (and
which atom), and per leaf whether bounds or z3 closed it; `verify-check` re-validates it
(`check_poly`) with bounds and z3 encodings of its own.
"""

from __future__ import annotations

import time
from fractions import Fraction

import numpy as np

from .crown import Box, FloatNet, Unsupported, best_backward_bound, forward_bounds, nd, nu
from .relu_bab import Result

BATCH = 128
Z3_MAX_UNSTABLE = 6  # 2^k phase patterns, each one small z3 query
Z3_LEAF_TIMEOUT = 3.0
MIN_WIDTH = 1e-9
SEARCH_SHARE = 0.1
KEEP_NODES = 50_000  # tree nodes kept for a certificate; a larger proof has none


class _Timeout(Exception):
    pass


# ---- interval arithmetic with outward rounding (arrays over boxes) --------------------------

def _down(x):
    return np.nextafter(x, -np.inf)


def _up(x):
    return np.nextafter(x, np.inf)


def _imul(a, b, c, d):
    p = np.stack([a * c, a * d, b * c, b * d])
    with np.errstate(invalid="ignore"):
        lo, hi = np.nanmin(p, axis=0), np.nanmax(p, axis=0)
    return _down(lo), _up(hi)


def _ipow(a, b, p: int):
    if p == 1:
        return a, b
    if p % 2 == 0:
        lo = np.where((a <= 0) & (b >= 0), 0.0, np.minimum(np.abs(a), np.abs(b)))
        hi = np.maximum(np.abs(a), np.abs(b))
        rl, rh = lo, hi
        for _ in range(p - 1):
            rl, rh = _down(rl * lo), _up(rh * hi)
        return np.maximum(rl, 0.0), rh
    rl, rh = a, b
    for _ in range(p - 1):
        rl, rh = _imul(rl, rh, a, b)
    return rl, rh


class _Compiled:
    """An atom as float arrays: per monomial, coefficient interval and (slot, power) list."""

    def __init__(self, atom, slot):
        self.atom = atom
        self.strict = atom.strict
        self.terms = []
        for m, c in atom.poly.items():
            cf = float(c)
            lo, hi = cf, cf
            if Fraction(cf) != c:
                lo, hi = float(nd(np.float64(cf))), float(nu(np.float64(cf)))
            self.terms.append((lo, hi, [(slot(v), p) for v, p in m]))

    def interval_lo(self, L, H):
        """A rigorous lower bound of the polynomial over boxes; L, H (B, slots)."""
        total = np.zeros(L.shape[0])
        for clo, chi, factors in self.terms:
            ml, mh = np.full(L.shape[0], 1.0), np.full(L.shape[0], 1.0)
            for s, p in factors:
                fl, fh = _ipow(L[:, s], H[:, s], p)
                ml, mh = _imul(ml, mh, fl, fh)
            tl, _ = _imul(ml, mh, np.full_like(ml, clo), np.full_like(mh, chi))
            total = _down(total + tl)
        return total

    def value(self, V):
        """Float value at points V (B, slots)."""
        total = np.zeros(V.shape[0])
        for clo, chi, factors in self.terms:
            t = np.full(V.shape[0], 0.5 * (clo + chi))
            for s, p in factors:
                t = t * V[:, s] ** p
            total = total + t
        return total


class Engine:
    def __init__(self, comb, timeout: float, seed: int = 0, use_z3: bool = True):
        self.comb = comb
        self.q = comb.query
        self.deadline = time.perf_counter() + timeout
        self.rng = np.random.default_rng(seed)
        self.use_z3 = use_z3
        self.stats = {"boxes": 0, "z3_leaves": 0, "replays": 0}
        n = comb.n_cols
        self.n = n

        def slot(v):  # columns first, then the concatenated outputs
            if v.kind == "X":
                return comb.column[v]
            return n + comb.out_offset[v.net] + v.index

        self.slot = slot
        self.ds = [[_Compiled(a, slot) for a in d] for d in self.q.disjuncts]
        self._exact_boxes: list = []
        boxes = [self._box(d) for d in self.q.disjuncts]
        exact = [b for b in self._exact_boxes]
        # the exact hull: replayed points are clamped into it in Fractions, so an input pinned
        # to a number that is no float (X == 0.227272727) gets exactly that number
        self.qlo = [min(b[0][i] for b in exact) for i in range(n)] if exact else []
        self.qhi = [max(b[1][i] for b in exact) for i in range(n)] if exact else []
        keep = [k for k, b in enumerate(boxes) if b is not None]
        self.keep = keep  # query disjunct of each kept one
        self.tree: dict | None = {"splits": {}, "closed": {}, "closes": {}}
        self.nodes = 1
        self.ds = [self.ds[k] for k in keep]
        self.dlo = np.array([boxes[k][0] for k in keep]).reshape(len(keep), n)
        self.dhi = np.array([boxes[k][1] for k in keep]).reshape(len(keep), n)
        if keep:
            self.lo, self.hi = self.dlo.min(axis=0), self.dhi.max(axis=0)
            self.fnet = FloatNet(comb.net, [Fraction(v) for v in self.lo],
                                 [Fraction(v) for v in self.hi])
            if not self.fnet.piecewise_linear:
                raise Unsupported("the nonlinear-query engine takes ReLU networks only")
            m = self.fnet.n_out
            R = [[Fraction(int(i == j)) for j in range(m)] for i in range(m)]
            R += [[Fraction(-int(i == j)) for j in range(m)] for i in range(m)]
            self.out_spec = self.fnet.spec_layer(R, [Fraction(0)] * (2 * m))
            self.D = np.zeros((2 * m, n))

    def _box(self, atoms):
        """Outward-rounded float box of a disjunct's single-input linear bounds, or None if
        they are infeasible. Inputs left unbounded are an error."""
        from ..diagnostics import SpecError
        from ..multinet import column_names

        lo: list = [None] * self.n
        hi: list = [None] * self.n
        for a in atoms:
            if a.degree != 1 or len(a.poly) > 2:
                continue
            vs = [m for m in a.poly if m]
            if len(vs) != 1 or vs[0][0][0].kind != "X":
                continue
            col = self.comb.column[vs[0][0][0]]
            coef, const = a.poly[vs[0]], a.poly.get((), Fraction(0))
            bound = -const / coef
            if coef > 0:
                hi[col] = bound if hi[col] is None else min(hi[col], bound)
            else:
                lo[col] = bound if lo[col] is None else max(lo[col], bound)
        names = column_names(self.comb)
        missing = [i for i in range(self.n) if lo[i] is None or hi[i] is None]
        if missing:  # the range the linear constraints over inputs allow (exact, z3)
            from ..multinet import _constraint
            from ..vnnlib import _input_range

            cons = [_constraint(self.comb, a) for a in atoms
                    if a.degree <= 1 and all(v.kind == "X" for v in a.variables())]
            box = _input_range(cons, self.n, missing)
            if box is None:
                return None
            for i, (a, b) in box.items():
                lo[i] = a if lo[i] is None else (max(lo[i], a) if a is not None else lo[i])
                hi[i] = b if hi[i] is None else (min(hi[i], b) if b is not None else hi[i])
        for i in range(self.n):
            if lo[i] is None or hi[i] is None:
                raise SpecError(f"input {names[i]} has no constant bounds in some disjunct",
                                fix=f"assert (>= {names[i]} LO) and (<= {names[i]} HI)")
            if lo[i] > hi[i]:
                return None
        self._exact_boxes.append((lo, hi))
        return ([float(nd(np.float64(float(v)))) if Fraction(float(v)) > v else float(v)
                 for v in lo],
                [float(nu(np.float64(float(v)))) if Fraction(float(v)) < v else float(v)
                 for v in hi])

    def time_left(self) -> float:
        return self.deadline - time.perf_counter()

    def check_time(self):
        if self.time_left() <= 0:
            raise _Timeout

    # ---- replay and search
    def replay(self, x) -> dict | None:
        self.stats["replays"] += 1
        x = np.clip(np.asarray(x, dtype=np.float64), self.lo, self.hi)
        q = [min(max(Fraction(float(v)), a), b) for v, a, b in zip(x, self.qlo, self.qhi)]
        return self.comb.replays(q)

    def _margins(self, X):
        """Per point, max over disjuncts of min over atoms of -p (>= 0: looks unsafe)."""
        Y = self.fnet.forward(X)
        V = np.concatenate([X, Y], axis=1)
        best = np.full(len(X), -np.inf)
        for k, d in enumerate(self.ds):
            inside = np.all((X >= self.dlo[k]) & (X <= self.dhi[k]), axis=1)
            m = np.where(inside, np.inf, -np.inf)
            for c in d:
                r = -c.value(V)
                if c.strict:  # a strict atom needs a margin above float noise
                    r = r - 1e-9
                m = np.minimum(m, r)
            best = np.maximum(best, m)
        return best

    def search(self, seconds: float):
        end = time.perf_counter() + seconds
        if not len(self.ds):
            return None
        pts = []
        for k in range(len(self.ds)):
            pts.append(self.dlo[k] + self.rng.random((64, self.n)) * (self.dhi[k] - self.dlo[k]))
        X = np.concatenate(pts)
        tried: set = set()
        while True:
            m = self._margins(X)
            order = np.argsort(-m)
            for i in order[:3]:
                key = X[i].tobytes()
                if m[i] >= -1e-12 and key not in tried:
                    tried.add(key)
                    env = self.replay(X[i])
                    if env is not None:
                        return env
            if time.perf_counter() > end:
                return None
            top = X[order[:64]]
            scale = (self.hi - self.lo) * self.rng.choice([1e-1, 1e-2, 1e-3])
            X = np.clip(np.repeat(top, 8, axis=0) + self.rng.normal(size=(512, self.n)) * scale,
                        self.lo, self.hi)
            X = np.concatenate([X, self.lo + self.rng.random((256, self.n))
                                * (self.hi - self.lo)])

    # ---- branch and bound
    def _bounds(self, lo, hi):
        box = Box(lo, hi)
        fwd = forward_bounds(self.fnet, box)
        ub, _ = best_backward_bound(self.out_spec, self.D, self.D, fwd, box, self.fnet.hidden)
        m = self.fnet.n_out
        return fwd, -ub[:, m:], ub[:, :m]

    def _alive(self, lo, hi, ylo, yhi, alive):
        """alive (B, G) & not closed on the box by some certainly false atom; and per box and
        disjunct the atom that closed it here (-1: outside the disjunct's box, -2: none)."""
        L = np.concatenate([lo, ylo], axis=1)
        H = np.concatenate([hi, yhi], axis=1)
        out = alive.copy()
        closer = np.full(alive.shape, -2)
        for k, d in enumerate(self.ds):
            a = out[:, k]
            if not a.any():
                continue
            inside = np.all((lo <= self.dhi[k]) & (hi >= self.dlo[k]), axis=1)
            closer[a & ~inside, k] = -1
            a &= inside
            for t, c in enumerate(d):
                if not a.any():
                    break
                pl = c.interval_lo(L, H)
                shut = a & ((pl >= 0) if c.strict else (pl > 0))
                closer[shut, k] = t
                a &= ~shut
            out[:, k] = a
        return out, closer

    def _record(self, kind: str, node: int, value) -> None:
        """One node of the tree for the certificate (nothing once it is too large)."""
        if self.tree is None:
            return
        if self.nodes > KEEP_NODES:
            self.tree = None
            return
        self.tree[kind][str(node)] = value

    def certificate(self) -> dict | None:
        """The closed tree (after `unsat`) over the inputs of the query's one network, or
        None (several networks, inputs tied into one column, or too many nodes)."""
        q = self.q
        if (self.tree is None or len(q.networks) != 1 or not len(self.ds)
                or self.n != q.networks[0].inputs.size):
            return None
        t = self.tree
        return {"tree": 1, "root": [[float(a).hex(), float(b).hex()]
                                    for a, b in zip(self.lo, self.hi)],
                "splits": t["splits"], "closed": t["closed"],
                "closes": {k: v for k, v in t["closes"].items() if v}}

    def bab(self):
        queue = [(self.lo.copy(), self.hi.copy(), np.ones(len(self.ds), dtype=bool), 0)]
        incomplete = 0
        while queue:
            self.check_time()
            batch, queue = queue[-BATCH:], queue[:-BATCH]
            lo = np.array([b[0] for b in batch])
            hi = np.array([b[1] for b in batch])
            before = np.array([b[2] for b in batch])
            self.stats["boxes"] += len(batch)
            fwd, ylo, yhi = self._bounds(lo, hi)
            alive, closer = self._alive(lo, hi, ylo, yhi, before)
            unstable = fwd.unstable(self.fnet)
            centre_margin = self._margins(0.5 * (lo + hi))
            for i in range(len(batch)):
                self.check_time()
                node = batch[i][3]
                shut = np.nonzero(before[i] & ~alive[i])[0]
                self._record("closes", node, [[self.keep[k], int(closer[i, k])]
                                              for k in shut])
                if not alive[i].any():
                    self._record("closed", node, {"by": "bound"})
                    continue
                if centre_margin[i] >= -1e-9:
                    env = self.replay(0.5 * (lo[i] + hi[i]))
                    if env is not None:
                        return env
                width = (hi[i] - lo[i]) / np.maximum(self.hi - self.lo, 1e-300)
                if self.use_z3 and unstable[i] <= Z3_MAX_UNSTABLE:
                    res = self.z3_leaf(lo[i], hi[i], fwd, i, alive[i])
                    if isinstance(res, dict):
                        return res
                    if res == "unsat":
                        self._record("closed", node, {"by": "z3"})
                        continue
                if (hi[i] - lo[i]).max() < MIN_WIDTH:
                    incomplete += 1
                    continue
                d = int(np.argmax(width))
                mid = 0.5 * (lo[i][d] + hi[i][d])
                if not lo[i][d] < mid < hi[i][d]:
                    incomplete += 1
                    continue
                h1, l2 = hi[i].copy(), lo[i].copy()
                h1[d], l2[d] = mid, mid
                a, b = self.nodes, self.nodes + 1
                self.nodes += 2
                self._record("splits", node, [d, float(mid).hex(), a, b])
                queue.append((lo[i], h1, alive[i], a))
                queue.append((l2, hi[i], alive[i], b))
        return incomplete == 0 or f"{incomplete} boxes too small to split stayed open"

    def z3_leaf(self, lo, hi, fwd, i, alive):
        """Exact answer on one box: each phase pattern of its unstable ReLUs makes the outputs
        exact affine forms of the inputs (Fractions), and z3 decides the atoms over the box
        with the pattern's sign constraints: "unsat" for all patterns, an env, or unknown."""
        self.stats["z3_leaves"] += 1
        n = self.n
        lo_q = [Fraction(float(v)) for v in lo]
        hi_q = [Fraction(float(v)) for v in hi]
        eye = np.array([[Fraction(int(r == c)) for c in range(n + 1)] for r in range(n)],
                       dtype=object)  # input j = x_j (last column: constant)
        stack = [(0, eye, [])]
        verdict = "unsat"
        while stack:
            self.check_time()
            k, forms, signs = stack.pop()
            if k == len(self.fnet.layers):
                res = self._z3_pattern(lo_q, hi_q, forms, signs, alive)
                if isinstance(res, dict):
                    return res
                if res != "unsat":
                    verdict = res
                continue
            la = self.fnet.layers[k]
            z = la.exact.W.dot(forms)
            z[:, n] += la.exact.b
            if la.act is None:
                stack.append((k + 1, z, signs))
                continue
            l, u = fwd.l[k][i], fwd.u[k][i]
            slope = la.alpha_exact if la.act == "leaky_relu" else Fraction(0)
            unst = [r for r in range(len(l)) if l[r] < 0 < u[r]]
            h = z.copy()
            for r in range(len(l)):
                if u[r] <= 0:
                    h[r] = z[r] * slope
            for bits in range(2 ** len(unst)):
                hb = h.copy()
                sg = list(signs)
                for t, r in enumerate(unst):
                    if bits >> t & 1:
                        sg.append((z[r], 1))
                    else:
                        hb[r] = z[r] * slope
                        sg.append((z[r], -1))
                stack.append((k + 1, hb, sg))
        return verdict

    def _z3_pattern(self, lo_q, hi_q, out, signs, alive):
        import z3

        n = self.n
        xs = [z3.Real(f"x{j}") for j in range(n)]

        def aff(row):
            return z3.Sum([_q(row[j]) * xs[j] for j in range(n) if row[j] != 0]
                          + [_q(row[n])])

        s = z3.SolverFor("QF_NRA")
        s.set("timeout", int(1000 * min(Z3_LEAF_TIMEOUT, max(self.time_left(), 0.05))))
        for j in range(n):
            s.add(xs[j] >= _q(lo_q[j]), xs[j] <= _q(hi_q[j]))
        for row, sign in signs:
            s.add(aff(row) >= 0 if sign > 0 else aff(row) <= 0)
        ys = [aff(out[j]) for j in range(out.shape[0])]
        slots = xs + ys
        cases = []
        for k, dj in enumerate(self.ds):
            if not alive[k]:
                continue
            atoms = []
            for c in dj:
                p = z3.Sum([_q(coef) * _mono(slots, self.slot, m)
                            for m, coef in c.atom.poly.items()] + [_q(Fraction(0))])
                atoms.append(p < 0 if c.strict else p <= 0)
            cases.append(z3.And(atoms))
        s.add(z3.Or(cases))
        t0 = time.perf_counter()
        res = s.check()
        self.stats["z3_seconds"] = round(self.stats.get("z3_seconds", 0.0)
                                         + time.perf_counter() - t0, 2)
        self.stats[f"z3_{res}"] = self.stats.get(f"z3_{res}", 0) + 1
        if res == z3.unsat:
            return "unsat"
        if res == z3.sat:
            m = s.model()
            x = []
            for xv in xs:
                val = m.eval(xv, model_completion=True)
                if z3.is_rational_value(val):
                    x.append(Fraction(val.numerator_as_long(), val.denominator_as_long()))
                else:
                    x.append(Fraction(val.approx(40).as_fraction()))
            self.stats["replays"] += 1
            env = self.comb.replays(x)
            if env is not None:
                return env
            # a model on the pattern's boundary may round off it: try the float neighbours
            env = self.replay([float(v) for v in x])
            if env is not None:
                return env
        return str(res)

    def run(self):
        if not len(self.ds):
            return Result("unsat", reason="every disjunct's input region is empty",
                          stats=self.stats), None
        try:
            env = self.search(max(min(SEARCH_SHARE * self.time_left(), 3.0), 0.2))
            if env is not None:
                return Result("sat", stats=self.stats), env
            res = self.bab()
        except _Timeout:
            return Result("timeout", reason="time limit reached", stats=self.stats), None
        if isinstance(res, dict):
            return Result("sat", stats=self.stats), res
        if res is True:
            return Result("unsat", stats=self.stats, certificate=self.certificate()), None
        return Result("unknown", reason=res, stats=self.stats), None


def _q(v: Fraction):
    import z3

    v = Fraction(v)
    return z3.RealVal(f"{v.numerator}/{v.denominator}") if v.denominator != 1 else \
        z3.RealVal(v.numerator)


def _mono(slots, slot, m):
    import z3

    t = z3.RealVal(1)
    for v, p in m:
        for _ in range(p):
            t = t * slots[slot(v)]
    return t


def decide(comb, timeout: float, seed: int = 0, use_z3: bool = True):
    """Decide a polynomial query on a combined ReLU network: (Result, env or None)."""
    try:
        eng = Engine(comb, timeout, seed=seed, use_z3=use_z3)
    except Unsupported as exc:
        return Result("unknown", reason=str(exc)), None
    return eng.run()


__all__ = ["Engine", "decide"]
