"""Phase (ReLU) splits in the ReLU engine's branch and bound, and their certificates.

Oracles: z3 on this file's own exact encoding of the network and the property (the truth of
every instance, and the replay of every witness), and certificates built by hand on a
two-neuron network whose phases are known, mutated so that they no longer prove what they
claim: the checker (`check_relu`) must refuse them.
"""

from __future__ import annotations

import time
from fractions import Fraction

import numpy as np
import pytest
import z3
from spec_oracle import random_relu_net

from verifier import check_relu
from verifier.engines import relu_bab
from verifier.onnx_import import Act, Affine, OnnxNet
from verifier.vnnlib import parse_vnnlib


def _q(v) -> z3.ArithRef:
    v = Fraction(v)
    return z3.RealVal(f"{v.numerator}/{v.denominator}")


def z3_truth(net: OnnxNet, lo, hi, c: Fraction, fix_x=None) -> str:
    """z3 on the exact network: is there x in the box with y_0 - y_1 >= c (or at `fix_x`)?"""
    s = z3.Solver()
    xs = [z3.Real(f"x{i}") for i in range(net.n_in)]
    for i, x in enumerate(xs):
        s.add(_q(lo) <= x, x <= _q(hi))
        if fix_x is not None:
            s.add(x == _q(fix_x[i]))
    v = xs
    for blk in net.blocks:
        ((_, W),) = blk.terms
        z = [_q(blk.b[j]) + z3.Sum([_q(W[j, i]) * v[i] for i in range(len(v))])
             for j in range(blk.size)]
        if blk.act is None:
            v = z
        else:
            a = _q(blk.act.alpha if blk.act.kind == "leaky_relu" else 0)
            v = [z3.If(t > 0, t, a * t) for t in z]
    s.add(v[0] - v[1] >= _q(c))
    return str(s.check())


def prop_text(n_in: int, lo: float, hi: float, c: Fraction, second: bool = True) -> str:
    lines = [f"(declare-const X_{i} Real)" for i in range(n_in)]
    lines += ["(declare-const Y_0 Real)", "(declare-const Y_1 Real)"]
    lines += [f"(assert (>= X_{i} {lo!r}))(assert (<= X_{i} {hi!r}))" for i in range(n_in)]
    # a second row (never binding: |y| stays far below) makes the engine combine the rows,
    # where it splits phases
    lines.append(f"(assert (>= (- Y_0 Y_1) {float(c)!r}))")
    if second:
        lines.append("(assert (<= Y_1 1000.0))")
    return "\n".join(lines)


@pytest.fixture
def phase_only(monkeypatch):
    """Open boxes with at most 8 unstable neurons are split on a neuron's phase (input
    splits above that, and where no unstable neuron is left)."""
    monkeypatch.setattr(relu_bab, "RELU_MAX_UNSTABLE", 8)
    monkeypatch.setattr(relu_bab, "RELU_RATIO", 0.0)


def grid_max(net: OnnxNet, n_in: int, k: int = 41) -> float:
    """The largest y_0 - y_1 on a k^n grid of [-1, 1]^n (float)."""
    axes = np.meshgrid(*[np.linspace(-1, 1, k)] * n_in)
    y = net.evaluate_float(np.stack([a.ravel() for a in axes], axis=1))
    return float(np.max(y[:, 0] - y[:, 1]))


def check_certificate(net, prop, res) -> int:
    rep = check_relu._Report()
    check_relu.check_groups(net, [(d.output_constraints(), d.lo, d.hi) for d in prop.disjuncts],
                            res.certificate["groups"], time.perf_counter() + 60, rep, 4096,
                            check_relu.tree_version(res.certificate))
    return rep.leaves


@pytest.mark.parametrize("act,seed", [("relu", 0), ("relu", 1), ("relu", 2), ("leaky_relu", 0)])
def test_phase_splits_prove_only_truths_and_refute_with_replay(seed, act, phase_only):
    """Just above the grid's maximum of y_0 - y_1 (unsat unless the grid missed a peak) and
    below it (sat): `unsat` only where no grid point violates and the checker accepts the
    certificate; `sat` with a witness z3 confirms on the exact network."""
    rng = np.random.default_rng(seed)
    net = random_relu_net(rng, [3, 6, 6, 2], act)
    top = grid_max(net, 3)
    answers = {}
    for margin in (0.05, -0.02):
        c = Fraction(top + margin).limit_denominator(1000)
        prop = parse_vnnlib(prop_text(3, -1.0, 1.0, c))
        res = relu_bab.decide(net, prop, 60, use_z3=False)
        answers[margin] = res.answer
        if res.answer == "unsat":  # no point of a finer random sample violates
            pts = np.random.default_rng(99).uniform(-1, 1, size=(200000, 3))
            y = net.evaluate_float(pts)
            assert np.max(y[:, 0] - y[:, 1]) < c
            assert check_certificate(net, prop, res) >= 1
        elif res.answer == "sat":
            assert z3_truth(net, -1, 1, c, fix_x=res.witness_x) == "sat"
        else:
            pytest.fail(f"no answer: {res.answer} {res.reason}")
    assert answers[-0.02] == "sat"


