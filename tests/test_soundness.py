"""Soundness of decide_bound on random small networks, checked by oracles we did not write.

Random ReLU / tanh / sigmoid networks with small rational weights and random boxes; claims
`out <= c`, `out < c`, `out >= c` with c near the sampled extreme. Every `proved` claim must
hold at thousands of points evaluated in numpy float64 (plus exactly at the box corners for
ReLU nets); every `refuted` counterexample must lie in the box and violate the claim when
re-evaluated in torch float64 (exactly in Fractions for ReLU nets). Planted violations (c just
below an attained value) must never be proved.
"""

from __future__ import annotations

from fractions import Fraction as F
from itertools import pairwise, product

import numpy as np
import sympy as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verifier.engines.bounds import certified_bound, decide_bound
from verifier.engines.intervals import Tape
from verifier.layers.activations import relu, sigmoid
from verifier.obligations import Atom, Obligation, Variable
from verifier.symbolic.program import Program

try:
    import torch
except ImportError:  # pragma: no cover - torch is a test dependency here
    torch = None

TOL = 1e-9
TIMEOUT = 1.5
ACTS = {"relu": (relu, lambda z: np.maximum(z, 0.0)), "tanh": (sp.tanh, np.tanh),
        "sigmoid": (sigmoid, lambda z: 0.5 * (1 + np.tanh(0.5 * z)))}
TORCH = {"relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid"}


@st.composite
def networks(draw, acts=("relu", "tanh", "sigmoid")):
    act = draw(st.sampled_from(acts))
    n_in = draw(st.integers(1, 3))
    sizes = [n_in] + draw(st.lists(st.integers(2, 5), min_size=1, max_size=2)) + [1]
    weight = st.fractions(min_value=-2, max_value=2, max_denominator=6)
    layers = []
    for a, b in pairwise(sizes):
        W = [[draw(weight) for _ in range(a)] for _ in range(b)]
        layers.append((W, [draw(weight) for _ in range(b)]))
    box = []
    for _ in range(n_in):
        lo = F(draw(st.integers(-8, 4)), 4)
        box.append((lo, lo + F(draw(st.integers(1, 8)), 4)))
    return act, layers, box


def build(act, layers, box):
    """The network as a Program (z = W h + b, a = act(z), last layer linear) and the inputs."""
    xs = [sp.Symbol(f"x{i}", real=True) for i in range(len(box))]
    p, h = Program(), list(xs)
    for k, (W, b) in enumerate(layers):
        z = [p.assign(sum(sp.Rational(w) * v for w, v in zip(row, h)) + sp.Rational(bj),
                      f"z{k}_{j}") for j, (row, bj) in enumerate(zip(W, b))]
        h = z if k == len(layers) - 1 else [p.assign(ACTS[act][0](v), f"a{k}_{j}")
                                            for j, v in enumerate(z)]
    return p, xs, h[0]


def numpy_eval(act, layers, X: np.ndarray) -> np.ndarray:
    """Outputs at the columns of X (n_in x N), in float64: an oracle independent of ours."""
    h = X
    for k, (W, b) in enumerate(layers):
        Wf = np.array([[float(w) for w in row] for row in W])
        h = Wf @ h + np.array([float(x) for x in b])[:, None]
        if k < len(layers) - 1:
            h = ACTS[act][1](h)
    return h[0]


def torch_eval(act, layers, x: list[F]) -> float:
    if torch is None:
        return float(numpy_eval(act, layers, np.array([[float(v)] for v in x]))[0])
    h = torch.tensor([float(v) for v in x], dtype=torch.float64)
    for k, (W, b) in enumerate(layers):
        Wt = torch.tensor([[float(w) for w in row] for row in W], dtype=torch.float64)
        h = Wt @ h + torch.tensor([float(v) for v in b], dtype=torch.float64)
        if k < len(layers) - 1:
            h = getattr(torch, TORCH[act])(h)
    return float(h[0])


def exact_relu_eval(layers, x: list[F]) -> F:
    h = list(x)
    for k, (W, b) in enumerate(layers):
        h = [sum(w * v for w, v in zip(row, h)) + bj for row, bj in zip(W, b)]
        if k < len(layers) - 1:
            h = [max(v, F(0)) for v in h]
    return h[0]


