"""A size estimate of a spec's program, checked before sympy builds any of it.

Elaboration charges every tensor entry (inputs, parameters, weights) before its symbols exist,
every layer's forward terms (its weights times the rows or time steps it is applied to), and,
once the spec is read, every expression: element-wise operations by their entries, matrix
products by `m * k * n`, a network call by the network's forward size, derivatives by the
reverse-mode rule (a gradient ~3x its function, a Jacobian or Hessian one pass per row plus
its entries). Shared subexpressions are counted once. When the running total passes the limit
the spec is refused with "too large: ~N terms (limit M)" at the construct that passed it.

The limit is `DEFAULT_MAX_TERMS`, or `$SNN_VERIFY_MAX_TERMS`, or `verify --max-terms N`
(highest precedence). The estimate is coarse on purpose: it is meant to be an upper bound
within a small factor, cheap to compute from shapes alone.
"""

from __future__ import annotations

import math
import os

from .diagnostics import Span, SpecError
from .syntax import ast

DEFAULT_MAX_TERMS = 1_000_000
MAX_TERMS_VAR = "SNN_VERIFY_MAX_TERMS"
MAX_NESTING = 200  # expression levels with `let`s inlined: later passes recurse over terms
_override: int | None = None
_RECURRENT = ("lstm", "gru", "rnn")


def configure(max_terms: int | None) -> None:
    """Set the limit for this process (the command line's --max-terms)."""
    global _override
    _override = max_terms


def max_terms() -> int:
    """The limit in force: --max-terms, else $SNN_VERIFY_MAX_TERMS, else the default."""
    if _override is not None:
        return _override
    text = os.environ.get(MAX_TERMS_VAR, "").strip()
    if not text:
        return DEFAULT_MAX_TERMS
    if not text.isdigit() or int(text) < 1:
        raise SpecError(f"${MAX_TERMS_VAR} must be a positive whole number, got {text[:40]!r}",
                        fix=f"unset it or set e.g. {MAX_TERMS_VAR}={DEFAULT_MAX_TERMS}")
    return int(text)


class Budget:
    """The running estimate of one elaboration."""

    def __init__(self) -> None:
        self.limit = max_terms()
        self.total = 0

    def charge(self, terms: int, span: Span | None, what: str) -> None:
        self.total += terms
        if self.total > self.limit:
            raise SpecError(f"too large: ~{self.total} terms (limit {self.limit}); {what}",
                            span, fix=f"shrink the network, the inputs or the derivative, or "
                                      f"raise the limit with --max-terms N (or {MAX_TERMS_VAR})")


def entries(shape) -> int:
    return math.prod(shape) if shape else 1


def layer_terms(layer, weight_entries: int) -> int:
    """Forward terms of one layer: its weights once per row or time step, plus its output
    (and, for layers over a matrix input, the row-by-row products of attention and graphs)."""
    rows = layer.in_shape[0] if len(layer.in_shape) == 2 else 1
    cols = layer.in_shape[-1] if layer.in_shape else 1
    terms = weight_entries * rows + entries(layer.out_shape) + entries(layer.in_shape)
    if rows > 1 and layer.kind not in _RECURRENT:
        terms += rows * rows * cols * max(1, int(layer.option("layers", 1) or 1))
    return terms


