"""`verify-vnn --certificate` on VNN-LIB 2.0 queries: the polynomial engine's certificates.

A query with polynomial constraints on one network (the ACC property) gets a certificate that
`verify-check` re-validates; a query the engines keep no certificate for (two networks) is
refused before any work with exit 2, the reason and a hint, and nothing is written."""

from __future__ import annotations

import json
import os

import pytest
from tools import require

require("onnx")

from verifier import check, vnn

HERE = os.path.dirname(__file__)
D = os.path.join(HERE, "data", "vnncomp2026")
ACC_NET = os.path.join(D, "acc-2000000-64-64-64-64-retrain-100000-200000-0.9.onnx")


def test_certificate_of_a_polynomial_vnnlib2_query_is_written_and_valid(tmp_path, capsys):
    cert = tmp_path / "c.json"
    prop = os.path.join(D, "acc_box_2_5.vnnlib")
    code = vnn.main(["--onnx", f"f={ACC_NET}", "--vnnlib", prop, "--timeout", "60",
                     "--workers", "1", "--certificate", str(cert)])
    assert (code, capsys.readouterr().out.split("\n")[0]) == (0, "unsat")
    doc = json.loads(cert.read_text())
    assert doc["kind"] == "poly" and doc["source"] == "vnnlib"
    r = check.check_certificate(str(cert))
    assert r.valid and r.leaves == len(doc["closed"]), r.message
    # another box of the same benchmark: not the file the certificate was made for
    other = tmp_path / "other.vnnlib"
    other.write_text(open(prop).read().replace("(<= X[0,0] 60.0)", "(<= X[0,0] 61.0)"))
    with pytest.raises(check.Invalid, match="sha256 differs"):
        check.check_certificate(str(cert), vnnlib=str(other))


def test_certificate_of_a_two_network_query_is_refused_up_front(tmp_path, capsys):
    cert = tmp_path / "c.json"
    answer = tmp_path / "answer.txt"
    code = vnn.main(["--onnx", "f=" + os.path.join(D, "iso_ACASXU_run2a_3_4_batch_2000.onnx"),
                     "--onnx", "g=" + os.path.join(
                         D, "iso_ACASXU_run2a_3_4_batch_2000_pruned5.onnx"),
                     "--vnnlib", os.path.join(D, "isomorphic_instance_1.vnnlib"),
                     "--timeout", "30", "--workers", "1", "--certificate", str(cert),
                     "--answer", str(answer)])
    err = capsys.readouterr().err
    assert code == 2
    assert "VNN-LIB 2.0" in err and "several networks" in err and "fix:" in err
    assert "Traceback" not in err
    assert not cert.exists() and not answer.exists()


def test_the_same_query_without_a_certificate_is_decided(tmp_path, capsys):
    """The refusal is about the certificate, not the query: on the box rPos in [0, 20], rVel in
    [-200, -160] no input is physically possible (z3 confirms 200 rPos >= rVel^2 has no
    solution there), so without --certificate the query is `unsat`."""
    import z3

    text = open(os.path.join(D, "acc_instance_1.vnnlib")).read()
    lines = text.split("\n")
    boxes = [k for k, line in enumerate(lines) if line.startswith("(assert (and (>= X[0,")]
    assert len(boxes) == 2
    lines[boxes[0]] = "(assert (and (>= X[0,0] 0.0) (<= X[0,0] 20.0)))"
    lines[boxes[1]] = "(assert (and (>= X[0,1] -200.0) (<= X[0,1] -160.0)))"
    prop = tmp_path / "acc_box_0_0.vnnlib"
    prop.write_text("\n".join(lines))
    p, v = z3.Reals("p v")
    s = z3.Solver()
    s.add(0 <= p, p <= 20, -200 <= v, v <= -160, p > 0, 200 * p >= v * v)
    assert s.check() == z3.unsat
    code = vnn.main(["--onnx", ACC_NET, "--vnnlib", str(prop), "--timeout", "30",
                     "--workers", "1"])
    out = capsys.readouterr().out
    assert (code, out.split("\n")[0]) == (0, "unsat")
