"""The distillation example (`examples/distill/`): simulation, training with compiled gradients,
the law recovered by sparse regression, and certified bounds that sampling never beats.

The spring case is trained here as the command does (about 40 s), then certified on a few
cells of its domain (the command `python examples/distill/run.py` certifies every cell). Oracles: Newton's third law and a direct loop
over pairs for the simulation; the known spring constants for the law; fresh samples of
|phi - law|, evaluated by numpy on the exported weights, against the certified eps; the
counterexample of a wrong law evaluated the same way.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from fractions import Fraction

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.join(ROOT, "examples", "distill")


def _module(name: str):
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    spec = importlib.util.spec_from_file_location(f"distill_{name}", os.path.join(HERE,
                                                                                  f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


simulate = _module("simulate")
sindy = _module("sindy")
pipeline = _module("run")


def test_simulation_is_seeded_and_obeys_the_laws():
    for law in simulate.LAWS:
        X, A = simulate.simulate(law, trajectories=4, seed=3)
        X2, A2 = simulate.simulate(law, trajectories=4, seed=3)
        assert np.array_equal(X, X2) and np.array_equal(A, A2)
        assert len(X) > 10 and X.shape[1:] == (4, 2)
        np.testing.assert_allclose(A.sum(1), 0.0, atol=1e-12)  # equal and opposite forces
        d = np.linalg.norm(X[:, :, None] - X[:, None], axis=-1) + np.eye(4) * 1e9
        assert d.min() >= simulate.R_MIN
        for s in (0, len(X) // 2):
            for i in range(4):  # a direct loop over the pairs
                f = np.zeros(2)
                for j in range(4):
                    if j == i:
                        continue
                    dij = X[s, i] - X[s, j]
                    r = np.linalg.norm(dij)
                    f += -2.0 * (r - 1.0) * dij / r if law == "spring" else 0.5 * dij / r**3
                np.testing.assert_allclose(A[s, i], f, rtol=1e-12, atol=1e-12)
    # the trajectories move: snapshots of one run differ
    assert not np.allclose(X[0], X[1])


def test_training_with_compiled_gradients_decreases_the_loss():
    X, A = simulate.simulate("spring", trajectories=6, seed=1)
    _, losses = pipeline.train(X, A, epochs=20, seed=1, batch=32)
    assert losses[-1] < 0.5 * losses[0]
    assert all(np.isfinite(losses))


@pytest.fixture(scope="module")
def spring(tmp_path_factory):
    """A GNN trained on the spring data, its edge MLP exported, messages fitted."""
    out = str(tmp_path_factory.mktemp("distill"))
    X, A = simulate.simulate("spring", trajectories=80, seed=0)  # as the command does
    net, losses = pipeline.train(X, A, epochs=300, seed=0)
    lines, arrays, edge_file = pipeline.export_edge(net, out, "spring")
    d = simulate.relative(X)
    m = pipeline.edge_forward(arrays, pipeline.edge_features(d))
    laws = {k: sindy.fit(d, m[:, k]) for k in range(pipeline.MESSAGES)}
    return {"out": out, "net": net, "losses": losses, "lines": lines, "arrays": arrays,
            "edge_file": edge_file, "d": d, "m": m, "laws": laws}


def test_the_spring_law_is_recovered(spring):
    laws = [spring["laws"][k][0] for k in range(pipeline.MESSAGES)]
    for k in range(pipeline.MESSAGES):
        assert spring["laws"][k][1] > 0.99  # R^2 of the rounded law on the messages
        assert all(isinstance(c, Fraction) for c in laws[k].values())
    # messages are a linear transform of the force; the linear node function undoes it
    force = pipeline.compose(spring["net"].params["node1.W"], laws)
    k, L = simulate.LAWS["spring"]["k"], simulate.LAWS["spring"]["L"]
    for o, axis in enumerate("xy"):
        other = "y" if axis == "x" else "x"
        terms = force[o]
        assert terms.get(f"d{axis}", 0.0) == pytest.approx(-k, rel=0.05)
        assert terms.get(f"d{axis}/r", 0.0) == pytest.approx(k * L, rel=0.05)
        for name, c in terms.items():  # everything else (but a constant) vanishes
            if name not in ("1", f"d{axis}", f"d{axis}/r"):
                assert abs(c) <= 0.05 * k, (name, c, other)


def _densest(d, boxes, n):
    counts = [int(np.all((d >= np.array(lo, float)) & (d <= np.array(hi, float)), 1).sum())
              for lo, hi in boxes]
    return [boxes[c] for c in np.argsort(counts)[::-1][:n]]


def _worst(spring, boxes, k, n):
    """The n cells where the sampled gap |phi - law| is largest (where eps is decided)."""
    coeffs = spring["laws"][k][0]

    def gap(box):
        u = pipeline.sample_cells([box], 500, seed=5)
        return np.max(np.abs(pipeline.edge_forward(spring["arrays"], pipeline.edge_features(u))
                             [:, k] - sindy.evaluate(coeffs, u)))

    return sorted(boxes, key=gap)[::-1][:n]


def test_certified_eps_is_never_exceeded_by_sampling(spring):
    boxes = _worst(spring, pipeline.cells(spring["d"]), 0, 2)
    coeffs = spring["laws"][0][0]
    cert = pipeline.certify("spring", spring["lines"], spring["edge_file"], boxes, 0, coeffs,
                            spring["arrays"], spring["out"], timeout=30)
    assert cert["eps"] is not None, cert["rounds"]
    assert all(v.verdict == "proved" for v in cert["verdicts"].values())
    eps = float(cert["eps"])
    assert eps >= cert["sampled"]
    # fresh samples (another seed, ten times as many) and every data pair in those cells
    u = pipeline.sample_cells(boxes, 20_000, seed=11)
    inside = np.zeros(len(spring["d"]), dtype=bool)
    for lo, hi in boxes:
        inside |= np.all((spring["d"] >= np.array(lo, float)) & (spring["d"] <= np.array(hi, float)), 1)
    u = np.concatenate([u, spring["d"][inside]])
    gap = np.abs(pipeline.edge_forward(spring["arrays"], pipeline.edge_features(u))[:, 0]
                 - sindy.evaluate(coeffs, u))
    assert gap.max() <= eps


def test_a_wrong_law_is_refuted_with_a_replayed_point(spring):
    boxes = _densest(spring["d"], pipeline.cells(spring["d"]), 1)
    coeffs = pipeline.wrong_law(spring["laws"][0][0])
    eps = Fraction(1, 10)
    path = os.path.join(spring["out"], "wrong.snn")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(pipeline.claim_spec(spring["lines"], spring["edge_file"], boxes,
                                     [("wrong", 0, 0, coeffs, eps)]))
    _, (v,) = pipeline.decide(path, 20, jobs=1)
    assert v.verdict == "refuted"
    point = np.array([[float(Fraction(str(v.counterexample[f"u0[{i}]"]))) for i in (0, 1)]])
    lo, hi = boxes[0]
    assert np.all(point >= np.array(lo, float)) and np.all(point <= np.array(hi, float))
    gap = abs(pipeline.edge_forward(spring["arrays"], pipeline.edge_features(point))[0, 0]
              - sindy.evaluate(coeffs, point)[0])
    assert gap > float(eps)
