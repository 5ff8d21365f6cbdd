"""Every bundled spec and example runs end to end and decides its claims without error."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from tools import require

from verifier import api, run
from verifier.elaborate import elaborate

ROOT = Path(__file__).resolve().parents[1]
# the batch library has its own, stricter test (tests/test_batch_backprop.py)
SPECS = sorted(p for p in list((ROOT / "specs").glob("*.snn")) + list((ROOT / "examples").glob("*.snn")))
EXPECTED_EXIT = {"mlp.snn": 1, "gauss.snn": 1}  # both contain deliberately false claims
# the architectures of the mission: each decides an identity on its derivatives and a bound
MISSION = ("lstm.snn", "gru.snn", "transformer.snn")


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
    if path.name in MISSION:  # exit 0 above: every one of them proved
        kinds = {o.kind for o in model.obligations}
        assert {"identity", "bound"} <= kinds, kinds




def _torch_net(name: str, weights: dict, torch):
    """The concrete instance `c` of a mission spec as the PyTorch module it claims to be."""
    nn = torch.nn
    if name == "transformer.snn":
        d, ff = len(weights["norm1.weight"]), len(weights["linear1.bias"])
        body = nn.TransformerEncoderLayer(d, 2, ff, dropout=0.0, batch_first=True)
    else:
        cls = nn.LSTM if name == "lstm.snn" else nn.GRU
        layers = sum(k.startswith("weight_ih_l") for k in weights)
        n, hidden = len(weights["weight_ih_l0"][0]), len(weights["weight_hh_l0"][0])
        body = cls(n, hidden, num_layers=layers, batch_first=True)
    state = {k: torch.tensor(v, dtype=torch.float64) for k, v in weights.items()
             if not k.startswith("proj.")}
    body = body.double().eval()
    body.load_state_dict(state)
    head_w = torch.tensor(weights["proj.weight"], dtype=torch.float64)
    head_b = torch.tensor(weights["proj.bias"], dtype=torch.float64)

    def run_net(x):
        with torch.no_grad():
            out = body(x)
            seq = out if name == "transformer.snn" else out[0]
            row = seq[:, 0] if name == "transformer.snn" else seq[:, -1]
            return (row @ head_w.T + head_b)[:, 0].numpy()

    return run_net


def _trivial_bound(name: str, weights: dict) -> tuple[float, float]:
    """What the last layer alone implies: |h| < 1 for the recurrent state; for LayerNorm's
    normalised row of width d, |n_i| <= sqrt(d - 1)."""
    w = np.array(weights["proj.weight"][0])
    b = weights["proj.bias"][0]
    if name == "transformer.snn":
        g, beta = np.array(weights["norm2.weight"]), np.array(weights["norm2.bias"])
        r, c = np.sqrt(len(w) - 1) * np.abs(w * g).sum(), w @ beta + b
        return c - r, c + r
    return b - np.abs(w).sum(), b + np.abs(w).sum()


@pytest.mark.parametrize("name", MISSION)
def test_concrete_instance_is_pytorch_and_its_band_is_tight(name):
    """The concrete network `c` of each mission spec computes what PyTorch computes from the
    same weight file, every sampled output lies in the band the spec proves, and the band is
    far tighter than what the read-out layer alone implies (the claim is not vacuous)."""
    torch = require("torch")
    path = ROOT / "specs" / name
    text = path.read_text()
    lo, arg, hi = re.search(r"claim output_band: (\S+) < c\((\w+)\)\[0\] < (\S+)", text).groups()
    lo, hi = float(lo), float(hi)
    weight_file = re.search(r'network c\(.*\) load "([^"]+)"', text).group(1)
    weights = json.loads((path.parent / weight_file).read_text())
    spec = elaborate(str(path))
    (var,) = [v for v in spec.inputs if v.name == arg]
    box_lo = np.array([float(e) for e in var.lo]).reshape(var.shape)
    box_hi = np.array([float(e) for e in var.hi]).reshape(var.shape)
    rng = np.random.default_rng(0)
    x = rng.uniform(box_lo, box_hi, size=(4000, *var.shape))
    x[:2] = box_lo, box_hi  # two corners

    want = _torch_net(name, weights, torch)(torch.tensor(x))
    ours = api.compile_network(str(path), name="c").forward(x.reshape(len(x), -1))[:, 0]
    assert np.allclose(ours, want, rtol=0, atol=1e-9)
    assert lo < want.min() and want.max() < hi
    t_lo, t_hi = _trivial_bound(name, weights)
    assert t_lo <= lo < hi <= t_hi
    assert hi - lo < (t_hi - t_lo) / 2
