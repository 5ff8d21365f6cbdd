"""AST of .snn specs: plain frozen data with source spans that never affect equality."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from ..diagnostics import Span


def _span():
    return field(default=None, compare=False, hash=False, repr=False)


# ---- expressions ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Num:
    value: Fraction
    span: Span | None = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class Ref:
    parts: tuple[str, ...]  # f.W1 → ("f", "W1")
    span: Span | None = _span()

    @property
    def name(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True, slots=True, kw_only=True)
class Call:
    func: str
    args: tuple
    kwargs: tuple[tuple[str, object], ...] = ()
    span: Span | None = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class BinOp:
    op: str  # + - * / @ ^
    left: object
    right: object
    span: Span | None = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class Neg:
    operand: object
    span: Span | None = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class Index:
    base: object
    indices: tuple  # expressions, or None for ':'
    span: Span | None = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class Transpose:
    operand: object
    span: Span | None = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class ListLit:
    items: tuple
    span: Span | None = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class Deriv:
    """d(expr)/d(wrt)."""

    expr: object
    wrt: object
    span: Span | None = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class Comparison:
    operands: tuple  # chained: a <= b <= c
    ops: tuple[str, ...]
    span: Span | None = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class BoolOp:
    """`a and b and ...` (op "and") or `a or b or ...` (op "or") of formulas."""

    op: str
    args: tuple
    span: Span | None = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class Not:
    arg: object
    span: Span | None = _span()


# ---- declarations -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Shape:
    dims: tuple[int | str, ...]  # a str names a symbolic size declared with `dim`
    span: Span | None = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class DimDecl:
    names: tuple[str, ...]
    sizes: tuple[tuple[int, ...], ...]  # empty: rotated distinct defaults
    span: Span | None = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class Domain:
    kind: str  # "interval" (same [lo, hi] per entry), "box" (lo, hi tensors), "ball" (center, r)
    first: object
    second: object
    span: Span | None = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class Import:
    path: str
    span: Span | None = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class InputDecl:
    name: str
    shape: Shape
    domain: Domain | None
    span: Span | None = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class ParamDecl:
    name: str
    shape: Shape
    lo: object = None
    hi: object = None
    value: object = None
    span: Span | None = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerArg:
    name: str | None  # None for positional
    value: object = None
    lo: object = None  # for `W in [lo, hi]`
    hi: object = None
    span: Span | None = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerDecl:
    kind: str
    args: tuple[LayerArg, ...]
    span: Span | None = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkDecl:
    name: str
    in_shape: tuple[int, ...]  # `in=3` → (3,); `in=[5, 2]` → a sequence of 5 vectors of 2
    load: str | None
    layers: tuple[LayerDecl, ...]
    span: Span | None = _span()
    load_span: Span | None = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class LetDecl:
    name: str
    expr: object
    span: Span | None = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimDecl:
    name: str
    comparison: Comparison
    where: tuple[Comparison, ...]
    text: str
    span: Span | None = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class DeriveDecl:
    kind: str
    expr: object
    wrt: object
    alias: str | None
    span: Span | None = _span()
    kind_span: Span | None = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class SpecFile:
    path: str
    items: tuple
    source: str = field(default="", compare=False, repr=False)
