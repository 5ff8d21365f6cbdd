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
from verifier.vnnlib import read_vnnlib

DATA = os.path.join(os.path.dirname(__file__), "data")


def decimal(q: Fraction) -> str:
    """An exact numeral for q: a finite decimal when there is one, else p/q."""
    d, k = q.denominator, 0
    while d % 10 == 0 or d % 2 == 0 or d % 5 == 0:
        if d % 10 == 0:
            d //= 10
        elif d % 2 == 0:
            d //= 2
        else:
            d //= 5
        k += 1
    if d != 1:
        return f"({q.numerator}/{q.denominator})"
    scaled = q * 10**k
    assert scaled.denominator == 1
    digits = str(abs(scaled.numerator)).rjust(k + 1, "0")
    text = digits[:-k] + "." + digits[-k:] if k else digits
    return ("-" if q < 0 else "") + text


def spec_text(prop, onnx_name: str) -> str:
    """The property's negation as one claim over its input box."""
    (d,) = prop.disjuncts
    cons = d.output_constraints()
    assert cons and all(not c.strict and not c.x for c in cons)
    exprs = []
    for c in cons:  # unsafe where sum a_j Y_j + const <= 0, so safe where some sum > 0
        parts = [f"{decimal(a)} * n(x)[{j}]" for j, a in c.y]
        if c.const:
            parts.append(decimal(c.const))
        exprs.append(" + ".join(parts))
    safe = exprs[0] if len(exprs) == 1 else f"max({', '.join(exprs)})"
    lo = ", ".join(decimal(v) for v in d.lo)
    hi = ", ".join(decimal(v) for v in d.hi)
    return (f"input x : real[{prop.n_inputs}] in box([{lo}], [{hi}])\n"
            f'network n(in={prop.n_inputs}) load "{onnx_name}" {{ }}\n'
            f"claim safe: {safe} > 0\n")


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
        assert set(v.counterexample) == {f"x[{i}]" for i in range(5)}
