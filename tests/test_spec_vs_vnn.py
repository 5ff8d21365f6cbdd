"""ACAS Xu properties written as `.snn` claims get the answers `verify-vnn` gives.

The spec path routes a piecewise-linear claim on a concrete-weight network to the same
branch and bound as `verify-vnn` (`engines/relu_route.py`). Each VNN-LIB property is turned into
a claim (its unsafe region negated: `max(e_1, ..., e_k) > 0`), and the verdict must match the
VNN-LIB answer on the same ONNX file: `proved` for `unsat`, `refuted` (with a replayed
counterexample) for `sat`. The networks are ACAS Xu 1_6 and 1_7 as shipped in VNN-COMP 2021's
`test` benchmark.
"""

from __future__ import annotations

import os
import shutil
from fractions import Fraction

import pytest

pytest.importorskip("onnx")

from verifier import run
from verifier.vnn import check
from verifier.vnnlib import exact_numeral, read_vnnlib, spec_text

DATA = os.path.join(os.path.dirname(__file__), "data")


@pytest.mark.parametrize("net,prop,expected", [
    ("test_unsat", "prop_1", "unsat"),
    ("test_unsat", "prop_3", "unsat"),
    ("test_sat", "prop_3", "sat"),
    ("test_sat", "prop_4", "sat"),
])
def test_acasxu_property_as_spec_agrees_with_vnn(net, prop, expected, tmp_path):
    onnx_path = os.path.join(DATA, "vnncomp2021-test", f"{net}.onnx")
    vnnlib_path = os.path.join(DATA, "vnncomp2021-acasxu", f"{prop}.vnnlib")
    shutil.copy(onnx_path, tmp_path / "net.onnx")
    spec = tmp_path / "acas.snn"
    spec.write_text(spec_text(read_vnnlib(vnnlib_path), "net.onnx"))
    result, _ = check(onnx_path, vnnlib_path, timeout=60, workers=1)
    assert result.answer == expected
    (v,) = run.check(run.load(str(spec)), 60)
    assert v.engine == "relu-bab"
    assert v.verdict == {"unsat": "proved", "sat": "refuted"}[expected], v.reason
    if expected == "sat":
        # the counterexample replayed on the spec's own terms, exactly
        assert v.violation["exact"] is True
        assert set(v.counterexample) == {f"x_0[{i}]" for i in range(5)}


def test_exact_numerals():
    for q in (Fraction(-303531156, 10**9), Fraction(1, 3), Fraction(0), Fraction(-7, 8),
              Fraction(5), Fraction(1, 1024)):
        text = exact_numeral(q)
        assert Fraction(text.strip("()")) == q