def test_phase_splits_happen_and_are_certified(phase_only):
    """On random networks just above their grid maximum, some proofs split phases; every
    certificate is accepted, and each `unsat` is consistent with the grid."""
    with_phases = 0
    for seed in range(5, 11):
        rng = np.random.default_rng(seed)
        net = random_relu_net(rng, [2, 8, 8, 2])
        top = grid_max(net, 2, 201)
        c = Fraction(top + 0.02).limit_denominator(1000)
        prop = parse_vnnlib(prop_text(2, -1.0, 1.0, c))
        res = relu_bab.decide(net, prop, 60, use_z3=False)
        if res.answer == "sat":
            assert z3_truth(net, -1, 1, c, fix_x=res.witness_x) == "sat"
            continue
        assert res.answer == "unsat", res.reason
        splits = res.certificate["groups"][0]["splits"]
        with_phases += any(v[0] == "relu" for v in splits.values())
        assert check_certificate(net, prop, res) == len(res.certificate["groups"][0]["closed"])
    assert with_phases


# ---- hand-made certificates on a network whose phases are known -------------------------------

def two_neurons() -> OnnxNet:
    """x in R; z_0 = x, z_1 = -x; y = (relu(z_0) + relu(z_1), 0) = (|x|, 0)."""
    F = Fraction
    W1 = np.array([[F(1)], [F(-1)]], dtype=object)
    b1 = np.array([F(0), F(0)], dtype=object)
    W2 = np.array([[F(1), F(1)], [F(0), F(0)]], dtype=object)
    b2 = np.array([F(0), F(0)], dtype=object)
    return OnnxNet.from_layers([Affine(W=W1, b=b1), Act("relu"), Affine(W=W2, b=b2)],
                               path="two", in_shape=(1,), out_shape=(2,), input_name="x",
                               output_name="y")


def hand_check(doc: dict, c: str, lo="-1", hi="-0.25") -> None:
    """Check a hand-made tree for `y_0 - y_1 >= c` on x in [lo, hi]; one box per leaf."""
    prop = parse_vnnlib(prop_text(1, float(Fraction(lo)), float(Fraction(hi)), Fraction(c),
                                  second=False))
    rep = check_relu._Report()
    check_relu.check_groups(two_neurons(), [(d.output_constraints(), d.lo, d.hi)
                                            for d in prop.disjuncts], doc["groups"],
                            time.perf_counter() + 30, rep, 1, check_relu.tree_version(doc))


def tree(splits: dict, closed: dict, lo=-1.0, hi=-0.25, version=2) -> dict:
    return {"tree": version, "groups": [{"disjuncts": [0], "root": [[lo.hex(), hi.hex()]],
                                         "splits": splits, "closed": closed}]}


def valid_tree() -> dict:
    """On x in [-1, -1/4] (z_0 = x < 0 throughout): split z_0's phase; its active side is
    empty, its inactive side has y_0 = -x <= 1 < 1.5."""
    return tree({"0": ["relu", 1, 0, "1", "2"]},
                {"1": {"by": "bound", "w": [["1"]]}, "2": {"by": "empty"}})


def test_hand_made_phase_certificate_accepted():
    hand_check(valid_tree(), "1.5")


def test_side_flipped_rejected():
    doc = valid_tree()
    doc["groups"][0]["splits"]["0"] = ["relu", 1, 0, "2", "1"]  # children swapped
    with pytest.raises(check_relu.Invalid, match="not closed"):
        hand_check(doc, "1.5")


def test_wrong_neuron_rejected():
    doc = valid_tree()
    doc["groups"][0]["splits"]["0"] = ["relu", 1, 1, "1", "2"]  # z_1 = -x > 0: active
    with pytest.raises(check_relu.Invalid, match="not closed"):
        hand_check(doc, "1.5")
    for bad in (["relu", 1, 2, "1", "2"], ["relu", 2, 0, "1", "2"], ["relu", 0, 0, "1", "2"],
                ["relu", 1, True, "1", "2"], ["relu", 1, 0, "1"]):
        doc["groups"][0]["splits"]["0"] = bad
        with pytest.raises(check_relu.Invalid, match="ReLU neuron"):
            hand_check(doc, "1.5")


def test_split_removed_rejected():
    doc = valid_tree()
    del doc["groups"][0]["splits"]["0"]
    with pytest.raises(check_relu.Invalid, match="not in the tree|hole"):
        hand_check(doc, "1.5")


