"""The ReLU engine's α step tightens the intermediate bounds of every hidden layer but the
last (`relu_bab.TIGHTEN_SKIP`), whose bounds stay those of CROWN.

Oracles: the engine's calls of `tighten_layers` (which layers it was asked for, and what came
back), and the independent checker on the certificate of the `unsat` answer.
"""

from __future__ import annotations

import time
from fractions import Fraction

import numpy as np
from spec_oracle import random_relu_net
from test_relu_splits import grid_max, prop_text

from verifier import check_relu
from verifier.engines import relu_bab
from verifier.vnnlib import parse_vnnlib


def test_last_hidden_layer_keeps_its_crown_bounds(monkeypatch):
    rng = np.random.default_rng(5)
    net = random_relu_net(rng, [2, 8, 8, 8, 2])
    c = Fraction(grid_max(net, 2) + 0.02).limit_denominator(1000)
    prop = parse_vnnlib(prop_text(2, -1.0, 1.0, c))
    calls = []
    orig = relu_bab.tighten_layers

    def spy(fnet, box, bounds, iters, last=None):
        out = orig(fnet, box, bounds, iters=iters, last=last)
        calls.append((last, [np.array_equal(a, b) for a, b in zip(out.u, bounds.u)],
                      [np.all(a <= b) for a, b in zip(out.u, bounds.u)]))
        return out

    monkeypatch.setattr(relu_bab, "tighten_layers", spy)
    res = relu_bab.decide(net, prop, 20, use_z3=False)
    assert calls
    for last, same, tighter in calls:
        assert last == 2  # layers 1 and 2 of 0, 1, 2: all but the last
        assert same[0] and same[2] and all(tighter)
    assert not all(same[1] for _, same, _ in calls)  # the middle layer did tighten
    assert res.answer == "unsat", res.reason
    rep = check_relu._Report()
    check_relu.check_groups(net, [(d.output_constraints(), d.lo, d.hi) for d in prop.disjuncts],
                            res.certificate["groups"], time.perf_counter() + 60, rep, 1 << 16,
                            check_relu.tree_version(res.certificate))
    assert rep.leaves == len(res.certificate["groups"][0]["closed"])
