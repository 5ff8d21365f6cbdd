"""The table and the JSON report give each obligation's proof counts in the written files:
Coq lemmas closed by Qed or Admitted (with the reason) and Lean theorems left as sorry."""

from __future__ import annotations

import json
import re
import subprocess
import sys

SPEC = """input t : real
claim deriv: d(tanh(t))/d(t) == 1 - tanh(t)^2
claim wrong: d(tanh(t))/d(t) == 1 - tanh(t)
"""


def test_proof_counts_in_table_and_json(tmp_path):
    (tmp_path / "p.snn").write_text(SPEC)
    cmd = [sys.executable, "-m", "verifier", "p.snn", "-o", "out", "--emit", "coq,lean",
           "--no-cache"]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         check=False)
    assert out.returncode == 1, out.stderr  # `wrong` is refuted
    v = (tmp_path / "out" / "p.v").read_text()
    block = v[v.index("(* obligation deriv"):]
    block = block[:block.index("(* obligation", 3)] if "(* obligation" in block[3:] else block
    qed = len(re.findall(r"^Qed\.$", block, re.MULTILINE))
    assert qed >= 1
    line = next(x for x in out.stdout.splitlines() if "deriv" in x and "proofs" in x)
    assert f"Coq {qed} Qed" in line and "sorry" in line
    report = subprocess.run(cmd + ["--json"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=600, check=False)
    obs = {o["name"]: o for o in json.loads(report.stdout)["specs"][0]["obligations"]}
    assert obs["deriv"]["proofs"]["coq_qed"] == qed
    assert obs["wrong"]["verdict"] == "refuted"
