"""Jacobian claims on wide ReLU networks (`relu_grad`): monotonicity and per-input Lipschitz
bounds decided by interval Jacobians over input boxes.

Oracles: torch autograd on a torch copy of the ONNX network (its initializers): the
enclosure of every random box must contain the Jacobians torch computes at points of the box;
thresholds set from dense torch samples (a claim with a margin beyond every sampled value
must be proved, one violated by a sampled value refuted) and each counterexample checked with
torch's Jacobian there.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_multinet import write_mlp
from tools import require

require("onnx")
torch = require("torch")

from onnx import load, numpy_helper

from verifier import run
from verifier.engines.relu_grad import _Net
from verifier.onnx_import import load_onnx

BOX = ([-1.0, -0.5], [1.0, 1.5])


def torch_model(path):
    init = {t.name: numpy_helper.to_array(t) for t in load(path).graph.initializer}
    layers = []
    k = 0
    while f"W{k}" in init:
        W, b = init[f"W{k}"].astype(np.float64), init[f"b{k}"].astype(np.float64)
        lin = torch.nn.Linear(W.shape[1], W.shape[0]).double()
        with torch.no_grad():
            lin.weight.copy_(torch.tensor(W))
            lin.bias.copy_(torch.tensor(b))
        layers += [lin, torch.nn.ReLU()]
        k += 1
    return torch.nn.Sequential(*layers[:-1])


def jacobians(model, X):
    X = torch.tensor(X, requires_grad=True)
    (G,) = torch.autograd.grad(model(X)[:, 0].sum(), X)
    return G.numpy()


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    d = tmp_path_factory.mktemp("grad")
    path = write_mlp(d / "f.onnx", np.random.default_rng(11), [2, 32, 32, 1])
    model = torch_model(path)
    X = np.random.default_rng(0).uniform(BOX[0], BOX[1], size=(20000, 2))
    return d, path, model, X, jacobians(model, X)


def test_enclosures_contain_torchs_jacobians(net):
    d, path, model, _, _ = net
    onnx_net = load_onnx(path)
    lo0, hi0 = np.array(BOX[0]), np.array(BOX[1])
    fnet = _Net(onnx_net.chain(list(lo0), list(hi0)))
    rng = np.random.default_rng(1)
    for _ in range(60):
        a, b = rng.uniform(lo0, hi0), rng.uniform(lo0, hi0)
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        Jl, Ju = fnet.jacobian(lo, hi)
        G = jacobians(model, rng.uniform(lo, hi, size=(300, 2)))
        assert np.all(G >= Jl[0] - 1e-9) and np.all(G <= Ju[0] + 1e-9)


def _decide(d, claim):
    (d / "g.snn").write_text('input u : real[2] in box([-1, -0.5], [1, 1.5])\n'
                             'network n(in=2) load "f.onnx" { }\n' + f"claim c: {claim}\n")
    (v,) = run.check(run.load(str(d / "g.snn")), 60)
    return v


@pytest.mark.parametrize("i", [0, 1])
def test_bounds_on_one_partial_derivative(net, i):
    d, path, model, X, G = net
    lo, hi = float(G[:, i].min()), float(G[:, i].max())
    span = hi - lo
    v = _decide(d, f"d(n(u)[0])/d(u[{i}]) >= {lo - 0.5 * span - 1:.4f}")
    assert v.engine == "relu-jacobian" and v.verdict == "proved", v.reason
    v = _decide(d, f"abs(d(n(u)[0])/d(u[{i}])) <= {max(abs(lo), abs(hi)) + span + 1:.4f}")
    assert v.verdict == "proved", v.reason
    t = lo + 0.25 * span  # some sampled derivative is below: false
    v = _decide(d, f"d(n(u)[0])/d(u[{i}]) >= {t:.4f}")
    assert v.engine == "relu-jacobian" and v.verdict == "refuted"
    x = np.array([[float(__import__("fractions").Fraction(v.counterexample[f"u[{k}]"]))
                   for k in range(2)]])
    assert np.all(x >= BOX[0]) and np.all(x <= BOX[1])
    assert jacobians(model, x)[0, i] < t + 1e-9


def test_certificate_is_checked_and_a_hole_refused(net, tmp_path):
    """The split tree of a proof is re-validated by `verify-check`'s own interval evaluation
    of the claim's derivative terms; with one split removed the tree has a hole."""
    import json
    import shutil

    from verifier import check, cli

    d, path, model, X, G = net
    assert float(G[:, 1].min()) > -2.5  # the claim holds on the samples
    spec = tmp_path / "g.snn"
    shutil.copy(path, tmp_path / "f.onnx")
    spec.write_text('input u : real[2] in box([-1, -0.5], [1, 1.5])\n'
                    'network n(in=2) load "f.onnx" { }\n'
                    "claim c: d(n(u)[0])/d(u[1]) >= -5/2\n")
    out = tmp_path / "out"
    assert cli.main([str(spec), "-o", str(out), "--emit", "cert", "--no-cache", "-q"]) == 0
    cert = out / "g.c.cert.json"
    doc = json.loads(cert.read_text())
    assert doc["engine"] == "relu-jacobian" and len(doc["splits"]) >= 1
    report = check.check_certificate(str(cert), str(spec))
    assert report.valid and report.leaves == len(doc["closed"])
    node = min(doc["splits"], key=int)
    child = str(doc["splits"][node][2])
    doc["splits"].pop(node)
    doc["closed"].pop(child, None)
    cert.write_text(json.dumps(doc))
    with pytest.raises(check.Invalid):
        check.check_certificate(str(cert), str(spec))
