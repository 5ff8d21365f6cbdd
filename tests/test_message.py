"""`message` (message passing) against the formula written directly in PyTorch (float64):

    m_ij = φ_e(x_i − x_j [, |x_i − x_j|])  or  φ_e([x_i, x_j]),   a_i = Σ_{j → i} m_ij (or mean),
    y_i = φ_v([x_i, a_i])  or  φ_v(a_i)

Our symbolic terms (forward value, input Jacobian, every parameter gradient, an input Hessian)
are evaluated exactly at random rational points; the compiled numeric functions of
`verifier.api` (forward, Jacobian, loss gradient, Hessian-vector products) on float batches.
"""

from __future__ import annotations

import numpy as np
import pytest
from spec_oracle import derivation, random_point, values, with_gradients, write

from verifier import api
from verifier.diagnostics import SpecError
from verifier.elaborate import elaborate
from verifier.layers.message import edge_network
from verifier.run import check, load

torch = pytest.importorskip("torch")

TOL = 1e-9
ACTS = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "softplus": torch.nn.functional.softplus}


def close(ours, theirs, tol=TOL) -> None:
    np.testing.assert_allclose(ours, np.asarray(theirs, dtype=np.float64), rtol=tol, atol=tol)


def tensor(a, grad: bool = False):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


def mlp(x, W, act, n):
    for k in range(1, n + 1):
        x = x @ W(k, "W").T + W(k, "b")
        if k < n:
            x = act(x)
    return x


def torch_message(cfg: dict, get, X):
    """The layer on one node matrix X [N, F]; get(kind, k, "W"|"b") gives φ's tensors."""
    N = X.shape[0]
    edges = cfg.get("edges") or [(j, i) for i in range(N) for j in range(N) if j != i]
    act = ACTS[cfg.get("act", "tanh")]
    ne, nv = (len(np.atleast_1d(cfg.get(k, []))) + 1 for k in ("edge_hidden", "node_hidden"))
    msgs = [[] for _ in range(N)]
    for j, i in edges:
        if cfg.get("edge_input") == "pair":
            e = torch.cat([X[i], X[j]])
        else:
            e = X[i] - X[j]
            if cfg.get("distance"):
                e = torch.cat([e, torch.sqrt((e * e).sum()).reshape(1)])
        msgs[i].append(mlp(e, lambda k, w: get("edge", k, w), act, ne))
    rows = []
    for i in range(N):
        a = torch.stack(msgs[i]).sum(0)
        if cfg.get("aggregate") == "mean":
            a = a / len(msgs[i])
        v = a if cfg.get("node_input") == "aggregate" else torch.cat([X[i], a])
        rows.append(mlp(v, lambda k, w: get("node", k, w), act, nv))
    return torch.stack(rows)


def _text(v) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_text(x) for x in v) + "]"
    return str(v).lower() if isinstance(v, bool) else str(v)


def message_spec(cfg: dict, hessian: bool = False) -> str:
    N, F = cfg["N"], cfg["F"]
    opts = [f"{k}={_text(v)}" for k, v in cfg.items() if k not in ("N", "F")]
    return (f"input X : real[{N}, {F}]\n"
            f"network g(in=[{N}, {F}]) {{\n  message({', '.join(opts)})\n}}\n"
            "derive output g(X)\nderive jacobian g(X)[0] wrt X\n"
            + ("derive hessian g(X)[0, 0] wrt X\n" if hessian else ""))


