"""`layernorm`: torch.nn.LayerNorm over the last dimension, as a layer and as a helper.

    mean = (1/n) sum_i x_i        var = (1/n) sum_i (x_i - mean)^2      (biased, as PyTorch)
    y_i  = gamma_i * (x_i - mean) / sqrt(var + eps) + beta_i

On a vector the whole vector is normalised; on a matrix [T, d] each row is (PyTorch's
`LayerNorm(d)` on a sequence). `eps` defaults to 1/100000 (PyTorch's 1e-5, kept exact).
Options: `eps=`, `affine=false` (no gamma, beta: PyTorch `elementwise_affine=False`),
`bias=false` (no beta), `gamma=` / `beta=` inline values or `gamma in [lo, hi]` ranges.
Parameters of layer k of network f: `f.ln<k>.weight` (gamma) and `f.ln<k>.bias` (beta), both
[d]; in a weight file under those keys or as the k-th `*.weight` / `*.bias` array, as for
dense layers, so an `nn.Sequential` state_dict loads in order.

Every intermediate quantity is a program symbol: `<tag>.ln<k>.mean[t]`, `.var[t]`,
`.std[t] = sqrt(var + eps)` (the only irrational operation), `.inv[t] = 1 / std` and
`.y[t,i] = gamma_i * c[t,i] * inv[t] + beta_i`.
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from ..diagnostics import SpecError
from ..ir import Layer
from ..symbolic.program import Program

OPTIONS = {"eps", "affine", "bias", "gamma", "beta"}
DEFAULT_EPS = sp.Rational(1, 100000)


def parse_eps(ctx, arg) -> sp.Rational:
    """A positive exact `eps=` value, or PyTorch's default 1e-5."""
    if arg is None:
        return DEFAULT_EPS
    eps = ctx.scalar_constant(arg.value)
    if eps <= 0:
        raise SpecError(f"eps must be positive, got {eps}", arg.value.span,
                        fix="PyTorch's default is eps=1e-5")
    return eps


def layer_norm(program: Program, row, gamma, beta, eps: sp.Expr, hint: str,
               suffix: str = "") -> list[sp.Expr]:
    """LayerNorm of one vector of terms; `gamma`, `beta` sequences or None.

    `hint` names the symbols (`<hint>.mean<suffix>`, `<hint>.n[<suffix>i]`, ...).
    """
    n = len(row)
    tail = f"[{suffix.rstrip(',')}]" if suffix else ""
    mean = program.assign(sp.Add(*row) / n, f"{hint}.mean{tail}")
    cent = [program.assign(v - mean, f"{hint}.c[{suffix}{i}]") for i, v in enumerate(row)]
    var = program.assign(sp.Add(*[c**2 for c in cent]) / n, f"{hint}.var{tail}")
    std = program.assign(sp.sqrt(var + eps), f"{hint}.std{tail}")
    inv = program.assign(1 / std, f"{hint}.inv{tail}")  # one reciprocal per row, not per entry
    out = []
    for i, c in enumerate(cent):
        y = c * inv
        if gamma is not None:
            y = gamma[i] * y
        if beta is not None:
            y = y + beta[i]
        out.append(program.assign(y, f"{hint}.y[{suffix}{i}]"))
    return out


def elaborate(ctx, decl, net: str, index: int, in_shape: tuple[int, ...]):
    """LayerDecl → (Layer, parameter TensorVars)."""
    args = ctx.layer_args(decl, positional=(), allowed=OPTIONS)
    eps = parse_eps(ctx, args.get("eps"))
    affine = ctx.boolean(args["affine"]) if "affine" in args else True
    use_bias = ctx.boolean(args["bias"]) if "bias" in args else True
    for key in ("gamma", "beta"):
        if key in args and (not affine or (key == "beta" and not use_bias)):
            raise SpecError(f"`{key}` given, but the layer has no {key}", args[key].span,
                            fix="drop it, or drop affine=false / bias=false")
    d = in_shape[-1]
    weights = []
    names = {}
    if affine:
        w = ctx.weight(decl, net, f"ln{index}.weight", (d,), args.get("gamma"), index, "weight")
        weights.append(w)
        names["gamma"] = w.name
        if use_bias:
            b = ctx.weight(decl, net, f"ln{index}.bias", (d,), args.get("beta"), index, "bias")
            weights.append(b)
            names["beta"] = b.name
    layer = Layer(
        kind="layernorm", index=index, in_shape=in_shape, out_shape=in_shape,
        options=(("eps", eps), ("names", tuple(sorted(names.items())))),
        params=tuple(w.name for w in weights), span=decl.span,
    )
    return layer, weights


def forward(layer: Layer, x: np.ndarray, params: dict[str, np.ndarray], program: Program,
            tag: str) -> np.ndarray:
    """Normalise the vector, or each row of a matrix."""
    names = dict(layer.option("names"))
    gamma = params[names["gamma"]] if "gamma" in names else None
    beta = params[names["beta"]] if "beta" in names else None
    eps = layer.option("eps")
    hint = f"{tag}.ln{layer.index}"
    out = np.empty(x.shape, dtype=object)
    if x.ndim == 1:
        out[:] = layer_norm(program, list(x), gamma, beta, eps, hint)
        return out
    for t in range(x.shape[0]):
        out[t] = layer_norm(program, list(x[t]), gamma, beta, eps, hint, f"{t},")
    return out
