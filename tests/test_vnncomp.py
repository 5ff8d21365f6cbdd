"""End to end: VNN-COMP 2021 test instances, Vehicle's windController, strictness, soundness.

Answers are compared with the published ground truth; every `sat` witness is re-executed with
onnxruntime (VNN-COMP's rule: the constraints hold within 1e-4).
"""

from __future__ import annotations

import csv
import os
import re
from fractions import Fraction

import numpy as np
import pytest
from tools import require

from verifier.diagnostics import SpecError

require("onnx")
ort = require("onnxruntime")

from spec_oracle import random_relu_net

from verifier import vnn
from verifier.engines.crown import (
    Box,
    FloatNet,
    backward_bound,
    crown_bounds,
    forward_bounds,
    single_thread_blas,
)
from verifier.engines.relu_bab import _Spec, decide
from verifier.onnx_import import load_onnx
from verifier.vnnlib import parse_vnnlib, read_vnnlib

HERE = os.path.dirname(__file__)
DATA = os.path.join(HERE, "data")  # third-party files, sources in data/README.md
TEST = os.path.join(DATA, "vnncomp2021-test")
WIND = os.path.join(HERE, "..", "examples", "wind_controller.onnx")  # Vehicle's controller.onnx


def _instances():
    with open(os.path.join(TEST, "ground_truth.csv")) as fh:
        return [(r["onnx"], r["vnnlib"], r["expected"]) for r in csv.DictReader(fh)]


def ort_holds(onnx_path, prop, x, y_claimed, tol=1e-4) -> bool:
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
    xs = [float(v) for v in x]
    y = sess.run(None, {inp.name: np.array(xs, dtype=np.float32).reshape(shape)})[0]
    y = [float(v) for v in np.ravel(y)]
    assert max(abs(a - float(b)) for a, b in zip(y, y_claimed)) <= tol
    return any(all(float(c.value(xs, y)) <= tol for c in d.constraints)
               for d in prop.disjuncts)


@pytest.mark.parametrize("onnx_name, prop_name, expected", _instances(),
                         ids=lambda v: str(v).replace(".onnx", "").replace(".vnnlib", ""))
def test_vnncomp2021_test_instances(onnx_name, prop_name, expected, tmp_path):
    answer = tmp_path / "answer.txt"
    code = vnn.main(["--onnx", os.path.join(TEST, onnx_name),
                     "--vnnlib", os.path.join(TEST, prop_name), "--timeout", "60",
                     "--answer", str(answer)])
    text = answer.read_text()
    first = text.splitlines()[0]
    assert first == expected
    assert code == {"unsat": 0, "sat": 1}[expected]
    if expected == "sat":
        net = load_onnx(os.path.join(TEST, onnx_name))
        prop = read_vnnlib(os.path.join(TEST, prop_name))
        body = text.split("\n", 1)[1]
        pairs = dict(re.findall(r"\((\w+) ([^()\s]+)\)", body))
        x = [Fraction(pairs[f"X_{i}"]) for i in range(net.n_in)]
        y = [float(pairs[f"Y_{j}"]) for j in range(net.n_out)]
        assert ort_holds(os.path.join(TEST, onnx_name), prop, x, y)
        # and exactly, on the imported network
        ye = net.evaluate_exact(x)
        assert any(all(c.holds(x, ye) for c in d.constraints) for d in prop.disjuncts)


def test_wind_controller_strict_property_proved(tmp_path):
    code = vnn.main(["--onnx", WIND, "--vnnlib", os.path.join(HERE, "data", "windController.vnnlib"),
                     "--timeout", "60", "--artifacts", str(tmp_path / "art")])
    assert code == 0
    assert (tmp_path / "art" / "summary.json").exists()


def _tiny(op: str) -> str:
    return ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n"
            f"(assert (>= X_0 -1))\n(assert (<= X_0 1))\n(assert ({op} Y_0 1))\n")


