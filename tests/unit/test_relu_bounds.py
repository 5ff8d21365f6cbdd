"""α-CROWN slopes and intermediate bounds of the ReLU engine: sound at sampled points, never
looser than plain CROWN, and the hand-written gradient agrees with finite differences."""

from __future__ import annotations

import numpy as np
import pytest
from spec_oracle import random_relu_net

from verifier.engines.alpha_crown import (
    crown_value_grad,
    initial_betas,
    optimize_betas,
    tighten_layers,
)
from verifier.engines.crown import Box, FloatNet, backward_bound, forward_bounds
from verifier.engines.relu_bab import _Spec
from verifier.vnnlib import parse_vnnlib

PROP = ("(declare-const X_0 Real)(declare-const X_1 Real)(declare-const X_2 Real)"
        "(declare-const Y_0 Real)(declare-const Y_1 Real)"
        "(assert (and (>= X_0 -1) (<= X_0 1) (>= X_1 -1) (<= X_1 1) (>= X_2 -1) (<= X_2 1)))"
        "(assert (>= (- Y_0 (* 0.5 Y_1) X_2) 0))(assert (<= Y_1 0))")


def _setup(seed, act="relu", B=32):
    rng = np.random.default_rng(seed)
    fnet = FloatNet(random_relu_net(rng, [3, 16, 16, 16, 2], act))
    spec = _Spec(fnet, parse_vnnlib(PROP).disjuncts[0])
    centre = rng.uniform(-1, 1, size=(B, 3))
    width = 10 ** rng.uniform(-2, 0, size=(B, 1))
    lo, hi = np.clip(centre - width, -1, 1), np.clip(centre + width, -1, 1)
    box = Box(lo, hi)
    return rng, fnet, spec, box, forward_bounds(fnet, box)


def _samples(rng, box, k=200):
    return [box.lo + (box.hi - box.lo) * rng.random(box.lo.shape) for _ in range(k // 20)]


@pytest.mark.parametrize("act", ["relu", "leaky_relu"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_alpha_bound_sound_and_not_looser(seed, act):
    rng, fnet, spec, box, bounds = _setup(seed, act)
    plain, _ = backward_bound(spec.spec, spec.Db, spec.EDb, bounds, box, fnet.hidden)
    betas = optimize_betas(spec.spec, spec.Db, bounds, box, fnet.hidden, iters=15)
    alpha, _ = backward_bound(spec.spec, spec.Db, spec.EDb, bounds, box, fnet.hidden,
                              betas=betas)
    assert np.all(alpha <= plain + 1e-9 * (1 + np.abs(plain)))
    assert np.any(alpha < plain - 1e-6)  # the optimisation does something
    lam = np.array([[float(t) for t in spec.weights(r)] for r in range(len(spec.lam))])
    for x in _samples(rng, box):
        r = spec.rows_float(x, fnet.forward(x)) @ lam.T
        assert np.all(r <= alpha)


def test_out_of_range_slopes_are_clipped_to_sound_ones():
    rng, fnet, spec, box, bounds = _setup(4)
    k = spec.spec.W.shape[0]
    wild = [b * 0 + 5.0 for b in initial_betas(fnet.hidden, bounds, k)]
    ub, _ = backward_bound(spec.spec, spec.Db, spec.EDb, bounds, box, fnet.hidden, betas=wild)
    lam = np.array([[float(t) for t in spec.weights(r)] for r in range(len(spec.lam))])
    for x in _samples(rng, box):
        assert np.all(spec.rows_float(x, fnet.forward(x)) @ lam.T <= ub)


@pytest.mark.parametrize("seed", [5, 6])
def test_gradient_matches_finite_differences(seed):
    rng, fnet, spec, box, bounds = _setup(seed)
    k = spec.spec.W.shape[0]
    betas = [np.clip(b + 0.4 * rng.random(b.shape) - 0.2, 0, 1)
             for b in initial_betas(fnet.hidden, bounds, k)]
    ub, grads = crown_value_grad(spec.spec, spec.Db, bounds, box, fnet.hidden, betas)
    for j, g in enumerate(grads):
        if g is None:
            continue
        d = 1e-7 * rng.standard_normal(betas[j].shape)
        moved = [b.copy() for b in betas]
        moved[j] = moved[j] + d
        ub2, _ = crown_value_grad(spec.spec, spec.Db, bounds, box, fnet.hidden, moved)
        assert np.sum(ub2 - ub) == pytest.approx(np.sum(g * d), rel=1e-3, abs=1e-12)


@pytest.mark.parametrize("act", ["relu", "leaky_relu"])
def test_tightened_intermediate_bounds_contain_samples(act):
    rng, fnet, _, box, bounds = _setup(7, act)
    tight = tighten_layers(fnet, box, bounds, iters=6)
    tighter = False
    for j in range(len(fnet.hidden)):
        assert np.all(tight.l[j] >= bounds.l[j]) and np.all(tight.u[j] <= bounds.u[j])
        tighter |= bool(np.any(tight.u[j] < bounds.u[j] - 1e-9))
    assert tighter
    for x in _samples(rng, box):
        v = x
        for j, la in enumerate(fnet.hidden):
            z = v @ la.W.T + la.b
            assert np.all(tight.l[j] <= z) and np.all(z <= tight.u[j])
            assert np.all(np.abs(np.where(z > 0, z, la.alpha * z)) <= tight.amag[j + 1])
            v = np.where(z > 0, z, la.alpha * z)
