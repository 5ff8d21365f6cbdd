"""`dense(OUT, ACT)`: y = act(W x + b), W of shape [out, in] as in torch.nn.Linear.

Options: `W=` / `b=` inline constants, `W in [lo, hi]` ranged weights, `bias=false`.
Weights come, in order of preference, from inline values, from the network's `load` file
(keys `W<k>`/`b<k>`, or a `<module>.weight`/`<module>.bias` pair of a PyTorch state_dict, the
module chosen by its numeric index as in nn.Sequential or by being the only one of the layer's
shape, never by key order: see `verifier.weights`), or are symbolic with names
`<net>.W<k>[i,j]`, `<net>.b<k>[i]`.
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from ..diagnostics import SpecError
from ..ir import Layer
from ..symbolic.program import Program
from .activations import ACTIVATIONS

OPTIONS = {"out", "act", "W", "b", "bias"}


def parse_activation(ctx, node) -> tuple[str, tuple]:
    """`tanh` or `leaky_relu(0.01)` → ("leaky_relu", (Rational(1, 100),))."""
    from ..syntax import ast

    if isinstance(node, ast.Ref) and len(node.parts) == 1:
        name, args = node.parts[0], ()
    elif isinstance(node, ast.Call):
        name, args = node.func, node.args
    else:
        raise SpecError("expected an activation such as tanh or leaky_relu(0.01)", node.span)
    act = ACTIVATIONS.get(name)
    if act is None:
        raise SpecError(f"unknown activation `{name}`", node.span,
                        fix="one of: " + ", ".join(sorted(ACTIVATIONS)))
    want = act.arity - 1
    if len(args) != want:
        default = {"leaky_relu": (sp.Rational(1, 100),)}.get(name)
        if not args and default:
            return name, default
        raise SpecError(f"activation `{name}` takes {want} parameter(s), got {len(args)}",
                        node.span)
    return name, tuple(ctx.scalar_constant(a) for a in args)


def elaborate(ctx, decl, net: str, index: int, in_shape: tuple[int, ...]):
    """LayerDecl → (Layer, parameter TensorVars)."""
    if len(in_shape) != 1:
        raise SpecError(f"dense layer expects a vector input, got shape {list(in_shape)}",
                        decl.span)
    args = ctx.layer_args(decl, positional=("out", "act"), allowed=OPTIONS)
    if "out" not in args:
        raise SpecError("dense layer needs its output size", decl.span,
                        fix="write dense(OUT) or dense(OUT, ACTIVATION)")
    n_out = ctx.positive_int(args["out"], "output size")
    n_in = in_shape[0]
    act, act_params = ("identity", ())
    if "act" in args:
        act, act_params = parse_activation(ctx, args["act"].value)
    use_bias = True
    if "bias" in args:
        use_bias = ctx.boolean(args["bias"])
    weights = [ctx.weight(decl, net, f"W{index}", (n_out, n_in), args.get("W"), index, "weight")]
    if use_bias:
        weights.append(ctx.weight(decl, net, f"b{index}", (n_out,), args.get("b"), index, "bias"))
    layer = Layer(
        kind="dense", index=index, in_shape=in_shape, out_shape=(n_out,),
        options=(("act", act), ("act_params", act_params), ("bias", use_bias)),
        params=tuple(w.name for w in weights), span=decl.span,
    )
    return layer, weights


def forward(layer: Layer, x: np.ndarray, params: dict[str, np.ndarray], program: Program,
            tag: str) -> np.ndarray:
    """Per-neuron symbols `<tag>.z<k>[i]` (pre-activation) and `<tag>.a<k>[i]`."""
    W = params[layer.params[0]]
    b = params[layer.params[1]] if layer.option("bias") else None
    act = ACTIVATIONS[layer.option("act")]
    act_params = layer.option("act_params")
    k = layer.index
    out = np.empty(layer.out_shape, dtype=object)
    distinct = all(getattr(v, "is_Symbol", False) for v in x) and len(set(x)) == len(x)
    for i in range(layer.out_shape[0]):
        terms = [_times(W[i, j], x[j]) for j in range(layer.in_shape[0])]
        const = b[i] if b is not None else sp.S.Zero
        z = _affine(terms, const) if distinct else sp.Add(*terms, const)
        z = program.assign(z, f"{tag}.z{k}[{i}]")
        out[i] = program.assign(act.build(z, *act_params), f"{tag}.a{k}[{i}]")
    return out


def _affine(terms: list, const):
    """sum(terms) + const for terms `c * s` (or `s`) over distinct symbols s and a rational
    const, built as sympy's `Add` builds it (nonzero terms in `_addsort` order, the number
    first) without its general flattening, which rebuilds every product."""
    from sympy.core.add import _addsort

    if not getattr(const, "is_Rational", False) or not all(
            t.is_Symbol or (t.is_Mul and len(t.args) == 2 and t.args[0].is_Rational
                            and t.args[1].is_Symbol) for t in terms if t != 0):
        return sp.Add(*terms, const)
    args = [t for t in terms if t != 0]
    _addsort(args)
    if const != 0:
        args.insert(0, const)
    if not args:
        return sp.S.Zero
    return args[0] if len(args) == 1 else sp.Add._from_args(args)


def _times(w, x):
    """w * x; a concrete weight times a program symbol is built in its canonical form directly
    (sympy's general product costs most of the translation of a wide trained network)."""
    if getattr(w, "is_Rational", False) and getattr(x, "is_Symbol", False):
        if w == 1:
            return x
        if w == 0:
            return sp.S.Zero
        return sp.Mul._from_args((w, x))
    return w * x