def test_strict_inequality_stays_strict(tmp_path):
    """relu(x) on [-1, 1] reaches 1 exactly: `Y_0 > 1` is unsat, `Y_0 >= 1` is sat at x = 1."""
    net = load_onnx(os.path.join(TEST, "test_tiny.onnx"))
    strict = decide(net, parse_vnnlib(_tiny(">")), 30)
    assert strict.answer == "unsat"
    assert strict.smt  # closed by an exact z3 leaf: floats cannot show max <= 1 alone
    import z3

    for _, text in strict.smt:
        s = z3.Solver()
        s.from_string(text)
        assert s.check() == z3.unsat
    weak = decide(net, parse_vnnlib(_tiny(">=")), 30)
    assert weak.answer == "sat" and weak.witness_x == [Fraction(1)]
    assert weak.witness_y == [Fraction(1)]


@pytest.mark.parametrize("act", ["relu", "leaky_relu", "tanh", "sigmoid"])
def test_bounds_contain_every_sample(act):
    """Soundness check of the float bounds: no sampled value exceeds a certified bound."""
    rng = np.random.default_rng(7)
    net = random_relu_net(rng, [3, 20, 20, 20, 2], act)
    fnet = FloatNet(net)
    text = ("(declare-const X_0 Real)(declare-const X_1 Real)(declare-const X_2 Real)"
            "(declare-const Y_0 Real)(declare-const Y_1 Real)"
            "(assert (and (>= X_0 -1) (<= X_0 1) (>= X_1 -1) (<= X_1 1) (>= X_2 -1)"
            " (<= X_2 1)))(assert (>= (- Y_0 (* 0.5 Y_1) X_2) 0))(assert (<= Y_1 0))")
    spec = _Spec(fnet, parse_vnnlib(text).disjuncts[0])
    B = 64
    centre = rng.uniform(-1, 1, size=(B, 3))
    width = 10 ** rng.uniform(-3, 0, size=(B, 1))
    lo, hi = np.clip(centre - width, -1, 1), np.clip(centre + width, -1, 1)
    with single_thread_blas():
        box = Box(lo, hi)
        fwd = forward_bounds(fnet, box)
        tight = forward_bounds(fnet, box, fwd, tighten=True)
        runs = [(b, mode) for b in (fwd, crown_bounds(fnet, box), tight)
                for mode in ("adaptive", "chord", "zero", "one")]
        for bounds, mode in runs:
            ub, _ = backward_bound(spec.spec, spec.Db, spec.EDb, bounds, box, fnet.hidden,
                                   mode)
            lam = np.array([[float(t) for t in spec.weights(r)] for r in range(len(spec.lam))])
            for _ in range(20):
                x = lo + (hi - lo) * rng.random(lo.shape)
                r = spec.rows_float(x, fnet.forward(x)) @ lam.T
                assert np.all(r <= ub)
                v = x
                for j, la in enumerate(fnet.hidden):
                    z = v @ la.W.T + la.b
                    assert np.all(bounds.l[j] <= z) and np.all(z <= bounds.u[j])
                    v = _act(la, z)


def _act(la, z):
    from verifier.engines.crown import act_float

    return act_float(la, z)


def test_random_relu_answers_agree_with_z3_and_replay():
    """Small random ReLU nets: unsat answers are confirmed by z3 on the whole box."""
    from verifier.engines.relu_bab import Engine, leaf_query
    from verifier.engines.z3run import run_z3

    rng = np.random.default_rng(11)
    seen = set()
    for trial in range(6):
        net = random_relu_net(rng, [2, 4, 4, 1])
        thr = float(rng.uniform(0.0, 1.0))
        text = ("(declare-const X_0 Real)(declare-const X_1 Real)(declare-const Y_0 Real)"
                "(assert (and (>= X_0 -1) (<= X_0 1) (>= X_1 -1) (<= X_1 1)))"
                f"(assert (>= Y_0 {thr!r}))")
        prop = parse_vnnlib(text)
        res = decide(net, prop, 30)
        seen.add(res.answer)
        eng = Engine(net, prop, 30)
        s = _Spec(eng.fnet, prop.disjuncts[0])
        box = Box(s.lo[None], s.hi[None])
        bounds = forward_bounds(eng.fnet, box)
        z3res = run_z3(leaf_query(eng, s, s.lo, s.hi, bounds), 30)
        assert res.answer == z3res.answer, (trial, res.answer, z3res.answer)
        if res.answer == "sat":
            y = net.evaluate_exact(res.witness_x)
            assert y[0] >= Fraction(thr)
    assert seen == {"sat", "unsat"}


