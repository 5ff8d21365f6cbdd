"""`lstm` and `gru`: stacked recurrent layers over a sequence input, read out as PyTorch would.

The network's input is a sequence `[T, n]` (row t is the input at step t+1). By default the
cells are exactly `torch.nn.LSTM` / `torch.nn.GRU` (`batch_first`, zero initial states) and
the parameters carry PyTorch's names, so a `state_dict` loads unchanged:

- LSTM, gates i, f, g, o stacked in `weight_ih_l{k}` [4H, n_k], `weight_hh_l{k}` [4H, H],
  `bias_ih_l{k}`, `bias_hh_l{k}` [4H];
- GRU, gates r, z, n stacked in [3H, ...], `h' = (1 - z) * n + z * h` and, by default, the
  reset gate applied to `W_hn h + b_hn` (PyTorch); `reset=before` applies it to `h` before the
  recurrent product (Cho et al. 2014).

Options (keyword arguments; `hidden` may be positional):
`hidden=H` (required), `layers=L` (default 1), `readout_layer=k` (1-based, default L),
`step=t` (1-based, or `last`, the default), `projection=true|false` (a scalar head
`proj_w @ h + proj_b` with `proj_w : [1, H]`, as `torch.nn.Linear(H, 1)`; default true unless
`unit` or `output=vector` is given), `unit=j` (0-based hidden unit, without projection),
`output=scalar|vector`, `gate_act=sigmoid`, `act=tanh`, `bias=pytorch|single|none`,
`reset=pytorch|before` (GRU), `W in [lo, hi]` (every weight and bias ranged).

More of PyTorch's options: `bidirectional=true` (a `_reverse` copy of every weight, e.g.
`weight_ih_l0_reverse`; a layer's output at step t is [h_forward_t, h_reverse_t], as torch's
`output[t]`, so layer k > 0 takes 2H inputs and the read-out width is 2H); `proj_size=P` (LSTM,
P < H: `weight_hr_l{k}` [P, H], h = W_hr (o * act(c)), `weight_hh_l{k}` [4H, P]); initial states
`h0=` [L * D, H_out] and `c0=` [L * D, H] (LSTM), PyTorch's unbatched h_0 / c_0 with row
k * D + d for layer k, direction d: inline values, `symbolic` (free `<net>.h0[r,j]`), a range
`h0 in [lo, hi]` or `file` (array `h0` / `c0` of the weight file); zero when not given.

Every intermediate quantity is one program symbol, named `<net>.l<layer>.t<step>.<q>[j]`
with 1-based layer and step (`l<layer>r` for the reverse direction): `pre_<gate>` (pre-activation), the gate itself (`i f g o` or
`r z n`), `c`, `act_c`, `hc` (before the projection W_hr) and `h` (LSTM), `hn` or `rh` and `h` (GRU).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sympy as sp

from ..diagnostics import SpecError
from ..ir import Layer
from ..symbolic.program import Program
from .activations import ACTIVATIONS
from .dense import parse_activation

GATES = {"lstm": "ifgo", "gru": "rzn"}
COMMON = {"hidden", "layers", "readout_layer", "step", "projection", "unit", "output",
          "gate_act", "act", "bias", "W", "bidirectional", "h0"}
OPTIONS = {"lstm": COMMON | {"proj_size", "c0"}, "gru": COMMON | {"reset"}}
WRAPPERS = ("lstm", "gru", "rnn")  # attribute names of the recurrent module in wrapper modules


# ---- elaboration ------------------------------------------------------------------------------


def _choice(arg, choices: tuple[str, ...], what: str) -> str:
    from ..syntax import ast

    node = arg.value
    if isinstance(node, ast.Ref) and node.name in choices:
        return node.name
    raise SpecError(f"{what} must be one of: {', '.join(choices)}", node.span)


def _index(ctx, arg, what: str, lo: int, hi: int, fix: str | None = None) -> int:
    """An integer option in [lo, hi], with a located message otherwise."""
    v = ctx.scalar_constant(arg.value)
    if not v.is_Integer:
        raise SpecError(f"{what} must be an integer, got {v}", arg.value.span)
    if not lo <= v <= hi:
        raise SpecError(f"{what} {v} is out of range: it must be in {lo}..{hi}", arg.value.span,
                        fix=fix)
    return int(v)


def _step(ctx, arg, seq_len: int) -> int:
    from ..syntax import ast

    if isinstance(arg.value, ast.Ref) and arg.value.name == "last":
        return seq_len
    if isinstance(arg.value, ast.Ref):
        raise SpecError("step must be a 1-based time step or `last`", arg.value.span)
    return _index(ctx, arg, "step", 1, seq_len,
                  fix=f"the input sequence has {seq_len} steps (1-based), or write step=last")


def _readout(ctx, args, hidden: int, layers: int, seq_len: int, width: int | None = None) -> dict:
    """Which layer, step and unit are read out, and whether a projection follows."""
    out = {"readout_layer": layers, "step": seq_len, "unit": None, "output": "scalar"}
    if "readout_layer" in args:
        out["readout_layer"] = _index(
            ctx, args["readout_layer"], "readout_layer", 1, layers,
            fix=f"the stack has {layers} layer(s), counted from 1; set layers= to stack more")
    if "step" in args:
        out["step"] = _step(ctx, args["step"], seq_len)
    if "output" in args:
        out["output"] = _choice(args["output"], ("scalar", "vector"), "output")
    if "unit" in args:
        if out["output"] == "vector":
            raise SpecError("unit selects one hidden unit; output=vector reads all of them",
                            args["unit"].span, fix="drop one of the two options")
        n = hidden if width is None else width  # bidirectional / proj_size: the output width
        out["unit"] = _index(ctx, args["unit"], "unit", 0, n - 1,
                             fix=f"units are 0-based: 0..{n - 1} for hidden={hidden}"
                             if width is None else f"units are 0-based: 0..{n - 1}, the "
                             f"output width (directions x hidden or proj_size)")
    projection = out["unit"] is None and out["output"] == "scalar"
    if "projection" in args:
        asked = ctx.boolean(args["projection"])
        if asked and not projection:
            what = "unit" if out["unit"] is not None else "output=vector"
            raise SpecError(f"{what} reads the hidden state directly, but projection=true",
                            args["projection"].span,
                            fix=f"drop projection=true, or drop {what}")
        if not asked and out["output"] == "scalar" and out["unit"] is None:
            raise SpecError("without projection, say what is read out", args["projection"].span,
                            fix="add unit=J (0-based) or output=vector")
        projection = asked
    out["projection"] = projection
    return out


def _activation(ctx, args, key: str, default: str) -> tuple[str, tuple]:
    if key not in args:
        return default, ()
    return parse_activation(ctx, args[key].value)


def _weights(ctx, decl, net, index, kind, n_in, hidden, layers, bias, projection, ranged,
             directions=1, proj_size=0):
    """The parameter tensors in PyTorch's state_dict order (per layer: the forward direction,
    then `_reverse`)."""
    rows = len(GATES[kind]) * hidden
    h_out = proj_size or hidden
    prefix = "" if index == 1 else f"layer{index}."
    tensors = []

    def add(short, shape):
        keys = (short, *(f"{w}.{short}" for w in WRAPPERS))
        tensors.append(ctx.weight(decl, net, prefix + short, shape, ranged, index, short,
                                  file_keys=keys))

    for k in range(layers):
        for sfx in ("", "_reverse")[:directions]:
            add(f"weight_ih_l{k}{sfx}", (rows, n_in if k == 0 else directions * h_out))
            add(f"weight_hh_l{k}{sfx}", (rows, h_out))
            if bias == "pytorch":
                add(f"bias_ih_l{k}{sfx}", (rows,))
                add(f"bias_hh_l{k}{sfx}", (rows,))
            elif bias == "single":
                add(f"bias_l{k}{sfx}", (rows,))
            if proj_size:
                add(f"weight_hr_l{k}{sfx}", (proj_size, hidden))
    if projection:
        width = directions * h_out
        tensors.append(ctx.weight(decl, net, prefix + "proj_w", (1, width), ranged, index,
                                  "weight", file_keys=("proj.weight", "proj_w")))
        tensors.append(ctx.weight(decl, net, prefix + "proj_b", (1,), ranged, index,
                                  "bias", file_keys=("proj.bias", "proj_b")))
    return tensors


def _initial_state(ctx, decl, net, index, arg, key: str, shape: tuple[int, int]):
    """`h0=` / `c0=`: inline [L * D, n] (PyTorch's unbatched h_0 / c_0), `symbolic`, a range
    `h0 in [lo, hi]`, or `file` (array `h0` / `c0` of the weight file)."""
    from ..ir import TensorVar
    from ..syntax import ast

    prefix = "" if index == 1 else f"layer{index}."
    name = f"{net}.{prefix}{key}"
    node = arg.value
    if isinstance(node, ast.Ref) and node.name in ("symbolic", "file"):
        if node.name == "symbolic":
            return TensorVar(name=name, role="param", shape=shape,
                             entries=ctx.symbols(name, shape), span=arg.span)
        if getattr(ctx, "_net_file", None) is None:
            raise SpecError(f"{key}=file, but the network loads no weight file", node.span,
                            fix=f"add load \"FILE\" with an array `{key}`, or give {key} inline")
        return ctx.weight(decl, net, prefix + key, shape, None, index, key, file_keys=(key,))
    if node is not None:
        v = ctx.constant(node)
        if v.shape != shape:
            raise SpecError(f"{key} has shape {list(v.shape)}, expected {list(shape)}",
                            node.span, fix=f"one row per layer and direction (PyTorch's "
                                           f"unbatched {key[0]}_0): {list(shape)}")
    return ctx.weight(decl, net, prefix + key, shape, arg, index, key, file_keys=(key,))


def elaborate(ctx, decl, net: str, index: int, in_shape: tuple[int, ...]):
    """LayerDecl → (Layer, parameter TensorVars) for `lstm` and `gru`."""
    kind = decl.kind
    if len(in_shape) != 2:
        raise SpecError(f"{kind} layer expects a sequence input [T, n], got shape "
                        f"{list(in_shape)}", decl.span,
                        fix="declare the network with in=[T, n]: T steps of n inputs each")
    seq_len, n_in = in_shape
    args = ctx.layer_args(decl, positional=("hidden",), allowed=OPTIONS[kind])
    if "hidden" not in args:
        raise SpecError(f"{kind} layer needs its hidden size", decl.span,
                        fix=f"write {kind}(hidden=H)")
    hidden = ctx.positive_int(args["hidden"], "hidden size")
    layers = ctx.positive_int(args["layers"], "number of layers") if "layers" in args else 1
    directions = 2 if "bidirectional" in args and ctx.boolean(args["bidirectional"]) else 1
    proj_size = 0
    if "proj_size" in args:
        proj_size = ctx.positive_int(args["proj_size"], "proj_size")
        if proj_size >= hidden:
            raise SpecError(f"proj_size {proj_size} must be smaller than hidden={hidden}",
                            args["proj_size"].value.span, fix="as in torch.nn.LSTM")
    h_out = proj_size or hidden
    width = directions * h_out
    read = _readout(ctx, args, hidden, layers, seq_len,
                    width=None if width == hidden else width)
    bias = _choice(args["bias"], ("pytorch", "single", "none"), "bias") if "bias" in args \
        else "pytorch"
    reset = _choice(args["reset"], ("pytorch", "before"), "reset") if "reset" in args \
        else "pytorch"
    ranged = args.get("W")
    if ranged is not None and ranged.value is not None:
        raise SpecError(f"{kind} takes a range for all its weights, not values", ranged.span,
                        fix="write W in [lo, hi], or load a state_dict file")
    gate_act = _activation(ctx, args, "gate_act", "sigmoid")
    act = _activation(ctx, args, "act", "tanh")
    weights = _weights(ctx, decl, net, index, kind, n_in, hidden, layers, bias,
                       read["projection"], ranged, directions, proj_size)
    initial = []
    for key, n in (("h0", h_out), ("c0", hidden)):
        if key in args:
            weights.append(_initial_state(ctx, decl, net, index, args[key], key,
                                          (layers * directions, n)))
            initial.append(key)
    out_shape = (width,) if read["output"] == "vector" else (1,)
    options = dict(read, hidden=hidden, layers=layers, bias=bias, gate_act=gate_act, act=act,
                   directions=directions, proj_size=proj_size, initial=tuple(initial))
    if kind == "gru":
        options["reset"] = reset
    layer = Layer(kind=kind, index=index, in_shape=tuple(in_shape), out_shape=out_shape,
                  options=tuple(sorted(options.items())),
                  params=tuple(w.name for w in weights), span=decl.span)
    return layer, weights


# ---- forward ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Cell:
    """One layer of the stack: its parameters and how to name and activate its quantities."""

    w_ih: np.ndarray
    w_hh: np.ndarray
    b_ih: np.ndarray | None  # the single bias when bias=single
    b_hh: np.ndarray | None
    hidden: int
    gate_act: tuple
    act: tuple
    reset: str
    program: Program
    w_hr: np.ndarray | None = None  # LSTM proj_size: h = W_hr (o * act(c))


def _apply(act: tuple, z):
    name, params = act
    return ACTIVATIONS[name].build(z, *params)


def _input_part(cell: _Cell, row: int, x) -> list:
    terms = [cell.w_ih[row, m] * x[m] for m in range(len(x))]
    if cell.b_ih is not None:
        terms.append(cell.b_ih[row])
    return terms


def _hidden_part(cell: _Cell, row: int, h) -> list:
    terms = [cell.w_hh[row, m] * h[m] for m in range(len(h))]
    if cell.b_hh is not None:
        terms.append(cell.b_hh[row])
    return terms


def _gate(cell: _Cell, act: tuple, terms: list, name: str, gate: str, j: int):
    pre = cell.program.assign(sp.Add(*terms), f"{name}.pre_{gate}[{j}]")
    return cell.program.assign(_apply(act, pre), f"{name}.{gate}[{j}]")


def _lstm_step(cell: _Cell, x, h, c, name: str):
    """One LSTM step: (h', c') from the input x and the previous (h, c)."""
    H, prog = cell.hidden, cell.program
    gates = {}
    for g, gate in enumerate("ifgo"):
        act = cell.act if gate == "g" else cell.gate_act
        gates[gate] = [_gate(cell, act, _input_part(cell, g * H + j, x)
                             + _hidden_part(cell, g * H + j, h), name, gate, j)
                       for j in range(H)]
    i, f, g, o = (gates[k] for k in "ifgo")
    c_new = [prog.assign(f[j] * c[j] + i[j] * g[j], f"{name}.c[{j}]") for j in range(H)]
    act_c = [prog.assign(_apply(cell.act, c_new[j]), f"{name}.act_c[{j}]") for j in range(H)]
    if cell.w_hr is None:
        h_new = [prog.assign(o[j] * act_c[j], f"{name}.h[{j}]") for j in range(H)]
        return h_new, c_new
    hc = [prog.assign(o[j] * act_c[j], f"{name}.hc[{j}]") for j in range(H)]
    h_new = [prog.assign(sp.Add(*[cell.w_hr[p, j] * hc[j] for j in range(H)]), f"{name}.h[{p}]")
             for p in range(cell.w_hr.shape[0])]
    return h_new, c_new


def _gru_candidate(cell: _Cell, x, h, r, name: str) -> list:
    H, prog = cell.hidden, cell.program
    out = []
    if cell.reset == "before":  # n = act(W_in x + b_in + W_hn (r * h) + b_hn)
        rh = [prog.assign(r[m] * h[m], f"{name}.rh[{m}]") for m in range(H)]
        for j in range(H):
            terms = _input_part(cell, 2 * H + j, x) + _hidden_part(cell, 2 * H + j, rh)
            out.append(_gate(cell, cell.act, terms, name, "n", j))
        return out
    for j in range(H):  # PyTorch: n = act(W_in x + b_in + r * (W_hn h + b_hn))
        hn = prog.assign(sp.Add(*_hidden_part(cell, 2 * H + j, h)), f"{name}.hn[{j}]")
        terms = _input_part(cell, 2 * H + j, x) + [r[j] * hn]
        out.append(_gate(cell, cell.act, terms, name, "n", j))
    return out


def _gru_step(cell: _Cell, x, h, c, name: str):
    """One GRU step: h' = (1 - z) * n + z * h (c is unused)."""
    H, prog = cell.hidden, cell.program
    r, z = ([_gate(cell, cell.gate_act, _input_part(cell, g * H + j, x)
                   + _hidden_part(cell, g * H + j, h), name, gate, j) for j in range(H)]
            for g, gate in enumerate("rz"))
    n = _gru_candidate(cell, x, h, r, name)
    h_new = [prog.assign((1 - z[j]) * n[j] + z[j] * h[j], f"{name}.h[{j}]") for j in range(H)]
    return h_new, c


STEPS = {"lstm": _lstm_step, "gru": _gru_step}


def _cell(layer: Layer, params: dict, k: int, program: Program, sfx: str = "") -> _Cell:
    by_short = {name.rsplit(".", 1)[1]: params[name] for name in layer.params}
    bias = layer.option("bias")
    b_ih = by_short.get(f"bias_ih_l{k}{sfx}" if bias == "pytorch" else f"bias_l{k}{sfx}")
    b_hh = by_short.get(f"bias_hh_l{k}{sfx}")
    return _Cell(w_ih=by_short[f"weight_ih_l{k}{sfx}"], w_hh=by_short[f"weight_hh_l{k}{sfx}"],
                 b_ih=b_ih, b_hh=b_hh, hidden=layer.option("hidden"),
                 gate_act=layer.option("gate_act"), act=layer.option("act"),
                 reset=layer.option("reset", "pytorch"), program=program,
                 w_hr=by_short.get(f"weight_hr_l{k}{sfx}"))


def _initial(layer: Layer, params: dict, row: int) -> tuple[list, list]:
    """(h_0, c_0) of one layer and direction: row k * D + d of `h0` / `c0`, zero if not given."""
    by_short = {name.rsplit(".", 1)[1]: params[name] for name in layer.params}
    H = layer.option("hidden")
    h_out = layer.option("proj_size", 0) or H
    initial = layer.option("initial", ())
    h = list(by_short["h0"][row]) if "h0" in initial else [sp.Integer(0)] * h_out
    c = list(by_short["c0"][row]) if "c0" in initial else [sp.Integer(0)] * H
    return h, c


def _run(layer, params, program, k: int, d: int, seq: list, steps, name: str) -> dict:
    """Direction d (0 forward, 1 reverse) of layer k over the time steps `steps` (in the order
    the direction visits them): {t: h_t}."""
    cell = _cell(layer, params, k, program, "_reverse" if d else "")
    h, c = _initial(layer, params, k * layer.option("directions", 1) + d)
    out = {}
    for t in steps:
        h, c = STEPS[layer.kind](cell, seq[t], h, c, f"{name}.t{t + 1}")
        out[t] = h
    return out


def forward(layer: Layer, x: np.ndarray, params: dict[str, np.ndarray], program: Program,
            tag: str) -> np.ndarray:
    """Run the stack up to the read-out layer and step (later ones cannot affect it; with
    `bidirectional` the reverse direction runs from the last step back to the read-out one).
    A layer's output at step t is PyTorch's output[t]: [h_fwd_t, h_rev_t]."""
    D = layer.option("directions", 1)
    T, S, R = x.shape[0], layer.option("step"), layer.option("readout_layer")
    seq = [list(x[t]) for t in range(T if D == 2 else S)]
    for k in range(R):
        top = k == R - 1
        n = len(seq)
        fwd = _run(layer, params, program, k, 0, seq, range(S if top else n), f"{tag}.l{k + 1}")
        if D == 1:
            seq = [fwd[t] for t in range(len(fwd))]
            continue
        rev = _run(layer, params, program, k, 1, seq,
                   range(n - 1, (S - 2) if top else -1, -1), f"{tag}.l{k + 1}r")
        seq = [fwd[t] + rev[t] if t in fwd and t in rev else None for t in range(n)]
    h = seq[S - 1]
    width = len(h)
    if layer.option("output") == "vector":
        return np.array(h, dtype=object)
    if not layer.option("projection"):
        return np.array([h[layer.option("unit")]], dtype=object)
    by_short = {name.rsplit(".", 1)[1]: params[name] for name in layer.params}
    w, b = by_short["proj_w"], by_short["proj_b"]
    y = program.assign(sp.Add(*(w[0, j] * h[j] for j in range(width)), b[0]), f"{tag}.proj[0]")
    return np.array([y], dtype=object)
