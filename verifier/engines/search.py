"""Counterexample search for bound obligations: corners, random samples, gradient steps.

Everything here is float64 and only *proposes* points: a candidate becomes a counterexample
when `replay` confirms it exactly or at 60 digits. Candidates are returned as exact
`Fraction`s inside the box (the shortest decimal of the float, clamped to the box), best first.
The slack of a point is the smallest over goal atoms of how far the atom is from failing
(positive: holds with room); points whose hypotheses fail in floats are ignored.

Network terms: when the atoms read outputs or input derivatives of a network with concrete
weights (recorded by `obligations.build_model` in `Program.network_terms`), those values come
from `CompiledNetwork` (one matmul per dense layer, batched over samples) and only the small
rest of the program slice is compiled line by line; gradients chain the rest's gradient with
the network's vector-Jacobian and input Hessian-vector products. Otherwise the whole slice is
compiled line by line (`compile.py`), which costs time per scalar operation at width.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import product

import numpy as np
import sympy as sp

from ..obligations import Obligation
from ..symbolic.compile import compile_numpy, compile_value_and_grad
from ..symbolic.numeric import CompiledNetwork, _blas_limit
from ..symbolic.program import Program

CORNER_CAP = 256
SCALE_UNBOUNDED = 10.0


@dataclass
class SearchResult:
    """Best points found (exact, inside the box, worst slack first) and the worst slack."""

    candidates: list[dict[sp.Symbol, Fraction]] = field(default_factory=list)
    slack: float = float("inf")
    point: dict[sp.Symbol, float] | None = None
    evaluations: int = 0


def _slack(op: str, d: np.ndarray) -> np.ndarray:
    if op in ("<=", "<"):
        return -d
    if op in (">=", ">"):
        return d
    return -np.abs(d) if op == "==" else np.abs(d)


def _to_fraction(x: float, lo, hi) -> Fraction:
    q = Fraction(repr(float(x))) if np.isfinite(x) else Fraction(0)
    if lo is not None and q < lo:
        q = Fraction(lo)
    if hi is not None and q > hi:
        q = Fraction(hi)
    return q


FD_LEAVES = 4  # leaves up to which the program path steps by finite differences


class Searcher:
    """Compiled slack functions of one obligation, reusable on many boxes.

    Atoms over outputs and input derivatives of networks with concrete weights (recorded in
    `program.network_terms`) are evaluated with matrix-level network code (`path` is
    "matrix"); everything else, or everything when `matrix=False`, with the scalar program
    compiled line by line (`path` is "program"). Both give the same numbers.
    """

    def __init__(self, ob: Obligation, program: Program, *, matrix: bool = True) -> None:
        self.ob = ob
        atoms = list(ob.goal) + list(ob.hypotheses)
        self.diffs = [a.lhs - a.rhs for a in atoms]
        self.leaves = sorted(program.leaves(self.diffs), key=lambda s: s.name)
        self.domain = {v.symbol: (v.lo, v.hi) for v in ob.variables}
        net = NetworkTerms.build(program, self.leaves, self.diffs, len(ob.goal)) if matrix \
            else None
        self._program = program
        if net is not None:
            self.path, self.f, self._grads = "matrix", net.values, net.grads
            return
        self.path = "program"
        self.f = compile_numpy(program, self.leaves, self.diffs)
        self._grads = None  # compiled on first use: sympy's diff takes seconds on laws with
        # sqrt and division, and with few leaves finite differences serve the search as well

    @property
    def grads(self) -> list:
        """Per goal atom its compiled (value, gradient) function, or None."""
        if self._grads is None:
            self._grads = [_value_and_grad(self._program, self.leaves, a.lhs - a.rhs)
                           for a in self.ob.goal]
        return self._grads

    def bounds(self, box: dict | None) -> list[tuple]:
        """(lo, hi) per leaf as Fractions or None, from `box` else the obligation's domain."""
        out = []
        for s in self.leaves:
            lo, hi = (box or {}).get(s, self.domain.get(s, (None, None)))
            out.append((None if lo is None else Fraction(str(lo)),
                        None if hi is None else Fraction(str(hi))))
        return out

    def slack(self, X: np.ndarray) -> np.ndarray:
        """Worst goal slack per column of X (n_leaves x batch); +inf where hypotheses fail."""
        with np.errstate(all="ignore"):
            ds = self.f(*X) if len(X) else self.f()
        ng = len(self.ob.goal)
        s = np.min([_slack(a.op, d) for a, d in zip(self.ob.goal, ds[:ng])], axis=0)
        for a, d in zip(self.ob.hypotheses, ds[ng:]):
            ok = _slack(a.op, d) >= 0 if a.op in ("==", "<=", ">=") else _slack(a.op, d) > 0
            s = np.where(ok, s, np.inf)
        s = np.broadcast_to(s, (X.shape[1],))
        return np.where(np.isnan(s), np.inf, s)

    def _direction(self, X: np.ndarray, width: np.ndarray) -> np.ndarray:
        """Gradient of the worst atom's slack at each column (finite differences if needed)."""
        if len(self.ob.goal) == 1:  # no need to evaluate which atom is worst
            worst = np.zeros(X.shape[1], dtype=int)
        else:
            with np.errstate(all="ignore"):
                ds = self.f(*X)
            slacks = np.array([_slack(a.op, d) for a, d in zip(self.ob.goal, ds)])
            worst = np.argmin(slacks, axis=0)
        G = np.zeros_like(X)
        for k, a in enumerate(self.ob.goal):
            mask = worst == k
            if not mask.any() or a.op in ("==", "!="):
                continue
            sign = -1.0 if a.op in ("<=", "<") else 1.0
            G[:, mask] = sign * self._grad(k, X[:, mask], width)
        return G

    def _grad(self, k: int, X: np.ndarray, width: np.ndarray) -> np.ndarray:
        # central differences cost 2n evaluations: for n <= FD_LEAVES less than compiling
        g = None if self._grads is None and len(X) <= FD_LEAVES else self.grads[k]
        with np.errstate(all="ignore"):
            if g is not None:
                return np.array(g(*X)[1]).reshape(X.shape)
            h = (1e-6 * width)[:, None]
            out = []
            for i in range(len(X)):
                E = np.zeros_like(X)
                E[i] = h[i]
                d1, d0 = self.f(*(X + E))[k], self.f(*(X - E))[k]
                out.append((d1 - d0) / (2 * h[i]))
            return np.array(out)

    def run(self, box: dict | None = None, *, budget: float = 1.0, samples: int = 4000,
            seed: int = 0, starts=(), refine: int = 8, steps: int = 40) -> SearchResult:
        """Sample the box, refine the best points by projected sign-gradient steps."""
        t0 = time.perf_counter()
        bounds = self.bounds(box)
        rng = np.random.default_rng(seed)
        lo, hi, width = _arrays(bounds)
        X = np.concatenate([_corners(bounds, rng), _uniform(bounds, samples, rng),
                            _starts(self.leaves, starts)], axis=1)
        X = np.clip(X, lo[:, None], hi[:, None])
        S = self.slack(X)
        pool_X, pool_S = [X], [S]
        best = X[:, np.argsort(S)[:refine]]
        eta = 0.05
        for _ in range(steps if len(self.leaves) else 0):
            if time.perf_counter() - t0 > budget:
                break
            G = self._direction(best, width)
            best = np.clip(best - eta * width[:, None] * np.sign(G), lo[:, None], hi[:, None])
            pool_X.append(best)
            pool_S.append(self.slack(best))
            eta *= 0.88
        X, S = np.concatenate(pool_X, axis=1), np.concatenate(pool_S)
        return self._result(X, S, bounds)

    def _result(self, X: np.ndarray, S: np.ndarray, bounds) -> SearchResult:
        order = np.argsort(S, kind="stable")
        out = SearchResult(evaluations=int(S.size))
        if S.size == 0 or not np.isfinite(S[order[0]]):
            return out
        out.slack = float(S[order[0]])
        out.point = {s: float(X[i, order[0]]) for i, s in enumerate(self.leaves)}
        seen = set()
        for j in order[:64]:
            for pt in self._roundings(X[:, j], S[j], bounds):
                if pt not in seen:
                    seen.add(pt)
                    out.candidates.append(dict(zip(self.leaves, pt)))
            if len(out.candidates) >= 8:
                break
        return out

    def _roundings(self, x: np.ndarray, slack: float, bounds) -> list[tuple]:
        """The point with short decimals first (when they stay as bad in floats), then exact."""
        full = tuple(_to_fraction(v, *b) for v, b in zip(x, bounds))
        out = []
        for digits in (2, 4, 8):
            pt = tuple(_to_fraction(float(f"{v:.{digits}g}"), *b) for v, b in zip(x, bounds))
            y = np.array([[float(q)] for q in pt]).reshape(len(pt), 1)
            if pt != full and self.slack(y)[0] <= (slack / 2 if slack < 0 else slack):
                out.append(pt)
                break
        return out + [full]