def test_two_workers_agree_and_keep_every_leaf(monkeypatch):
    """Branch and bound on two forked workers: the same answers as on one, every witness
    replays, and the leaves z3 closed in the workers come back (uniquely named) as `.smt2`
    texts that z3 answers `unsat` again."""
    import verifier.engines.relu_bab as rb
    from verifier.engines.z3run import run_z3

    monkeypatch.setattr(rb, "Z3_MAX_UNSTABLE", 100)  # every open box may go to z3
    monkeypatch.setattr(rb, "ALPHA_ITERS", 0)
    rng = np.random.default_rng(23)
    grid = np.stack(np.meshgrid(np.linspace(-1, 1, 101), np.linspace(-1, 1, 101)), -1)
    seen, leaves = set(), 0
    for trial in range(6):
        net = random_relu_net(rng, [2, 8, 8, 1])
        top = float(np.max(net.evaluate_float(grid.reshape(-1, 2))))
        thr = top + (0.003 if trial % 3 else -0.01)  # mostly unsat cases near the max
        text = ("(declare-const X_0 Real)(declare-const X_1 Real)(declare-const Y_0 Real)"
                "(assert (or (and (>= X_0 -1) (<= X_0 0) (>= X_1 -1) (<= X_1 1))"
                " (and (>= X_0 0) (<= X_0 1) (>= X_1 -1) (<= X_1 1))))"
                f"(assert (>= Y_0 {thr!r}))")
        prop = parse_vnnlib(text)
        res = decide(net, prop, 10, workers=2)
        one = decide(net, prop, 10, workers=1)
        seen.add(res.answer)
        assert res.answer == one.answer and res.answer in ("sat", "unsat"), trial
        if thr <= top:
            assert res.answer == "sat"
        if res.answer == "sat":
            assert net.evaluate_exact(res.witness_x)[0] >= Fraction(thr)
        else:
            assert len(res.smt) == res.stats.get("z3_unsat", 0)
            assert len({name for name, _ in res.smt}) == len(res.smt)
            for _, smt in res.smt:
                assert run_z3(smt, 60).answer == "unsat"
            leaves += len(res.smt)
    assert seen == {"sat", "unsat"} and leaves > 0


def test_disjuncts_sharing_a_box_are_decided_together():
    """`(or (and Y_1 <= Y_0) (and Y_2 <= Y_0))` on one box is one branch and bound tree
    (closed only where every case is) and answers as the cases one by one do; z3 agrees
    with the grouped leaf query on the whole box."""
    import verifier.engines.relu_bab as rb
    from verifier.engines.z3run import run_z3

    rng = np.random.default_rng(5)
    head = ("(declare-const X_0 Real)(declare-const X_1 Real)(declare-const Y_0 Real)"
            "(declare-const Y_1 Real)(declare-const Y_2 Real)"
            "(assert (and (>= X_0 -1) (<= X_0 1) (>= X_1 -1) (<= X_1 1)))")
    seen = set()
    for trial in range(5):
        net = random_relu_net(rng, [2, 4, 4, 3])
        shift = [float(v) for v in rng.uniform(0.0, 1.5, size=2)]
        cases = [f"(and (<= (+ Y_1 {shift[0]!r}) Y_0))", f"(and (<= (+ Y_2 {shift[1]!r}) Y_0))"]
        prop = parse_vnnlib(head + "(assert (or " + " ".join(cases) + "))")
        assert len(rb._groups(prop)) == 1
        res = decide(net, prop, 10, workers=1)
        alone = [decide(net, parse_vnnlib(head + f"(assert {c})"), 10).answer for c in cases]
        seen.add(res.answer)
        assert res.answer == ("sat" if "sat" in alone else "unsat"), (trial, alone)
        if res.answer == "sat":
            y = net.evaluate_exact(res.witness_x)
            assert any(y[k] + Fraction(shift[k - 1]) <= y[0] for k in (1, 2))
        eng = rb.Engine(net, prop, 10)
        s = _Spec(eng.fnet, prop.disjuncts)
        bounds = forward_bounds(eng.fnet, Box(s.lo[None], s.hi[None]))
        assert run_z3(rb.leaf_query(eng, s, s.lo, s.hi, bounds), 60).answer == res.answer
    assert seen == {"sat", "unsat"}


