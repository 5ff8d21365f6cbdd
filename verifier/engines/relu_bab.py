"""Decide a VNN-LIB property on an imported network: search, bounds, branch and bound, z3.

Disjuncts with the same input box are decided together (`_Spec`): disjunct g has rows
`r_k(x) = -(constraint lhs)` and is unsafe iff every `r_k >= 0` (`> 0` for strict ones).

1. counterexample search in float64 (random points, then projected Adam descent on the
   least violated disjunct's summed violation `sum_k max(0, -r_k)`, and sign-gradient ascent
   on `min_k r_k`); a candidate counts only after exact replay in
   `Fraction`s (60-digit mpmath for smooth activations) on the imported network, against
   every constraint of a disjunct, strictness included;
2. branch and bound on the input box, many boxes per numpy batch (`crown`): a box is closed
   when, for every disjunct, some *bounding row* (a row, or the average of two or of all
   rows: unsafe points make every average nonnegative too) is certified `< 0` (`<= 0` when
   a strict row is involved) on all of it. Bounds: a forward pass with the parent box's
   certified intervals, then backward CROWN for the still-unstable neurons and the best of
   four lower-slope choices for the rows, then, on boxes still open, α-CROWN
   (`alpha_crown`: slopes optimised per box and row, layer by layer, then for the rows,
   and for a disjunct with several rows a per-box nonnegative combination of its rows
   optimised with the slopes, which sees all the rows at once).
   An open box is split in half along the input with the largest interval gradient x width
   (ReluVal's smear), or, once it has few unstable ReLUs left (`RELU_MAX_UNSTABLE`), on the
   phase of the unstable neuron whose upper chord costs the row's bound most (BaBSR's
   intercept score): two copies of the box, one with the neuron's pre-activation bound
   clamped to <= 0 and one to >= 0, which every later bound of the copy starts from (so the
   neuron is exact there and the next layers tighten); a copy whose bounds then contradict
   (l > u) is empty and closed. The copies carry their phase constraints, and the
   combination stage optimises a multiplier beta >= 0 per constraint with the weights and
   slopes (beta-CROWN: the bound then holds on the points of the box meeting the phases,
   which a clamp alone does not give), each copy of a phase split starting from its parent's
   weights, slopes and multipliers (the halves of an input split start afresh); a leaf closed
   that way records its multipliers. Its centre and the corner maximising its linear bound are
   tried as counterexamples. With `workers > 1` the boxes are cut into pieces that forked processes
   take in turn, each for a time slice after which its open boxes become new pieces;
3. boxes with few unstable ReLUs left go to z3 as exact SMT-LIB (stable neurons fixed to
   their certified phase, unstable ones as `ite`, a split phase asserted): z3's `unsat`
   closes the box and its text is kept; `sat` gives a point that is replayed like any other candidate.

Answers: `unsat` only when every box of every disjunct was closed; `sat` only with a replayed
witness; otherwise `unknown` or `timeout`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from ..onnx_import import OnnxNet
from ..vnnlib import Disjunct, Property
from .alpha_crown import (
    Combination,
    initial_combination,
    optimize_betas,
    optimize_combination,
    tighten_layers,
)
from .crown import (
    Bounds,
    Box,
    FLayer,
    FloatNet,
    Unsupported,
    act_float,
    backward_bound,
    best_backward_bound,
    float_error,
    forward_bounds,
    gamma,
    nd,
    nu,
    single_thread_blas,
)

BATCH = 512  # boxes per bound computation (numpy pays per call; still checks the clock often)
Z3_MAX_UNSTABLE = 6  # boxes with at most this many unstable ReLUs may go to z3
Z3_LEAF_TIMEOUT = 2.0
Z3_SHARE = 0.05  # at most this share of the time limit goes to z3 leaves (they often time out)
MIN_WIDTH = 1e-12
PIECES_PER_WORKER = 4  # with several workers, the boxes are cut into this many pieces each
SLICE = 2.0  # seconds a worker spends on a piece before handing its open boxes back
SMEAR = "interval"  # split score: |d row / dx_i| over the box (interval) or |CROWN coef|
ALPHA_ITERS = 6  # α-CROWN steps per layer on boxes that plain CROWN leaves open (0: off)
HINGE_TARGET = 1e-7  # the search pushes every row this far past zero, so replays succeed
ROW_ALPHA = 0  # also optimise slopes per bounding row where every disjunct gets combinations
COMB_SMEAR = 1  # split along the smear of the combined row where it was computed
TIGHTEN_ITERS = 3  # α-CROWN steps for the intermediate bounds of those boxes (0: off)
# the last TIGHTEN_SKIP hidden layers keep their CROWN bounds (the deepest layer's α pass is
# the dearest: on robot_3, one worker, 25941 boxes in 17.4-24.5 s without it, 22699 in 34.1 s
# with it, at load 5.6-6.5)
TIGHTEN_SKIP = 1
COMB_ITERS = 20  # steps optimising each disjunct's row weights and slopes together (0: off)
# phase splits where a box has at most RELU_MAX_UNSTABLE unstable neurons and the best
# neuron's score is at least RELU_RATIO times the bound still to be closed. A box that is
# phase split stays as wide, so its copies are phase split again down to the last unstable
# neuron: robot_3 (one worker, beta on) closed in 26709 boxes with 8, 24417 with 12, 41643
# with 16, and ran out of time with 32 (53391 boxes in 60 s)
RELU_MAX_UNSTABLE = 12
RELU_RATIO = 0.0
# lower-slope choices for the single rows after the α step where every disjunct's rows are
# combined next (the combination closes what they would; all four were 3 of a box's ~11
# backward passes)
ROW_MODES = ("adaptive",)
BETA = 1  # optimise multipliers of the phase constraints with the combination (0: off)
BETA_ITERS = 10  # extra combination steps on boxes with phase constraints
# children start the combination from their parent's weights, slopes and multipliers: 1 the
# two copies of a phase split only, 2 the halves of an input split too (on robot_5 warm halves
# took 19463 boxes, cold ones 16043: a half's optimum is often far from its parent's), 0 none
WARM = 1


@dataclass
class Result:
    answer: str  # unsat | sat | unknown | timeout
    witness_x: list | None = None  # exact input values (Fractions)
    witness_y: list | None = None  # exact (or 60-digit) outputs there
    reason: str = ""
    stats: dict = field(default_factory=dict)
    smt: list = field(default_factory=list)  # (name, text) of every z3 leaf answered unsat
    certificate: dict | None = None  # with `unsat`: the closed trees (see `certificate`)


class SplitTree:
    """The branch-and-bound tree of one group of disjuncts, for its certificate.

    Nodes are numbered like a heap (the root 0, the halves of n are 2n+1 and 2n+2), so every
    worker process names the boxes it splits without asking; `splits` maps a node to (input,
    split point, lower half, upper half) or ("relu", block, neuron, inactive child, active
    child), `closed` a leaf to how it was closed: {"by": "bound", "w": per disjunct the
    nonnegative weights of its rows whose combination was certified negative}, {"by": "z3"}
    or {"by": "empty"} (its phases contradict its box)."""

    def __init__(self) -> None:
        self.splits: dict = {}
        self.closed: dict = {}

    @staticmethod
    def children(ids):
        """The halves' node ids of nodes `ids` (lower halves, upper halves)."""
        left = np.array([2 * i + 1 for i in ids], dtype=object)
        return left, left + 1

    def split(self, ids, dims, mids):
        left, right = self.children(ids)
        for i, d, m, a, b in zip(ids, dims, mids, left, right):
            self.splits[i] = (int(d), float(m), a, b)
        return left, right

    def split_relu(self, ids, blocks, neurons):
        """Phase splits of neuron `neurons` of block `blocks` (the network's numbering, 1 the
        first hidden block): the first child has pre-activation <= 0, the second >= 0."""
        left, right = self.children(ids)
        for i, k, n, a, b in zip(ids, blocks, neurons, left, right):
            self.splits[i] = ("relu", int(k), int(n), a, b)
        return left, right

    def merge(self, other: SplitTree) -> None:
        self.splits.update(other.splits)
        self.closed.update(other.closed)

    def phases(self, node) -> list:
        """The phase splits on the path to `node`, root first: (block, neuron, side)."""
        out = []
        while node:
            parent = (node - 1) // 2
            rec = self.splits.get(parent)
            if rec is not None and rec[0] == "relu":
                out.append((rec[1], rec[2], "off" if node == rec[3] else "on"))
            node = parent
        return out[::-1]

    def _leaf_json(self, node, how: dict, sizes: list[int]) -> dict:
        """A closed leaf as the checker reads it: "beta_at" ({hidden neuron: multiplier per
        disjunct}) becomes "beta", per disjunct one multiplier per phase split on the path."""
        if "beta_at" not in how:
            return how
        at = how["beta_at"]
        offs = np.concatenate([[0], np.cumsum(sizes)])
        path = [int(offs[k - 1]) + n for k, n, _ in self.phases(node)]
        n_members = len(how["w"])
        beta = [[at.get(f, ["0.0"] * n_members)[g] for f in path] for g in range(n_members)]
        out = {k: v for k, v in how.items() if k != "beta_at"}
        out["beta"] = beta
        return out

    def to_json(self, disjuncts: list[int], lo, hi, sizes: list[int] | None = None) -> dict:
        """`sizes`: the hidden layers' widths (where the phase multipliers are numbered)."""
        return {"disjuncts": disjuncts,
                "root": [[float(a).hex(), float(b).hex()] for a, b in zip(lo, hi)],
                "splits": {str(i): _split_json(rec) for i, rec in self.splits.items()},
                "closed": {str(i): self._leaf_json(i, how, sizes or []) for i, how in
                           self.closed.items()}}