def samples(box, n=4000, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pts = [rng.uniform(float(lo), float(hi), n) for lo, hi in box]
    corners = np.array(list(product(*[(float(lo), float(hi)) for lo, hi in box]))).T
    return np.concatenate([np.array(pts), corners], axis=1)


def claim(xs, y, op, c, box):
    vs = tuple(Variable(symbol=x, role="input", lo=sp.Rational(lo), hi=sp.Rational(hi))
               for x, (lo, hi) in zip(xs, box))
    return Obligation(name="c", kind="bound", goal=(Atom(lhs=y, op=op, rhs=sp.Rational(c)),),
                      hypotheses=(), variables=vs, text=f"out {op} {c}")


def check(act, layers, box, op, c):
    """Decide `out op c` and hold the verdict to the independent oracles."""
    p, xs, y = build(act, layers, box)
    v = decide_bound(claim(xs, y, op, c, box), p, TIMEOUT)
    if v.verdict == "proved":
        ys = numpy_eval(act, layers, samples(box))
        if op in ("<=", "<"):
            assert ys.max() <= float(c) + TOL, (v, ys.max())
        else:
            assert ys.min() >= float(c) - TOL, (v, ys.min())
        if act == "relu":
            for corner in product(*box):
                yc = exact_relu_eval(layers, list(corner))
                assert {"<=": yc <= c, "<": yc < c, ">=": yc >= c}[op]
    elif v.verdict == "refuted":
        x = [F(v.counterexample[s.name]) for s in xs]
        assert all(lo <= xi <= hi for xi, (lo, hi) in zip(x, box))
        yt = torch_eval(act, layers, x)
        assert {"<=": yt > float(c) - TOL, "<": yt >= float(c) - TOL,
                ">=": yt < float(c) + TOL}[op], (v, yt)
        if act == "relu":
            ye = exact_relu_eval(layers, x)
            assert {"<=": ye > c, "<": ye >= c, ">=": ye < c}[op]
    else:
        assert v.reason
    return v


def near(value: float, rel: float, absolute: float) -> F:
    return F(value + rel * abs(value) + absolute).limit_denominator(10**6)


SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow],
            "derandomize": True}


def _near_extreme(net, op, rel):
    act, layers, box = net
    ys = numpy_eval(act, layers, samples(box, 2000, seed=1))
    target = ys.max() if op in ("<=", "<") else ys.min()
    sign = 1 if op in ("<=", "<") else -1
    return check(act, layers, box, op, near(target, sign * rel, sign * 1e-3 * (rel > 0)))


@settings(max_examples=24, **SETTINGS)
@given(networks(acts=("tanh", "sigmoid")), st.sampled_from(["<=", "<", ">="]),
       st.sampled_from([0.1, 0.02, 0.005, 0.0, -0.02]))
def test_smooth_claims_near_the_sampled_extreme(net, op, rel):
    _near_extreme(net, op, rel)


@settings(max_examples=12, **SETTINGS)
@given(networks(acts=("relu",)), st.sampled_from(["<=", "<", ">="]),
       st.sampled_from([0.02, 0.0, -0.02]))
def test_relu_claims_near_the_sampled_extreme(net, op, rel):
    _near_extreme(net, op, rel)


@settings(max_examples=20, **SETTINGS)
@given(networks(), st.sampled_from(["<=", "<", ">="]), st.sampled_from([1e-2, 1e-4]))
def test_planted_violations_are_never_proved(net, op, margin):
    act, layers, box = net
    ys = numpy_eval(act, layers, samples(box, 2000, seed=2))
    if op in ("<=", "<"):
        c = F(float(ys.max()) - margin * (1 + abs(ys.max()))).limit_denominator(10**9)
    else:
        c = F(float(ys.min()) + margin * (1 + abs(ys.min()))).limit_denominator(10**9)
    v = check(act, layers, box, op, c)
    assert v.verdict != "proved"


@settings(max_examples=6, **SETTINGS)
@given(networks(acts=("relu",)))
def test_relu_strict_claim_at_an_attained_corner_value(net):
    """c equal to the exact value at a corner: `<` must fail there, `<=` may hold."""
    act, layers, box = net
    corners = [list(c) for c in product(*box)]
    c = max(exact_relu_eval(layers, x) for x in corners)
    v = check(act, layers, box, "<", c)
    assert v.verdict != "proved"
    check(act, layers, box, "<=", c)


# ---- derivative programs (products, squares, abs) and optimised envelopes ------------------


