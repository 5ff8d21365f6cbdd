"""`gcn`: a graph convolutional network (Kipf & Welling) on a node-feature matrix.

The network input is X : [N, F] (one row per node). With Â = A + I (`self_loops=true`, the
default) or Â = A, and Ã = D^-1/2 Â D^-1/2 with D_ii = sum_j Â_ij (`normalize=true`, the
default) or Ã = Â, each of the `layers` layers computes

    H^(0) = X,    H^(l) = act(Ã H^(l-1) W_l + b_l)      W_l : [in, out],  b_l : [out]

(the H W convention: W_1 is [F, hidden]; b_l is added to every node's row; `act` defaults to
relu and applies after every layer). The read-out takes row `node` (0-based, default 0) of
H^(readout_layer) (1-based, default the last layer) and gives, like lstm/gru: with the default
projection `proj_w @ h + proj_b` (torch.nn.Linear(hidden, 1): proj_w [1, hidden], proj_b [1]);
with `unit=j`, h[j]; with `output=vector`, h. Scalars come as one-entry vectors, as dense(1).

The adjacency is `adjacency=[[...]]` (0/1 or weighted), `adjacency=symbolic` (free symbols
`<net>.A[i,j]`), `adjacency in [lo, hi]` (ranged symbols), or array `A` / `adjacency` of the
network's weight file. With data and normalisation every degree must be positive (a located
error otherwise). With symbols, d_i = sum_j Â_ij is a program symbol `<net>.deg[i]` and
Ã_ij = d_i^-1/2 Â_ij d_j^-1/2: the terms are only defined where every degree is positive, so
identity claims need that as a side condition (`adjacency in [0, 1]` with self-loops gives
d_i >= 1).

The graph can also be an edge list, PyG's `edge_index` convention (messages flow from source
to target, so a pair (s, t) sets A[t, s], and repeated pairs add up): `edges=[[s, t], ...]`
(one pair per row) or `edge_index=[[s0, s1, ...], [t0, t1, ...]]` ([2, E], as PyG's tensor;
`edge_index=file` reads array `edge_index` of the weight file). With self-loops on, a listed
pair (i, i) is an error: PyG's GCNConv keeps it once (add_remaining_self_loops) where A + I
would count it twice. `last_act=` sets the last layer's activation (default `act`), e.g.
`last_act=identity` for a PyG model whose last GCNConv is not followed by an activation.

Weights also load from a torch_geometric `GCNConv` state_dict (PyG 2.x): each conv holds
`lin.weight` [out, in] (a Linear without bias, applied as X W^T) and `bias` [out]; layer l
takes `conv<l>.lin.weight` / `conv<l>.bias`, `convs.<l-1>.*`, a bare `lin.weight` / `bias`
for one layer, or else the next `*.lin.weight` of the file as for dense layers. They are used
whenever the file has no `gcn<l>.W`; our W_l is lin.weight^T.

Parameter names (also the weight-file keys): `<net>.A`, `<net>.gcn<l>.W`, `<net>.gcn<l>.b`,
`<net>.proj_w`, `<net>.proj_b`, prefixed `layer<k>.` when the gcn is the network's k-th layer
(k > 1). `W in [lo, hi]` ranges every weight and bias. Intermediate symbols:
`<net>.hw<l>[j,o]` (H W), `<net>.z<l>[i,o]` (pre-activation), `<net>.h<l>[i,o]`.

The read-out helpers (`readout_options`, `readout_weights`, `readout`) are shared with the
transformer.
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from ..diagnostics import SpecError
from ..ir import Layer, TensorVar
from ..symbolic.program import Program
from ..syntax import ast
from .activations import ACTIVATIONS
from .dense import parse_activation

OPTIONS = {"hidden", "layers", "readout_layer", "node", "projection", "unit", "output", "act",
           "self_loops", "normalize", "adjacency", "bias", "W", "edges", "edge_index",
           "last_act"}


# ---- shared read-out: one row of a matrix → scalar projection, a unit, or the whole row ----

def keyword(arg, choices: tuple[str, ...], what: str) -> str:
    """A bare word option such as `output=scalar`."""
    node = arg.value
    if isinstance(node, ast.Ref) and node.name in choices:
        return node.name
    raise SpecError(f"{what} must be one of: {', '.join(choices)}", node.span)


def index_option(ctx, arg, size: int, what: str, base: int = 0, fix: str | None = None) -> int:
    """An integer option in base..base+size-1 (a located error otherwise), returned 0-based."""
    v = ctx.scalar_constant(arg.value)
    if not v.is_Integer:
        raise SpecError(f"{what} must be an integer, got {v}", arg.value.span)
    if not base <= int(v) < base + size:
        raise SpecError(f"{what} {v} is out of range: it must be in {base}..{base + size - 1}",
                        arg.value.span, fix=fix)
    return int(v) - base


def prefix(index: int) -> str:
    """Parameter-name prefix of a network's k-th layer: none for the first, `layer<k>.` after."""
    return "" if index == 1 else f"layer{index}."