def _value_and_grad(program: Program, inputs: list, expr):
    try:
        return compile_value_and_grad(program, inputs, expr)
    except Exception:  # noqa: BLE001 - no gradient: the search falls back to finite differences
        return None


def _network_cuts(program: Program, exprs) -> list[sp.Symbol]:
    """Annotated network symbols that the expressions reach without passing through another."""
    terms, seen, found = program.network_terms, set(), set()
    stack = [s for e in exprs for s in sp.sympify(e).free_symbols if program.is_defined(s)]
    while stack:
        s = stack.pop()
        if s in seen:
            continue
        seen.add(s)
        if s in terms:
            found.add(s)
        else:
            stack.extend(program.deps(s))
    return sorted(found, key=program.index.__getitem__)


class _Application:
    """One network application: its compiled network, input rows and the terms read of it."""

    def __init__(self, net: CompiledNetwork, rows: list[int]):
        self.net, self.rows = net, rows
        self.outputs: list[tuple[int, int]] = []  # (cut position, output i)
        self.jacobian: list[tuple[int, int, int]] = []  # (cut position, output i, input j)

    def inputs(self, X: np.ndarray) -> np.ndarray:
        """[B, n] network inputs from the leaf rows of X (zeros for inputs it does not read)."""
        B = X.shape[1] if X.ndim == 2 else 1
        out = np.zeros((B, len(self.rows)))
        for j, r in enumerate(self.rows):
            if r >= 0:
                out[:, j] = X[r]
        return out

    def values(self, Xa: np.ndarray, cuts: list) -> None:
        if self.outputs:
            F = self.net.forward(Xa)
            for c, i in self.outputs:
                cuts[c] = F[:, i]
        if self.jacobian:
            J = self.net.jacobian(Xa)
            for c, i, j in self.jacobian:
                cuts[c] = J[:, i, j]

    def pullback(self, Xa: np.ndarray, bars: list) -> np.ndarray:
        """d/dX of sum over read terms of bar * term (bars per cut position), [B, n]."""
        B, (m, n) = len(Xa), (self.net.n_out, self.net.n_in)
        T = np.zeros((B, m))
        for c, i in self.outputs:
            T[:, i] += bars[c]
        C: dict[int, np.ndarray] = {}
        for c, i, j in self.jacobian:
            C.setdefault(i, np.zeros((B, n)))[:, j] += bars[c]
        if not C:
            return self.net.vjp(Xa, T)[0]
        dX, first = np.zeros((B, n)), True
        for i, Ci in sorted(C.items()):  # one Hessian-vector pass per Jacobian row read
            U = np.zeros((B, m))
            U[:, i] = 1.0
            dX += self.net.input_mixed(Xa, Ci, U, T if first and self.outputs else None)
            first = False
        return dX


