"""`gcn` against the dense formula written directly in PyTorch (float64), and the bundled
`specs/gcn.snn` / `specs/transformer.snn`.

    Â = A (+ I),  Ã = D^-1/2 Â D^-1/2 (D_ii = sum_j Â_ij),  H_l = act(Ã H_{l-1} W_l + b_l)

Our terms are evaluated with `verifier.engines.replay.evaluate` at random rational points:
forward value, input Jacobian, every parameter gradient (adjacency included when symbolic) and,
for a smooth case, the input Hessian.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from spec_oracle import derivation, random_point, values, with_gradients, write

from verifier.diagnostics import SpecError
from verifier.elaborate import elaborate
from verifier.obligations import build_model
from verifier.run import load

torch = pytest.importorskip("torch")

TOL = 1e-9
SPECS = Path(__file__).resolve().parent.parent / "specs"
PATH4 = [[0, 1, 0, 0], [1, 0, 1, 1], [0, 1, 0, 1], [0, 1, 1, 0]]


# ---- helpers -----------------------------------------------------------------------------------











def close(ours, theirs) -> None:
    np.testing.assert_allclose(ours, np.asarray(theirs, dtype=np.float64), rtol=TOL, atol=TOL)


def tensor(a, grad: bool = False):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


# ---- the reference: the dense GCN formula ------------------------------------------------------

ACTS = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
        "softplus": torch.nn.functional.softplus,
        "leaky_relu(1/5)": lambda x: torch.nn.functional.leaky_relu(x, 0.2)}


def torch_gcn(cfg: dict, leaves: dict, X, net: str = "g"):
    A = leaves[f"{net}.A"]
    if cfg.get("self_loops", "true") == "true":
        A = A + torch.eye(A.shape[0], dtype=torch.float64)
    if cfg.get("normalize", "true") == "true":
        r = A.sum(dim=1) ** -0.5
        A = r[:, None] * A * r[None, :]
    act = ACTS[cfg.get("act", "relu")]
    H = X
    for k in range(1, cfg.get("readout_layer", cfg.get("layers", 1)) + 1):
        H = A @ H @ leaves[f"{net}.gcn{k}.W"]
        if cfg.get("bias", "true") == "true":
            H = H + leaves[f"{net}.gcn{k}.b"]
        H = act(H)
    h = H[cfg.get("node", 0)]
    if cfg.get("output") == "vector":
        return h
    if "unit" in cfg:
        return h[cfg["unit"]:cfg["unit"] + 1]
    return leaves[f"{net}.proj_w"] @ h + leaves[f"{net}.proj_b"]


def gcn_spec(cfg: dict) -> str:
    N, F = cfg["N"], cfg["F"]
    opts = [f"{k}={v}" for k, v in cfg.items() if k not in ("N", "F", "hessian")]
    return (f"input X : real[{N}, {F}]\n"
            f"network g(in=[{N}, {F}]) {{\n  gcn({', '.join(opts)})\n}}\n"
            "derive output g(X)\nderive jacobian g(X) wrt X\n"
            + ("derive hessian g(X)[0] wrt X\n" if cfg.get("hessian") else ""))


GCN_CASES = {
    # Kipf & Welling defaults: self-loops, symmetric normalisation, relu, projection
    "base": {"N": 4, "F": 2, "hidden": 3, "adjacency": PATH4},
    "two_layers_plain_unit": {"N": 4, "F": 2, "hidden": 3, "layers": 2, "node": 2,
                              "normalize": "false", "self_loops": "false", "act": "tanh",
                              "unit": 1, "adjacency": PATH4, "hessian": True},
    "symbolic_adjacency_vector": {"N": 3, "F": 2, "hidden": 2, "layers": 2, "act": "sigmoid",
                                  "output": "vector", "adjacency": "symbolic", "hessian": True},
    "weighted_readout_layer": {"N": 4, "F": 3, "hidden": 2, "layers": 3, "readout_layer": 2,
                               "node": 3, "bias": "false", "act": "leaky_relu(1/5)",
                               "projection": "true", "self_loops": "false",
                               "adjacency": [["1/2", 2, 0, 0], [2, 0, 1, 0],
                                             [0, 1, 0, "3/2"], [0, 0, "3/2", 1]]},
    "symbolic_plain_softplus": {"N": 3, "F": 1, "hidden": 2, "normalize": "false",
                                "act": "softplus", "adjacency": "symbolic"},
}


def _spec_value(v):
    if isinstance(v, list):
        return "[" + ", ".join(_spec_value(x) for x in v) + "]"
    return str(v)


@pytest.mark.parametrize("case", sorted(GCN_CASES))
def test_gcn_matches_the_dense_formula(tmp_path, case):
    cfg = GCN_CASES[case]
    text = gcn_spec({k: _spec_value(v) if k == "adjacency" else v for k, v in cfg.items()})
    spec, model, names = with_gradients(tmp_path, text, "g", "g(X)[0]")
    point, arrays = random_point(spec, seed=len(case), positive=".A")
    leaves = {name: tensor(a, grad=name in names) for name, a in arrays.items()}
    X = tensor(arrays["X"], grad=True)

    def ref(x):
        return torch_gcn(cfg, leaves, x)

    out = ref(X)
    close(values(model, derivation(model, "output").terms, point), out.detach().numpy())
    jac = torch.autograd.functional.jacobian(ref, X).reshape(len(out), -1)
    close(values(model, derivation(model, "jacobian").terms, point), jac.numpy())
    grads = torch.autograd.grad(out[0], [leaves[n] for n in names], allow_unused=True)
    for k, (name, g) in enumerate(zip(names, grads)):
        ours = values(model, derivation(model, f"grad_{k}").terms, point)
        close(ours, np.zeros(ours.shape) if g is None else g.numpy())
    if cfg.get("hessian"):
        hess = torch.autograd.functional.hessian(lambda x: ref(x)[0], X)
        n = X.numel()
        close(values(model, derivation(model, "hessian").terms, point),
              hess.reshape(n, n).numpy())


def test_gcn_parameter_names_and_ranges(tmp_path):
    text = ("input X : real[3, 2]\n"
            "network g(in=[3, 2]) { gcn(hidden=4, layers=2, adjacency in [0, 1], "
            "W in [-1, 1]) }\n"
            "derive output g(X)\n")
    spec = elaborate(write(tmp_path, text))
    shapes = {t.name: t.shape for t in spec.params}
    assert shapes == {"g.A": (3, 3), "g.gcn1.W": (2, 4), "g.gcn1.b": (4,), "g.gcn2.W": (4, 4),
                      "g.gcn2.b": (4,), "g.proj_w": (1, 4), "g.proj_b": (1,)}
    assert all(t.lo is not None and t.hi is not None for t in spec.params)
    assert str(spec.params[0].entries[1]) == "g.A[0,1]"
    model = build_model(spec)
    ranged = {v.symbol.name: (v.lo, v.hi) for v in model.params}
    assert ranged["g.A[2,1]"] == (0, 1) and ranged["g.gcn2.W[3,0]"] == (-1, 1)


def test_gcn_loads_its_graph_and_weights_from_a_file(tmp_path):
    rng = np.random.default_rng(0)
    data = {"A": np.array(PATH4, dtype=float), "gcn1.W": rng.normal(size=(2, 3)),
            "gcn1.b": rng.normal(size=3), "gcn2.W": rng.normal(size=(3, 3)),
            "gcn2.b": rng.normal(size=3), "proj.weight": rng.normal(size=(1, 3)),
            "proj.bias": rng.normal(size=1)}
    np.savez(tmp_path / "gcn.npz", **data)
    text = ("input X : real[4, 2]\n"
            "network g(in=[4, 2]) load \"gcn.npz\" { gcn(hidden=3, layers=2, act=tanh, "
            "node=1) }\n"
            "derive output g(X)\n")
    spec = elaborate(write(tmp_path, text))
    model = build_model(spec)
    point, arrays = random_point(spec, seed=1)
    cfg = {"layers": 2, "act": "tanh", "node": 1}
    leaves = {f"g.{k}": tensor(v) for k, v in data.items()}
    leaves["g.proj_w"], leaves["g.proj_b"] = leaves["g.proj.weight"], leaves["g.proj.bias"]
    expected = torch_gcn(cfg, leaves, tensor(arrays["X"]))
    close(values(model, derivation(model, "output").terms, point), expected.numpy())


def test_normalised_data_adjacency_is_folded_exactly(tmp_path):
    """Ã is exact: 1/sqrt(d_i d_j) as sympy algebraic numbers, no degree symbols."""
    text = gcn_spec({"N": 4, "F": 2, "hidden": 3, "adjacency": _spec_value(PATH4)})
    model = build_model(elaborate(write(tmp_path, text)))
    names = [s.name for s in model.program.order]
    assert not any(".deg[" in n or ".an[" in n for n in names)
    sym = {s.name: s for s in model.program.order}
    # node 0 (degree 2 with its self-loop) next to node 1 (degree 4): 1/sqrt(2 * 4) = sqrt(2)/4
    expected = (sym["g.hw1[0,0]"] / 2 + sp.sqrt(2) / 4 * sym["g.hw1[1,0]"]
                + sp.Symbol("g.gcn1.b[0]", real=True))
    assert sp.expand(model.program.defs[sym["g.z1[0,0]"]] - expected) == 0


# ---- located errors ----------------------------------------------------------------------------

ERROR_CASES = {  # spec text, line and the text the error points at, message
    "readout_layer_beyond_stack": (
        ("network g(in=[4, 2]) {\n  gcn(hidden=3, layers=2, readout_layer=3, adjacency=symbolic)"
        "\n}\n"), 2, "3, adj", "readout_layer 3 is out of range: it must be in 1..2"),
    "node_out_of_range": (
        "network g(in=[4, 2]) {\n  gcn(hidden=3, node=4, adjacency=symbolic)\n}\n",
        2, "4, adj", "node 4 is out of range: it must be in 0..3"),
    "unknown_activation": (
        "network g(in=[4, 2]) {\n  gcn(hidden=3, act=swish, adjacency=symbolic)\n}\n",
        2, "swish", "unknown activation `swish`"),
    "zero_degree_normalised": (
        ("network g(in=[3, 2]) {\n  gcn(hidden=3, self_loops=false,\n"
        "      adjacency=[[0, 1, 0],\n                 [1, 0, 0],\n                 [0, 0, 0]])"
        "\n}\n"),
        5, "[0, 0, 0]",
        "node 2 has degree 0, so D^-1/2 of the normalised adjacency is undefined"),
    "adjacency_shape": (
        "network g(in=[3, 2]) {\n  gcn(hidden=3, adjacency=[[0, 1], [1, 0]])\n}\n",
        2, "[[", "adjacency has shape [2, 2], the graph has 3 nodes"),
    "no_graph": (
        "network g(in=[3, 2]) {\n  gcn(hidden=3)\n}\n",
        2, "gcn", "gcn needs its graph"),
    "vector_input": (
        "network g(in=3) {\n  gcn(hidden=3, adjacency=symbolic)\n}\n",
        2, "gcn", "gcn expects a node-feature matrix [N, F], got shape [3]"),
    "unit_with_vector_output": (
        ("network g(in=[3, 2]) {\n  gcn(hidden=3, output=vector, unit=0, adjacency=symbolic)"
        "\n}\n"), 2, "unit", "unit selects one hidden unit; output=vector reads all of them"),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_located_errors(tmp_path, case):
    text, line, marker, message = ERROR_CASES[case]
    column = text.splitlines()[line - 1].index(marker) + 1
    with pytest.raises(SpecError) as info:
        elaborate(write(tmp_path, text, case))
    err = info.value
    assert err.message == message
    assert (err.span.line, err.span.column) == (line, column)
    assert err.render().startswith(f"{tmp_path / case}.snn:{line}:{column}: error: {message}")


# ---- the bundled specs -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["gcn", "transformer"])
def test_bundled_spec_loads(name):
    model = load(str(SPECS / f"{name}.snn"))
    kinds = {d.kind for d in model.derivations}
    assert {"output", "jacobian", "hessian", "gradient"} <= kinds
    assert model.params, "the networks' weights are symbolic"