class ExprSizes:
    """Shapes and term counts of a spec's expressions (see the module docstring)."""

    def __init__(self, budget: Budget, shapes: dict[str, tuple], networks: dict[str, tuple]):
        self.budget = budget
        self.shapes = dict(shapes)  # name -> shape of inputs, params, lets
        self.networks = networks  # name -> (out_shape, forward terms)
        self.depths: dict[str, int] = {}  # let name -> nesting with its lets inlined
        self.seen: dict[object, tuple] = {}

    def let(self, name: str, expr) -> None:
        shape, depth = self.visit(expr)
        self._deep(depth, expr, f"`let {name}`")
        self.shapes[name] = shape
        self.depths[name] = depth

    def top(self, expr, what: str) -> None:
        self._deep(self.visit(expr)[1], expr, what)

    def derive(self, d) -> None:
        shape, depth = self.visit(d.expr)
        self._deep(depth, d.expr, f"derive {d.kind}")
        if d.wrt is None:
            return
        wrt, _ = self.visit(d.wrt)
        n, m = entries(wrt), entries(shape)
        forward = self._cost_of(d.expr)
        cost = {"jacobian": m * (3 * forward + n), "hessian": n * 3 * forward + n * n * m,
                "hessian_diagonal": n * 3 * forward + n * m}.get(d.kind, 3 * forward + n * m)
        self.budget.charge(cost, d.span, f"derive {d.kind}")

    def _deep(self, depth: int, node, what: str) -> None:
        if depth > MAX_NESTING:
            raise SpecError(f"{what} nests {depth} levels of operations with its `let`s "
                            f"inlined (at most {MAX_NESTING})", node.span,
                            fix="lets are inlined into the terms; shorten the chain of lets "
                                "or of operations")

    def _cost_of(self, node) -> int:
        return self.seen.get(node, ((), 0, 0))[2]

    def visit(self, node) -> tuple[tuple, int]:
        """(shape, nesting depth) of `node`, charging its terms once."""
        try:
            hit = self.seen.get(node)
        except TypeError:  # an unhashable node: no sharing
            hit = None
        if hit is not None:
            return hit[0], hit[1]
        shape, depth, cost, own = self._rule(node)
        self.budget.charge(own, getattr(node, "span", None), "in this expression")
        try:
            self.seen[node] = (shape, depth, cost)
        except TypeError:
            pass
        return shape, depth

    def _rule(self, node):
        """(shape, depth, cumulative cost, own cost) of one node."""
        kids = _children(node)
        sub = [self.visit(k) for k in kids]
        depth = 1 + max((d for _, d in sub), default=0)
        below = sum(self._cost_of(k) for k in kids)
        shapes = [s for s, _ in sub]
        if isinstance(node, ast.Num):
            return (), 1, 1, 1
        if isinstance(node, ast.Ref):
            name = ".".join(node.parts)
            return self.shapes.get(name, ()), 1 + self.depths.get(name, 0), 0, 0
        if isinstance(node, ast.BinOp) and node.op == "@":
            a, b = shapes
            k = a[-1] if a else 1
            shape = a[:-1] + b[1:] if len(b) == 2 else a[:-1]
            own = entries(shape) * k
            return shape, depth, below + own, own
        if isinstance(node, ast.ListLit):
            inner = shapes[0] if shapes else ()
            return (len(node.items), *inner), depth, below, 0
        if isinstance(node, ast.Index):
            base = shapes[0]
            rest = tuple(n for n, idx in zip(base, node.indices) if idx is None)
            return rest + base[len(node.indices):], depth, below, 0
        if isinstance(node, ast.Transpose):
            return tuple(reversed(shapes[0])), depth, below, 0
        if isinstance(node, ast.Call):
            return self._call(node, shapes, depth, below)
        if isinstance(node, ast.Deriv):
            own = 3 * self._cost_of(node.expr) + entries(shapes[0]) * entries(shapes[1])
            return shapes[1], depth, below + own, own
        shape = max(shapes, key=entries, default=())
        own = entries(shape)
        return shape, depth, below + own, own

    def _call(self, node, shapes, depth, below):
        name = node.func
        first = shapes[0] if shapes else ()
        if name in self.networks:
            out, forward = self.networks[name]
            return out, depth, below + forward, forward
        if name in ("grad", "gradient") and len(shapes) >= 2:
            own = 3 * self._cost_of(node.args[0]) + entries(shapes[1])
            return shapes[1], depth, below + own, own
        if name == "jacobian" and len(shapes) >= 2:
            m, n = entries(first), entries(shapes[1])
            own = m * (3 * self._cost_of(node.args[0]) + n)
            return (m, n), depth, below + own, own
        if name in ("hessian", "hessian_diag", "hessian_diagonal") and len(shapes) >= 2:
            n = entries(shapes[1])
            own = n * 3 * self._cost_of(node.args[0]) + n * n
            return ((n, n) if name == "hessian" else (n,)), depth, below + own, own
        if name == "repeat" and len(node.args) >= 2:
            count = node.args[1].value if isinstance(node.args[1], ast.Num) else 1
            count = int(count) if count == int(count) and 0 < count < 2**62 else 1
            shape = (count, entries(first))
            return shape, depth, below + entries(shape), entries(shape)
        if name == "Diag":
            n = entries(first)
            return (n, n), depth, below + n * n, n * n
        if name in ("sum", "diag", "trace", "max", "min", "norm") and len(shapes) == 1:
            own = entries(first)
            return ((first[0],) if name == "diag" and first else ()), depth, below + own, own
        shape = max(shapes, key=entries, default=())
        own = entries(shape)
        return shape, depth, below + own, own


def _children(node) -> list:
    if isinstance(node, ast.BinOp):
        return [node.left, node.right]
    if isinstance(node, (ast.Neg, ast.Transpose)):
        return [node.operand]
    if isinstance(node, ast.Index):
        return [node.base] + [i for i in node.indices if i is not None]
    if isinstance(node, ast.Call):
        return list(node.args) + [v for _, v in node.kwargs]
    if isinstance(node, ast.ListLit):
        return list(node.items)
    if isinstance(node, ast.Deriv):
        return [node.expr, node.wrt]
    if isinstance(node, ast.Comparison):
        return list(node.operands)
    if isinstance(node, ast.BoolOp):
        return list(node.args)
    if isinstance(node, ast.Not):
        return [node.arg]
    return []