def ranged_weights(args, kind: str):
    """`W in [lo, hi]`: one range for every weight and bias of the layer, or None."""
    arg = args.get("W")
    if arg is not None and arg.value is not None:
        raise SpecError(f"{kind} takes a range for all its weights, not values", arg.span,
                        fix="write W in [lo, hi], or load a weight file")
    return arg


def readout_options(ctx, args, width: int) -> dict:
    """`output`, `unit`, `projection` → {"output", "projection", "unit"}, as lstm/gru read out.

    The projection is on by default, off when `unit` or `output=vector` is given.
    """
    output = keyword(args["output"], ("scalar", "vector"), "output") if "output" in args \
        else "scalar"
    unit = None
    if "unit" in args:
        if output == "vector":
            raise SpecError("unit selects one hidden unit; output=vector reads all of them",
                            args["unit"].span, fix="drop one of the two options")
        unit = index_option(ctx, args["unit"], width, "unit",
                            fix=f"units are 0-based: 0..{width - 1} for width {width}")
    projection = unit is None and output == "scalar"
    if "projection" in args:
        asked = ctx.boolean(args["projection"])
        if asked and not projection:
            what = "unit" if unit is not None else "output=vector"
            raise SpecError(f"{what} reads the hidden vector directly, but projection=true",
                            args["projection"].span, fix=f"drop projection=true, or drop {what}")
        if not asked and output == "scalar" and unit is None:
            raise SpecError("without projection, say what is read out", args["projection"].span,
                            fix="add unit=J (0-based) or output=vector")
        projection = asked
    return {"output": output, "projection": projection, "unit": unit}


def readout_weights(ctx, decl, net: str, index: int, width: int, ro: dict,
                    ranged=None) -> list[TensorVar]:
    """The projection `proj_w` [1, width] and `proj_b` [1] (torch.nn.Linear(width, 1))."""
    if not ro["projection"]:
        return []
    pre = prefix(index)
    return [ctx.weight(decl, net, pre + "proj_w", (1, width), ranged, index, "proj.weight",
                       file_keys=("proj.weight",)),
            ctx.weight(decl, net, pre + "proj_b", (1,), ranged, index, "proj.bias",
                       file_keys=("proj.bias",))]


def readout_shape(ro: dict, width: int) -> tuple[int, ...]:
    return (width,) if ro["output"] == "vector" else (1,)


def readout(h, ro: dict, params, names: dict, program: Program, tag: str) -> np.ndarray:
    """The network output from the read-out row `h`."""
    if ro["output"] == "vector":
        return np.array(list(h), dtype=object)
    if not ro["projection"]:
        return np.array([h[ro["unit"]]], dtype=object)
    w, b = params[names["proj_w"]], params[names["proj_b"]]
    y = sp.Add(*[w[0, j] * h[j] for j in range(len(h))], b[0])
    return np.array([program.assign(y, f"{tag}.proj[0]")], dtype=object)


# ---- gcn ---------------------------------------------------------------------------------------

def _adjacency(ctx, decl, net: str, index: int, n: int, arg) -> TensorVar:
    """`<net>.A`: inline data, symbols, ranged symbols, or the weight file's `A`/`adjacency`."""
    short, shape = prefix(index) + "A", (n, n)
    name = f"{net}.{short}"
    if arg is not None and isinstance(arg.value, ast.Ref) and arg.value.name == "symbolic":
        return TensorVar(name=name, role="param", shape=shape, entries=ctx.symbols(name, shape),
                         span=arg.span)
    if arg is not None and arg.value is not None:
        v = ctx.constant(arg.value)
        if v.shape != shape:
            raise SpecError(f"adjacency has shape {list(v.shape)}, the graph has {n} nodes",
                            arg.value.span,
                            fix=f"give an {n} x {n} matrix (one row per row of the input)")
        return TensorVar(name=name, role="param", shape=shape,
                         entries=tuple(sp.Rational(e) for e in v.flat), span=arg.span)
    if arg is None and getattr(ctx, "_net_file", None) is None:
        raise SpecError("gcn needs its graph", decl.span,
                        fix="add adjacency=[[...]] (N x N), adjacency=symbolic, or load a "
                            "weight file with an array `A`")
    return ctx.weight(decl, net, short, shape, arg, index, "A", file_keys=("A", "adjacency"))


