"""A reader that stops early (`verify SPEC | head -1`) is not our bug: no internal error, the
shell's status for a writer stopped by SIGPIPE (141)."""

from __future__ import annotations

import os
import subprocess
import sys

DATA = os.path.join(os.path.dirname(__file__), "data", "vnncomp2021-test")


def _closed_reader(cmd: list[str]) -> subprocess.CompletedProcess:
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # nobody reads: the first write raises EPIPE
    err = p.stderr.read().decode()
    p.wait(timeout=120)
    return subprocess.CompletedProcess(cmd, p.returncode, "", err)


def test_verify_with_a_closed_stdout(tmp_path):
    spec = tmp_path / "s.snn"
    spec.write_text("input x : real[2] in [-1, 1]\nclaim c: x[0] + x[1] <= 2\n")
    r = _closed_reader([sys.executable, "-m", "verifier", str(spec), "--no-cache"])
    assert "internal error" not in r.stderr, r.stderr
    assert r.returncode == 141


def test_verify_vnn_with_a_closed_stdout():
    r = _closed_reader([sys.executable, "-m", "verifier.vnn", "--onnx",
                        os.path.join(DATA, "test_tiny.onnx"), "--vnnlib",
                        os.path.join(DATA, "test_tiny.vnnlib"), "--workers", "1"])
    assert "internal error" not in r.stderr, r.stderr
    assert r.returncode == 141