class NetworkTerms:
    """Differences of atoms whose network terms come from matrix-level code.

    The program slice of the differences is compiled with the annotated network symbols
    (outputs, input derivatives) as inputs; their values come from `CompiledNetwork`
    (forward, Jacobian), and gradients compose the slice's gradient with vector-Jacobian
    and Hessian-vector products of the network.
    """

    def __init__(self, program: Program, leaves: list, diffs: list, ngoal: int,
                 cuts: list[sp.Symbol]):
        self.n = len(leaves)
        self.cuts = cuts
        row = {s: k for k, s in enumerate(leaves)}
        nets: dict[int, CompiledNetwork] = {}
        apps: dict[int, _Application] = {}
        for c, sym in enumerate(cuts):
            app, kind, *ij = program.network_terms[sym]
            a = apps.get(id(app))
            if a is None:
                net = nets.get(id(app.network))
                if net is None:
                    tensors = {t.name: t for t in app.tensors}
                    net = nets[id(app.network)] = CompiledNetwork(app.network, tensors,
                                                                  blas_threads=None)
                a = apps[id(app)] = _Application(net, [row.get(s, -1) for s in app.inputs])
            (a.outputs if kind == "output" else a.jacobian).append((c, *ij))
        self.apps = list(apps.values())
        inputs = list(leaves) + cuts
        self.head = compile_numpy(program, inputs, diffs)
        self.heads = [_value_and_grad(program, inputs, d) for d in diffs[:ngoal]]
        self.grads = [None if h is None else self._grad_fn(h) for h in self.heads]
        for a in self.apps:  # generate the network code now: a failure means no matrix path
            X0 = np.zeros((1, a.net.n_in))
            a.values(X0, [None] * len(cuts))
            if any(h is not None for h in self.heads):
                a.pullback(X0, [np.zeros(1)] * len(cuts))

    @classmethod
    def build(cls, program: Program, leaves: list, diffs: list, ngoal: int):
        """The matrix path for these differences, or None when none of their terms is a
        recorded network term or the network has no compiled code."""
        cuts = _network_cuts(program, diffs)
        if not cuts:
            return None
        try:
            with _blas_limit(1):
                return cls(program, leaves, diffs, ngoal, cuts)
        except (ValueError, NotImplementedError, TypeError, KeyError):
            return None

    def _cut_values(self, X: np.ndarray) -> tuple[list, list]:
        cuts: list = [None] * len(self.cuts)
        Xs = []
        for a in self.apps:
            Xa = a.inputs(X)
            a.values(Xa, cuts)
            Xs.append(Xa)
        return cuts, Xs

    def values(self, *X) -> list[np.ndarray]:
        """The differences at the columns of X (one array per leaf), as `compile_numpy`."""
        X = np.array(X, dtype=float).reshape(self.n, -1) if self.n else np.zeros((0, 1))
        with _blas_limit(1):
            cuts, _ = self._cut_values(X)
        return self.head(*X, *cuts)

    def _grad_fn(self, head):
        def value_and_grad(*X):
            X = np.array(X, dtype=float).reshape(self.n, -1) if self.n else np.zeros((0, 1))
            with _blas_limit(1):
                cuts, Xs = self._cut_values(X)
                value, bars = head(*X, *cuts)
                G = np.array([np.broadcast_to(g, X.shape[1:]) for g in bars[:self.n]],
                             dtype=float).reshape(X.shape)
                cut_bars = [np.broadcast_to(g, X.shape[1:]) for g in bars[self.n:]]
                for a, Xa in zip(self.apps, Xs):
                    dX = a.pullback(Xa, cut_bars)
                    for j, r in enumerate(a.rows):
                        if r >= 0:
                            G[r] += dX[:, j]
            return value, G

        return value_and_grad


