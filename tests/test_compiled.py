"""Compiled numeric functions against PyTorch autograd (float64) and our symbolic Program.

Oracles: PyTorch autograd (`torch.autograd.grad`, with `create_graph=True` for mixed
derivatives), the scalar fallback (`matrix=False`, code from the layer Program), and exact or
60-digit evaluation of the reverse-mode Program (`engines.replay.evaluate`).
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
from fractions import Fraction

import numpy as np
import pytest

from verifier import api, run
from verifier.engines.replay import evaluate

torch = pytest.importorskip("torch")
torch.set_default_dtype(torch.float64)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ACTS = ["tanh", "sigmoid", "softplus", "relu", "leaky_relu(0.1)", "identity"]
TORCH_ACTS = {
    "tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu, "identity": lambda z: z,
    "softplus": lambda z: torch.nn.functional.softplus(z, threshold=1e9),
    "leaky_relu(0.1)": lambda z: torch.nn.functional.leaky_relu(z, 0.1),
}


def close(ours, theirs, rtol=1e-10):
    """Relative agreement in norm (entries near zero are judged against the whole array)."""
    ours = np.asarray(ours, dtype=float)
    theirs = theirs.detach().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    scale = max(np.linalg.norm(theirs), 1e-300)
    assert np.linalg.norm(ours - theirs) <= rtol * scale, np.abs(ours - theirs).max()


def arch(n_in, widths, act, out=1, bias_last=True):
    layers = "".join(f"  dense({w}, {act})\n" for w in widths)
    last = f"  dense({out})\n" if bias_last else f"  dense({out}, bias=false)\n"
    return f"input x : real[{n_in}]\nnetwork f(in={n_in}) {{\n{layers}{last}}}\n"


def torch_forward(net, act):
    """A torch function of (X, params) computing the same chain as `net`."""
    fn = TORCH_ACTS[act]
    n = len(net.network.layers)

    def f(X, P):
        A = X
        for k in range(1, n + 1):
            A = A @ P[f"W{k}"].T + P.get(f"b{k}", 0.0)
            A = fn(A) if k < n else A
        return A

    return f


def torch_params(net):
    return {k: torch.tensor(v, requires_grad=True) for k, v in net.params.items()}


def grads_of(value, P):
    gs = torch.autograd.grad(value, list(P.values()), allow_unused=True, retain_graph=True)
    return {k: (g if g is not None else torch.zeros_like(P[k])) for k, g in zip(P, gs)}


@pytest.fixture(scope="module", params=ACTS)
def case(request):
    act = request.param
    net = api.compile_text(arch(3, (5, 4), act, out=2), seed=1)
    rng = np.random.default_rng(2)
    X, Y = rng.normal(size=(7, 3)), rng.normal(size=(7, 2))
    return act, net, X, Y


def test_forward_and_jacobian(case):
    act, net, X, _ = case
    f, P = torch_forward(net, act), torch_params(net)
    Xt = torch.tensor(X)
    close(net.forward(X), f(Xt, P))
    J = torch.autograd.functional.jacobian(lambda x: f(x[None], P)[0], Xt[0])
    close(net.jacobian(X)[0], J)


@pytest.mark.parametrize("loss", ["mse", "relative_l2"])
def test_loss_gradients(case, loss):
    act, net, X, Y = case
    f, P = torch_forward(net, act), torch_params(net)
    F, Yt = f(torch.tensor(X), P), torch.tensor(Y)
    L = ((F - Yt) ** 2).sum() / len(X) if loss == "mse" else (F - Yt).norm() / Yt.norm()
    ours, grads = net.loss_and_grad(X, Y, loss=loss)
    assert abs(ours - L.item()) <= 1e-12 * abs(L.item())
    for k, g in grads_of(L, P).items():
        close(grads[k], g)


def test_vjp_and_mixed(case):
    act, net, X, _ = case
    f, P = torch_forward(net, act), torch_params(net)
    rng = np.random.default_rng(3)
    U, V = rng.normal(size=(7, 2)), rng.normal(size=(7, 3))
    Xt = torch.tensor(X, requires_grad=True)
    out = (f(Xt, P) * torch.tensor(U)).sum()
    (G,) = torch.autograd.grad(out, Xt, create_graph=True)
    dX, _ = net.vjp(X, U)
    close(dX, G)
    want = grads_of((G * torch.tensor(V)).sum(), P)
    got = net.mixed(X, V, U=U)
    for k in want:
        close(got[k], want[k])


def test_hamiltonian_loss(case):
    act, _, _, _ = case
    net = api.compile_text(arch(4, (6, 5), act, bias_last=False), seed=4)
    f, P = torch_forward(net, act), torch_params(net)
    rng = np.random.default_rng(5)
    X, T = rng.normal(size=(9, 4)), rng.normal(size=(9, 4))
    Xt = torch.tensor(X, requires_grad=True)
    (G,) = torch.autograd.grad(f(Xt, P).sum(), Xt, create_graph=True)
    field = torch.cat([G[:, 2:], -G[:, :2]], dim=1)
    close(net.vector_field(X), field)
    for loss in ("mse", "relative_l2"):
        R = field - torch.tensor(T)
        L = (R**2).sum() / len(X) if loss == "mse" else R.norm() / torch.tensor(T).norm()
        ours, grads = net.hamiltonian_loss_and_grad(X, T, loss=loss)
        assert abs(ours - L.item()) <= 1e-12 * abs(L.item())
        for k, g in grads_of(L, P).items():
            close(grads[k], g)


def test_scalar_fallback_agrees():
    """Every pass through the scalar Program code equals the matrix-level code."""
    text = ("input x : real[3]\nnetwork f(in=3) {\n  dense(4, softplus)\n"
            "  dense(3, leaky_relu(0.2))\n  dense(2, tanh)\n  dense(2)\n}\n")
    fast, slow = (api.compile_text(text, seed=6, matrix=m) for m in (True, False))
    rng = np.random.default_rng(7)
    X, Y, V, U = (rng.normal(size=s) for s in ((5, 3), (5, 2), (5, 3), (5, 2)))
    close(slow.forward(X), fast.forward(X))
    close(slow.jacobian(X), fast.jacobian(X))
    for (ga, gb) in ((slow.loss_and_grad(X, Y)[1], fast.loss_and_grad(X, Y)[1]),
                     (slow.vjp(X, U)[1], fast.vjp(X, U)[1]),
                     (slow.mixed(X, V, U=U), fast.mixed(X, V, U=U))):
        for k in gb:
            close(ga[k], gb[k])
    assert "_F1(" in slow.sources["forward"] and "@" not in slow.sources["forward"]


SPEC = """input x : real[3]
network f(in=3) {
  dense(4, tanh)
  dense(3, sigmoid)
  dense(1)
}
derive output f(x)
derive jacobian f(x) wrt x
derive gradient f(x)[0] wrt f.W1 as gW1
derive gradient d(f(x)[0])/d(x[2]) wrt f.W2 as mixedW2
derive gradient d(f(x)[0])/d(x[2]) wrt f.b1 as mixedb1
"""


def test_agrees_with_symbolic_program(tmp_path):
    path = tmp_path / "net.snn"
    path.write_text(SPEC)
    model = run.load(str(path))
    net = api.compile_network(model, seed=8)
    d = {dv.name: dv for dv in model.derivations}
    rng = np.random.default_rng(9)
    syms = {}
    for key, value in net.params.items():
        for idx in np.ndindex(value.shape):
            syms[f"f.{key}[{','.join(map(str, idx))}]"] = value[idx]
    for _ in range(2):
        x = rng.uniform(-1, 1, 3)
        point = {v.symbol: Fraction(float(syms[v.symbol.name])) for v in model.params}
        point.update({v.symbol: Fraction(float(x[i])) for i, v in enumerate(model.inputs)})

        def value(name, point=point):
            terms = np.array(d[name].terms, dtype=object)
            vals, _ = evaluate(model.program, list(terms.flat), point)
            return np.array([float(v) for v in vals]).reshape(terms.shape)

        X = x[None]
        np.testing.assert_allclose(net.forward(X)[0], value("output"), rtol=1e-13)
        np.testing.assert_allclose(net.jacobian(X)[0], value("jacobian"), rtol=1e-12)
        _, grads = net.loss_and_grad(X, np.zeros((1, 1)))  # d (f^2) = 2 f df
        f0 = net.forward(X)[0, 0]
        np.testing.assert_allclose(grads["W1"], 2 * f0 * value("gW1"), rtol=1e-11)
        V = np.zeros((1, 3))
        V[0, 2] = 1.0
        mixed = net.mixed(X, V)
        np.testing.assert_allclose(mixed["W2"], value("mixedW2"), rtol=1e-11, atol=1e-15)
        np.testing.assert_allclose(mixed["b1"], value("mixedb1"), rtol=1e-11, atol=1e-15)


def test_parameters_and_errors(tmp_path):
    net = api.compile_text(arch(2, (3,), "tanh"), seed=0)
    assert set(net.params) == {"W1", "b1", "W2", "b2"}
    first = {k: v.copy() for k, v in net.params.items()}
    net.init(seed=0)
    assert all(np.array_equal(first[k], net.params[k]) for k in first)
    net.init(seed=1)
    assert not np.array_equal(first["W1"], net.params["W1"])
    with pytest.raises(ValueError, match="unknown loss"):
        net.loss_and_grad(np.zeros((2, 2)), np.zeros((2, 1)), loss="l1")
    with pytest.raises(ValueError, match="takes 2 inputs"):
        net.forward(np.zeros((2, 3)))
    # saved weights load back through a spec
    net.save(str(tmp_path / "w.npz"))
    (tmp_path / "s.snn").write_text(
        'network g(in=2) load "w.npz" {\n  dense(3, tanh)\n  dense(1)\n}\n')
    loaded = api.compile_network(str(tmp_path / "s.snn"), name="g")
    X = np.random.default_rng(0).normal(size=(4, 2))
    np.testing.assert_array_equal(loaded.forward(X), net.forward(X))
    with pytest.raises(ValueError, match="no network `h`"):
        api.compile_network(str(tmp_path / "s.snn"), name="h")


def bundled_specs():
    return sorted(glob.glob(os.path.join(ROOT, "specs", "*.snn"))
                  + glob.glob(os.path.join(ROOT, "examples", "*.snn")))


@pytest.mark.parametrize("path", bundled_specs(), ids=os.path.basename)
def test_every_bundled_network_compiles(path):
    # generation time is measured by bench/compiled.py, not asserted here
    from verifier.elaborate import elaborate

    spec = elaborate(path)
    for network in spec.networks:
        net = api.compile_network(spec, name=network.name)
        # mixed derivatives through the scalar fallback are generated on first use
        net.compile_all(mixed=net.matrix_level)
        assert net.sources


def _run(script, *args, monkeypatch, capsys):
    """Run an example's main() in this process (same code path as the command line)."""
    import importlib.util

    path = os.path.join(ROOT, "examples", script)
    spec = importlib.util.spec_from_file_location(script[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", [script, *args])
    module.main()
    return capsys.readouterr().out


def test_fit_gauss_example(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    stdout = _run("fit_gauss.py", "--epochs", "3", "--out", str(tmp_path),
                  monkeypatch=monkeypatch, capsys=capsys)
    assert "final loss" in stdout
    assert (tmp_path / "gauss_fit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shutil.copy(os.path.join(ROOT, "examples", "gauss_fit.snn"), tmp_path)
    net = api.compile_network(str(tmp_path / "gauss_fit.snn"), name="f")
    with np.load(tmp_path / "gauss_fit_weights.npz") as saved:
        assert all(np.array_equal(saved[k], net.params[k]) for k in net.params)


def test_hamiltonian_example(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    stdout = _run("hamiltonian.py", "--epochs", "3", monkeypatch=monkeypatch, capsys=capsys)
    assert "final loss" in stdout


def test_activation_rules_match_registry():
    """The in-place ufunc code of each activation equals the registry's numpy evaluator, to a
    few ulps (tanh and sigmoid are computed from numpy's vectorised exp, the registry uses
    numpy.tanh)."""
    from verifier.layers.activations import ACTIVATIONS

    z = np.linspace(-30, 30, 2001)[:, None]
    for name in ("tanh", "sigmoid", "softplus", "relu", "identity"):
        net = api.compile_text(f"input x : real[1]\nnetwork f(in=1) {{\n  dense(1, {name}, "
                               "W=[[1]], b=[0])\n  dense(1, W=[[1]], b=[0])\n}\n")
        ours, theirs = net.forward(z), ACTIVATIONS[name].np(z)
        np.testing.assert_allclose(ours, theirs, rtol=4e-16, atol=4e-16)
        assert np.all(np.abs(ours) <= 1) if name == "tanh" else True


LSTM = """input x : real[3, 2]
network f(in=[3, 2]) {
  lstm(hidden=3, layers=2)
}
"""


def test_lstm_through_scalar_fallback():
    """A layer without a matrix rule (LSTM) against torch.nn.LSTM: output, loss gradient,
    Jacobian and mixed derivatives."""
    net = api.compile_text(LSTM, seed=10)
    assert not net.matrix_level
    lstm = torch.nn.LSTM(2, 3, num_layers=2, batch_first=True)
    P = {k: torch.tensor(v, requires_grad=True) for k, v in net.params.items()}

    def f(X):
        out, _ = torch.func.functional_call(
            lstm, {k: P[k] for k in dict(lstm.named_parameters())}, (X.reshape(-1, 3, 2),))
        return out[:, -1] @ P["proj_w"].T + P["proj_b"]

    rng = np.random.default_rng(11)
    X, Y, V = rng.normal(size=(4, 6)), rng.normal(size=(4, 1)), rng.normal(size=(4, 6))
    Xt = torch.tensor(X, requires_grad=True)
    F = f(Xt)
    close(net.forward(X), F)
    L = ((F - torch.tensor(Y)) ** 2).sum() / len(X)
    _, grads = net.loss_and_grad(X, Y)
    for k, g in grads_of(L, P).items():
        close(grads[k], g)
    close(net.jacobian(X)[0, 0], torch.autograd.functional.jacobian(
        lambda x: f(x[None])[0, 0], Xt[0].detach()))
    (G,) = torch.autograd.grad(F.sum(), Xt, create_graph=True)
    close(net.input_grad(X), G)
    got = net.mixed(X, V)
    for k, g in grads_of((G * torch.tensor(V)).sum(), P).items():
        close(got[k], g)


def test_blas_threads_are_limited_during_calls_and_restored():
    from threadpoolctl import threadpool_info

    def blas_threads():
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    before = blas_threads()
    if not before:
        pytest.skip("numpy has no BLAS library that threadpoolctl can control")
    text = "input x : real[2]\nnetwork f(in=2) {\n  dense(3, tanh)\n  dense(1)\n}\n"
    X, seen = np.ones((4, 2)), {}

    def seed(name):
        def fn(F):
            seen[name] = blas_threads()  # runs inside the compiled pullback
            return float(F.sum()), np.ones_like(F)
        return fn

    api.compile_text(text, blas_threads=1).pullback(X, seed("one"))
    api.compile_text(text, blas_threads=None).pullback(X, seed("as is"))
    assert seen["one"] == [1] * len(before)
    assert seen["as is"] == before
    assert blas_threads() == before
    with pytest.raises(ValueError, match="blas_threads"):
        api.compile_text(text, blas_threads=0)
