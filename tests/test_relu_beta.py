"""beta-CROWN multipliers of phase constraints in the ReLU engine, and their certificates.

Oracles: z3 on this file's own exact encoding of the network (no point of the box meeting the
phases exceeds a bound computed with any nonnegative multipliers), a network built by hand
whose constrained maximum is known, and the independent checker (`check_relu`) on the
engine's certificates.
"""

from __future__ import annotations

import time
from fractions import Fraction

import numpy as np
import pytest
import z3
from spec_oracle import random_relu_net, rounded

from verifier import check_relu
from verifier.engines import relu_bab
from verifier.engines.alpha_crown import optimize_combination
from verifier.engines.crown import Bounds, Box, FloatNet, FLayer, backward_bound, forward_bounds
from verifier.onnx_import import Act, Affine, OnnxNet
from verifier.vnnlib import parse_vnnlib

TWO_ROWS = ("(declare-const X_0 Real)(declare-const X_1 Real)(declare-const X_2 Real)"
            "(declare-const Y_0 Real)(declare-const Y_1 Real)"
            "(assert (and (>= X_0 -1) (<= X_0 1) (>= X_1 -1) (<= X_1 1) (>= X_2 -1) "
            "(<= X_2 1)))(assert (>= (- Y_0 Y_1) 0))(assert (<= Y_1 1000))")


def _q(v) -> z3.ArithRef:
    v = Fraction(v)
    return z3.RealVal(f"{v.numerator}/{v.denominator}")


def exceeds(net: OnnxNet, lo, hi, phases, row, bound: float) -> str:
    """z3 on the exact network: is there x in the box meeting `phases` ((layer, neuron,
    +1: z >= 0 / -1: z <= 0)) with sum_j row[j] y_j > bound?"""
    s = z3.Solver()
    xs = [z3.Real(f"x{i}") for i in range(net.n_in)]
    for i, x in enumerate(xs):
        s.add(_q(float(lo[i])) <= x, x <= _q(float(hi[i])))
    v = xs
    for k, blk in enumerate(net.blocks):
        ((_, W),) = blk.terms
        z = [_q(blk.b[j]) + z3.Sum([_q(W[j, i]) * v[i] for i in range(len(v))])
             for j in range(blk.size)]
        for layer, n, side in phases:
            if layer == k:
                s.add(z[n] >= 0 if side > 0 else z[n] <= 0)
        if blk.act is None:
            v = z
        else:
            a = _q(blk.act.alpha if blk.act.kind == "leaky_relu" else 0)
            v = [z3.If(t > 0, t, a * t) for t in z]
    s.add(z3.Sum([_q(float(c)) * y for c, y in zip(row, v)]) > _q(bound))
    return str(s.check())


def phased_bounds(fnet: FloatNet, box: Box, phases) -> Bounds:
    """Certified pre-activation bounds on the box's points meeting the phases: a forward pass
    with the split neurons' intervals clamped (as the engine's phase split does)."""
    nh = sum(la.W.shape[0] for la in fnet.hidden)
    cuts = np.cumsum([0] + [la.W.shape[0] for la in fnet.hidden])
    L, U = np.full((1, nh), -np.inf), np.full((1, nh), np.inf)
    for layer, n, side in phases:
        (U if side < 0 else L)[0, cuts[layer] + n] = 0.0
    return forward_bounds(fnet, box, Bounds.unflat(fnet, L, U), tighten=True)


def signed(fnet: FloatNet, phases, mults) -> list:
    """`backward_bound`'s `phase`: +beta where z >= 0, -beta where z <= 0."""
    out = [np.zeros((1, 1, la.W.shape[0])) for la in fnet.hidden]
    for (layer, n, side), b in zip(phases, mults):
        out[layer][0, 0, n] = side * b
    return out


