"""A network imported from an ONNX graph that is not a plain chain (skips, branches).

The whole graph is one layer whose blocks are read off `onnx_import.Block`s: block k is
h_k = act(sum_s W_ks h_s + b_k) over earlier values (h_0 the layer's input), with one weight
tensor per (block, source) edge. The forward rule binds every pre-activation and activation
to a program symbol, as `dense` does, so derivatives and bounds see the graph exactly as it is.
Specs cannot write this layer; `network NAME(in=N) load "net.onnx" { }` creates it.
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from ..diagnostics import SpecError
from ..ir import Layer
from ..symbolic.program import Program
from .activations import ACTIVATIONS


def elaborate(ctx, decl, net: str, index: int, in_shape: tuple[int, ...]):
    raise SpecError("`onnx_graph` layers come from ONNX files and cannot be written in a spec",
                    decl.span, fix='load the network: network NAME(in=N) load "net.onnx" { }')


def make_layer(blocks, in_size: int, name: str, weight_name, span) -> tuple[Layer, list]:
    """An `onnx_graph` Layer and its weight tensors from `(terms, b, act, params)` blocks;
    `weight_name(kind, k, s)` names the tensor of block k's edge from source s (or its bias)."""
    from ..ir import TensorVar

    spec, params, weights = [], [], []
    for k, (terms, b, act, act_params) in enumerate(blocks, start=1):
        sources = []
        for s, W in terms:
            t = TensorVar(name=weight_name("W", k, s), role="param", shape=W.shape,
                          entries=tuple(W.flat), span=span)
            weights.append(t)
            params.append(t.name)
            sources.append(s)
        t = TensorVar(name=weight_name("b", k, None), role="param", shape=(len(b),),
                      entries=tuple(b), span=span)
        weights.append(t)
        params.append(t.name)
        spec.append((act, act_params, tuple(sources), len(b)))
    layer = Layer(kind="onnx_graph", index=1, in_shape=(in_size,), out_shape=(spec[-1][3],),
                  options=(("blocks", tuple(spec)),), params=tuple(params), span=span)
    return layer, weights


def forward(layer: Layer, x: np.ndarray, params: dict[str, np.ndarray], program: Program,
            tag: str) -> np.ndarray:
    """Per-neuron symbols `<tag>.z<k>[i]` (pre-activation) and `<tag>.a<k>[i]` for block k."""
    values = [x]
    names = iter(layer.params)
    for k, (act_name, act_params, sources, size) in enumerate(layer.option("blocks"), start=1):
        Ws = [params[next(names)] for _ in sources]
        b = params[next(names)]
        act = ACTIVATIONS[act_name]
        out = np.empty((size,), dtype=object)
        for i in range(size):
            terms = [W[i, j] * values[s][j] for W, s in zip(Ws, sources)
                     for j in range(W.shape[1])]
            terms.append(b[i])
            z = program.assign(sp.Add(*terms), f"{tag}.z{k}[{i}]")
            out[i] = program.assign(act.build(z, *act_params), f"{tag}.a{k}[{i}]")
        values.append(out)
    return values[-1]