def _edge_adjacency(ctx, decl, net: str, index: int, n: int, args, self_loops: bool,
                    ) -> TensorVar:
    """`<net>.A` from `edges=` pairs or a PyG `edge_index` [2, E]: A[target, source] counts."""
    from ..elaborate import exact

    if "edges" in args and "edge_index" in args:
        raise SpecError("edges and edge_index both given", args["edge_index"].span,
                        fix="give the graph once")
    key = "edges" if "edges" in args else "edge_index"
    arg = args[key]
    node = arg.value
    if isinstance(node, ast.Ref) and node.name == "file" and key == "edge_index":
        wf = getattr(ctx, "_net_file", None)
        if wf is None or wf.find(("edge_index",)) is None:
            raise SpecError("edge_index=file, but the network's weight file has no array "
                            "`edge_index`", node.span,
                            fix="save the graph's edge_index with the weights, or give it inline")
        raw = wf.take("edge_index", index)
        pairs = np.array([[exact(v, node.span) for v in row] for row in np.atleast_2d(raw)],
                         dtype=object)
    else:
        pairs = ctx.constant(node)
    if key == "edge_index":
        if pairs.ndim != 2 or pairs.shape[0] != 2:
            raise SpecError(f"edge_index has shape {list(pairs.shape)}, expected [2, E]",
                            node.span, fix="row 0 the sources, row 1 the targets, as in PyG; "
                                           "or write edges=[[s, t], ...]")
        pairs = pairs.T
    elif pairs.ndim != 2 or pairs.shape[1] != 2:
        raise SpecError(f"edges has shape {list(pairs.shape)}, expected [E, 2]", node.span,
                        fix="one [source, target] pair per edge")
    a = [[sp.Integer(0)] * n for _ in range(n)]
    for e, (src, dst) in enumerate(pairs):
        span = node.items[e].span if key == "edges" and isinstance(node, ast.ListLit) \
            else node.span
        for v in (src, dst):
            if not (sp.Rational(v).is_Integer and 0 <= v < n):
                raise SpecError(f"edge {e} names node {v}, the graph has nodes 0..{n - 1}",
                                span, fix="nodes are 0-based rows of the input")
        if src == dst and self_loops:
            raise SpecError(f"edge {e} is a self-loop ({src}, {src}), and self_loops=true adds "
                            f"one to every node", span,
                            fix="drop the pair (PyG's GCNConv adds each missing self-loop once), "
                                "or set self_loops=false")
        a[int(dst)][int(src)] += 1
    name = f"{net}.{prefix(index)}A"
    return TensorVar(name=name, role="param", shape=(n, n),
                     entries=tuple(e for row in a for e in row), span=arg.span)


def _pyg_weight(ctx, decl, net: str, index: int, k: int, n_layers: int, width: int,
                hidden: int, use_bias: bool) -> list[TensorVar] | None:
    """W_k = lin.weight^T and b_k = bias of the k-th GCNConv of a PyG state_dict, or None
    when the file names its arrays our way (`gcn<k>.W`) or has no `lin.weight` at all."""
    from ..elaborate import exact

    wf = getattr(ctx, "_net_file", None)
    if wf is None or wf.find((f"gcn{k}.W",)) is not None or \
            not any(key == "lin.weight" or key.endswith(".lin.weight") for key in wf.data):
        return None
    short = f"{prefix(index)}gcn{k}.W"
    explicit = (f"conv{k}.lin.weight", f"convs.{k - 1}.lin.weight", f"gcn{k}.lin.weight")
    if n_layers == 1:
        explicit += ("lin.weight", "conv.lin.weight")
    key = wf.find(explicit) or wf.match("lin.weight", (hidden, width), index, short, decl)
    arr = wf.take(key, index)
    if tuple(arr.shape) != (hidden, width):
        raise SpecError(f"array `{key}` in {wf.name} has shape {list(arr.shape)}, gcn layer {k} "
                        f"needs [{hidden}, {width}]", decl.span,
                        fix="PyG's lin.weight is [out, in]: check hidden= and the layer count")
    w = np.array([[exact(v, wf.span) for v in row] for row in arr.astype(float)], dtype=object)
    out = [TensorVar(name=f"{net}.{short}", role="param", shape=(width, hidden),
                     entries=tuple(w.T.flat), span=decl.span)]
    bias_key = key[: -len("lin.weight")] + "bias"
    if use_bias:
        if bias_key not in wf.data:
            raise SpecError(f"weight file {wf.name}: the GCNConv of `{key}` has no `{bias_key}`",
                            decl.span, fix="if the layer has no bias, write bias=false")
        b = wf.take(bias_key, index)
        if tuple(b.shape) != (hidden,):
            raise SpecError(f"array `{bias_key}` in {wf.name} has shape {list(b.shape)}, gcn "
                            f"layer {k} needs [{hidden}]", decl.span)
        out.append(TensorVar(name=f"{net}.{prefix(index)}gcn{k}.b", role="param",
                             shape=(hidden,), span=decl.span,
                             entries=tuple(exact(v, wf.span) for v in b.astype(float).flat)))
    return out