def small_net(rng, sizes) -> OnnxNet:
    """A random ReLU network with weights of small denominators (z3 answers fast on them)."""
    return random_relu_net(rng, sizes, weights=rounded(16), biases=rounded(32))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_any_nonnegative_multipliers_give_a_sound_bound(seed):
    """Random 3-8-8-2 networks, random boxes, two or three phase constraints on unstable
    neurons and random multipliers (zero to large): z3 finds no point of the box meeting the
    phases above the bound, on the exact network."""
    rng = np.random.default_rng(seed)
    net = small_net(rng, [3, 7, 7, 2])
    fnet = FloatNet(net)
    row = np.array([[1.0, -0.5]])
    spec = fnet.spec_layer([[Fraction(1), Fraction(-1, 2)]], [Fraction(0)])
    checked = off_phases = 0
    for _ in range(6):
        c = rng.uniform(-0.6, 0.6, size=3)
        lo, hi = c - 0.4, c + 0.4
        box = Box(lo[None], hi[None])
        plain = forward_bounds(fnet, box)
        unst = [(j, n) for j in range(2) for n in range(7)
                if plain.l[j][0, n] < 0 < plain.u[j][0, n]]
        if len(unst) < 2:
            continue
        pick = rng.choice(len(unst), size=min(3, len(unst)), replace=False)
        phases = [(unst[i][0], unst[i][1], int(rng.choice([-1, 1]))) for i in pick]
        bounds = phased_bounds(fnet, box, phases)
        if any(np.any(a > b) for a, b in zip(bounds.l, bounds.u)):
            continue  # no point meets these phases
        def bound(mults):
            ub, _ = backward_bound(spec, np.zeros((1, 3)), np.zeros((1, 3)), bounds, box,
                                   fnet.hidden, phase=signed(fnet, phases, mults))
            return float(ub[0, 0])

        draws = [rng.uniform(0, scale, size=len(phases)) for scale in (0.1, 1.0, 10.0)
                 for _ in range(12)]
        best = min(draws, key=bound)  # the tightest of the draws, and two arbitrary ones
        for mults in (np.zeros(len(phases)), draws[5], draws[-1], best):
            assert exceeds(net, lo, hi, phases, row[0], bound(mults)) == "unsat"
            checked += 1
        # the tightest bound holds on the phases only: off them, z3 finds points above it
        # in some boxes (so the bound does use the phases, and the check above can fail)
        off_phases += exceeds(net, lo, hi, [], row[0], bound(best)) == "sat"
    assert checked >= 8
    assert off_phases


def hand_net() -> OnnxNet:
    """x in [-1, 1]^3; z_a = x_0 and z_b = x_0 in the hidden layer; y_0 = relu(z_b), y_1 = 0.
    Under z_a <= 0 every point has y_0 = 0, but the triangle of z_b on [-1, 1] bounds y_0 by
    1 over the box; with the multiplier 1/2 on z_a <= 0 the bound is 1/2 (the LP's)."""
    W1 = np.array([[Fraction(1), Fraction(0), Fraction(0)]] * 2, dtype=object)
    W2 = np.array([[Fraction(0), Fraction(1)], [Fraction(0), Fraction(0)]], dtype=object)
    zero = np.array([Fraction(0)] * 2, dtype=object)
    layers = [Affine(W=W1, b=zero), Act("relu", None), Affine(W=W2, b=zero.copy())]
    return OnnxNet.from_layers(layers, path="hand", in_shape=(3,), out_shape=(2,),
                               input_name="x", output_name="y")


def test_multipliers_tighten_where_the_phase_cuts_the_box():
    net = hand_net()
    fnet = FloatNet(net)
    box = Box(np.array([[-1.0, -1.0, -1.0]]), np.array([[1.0, 1.0, 1.0]]))
    phases = [(0, 0, -1)]
    bounds = phased_bounds(fnet, box, phases)
    spec = relu_bab._Spec(fnet, parse_vnnlib(TWO_ROWS).disjuncts[0])
    base = FLayer(W=spec.base.W, b=spec.base.b, EW=spec.base.EW, Eb=spec.base.Eb,
                  exact=None, act=None)
    sign = [np.array([[-1.0, 0.0]])]
    without = optimize_combination(base, spec.D, spec.multi, bounds, box, fnet.hidden)
    with_beta = optimize_combination(base, spec.D, spec.multi, bounds, box, fnet.hidden,
                                     iters=40, sign=sign)
    ub0 = spec.combined_bound(fnet, without.lam, without.slopes, bounds, box)[0, 0]
    ub1 = spec.combined_bound(fnet, with_beta.lam, with_beta.slopes, bounds, box,
                              with_beta.signed(sign))[0, 0]
    assert ub0 > 0.99  # y_0 - y_1 <= 1 is all that beta = 0 gives
    assert ub1 < 0.6 * ub0  # the multiplier finds (nearly) the LP's 1/2
    assert with_beta.mults[0][0, 0, 0] > 0 and with_beta.mults[0][0, 0, 1] == 0
    assert exceeds(net, box.lo[0], box.hi[0], phases, [1.0, -1.0], float(ub1)) == "unsat"


