"""ACAS Xu properties written with `not` / `and` as `.snn` claims get `verify-vnn`'s answers.

Each VNN-LIB disjunct (unsafe where every constraint holds) becomes `claim safe_k: not (c_1
and ... and c_m)`: one clause, so one obligation whose conditions are the other constraints,
linear, decided by the ReLU engine through the VNN-LIB 2.0 path (`poly_route`). Oracle: the
answer `verify-vnn` gives on the same ONNX and VNN-LIB files (themselves checked against the
published VNN-COMP 2021 answers in `test_vnnlib.py`); a counterexample must replay exactly.
"""

from __future__ import annotations

import os
import shutil

import pytest

pytest.importorskip("onnx")

from verifier import run
from verifier.vnn import check
from verifier.vnnlib import _linear_text, exact_numeral, read_vnnlib

DATA = os.path.join(os.path.dirname(__file__), "data")


def bool_spec(prop, onnx_file: str) -> str:
    lines = [f'network n(in={prop.n_inputs}) load "{onnx_file}" {{ }}']
    for k, d in enumerate(prop.disjuncts):
        lo = ", ".join(exact_numeral(v) for v in d.lo)
        hi = ", ".join(exact_numeral(v) for v in d.hi)
        lines.insert(k, f"input x_{k} : real[{prop.n_inputs}] in box([{lo}], [{hi}])")
        atoms = [_linear_text([(a, f"n(x_{k})[{j}]") for j, a in c.y]
                              + [(a, f"x_{k}[{i}]") for i, a in c.x], c.const)
                 + (" < 0" if c.strict else " <= 0") for c in d.output_constraints()]
        lines.append(f"claim safe_{k}: not ({' and '.join(atoms)})")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("net,prop,expected", [
    ("test_unsat", "prop_3", "unsat"),
    ("test_sat", "prop_4", "sat"),
])
def test_acasxu_property_with_not_and_agrees_with_vnn(net, prop, expected, tmp_path):
    onnx_path = os.path.join(DATA, "vnncomp2021-test", f"{net}.onnx")
    vnnlib_path = os.path.join(DATA, "vnncomp2021-acasxu", f"{prop}.vnnlib")
    shutil.copy(onnx_path, tmp_path / "net.onnx")
    spec = tmp_path / "acas.snn"
    spec.write_text(bool_spec(read_vnnlib(vnnlib_path), "net.onnx"))
    result, _ = check(onnx_path, vnnlib_path, timeout=60, workers=1)
    assert result.answer == expected
    model = run.load(str(spec))
    assert [ob.name for ob in model.obligations] == ["safe_0"]
    assert len(model.obligations[0].hypotheses) >= 1
    (v,) = run.check(model, 60)
    assert v.engine == "relu-bab", (v.engine, v.reason)
    assert v.verdict == {"unsat": "proved", "sat": "refuted"}[expected], v.reason
    if expected == "sat":
        assert v.violation["exact"] is True
        assert set(v.counterexample) == {f"x_0[{i}]" for i in range(5)}
