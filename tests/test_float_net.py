"""The float network of the ReLU engine (`crown.FloatNet`): the nearest floats of the exact
weights, a bound of each one's error, and the bounds computed with them.

Oracle: exact `Fraction` arithmetic (Python's correctly rounded `float(Fraction)`, exact
differences, an exact forward pass of the network).
"""

from __future__ import annotations

import time
from fractions import Fraction

import numpy as np
import pytest
from spec_oracle import random_relu_net, rounded

from verifier.engines.crown import (
    Box,
    FloatNet,
    backward_bound,
    float_and_error,
    float_error,
    forward_bounds,
)
from verifier.onnx_import import OnnxNet, fractions


def _odd_values(rng, k: int) -> list:
    """Rationals of every kind the conversion meets: floats (float32 and float64, tiny and
    huge), products of floats (denominators up to 2^150), small-denominator fractions,
    integers beyond 2^53 and 2^63, values below 2^-62 and in the subnormal range."""
    out = [Fraction(0), Fraction(1), Fraction(-1, 3), Fraction(2 ** 53 + 1), Fraction(2 ** 80),
           Fraction(2 ** 80 + 1), Fraction(2 ** 53 + 1, 2), Fraction(-(2 ** 53 - 1), 2 ** 60),
           Fraction(3, 2 ** 1000), Fraction(1, 2 ** 1074), Fraction(1, 2 ** 1080),
           Fraction(-7, 2 ** 1070), Fraction(2 ** 62 - 1, 2 ** 61), 5, -2]
    out += [Fraction(float(v)) for v in rng.standard_normal(k).astype(np.float32)]
    out += [Fraction(float(v)) for v in rng.standard_normal(k) * 10.0 ** rng.integers(-40, 40, k)]
    out += [Fraction(float(a)) * Fraction(float(b)) for a, b in rng.standard_normal((k, 2))]
    out += [Fraction(int(a), int(b)) for a, b in rng.integers(1, 10 ** 6, (k, 2))]
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_floats_and_error_bounds_against_fractions(seed):
    """Each float is Python's correctly rounded conversion of the exact entry; the bound is 0
    exactly where the float equals the entry, and otherwise at least |float - entry|."""
    rng = np.random.default_rng(seed)
    vals = _odd_values(rng, 400)
    rng.shuffle(vals)
    exact = np.empty((len(vals) // 5, 5), dtype=object)
    exact.flat[:] = vals[:exact.size]
    W, E = float_and_error(exact)
    assert W.shape == E.shape == exact.shape
    kinds = {"exact": 0, "inexact": 0}
    for w, e, q in zip(W.flat, E.flat, exact.flat):
        q = Fraction(q)
        assert w == float(q)
        gap = abs(Fraction(float(w)) - q)
        if gap == 0:
            assert e == 0.0
            kinds["exact"] += 1
        else:
            assert Fraction(float(e)) >= gap > 0
            kinds["inexact"] += 1
    assert min(kinds.values()) > 100  # both kinds were met
    assert np.array_equal(float_error(W, exact), E)


def test_empty_and_integer_entries():
    W, E = float_and_error(np.zeros((0, 3), dtype=object))
    assert W.shape == E.shape == (0, 3)
    ints = np.array([3, -(2 ** 70) - 1, 2 ** 70], dtype=object)
    W, E = float_and_error(ints)
    assert list(W) == [3.0, float(-(2 ** 70) - 1), float(2 ** 70)]
    assert E[0] == 0 and E[1] > 0 and Fraction(float(E[1])) >= abs(Fraction(W[1]) + 2 ** 70 + 1)


def _exact_net(rng, sizes) -> OnnxNet:
    """Weights that are no floats (odd denominators), so each one's float is off."""
    return random_relu_net(rng, sizes, weights=rounded(3 ** 7), biases=rounded(999),
                           bias_scale=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bounds_with_inexact_weights_hold_the_exact_network(seed):
    """A network whose weights are all inexact in float64, on boxes of width 0 (where every
    rounding counts) and small boxes: the forward intervals contain the exact
    pre-activations, and the backward bound of a row holds its exact value, at every point
    tried (exact Fraction forward passes)."""
    rng = np.random.default_rng(seed)
    net = _exact_net(rng, [4, 9, 9, 3])
    fnet = FloatNet(net)
    assert all(np.all(la.EW > 0) for la in fnet.layers)
    R = [[Fraction(1), Fraction(-2, 3), Fraction(1, 7)]]
    spec = fnet.spec_layer(R, [Fraction(1, 11)])
    zero = np.zeros((1, 4))
    for _ in range(8):
        c = rng.uniform(-1, 1, size=4)
        for r in (0.0, 1e-3):
            box = Box((c - r)[None], (c + r)[None])
            bounds = forward_bounds(fnet, box, tighten=True)
            ub, _ = backward_bound(spec, zero, zero, bounds, box, fnet.hidden)
            pts = [box.lo[0]] if r == 0 else list(box.lo[0] + 2 * r * rng.random((3, 4)))
            for x in pts:
                v = np.array([Fraction(float(t)) for t in x], dtype=object)
                for j, blk in enumerate(net.blocks):
                    ((_, W),) = blk.terms
                    z = W.dot(v) + blk.b
                    if j < len(net.blocks) - 1:
                        assert all(Fraction(float(bounds.l[j][0, i])) <= z[i] <= Fraction(
                            float(bounds.u[j][0, i])) for i in range(len(z)))
                        v = np.array([max(t, Fraction(0)) for t in z], dtype=object)
                    else:
                        y = z
                val = sum((a * b for a, b in zip(R[0], y)), Fraction(1, 11))
                assert val <= Fraction(float(ub[0, 0]))


def test_conversion_is_vectorised():
    """200000 float32 weights convert with their error bounds in a fraction of the 1.7 s CPU
    that a loop comparing each entry with its float as a Fraction took (8.6 us an entry)."""
    rng = np.random.default_rng(0)
    exact = fractions(rng.standard_normal((400, 500)).astype(np.float32))
    t0 = time.process_time()
    W, E = float_and_error(exact)
    secs = time.process_time() - t0
    assert not E.any() and np.array_equal(W, exact.astype(np.float64))
    assert secs < 0.6
