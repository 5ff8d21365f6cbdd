"""`message`: a message-passing layer (an interaction network, as in Battaglia et al. 2016 and
Cranmer et al. 2020) on a node-feature matrix.

The network input is X : [N, F] (one row per node, e.g. a particle's position). For every
edge j → i of the graph, an edge function φ_e (an MLP) computes a message, the messages into
each node are summed (or averaged), and a node function φ_v (an MLP) maps the aggregate to the
node's output:

    m_ij = φ_e(e_ij),   a_i = Σ_{j → i} m_ij,   y_i = φ_v(a_i)   or   φ_v([x_i, a_i])

with the edge input e_ij = x_i − x_j (`edge_input=difference`, the default), [x_i − x_j, r_ij]
with r_ij = |x_i − x_j| (the Euclidean norm of the whole difference, `distance=true`; defined
only where the two rows differ), or [x_i, x_j] (`edge_input=pair`). Each MLP is a chain of
torch.nn.Linear layers (W : [out, in], b : [out]) with `act` (default tanh) after every hidden
layer and none after the last: `edge_hidden=[16, 16]` (or one width, `edge_hidden=16`; none by
default: φ_e linear) and `messages=M` (required) for φ_e, `node_hidden=...` and `out=K`
(default F) for φ_v. `node_input=both` (default) feeds [x_i, a_i] to φ_v, `node_input=aggregate`
only a_i. The output is the matrix Y : [N, K].

The graph is `edges=[[s, t], ...]` (PyG's convention: a message from s to t; a pair may not
repeat) or by default complete without self-loops (every ordered pair j ≠ i); `aggregate=mean`
divides each sum by the node's number of incoming edges (which must then be positive).

Parameter names (also the weight-file keys): `<net>.edge<l>.W`, `<net>.edge<l>.b` for the l-th
Linear of φ_e (l = 1 .. len(edge_hidden) + 1), `<net>.node<l>.W`, `<net>.node<l>.b` for φ_v,
prefixed `layer<k>.` when the layer is the network's k-th (k > 1). `W in [lo, hi]` ranges every
weight and bias. Intermediate symbols: `<net>.d[i,j,c]` (x_i − x_j), `<net>.r[i,j]`,
`<net>.ez<l>[i,j,u]` and `<net>.e<l>[i,j,u]` (pre-activations and activations of φ_e's
hidden layers), `<net>.m[i,j,k]`, `<net>.agg[i,k]`,
`<net>.vz<l>[i,u]`, `<net>.v<l>[i,u]` (of φ_v), `<net>.y[i,o]`.

φ_e on its own is an ordinary dense chain: `edge_network` gives it as `dense` layer text with
the same weights, so a claim about the messages (a fitted force law, say) can be stated on a
small network of a few inputs.
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from ..diagnostics import SpecError
from ..ir import Layer, TensorVar
from ..symbolic.program import Program
from ..syntax import ast
from .activations import ACTIVATIONS
from .dense import _times, parse_activation
from .graph import keyword, prefix, ranged_weights

OPTIONS = {"messages", "edge_hidden", "node_hidden", "out", "act", "edge_input", "distance",
           "node_input", "edges", "aggregate", "W"}


def _widths(ctx, arg, what: str) -> tuple[int, ...]:
    """`16` or `[16, 16]`: hidden widths, each a positive integer."""
    v = ctx.constant(arg.value)
    flat = [v[()]] if v.shape == () else list(v.flat) if v.ndim == 1 else None
    if flat is None or not flat:
        raise SpecError(f"{what} must be a width or a list of widths, e.g. [16, 16]",
                        arg.value.span)
    for w in flat:
        if not (sp.Rational(w).is_Integer and 0 < w <= 4096):
            raise SpecError(f"{what} must be positive integers (at most 4096), got {w}",
                            arg.value.span)
    return tuple(int(w) for w in flat)


def _edges(ctx, arg, n: int) -> tuple[tuple[int, int], ...]:
    """(source, target) pairs, sorted by target then source; the complete graph by default."""
    if arg is None:
        return tuple((j, i) for i in range(n) for j in range(n) if j != i)
    node = arg.value
    pairs = ctx.constant(node)
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise SpecError(f"edges has shape {list(pairs.shape)}, expected [E, 2]", node.span,
                        fix="one [source, target] pair per edge")
    seen = set()
    for e, (src, dst) in enumerate(pairs):
        span = node.items[e].span if isinstance(node, ast.ListLit) else node.span
        for v in (src, dst):
            if not (sp.Rational(v).is_Integer and 0 <= v < n):
                raise SpecError(f"edge {e} names node {v}, the graph has nodes 0..{n - 1}",
                                span, fix="nodes are 0-based rows of the input")
        pair = (int(src), int(dst))
        if pair in seen:
            raise SpecError(f"edge {e} ({pair[0]}, {pair[1]}) is listed twice", span,
                            fix="list each directed pair once")
        seen.add(pair)
    return tuple(sorted(seen, key=lambda p: (p[1], p[0])))


def _mlp_weights(ctx, decl, net: str, index: int, name: str, sizes, ranged) -> list[TensorVar]:
    pre = prefix(index)
    out = []
    for k in range(1, len(sizes)):
        short = f"{pre}{name}{k}"
        out.append(ctx.weight(decl, net, f"{short}.W", (sizes[k], sizes[k - 1]), ranged, index,
                              "weight", file_keys=(f"{name}{k}.W",)))
        out.append(ctx.weight(decl, net, f"{short}.b", (sizes[k],), ranged, index, "bias",
                              file_keys=(f"{name}{k}.b",)))
    return out


def elaborate(ctx, decl, net: str, index: int, in_shape: tuple[int, ...]):
    """LayerDecl → (Layer, parameter TensorVars)."""
    if len(in_shape) != 2:
        raise SpecError(f"message expects a node-feature matrix [N, F], got shape "
                        f"{list(in_shape)}", decl.span,
                        fix=f"declare the network with in=[N, {in_shape[0]}]")
    n_nodes, n_feat = in_shape
    args = ctx.layer_args(decl, positional=("messages",), allowed=OPTIONS)
    if "messages" not in args:
        raise SpecError("message needs the size of its messages", decl.span,
                        fix="write message(messages=M, ...)")
    n_msg = ctx.positive_int(args["messages"], "message size")
    n_out = ctx.positive_int(args["out"], "output size") if "out" in args else n_feat
    edge_hidden = _widths(ctx, args["edge_hidden"], "edge_hidden") \
        if "edge_hidden" in args else ()
    node_hidden = _widths(ctx, args["node_hidden"], "node_hidden") \
        if "node_hidden" in args else ()
    act, act_params = ("tanh", ())
    if "act" in args:
        act, act_params = parse_activation(ctx, args["act"].value)
    edge_input = keyword(args["edge_input"], ("difference", "pair"), "edge_input") \
        if "edge_input" in args else "difference"
    distance = ctx.boolean(args["distance"]) if "distance" in args else False
    if distance and edge_input != "difference":
        raise SpecError("distance=true appends |x_i - x_j| to the difference", args["distance"].span,
                        fix="use edge_input=difference, or drop distance=true")
    node_input = keyword(args["node_input"], ("both", "aggregate"), "node_input") \
        if "node_input" in args else "both"
    aggregate = keyword(args["aggregate"], ("sum", "mean"), "aggregate") \
        if "aggregate" in args else "sum"
    edges = _edges(ctx, args.get("edges"), n_nodes)
    if aggregate == "mean":
        targets = {t for _, t in edges}
        for i in range(n_nodes):
            if i not in targets:
                raise SpecError(f"node {i} receives no message, so their mean is undefined",
                                args["edges"].span, fix="add an edge into it, or use "
                                                        "aggregate=sum")
    ranged = ranged_weights(args, "message")
    e_in = 2 * n_feat if edge_input == "pair" else n_feat + (1 if distance else 0)
    v_in = n_msg + (n_feat if node_input == "both" else 0)
    weights = _mlp_weights(ctx, decl, net, index, "edge", (e_in, *edge_hidden, n_msg), ranged)
    weights += _mlp_weights(ctx, decl, net, index, "node", (v_in, *node_hidden, n_out), ranged)
    pre = prefix(index)
    names = {w.name[len(net) + 1 + len(pre):]: w.name for w in weights}
    layer = Layer(
        kind="message", index=index, in_shape=tuple(in_shape), out_shape=(n_nodes, n_out),
        options=(("act", act), ("act_params", act_params), ("aggregate", aggregate),
                 ("distance", distance), ("edge_hidden", edge_hidden),
                 ("edge_input", edge_input), ("edges", edges), ("messages", n_msg),
                 ("names", tuple(sorted(names.items()))), ("node_hidden", node_hidden),
                 ("node_input", node_input)),
        params=tuple(w.name for w in weights), span=decl.span,
    )
    return layer, weights


def _mlp(x, params, names, name: str, n_layers: int, act, act_params, program: Program,
         label) -> list:
    """Linear layers 1..n_layers with `act` after all but the last; one symbol per unit."""
    h = list(x)
    for k in range(1, n_layers + 1):
        W, b = params[names[f"{name}{k}.W"]], params[names[f"{name}{k}.b"]]
        last = k == n_layers
        nxt = []
        for u in range(W.shape[0]):
            z = sp.Add(*[_times(W[u, c], h[c]) for c in range(W.shape[1])], b[u])
            if last:
                nxt.append(program.assign(z, label("out", k, u)))
            else:
                z = program.assign(z, label("pre", k, u))
                nxt.append(program.assign(act.build(z, *act_params), label("act", k, u)))
        h = nxt
    return h


def forward(layer: Layer, x: np.ndarray, params: dict[str, np.ndarray], program: Program,
            tag: str) -> np.ndarray:
    """Messages on every edge, their sum (or mean) per node, then φ_v on every node."""
    names = dict(layer.option("names"))
    act = ACTIVATIONS[layer.option("act")]
    act_params = layer.option("act_params")
    n, n_feat = layer.in_shape
    n_msg = layer.option("messages")
    n_edge = len(layer.option("edge_hidden")) + 1
    n_node = len(layer.option("node_hidden")) + 1
    sums = [[[] for _ in range(n_msg)] for _ in range(n)]
    for j, i in layer.option("edges"):
        if layer.option("edge_input") == "pair":
            e_in = [x[i, c] for c in range(n_feat)] + [x[j, c] for c in range(n_feat)]
        else:
            e_in = [program.assign(x[i, c] - x[j, c], f"{tag}.d[{i},{j},{c}]")
                    for c in range(n_feat)]
            if layer.option("distance"):
                sq = sp.Add(*[d * d for d in e_in])
                e_in.append(program.assign(sp.sqrt(sq), f"{tag}.r[{i},{j}]"))

        def edge_label(kind, k, u, i=i, j=j):
            base = {"out": "m", "pre": f"ez{k}", "act": f"e{k}"}[kind]
            return f"{tag}.{base}[{i},{j},{u}]"

        m = _mlp(e_in, params, names, "edge", n_edge, act, act_params, program, edge_label)
        for k in range(n_msg):
            sums[i][k].append(m[k])
    out = np.empty(layer.out_shape, dtype=object)
    for i in range(n):
        scale = sp.Rational(1, len(sums[i][0])) if layer.option("aggregate") == "mean" and \
            sums[i][0] else sp.Integer(1)
        agg = [program.assign(scale * sp.Add(*sums[i][k]), f"{tag}.agg[{i},{k}]")
               for k in range(n_msg)]
        v_in = ([x[i, c] for c in range(n_feat)] if layer.option("node_input") == "both"
                else []) + agg

        def node_label(kind, k, u, i=i):
            base = {"out": "y", "pre": f"vz{k}", "act": f"v{k}"}[kind]
            return f"{tag}.{base}[{i},{u}]"

        y = _mlp(v_in, params, names, "node", n_node, act, act_params, program, node_label)
        out[i, :] = y
    return out


def edge_network(layer: Layer, tensors: dict, act: str | None = None) -> tuple[str, dict]:
    """φ_e of an elaborated message layer as `dense` layer lines and an `.npz`-ready dict of
    its weights (`W1`, `b1`, ...), for a spec that states claims about the messages alone.

    `tensors` maps parameter names to concrete `TensorVar`s (their exact entries are kept as
    floats, which the spec's loader reads back exactly).
    """
    names = dict(layer.option("names"))
    widths = (*layer.option("edge_hidden"), layer.option("messages"))
    act = act or layer.option("act")
    if layer.option("act_params"):
        act += "(" + ", ".join(str(p) for p in layer.option("act_params")) + ")"
    lines, arrays = [], {}
    for k, w in enumerate(widths, start=1):
        lines.append(f"dense({w}, {act})" if k < len(widths) else f"dense({w})")
        for kind in ("W", "b"):
            t = tensors[names[f"edge{k}.{kind}"]]
            arrays[f"{kind}{k}"] = np.array([float(e) for e in t.entries]).reshape(t.shape)
    return "\n".join(lines), arrays
