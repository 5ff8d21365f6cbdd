"""Counterexample search through matrix-level network code equals the scalar program path.

`Searcher` evaluates network outputs and input Jacobians with `CompiledNetwork` when the
program records them (`Program.network_terms`); `matrix=False` compiles the whole program
slice line by line. Oracles: that Program path, and PyTorch autograd for the input
Hessian-vector pass.
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest

from verifier import api, run
from verifier.engines.search import Searcher

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def close(a, b, rtol=1e-9):
    """Relative agreement in norm (entries near zero are judged against the whole array)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert np.linalg.norm(a - b) <= rtol * max(np.linalg.norm(b), 1e-300), np.abs(a - b).max()


def both_paths(model, ob):
    fast, slow = Searcher(ob, model.program), Searcher(ob, model.program, matrix=False)
    assert (fast.path, slow.path) == ("matrix", "program")
    assert fast.leaves == slow.leaves
    return fast, slow


def agree(fast, slow, X):
    """Same differences, slacks, values and gradients of every goal atom at the columns of X."""
    for a, b in zip(fast.f(*X), slow.f(*X)):
        close(np.broadcast_to(a, X.shape[1:]), np.broadcast_to(b, X.shape[1:]))
    sa, sb = fast.slack(X), slow.slack(X)
    assert np.array_equal(np.isfinite(sa), np.isfinite(sb))
    close(sa[np.isfinite(sb)], sb[np.isfinite(sb)])
    for ga, gb in zip(fast.grads, slow.grads):
        assert (ga is None) == (gb is None)
        if gb is None:
            continue
        (va, da), (vb, db) = ga(*X), gb(*X)
        close(np.broadcast_to(va, X.shape[1:]), np.broadcast_to(vb, X.shape[1:]))
        close(np.array(da).reshape(X.shape), np.array(db, dtype=float).reshape(X.shape))
    width = np.ones(len(X))
    close(fast._direction(X, width), slow._direction(X, width))


def random_points(searcher, n=40, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, size=(len(searcher.leaves), n))


def mlp_spec(n, widths, acts, out, claims, extra=""):
    layers = "".join(f"  dense({w}, {a})\n" for w, a in zip(widths, acts))
    return (f"input x : real[{n}] in [-1, 1]\n"
            f"network g(in={n}) load \"w.npz\" {{\n{layers}  {extra}dense({out})\n}}\n"
            + "".join(f"claim c{k}: {c}\n" for k, c in enumerate(claims)))


def write_weights(tmp_path, n, widths, out, seed):
    rng = np.random.default_rng(seed)
    sizes, params = [n, *widths, out], {}
    for k, (a, b) in enumerate(itertools.pairwise(sizes), start=1):
        params[f"W{k}"] = rng.normal(0, 1.2 / np.sqrt(a), size=(b, a))
        params[f"b{k}"] = rng.normal(0, 0.3, size=b)
    np.savez(tmp_path / "w.npz", **params)


CLAIMS = [
    "g(x)[0] <= 1/2",
    "g(x)[1] - 2 * g(x)[0] >= -1",
    "d(g(x)[1])/d(x[0]) >= 0 where x[1] >= 0",
    "sum(abs(jacobian(g(x), x))) <= 3",
    "g(x)[0] * d(g(x)[1])/d(x[2]) + d(g(x)[0])/d(x[1]) <= 1/4",
    "g(x)[0] ^ 2 + abs(d(g(x)[0])/d(x[0])) < 2",
]


@pytest.mark.parametrize("acts", [("tanh", "tanh"), ("sigmoid", "tanh"), ("sigmoid", "sigmoid")])
@pytest.mark.parametrize("seed", [0, 1])
def test_random_dense_networks(tmp_path, acts, seed):
    write_weights(tmp_path, 3, (6, 5), 2, seed)
    path = tmp_path / "net.snn"
    path.write_text(mlp_spec(3, (6, 5), acts, 2, CLAIMS))
    model = run.load(str(path))
    for ob in model.obligations:
        fast, slow = both_paths(model, ob)
        agree(fast, slow, random_points(fast, seed=seed))


def test_gauss_example_claims():
    model = run.load(os.path.join(ROOT, "examples", "gauss.snn"))
    for ob in model.obligations:
        fast, slow = both_paths(model, ob)
        agree(fast, slow, random_points(fast))