def _split_json(rec) -> list:
    """[input, split point, lower, upper] or ["relu", block, neuron, z <= 0, z >= 0]."""
    if rec[0] == "relu":
        return ["relu", rec[1], rec[2], str(rec[3]), str(rec[4])]
    d, m, a, b = rec
    return [d, m.hex(), str(a), str(b)]


TREE_VERSION = 2  # 2: trees may split ReLU phases (1: input splits only)

_ROOT = np.array([0], dtype=object)


class _Timeout(Exception):
    pass


def _float_box(d: Disjunct):
    """Outward-rounded float box containing the exact one, and the floats inside it."""
    lo = np.array([float(v) for v in d.lo])
    hi = np.array([float(v) for v in d.hi])
    lo_in, hi_in = lo.copy(), hi.copy()
    for i, (a, b) in enumerate(zip(d.lo, d.hi)):
        if Fraction(lo[i]) > a:
            lo[i] = nd(lo[i])
        if Fraction(hi[i]) < b:
            hi[i] = nu(hi[i])
        if Fraction(lo_in[i]) < a:
            lo_in[i] = nu(lo_in[i])
        if Fraction(hi_in[i]) > b:
            hi_in[i] = nd(hi_in[i])
    return lo, hi, lo_in, hi_in


def _hull(prop: Property):
    """The smallest box holding every disjunct's input box (a graph network is lowered on it)."""
    if not prop.disjuncts:
        return None, None
    lo = [min(d.lo[i] for d in prop.disjuncts) for i in range(prop.n_inputs)]
    hi = [max(d.hi[i] for d in prop.disjuncts) for i in range(prop.n_inputs)]
    return lo, hi


def _combinations(k: int) -> list[list[Fraction]]:
    """Weights of the bounding rows: each row, each pair's average, and the mean of all."""
    eye = [[Fraction(int(i == j)) for j in range(k)] for i in range(k)]
    if k < 2 or k > 8:
        return eye
    pairs = [[Fraction(1, 2) if t in (i, j) else Fraction(0) for t in range(k)]
             for i in range(k) for j in range(i + 1, k)]
    mean = [[Fraction(1, k)] * k] if k > 2 else []
    return eye + pairs + mean


