"""`transformer`: a post-norm encoder as in *Attention Is All You Need*, exactly
`torch.nn.TransformerEncoderLayer(d, heads, ff, dropout=0, batch_first=True, norm_first=False)`
(stacked as `torch.nn.TransformerEncoder` when `layers` > 1), or with `norm_first=true` the
pre-norm layer (`norm_first=True`).

The input is a sequence X : [T, d] (one row per position). Optionally a learned positional
embedding P : [T, d] is added (`positional=true`): X + P. Each encoder layer then computes

    Q = X Wq^T + bq,  K = X Wk^T + bk,  V = X Wv^T + bv     [Wq; Wk; Wv] = in_proj_weight [3d, d]
    head h (columns h*dh .. (h+1)*dh - 1, dh = d / heads):
        A_h = softmax_rows(Q_h K_h^T / sqrt(dh)),   O_h = A_h V_h
    MHA(X) = [O_1 ... O_H] Wo^T + bo                      Wo = out_proj.weight [d, d]
    Y   = LN1(X + MHA(X))
    X'  = LN2(Y + act(Y W1^T + b1) W2^T + b2)              W1 = linear1.weight [ff, d]

with LayerNorm over each row (see `norm.py`). With `norm_first=true` (PyTorch's pre-LN layer):

    Y   = X + MHA(LN1(X)),   X' = Y + act(LN2(Y) W1^T + b1) W2^T + b2

A state_dict does not say which of the two orders it was trained with (the names and shapes are
the same), so a spec loading a pre-LN model must say `norm_first=true`; nor does it record the
feed-forward activation (`ff_act=`) or LayerNorm's eps. What it does record is checked: a bias
the spec expects but the file lacks, or an array no layer takes (a final `norm.*` without
`final_norm=true`, biases with `bias=false`), is a located error.

More of PyTorch's options: `ff_act=gelu` (exact, erf) or `ff_act=gelu_tanh` (`approximate=
'tanh'`) besides relu and the other activations; `bias=false` (PyTorch's `bias=False`: no bias
in any linear layer nor in the two LayerNorms; `qkv_bias=false` / `out_bias=false` drop only
the attention's); `final_norm=true`, the `norm=LayerNorm(d)` of `nn.TransformerEncoder` after
the last layer (`t.norm.weight`, `t.norm.bias`, no bias with `bias=false`; the layer's `eps`); attention masks as
PyTorch's `src_mask` and `src_key_padding_mask`, shared by every layer and head:
`mask=[[...]]` ([T, T], boolean: 1 where query t may not attend to key s, as torch's bool masks),
`mask=causal` (torch's `generate_square_subsequent_mask`), `additive_mask=[[...]]` (a float
[T, T] mask added to the scores), `key_padding_mask=[...]` ([T], 1 for a padding key), each
also `=file`: array `src_mask` / `mask` (resp. `src_key_padding_mask` / `key_padding_mask`) of
the network's weight file; in an additive mask from a file `-inf` entries mask. A query with
every key masked is an error (PyTorch returns NaN).

The read-out takes row `position` (0-based,
default 0) of the last layer's output and gives `proj.weight @ x + proj.bias` (default), x[unit]
(`projection=false`) or x itself (`output=vector`), as for `gcn`.

Parameter names are PyTorch's state_dict keys under the network's name: `t.linear1.weight`,
`t.self_attn.in_proj_weight`, ... for one layer; for a stack, layer k (0-based) is
`t.layers<k>.linear1.weight` (a name part cannot start with a digit), read from a weight file
as `layers.<k>.linear1.weight` (a TransformerEncoder state_dict; a single layer also loads from
`linear1.weight`, a TransformerEncoderLayer state_dict). Also `t.pos` [T, d] (file key `pos` or
`pos_embedding`) and the projection `t.proj_w` [1, d], `t.proj_b` [1] (file keys also
`proj.weight`, `proj.bias`). Names get a `layer<k>.` prefix when the transformer is the
network's k-th layer (k > 1). `W in [lo, hi]` ranges every parameter.

Softmax is built from `exp`: e_j = exp(s_j), Z = sum_j e_j, a_j = e_j * (1 / Z), each a program
symbol (no max is subtracted: symbolically it cancels, and evaluation is in exact or 60-digit
arithmetic).
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from ..diagnostics import SpecError
from ..ir import Layer
from ..symbolic.program import Program
from .activations import ACTIVATIONS
from .dense import parse_activation
from .graph import (
    index_option,
    prefix,
    ranged_weights,
    readout,
    readout_options,
    readout_shape,
    readout_weights,
)
from .norm import layer_norm, parse_eps

OPTIONS = {"heads", "ff", "layers", "positional", "position", "projection", "unit", "output",
           "ff_act", "qkv_bias", "out_bias", "eps", "W", "norm_first", "bias", "final_norm",
           "mask", "additive_mask", "key_padding_mask"}


def softmax(program: Program, scores, hint: str) -> list[sp.Expr]:
    """e_j / sum_k e_k with e_j = exp(s_j); every exp, the sum and each quotient a symbol.

    A score None is a masked key: weight 0, left out of the sum (PyTorch's -inf)."""
    exps = [None if s is None else
            program.assign(sp.exp(program.assign(s, f"{hint}.s[{j}]")), f"{hint}.e[{j}]")
            for j, s in enumerate(scores)]
    total = program.assign(sp.Add(*[e for e in exps if e is not None]), f"{hint}.Z")
    inv = program.assign(1 / total, f"{hint}.Zinv")  # one reciprocal, so a_j is a product
    return [sp.Integer(0) if e is None else program.assign(e * inv, f"{hint}.a[{j}]")
            for j, e in enumerate(exps)]


def _keys(k: int, n_layers: int, key: str) -> tuple[str, tuple[str, ...]]:
    """(short name, extra weight-file keys) of a PyTorch parameter of encoder layer k."""
    if n_layers == 1:
        return key, (f"layers.0.{key}",)
    return f"layers{k}.{key}", (f"layers.{k}.{key}",)


def param_shapes(d: int, ff: int, qkv_bias: bool, out_bias: bool,
                 bias: bool = True) -> list[tuple[str, tuple]]:
    """PyTorch's TransformerEncoderLayer parameters (state_dict order) and their shapes;
    `bias=False` (PyTorch's) drops the feed-forward and LayerNorm biases too."""
    shapes = [("self_attn.in_proj_weight", (3 * d, d))]
    if qkv_bias:
        shapes.append(("self_attn.in_proj_bias", (3 * d,)))
    shapes.append(("self_attn.out_proj.weight", (d, d)))
    if out_bias:
        shapes.append(("self_attn.out_proj.bias", (d,)))
    for key, shape in (("linear1", (ff, d)), ("linear2", (d, ff))):
        shapes.append((f"{key}.weight", shape))
        if bias:
            shapes.append((f"{key}.bias", shape[:1]))
    for key in ("norm1", "norm2"):
        shapes.append((f"{key}.weight", (d,)))
        if bias:
            shapes.append((f"{key}.bias", (d,)))
    return shapes


# ---- attention masks ------------------------------------------------------------------------

MASK_KEYS = {"mask": ("src_mask", "mask"), "additive_mask": ("src_mask", "mask"),
             "key_padding_mask": ("src_key_padding_mask", "key_padding_mask")}


def _mask_data(ctx, arg, option: str, shape: tuple[int, ...], index: int) -> np.ndarray:
    """The option's array: inline constants (exact) or `file` (the network's weight file)."""
    from ..elaborate import exact
    from ..syntax import ast

    node = arg.value
    if isinstance(node, ast.Ref) and node.name == "file":
        wf = getattr(ctx, "_net_file", None)
        keys = MASK_KEYS[option]
        if wf is None:
            raise SpecError(f"{option}=file, but the network loads no weight file", node.span,
                            fix=f"add load \"FILE\" with an array `{keys[0]}`, or give the "
                                "mask inline")
        key = wf.find(keys)
        if key is None:
            raise SpecError(f"weight file {wf.name} has no array `{keys[0]}` for {option}",
                            node.span, fix="arrays: " + ", ".join(sorted(wf.data)))
        arr = wf.take(key, index)
        if tuple(arr.shape) != shape:
            raise SpecError(f"array `{key}` in {wf.name} has shape {list(arr.shape)}, "
                            f"{option} needs {list(shape)}", node.span)
        if arr.dtype.kind == "b":
            if option == "additive_mask":
                raise SpecError(f"array `{key}` in {wf.name} is boolean, not an additive mask",
                                node.span, fix="write mask=file for a boolean mask")
            return np.array([sp.Integer(int(v)) for v in arr.flat], dtype=object).reshape(shape)
        if arr.dtype.kind not in "fiu":
            raise SpecError(f"array `{key}` in {wf.name} is not numeric", node.span)
        vals = arr.astype(float).flat
        if option == "additive_mask":  # -inf blocks, as in PyTorch's float masks
            flat = [None if v == -np.inf else exact(v, node.span) for v in vals]
        elif np.isneginf(arr.astype(float)).any():
            raise SpecError(f"array `{key}` in {wf.name} holds -inf: an additive float mask",
                            node.span, fix="write additive_mask=file")
        else:
            flat = [exact(v, node.span) for v in vals]
        return np.array(flat, dtype=object).reshape(shape)
    v = ctx.constant(node)
    if v.shape != shape:
        raise SpecError(f"{option} has shape {list(v.shape)}, the sequence needs {list(shape)}",
                        node.span)
    return v


def _boolean(v: np.ndarray, option: str, span) -> np.ndarray:
    bad = [e for e in v.flat if e not in (0, 1)]
    if bad:
        raise SpecError(f"{option} is boolean (1 where attention is blocked), got {bad[0]}", span,
                        fix="write additive_mask= for a float mask added to the scores")
    return v


def parse_mask(ctx, args, seq: int, index: int):
    """The combined mask: a [T][T] tuple of None (blocked) or the exact score offset, or None
    when nothing is masked."""
    from ..syntax import ast

    if "mask" in args and "additive_mask" in args:
        raise SpecError("mask and additive_mask both given", args["additive_mask"].span,
                        fix="give one [T, T] mask, as PyTorch's src_mask")
    add = [[sp.Integer(0)] * seq for _ in range(seq)]
    given = False
    if "mask" in args:
        arg, given = args["mask"], True
        if isinstance(arg.value, ast.Ref) and arg.value.name == "causal":
            blocked = [[int(s > t) for s in range(seq)] for t in range(seq)]
        else:
            blocked = _boolean(_mask_data(ctx, arg, "mask", (seq, seq), index), "mask",
                               arg.value.span).tolist()
        add = [[None if blocked[t][s] else add[t][s] for s in range(seq)] for t in range(seq)]
    if "additive_mask" in args:
        arg, given = args["additive_mask"], True
        add = _mask_data(ctx, arg, "additive_mask", (seq, seq), index).tolist()
    if "key_padding_mask" in args:
        arg, given = args["key_padding_mask"], True
        pad = _boolean(_mask_data(ctx, arg, "key_padding_mask", (seq,), index),
                       "key_padding_mask", arg.value.span)
        add = [[None if pad[s] else add[t][s] for s in range(seq)] for t in range(seq)]
    if not given:
        return None
    for t in range(seq):
        if all(a is None for a in add[t]):
            where = next(args[k] for k in ("key_padding_mask", "mask", "additive_mask")
                         if k in args)
            raise SpecError(f"the mask blocks every key for query position {t}", where.span,
                            fix="PyTorch gives NaN there: leave each position a key to "
                                "attend to")
    return tuple(tuple(None if a is None else sp.Rational(a) for a in row) for row in add)


def elaborate(ctx, decl, net: str, index: int, in_shape: tuple[int, ...]):
    """LayerDecl → (Layer, parameter TensorVars)."""
    if len(in_shape) != 2:
        raise SpecError(f"transformer expects a sequence [T, d], got shape {list(in_shape)}",
                        decl.span, fix=f"declare the network with in=[T, {in_shape[0]}]")
    seq, d = in_shape
    args = ctx.layer_args(decl, positional=("heads",), allowed=OPTIONS)
    heads = ctx.positive_int(args["heads"], "number of heads") if "heads" in args else 1
    if d % heads:
        raise SpecError(f"{heads} heads do not divide the model width {d}",
                        args["heads"].value.span,
                        fix="heads must divide d: one of " +
                            ", ".join(str(h) for h in range(1, d + 1) if d % h == 0))
    ff = ctx.positive_int(args["ff"], "feed-forward width") if "ff" in args else 4 * d
    n_layers = ctx.positive_int(args["layers"], "number of layers") if "layers" in args else 1
    positional = ctx.boolean(args["positional"]) if "positional" in args else False
    position = 0
    if "position" in args:
        position = index_option(ctx, args["position"], seq, "position",
                                fix=f"positions are 0-based: 0..{seq - 1} (rows of the input)")
    act, act_params = ("relu", ())
    if "ff_act" in args:
        act, act_params = parse_activation(ctx, args["ff_act"].value)
    bias = ctx.boolean(args["bias"]) if "bias" in args else True
    for key in ("qkv_bias", "out_bias"):
        if not bias and key in args and ctx.boolean(args[key]):
            raise SpecError(f"bias=false removes every bias, but {key}=true", args[key].span,
                            fix=f"drop {key}=true, or drop bias=false")
    qkv_bias = ctx.boolean(args["qkv_bias"]) if "qkv_bias" in args else bias
    out_bias = ctx.boolean(args["out_bias"]) if "out_bias" in args else bias
    norm_first = ctx.boolean(args["norm_first"]) if "norm_first" in args else False
    final_norm = ctx.boolean(args["final_norm"]) if "final_norm" in args else False
    mask = parse_mask(ctx, args, seq, index)
    eps = parse_eps(ctx, args.get("eps"))
    ro = readout_options(ctx, args, d)

    ranged = ranged_weights(args, "transformer")
    pre = prefix(index)
    weights = []
    if positional:
        weights.append(ctx.weight(decl, net, pre + "pos", (seq, d), ranged, index, "pos",
                                  file_keys=("pos", "pos_embedding")))
    for k in range(n_layers):
        for key, shape in param_shapes(d, ff, qkv_bias, out_bias, bias):
            short, file_keys = _keys(k, n_layers, key)
            weights.append(ctx.weight(decl, net, pre + short, shape, ranged, index, short,
                                      file_keys=(short, *file_keys)))
    if final_norm:  # nn.TransformerEncoder(..., norm=nn.LayerNorm(d)): state_dict `norm.*`
        for key in ("norm.weight", "norm.bias") if bias else ("norm.weight",):
            weights.append(ctx.weight(decl, net, pre + key, (d,), ranged, index, key,
                                      file_keys=(key,)))
    weights += readout_weights(ctx, decl, net, index, d, ro, ranged)
    names = {w.name[len(net) + 1 + len(pre):]: w.name for w in weights}
    layer = Layer(
        kind="transformer", index=index, in_shape=in_shape, out_shape=readout_shape(ro, d),
        options=(("act", act), ("act_params", act_params), ("bias", bias), ("eps", eps),
                 ("ff", ff), ("final_norm", final_norm), ("heads", heads), ("layers", n_layers),
                 ("mask", mask), ("names", tuple(sorted(names.items()))),
                 ("norm_first", norm_first), ("out_bias", out_bias), ("position", position),
                 ("positional", positional), ("qkv_bias", qkv_bias),
                 ("readout", tuple(sorted(ro.items())))),
        params=tuple(w.name for w in weights), span=decl.span,
    )
    return layer, weights


def _linear(program: Program, x: np.ndarray, W: np.ndarray, b, hint: str,
            rows=None) -> np.ndarray:
    """x W^T + b row by row (torch.nn.Linear on a sequence), each entry a program symbol."""
    seq = x.shape[0]
    n_out, n_in = W.shape
    out = np.full((seq, n_out), sp.Integer(0), dtype=object)
    for t in range(seq) if rows is None else rows:
        for i in range(n_out):
            terms = [W[i, j] * x[t, j] for j in range(n_in)]
            if b is not None:
                terms.append(b[i])
            out[t, i] = program.assign(sp.Add(*terms), f"{hint}[{t},{i}]")
    return out


def attention(program: Program, x: np.ndarray, w_in, b_in, w_out, b_out, heads: int,
              hint: str, rows=None, mask=None) -> np.ndarray:
    """torch.nn.MultiheadAttention(x, x, x) on one sequence [T, d]; only `rows` of the output
    (all by default) are computed. `mask[t][s]`: None blocks key s for query t, a number is
    added to the score (see `parse_mask`)."""
    seq, d = x.shape
    dh = d // heads
    q = _linear(program, x, w_in[:d], None if b_in is None else b_in[:d], f"{hint}.q", rows)
    k = _linear(program, x, w_in[d:2 * d], None if b_in is None else b_in[d:2 * d], f"{hint}.k")
    v = _linear(program, x, w_in[2 * d:], None if b_in is None else b_in[2 * d:], f"{hint}.v")
    scale = 1 / sp.sqrt(dh)
    rows = range(seq) if rows is None else rows
    o = np.full((seq, d), sp.Integer(0), dtype=object)
    for h in range(heads):
        cols = range(h * dh, (h + 1) * dh)
        for t in rows:
            scores = [scale * sp.Add(*[q[t, c] * k[s, c] for c in cols]) for s in range(seq)]
            if mask is not None:
                scores = [None if m is None else sc + m for sc, m in zip(scores, mask[t])]
            a = softmax(program, scores, f"{hint}.h{h}[{t}]")
            for c in cols:
                o[t, c] = program.assign(sp.Add(*[a[s] * v[s, c] for s in range(seq)]),
                                         f"{hint}.o[{t},{c}]")
    return _linear(program, o, w_out, b_out, f"{hint}.sa", rows)


def _ln_rows(program: Program, x: np.ndarray, p: dict, key: str, eps, hint: str, rows):
    """LayerNorm `key` (PyTorch's norm1 / norm2 / norm) of the given rows of x."""
    out = np.full(x.shape, sp.Integer(0), dtype=object)
    for t in rows:
        out[t] = layer_norm(program, list(x[t]), p[f"{key}.weight"], p.get(f"{key}.bias"), eps,
                            f"{hint}.{key.replace('norm', 'ln')}", f"{t},")
    return out


def _feed_forward(program: Program, y: np.ndarray, p: dict, opts: dict, hint: str, rows):
    act = ACTIVATIONS[opts["act"]]
    z = _linear(program, y, p["linear1.weight"], p.get("linear1.bias"), f"{hint}.ff1", rows)
    hidden = np.full(z.shape, sp.Integer(0), dtype=object)
    for t in rows:
        for j in range(z.shape[1]):
            hidden[t, j] = program.assign(act.build(z[t, j], *opts["act_params"]),
                                          f"{hint}.ffa[{t},{j}]")
    return _linear(program, hidden, p["linear2.weight"], p.get("linear2.bias"), f"{hint}.ff2",
                   rows)


def _residual(program: Program, x: np.ndarray, f: np.ndarray, hint: str, rows) -> np.ndarray:
    out = np.full(x.shape, sp.Integer(0), dtype=object)
    for t in rows:
        for i in range(x.shape[1]):
            out[t, i] = program.assign(x[t, i] + f[t, i], f"{hint}[{t},{i}]")
    return out


def encoder_layer(program: Program, x: np.ndarray, p: dict, opts: dict, hint: str,
                  rows=None) -> np.ndarray:
    """One encoder layer, post-norm or (`norm_first`) pre-norm; `p` maps PyTorch keys to
    arrays."""
    seq, d = x.shape
    eps = opts["eps"]
    rows = list(range(seq)) if rows is None else rows

    def sa(v):
        return attention(program, v, p["self_attn.in_proj_weight"],
                         p.get("self_attn.in_proj_bias"), p["self_attn.out_proj.weight"],
                         p.get("self_attn.out_proj.bias"), opts["heads"], f"{hint}.attn", rows,
                         opts.get("mask"))

    if opts.get("norm_first"):  # x + SA(LN1(x)), then y + FF(LN2(y))
        y = _residual(program, x, sa(_ln_rows(program, x, p, "norm1", eps, hint, range(seq))),
                      f"{hint}.r1", rows)
        f = _feed_forward(program, _ln_rows(program, y, p, "norm2", eps, hint, rows), p, opts,
                          hint, rows)
        return _residual(program, y, f, f"{hint}.r2", rows)
    a = sa(x)
    y = np.full((seq, d), sp.Integer(0), dtype=object)
    for t in rows:
        r = [x[t, i] + a[t, i] for i in range(d)]  # the residual; LN binds x + sa - mean
        y[t] = layer_norm(program, r, p["norm1.weight"], p.get("norm1.bias"), eps,
                          f"{hint}.ln1", f"{t},")
    f2 = _feed_forward(program, y, p, opts, hint, rows)
    out = np.full((seq, d), sp.Integer(0), dtype=object)
    for t in rows:
        r = [y[t, i] + f2[t, i] for i in range(d)]
        out[t] = layer_norm(program, r, p["norm2.weight"], p.get("norm2.bias"), eps,
                            f"{hint}.ln2", f"{t},")
    return out


def forward(layer: Layer, x: np.ndarray, params: dict[str, np.ndarray], program: Program,
            tag: str) -> np.ndarray:
    """Positional embedding, the encoder stack, the read-out. The last layer is computed only
    at the read-out position: the other rows of its output are never used."""
    from ..symbolic.reverse import cyclic_gc_paused  # not at import: reverse imports layers

    with cyclic_gc_paused():  # thousands of small terms, none in a reference cycle
        return _forward(layer, x, params, program, tag)


def _forward(layer: Layer, x: np.ndarray, params: dict[str, np.ndarray], program: Program,
             tag: str) -> np.ndarray:
    names = dict(layer.option("names"))
    opts = dict(layer.options)
    n_layers = opts["layers"]
    if opts["positional"]:
        pos = params[names["pos"]]
        x = np.array([[program.assign(x[t, i] + pos[t, i], f"{tag}.x0[{t},{i}]")
                       for i in range(x.shape[1])] for t in range(x.shape[0])], dtype=object)
    for k in range(n_layers):
        lp = "" if n_layers == 1 else f"layers{k}."
        p = {short[len(lp):]: params[full] for short, full in names.items()
             if short.startswith(lp) and short[len(lp):] in _TORCH_KEYS}
        rows = [opts["position"]] if k == n_layers - 1 else None
        hint = f"{tag}.enc" if n_layers == 1 else f"{tag}.enc{k}"
        x = encoder_layer(program, x, p, opts, hint, rows)
    if opts.get("final_norm"):
        p = {short: params[full] for short, full in names.items() if short.startswith("norm.")}
        x = _ln_rows(program, x, p, "norm", opts["eps"], f"{tag}.enc", [opts["position"]])
    return readout(x[opts["position"]], dict(opts["readout"]), params, names, program, tag)


_TORCH_KEYS = {key for key, _ in param_shapes(1, 1, True, True)}