def test_negative_or_malformed_beta_rejected():
    for beta, msg in (([["-0.5"]], "not nonnegative"), ([["nan"]], "not nonnegative"),
                      ([["0.5", "1"]], "malformed"), ([[0.5]], "not numbers|nonnegative")):
        doc = valid_tree()
        doc["groups"][0]["closed"]["1"]["beta"] = beta
        with pytest.raises(check_relu.Invalid, match=msg):
            hand_check(doc, "1.5")
    doc = valid_tree()
    doc["groups"][0]["closed"]["1"]["beta"] = [["0.5"]]
    hand_check(doc, "1.5")  # a nonnegative multiplier is sound, whatever its value


def test_false_property_rejected():
    """y_0 = |x| reaches 1 on [-1, -1/4]: no tree may prove y_0 < 0.9 there."""
    with pytest.raises(check_relu.Invalid, match="not closed"):
        hand_check(valid_tree(), "0.9")


def test_tree_versions():
    doc = valid_tree()
    doc["tree"] = 1  # the first format had no phase splits
    with pytest.raises(check_relu.Invalid, match="tree format 1"):
        hand_check(doc, "1.5")
    doc["tree"] = 3
    with pytest.raises(check_relu.Invalid, match="formats 1, 2"):
        hand_check(doc, "1.5")
    old = tree({"0": [0, (-0.5).hex(), "1", "2"]},
               {"1": {"by": "bound", "w": [["1"]]}, "2": {"by": "bound", "w": [["1"]]}},
               version=1)
    del old["tree"]  # certificates written before the field existed
    hand_check(old, "1.5")


def test_z3_leaf_with_phases():
    """The checker's z3 encoding of a leaf adds its phases: on [-1, -1/4], y_0 - y_1 >= -10
    holds everywhere, yet no point has z_0 = x >= 0 (z3: unsat), while z_0 <= 0 is sat."""
    prop = parse_vnnlib(prop_text(1, -1.0, -0.25, Fraction(-10), second=False))
    fnet = check_relu.Net(two_neurons())
    lo, hi = np.array([-1.0]), np.array([-0.25])
    rows = [d.output_constraints() for d in prop.disjuncts]
    wide = {1: np.array([-1.0, -1.0]), 2: np.array([-5.0, -5.0])}, \
        {1: np.array([1.0, 1.0]), 2: np.array([5.0, 5.0])}  # bounds that fix no phase
    assert check_relu.z3_leaf(fnet, rows, lo, hi, *wide, 10, ((1, 0, "on"),)) == "unsat"
    assert check_relu.z3_leaf(fnet, rows, lo, hi, *wide, 10, ((1, 0, "off"),)) == "sat"
    assert check_relu.z3_leaf(fnet, rows, lo, hi, *wide, 10) == "sat"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_checker_phase_bounds_hold_where_the_phases_do(seed):
    """The checker's bound of a row on a box with phase constraints and random nonnegative
    multipliers is above the row at every sampled point of the box that meets the phases
    (points that do not may exceed it), and a box it calls empty has no such point."""
    from verifier.vnnlib import Constraint

    rng = np.random.default_rng(40 + seed)
    onnx_net = random_relu_net(rng, [3, 10, 10, 2])
    net = check_relu.Net(onnx_net)
    P = 16
    c = rng.uniform(-1, 1, size=(P, 3))
    r = rng.uniform(0.05, 0.8, size=(P, 3))
    lo, hi = c - r, c + r
    phases = [((1, int(rng.integers(10)), "on" if rng.random() < 0.5 else "off"),
               (2, int(rng.integers(10)), "on" if rng.random() < 0.5 else "off"))
              for _ in range(P)]
    batch = [(None,) * 5 + (ph, [rng.uniform(0, 2, size=2)]) for ph in phases]
    L, Uu, H, empty = net.bounds_phased(lo, hi, check_relu._clamps(net, batch))
    rows = [Constraint(x=(), y=((0, Fraction(-1)), (1, Fraction(1))), const=Fraction(0),
                       strict=False)]
    rb = check_relu.rows_block(rows, 3, 2, len(net.blocks))
    ub = check_relu.row_bound(net, rb, np.ones((P, 1)), (lo, hi), L, Uu, H,
                              betas=check_relu.phase_betas(net, batch, 0))
    for p in range(P):
        x = rng.uniform(lo[p], hi[p], size=(4000, 3))
        v, pre = x, {}
        for k, blk in enumerate(onnx_net.blocks, start=1):
            ((_, W),) = blk.terms
            z = v @ np.array(W, dtype=float).T + np.array(blk.b, dtype=float)
            pre[k] = z
            v = z if blk.act is None else np.maximum(z, 0.0)
        meet = np.ones(len(x), dtype=bool)
        for k, n, side in phases[p]:
            meet &= pre[k][:, n] >= 0 if side == "on" else pre[k][:, n] <= 0
        if empty[p]:
            assert not meet.any()
            continue
        row = v[:, 0] - v[:, 1]
        assert np.all(row[meet] <= ub[p] + 1e-9)
