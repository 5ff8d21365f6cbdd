"""Golden artifacts per case, each also checked for validity by the tool that reads it.

tests/golden/<case>/spec.snn is run with every emitter; the files must equal the recorded
ones byte for byte (regenerate with `pytest tests/test_golden.py --update-goldens`), z3 must
answer every .smt2 file exactly as the report says, and coqc must compile every .v file.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import z3
from tools import coqc as _coqc

from verifier.cli import main

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "spec.snn").exists())


def _run(case: str, out: Path, capsys) -> dict:
    code = main([str(GOLDEN / case / "spec.snn"), "-o", str(out), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == report["exit"]
    return report["specs"][0]




@pytest.mark.parametrize("case", CASES)
def test_artifacts_match_goldens(case, tmp_path, capsys, update_goldens):
    _run(case, tmp_path, capsys)
    produced = {p.name: p.read_text() for p in tmp_path.iterdir()  # the HTML report carries
                if not p.name.startswith(".") and p.suffix != ".html"}  # timings: no golden
    expected_dir = GOLDEN / case
    if update_goldens:
        for old in expected_dir.iterdir():
            if old.name != "spec.snn":
                old.unlink()
        for name, text in produced.items():
            (expected_dir / name).write_text(text)
    expected = {p.name: p.read_text() for p in expected_dir.iterdir() if p.name != "spec.snn"}
    assert sorted(produced) == sorted(expected)
    for name in produced:
        assert produced[name] == expected[name], f"{case}/{name} differs from its golden"


@pytest.mark.parametrize("case", CASES)
def test_z3_answers_every_smt2_as_reported(case, tmp_path, capsys):
    report = _run(case, tmp_path, capsys)
    checked = 0
    for ob in report["obligations"]:
        path = ob.get("smt2_file")
        if path is None:
            continue
        solver = z3.Solver()
        solver.set("timeout", 60_000)
        solver.from_file(path)
        answer = str(solver.check())
        if ob["smt_answer"] in ("sat", "unsat"):  # a recorded timeout may resolve with more time
            assert answer == ob["smt_answer"], (ob["name"], answer, ob["smt_answer"])
        assert not (ob["verdict"] == "proved" and answer == "sat"), ob["name"]
        assert not (ob["verdict"] == "refuted" and answer == "unsat"), ob["name"]
        if ob["verdict"] == "proved" and ob["engine"] in ("z3", "z3-abstraction"):
            assert answer == "unsat"
        checked += 1
    assert checked >= 1


@pytest.mark.parametrize("case", CASES)
def test_z3_command_line_agrees(case, tmp_path, capsys):
    exe = shutil.which("z3")
    if exe is None:
        pytest.skip("no z3 executable on PATH (the Python API test above still ran)")
    report = _run(case, tmp_path, capsys)
    for ob in report["obligations"]:
        if ob.get("smt2_file") and ob["smt_answer"] in ("sat", "unsat"):
            out = subprocess.run([exe, "-T:60", ob["smt2_file"]], capture_output=True, text=True)
            assert out.stdout.split()[0] == ob["smt_answer"], ob["name"]


@pytest.mark.parametrize("case", CASES)
def test_coqc_compiles_the_v_file(case, tmp_path, capsys):
    coqc = _coqc()
    if coqc is None:
        pytest.skip("coqc not installed")
    _run(case, tmp_path, capsys)
    files = list(tmp_path.glob("*.v"))
    assert files
    for f in files:
        res = subprocess.run([coqc, f.name], cwd=tmp_path, capture_output=True, text=True,
                             timeout=600)
        assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("case", CASES)
def test_two_runs_are_byte_identical(case, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    _run(case, a, capsys)
    _run(case, b, capsys)
    for f in a.iterdir():
        assert _untimed(f.read_bytes()) == _untimed((b / f.name).read_bytes()), f.name


def _untimed(data: bytes) -> bytes:
    """The HTML report without its time column, the only part that differs between runs."""
    return re.sub(rb'<td class="time">[^<]*</td>', b"", data)
