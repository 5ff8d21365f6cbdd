"""`transformer`: a post-norm encoder as in *Attention Is All You Need*, exactly
`torch.nn.TransformerEncoderLayer(d, heads, ff, dropout=0, batch_first=True, norm_first=False)`
(stacked as `torch.nn.TransformerEncoder` when `layers` > 1).

The input is a sequence X : [T, d] (one row per position). Optionally a learned positional
embedding P : [T, d] is added (`positional=true`): X + P. Each encoder layer then computes

    Q = X Wq^T + bq,  K = X Wk^T + bk,  V = X Wv^T + bv     [Wq; Wk; Wv] = in_proj_weight [3d, d]
    head h (columns h*dh .. (h+1)*dh - 1, dh = d / heads):
        A_h = softmax_rows(Q_h K_h^T / sqrt(dh)),   O_h = A_h V_h
    MHA(X) = [O_1 ... O_H] Wo^T + bo                      Wo = out_proj.weight [d, d]
    Y   = LN1(X + MHA(X))
    X'  = LN2(Y + act(Y W1^T + b1) W2^T + b2)              W1 = linear1.weight [ff, d]

with LayerNorm over each row (see `norm.py`). The read-out takes row `position` (0-based,
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
           "ff_act", "qkv_bias", "out_bias", "eps", "W"}


def softmax(program: Program, scores, hint: str) -> list[sp.Expr]:
    """e_j / sum_k e_k with e_j = exp(s_j); every exp, the sum and each quotient a symbol."""
    exps = [program.assign(sp.exp(program.assign(s, f"{hint}.s[{j}]")), f"{hint}.e[{j}]")
            for j, s in enumerate(scores)]
    total = program.assign(sp.Add(*exps), f"{hint}.Z")
    inv = program.assign(1 / total, f"{hint}.Zinv")  # one reciprocal, so a_j is a product
    return [program.assign(e * inv, f"{hint}.a[{j}]") for j, e in enumerate(exps)]


def _keys(k: int, n_layers: int, key: str) -> tuple[str, tuple[str, ...]]:
    """(short name, extra weight-file keys) of a PyTorch parameter of encoder layer k."""
    if n_layers == 1:
        return key, (f"layers.0.{key}",)
    return f"layers{k}.{key}", (f"layers.{k}.{key}",)


def param_shapes(d: int, ff: int, qkv_bias: bool, out_bias: bool) -> list[tuple[str, tuple]]:
    """PyTorch's TransformerEncoderLayer parameters (state_dict order) and their shapes."""
    shapes = [("self_attn.in_proj_weight", (3 * d, d))]
    if qkv_bias:
        shapes.append(("self_attn.in_proj_bias", (3 * d,)))
    shapes.append(("self_attn.out_proj.weight", (d, d)))
    if out_bias:
        shapes.append(("self_attn.out_proj.bias", (d,)))
    shapes += [("linear1.weight", (ff, d)), ("linear1.bias", (ff,)),
               ("linear2.weight", (d, ff)), ("linear2.bias", (d,)),
               ("norm1.weight", (d,)), ("norm1.bias", (d,)),
               ("norm2.weight", (d,)), ("norm2.bias", (d,))]
    return shapes


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
    qkv_bias = ctx.boolean(args["qkv_bias"]) if "qkv_bias" in args else True
    out_bias = ctx.boolean(args["out_bias"]) if "out_bias" in args else True
    eps = parse_eps(ctx, args.get("eps"))
    ro = readout_options(ctx, args, d)

    ranged = ranged_weights(args, "transformer")
    pre = prefix(index)
    weights = []
    if positional:
        weights.append(ctx.weight(decl, net, pre + "pos", (seq, d), ranged, index, "pos",
                                  file_keys=("pos", "pos_embedding")))
    for k in range(n_layers):
        for key, shape in param_shapes(d, ff, qkv_bias, out_bias):
            short, file_keys = _keys(k, n_layers, key)
            weights.append(ctx.weight(decl, net, pre + short, shape, ranged, index, short,
                                      file_keys=(short, *file_keys)))
    weights += readout_weights(ctx, decl, net, index, d, ro, ranged)
    names = {w.name[len(net) + 1 + len(pre):]: w.name for w in weights}
    layer = Layer(
        kind="transformer", index=index, in_shape=in_shape, out_shape=readout_shape(ro, d),
        options=(("act", act), ("act_params", act_params), ("eps", eps), ("ff", ff),
                 ("heads", heads), ("layers", n_layers), ("names", tuple(sorted(names.items()))),
                 ("out_bias", out_bias), ("position", position), ("positional", positional),
                 ("qkv_bias", qkv_bias), ("readout", tuple(sorted(ro.items())))),
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
              hint: str, rows=None) -> np.ndarray:
    """torch.nn.MultiheadAttention(x, x, x) on one sequence [T, d]; only `rows` of the output
    (all by default) are computed."""
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
            a = softmax(program, scores, f"{hint}.h{h}[{t}]")
            for c in cols:
                o[t, c] = program.assign(sp.Add(*[a[s] * v[s, c] for s in range(seq)]),
                                         f"{hint}.o[{t},{c}]")
    return _linear(program, o, w_out, b_out, f"{hint}.sa", rows)


def encoder_layer(program: Program, x: np.ndarray, p: dict, opts: dict, hint: str,
                  rows=None) -> np.ndarray:
    """One post-norm encoder layer; `p` maps PyTorch keys to arrays."""
    seq, d = x.shape
    act = ACTIVATIONS[opts["act"]]
    eps = opts["eps"]
    rows = list(range(seq)) if rows is None else rows
    sa = attention(program, x, p["self_attn.in_proj_weight"], p.get("self_attn.in_proj_bias"),
                   p["self_attn.out_proj.weight"], p.get("self_attn.out_proj.bias"),
                   opts["heads"], f"{hint}.attn", rows)
    y = np.full((seq, d), sp.Integer(0), dtype=object)
    for t in rows:
        r = [x[t, i] + sa[t, i] for i in range(d)]  # the residual; LN binds x + sa - mean
        y[t] = layer_norm(program, r, p["norm1.weight"], p["norm1.bias"], eps, f"{hint}.ln1",
                          f"{t},")
    z = _linear(program, y, p["linear1.weight"], p["linear1.bias"], f"{hint}.ff1", rows)
    hidden = np.full(z.shape, sp.Integer(0), dtype=object)
    for t in rows:
        for j in range(z.shape[1]):
            hidden[t, j] = program.assign(act.build(z[t, j], *opts["act_params"]),
                                          f"{hint}.ffa[{t},{j}]")
    f2 = _linear(program, hidden, p["linear2.weight"], p["linear2.bias"], f"{hint}.ff2", rows)
    out = np.full((seq, d), sp.Integer(0), dtype=object)
    for t in rows:
        r = [y[t, i] + f2[t, i] for i in range(d)]
        out[t] = layer_norm(program, r, p["norm2.weight"], p["norm2.bias"], eps, f"{hint}.ln2",
                            f"{t},")
    return out


def forward(layer: Layer, x: np.ndarray, params: dict[str, np.ndarray], program: Program,
            tag: str) -> np.ndarray:
    """Positional embedding, the encoder stack, the read-out. The last layer is computed only
    at the read-out position: the other rows of its output are never used."""
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
    return readout(x[opts["position"]], dict(opts["readout"]), params, names, program, tag)


_TORCH_KEYS = {key for key, _ in param_shapes(1, 1, True, True)}