def _check_degrees(adj: TensorVar, self_loops: bool, arg, decl) -> None:
    """Data adjacency with normalisation: every degree of Â must be positive.

    The error points at the node's row of an inline matrix, else at the layer.
    """
    n = adj.shape[0]
    a = np.array(adj.entries, dtype=object).reshape(adj.shape)
    for i in range(n):
        deg = sum(a[i, j] for j in range(n)) + (1 if self_loops else 0)
        if deg > 0:
            continue
        span = decl.span
        if arg is not None and isinstance(arg.value, ast.ListLit):
            span = arg.value.items[i].span
        what = "degree 0" if deg == 0 else f"negative degree {deg}"
        raise SpecError(f"node {i} has {what}, so D^-1/2 of the normalised adjacency is "
                        f"undefined", span,
                        fix="give the node an edge, or set self_loops=true or normalize=false")


def elaborate(ctx, decl, net: str, index: int, in_shape: tuple[int, ...]):
    """LayerDecl → (Layer, parameter TensorVars)."""
    if len(in_shape) != 2:
        raise SpecError(f"gcn expects a node-feature matrix [N, F], got shape {list(in_shape)}",
                        decl.span, fix=f"declare the network with in=[N, {in_shape[0]}]")
    n_nodes, n_feat = in_shape
    args = ctx.layer_args(decl, positional=("hidden",), allowed=OPTIONS)
    if "hidden" not in args:
        raise SpecError("gcn needs its hidden width", decl.span, fix="write gcn(hidden=H, ...)")
    hidden = ctx.positive_int(args["hidden"], "hidden width")
    n_layers = ctx.positive_int(args["layers"], "number of layers") if "layers" in args else 1
    readout_layer = n_layers
    if "readout_layer" in args:
        readout_layer = 1 + index_option(
            ctx, args["readout_layer"], n_layers, "readout_layer", base=1,
            fix=f"the stack has {n_layers} layer(s), counted from 1; set layers= to stack more")
    node = 0
    if "node" in args:
        node = index_option(ctx, args["node"], n_nodes, "node",
                            fix=f"nodes are 0-based: 0..{n_nodes - 1} (rows of the input)")
    act, act_params = ("relu", ())
    if "act" in args:
        act, act_params = parse_activation(ctx, args["act"].value)
    last_act, last_params = act, act_params
    if "last_act" in args:
        last_act, last_params = parse_activation(ctx, args["last_act"].value)
    self_loops = ctx.boolean(args["self_loops"]) if "self_loops" in args else True
    normalize = ctx.boolean(args["normalize"]) if "normalize" in args else True
    use_bias = ctx.boolean(args["bias"]) if "bias" in args else True
    ro = readout_options(ctx, args, hidden)
    ranged = ranged_weights(args, "gcn")

    if "edges" in args or "edge_index" in args:
        if "adjacency" in args:
            raise SpecError("adjacency and an edge list both given", args["adjacency"].span,
                            fix="give the graph once")
        adj = _edge_adjacency(ctx, decl, net, index, n_nodes, args, self_loops)
    else:
        adj = _adjacency(ctx, decl, net, index, n_nodes, args.get("adjacency"))
    if normalize and adj.concrete:
        _check_degrees(adj, self_loops, args.get("adjacency"), decl)
    pre = prefix(index)
    weights = [adj]
    width = n_feat
    for k in range(1, n_layers + 1):
        pyg = None if ranged is not None else \
            _pyg_weight(ctx, decl, net, index, k, n_layers, width, hidden, use_bias)
        if pyg is not None:
            weights += pyg
            width = hidden
            continue
        weights.append(ctx.weight(decl, net, f"{pre}gcn{k}.W", (width, hidden), ranged, index,
                                  f"gcn{k}.W", file_keys=(f"gcn{k}.W",)))
        if use_bias:
            weights.append(ctx.weight(decl, net, f"{pre}gcn{k}.b", (hidden,), ranged, index,
                                      f"gcn{k}.b", file_keys=(f"gcn{k}.b",)))
        width = hidden
    weights += readout_weights(ctx, decl, net, index, hidden, ro, ranged)
    names = {w.name[len(net) + 1 + len(pre):]: w.name for w in weights}
    layer = Layer(
        kind="gcn", index=index, in_shape=tuple(in_shape), out_shape=readout_shape(ro, hidden),
        options=(("act", act), ("act_params", act_params), ("bias", use_bias),
                 ("last_act", (last_act, last_params)),
                 ("layers", n_layers), ("names", tuple(sorted(names.items()))), ("node", node),
                 ("normalize", normalize), ("readout", tuple(sorted(ro.items()))),
                 ("readout_layer", readout_layer), ("self_loops", self_loops)),
        params=tuple(w.name for w in weights), span=decl.span,
    )
    return layer, weights