class _Spec:
    """Disjuncts with the same input box, in the engine's terms (usually just one).

    Disjunct g is unsafe at x iff all its rows `r(x) = -(lhs)` are >= 0 (> 0 if strict); the
    group is safe on a box iff every disjunct is, i.e. for every g some bounding row of g is
    certified negative. Sharing one branch and bound tree saves recomputing the same boxes
    once per output case (VNN-LIB's `(or (and Y_1 <= Y_0) (and Y_2 <= Y_0) ...)`).
    """

    def __init__(self, fnet: FloatNet, d: Disjunct | list[Disjunct]):
        self.ds = d if isinstance(d, list) else [d]
        self.d = self.ds[0]
        n_in, n_out = fnet.n_in, fnet.n_out
        R, Dx, e, owner, Rb, Db, eb, sb, bowner = [], [], [], [], [], [], [], [], []
        lam = []
        for g, dj in enumerate(self.ds):
            rows = dj.output_constraints()
            Rg = [[Fraction(0)] * n_out for _ in rows]
            Dg = [[Fraction(0)] * n_in for _ in rows]
            eg = []
            for r, c in enumerate(rows):  # r = -(lhs)
                for j, a in c.y:
                    Rg[r][j] = -a
                for i, a in c.x:
                    Dg[r][i] = -a
                eg.append(-c.const)
            strict = [c.strict for c in rows]
            for w in _combinations(len(rows)):  # bounding rows: rows and averages of them
                used = [k for k, t in enumerate(w) if t]
                rb = [sum((w[k] * Rg[k][j] for k in used), Fraction(0)) for j in range(n_out)]
                db = [sum((w[k] * Dg[k][i] for k in used), Fraction(0)) for i in range(n_in)]
                cb = sum((w[k] * eg[k] for k in used), Fraction(0))
                st = any(strict[k] for k in used)
                if len(used) > 1 and not any(rb) and not any(db) and (
                        cb > 0 or (cb == 0 and not st)):
                    # a constant average that never closes a box (the two sides of a band
                    # |Y_1| <= r average to r): useless, and as the smallest bound it would
                    # choose the split with a zero gradient
                    continue
                Rb.append(rb)
                Db.append(db)
                eb.append(cb)
                sb.append(st)
                bowner.append(g)
                lam.append((len(R), w))
            R += Rg
            Dx += Dg
            e += eg
            owner += [g] * len(rows)
        self.rows = R
        # weights of each bounding row on its disjunct's rows, which start at `off` (kept
        # sparse: a dense row per bounding row grows with the square of the disjuncts)
        self.lam = lam
        # unsafe needs every row >= 0 (> 0 if strict), so every average too: a box where
        # some bounding row is < 0 (<= 0 when it involves a strict row) is safe for its g
        self.strict = np.array(sb, dtype=bool)
        self.owner = np.array(owner, dtype=np.int64)
        self.bowner = np.array(bowner, dtype=np.int64)
        self.spec = fnet.spec_layer(Rb, eb) if self.rows else None
        Dobj = np.array(Dx, dtype=object).reshape(len(self.rows), n_in)
        self.D = np.array([[float(v) for v in row] for row in Dx]).reshape(len(self.rows), n_in)
        Dbo = np.array(Db, dtype=object).reshape(len(Db), n_in)
        self.Db = np.array([[float(v) for v in row] for row in Db]).reshape(len(Db), n_in)
        self.EDb = float_error(self.Db, Dbo) if self.rows else self.Db
        self.ED = float_error(self.D, Dobj) if self.rows else self.D
        self.Rf = np.array([[float(v) for v in row] for row in R]).reshape(len(self.rows), n_out)
        self.ef = np.array([float(v) for v in e])
        self.Dobj = Dobj
        self.lo, self.hi, self.lo_in, self.hi_in = _float_box(self.d)
        # disjuncts with several rows get a per-box optimised combination of them
        self.multi = [np.nonzero(self.owner == g)[0] for g in range(len(self.ds))
                      if np.sum(self.owner == g) > 1]
        self.multi_g = np.array([g for g in range(len(self.ds)) if np.sum(self.owner == g) > 1],
                                dtype=np.int64)
        self.base = fnet.spec_layer(R, e) if len(self.multi) else None

    def rows_float(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return y @ self.Rf.T + x @ self.D.T + self.ef

    def _per_group(self, v, owner, fill):
        """(B, G) minimum of v's columns per disjunct."""
        out = np.full((v.shape[0], len(self.ds)), fill)
        for g in range(len(self.ds)):
            cols = owner == g
            if cols.any():
                out[:, g] = v[:, cols].min(axis=1)
        return out

    def margin(self, r):
        """Float violation margin per point: >= 0 where some disjunct looks unsafe."""
        return self._per_group(r, self.owner, -np.inf).max(axis=1)

    def hinge(self, r, target: float = 0.0):
        """Total violation of the least violated disjunct per point, sum_k max(0, t - r_k)
        over its rows, and the weights (B, rows) whose row combination is its gradient."""
        short = np.maximum(target - r, 0.0)
        tot = np.full((r.shape[0], len(self.ds)), np.inf)
        for g in range(len(self.ds)):
            cols = self.owner == g
            if cols.any():
                tot[:, g] = short[:, cols].sum(axis=1)
        g = np.argmin(tot, axis=1)
        w = np.where((short > 0) & (self.owner[None, :] == g[:, None]), -1.0, 0.0)
        return tot[np.arange(len(r)), g], w

    def grad_row(self, r):
        """The row to ascend per point: the smallest row of the least safe disjunct."""
        g = np.argmax(self._per_group(r, self.owner, -np.inf), axis=1)
        masked = np.where(self.owner[None, :] == g[:, None], r, np.inf)
        return np.argmin(masked, axis=1)

    def closed(self, ub, comb_ub=None):
        """Boxes certified safe: for every disjunct, some bounding row is negative, or
        (`comb_ub`, (B, len(multi)): bounds of the combined rows of `multi_g`) its combined
        row is."""
        neg = np.where(self.strict[None, :], ub <= 0, ub < 0)
        safe = ~self._per_group(~neg, self.bowner, True)
        if comb_ub is not None:
            safe[:, self.multi_g] |= comb_ub < 0
        return np.all(safe, axis=1)

    def weights(self, r: int) -> list[Fraction]:
        """Bounding row r's weights on every row of the group (a dense row)."""
        off, w = self.lam[r]
        return [Fraction(0)] * off + list(w) + [Fraction(0)] * (len(self.rows) - off - len(w))

    def closing(self, ub, comb_ub=None, lam=None, mults=None) -> list[dict]:
        """For boxes `closed` found safe: per disjunct the weights of its rows (exact for
        bounding rows, floats for an optimised combination) that close it, and with `mults`
        (B, len(multi), hidden neurons) the nonzero multipliers of the phase constraints of
        the combined rows ("beta_at": {neuron: per disjunct}; see SplitTree)."""
        neg = np.where(self.strict[None, :], ub <= 0, ub < 0)
        out = []
        rows_of = [np.nonzero(self.owner == g)[0] for g in range(len(self.ds))]
        multi_pos = {int(g): i for i, g in enumerate(self.multi_g)}
        for b in range(len(ub)):
            w = []
            for g, rows in enumerate(rows_of):
                cand = np.nonzero(neg[b] & (self.bowner == g))[0]
                if len(cand):
                    off, lam_r = self.lam[int(cand[np.argmin(ub[b, cand])])]
                    w.append([str(lam_r[r - off]) for r in rows])
                else:  # closed by the combined row
                    w.append([repr(float(lam[b, multi_pos[g], r])) for r in rows])
            how = {"by": "bound", "w": w}
            if mults is not None:
                used = [g for g in range(len(self.ds)) if not (neg[b] & (
                    self.bowner == g)).any()]
                at: dict = {}
                for g in used:
                    for n in np.nonzero(mults[b, multi_pos[g]])[0]:
                        at.setdefault(int(n), ["0.0"] * len(self.ds))[g] = repr(
                            float(mults[b, multi_pos[g], n]))
                if at:
                    how["beta_at"] = at
            out.append(how)
        return out

    def combined_bound(self, fnet: FloatNet, lam, betas, bounds: Bounds, box: Box,
                       phase=None):
        """Sound upper bounds (B, G) of the combined rows sum_k lam_k r_k (lam >= 0 floats,
        (B, G, k)): the combination is formed in floats, its rounding bounded and added.
        `phase`: signed multipliers of the boxes' phase constraints per layer (B, G, m), with
        which the bounds hold on the points of each box meeting its phases."""
        base = self.base
        k = base.W.shape[0]
        gk = gamma(k + 1)
        up = 1.0 + gk  # the error sums are rounded too
        W = np.einsum("bgk,km->bgm", lam, base.W)
        EW = nu(up * np.einsum("bgk,km->bgm", lam, base.EW + gk * np.abs(base.W)))
        b = lam @ base.b
        Eb = nu(up * (lam @ (base.Eb + gk * np.abs(base.b))))
        D = np.einsum("bgk,kn->bgn", lam, self.D)
        ED = nu(up * np.einsum("bgk,kn->bgn", lam, self.ED + gk * np.abs(self.D)))
        row = FLayer(W=W, b=b, EW=EW, Eb=Eb, exact=base.exact, act=None)
        ub, _ = backward_bound(row, D, ED, bounds, box, fnet.hidden, betas=betas,
                               phase=phase)
        return ub

    def worst(self, ub):
        """Per box, the bound of the least safe disjunct (its best bounding row)."""
        return self._per_group(ub, self.bowner, np.inf).max(axis=1)

    def split_row(self, ub):
        """Per box, the bounding row that decides the split: best row of the worst disjunct."""
        g = np.argmax(self._per_group(ub, self.bowner, np.inf), axis=1)
        masked = np.where(self.bowner[None, :] == g[:, None], ub, np.inf)
        return np.argmin(masked, axis=1)

    def holds(self, x, y) -> bool:
        return any(all(c.holds(x, y) for c in dj.constraints) for dj in self.ds)


def _groups(prop: Property) -> list[list[Disjunct]]:
    """Disjuncts with output rows grouped by identical input boxes, in order."""
    out: dict = {}
    for k, d in enumerate(prop.disjuncts):
        key = (tuple(d.lo), tuple(d.hi)) if d.output_constraints() else ("alone", k)
        out.setdefault(key, []).append(d)
    return list(out.values())


class Engine:
    def __init__(self, net: OnnxNet, prop: Property, timeout: float, seed: int = 0,
                 use_z3: bool = True, workers: int = 1, cluster=None, certify: bool = True,
                 phase_splits: bool = True):
        if prop.n_inputs != net.n_in or prop.n_outputs != net.n_out:
            from ..diagnostics import SpecError

            raise SpecError(f"the property has {prop.n_inputs} inputs and {prop.n_outputs} "
                            f"outputs, the network {net.n_in} and {net.n_out}")
        self.net = net
        self.prop = prop
        self.fnet = FloatNet(net, *_hull(prop))
        self.deadline = time.perf_counter() + timeout
        self.budget = timeout
        self.workers = max(1, workers)
        self.cluster = cluster  # a distributed.Client: pieces go to its workers
        if cluster is not None:
            self.workers = max(self.workers, _cluster_workers(cluster))
        self.rng = np.random.default_rng(seed)
        self.use_z3 = use_z3
        self.stats = {"boxes": 0, "z3_leaves": 0, "replays": 0}
        self.smt: list = []
        self.certify = certify  # record the split trees for a certificate of `unsat`
        self.trees: dict[int, SplitTree] = {}
        self.warm: dict = {}  # node -> [its optimised Combination row, children to come]
        self.open_phase = None
        # phase splits name neurons by the network's blocks: chains of ReLU layers only
        self.phase_splits = phase_splits and net.is_chain and all(
            la.act in ("relu", "leaky_relu") for la in self.fnet.hidden)

    def __getstate__(self) -> dict:  # sent to cluster workers: without the connection
        state = dict(self.__dict__)
        state["cluster"] = None
        return state

    def time_left(self) -> float:
        return self.deadline - time.perf_counter()

    def check_time(self):
        if self.time_left() <= 0:
            raise _Timeout

    # ---- public
    def run(self) -> Result:
        groups = _groups(self.prop)
        specs = [_Spec(self.fnet, g) for g in groups]
        for k, s in enumerate(specs):
            s.key = k
        every = list(specs)
        try:
            total = max(self.time_left(), 0.0)
            for s in specs:
                self.check_time()  # many disjuncts: the time limit holds here too
                hit = self.search(s, min(0.3, 0.3 * total / len(specs)))
                if hit:
                    return self._sat(hit)
            # disjuncts whose whole box is closed by one bound computation need no more
            open_specs = []
            for s in specs:
                self.check_time()
                if not s.rows or len(self._bound(s, s.lo[None], s.hi[None])[0]):
                    open_specs.append(s)
            specs = open_specs
            for s in specs:
                self.check_time()
                hit = self.search(s, min(0.03 * total, 3.0) / len(specs))
                if hit:
                    return self._sat(hit)
            incomplete = []
            if (self.workers > 1 or self.cluster is not None) and any(s.rows for s in specs):
                outcomes = self._bab_parallel(specs)
            else:
                outcomes = ((k, self.bab(s)) for k, s in enumerate(specs))
            try:
                for k, res in outcomes:
                    if isinstance(res, tuple):
                        return self._sat(res)
                    if res == "timeout":
                        raise _Timeout
                    if res is not True:
                        incomplete.append(f"disjunct {k}: {res}")
            finally:
                if hasattr(outcomes, "close"):
                    outcomes.close()  # stops the workers
            if incomplete:
                return Result("unknown", reason="; ".join(incomplete), stats=self.stats,
                              smt=self.smt)
            return Result("unsat", stats=self.stats, smt=self.smt,
                          certificate=self._certificate(groups, every))
        except _Timeout:
            return Result("timeout", reason="time limit reached", stats=self.stats,
                          smt=self.smt)

    def _certificate(self, groups, specs) -> dict | None:
        """The closed split trees of every group (see `SplitTree`, `check_relu`)."""
        if not self.certify:
            return None
        index = {id(d): i for i, d in enumerate(self.prop.disjuncts)}
        sizes = [la.W.shape[0] for la in self.fnet.hidden]
        return {"tree": TREE_VERSION, "groups": [self.trees.get(k, SplitTree()).to_json(
            [index[id(d)] for d in g], s.lo, s.hi, sizes) for k, (g, s) in enumerate(
                zip(groups, specs))]}

    def _sat(self, hit) -> Result:
        x, y = hit
        return Result("sat", witness_x=x, witness_y=y, stats=self.stats, smt=self.smt)

    # ---- replay
    def replay(self, s: _Spec, xf: np.ndarray):
        """Exact check of a float point against whole disjuncts; (x, y) or None."""
        self.stats["replays"] += 1
        xf = np.clip(xf, s.lo_in, s.hi_in)
        x = [Fraction(float(v)) for v in xf]
        y = self.net.evaluate_exact(x)
        if self.fnet.piecewise_linear:
            ok = s.holds(x, y)
        else:
            import mpmath

            with mpmath.workdps(60):
                xs = [mpmath.mpf(v.numerator) / v.denominator for v in x]
                ok = any(all(_holds_margin(c, xs, y) for c in d.constraints) for d in s.ds)
        return (x, y) if ok else None

    # ---- search
    def _margin(self, s: _Spec, x: np.ndarray) -> np.ndarray:
        y = self.fnet.forward(x)
        r = s.rows_float(x, y)
        return s.margin(r) if r.shape[1] else np.full(len(x), np.inf)

    def _try(self, s: _Spec, pts: np.ndarray, limit: int = 3):
        """Replay the best float points whose margin looks non-negative."""
        if not len(s.rows):
            return self.replay(s, pts[0])
        m = self._margin(s, pts)
        order = np.argsort(-m)
        for i in order[:limit]:
            if m[i] < -1e-9:
                break
            hit = self.replay(s, pts[i])
            if hit:
                return hit
        return None

    def search(self, s: _Spec, seconds: float, starts: int = 128, samples: int = 8192):
        """Random points, then sign-gradient ascent of min_k r_k from the best of them with
        restarts until `seconds` run out; a replayed hit or None. Half of the points have
        some coordinates on a face of the box: violations often sit on its boundary, where
        uniform points and ascent from inside rarely arrive (ACAS Xu 1_9/prop_7)."""
        end = min(time.perf_counter() + seconds, self.deadline)
        lo, hi = s.lo_in, s.hi_in
        pts = self._points(lo, hi, samples)
        hit = self._try(s, np.vstack([pts, 0.5 * (lo + hi)[None]]))
        if hit or not len(s.rows):
            return hit
        best = pts[np.argsort(-self._margin(s, pts))[:starts]]
        hinge_starts = pts[np.argsort(self._hinge(s, pts))[:starts]]
        while True:
            hit, ends = self._descend(s, hinge_starts, lo, hi, end)
            if hit or time.perf_counter() > end:
                return hit
            hit = self._ascend(s, best, lo, hi, end)
            if hit or time.perf_counter() > end:
                return hit
            pts = self._points(lo, hi, samples // 2)
            best = pts[np.argsort(-self._margin(s, pts))[:starts]]
            # half fresh starts, half near the least violating end points (jittered)
            elite = ends[np.argsort(self._hinge(s, ends))[:starts // 8]]
            near = np.repeat(elite, 4, axis=0)
            scale = np.repeat([[0.05], [0.01], [0.002], [0.0004]], len(elite), axis=1).T
            near = np.clip(near + scale.reshape(-1, 1) * (hi - lo)
                           * self.rng.standard_normal(near.shape), lo, hi)
            hinge_starts = np.vstack([pts[np.argsort(self._hinge(s, pts))[:starts // 2]], near])

    def _hinge(self, s: _Spec, x: np.ndarray) -> np.ndarray:
        return s.hinge(s.rows_float(x, self.fnet.forward(x)), HINGE_TARGET)[0]

    def _descend(self, s: _Spec, x, lo, hi, end, iters: int = 150):
        """Projected Adam on the summed violation of all rows of the least violated
        disjunct (`_Spec.hinge`), steps scaled to the box: every constraint is pushed at
        once, where ascending the smallest row alone zigzags between the two sides of a thin
        band (|Y_1| <= r). Coordinates run onto the box's faces and stay there when the
        gradient pushes outward."""
        width = hi - lo
        m1 = np.zeros_like(x)
        m2 = np.zeros_like(x)
        lr = 0.05
        for it in range(1, iters + 1):
            if time.perf_counter() > end:
                break
            g, _ = self._grad(s, x, hinge=True)
            g = g * width  # in box units
            m1 = 0.9 * m1 + 0.1 * g
            m2 = 0.999 * m2 + 0.001 * g * g
            step = (m1 / (1 - 0.9 ** it)) / (np.sqrt(m2 / (1 - 0.999 ** it)) + 1e-30)
            x = np.clip(x + lr * width * step, lo, hi)
            if it % 10 == 0:
                hit = self._try(s, x)
                if hit:
                    return hit, x
                lr *= 0.8
        return self._try(s, x), x

    def _points(self, lo, hi, k: int) -> np.ndarray:
        """k points in the box: uniform, and (second half) each coordinate moved to a face
        with probability 1/2."""
        n = len(lo)
        pts = lo + (hi - lo) * self.rng.random((k, n))
        face = self.rng.random((k // 2, n)) < 0.5
        side = np.where(self.rng.random((k // 2, n)) < 0.5, lo, hi)
        pts[k - k // 2:] = np.where(face, side, pts[k - k // 2:])
        return pts

    def _ascend(self, s: _Spec, x, lo, hi, end, iters: int = 120):
        step = 0.2 * (hi - lo)
        for it in range(iters):
            if time.perf_counter() > end:
                break
            g, _ = self._grad(s, x)
            x = np.clip(x + step * np.sign(g), lo, hi)
            if it % 10 == 9:
                hit = self._try(s, x)
                if hit:
                    return hit
                step = step * 0.7
        return self._try(s, x)

    def _grad(self, s: _Spec, x: np.ndarray, hinge: bool = False):
        """Gradient of min_k r_k at each point (subgradient through ReLU); `hinge`: of
        minus the summed violation `_Spec.hinge` instead."""
        acts, pre = [x], []
        v = x
        for la in self.fnet.layers:
            z = v @ la.W.T + la.b
            pre.append(z)
            v = act_float(la, z)
            acts.append(v)
        r = s.rows_float(x, v)
        if hinge:
            _, w = s.hinge(r, HINGE_TARGET)
            gy, gx = -w @ s.Rf, -w @ s.D
        else:
            k = s.grad_row(r)
            gy = s.Rf[k]  # (B, n_out)
            gx = s.D[k].copy()
        g = gy
        for j in range(len(self.fnet.layers) - 1, -1, -1):
            la = self.fnet.layers[j]
            z = pre[j]
            if la.act == "relu":
                g = g * (z > 0)
            elif la.act == "leaky_relu":
                g = g * np.where(z > 0, 1.0, la.alpha)
            elif la.act == "sigmoid":
                sg = act_float(la, z)
                g = g * sg * (1 - sg)
            elif la.act == "tanh":
                g = g * (1 - np.tanh(z) ** 2)
            g = g @ la.W
        return g + gx, s.margin(r)

    # ---- two cores
    def _bab_parallel(self, specs):
        """Branch and bound of the disjuncts' boxes cut into pieces, on `workers` forked
        processes; yields (disjunct, outcome) with every witness replayed here again.
        Every piece must close for `unsat`; a piece that timed out yields "timeout".

        A worker spends at most `SLICE` seconds on a piece and hands back the boxes it left
        open, which are cut into new pieces: no worker idles while another holds all the
        hard boxes, and the box counts come back as the work goes. With a Dask cluster
        (`cluster`) the pieces are tasks on its workers instead."""
        from collections import deque

        pieces = [(k, s.lo, s.hi, 0) for k, s in enumerate(specs)]
        done = [(k, self.bab(s)) for k, s in enumerate(specs) if not s.rows]
        pieces = [p for p in pieces if specs[p[0]].rows]
        while pieces and len(pieces) < PIECES_PER_WORKER * self.workers:
            self.check_time()
            vols = [np.prod((h - l) / np.maximum(specs[k].hi - specs[k].lo, 1e-300))
                    for k, l, h, _ in pieces]
            k, lo, hi, node = pieces.pop(int(np.argmax(vols)))
            d = self._root_split(specs[k], lo, hi, node)
            if d is None:  # closed by one bound computation
                continue
            mid = 0.5 * (lo[d] + hi[d])
            hi1, lo2 = hi.copy(), lo.copy()
            hi1[d] = lo2[d] = mid
            (a,), (b,) = self._split(specs[k], [node], [d], [mid])
            pieces += [(k, lo, hi1, a), (k, lo2, hi, b)]
        yield from done
        pool = _DaskPool(self.cluster, self, specs) if self.cluster is not None else \
            _ForkPool(self, specs, self.workers)
        queue = deque((k, lo, hi, None, np.array([node], dtype=object))
                      for k, lo, hi, node in pieces)
        running: list = []
        try:
            while queue or running:
                while queue and len(running) < 2 * self.workers:
                    running.append(pool.submit(queue.popleft()))
                ready = [r for r in running if r.ready()]
                if not ready:
                    if self.time_left() < -1.0:
                        raise _Timeout
                    running[0].wait(0.02)
                    continue
                for r in ready:
                    running.remove(r)
                    k, res, stats, smt, tree = r.get()
                    for key, v in stats.items():
                        self.stats[key] = self.stats.get(key, 0) + v
                    if tree is not None:
                        self.trees.setdefault(k, SplitTree()).merge(tree)
                    for _name, text in smt:
                        self.smt.append((f"leaf{len(self.smt):05d}", text))
                    if isinstance(res, tuple) and res[0] == "more":
                        _, lo, hi, L, U, reason, ids, S = res
                        if reason is not None:
                            yield k, reason
                        n = max(1, min(2 * self.workers, len(lo) // 8))
                        for part in np.array_split(np.arange(len(lo)), n):
                            queue.appendleft((k, lo[part], hi[part],
                                              (L[part], U[part], S[part]), ids[part]))
                        continue
                    if isinstance(res, tuple):  # replayed in the worker; again here
                        x, _ = res
                        y = self.net.evaluate_exact(x)
                        if specs[k].holds(x, y):
                            yield k, (x, y)
                            return
                        res = "a worker's witness did not replay"
                    yield k, res
        finally:
            pool.close()

    def _root_split(self, s: _Spec, lo, hi, node=0):
        """The dimension branch and bound would split the box along, None if it closes."""
        lo1, _, ub, G, bounds, _ = self._bound(s, lo[None], hi[None], None,
                                               np.array([node], dtype=object))
        if not len(lo1):
            return None
        row = s.split_row(ub)
        if SMEAR == "interval" and self.fnet.piecewise_linear:
            g = gradient_magnitude(self.fnet, bounds, s.spec.W[row], s.Db[row])
        else:
            g = np.abs(G[np.arange(1), row])
        score = g[0] * (hi - lo)
        if not np.any(score > 0):
            score = (hi - lo) / np.maximum(s.hi - s.lo, 1e-300)
        return int(np.argmax(score))

    # ---- branch and bound
    def bab(self, s: _Spec, lo=None, hi=None, prior=None, until: float | None = None,
            ids=None):
        """True (all closed), a witness (x, y), or a reason string; `lo`, `hi`: a part of
        the disjunct's box to cover instead of all of it, or a batch of boxes (P, n) with
        `prior` their certified pre-activation bounds (L, U) and `ids` their nodes in the
        split tree (and, third, their phase constraints, `_bound`'s `phase`). `until`: a
        clock time after which the boxes still open are handed back, `("more", lo, hi, L, U,
        reason, ids, phases)`, so that the parallel driver can share them out."""
        if not s.rows:  # the input constraints alone: the box is the region
            hit = self.replay(s, 0.5 * (s.lo_in + s.hi_in))
            return hit if hit else "input constraints only, no point found"
        nh = sum(la.W.shape[0] for la in self.fnet.hidden)
        lo = s.lo if lo is None else lo
        hi = s.hi if hi is None else hi
        stack_lo = [lo if lo.ndim == 2 else lo[None]]
        stack_hi = [hi if hi.ndim == 2 else hi[None]]
        P = len(stack_lo[0])
        if prior is None:  # certified pre-activation bounds (parents')
            prior = (np.full((P, nh), -np.inf), np.full((P, nh), np.inf))
        stack_L, stack_U = [prior[0]], [prior[1]]
        stack_S = [prior[2] if len(prior) > 2 else np.zeros((P, nh), dtype=np.int8)]
        stack_id = [_ROOT if ids is None else ids]
        width0 = np.maximum(s.hi - s.lo, 1e-300)
        open_reason = None
        n_rounds = 0
        while stack_lo:
            self.check_time()
            if until is not None and n_rounds and time.perf_counter() > until:
                return ("more", np.concatenate(stack_lo), np.concatenate(stack_hi),
                        np.concatenate(stack_L), np.concatenate(stack_U), open_reason,
                        np.concatenate(stack_id), np.concatenate(stack_S))
            lo = np.concatenate(stack_lo)
            hi = np.concatenate(stack_hi)
            PL, PU = np.concatenate(stack_L), np.concatenate(stack_U)
            nid = np.concatenate(stack_id)
            PS = np.concatenate(stack_S)
            stack_lo, stack_hi, stack_L, stack_U, stack_id = [], [], [], [], []
            stack_S = []
            if len(lo) > BATCH:  # depth first: keep the rest for later
                stack_lo.append(lo[:-BATCH])
                stack_hi.append(hi[:-BATCH])
                stack_L.append(PL[:-BATCH])
                stack_U.append(PU[:-BATCH])
                stack_id.append(nid[:-BATCH])
                stack_S.append(PS[:-BATCH])
                lo, hi, PL, PU = lo[-BATCH:], hi[-BATCH:], PL[-BATCH:], PU[-BATCH:]
                nid, PS = nid[-BATCH:], PS[-BATCH:]
            n_rounds += 1
            self.stats["boxes"] += len(lo)
            prior = Bounds.unflat(self.fnet, PL, PU)
            lo, hi, ub, G, bounds, nid = self._bound(s, lo, hi, prior, nid, PS)
            PS = self.open_phase
            comb = self.comb_rows
            if not len(lo):
                continue
            unstable = bounds.unstable(self.fnet)
            ctr = 0.5 * (lo + hi)
            row = s.split_row(ub)
            g = G[np.arange(len(lo)), row]
            corner = np.where(g > 0, hi, lo)  # where the row's linear bound is largest
            hit = self._try(s, np.clip(np.vstack([ctr, corner]), s.lo_in, s.hi_in), limit=2)
            if hit:
                return hit
            if n_rounds % 10 == 0 and self.time_left() > 1:
                hit = self.search_boxes(s, lo, hi, ub)
                if hit:
                    return hit
            # z3 for boxes with few unstable neurons
            to_split = np.ones(len(lo), dtype=bool)
            if self.use_z3 and self.fnet.piecewise_linear:
                for i in np.nonzero(unstable <= Z3_MAX_UNSTABLE)[0][:4]:
                    if self.time_left() < 0.5 or self.stats.get("z3_seconds", 0.0) > \
                            Z3_SHARE * self.budget:
                        break
                    res = self.z3_leaf(s, lo[i], hi[i], bounds.take(np.array([i])))
                    if res == "unsat":
                        to_split[i] = False
                        if self.certify:
                            self.trees.setdefault(s.key, SplitTree()).closed[nid[i]] = \
                                {"by": "z3"}
                    elif isinstance(res, tuple):
                        return res
            lo, hi, ub, G = lo[to_split], hi[to_split], ub[to_split], G[to_split]
            bounds, nid, PS = bounds.take(to_split), nid[to_split], PS[to_split]
            if not len(lo):
                continue
            BL, BU = bounds.flat()
            row = s.split_row(ub)
            if SMEAR == "interval" and self.fnet.piecewise_linear and comb is not None \
                    and COMB_SMEAR:  # the combined row: the one that is to close the box
                g = gradient_magnitude(self.fnet, bounds, comb[0][to_split],
                                       comb[1][to_split])
            elif SMEAR == "interval" and self.fnet.piecewise_linear:
                g = gradient_magnitude(self.fnet, bounds, s.spec.W[row], s.Db[row])
            else:
                g = np.abs(G[np.arange(len(lo)), row])  # (B, n)
            width = hi - lo
            score = g * width
            score = np.where(width > MIN_WIDTH * width0, score, -1.0)
            dim = np.argmax(score, axis=1)
            if self.phase_splits and comb is not None:
                # the neuron whose chord offset costs the combined row most (only where a
                # disjunct's rows are combined: single rows, as in ACAS Xu, closed no faster)
                rscore = relu_scores(self.fnet, bounds, comb[0][to_split])
                flat = np.argmax(rscore, axis=1)
                best_r = rscore[np.arange(len(lo)), flat]
                target = comb[2][to_split]  # the bound to be pushed below 0
                phase = (best_r > 0) & (best_r >= RELU_RATIO * target) & (
                    unstable[to_split] <= RELU_MAX_UNSTABLE)
            else:
                phase = np.zeros(len(lo), dtype=bool)
                flat = np.zeros(len(lo), dtype=np.int64)
            stuck = score[np.arange(len(lo)), dim] <= 0
            if stuck.any():
                score2 = np.where(width > MIN_WIDTH * width0, width / width0, -1.0)
                dim = np.where(stuck, np.argmax(score2, axis=1), dim)
                if np.any(score2[np.arange(len(lo)), dim] <= 0):
                    open_reason = "boxes too small to split and not closed"
                    keepable = score2[np.arange(len(lo)), dim] > 0
                    keepable |= phase
                    lo, hi, dim = lo[keepable], hi[keepable], dim[keepable]
                    nid, PS = nid[keepable], PS[keepable]
                    BL, BU, score = BL[keepable], BU[keepable], score[keepable]
                    phase, flat = phase[keepable], flat[keepable]
            if not len(lo):
                continue
            if phase.any():
                self._split_phases(s, lo[phase], hi[phase], BL[phase], BU[phase],
                                   nid[phase], flat[phase], PS[phase], stack_lo, stack_hi,
                                   stack_L, stack_U, stack_id, stack_S)
                keep = ~phase
                lo, hi, dim, nid = lo[keep], hi[keep], dim[keep], nid[keep]
                PS = PS[keep]
                BL, BU = BL[keep], BU[keep]
                if not len(lo):
                    continue
            idx = np.arange(len(lo))
            mid = 0.5 * (lo[idx, dim] + hi[idx, dim])
            lo2, hi2 = lo.copy(), hi.copy()
            hi[idx, dim] = mid
            lo2[idx, dim] = mid
            if WARM < 2:  # halves of a box start afresh (see WARM)
                for i in nid:
                    self.warm.pop(i, None)
            left, right = self._split(s, nid, dim, mid)
            stack_id.append(np.concatenate([left, right]))
            stack_lo.append(np.concatenate([lo, lo2]))
            stack_hi.append(np.concatenate([hi, hi2]))
            stack_L.append(np.concatenate([BL, BL]))
            stack_U.append(np.concatenate([BU, BU]))
            stack_S.append(np.concatenate([PS, PS]))
            self.stats["open_volume"] = float(sum(
                np.prod((h - l) / width0, axis=1).sum() for l, h in zip(stack_lo, stack_hi)))
        return True if open_reason is None else open_reason

    def _split_phases(self, s: _Spec, lo, hi, BL, BU, nid, flat, PS, *stacks) -> None:
        """Split boxes on the phase of one unstable neuron each (`flat`, an index into the
        concatenated hidden layers): the same box twice, once with the neuron's upper bound
        clamped to 0 (inactive: its output is 0, or alpha z) and once with its lower bound
        clamped to 0 (active: the identity). The clamped bounds are the children's prior
        bounds, so every later bound computation (forward, CROWN, α-CROWN, z3 leaf) works
        on the box intersected with the phase, and the following layers tighten; the
        children's phase constraints `PS` gain the neuron's side (its multiplier in the
        combination stage)."""
        stack_lo, stack_hi, stack_L, stack_U, stack_id, stack_S = stacks
        self.stats["phase_splits"] = self.stats.get("phase_splits", 0) + len(lo)
        rows = np.arange(len(lo))
        off, inactive, active = BU.copy(), BL.copy(), BL.copy()
        off[rows, flat] = np.minimum(off[rows, flat], 0.0)
        active[rows, flat] = np.maximum(active[rows, flat], 0.0)
        if self.certify:
            cuts = np.cumsum([la.W.shape[0] for la in self.fnet.hidden])
            layer = np.searchsorted(cuts, flat, side="right")
            neuron = flat - np.concatenate([[0], cuts])[layer]
            left, right = self.trees.setdefault(s.key, SplitTree()).split_relu(
                nid, layer + 1, neuron)
        else:
            left, right = SplitTree.children(nid)
        stack_id.append(np.concatenate([left, right]))
        stack_lo.append(np.concatenate([lo, lo]))
        stack_hi.append(np.concatenate([hi, hi]))
        stack_L.append(np.concatenate([inactive, active]))
        stack_U.append(np.concatenate([off, BU]))
        S_off, S_on = PS.copy(), PS.copy()
        S_off[rows, flat] = -1
        S_on[rows, flat] = 1
        stack_S.append(np.concatenate([S_off, S_on]))

    def _split(self, s: _Spec, ids, dims, mids):
        """Children's node ids of boxes split along `dims` at `mids` (recorded when
        certifying)."""
        if not self.certify:
            return SplitTree.children(ids)
        return self.trees.setdefault(s.key, SplitTree()).split(ids, dims, mids)

    def _bound(self, s: _Spec, lo, hi, prior=None, ids=None, phase=None):
        """Bounds on a batch; returns the boxes left open with their bounds and node ids
        (`ids`, the boxes' nodes in the split tree; the closed ones are recorded there).
        `phase` (B, hidden neurons) int8: the boxes' phase constraints (+1: pre-activation
        >= 0, -1: <= 0, 0: none), whose multipliers the combination stage optimises; the
        open boxes' are left in `self.open_phase`. When the combination stage ran,
        `self.comb_rows` holds the open boxes' combined rows of the first multi-row disjunct
        (W (B, m), D (B, n), bound (B,)), else None."""
        self.comb_rows = None
        ids = _ROOT if ids is None else ids
        nh = sum(la.W.shape[0] for la in self.fnet.hidden)
        ph = np.zeros((len(lo), nh), dtype=np.int8) if phase is None else phase
        box = Box(lo, hi)
        fwd = forward_bounds(self.fnet, box, prior)
        ub, G = backward_bound(s.spec, s.Db, s.EDb, fwd, box, self.fnet.hidden)
        keep = self._record(s, ids, ub, empty=_empty(fwd))
        self.open_phase = ph[keep]
        if not keep.any() or len(self.fnet.hidden) < 2:
            return lo[keep], hi[keep], ub[keep], G[keep], fwd.take(keep), ids[keep]
        lo, hi, ids, ph = lo[keep], hi[keep], ids[keep], ph[keep]
        box = Box(lo, hi)
        bounds = forward_bounds(self.fnet, box, fwd.take(keep), tighten=True)
        ub, G = best_backward_bound(s.spec, s.Db, s.EDb, bounds, box, self.fnet.hidden)
        keep = self._record(s, ids, ub, empty=_empty(bounds))
        self.open_phase = ph[keep]
        if not keep.any() or not ALPHA_ITERS or not self.fnet.piecewise_linear:
            return lo[keep], hi[keep], ub[keep], G[keep], bounds.take(keep), ids[keep]
        lo, hi, ub, G, bounds = lo[keep], hi[keep], ub[keep], G[keep], bounds.take(keep)
        ids, ph = ids[keep], ph[keep]
        box = Box(lo, hi)
        if TIGHTEN_ITERS:
            bounds = tighten_layers(self.fnet, box, bounds, iters=TIGHTEN_ITERS,
                                    last=max(len(self.fnet.hidden) - TIGHTEN_SKIP, 1))
            empty = _empty(bounds)
            if empty.any():  # a phase split's side contradicts the tightened bounds
                keep = self._record(s, ids, np.full_like(ub, np.inf), empty=empty)
                lo, hi, ub, G, bounds = lo[keep], hi[keep], ub[keep], G[keep], \
                    bounds.take(keep)
                ids, ph = ids[keep], ph[keep]
                self.open_phase = ph
                box = Box(lo, hi)
                if not len(lo):
                    return lo, hi, ub, G, bounds, ids
        if ROW_ALPHA or len(s.multi) < len(s.ds):  # else the combinations below do it
            betas = optimize_betas(s.spec, s.Db, bounds, box, self.fnet.hidden,
                                   iters=2 * ALPHA_ITERS)
            ub2, G2 = backward_bound(s.spec, s.Db, s.EDb, bounds, box, self.fnet.hidden,
                                     betas=betas)
            better = ub2 < ub
            ub = np.where(better, ub2, ub)
            G = np.where(better[:, :, None], G2, G)
        else:  # the combination below sees all rows: one slope choice for the single rows
            ub, G = best_backward_bound(s.spec, s.Db, s.EDb, bounds, box, self.fnet.hidden,
                                        modes=ROW_MODES)
        keep = self._record(s, ids, ub)
        self.open_phase = ph[keep]
        if not keep.any() or not s.multi or not COMB_ITERS:
            return lo[keep], hi[keep], ub[keep], G[keep], bounds.take(keep), ids[keep]
        lo, hi, ub, G, bounds = lo[keep], hi[keep], ub[keep], G[keep], bounds.take(keep)
        ids, ph = ids[keep], ph[keep]
        box = Box(lo, hi)
        base = FLayer(W=s.base.W, b=s.base.b, EW=s.base.EW, Eb=s.base.Eb, exact=None, act=None)
        sign = self._layer_signs(ph) if BETA and ph.any() else None
        comb = optimize_combination(base, s.D, s.multi, bounds, box, self.fnet.hidden,
                                    iters=COMB_ITERS + (BETA_ITERS if sign else 0),
                                    sign=sign, warm=self._warm_start(s, ids, bounds))
        signed = comb.signed(sign) if sign else None
        cub = s.combined_bound(self.fnet, comb.lam, comb.slopes, bounds, box, signed)
        if signed is not None:  # keep beta = 0 where the multipliers did not help
            cub0 = s.combined_bound(self.fnet, comb.lam, comb.slopes, bounds, box)
            worse = cub0 < cub
            cub = np.where(worse, cub0, cub)
            comb.mults = [None if a is None else np.where(worse[:, :, None], 0.0, a)
                          for a in comb.mults]
            self.stats["beta_closed"] = self.stats.get("beta_closed", 0) + int(
                np.sum((cub < 0) & (cub0 >= 0)))
        self.stats["comb_closed"] = self.stats.get("comb_closed", 0) + int(np.sum(cub < 0))
        mults = self._flat_mults(comb, ph) if signed is not None else None
        keep = self._record(s, ids, ub, cub, comb.lam, mults=mults)
        self.open_phase = ph[keep]
        lam0 = comb.lam[keep, 0, :]
        self.comb_rows = (lam0 @ s.base.W, lam0 @ s.D, cub[keep, 0])
        if WARM:
            for i, state in zip(ids[keep], _rows(comb.take(keep))):
                self.warm[i] = [state, 2]  # for the two children, 2i + 1 and 2i + 2
        return lo[keep], hi[keep], ub[keep], G[keep], bounds.take(keep), ids[keep]

    def _layer_signs(self, ph) -> list:
        """The boxes' phase constraints (B, hidden neurons) cut per hidden layer (B, m)."""
        cuts = np.cumsum([la.W.shape[0] for la in self.fnet.hidden])[:-1]
        return [a.astype(np.float64) for a in np.split(ph, cuts, axis=1)]

    def _flat_mults(self, comb, ph) -> np.ndarray:
        """Per box, multi-row disjunct and hidden neuron, the multiplier of its phase
        constraint (0 where it has none)."""
        B, G = comb.lam.shape[:2]
        out = []
        for la, a in zip(self.fnet.hidden, comb.mults):
            out.append(np.zeros((B, G, la.W.shape[0])) if a is None else a)
        return np.concatenate(out, axis=2) * (ph != 0)[:, None, :]

    def _warm_start(self, s: _Spec, ids, bounds: Bounds):
        """The parents' optimised weights, slopes and multipliers for the boxes that have
        them (CROWN's starting point for the others), or None if none has."""
        if not WARM:
            return None
        found = []
        for b, i in enumerate(ids):
            rec = self.warm.get((int(i) - 1) // 2) if i else None
            if rec is not None:
                found.append((b, rec[0]))
                rec[1] -= 1
                if rec[1] <= 0:
                    del self.warm[(int(i) - 1) // 2]
        if not found:
            return None
        init = initial_combination(s.base.W.shape[0], s.multi, bounds, self.fnet.hidden)
        mults = list(init.mults)
        for b, st in found:
            init.theta[b] = st.theta
            for j, a in enumerate(st.slopes):
                init.slopes[j][b] = a
            for j, a in enumerate(st.mults):
                if a is not None:
                    if mults[j] is None:
                        mults[j] = np.zeros_like(init.slopes[j])
                    mults[j][b] = a
        init.mults = mults
        return init

    def _record(self, s: _Spec, ids, ub, cub=None, lam=None, empty=None,
                mults=None) -> np.ndarray:
        """The boxes still open; the closed ones go into the split tree with their rows.
        `empty`: boxes where some neuron's certified bounds contradict each other (l > u:
        a phase split's side that no point of the box takes), closed as such."""
        keep = ~s.closed(ub, cub)
        if empty is not None and empty.any():
            self.stats["empty"] = self.stats.get("empty", 0) + int(np.sum(empty))
            if self.certify:
                tree = self.trees.setdefault(s.key, SplitTree())
                tree.closed.update((i, {"by": "empty"}) for i in ids[empty])
            keep |= empty  # recorded above, not again below
            shut = ~keep
            keep &= ~empty
        else:
            shut = ~keep
        if self.certify and shut.any():
            tree = self.trees.setdefault(s.key, SplitTree())
            hows = s.closing(ub[shut], None if cub is None else cub[shut],
                             None if lam is None else lam[shut],
                             None if mults is None else mults[shut])
            tree.closed.update(zip(ids[shut], hows))
        return keep

    def search_boxes(self, s: _Spec, lo, hi, ub):
        """Gradient ascent started inside the open boxes that look worst (largest bound)."""
        k = min(len(lo), 64)
        pick = np.argsort(-s.worst(ub))[:k]
        x = lo[pick] + (hi[pick] - lo[pick]) * self.rng.random((k, lo.shape[1]))
        x = np.clip(x, s.lo_in, s.hi_in)
        end = min(time.perf_counter() + 0.5, self.deadline)
        return self._ascend(s, x, s.lo_in, s.hi_in, end, iters=40)

    # ---- z3 leaves
    def z3_leaf(self, s: _Spec, lo, hi, bounds: Bounds | None = None):
        """z3 on one box; `bounds`: certified intervals of the box (its tightened ones, so
        the query has only the neurons the count said were unstable), else a forward pass."""
        from .z3run import run_z3

        self.stats["z3_leaves"] += 1
        if bounds is None:
            bounds = forward_bounds(self.fnet, Box(lo[None], hi[None]))
        text = leaf_query(self, s, lo, hi, bounds)
        t0 = time.perf_counter()
        res = run_z3(text, min(Z3_LEAF_TIMEOUT, max(self.time_left() - 0.2, 0.1)))
        self.stats["z3_seconds"] = round(self.stats.get("z3_seconds", 0.0)
                                         + time.perf_counter() - t0, 2)
        self.stats[f"z3_{res.answer}"] = self.stats.get(f"z3_{res.answer}", 0) + 1
        if res.answer == "unsat":
            self.smt.append((f"leaf{len(self.smt):05d}", text))
            return "unsat"
        if res.answer == "sat" and res.model is not None:
            xs = [res.model.get(f"X_{i}") for i in range(self.fnet.n_in)]
            if all(v is not None for v in xs):
                x = xs
                y = self.net.evaluate_exact(x)
                if s.holds(x, y):
                    return (x, y)
        return res.answer


_FORKED = None  # (engine, specs) for the forked workers of `Engine._bab_parallel`


class _ForkPool:
    """Pieces on forked processes that inherit the engine (`_FORKED`)."""

    def __init__(self, eng, specs, workers: int) -> None:
        import multiprocessing as mp

        global _FORKED
        _FORKED = (eng, specs)
        self.pool = mp.get_context("fork").Pool(workers)

    def submit(self, piece):
        return self.pool.apply_async(_piece_worker, (piece,))  # ready() / wait(t) / get()

    def close(self) -> None:
        global _FORKED
        self.pool.terminate()
        self.pool.join()
        _FORKED = None


class _DaskPool:
    """Pieces as tasks of a Dask distributed cluster: the engine and the disjuncts are sent
    to every worker once; each task runs one piece for at most `SLICE` seconds, like a forked
    worker, and its witness is replayed here again before it counts."""

    def __init__(self, client, eng, specs) -> None:
        self.client, self.eng = client, eng
        self.state = client.scatter([(eng, specs)], broadcast=True, hash=False)[0]
        self.futures: list = []

    def submit(self, piece):
        fut = self.client.submit(_piece_task, self.state, piece, self.eng.time_left(),
                                 pure=False)
        self.futures.append(fut)
        return _DaskHandle(fut)

    def close(self) -> None:
        self.client.cancel(self.futures + [self.state])


class _DaskHandle:
    def __init__(self, fut) -> None:
        self.fut = fut

    def ready(self) -> bool:
        return self.fut.done()

    def wait(self, seconds: float) -> None:
        time.sleep(seconds)

    def get(self):
        return self.fut.result()


def _cluster_workers(client) -> int:
    try:
        return max(1, sum(w.get("nthreads", 1) for w in
                          client.scheduler_info()["workers"].values()))
    except Exception:  # noqa: BLE001 - a scheduler that does not say: assume two
        return 2


def _piece_task(state, piece, seconds: float):
    """`_piece_worker` on a cluster worker: a copy of the engine with its own clock (the
    deadline is counted from here) and its own statistics."""
    import copy

    global _FORKED
    eng, specs = state
    eng = copy.copy(eng)
    eng.deadline = time.perf_counter() + seconds
    _FORKED = (eng, specs)
    return _piece_worker(piece)


def _piece_worker(piece):
    """One piece's branch and bound in a forked worker for at most `SLICE` seconds:
    (disjunct, outcome, stats, smt, split tree); the outcome may be the boxes left open."""
    k, lo, hi, prior, ids = piece
    eng, specs = _FORKED
    eng.stats = {"boxes": 0, "z3_leaves": 0, "replays": 0}
    eng.smt = []
    eng.trees = {}
    eng.rng = np.random.default_rng(abs(hash((float(lo.sum()), float(hi.sum())))) % 2**32)
    try:
        with single_thread_blas():
            res = eng.bab(specs[k], lo, hi, prior, until=time.perf_counter() + SLICE, ids=ids)
    except _Timeout:
        res = "timeout"
    eng.stats.pop("open_volume", None)
    return k, res, eng.stats, eng.smt, eng.trees.get(k)


def _rows(comb: Combination):
    """The boxes' rows of a Combination, one by one (each without the batch axis)."""
    for b in range(comb.lam.shape[0]):
        yield Combination(comb.lam[b], [a[b] for a in comb.slopes],
                          [None if a is None else a[b] for a in comb.mults], comb.theta[b])


def _empty(bounds: Bounds) -> np.ndarray:
    """Boxes where some pre-activation's certified lower bound exceeds its upper bound: no
    point of the box meets the phases its splits fixed (the bounds hold wherever they do)."""
    out = np.zeros(bounds.l[0].shape[0], dtype=bool) if bounds.l else None
    for l, u in zip(bounds.l, bounds.u):
        out |= np.any(l > u, axis=1)
    return out


def relu_scores(fnet: FloatNet, bounds: Bounds, rows: np.ndarray) -> np.ndarray:
    """Per box and unstable neuron (B, all hidden neurons, concatenated): what the neuron's
    relaxation costs the bound of the row `rows` (B, m) on the last hidden layer, the
    intercept of its upper chord times the row's positive coefficient on it plus a quarter
    of the lower line's gap for a negative one (BaBSR's estimate). Float, a heuristic that
    chooses the phase split; 0 for stable neurons."""
    lam = rows
    out = []
    for j in range(len(fnet.hidden) - 1, -1, -1):
        la = fnet.hidden[j]
        l, u = bounds.l[j], bounds.u[j]
        if la.act in ("relu", "leaky_relu"):
            alpha = la.alpha if la.act == "leaky_relu" else 0.0
            unst = (l < 0) & (u > 0)
            with np.errstate(divide="ignore", invalid="ignore"):
                s = np.where(unst, (u - alpha * l) / (u - l), 1.0)
            t = np.where(unst, -(s - alpha) * l, 0.0)
            beta = np.where(u > -l, 1.0, alpha)
            pos = np.maximum(lam, 0.0)
            neg = np.minimum(lam, 0.0)
            gap = (1.0 - alpha) * np.minimum(u, -l)
            out.append(np.where(unst, pos * t - 0.25 * neg * gap, 0.0))
            s_pos = np.where(unst, s, np.where(l >= 0, 1.0, alpha))
            s_neg = np.where(unst, beta, np.where(l >= 0, 1.0, alpha))
            lam = pos * s_pos + neg * s_neg
        else:
            out.append(np.zeros_like(l))
        lam = lam @ la.W
    return np.concatenate(out[::-1], axis=1)


def gradient_magnitude(fnet: FloatNet, bounds: Bounds, rows: np.ndarray, D: np.ndarray):
    """Bound of |d row / d x_i| over each box (ReluVal's smear): the row's gradient pushed
    back through the layers in interval arithmetic, unstable ReLUs contributing [alpha, 1].
    Float, a heuristic for choosing the split: it sees the inputs that make neurons unstable,
    which the single linear coefficient of a CROWN bound can miss."""
    gl = gu = rows  # (B, m)
    for j in range(len(fnet.hidden) - 1, -1, -1):
        la = fnet.hidden[j]
        if la.act in ("relu", "leaky_relu"):
            alpha = la.alpha if la.act == "leaky_relu" else 0.0
            l, u = bounds.l[j], bounds.u[j]
            dlo = np.where(l >= 0, 1.0, alpha)
            dhi = np.where(u <= 0, alpha, 1.0)
            gl, gu = np.minimum(gl * dlo, gl * dhi), np.maximum(gu * dlo, gu * dhi)
        elif la.act is not None:
            raise Unsupported("interval gradients of smooth activations")
        Wp, Wn = np.maximum(la.W, 0.0), np.minimum(la.W, 0.0)
        gl, gu = gl @ Wp + gu @ Wn, gu @ Wp + gl @ Wn
    return np.maximum(np.abs(gl + D), np.abs(gu + D))


def _holds_margin(c, xs, ys) -> bool:
    """A constraint surely holds at a 60-digit point: lhs below -1e-30."""
    import mpmath

    def mp(q: Fraction):
        return mpmath.mpf(q.numerator) / q.denominator

    v = mp(c.const) + mpmath.fsum(mp(a) * xs[i] for i, a in c.x) + mpmath.fsum(
        mp(a) * ys[j] for j, a in c.y)
    return v < -mpmath.mpf(10) ** -30


def _lit(q: Fraction) -> str:
    body = f"{abs(q.numerator)}.0" if q.denominator == 1 else \
        f"(/ {abs(q.numerator)}.0 {q.denominator}.0)"
    return f"(- {body})" if q < 0 else body


def _linear(terms: list[tuple[Fraction, str]], const: Fraction) -> str:
    parts = [name if c == 1 else f"(* {_lit(c)} {name})" for c, name in terms if c != 0]
    if const != 0 or not parts:
        parts.append(_lit(const))
    return parts[0] if len(parts) == 1 else "(+ " + " ".join(parts) + ")"


def leaf_query(eng: Engine, s: _Spec, lo, hi, bounds) -> str:
    """Exact SMT-LIB for one box: the network with certified-stable neurons fixed."""
    fnet = eng.fnet
    lines = [
        "; VNN-LIB disjunct restricted to a box; unsat means no counterexample in the box",
        "; neurons whose phase is fixed on the box by certified float bounds are linear,",
        "; the others are exact ite terms with their certified bounds asserted",
        "(set-logic QF_LRA)",
    ]
    n_in = fnet.n_in
    for i in range(n_in):
        lines.append(f"(declare-const X_{i} Real)")
    for i in range(n_in):
        lines.append(f"(assert (and (<= {_lit(Fraction(float(lo[i])))} X_{i}) "
                     f"(<= X_{i} {_lit(Fraction(float(hi[i])))})))")
    prev = [f"X_{i}" for i in range(n_in)]
    zero_prev = [False] * n_in
    for j, la in enumerate(fnet.layers):
        W, b = la.exact.W, la.exact.b
        last = j == len(fnet.layers) - 1
        cur, zero_cur = [], []
        for i in range(W.shape[0]):
            terms = [(W[i, p], prev[p]) for p in range(W.shape[1]) if not zero_prev[p]]
            body = _linear(terms, b[i])
            if last:
                lines.append(f"(define-fun Y_{i} () Real {body})")
                continue
            z, a = f"z{j + 1}_{i}", f"a{j + 1}_{i}"
            lines.append(f"(define-fun {z} () Real {body})")
            l, u = float(bounds.l[j][0, i]), float(bounds.u[j][0, i])
            alpha = la.alpha_exact or Fraction(0)
            finite = np.isfinite(l) and np.isfinite(u)
            if finite and l >= 0:
                cur.append(z)
                zero_cur.append(False)
            elif finite and u <= 0:
                if alpha == 0:
                    cur.append("0.0")
                    zero_cur.append(True)
                else:
                    lines.append(f"(define-fun {a} () Real (* {_lit(alpha)} {z}))")
                    cur.append(a)
                    zero_cur.append(False)
            else:
                neg = "0.0" if alpha == 0 else f"(* {_lit(alpha)} {z})"
                lines.append(f"(define-fun {a} () Real (ite (> {z} 0.0) {z} {neg}))")
                if finite:
                    lines.append(f"(assert (and (<= {_lit(Fraction(l))} {z}) "
                                 f"(<= {z} {_lit(Fraction(u))})))")
                cur.append(a)
                zero_cur.append(False)
            if l == 0.0 or u == 0.0:  # a phase split's side (any certified bound holds)
                lines.append(f"(assert ({'>=' if l == 0.0 else '<='} {z} 0.0))")
        prev, zero_prev = cur, zero_cur
    cases = []
    for d in s.ds:
        atoms = []
        for c in d.constraints:
            terms = [(a, f"X_{i}") for i, a in c.x] + [(a, f"Y_{j}") for j, a in c.y]
            atoms.append(f"({'<' if c.strict else '<='} {_linear(terms, c.const)} 0.0)")
        cases.append(atoms)
    if len(cases) == 1:
        lines += [f"(assert {a})" for a in cases[0]]
    else:  # disjuncts sharing this box: any of them
        lines.append("(assert (or " + " ".join(f"(and {' '.join(a)})" for a in cases) + "))")
    lines.append("(check-sat)")
    return "\n".join(lines) + "\n"


def decide(net: OnnxNet, prop: Property, timeout: float, **kw) -> Result:
    """Answer the VNN-LIB question for the network: unsat / sat (witness) / unknown / timeout."""
    try:
        eng = Engine(net, prop, timeout, **kw)
    except Unsupported as exc:
        return Result("unknown", reason=str(exc))
    with single_thread_blas():
        return eng.run()


__all__ = ["Engine", "FLayer", "Result", "decide"]