def test_two_networks_and_a_scalar_fallback_layer(tmp_path):
    """Two applications (one through a layer without a matrix rule) and a free parameter."""
    write_weights(tmp_path, 3, (4,), 2, 5)
    rng = np.random.default_rng(6)
    np.savez(tmp_path / "h.npz", W1=rng.normal(size=(3, 3)), b1=rng.normal(size=3),
             W3=rng.normal(size=(1, 3)), b3=rng.normal(size=1))
    text = mlp_spec(3, (4,), ("tanh",), 2, [
        "g(x)[0] + h(x)[0] * c <= 1",
        "d(h(x)[0])/d(x[1]) - d(g(x)[1])/d(x[1]) >= c",
    ]).replace("input x", "param c : real in [0, 1]\ninput x") + (
        "network h(in=3) load \"h.npz\" {\n  dense(3, tanh)\n  layernorm(affine=false)\n"
        "  dense(1)\n}\n")
    (tmp_path / "two.snn").write_text(text)
    model = run.load(str(tmp_path / "two.snn"))
    for ob in model.obligations:
        fast, slow = both_paths(model, ob)
        agree(fast, slow, random_points(fast, seed=3))


def test_program_path_when_nothing_is_recorded(tmp_path):
    """Symbolic weights, or a network applied to a computed input: no network terms."""
    text = ("input x : real[2] in [-1, 1]\nnetwork f(in=2) {\n  dense(3, tanh)\n  dense(1)\n}\n"
            "claim a: f(x)[0] <= 1\n")
    (tmp_path / "sym.snn").write_text(text)
    model = run.load(str(tmp_path / "sym.snn"))
    assert not model.program.network_terms
    assert Searcher(model.obligations[0], model.program).path == "program"

    write_weights(tmp_path, 2, (3,), 1, 2)
    text = mlp_spec(2, (3,), ("tanh",), 1, ["g(2 * x)[0] <= 1", "g(x)[0] + g(2 * x)[0] <= 1"])
    (tmp_path / "scaled.snn").write_text(text)
    model = run.load(str(tmp_path / "scaled.snn"))
    first, second = (Searcher(ob, model.program) for ob in model.obligations)
    assert first.path == "program" and second.path == "matrix"
    agree(second, Searcher(model.obligations[1], model.program, matrix=False),
          random_points(second))


def test_input_hessian_vector_pass_against_torch():
    torch = pytest.importorskip("torch")
    text = "input x : real[3]\nnetwork f(in=3) {\n  dense(5, tanh)\n  dense(4, sigmoid)\n  dense(2)\n}\n"
    net, scalar = (api.compile_text(text, seed=1, matrix=m) for m in (True, False))
    rng = np.random.default_rng(2)
    X, U, C, T = (rng.normal(size=s) for s in ((6, 3), (6, 2), (6, 3), (6, 2)))
    P = {k: torch.tensor(v) for k, v in net.params.items()}

    def f(x):
        h = torch.tanh(x @ P["W1"].T + P["b1"])
        h = torch.sigmoid(h @ P["W2"].T + P["b2"])
        return h @ P["W3"].T + P["b3"]

    for with_output in (False, True):
        x = torch.tensor(X, requires_grad=True)
        y = f(x)
        (G,) = torch.autograd.grad((y * torch.tensor(U)).sum(), x, create_graph=True)
        L = (G * torch.tensor(C)).sum() + (with_output and (y * torch.tensor(T)).sum())
        (want,) = torch.autograd.grad(L, x)
        for compiled in (net, scalar):  # matrix code, and the scalar fallback's passes
            close(compiled.input_mixed(X, C, U, T if with_output else None), want.numpy(), 1e-12)


def test_refuted_examples_still_refute():
    model = run.load(os.path.join(ROOT, "examples", "gauss.snn"))
    verdicts = {v.name: v for v in run.check(model, 60.0)}
    for name in ("lipschitz_too_small", "increasing"):
        assert verdicts[name].verdict == "refuted", verdicts[name]
    for name in ("upper", "lower", "decreasing", "lipschitz"):
        assert verdicts[name].verdict == "proved", verdicts[name]
