"""Artifacts past the byte limit: a clear error (exit 2) and nothing written."""

from __future__ import annotations

import os
import subprocess
import sys


def test_an_artifact_past_the_limit_writes_nothing(tmp_path):
    spec = tmp_path / "ab.snn"
    spec.write_text("input x : real[2] in [0, 1]\nclaim c: x[0] + x[1] <= 2\n")
    out = tmp_path / "out"
    env = dict(os.environ, SNN_VERIFY_MAX_ARTIFACT_BYTES="100")
    r = subprocess.run([sys.executable, "-m", "verifier", str(spec), "-o", str(out),
                        "--no-cache"], capture_output=True, text=True, env=env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "too large: artifact ab.c.smt2" in r.stderr and "limit 100" in r.stderr
    assert not out.exists() or not os.listdir(out)
    env["SNN_VERIFY_MAX_ARTIFACT_BYTES"] = str(10**6)
    r = subprocess.run([sys.executable, "-m", "verifier", str(spec), "-o", str(out),
                        "--no-cache", "--emit", "smtlib"], capture_output=True, text=True,
                       env=env)
    assert r.returncode == 0 and (out / "ab.c.smt2").exists(), r.stderr
