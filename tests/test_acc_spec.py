"""The adaptive cruise control property of VNN-COMP 2026 as a spec agrees with `verify-vnn` on
its VNN-LIB 2.0 file (polynomial constraints on inputs and output, `or`, `!=`, `==`).

Oracles: the two front ends' answers against each other, and a counterexample of the spec
checked here with onnxruntime against the VNN-LIB file's unsafe region (read by our reader,
evaluated in exact rationals at the onnxruntime output).
"""

from __future__ import annotations

import os
from fractions import Fraction

import numpy as np
from tools import require

require("onnx")
ort = require("onnxruntime")

from verifier import run, vnn
from verifier.vnnlib2 import Var, read_property

D = os.path.join(os.path.dirname(__file__), "data", "vnncomp2026")
NET = os.path.join(D, "acc-2000000-64-64-64-64-retrain-100000-200000-0.9.onnx")


def _vnn(prop, capsys) -> str:
    vnn.main(["--onnx", NET, "--vnnlib", str(prop), "--timeout", "100", "--workers", "1"])
    return capsys.readouterr().out.split("\n")[0]


def test_box_2_5_is_proved_as_spec_and_unsat_as_vnnlib(capsys):
    model = run.load(os.path.join(D, "acc_box_2_5.snn"))
    assert len(model.obligations) > 1 and {ob.case_of for ob in model.obligations} == {"safe"}
    verdicts = run.check(model, 100)
    assert {v.verdict for v in verdicts} == {"proved"}, [v.reason for v in verdicts]
    assert _vnn(os.path.join(D, "acc_box_2_5.vnnlib"), capsys) == "unsat"


def test_a_tighter_band_is_refuted_with_a_witness_in_the_unsafe_region(tmp_path, capsys):
    """The band |y| <= 100.001 shrunk to |y| <= 1.001 in both texts: the network's output
    leaves it, so the spec is refuted and the VNN-LIB query `sat`."""
    spec = open(os.path.join(D, "acc_box_2_5.snn")).read().replace("100.001", "1.001")
    prop = open(os.path.join(D, "acc_box_2_5.vnnlib")).read().replace("100.001", "1.001")
    assert spec.count("1.001") == 2 and prop.count("1.001") == 2
    (tmp_path / "acc.snn").write_text(spec.replace(
        'load "', f'load "{D}{os.sep}'))
    (tmp_path / "acc.vnnlib").write_text(prop)
    model = run.load(str(tmp_path / "acc.snn"))
    verdicts = run.check(model, 100)
    refuted = [v for v in verdicts if v.verdict == "refuted"]
    assert refuted
    query = read_property(str(tmp_path / "acc.vnnlib"))
    sess = ort.InferenceSession(NET, providers=["CPUExecutionProvider"])
    for v in refuted:
        x = [Fraction(v.counterexample[k]) for k in ("u[0]", "u[1]")]
        y = sess.run(None, {sess.get_inputs()[0].name:
                            np.array([[float(x[0]), float(x[1])]], dtype=np.float32)})[0]
        env = {Var("f", "X", 0): x[0], Var("f", "X", 1): x[1],
               Var("f", "Y", 0): Fraction(float(y.ravel()[0]))}
        assert query.holds(env)
    assert _vnn(tmp_path / "acc.vnnlib", capsys) == "sat"