def check_certificate(net, prop, res) -> int:
    rep = check_relu._Report()
    check_relu.check_groups(net, [(d.output_constraints(), d.lo, d.hi) for d in prop.disjuncts],
                            res.certificate["groups"], time.perf_counter() + 60, rep, 4096,
                            check_relu.tree_version(res.certificate))
    return rep.leaves


def prop_text(n_in: int, c: Fraction) -> str:
    lines = [f"(declare-const X_{i} Real)" for i in range(n_in)]
    lines += ["(declare-const Y_0 Real)", "(declare-const Y_1 Real)"]
    lines += [f"(assert (>= X_{i} -1.0))(assert (<= X_{i} 1.0))" for i in range(n_in)]
    lines.append(f"(assert (>= (- Y_0 Y_1) {float(c)!r}))")
    lines.append("(assert (<= Y_1 1000.0))")  # two rows: the engine combines them
    return "\n".join(lines)


def test_engine_certificates_carry_multipliers_the_checker_accepts(monkeypatch):
    """Phase splits on every box with at most 24 unstable neurons (with beta = 0, seeds 6 and
    8 ran out of 60 s on 200,000 boxes): `unsat` answers come with leaves
    whose multipliers (one per phase split on the path, per disjunct) the checker reads and
    accepts, and a sample of the box finds no violation."""
    monkeypatch.setattr(relu_bab, "RELU_MAX_UNSTABLE", 24)
    with_beta = 0
    for seed in (6, 8, 9, 10):
        rng = np.random.default_rng(seed)
        net = random_relu_net(rng, [2, 12, 12, 2])
        axes = np.meshgrid(*[np.linspace(-1, 1, 201)] * 2)
        y = net.evaluate_float(np.stack([a.ravel() for a in axes], axis=1))
        c = Fraction(float(np.max(y[:, 0] - y[:, 1])) + 0.005).limit_denominator(1000)
        prop = parse_vnnlib(prop_text(2, c))
        res = relu_bab.decide(net, prop, 60, use_z3=False)
        if res.answer != "unsat":
            assert res.answer == "sat", res.reason
            continue
        pts = np.random.default_rng(99).uniform(-1, 1, size=(100000, 2))
        y = net.evaluate_float(pts)
        assert np.max(y[:, 0] - y[:, 1]) < c
        grp = res.certificate["groups"][0]
        for node, how in grp["closed"].items():
            assert "beta_at" not in how
            if "beta" in how:
                n_phases = len(relu_bab.SplitTree.phases(_tree(grp), int(node)))
                assert [len(v) for v in how["beta"]] == [n_phases] * len(how["w"])
                with_beta += any(float(t) > 0 for v in how["beta"] for t in v)
        assert check_certificate(net, prop, res) == len(grp["closed"])
    assert with_beta


def _tree(grp: dict) -> relu_bab.SplitTree:
    """The engine's split tree of a certificate's group (for its paths)."""
    t = relu_bab.SplitTree()
    for k, rec in grp["splits"].items():
        if rec[0] == "relu":
            t.splits[int(k)] = ("relu", rec[1], rec[2], int(rec[3]), int(rec[4]))
        else:
            t.splits[int(k)] = (rec[0], 0.0, int(rec[2]), int(rec[3]))
    return t
