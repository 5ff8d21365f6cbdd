"""decide_bound on small hand-built obligations: every verdict kind and what backs it."""

from __future__ import annotations

from fractions import Fraction as F
from itertools import pairwise

import numpy as np
import pytest
import sympy as sp

from verifier.engines.bounds import decide_bound
from verifier.engines.search import search
from verifier.engines.z3run import run_z3
from verifier.layers.activations import relu, sigmoid, softplus
from verifier.obligations import Atom, Obligation, Variable
from verifier.symbolic.compile import compile_numpy, compile_value_and_grad
from verifier.symbolic.program import Program

R = sp.Rational


def obligation(goal, variables, hypotheses=(), name="claim"):
    return Obligation(name=name, kind="bound", goal=tuple(goal), hypotheses=tuple(hypotheses),
                      variables=tuple(variables), text=name)


def var(sym, lo=-1, hi=1):
    return Variable(symbol=sym, role="input", lo=None if lo is None else R(lo),
                    hi=None if hi is None else R(hi))


def tiny_net(act):
    """y = 1/2 a0 - a1 + 1/4 with a = act(W x + b), x in [-1, 1]^2."""
    x0, x1 = sp.symbols("x0 x1", real=True)
    p = Program()
    z0 = p.assign(R(3, 2) * x0 - x1 / 2 + R(1, 4), "z0")
    z1 = p.assign(-x0 + R(5, 4) * x1 - R(1, 8), "z1")
    a0, a1 = p.assign(act(z0), "a0"), p.assign(act(z1), "a1")
    y = p.assign(a0 / 2 - a1 + R(1, 4), "y")
    return p, (x0, x1), y


def dense_max(p, xs, y, n=400):
    f = compile_numpy(p, list(xs), [y])
    g = np.linspace(-1, 1, n)
    X0, X1 = np.meshgrid(g, g)
    return float(np.max(f(X0.ravel(), X1.ravel())[0]))


def test_interval_proves_an_easy_claim():
    x = sp.Symbol("x", real=True)
    p = Program()
    a = p.assign(sp.tanh(x) + sigmoid(x), "a")
    v = decide_bound(obligation([Atom(lhs=a, op="<", rhs=R(5, 2))], [var(x, None, None)]), p, 5)
    assert (v.verdict, v.engine) == ("proved", "interval")
    assert "interval enclosure" in v.artifact
    assert v.smt_answer == "unsat" and run_z3(v.smt, 10).answer == "unsat"  # re-checkable


def test_relu_claim_proved_by_exact_z3_and_artifact_rechecks():
    p, xs, y = tiny_net(relu)
    c = F(dense_max(p, xs, y)) + F(1, 100)
    ob = obligation([Atom(lhs=y, op="<=", rhs=R(c.numerator, c.denominator))], map(var, xs))
    v = decide_bound(ob, p, 10)
    assert v.verdict == "proved" and v.engine in ("z3", "interval", "branch-and-bound")
    if v.smt is not None:
        assert v.smt_answer == "unsat" and run_z3(v.smt, 10).answer == "unsat"


def test_strict_claim_at_the_exact_maximum_is_refuted_exactly():
    x = sp.Symbol("x", real=True)
    p = Program()
    y = p.assign(relu(x) + relu(-x), "y")  # |x|, maximal (= 1) at the corners
    v = decide_bound(obligation([Atom(lhs=y, op="<", rhs=R(1))], [var(x)]), p, 10)
    assert v.verdict == "refuted" and v.violation["exact"]
    assert F(v.counterexample["x"]) in (1, -1)
    ok = decide_bound(obligation([Atom(lhs=y, op="<=", rhs=R(1))], [var(x)]), p, 10)
    assert ok.verdict == "proved"


@pytest.mark.parametrize("act", [sp.tanh, sigmoid, softplus], ids=lambda f: f.__name__)
def test_smooth_net_proved_near_the_max_and_refuted_below_it(act):
    p, xs, y = tiny_net(act)
    m = dense_max(p, xs, y)
    c = F(m + 0.02 * abs(m) + 0.01).limit_denominator(1000)
    v = decide_bound(obligation([Atom(lhs=y, op="<=", rhs=R(c.numerator, c.denominator))],
                                map(var, xs)), p, 20)
    assert v.verdict == "proved", v
    if v.smt is not None:
        assert run_z3(v.smt, 20).answer == "unsat"
    for leaf in v.details.get("smt_leaves", []):
        assert run_z3(leaf, 20).answer == "unsat"
    low = F(m - 0.01 * abs(m) - 0.001).limit_denominator(1000)
    v = decide_bound(obligation([Atom(lhs=y, op="<=", rhs=R(low.numerator, low.denominator))],
                                map(var, xs)), p, 20)
    assert v.verdict == "refuted" and set(v.counterexample) == {"x0", "x1"}
    f = compile_numpy(p, list(xs), [y])
    val = f(*[np.array([float(F(v.counterexample[s.name]))]) for s in xs])[0][0]
    assert val > float(low)