def build_with_slope(act, layers, box):
    """The network and d out/d x0 by reverse mode, as the translator writes it: adjoints
    through `mul` of the upstream adjoint and act'(z) (tanh' = 1 - a^2, sigmoid' = a(1 - a))."""
    p, xs, y = build(act, layers, box)
    hs = [[sp.Symbol(f"a{k}_{j}", real=True) for j in range(len(b))]
          for k, (_, b) in enumerate(layers[:-1])]
    adj = [sp.Rational(w) for w in layers[-1][0][0]]  # d out / d a_last
    for k in range(len(layers) - 2, -1, -1):
        W = layers[k][0]
        dz = []
        for j, a in enumerate(hs[k]):
            dact = p.assign(1 - a**2 if act == "tanh" else a * (1 - a), f"da{k}_{j}")
            dz.append(p.assign(adj[j] * dact, f"dz{k}_{j}"))
        adj = [p.assign(sum(sp.Rational(W[j][i]) * dz[j] for j in range(len(W))), f"dh{k}_{i}")
               for i in range(len(W[0]))]
    return p, xs, y, p.assign(sp.Abs(adj[0]), "abs_slope")


def numpy_slope(act, layers, X: np.ndarray) -> np.ndarray:
    """|d out / d x0| by central differences of `numpy_eval` (an oracle independent of ours)."""
    e = np.zeros((X.shape[0], 1))
    e[0] = 1e-6
    return np.abs(numpy_eval(act, layers, X + e) - numpy_eval(act, layers, X - e)) / 2e-6


@settings(max_examples=16, **SETTINGS)
@given(networks(acts=("tanh", "sigmoid")), st.booleans())
def test_enclosures_and_affine_forms_hold_at_sampled_points(net, hinted):
    """Every output interval and its affine lower/upper forms (float forms, McCormick planes,
    square and abs relaxations, optimised tangents) hold at 4000 points."""
    act, layers, box = net
    p, xs, y, slope = build_with_slope(act, layers, box)
    tape = Tape(p, [y, slope])
    bounds = dict(zip(xs, box))
    ev = tape.run(bounds)
    if hinted:  # envelopes tangent at a corner, intersected with the first run
        ev = tape.run(bounds, parent=ev, at=tape.point_values(tape.corner(ev, tape.outputs[1],
                                                                          True)))
    X = samples(box)
    for k, vals in enumerate((numpy_eval(act, layers, X), numpy_slope(act, layers, X))):
        tol = TOL if k == 0 else 1e-6
        lo, hi = ev.values[tape.outputs[k]]
        assert float(lo) - tol <= vals.min() and vals.max() <= float(hi) + tol
        forms, o = ev.forms, tape.outputs[k]
        if forms is not None and forms.has_u[o] and forms.has_l[o]:
            idx = [xs.index(s) for s, _, _ in ev.dims]
            up = forms.U[o][0] + forms.U[o][1:] @ X[idx]
            low = forms.L[o][0] + forms.L[o][1:] @ X[idx]
            assert np.all(low <= vals + tol) and np.all(vals <= up + tol)


@settings(max_examples=10, **SETTINGS)
@given(networks(acts=("tanh", "sigmoid")), st.sampled_from([1e-2, 1e-3]))
def test_planted_slope_violations_are_never_proved(net, margin):
    """`|d out/d x0| <= c` with c just below a value the slope attains."""
    act, layers, box = net
    p, xs, _, slope = build_with_slope(act, layers, box)
    X = samples(box, 2000, seed=3)
    vals = numpy_slope(act, layers, X)
    i = int(np.argmax(vals))
    c = F(float(vals[i]) - margin * (1 + vals[i])).limit_denominator(10**9)
    v = decide_bound(claim(xs, slope, "<=", c, box), p, TIMEOUT)
    assert v.verdict != "proved", v
    if v.verdict == "refuted":
        x = np.array([[float(F(v.counterexample[s.name]))] for s in xs])
        assert numpy_slope(act, layers, x)[0] > float(c) - 1e-6


@settings(max_examples=10, **SETTINGS)
@given(networks(acts=("tanh", "sigmoid")))
def test_certified_bound_is_above_every_sample(net):
    act, layers, box = net
    p, xs, y, slope = build_with_slope(act, layers, box)
    X = samples(box)
    for expr, vals in ((y, numpy_eval(act, layers, X)), (slope, numpy_slope(act, layers, X))):
        r = certified_bound(claim(xs, expr, "<=", 0, box), p, 0.5)
        assert r["bound"] >= vals.max() - 1e-6
