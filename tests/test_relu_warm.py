"""Which boxes of the ReLU engine's branch and bound start their row combination from their
parent's optimum: the two copies of a phase split (the same box, one more constraint), not
the halves of an input split (on the robot benchmark they closed in fewer boxes afresh).

Oracles: the engine's own record of the splits (which box was split how, and what it held
for its children then), and the independent checker on the certificates.
"""

from __future__ import annotations

import time
from fractions import Fraction

import numpy as np
import pytest
from spec_oracle import random_relu_net
from test_relu_splits import grid_max, prop_text

from verifier import check_relu
from verifier.engines import relu_bab
from verifier.vnnlib import parse_vnnlib


def _run(monkeypatch, seed: int, warm: int, seconds: float = 2.0):
    """The engine on a random 2-8-8-2 network just above its grid maximum, phase splits below
    8 unstable neurons; per split, whether the split boxes had a warm state for their children
    (input splits, phase splits), and the result."""
    monkeypatch.setattr(relu_bab, "RELU_MAX_UNSTABLE", 8)
    monkeypatch.setattr(relu_bab, "WARM", warm)
    rng = np.random.default_rng(seed)
    net = random_relu_net(rng, [2, 8, 8, 2])
    c = Fraction(grid_max(net, 2) + 0.004).limit_denominator(1000)
    prop = parse_vnnlib(prop_text(2, -1.0, 1.0, c))
    eng = relu_bab.Engine(net, prop, seconds, use_z3=False)
    seen: dict = {"input": [], "phase": []}
    split, split_phases = eng._split, eng._split_phases

    def spy_split(s, ids, dims, mids):
        seen["input"].append(sum(i in eng.warm for i in ids))
        return split(s, ids, dims, mids)

    def spy_phases(s, lo, hi, BL, BU, nid, *rest):
        seen["phase"].append(sum(i in eng.warm for i in nid))
        return split_phases(s, lo, hi, BL, BU, nid, *rest)

    monkeypatch.setattr(eng, "_split", spy_split)
    monkeypatch.setattr(eng, "_split_phases", spy_phases)
    with relu_bab.single_thread_blas():
        res = eng.run()
    return net, prop, c, res, seen


@pytest.mark.parametrize("seed", [3, 4])
def test_only_phase_copies_start_warm(monkeypatch, seed):
    """No box split on an input holds a state for its halves; boxes split on a phase do; an
    `unsat` certificate is accepted by the checker."""
    net, prop, c, res, seen = _run(monkeypatch, seed, warm=1)
    assert seen["input"] and seen["phase"]
    assert not any(seen["input"])
    assert any(seen["phase"])
    if res.answer == "unsat":  # the certificate, warm leaves and all, is accepted
        rep = check_relu._Report()
        check_relu.check_groups(net, [(d.output_constraints(), d.lo, d.hi)
                                      for d in prop.disjuncts], res.certificate["groups"],
                                time.perf_counter() + 60, rep, 1 << 16,
                                check_relu.tree_version(res.certificate))
        assert rep.leaves == len(res.certificate["groups"][0]["closed"])


def test_warm_halves_when_asked(monkeypatch):
    """WARM = 2 (the former behaviour): boxes split on an input hold states for their halves."""
    *_, seen = _run(monkeypatch, 3, warm=2)
    assert any(seen["input"])
