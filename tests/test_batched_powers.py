"""Square roots, division and powers in the batched bound path (engines/batched.py).

Oracles: numpy evaluation of the same sympy terms (lambdify) at many sampled points of random
boxes for every enclosure, linear form and CROWN bound; densely sampled maxima for claims over
small tanh networks (proved with a margin above, refuted below, the counterexample evaluated
again by numpy); `where` conditions checked the same way on the sampled points.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import sympy as sp

from verifier import run
from verifier.engines import bounds
from verifier.engines.batched import BatchedBab, BatchTape, Unsupported
from verifier.engines.intervals import Tape
from verifier.symbolic.program import Program

x, y = sp.symbols("x y")
R = sp.Rational

TERMS = [
    sp.sqrt(x), 1 / x, x**-2, x**-3, x**3, x**4, x**5, x ** R(3, 2), x ** R(-3, 2),
    x ** R(1, 3), x ** R(7, 3), x ** R(-1, 2), y / x, x**5 - y**3,
    sp.sqrt(x**2 + y**2), x / (x**2 + y**2) ** R(3, 2), sp.tanh(x) / sp.sqrt(1 + y**2),
    y * sp.sqrt(x) ** 3 - 1 / (x**2 + 1),
]
RANGES = [(-3.0, 3.0), (0.1, 4.0), (-4.0, -0.2), (0.0, 2.0), (0.5, 0.6)]


def _numpy(e, leaves):
    f = sp.lambdify(leaves, e, "numpy")

    def value(X):
        with np.errstate(all="ignore"):
            v = np.asarray(f(*X.T), dtype=complex)
        v = np.broadcast_to(v, (X.shape[0],))
        return np.where(np.abs(v.imag) > 0, np.nan, v.real)  # outside the real domain

    return value


def _boxes(rng, lo0, hi0, B, n):
    a, c = rng.uniform(lo0, hi0, (B, n)), rng.uniform(lo0, hi0, (B, n))
    lo, hi = np.minimum(a, c), np.maximum(a, c)
    lo[0], hi[0] = lo0, hi0  # the whole range
    hi[1] = lo[1]  # a point box
    return lo, hi


@pytest.mark.parametrize("e", TERMS, ids=str)
def test_enclosures_forms_and_crown_bounds_hold_at_sampled_points(e):
    rng = np.random.default_rng(abs(hash(str(e))) % 2**32)
    tape = Tape(Program(), [e])
    leaves = [s for s in (x, y) if s in tape.leaves]
    bt = BatchTape(tape, leaves)
    value, n, o = _numpy(e, leaves), len(leaves), tape.outputs[0]
    finite = 0
    for lo0, hi0 in RANGES:
        lo, hi = _boxes(rng, lo0, hi0, 60, n)
        res = bt.run(lo, hi, rng.uniform(lo, hi))
        ub, lb = bt.backward(res, o, 1.0)[0], -bt.backward(res, o, -1.0)[0]
        for k in range(len(lo)):
            X = rng.uniform(lo[k], hi[k], (300, n))
            X[0], X[1] = lo[k], hi[k]
            v = value(X)
            defined = np.isfinite(v)
            if not defined.all():  # outside the domain somewhere: no bound may be claimed
                assert res.vlo[o][k] == -np.inf and res.vhi[o][k] == np.inf, (lo[k], hi[k])
                continue
            m = 1e-9 * (1 + np.abs(v))
            assert np.all(res.vlo[o][k] <= v + m) and np.all(v - m <= res.vhi[o][k])
            assert np.all(lb[k] <= v + m) and np.all(v - m <= ub[k])
            for f, upper in ((res.L[o], False), (res.U[o], True)):
                lin = f[k, 0] + X @ f[k, 1:]
                assert np.all(v - m <= lin) if upper else np.all(lin <= v + m), (upper, k)
            finite += bool(np.isfinite(res.vhi[o][k] - res.vlo[o][k]))
    assert finite >= 20  # the enclosures are not vacuous where the term is defined


def test_enclosures_are_tight_on_small_boxes():
    """Within a few percent of the range on a box of width 0.1 (sampled range as oracle)."""
    for e in TERMS:
        tape = Tape(Program(), [e])
        leaves = [s for s in (x, y) if s in tape.leaves]
        bt = BatchTape(tape, leaves)
        lo, hi = np.array([[0.5, 0.2][:len(leaves)]]), np.array([[0.6, 0.3][:len(leaves)]])
        res = bt.run(lo, hi)
        o = tape.outputs[0]
        top = min(res.vhi[o][0], bt.backward(res, o, 1.0)[0][0])
        v = _numpy(e, leaves)(np.random.default_rng(0).uniform(lo[0], hi[0], (20000, len(leaves))))
        assert top - v.max() <= 0.1 * (v.max() - v.min()) + 1e-12, e


def test_linear_bounds_are_tighter_than_intervals_on_wide_boxes():
    """CROWN through the chord and tangent lines of 1/r^3 beats plain intervals."""
    e = x / (x**2 + y**2) ** R(3, 2)
    tape = Tape(Program(), [e])
    bt = BatchTape(tape, [x, y])
    res = bt.run(np.array([[0.5, 0.0]]), np.array([[1.0, 0.5]]))
    o = tape.outputs[0]
    assert bt.backward(res, o, 1.0)[0][0] < res.vhi[o][0]


def test_large_exponents_are_refused():
    with pytest.raises(Unsupported):
        BatchTape(Tape(Program(), [x ** R(7, 2) * x ** R(22, 5)]), [x])


SPEC = """input x : real[2] in box([1/2, -1], [2, 1])
network g(in=2) load "w.npz" {{
  dense(6, tanh)
  dense(1)
}}
let r = sqrt(x[0]^2 + x[1]^2)
claim c: {term} {op} {bound}{where}
"""
TERM_TEXT = {  # spec text, numpy of (x0, x1, g)
    "g(x)[0] * r": lambda a, b, g: g * np.hypot(a, b),
    "g(x)[0] / x[0]^3 + x[1] / r": lambda a, b, g: g / a**3 + b / np.hypot(a, b),
    "sqrt(x[0])^3 * g(x)[0] - r^(-3)": lambda a, b, g: np.sqrt(a) ** 3 * g - np.hypot(a, b) ** -3,
}


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("powers")
    rng = np.random.default_rng(7)
    w = {"W1": rng.normal(0, 1.5, (6, 2)), "b1": rng.normal(0, 0.5, 6),
         "W2": rng.normal(0, 1.0, (1, 6)), "b2": rng.normal(0, 0.5, 1)}
    w = {k: np.round(v * 256) / 256 for k, v in w.items()}
    np.savez(tmp / "w.npz", **w)

    def g(X):
        return (np.tanh(X @ w["W1"].T + w["b1"]) @ w["W2"].T + w["b2"])[:, 0]

    X = np.random.default_rng(1).uniform([0.5, -1], [2, 1], (200_000, 2))
    X = np.vstack([X, np.array(np.meshgrid([0.5, 2], [-1, 1])).reshape(2, -1).T])
    return {"dir": tmp, "g": g, "X": X}


def _decide(net, term, op, bound, where="", timeout=30.0):
    path = os.path.join(net["dir"], "c.snn")
    with open(path, "w") as fh:
        fh.write(SPEC.format(term=term, op=op, bound=bound, where=where))
    model = run.load(path)
    (ob,) = model.obligations
    return bounds.decide_bound(ob, model.program, timeout), ob, model


def _value(net, term, X):
    return TERM_TEXT[term](X[:, 0], X[:, 1], net["g"](X))


def _point(v):
    from fractions import Fraction

    return np.array([[float(Fraction(v.counterexample[f"x[{i}]"])) for i in (0, 1)]])


@pytest.mark.parametrize("term", list(TERM_TEXT))
def test_claims_with_sqrt_division_and_powers(net, term):
    v = _value(net, term, net["X"])
    top, spread = float(v.max()), float(v.max() - v.min())
    above = sp.Rational(str(round(top + 0.01 * spread, 6)))
    below = sp.Rational(str(round(top - 0.01 * spread, 6)))
    proved, _, _ = _decide(net, term, "<=", above)
    assert proved.verdict == "proved", proved.reason
    refuted, _, _ = _decide(net, term, "<=", below)
    assert refuted.verdict == "refuted"
    p = _point(refuted)
    assert np.all(p >= [0.5, -1]) and np.all(p <= [2, 1])
    assert _value(net, term, p)[0] > float(below)


def test_batched_engine_proves_a_division_claim(net):
    term = "g(x)[0] / x[0]^3 + x[1] / r"
    v = _value(net, term, net["X"])
    bound = sp.Rational(str(round(float(v.max()) + 0.003 * float(v.max() - v.min()), 6)))
    got, _, _ = _decide(net, term, "<=", bound)
    assert got.verdict == "proved" and got.engine == "batched-branch-and-bound", got.reason


WHERE = " where x[0]^2 + x[1]^2 <= 2"
TERM_W = "g(x)[0] / 16 + r"


def _where_values(net):
    X = net["X"]
    v = X[:, 0] ** 2 + X[:, 1] ** 2 <= 2
    return net["g"](X) / 16 + np.hypot(X[:, 0], X[:, 1]), v


def test_a_claim_true_only_under_its_where_condition_is_proved(net):
    val, inside = _where_values(net)
    top_in, top_all = float(val[inside].max()), float(val.max())
    bound = sp.Rational(str(round(top_in + 0.01, 6)))
    assert top_all > float(bound) + 0.1  # false on the box without the condition
    with_where, _, _ = _decide(net, TERM_W, "<=", bound, WHERE)
    assert with_where.verdict == "proved", with_where.reason
    without, _, _ = _decide(net, TERM_W, "<=", bound)
    assert without.verdict == "refuted"


def test_a_claim_false_under_its_where_condition_is_refuted(net):
    val, inside = _where_values(net)
    bound = sp.Rational(str(round(float(val[inside].max()) - 0.01, 6)))
    got, _, _ = _decide(net, TERM_W, "<=", bound, WHERE)
    assert got.verdict == "refuted"
    p = _point(got)
    assert (p ** 2).sum() <= 2  # the counterexample meets the condition
    assert net["g"](p)[0] / 16 + np.hypot(*p[0]) > float(bound)


def test_certified_bound_honours_where(net):
    val, inside = _where_values(net)
    _, ob, model = _decide(net, TERM_W, "<=", 0, WHERE, timeout=0.1)
    got = bounds.certified_bound(ob, model.program, 3.0, tolerance=0.0)
    assert got["approx"] >= val[inside].max()  # sound on the points meeting the condition
    assert got["approx"] < val.max() - 0.1  # and below the maximum over the whole box
    assert got["where_closed"] > 0


def test_batched_where_closes_refuted_boxes_and_only_those():
    """A `where` condition false on the whole box closes it; undecided boxes stay open."""
    e, h = x + y, x * x + y * y - 1  # claim x + y <= -5 where x^2 + y^2 <= 1
    tape = Tape(Program(), [e + 5, h])
    bt = BatchTape(tape, [x, y])
    bab = BatchedBab(bt, ["<="], tape.outputs[:1], [2.0, 2.0], [3.0, 3.0],
                     hyps=[("<=", tape.outputs[1])])
    import time

    assert bab.run(time.perf_counter() + 2.0).status == "proved"  # the disk misses the box
    bab = BatchedBab(bt, ["<="], tape.outputs[:1], [-1.0, -1.0], [1.0, 1.0],
                     hyps=[("<=", tape.outputs[1])])
    res = bab.run(time.perf_counter() + 1.0)
    assert res.status != "proved" and res.bound >= -5 + 1.0  # (0.7, 0.7) is in the disk


def test_certified_bound_honours_where_on_the_exact_path(net, monkeypatch):
    monkeypatch.setattr(bounds._Decider, "batched_setup", lambda self, tol=0.0: None)
    val, inside = _where_values(net)
    _, ob, model = _decide(net, TERM_W, "<=", 0, WHERE, timeout=0.1)
    got = bounds.certified_bound(ob, model.program, 3.0, tolerance=0.0)
    assert got["approx"] >= val[inside].max()
    assert got["approx"] < val.max() - 0.1
    assert got["where_closed"] > 0