def test_size_mismatch_is_a_spec_error():
    net = load_onnx(os.path.join(TEST, "test_tiny.onnx"))
    prop = read_vnnlib(os.path.join(TEST, "test_prop.vnnlib"))
    with pytest.raises(SpecError, match="5 inputs"):
        decide(net, prop, 5)


def test_cli_bad_input_exits_2(tmp_path, capsys):
    bad = tmp_path / "p.vnnlib"
    bad.write_text("(declare-const X_0 Real)\n(assert (foo X_0))\n")
    code = vnn.main(["--onnx", os.path.join(TEST, "test_tiny.onnx"), "--vnnlib", str(bad)])
    assert code == 2
    assert "p.vnnlib:2:10: error: unsupported operator `foo`" in capsys.readouterr().err


def test_cli_workers_must_be_positive(capsys):
    code = vnn.main(["--onnx", "n.onnx", "--vnnlib", "p.vnnlib", "--workers", "0"])
    assert code == 2
    assert "--workers must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("threshold, expected", [("0.7311", "unsat"), ("0.7305", "sat")])
def test_sigmoid_network(threshold, expected):
    """y = sigmoid(x) on [-1, 1]^4: sigmoid(1) = 0.731058..., so Y_0 >= 0.7311 is
    impossible and Y_0 >= 0.7305 is reached near x_0 = 1 (replayed at 60 digits)."""
    path = os.path.join(DATA, "marabou-layer-zoo", "sigmoid.onnx")
    text = "".join(f"(declare-const X_{i} Real)" for i in range(4))
    text += "".join(f"(declare-const Y_{i} Real)" for i in range(4))
    text += "".join(f"(assert (>= X_{i} -1))(assert (<= X_{i} 1))" for i in range(4))
    text += f"(assert (>= Y_0 {threshold}))"
    prop = parse_vnnlib(text)
    res = decide(load_onnx(path), prop, 30)
    assert res.answer == expected
    if expected == "sat":
        assert ort_holds(path, prop, res.witness_x, [float(v) for v in res.witness_y])


def test_time_limit_holds_with_many_disjuncts():
    """1000 disjuncts over different small boxes: `timeout` (or an answer) within the limit,
    not minutes of per-disjunct searches."""
    import time

    from verifier.engines.relu_bab import decide
    from verifier.onnx_import import load_onnx
    from verifier.vnnlib import parse_vnnlib

    net = load_onnx(os.path.join(DATA, "vnncomp2021-acasxu",
                                 "ACASXU_run2a_1_1_batch_2000.onnx"))
    rng = np.random.default_rng(0)
    lines = [f"(declare-const X_{i} Real)" for i in range(5)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(5)]
    ds = []
    for _ in range(1000):
        c = rng.uniform(-0.3, 0.3, 5)
        box = " ".join(f"(>= X_{i} {c[i] - 0.01:.4f}) (<= X_{i} {c[i] + 0.01:.4f})"
                       for i in range(5))
        ds.append(f"(and {box} (>= Y_0 1000.0))")
    lines.append("(assert (or " + " ".join(ds) + "))")
    prop = parse_vnnlib("\n".join(lines) + "\n")
    t0 = time.perf_counter()
    res = decide(net, prop, 5.0, workers=1)
    assert res.answer in ("timeout", "unsat"), res.answer
    assert time.perf_counter() - t0 < 15.0
