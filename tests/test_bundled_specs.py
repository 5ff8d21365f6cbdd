"""Every bundled spec and example runs end to end and decides its claims without error."""

from __future__ import annotations

from pathlib import Path

import pytest

from verifier import run

ROOT = Path(__file__).resolve().parents[1]
# the batch library has its own, stricter test (tests/test_batch_backprop.py)
SPECS = sorted(p for p in list((ROOT / "specs").glob("*.snn")) + list((ROOT / "examples").glob("*.snn")))
EXPECTED_EXIT = {"mlp.snn": 1, "gauss.snn": 1}  # both contain deliberately false claims


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_bundled_spec_runs(path):
    model = run.load(str(path))
    verdicts = run.check(model, timeout=20)
    assert len(verdicts) == len(model.obligations)
    for v in verdicts:
        assert v.verdict in ("proved", "refuted", "unknown")
        if v.verdict == "refuted":
            assert v.counterexample
    assert run.exit_status(verdicts) == EXPECTED_EXIT.get(path.name, 0), [
        (v.name, v.verdict, v.reason) for v in verdicts]