def _arrays(bounds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lo = np.array([-np.inf if a is None else float(a) for a, _ in bounds])
    hi = np.array([np.inf if b is None else float(b) for _, b in bounds])
    width = np.where(np.isfinite(hi - lo), hi - lo, SCALE_UNBOUNDED)
    return lo, hi, width


def _corners(bounds, rng) -> np.ndarray:
    """Box corners (all of them up to CORNER_CAP, else random ones) and the centre."""
    if not bounds:
        return np.zeros((0, 1))
    ends = [[0.0 if a is None else float(a), 0.0 if b is None else float(b)] for a, b in bounds]
    mid = [[(e[0] + e[1]) / 2] for e in ends]
    if len(ends) <= 8:
        pts = list(product(*ends)) + list(product(*mid))
    else:
        pick = rng.integers(0, 2, size=(CORNER_CAP, len(ends)))
        pts = [[ends[i][c] for i, c in enumerate(row)] for row in pick] + list(product(*mid))
    return np.array(pts, dtype=float).T.reshape(len(ends), -1)


def _uniform(bounds, n: int, rng) -> np.ndarray:
    cols = []
    for a, b in bounds:
        if a is not None and b is not None:
            cols.append(rng.uniform(float(a), float(b), n))
        elif a is not None:
            cols.append(float(a) + np.abs(rng.normal(0, SCALE_UNBOUNDED, n)))
        elif b is not None:
            cols.append(float(b) - np.abs(rng.normal(0, SCALE_UNBOUNDED, n)))
        else:
            cols.append(rng.normal(0, SCALE_UNBOUNDED, n))
    return np.array(cols, dtype=float).reshape(len(bounds), n)


def _starts(leaves, starts) -> np.ndarray:
    pts = [[float(p.get(s, 0)) for s in leaves] for p in starts]
    return np.array(pts, dtype=float).T.reshape(len(leaves), len(pts))


def search(ob: Obligation, program: Program, *, box: dict | None = None, budget: float = 1.0,
           samples: int = 4000, seed: int = 0, starts=()) -> SearchResult:
    """Look for points of the box where some goal atom fails (float64; replay decides)."""
    return Searcher(ob, program).run(box, budget=budget, samples=samples, seed=seed, starts=starts)
