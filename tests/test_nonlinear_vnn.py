"""Polynomial VNN-LIB 2.0 queries: adaptive_cruise_control_non_linear_2026 and small nets.

Oracles: z3 on an exact encoding of small networks (ReLU as `If`, the atoms as they are),
z3 on the input constraints alone (an empty input region), and onnxruntime for every `sat`
witness.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import z3
from test_multinet import run_ort, write_mlp, z3_answer
from tools import require

require("onnx")
require("onnxruntime")

from verifier import vnn
from verifier.engines.nonlinear_vnn import decide
from verifier.multinet import combine, decide_query
from verifier.onnx_import import load_onnx
from verifier.vnnlib2 import Var, parse_vnnlib2, read_property

DATA = os.path.join(os.path.dirname(__file__), "data", "vnncomp2026")
ACC_NET = os.path.join(DATA, "acc-2000000-64-64-64-64-retrain-100000-200000-0.9.onnx")


def _box_text(path) -> str:
    """The input part of an ACC query (its first 15 lines: box and braking condition)."""
    with open(path) as fh:
        return "".join(fh.readlines()[:15])


def test_acc_instance_1_is_unsat_because_its_input_region_is_empty():
    q = read_property(os.path.join(DATA, "acc_instance_1.vnnlib"))
    res, env = decide(combine(q, {"f": load_onnx(ACC_NET)}), 30.0)
    assert res.answer == "unsat" and env is None
    # the oracle: 80 <= x0 <= 100, -200 <= x1 <= -160, x0 > 0, 200 x0 >= x1^2 has no solution
    x0, x1 = z3.Reals("x0 x1")
    s = z3.Solver()
    s.add(x0 >= 80, x0 <= 100, x1 >= -200, x1 <= -160, x0 > 0, 200 * x0 >= x1 * x1)
    assert s.check() == z3.unsat


@pytest.mark.parametrize("name", ["acc_box_2_5.vnnlib", "acc_box_3_6.vnnlib"])
def test_acc_boxes_decided(name):
    """Two more boxes of the benchmark's template: the engine closes them; no sampled point
    of the box violates the property (a consistency check, not a proof)."""
    path = os.path.join(DATA, name)
    q = read_property(path)
    comb = combine(q, {"f": load_onnx(ACC_NET)})
    res, _ = decide(comb, 40.0)
    assert res.answer == "unsat"
    rng = np.random.default_rng(0)
    lo = np.array([float(v) for v in comb.net.evaluate_float(np.zeros((1, 2)))[0]])
    assert lo.shape == (1,)
    box = [(40.0, 60.0), (0.0, 40.0)] if "2_5" in name else [(60.0, 80.0), (40.0, 80.0)]
    X = np.column_stack([rng.uniform(a, b, 300) for a, b in box])
    Y = comb.net.evaluate_float(X)
    slots = [Var("f", "X", 0), Var("f", "X", 1), Var("f", "Y", 0)]
    for x, y in zip(X, Y):
        env = dict(zip(slots, [x[0], x[1], y[0]]))
        assert not any(all(float(a.value(env)) < -1e-6 if a.strict else
                           float(a.value(env)) <= -1e-6 for a in d) for d in q.disjuncts)


def test_acc_sat_witness_replays_on_onnxruntime(tmp_path, capsys):
    text = _box_text(os.path.join(DATA, "acc_box_2_5.vnnlib"))
    y = load_onnx(ACC_NET).evaluate_float(np.array([[50.0, 20.0]]))[0, 0]
    # outputs above y - 1 (squared, so the atom is polynomial) exist near (50, 20)
    prop = tmp_path / "q.vnnlib"
    prop.write_text(text + f"(assert (> (* (- Y[0,0] {y - 1:.6f}) (+ (- Y[0,0] {y - 1:.6f}) "
                           f"(* 0 X[0,0]))) 0.25))\n(assert (> Y[0,0] {y - 1:.6f}))\n")
    code = vnn.main(["--onnx", ACC_NET, "--vnnlib", str(prop), "--timeout", "30"])
    out = capsys.readouterr().out.split()
    assert code == 1 and out[0] == "sat"
    assert out[1:4] == ["X", "real", "[1,2]"]
    x = [float(out[4]), float(out[5])]
    got = float(run_ort(ACC_NET, x)[0])
    assert out[6:9] == ["Y", "real", "[1,1]"] and abs(float(out[9]) - got) < 1e-4
    assert got > y - 1 and (got - (y - 1)) ** 2 > 0.25 - 1e-4
    assert 40 <= x[0] <= 60 and 0 <= x[1] <= 40 and 200 * x[0] >= x[1] ** 2


_ONE = ("(vnnlib-version 2.0)\n"
        "(declare-network f (declare-input X_f real [2]) (declare-output Y_f real [2]))\n"
        "(assert (and (>= X_f[0] -1) (<= X_f[0] 1) (>= X_f[1] -1) (<= X_f[1] 1)))\n")


@pytest.mark.parametrize("seed, claim", [
    (0, "(assert (<= (* Y_f[0] Y_f[0]) 0))"),  # sat only where Y_f[0] = 0 exactly
    (1, "(assert (< (* Y_f[0] Y_f[0]) 0))"),  # never: a square is not negative
    (3, "(assert (> (+ (* Y_f[0] Y_f[0]) (* X_f[0] Y_f[1])) 1.2))"),
    (4, "(assert (and (> (* X_f[0] X_f[1]) 0.2) (< (- Y_f[0] (* Y_f[1] Y_f[1])) -0.8)))"),
    (5, "(assert (or (> (* Y_f[0] Y_f[1]) 0.6) (!= Y_f[0] Y_f[0])))"),
])
def test_small_polynomial_queries_against_z3(tmp_path, seed, claim):
    rng = np.random.default_rng(seed)
    path = write_mlp(tmp_path / "f.onnx", rng, [2, 6, 2])
    q = parse_vnnlib2(_ONE + claim)
    nets = {"f": load_onnx(path)}
    res, env = decide_query(q, nets, 30.0)
    assert res.answer == z3_answer(q, nets)
    if res.answer == "sat":
        x = [float(env[Var("f", "X", i)]) for i in range(2)]
        y = run_ort(path, x)
        assert np.allclose(y, [float(env[Var("f", "Y", j)]) for j in range(2)], atol=1e-5)
        assert q.holds({k: v for k, v in env.items()})
