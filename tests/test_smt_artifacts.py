"""Every `.smt2` file written for a claim answers, in z3, what the report says of it.

A file next to a `proved` claim must be answered `unsat` (it re-checks the proof or a box of
it); a file z3 answers `sat` must never back a `proved`. z3 runs on the files as written, in a
fresh process: the oracle is z3 itself, not our reading of it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")
SPECS = ["examples/gauss.snn", "examples/gauss_fit.snn"]


def z3_answer(path: str, seconds: int = 20) -> str:
    code = (f"import sys, z3\ns = z3.Solver()\ns.set('timeout', {seconds * 1000})\n"
            "s.from_file(sys.argv[1])\nprint(s.check())")
    out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True,
                         timeout=seconds + 30, check=False)
    return out.stdout.strip()


@pytest.mark.parametrize("spec", SPECS)
def test_every_smt2_of_a_proved_claim_is_unsat(spec, tmp_path):
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "verifier", os.path.join(ROOT, spec), "-o",
                          str(out), "--emit", "smtlib,json", "--no-cache"],
                         capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode in (0, 1), run.stderr
    stem = os.path.basename(spec)[: -len(".snn")]
    report = json.loads((out / f"{stem}.json").read_text())
    verdicts = {o["name"]: o["verdict"] for o in report["obligations"]}
    assert "proved" in verdicts.values()
    files = sorted(f for f in os.listdir(out) if f.endswith(".smt2"))
    assert files
    for f in files:
        claim = f[len(stem) + 1:].split(".")[0]
        answer = z3_answer(str(out / f))
        if verdicts[claim] == "proved":
            assert answer == "unsat", (f, answer)
        elif verdicts[claim] == "refuted":
            assert answer != "unsat", (f, answer)
