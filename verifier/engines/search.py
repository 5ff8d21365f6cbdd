"""Counterexample search for bound obligations: corners, random samples, gradient steps.

Everything here is float64 and only *proposes* points: a candidate becomes a counterexample
when `replay` confirms it exactly or at 60 digits. Candidates are returned as exact
`Fraction`s inside the box (the shortest decimal of the float, clamped to the box), best first.
The slack of a point is the smallest over goal atoms of how far the atom is from failing
(positive: holds with room); points whose hypotheses fail in floats are ignored.
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


class Searcher:
    """Compiled slack functions of one obligation, reusable on many boxes."""

    def __init__(self, ob: Obligation, program: Program) -> None:
        self.ob = ob
        atoms = list(ob.goal) + list(ob.hypotheses)
        self.diffs = [a.lhs - a.rhs for a in atoms]
        self.leaves = sorted(program.leaves(self.diffs), key=lambda s: s.name)
        self.domain = {v.symbol: (v.lo, v.hi) for v in ob.variables}
        self.f = compile_numpy(program, self.leaves, self.diffs)
        self.grads = []
        for a in ob.goal:
            try:
                g = compile_value_and_grad(program, self.leaves, a.lhs - a.rhs)
            except Exception:  # noqa: BLE001 - no gradient: fall back to finite differences
                g = None
            self.grads.append(g)

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
        g = self.grads[k]
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