def propagation(A: np.ndarray, self_loops: bool, normalize: bool, program: Program,
                tag: str) -> np.ndarray:
    """Ã: constants folded exactly when A is data, program symbols when it is symbolic."""
    n = A.shape[0]
    a_hat = np.array(A, dtype=object)
    if self_loops:
        for i in range(n):
            a_hat[i, i] = a_hat[i, i] + 1
    if not normalize:
        return a_hat
    if all(sp.sympify(e).is_Rational for e in a_hat.flat):
        deg = [sp.Add(*a_hat[i]) for i in range(n)]
        return np.array([[a_hat[i, j] / sp.sqrt(deg[i] * deg[j]) for j in range(n)]
                         for i in range(n)], dtype=object)
    deg = [program.assign(sp.Add(*a_hat[i]), f"{tag}.deg[{i}]") for i in range(n)]
    root = [program.assign(1 / sp.sqrt(d), f"{tag}.dinv[{i}]") for i, d in enumerate(deg)]
    out = np.empty((n, n), dtype=object)
    for i in range(n):
        for j in range(n):
            out[i, j] = program.assign(root[i] * a_hat[i, j] * root[j], f"{tag}.an[{i},{j}]")
    return out


def forward(layer: Layer, x: np.ndarray, params: dict[str, np.ndarray], program: Program,
            tag: str) -> np.ndarray:
    """Layers 1..readout_layer on all nodes, the last one only on the read-out node."""
    names = dict(layer.option("names"))
    act = ACTIVATIONS[layer.option("act")]
    act_params = layer.option("act_params")
    last, node = layer.option("readout_layer"), layer.option("node")
    prop = propagation(params[names["A"]], layer.option("self_loops"),
                       layer.option("normalize"), program, tag)
    n = x.shape[0]
    h = x
    for k in range(1, last + 1):
        W = params[names[f"gcn{k}.W"]]
        b = params[names[f"gcn{k}.b"]] if layer.option("bias") else None
        n_in, n_out = W.shape
        hw = np.empty((n, n_out), dtype=object)
        for j in range(n):
            for o in range(n_out):
                hw[j, o] = program.assign(sp.Add(*[h[j, c] * W[c, o] for c in range(n_in)]),
                                          f"{tag}.hw{k}[{j},{o}]")
        rows = range(n) if k < last else [node]
        nxt = np.full((n, n_out), sp.Integer(0), dtype=object)
        fn, fn_params = (act, act_params) if k < layer.option("layers") else \
            (ACTIVATIONS[layer.option("last_act")[0]], layer.option("last_act")[1])
        for i in rows:
            for o in range(n_out):
                terms = [prop[i, j] * hw[j, o] for j in range(n) if prop[i, j] != 0]
                if b is not None:
                    terms.append(b[o])
                z = program.assign(sp.Add(*terms), f"{tag}.z{k}[{i},{o}]")
                nxt[i, o] = program.assign(fn.build(z, *fn_params), f"{tag}.h{k}[{i},{o}]")
        h = nxt
    ro = dict(layer.option("readout"))
    return readout(h[node], ro, params, names, program, tag)
