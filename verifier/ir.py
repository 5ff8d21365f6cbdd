"""The elaborated spec: names resolved, shapes checked, weights loaded, numerals exact.

Plain frozen data. Tensors are stored flat (row-major) as tuples of sympy atoms: a leaf
symbol or an exact Rational per entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from .diagnostics import Span


def _span():
    return field(default=None, compare=False, hash=False, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class TensorVar:
    """A named input or parameter tensor: one leaf symbol or one constant per entry."""

    name: str
    role: str  # "input" | "param"
    shape: tuple[int, ...]
    entries: tuple[sp.Expr, ...]  # Symbols (free) or Rationals (concrete)
    lo: tuple | None = None  # per-entry closed range, for inputs' domains and ranged weights
    hi: tuple | None = None
    span: Span | None = _span()

    @property
    def concrete(self) -> bool:
        return all(e.is_Rational for e in self.entries)


@dataclass(frozen=True, slots=True, kw_only=True)
class Layer:
    """One layer of a chain: `kind` selects its rule in `layers.LAYER_RULES`."""

    kind: str
    index: int  # 1-based position in the network, used in parameter names
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    options: tuple[tuple[str, object], ...] = ()  # sorted (name, value) pairs
    params: tuple[str, ...] = ()  # names of the TensorVars this layer reads
    span: Span | None = _span()

    def option(self, key: str, default=None):
        return dict(self.options).get(key, default)


@dataclass(frozen=True, slots=True, kw_only=True)
class Network:
    name: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    layers: tuple[Layer, ...]
    span: Span | None = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class Spec:
    """A whole spec with its imports merged in (imported items first)."""

    name: str
    path: str
    inputs: tuple[TensorVar, ...]
    params: tuple[TensorVar, ...]  # declared params and every network weight
    networks: tuple[Network, ...]
    lets: tuple  # (name, expression AST)
    claims: tuple  # ast.ClaimDecl
    derives: tuple  # ast.DeriveDecl
    dims: tuple[tuple[str, int], ...] = ()  # the symbolic sizes bound in this instance
    instantiations: tuple[tuple[tuple[str, int], ...], ...] = ()  # every size tuple to check