CASES = {
    # the distillation setting: φ_e on (x_i - x_j, r), φ_v on the aggregate alone
    "difference_distance": {"N": 3, "F": 2, "messages": 2, "edge_hidden": [3, 2],
                            "distance": True, "node_input": "aggregate"},
    # Battaglia et al.'s pair input, φ_v on [x_i, a_i] with a hidden layer, sigmoid
    "pair_node_hidden": {"N": 3, "F": 2, "messages": 3, "edge_hidden": 2,
                         "edge_input": "pair", "node_hidden": 2, "out": 1, "act": "sigmoid"},
    # a graph given as edges, mean aggregation, linear φ_e, softplus in φ_v
    "edges_mean": {"N": 4, "F": 1, "messages": 2, "node_hidden": [3], "act": "softplus",
                   "aggregate": "mean", "edges": [[0, 1], [2, 1], [1, 0], [3, 2], [1, 3],
                                                  [2, 3]]},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_message_terms_match_torch(tmp_path, case):
    cfg = CASES[case]
    spec, model, names = with_gradients(tmp_path, message_spec(cfg, hessian=True), "g",
                                        "g(X)[0, 0]", name=case)
    point, arrays = random_point(spec, seed=len(case))
    arrays["X"] = arrays["X"] * 3  # rows well apart, so r is far from 0
    for s in point:
        if s.name.startswith("X["):
            point[s] *= 3
    leaves = {name: tensor(a, grad=name in names) for name, a in arrays.items()}
    X = tensor(arrays["X"], grad=True)

    def ref(x):
        return torch_message(cfg, lambda kind, k, w: leaves[f"g.{kind}{k}.{w}"], x)

    out = ref(X)
    close(values(model, derivation(model, "output").terms, point), out.detach().numpy())
    jac = torch.autograd.functional.jacobian(lambda x: ref(x)[0], X).reshape(out.shape[1], -1)
    close(values(model, derivation(model, "jacobian").terms, point), jac.numpy())
    grads = torch.autograd.grad(out[0, 0], [leaves[n] for n in names], allow_unused=True)
    for k, (name, g) in enumerate(zip(names, grads)):
        ours = values(model, derivation(model, f"grad_{k}").terms, point)
        close(ours, np.zeros(ours.shape) if g is None else g.numpy())
    hess = torch.autograd.functional.hessian(lambda x: ref(x)[0, 0], X)
    n = X.numel()
    close(values(model, derivation(model, "hessian").terms, point), hess.reshape(n, n).numpy())


@pytest.mark.parametrize("case", sorted(CASES))
def test_compiled_functions_match_torch(case):
    cfg = CASES[case]
    net = api.compile_text(message_spec(cfg), seed=3)
    N, F = cfg["N"], cfg["F"]
    rng = np.random.default_rng(1)
    X = rng.normal(0, 2, (5, N * F))
    params = {k: tensor(v, grad=True) for k, v in net.params.items()}

    def ref(x):  # one flat input row -> flat output
        return torch_message(cfg, lambda kind, k, w: params[f"{kind}{k}.{w}"],
                             x.reshape(N, F)).reshape(-1)

    outs = torch.stack([ref(tensor(x)) for x in X])
    close(net.forward(X), outs.detach().numpy())
    jac = np.stack([torch.autograd.functional.jacobian(ref, tensor(x)).numpy() for x in X])
    close(net.jacobian(X), jac)
    Y = rng.normal(size=outs.shape)
    loss, grads = net.loss_and_grad(X, Y)
    ref_loss = ((outs - tensor(Y)) ** 2).sum() / len(X)
    ref_loss.backward()
    close(loss, ref_loss.item())
    for k, g in grads.items():
        close(g, params[k].grad.numpy())
    # a Hessian-vector product through the input gradient of output 0
    C = rng.normal(size=X.shape)
    U = np.zeros((len(X), outs.shape[1]))
    U[:, 0] = 1.0
    hv = net.input_mixed(X, C, U)
    for b, x in enumerate(X):
        H = torch.autograd.functional.hessian(lambda v: ref(v)[0], tensor(x)).numpy()
        close(hv[b], H @ C[b])


def test_linear_message_passing_is_the_textbook_sum(tmp_path):
    """With linear φ_e and φ_v the layer is y_i = Wv [x_i, Σ_j (We (x_i - x_j) + be)] + bv;
    the identity and its input derivative are proved over all symbolic weights."""
    text = """input X : real[3, 2]
network g(in=[3, 2]) {
  message(messages=2)
}
let a0 = g.edge1.W @ (X[0] - X[1]) + g.edge1.b + g.edge1.W @ (X[0] - X[2]) + g.edge1.b
claim textbook: g(X)[0] == g.node1.W @ [X[0, 0], X[0, 1], a0[0], a0[1]] + g.node1.b
claim slope: d(g(X)[0, 0])/d(X[0, 0]) == g.node1.W[0, 0] + 2 * (g.node1.W[0, 2] * g.edge1.W[0, 0] + g.node1.W[0, 3] * g.edge1.W[1, 0])
claim wrong_slope: d(g(X)[0, 0])/d(X[0, 0]) == g.node1.W[0, 0] + g.node1.W[0, 2] * g.edge1.W[0, 0] + g.node1.W[0, 3] * g.edge1.W[1, 0]
"""
    model = load(write(tmp_path, text))
    verdicts = {ob.name: v.verdict for ob, v in zip(model.obligations, check(model, 30))}
    assert verdicts == {"textbook": "proved", "slope": "proved", "wrong_slope": "refuted"}


def test_parameter_names_and_edge_network(tmp_path):
    spec = elaborate(write(tmp_path, message_spec(CASES["difference_distance"])))
    names = [t.name for t in spec.params]
    assert names == ["g.edge1.W", "g.edge1.b", "g.edge2.W", "g.edge2.b", "g.edge3.W",
                     "g.edge3.b", "g.node1.W", "g.node1.b"]
    shapes = {t.name: t.shape for t in spec.params}
    assert shapes["g.edge1.W"] == (3, 3) and shapes["g.node1.W"] == (2, 2)
    # φ_e alone as dense layers: the same numbers as the layer's messages
    net = api.compile_text(message_spec(CASES["difference_distance"]), seed=5)
    weights = tmp_path / "w.npz"
    net.save(str(weights))
    text = ("input X : real[3, 2]\nnetwork g(in=[3, 2]) load \"w.npz\" {\n"
            "  message(messages=2, edge_hidden=[3, 2], distance=true, node_input=aggregate)\n}\n")
    spec = elaborate(write(tmp_path, text, "loaded"))
    layer = spec.networks[0].layers[0]
    lines, arrays = edge_network(layer, {t.name: t for t in spec.params})
    assert lines == "dense(3, tanh)\ndense(2, tanh)\ndense(2)"
    np.savez(tmp_path / "phi.npz", **arrays)
    phi = api.compile_text("input u : real[3]\nnetwork phi(in=3) {\n" + lines + "\n}\n")
    phi.params.update(arrays)
    X = np.random.default_rng(2).normal(0, 2, (4, 6))
    d = X[:, 0:2] - X[:, 2:4]  # x_0 - x_1: the message 1 -> 0 is the first one into node 0
    feats = np.column_stack([d, np.hypot(d[:, 0], d[:, 1])])
    pre = phi.forward(feats)
    # node_input=aggregate with a linear φ_v: y_0 = Wv (m_01 + m_02) + bv
    d2 = X[:, 0:2] - X[:, 4:6]
    pre2 = phi.forward(np.column_stack([d2, np.hypot(d2[:, 0], d2[:, 1])]))
    y0 = (pre + pre2) @ net.params["node1.W"].T + net.params["node1.b"]
    close(net.forward(X)[:, 0:2], y0, 1e-12)


GRAPH = "input X : real[3, 2]\nnetwork g(in=[3, 2]) "
ERRORS = {
    "vector_input": ("input x : real[2]\nnetwork g(in=2) { message(messages=2) }\n",
                     "message expects a node-feature matrix"),
    "no_messages": (GRAPH + "{ message(edge_hidden=4) }", "message needs the size of its messages"),
    "bad_width": (GRAPH + "{ message(2, edge_hidden=[4, 0]) }", "edge_hidden must be positive"),
    "distance_pair": (GRAPH + "{ message(2, edge_input=pair, distance=true) }",
                      "distance=true appends"),
    "edge_node": (GRAPH + "{ message(2, edges=[[0, 1], [1, 3]]) }", "edge 1 names node 3"),
    "edge_twice": (GRAPH + "{ message(2, edges=[[0, 1], [0, 1]]) }", "listed twice"),
    "mean_no_edge": (GRAPH + "{ message(2, aggregate=mean, edges=[[0, 1], [1, 0]]) }",
                     "node 2 receives no message"),
    "unknown_option": (GRAPH + "{ message(2, heads=2) }", "message has no option `heads`"),
    "bad_keyword": (GRAPH + "{ message(2, aggregate=max) }", "aggregate must be one of: sum, mean"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_located_errors(tmp_path, case):
    text, message = ERRORS[case]
    with pytest.raises(SpecError) as err:
        elaborate(write(tmp_path, text, case))
    assert message in str(err.value)
    assert err.value.span is not None