def random_net(sizes, act, seed=0):
    """A chain of dense layers with small dyadic weights; the last layer is linear."""
    rng = np.random.default_rng(seed)
    p = Program()
    xs = [sp.Symbol(f"x{i}", real=True) for i in range(sizes[0])]
    h = list(xs)
    for l, (n_in, n_out) in enumerate(pairwise(sizes)):
        W = rng.integers(-16, 17, (n_out, n_in))
        b = rng.integers(-8, 9, n_out)
        z = [p.assign(sum(R(int(W[j, i]), 8) * h[i] for i in range(n_in)) + R(int(b[j]), 8),
                      f"z{l}_{j}") for j in range(n_out)]
        h = z if l == len(sizes) - 2 else [p.assign(act(zj), f"a{l}_{j}") for j, zj in enumerate(z)]
    return p, xs, h[0]


def test_timeout_is_unknown_with_certified_bound_and_best_seen(monkeypatch):
    # the exact path only: the batched one proves this claim in about 1 s on an idle machine,
    # the exact path needs about 5 s
    monkeypatch.setattr("verifier.engines.bounds.BATCHED_SHARE", 0.0)
    p, xs, y = random_net([2, 16, 16, 1], sp.tanh, seed=1)
    m = dense_max(p, xs, y)
    c = F(m + 2e-3).limit_denominator(10**12)  # just above the max: true, but hard in 1.5 s
    v = decide_bound(obligation([Atom(lhs=y, op="<=", rhs=R(c.numerator, c.denominator))],
                                map(var, xs)), p, 1.5)
    assert v.verdict == "unknown" and v.reason.startswith("timeout after")
    assert v.seconds < 10  # the 1.5 s limit holds (with room for a loaded machine)
    lo, hi = v.details["certified_bound"]["lhs_minus_rhs"]
    assert F(hi) >= F(m) - c  # a sound bound is above what sampling saw
    assert F(lo) <= F(hi) < 10
    assert 0 < v.details["best_seen"] < 0.5


def test_hypotheses_are_used_by_z3_and_respected_by_refutation():
    x = sp.Symbol("x", real=True)
    p = Program()
    r = p.assign(relu(x), "r")
    goal = [Atom(lhs=r, op=">", rhs=R(0))]
    with_h = decide_bound(obligation(goal, [var(x)], [Atom(lhs=x, op=">", rhs=R(0))]), p, 10)
    assert with_h.verdict == "proved"
    without = decide_bound(obligation(goal, [var(x)]), p, 10)
    assert without.verdict == "refuted" and F(without.counterexample["x"]) <= 0


def test_equality_and_several_atoms():
    x, y = sp.symbols("x y", real=True)
    p = Program()
    e = p.assign(relu(x) - relu(-x), "e")
    s = p.assign(sp.tanh(y), "s")
    goal = [Atom(lhs=e, op="==", rhs=x), Atom(lhs=s, op="<=", rhs=R(4, 5)),
            Atom(lhs=s, op=">=", rhs=R(-4, 5))]
    v = decide_bound(obligation(goal, [var(x), var(y)]), p, 10)
    assert v.verdict == "proved"
    goal[1] = Atom(lhs=s, op="<=", rhs=R(3, 4))  # tanh(1) = 0.7616 > 3/4
    v = decide_bound(obligation(goal, [var(x), var(y)]), p, 10)
    assert v.verdict == "refuted" and F(v.counterexample["y"]) > F(97, 100)


def test_unbounded_variable_refuted_by_sampling():
    y = sp.Symbol("y", real=True)
    p = Program()
    s = p.assign(sp.tanh(y), "s")
    v = decide_bound(obligation([Atom(lhs=s, op="<=", rhs=R(1, 2))], [var(y, None, None)]), p, 5)
    assert v.verdict == "refuted"


def test_search_returns_exact_points_inside_the_box():
    x = sp.Symbol("x", real=True)
    p = Program()
    y = p.assign(-(x - R(1, 3)) ** 2, "y")
    res = search(obligation([Atom(lhs=y, op="<", rhs=R(0))], [var(x, R(-1, 2), R(1, 2))]), p,
                 seed=1)
    assert res.slack <= 1e-12
    assert all(R(-1, 2) <= pt[x] <= R(1, 2) for pt in res.candidates)
    assert any(abs(pt[x] - F(1, 3)) < F(1, 10**6) for pt in res.candidates)


def test_compiled_gradient_matches_finite_differences():
    p, xs, y = tiny_net(sp.tanh)
    g = compile_value_and_grad(p, list(xs), y * y)
    f = compile_numpy(p, list(xs), [y * y])
    X = np.random.default_rng(0).uniform(-1, 1, (2, 50))
    val, grads = g(*X)
    assert np.allclose(val, f(*X)[0])
    for i in range(2):
        E = np.zeros_like(X)
        E[i] = 1e-6
        fd = (f(*(X + E))[0] - f(*(X - E))[0]) / 2e-6
        assert np.allclose(grads[i], fd, atol=1e-6)
    assert "x0" not in g.source and "tanh(z0)" not in g.source  # generated names only
