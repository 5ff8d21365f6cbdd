"""Layer families: each module pairs a layer's elaboration (options, weights) with its
forward rule; derivatives come from the activation rules and reverse mode."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import attention, dense, graph, message, norm, onnx_graph, recurrent


@dataclass(frozen=True, slots=True)
class LayerRule:
    elaborate: Callable  # (ctx, decl, net, index, in_shape) -> (Layer, [TensorVar])
    forward: Callable  # (layer, x, params, program, tag) -> ndarray of terms


LAYER_RULES: dict[str, LayerRule] = {
    "dense": LayerRule(dense.elaborate, dense.forward),
    "gcn": LayerRule(graph.elaborate, graph.forward),
    "message": LayerRule(message.elaborate, message.forward),
    "transformer": LayerRule(attention.elaborate, attention.forward),
    "layernorm": LayerRule(norm.elaborate, norm.forward),
    **{kind: LayerRule(recurrent.elaborate, recurrent.forward) for kind in recurrent.GATES},
}

# every rule the translator runs: the writable layers plus those only imports create
RULES: dict[str, LayerRule] = {
    **LAYER_RULES,
    "onnx_graph": LayerRule(onnx_graph.elaborate, onnx_graph.forward),
}
