"""Straight-line programs over sympy: one symbol per intermediate quantity.

A `Program` is an SSA list `s_k = e_k` where each `e_k` is a small sympy expression over
*leaves* (input and parameter symbols) and earlier program symbols. Forward passes append to
it layer by layer; reverse mode (`symbolic.reverse`) appends adjoints. Sizes therefore grow
linearly with the network. `inline` expands a symbol back into leaves; it exists for small
terms and for tests, and refuses terms above a size limit.

Definitions never change once assigned, so what passes read of them over and over (which
program symbols and leaves a definition reads, its local partials, its inlined form) is
computed once per symbol and cached here. A Hessian runs one reverse pass per input over the
same gradient program; without the caches each pass would re-walk every definition.
"""

from __future__ import annotations

import sympy as sp

from ..diagnostics import SpecError

INLINE_LIMIT = 20_000  # operations; inlined LSTM terms grow about tenfold per time step
_TOO_LARGE = object()  # memo marker: the inlined form exceeds the limit
_GENERIC_FREE = sp.Basic.free_symbols  # the union over args; binders override it


def free_symbols(expr: sp.Basic) -> set:
    """`expr.free_symbols` by an iterative walk (sympy's recursive property is a large part of
    building a Hessian program); classes that bind symbols (Derivative, Lambda, ...) keep
    their own rule."""
    out: set = set()
    stack = [expr]
    while stack:
        e = stack.pop()
        if e.is_Symbol:
            out.add(e)
        elif type(e).free_symbols is _GENERIC_FREE:
            stack.extend(e.args)
        else:
            out |= e.free_symbols
    return out


class Program:
    """An append-only SSA program. Symbols are unique by name; leaves are any other symbols."""

    def __init__(self) -> None:
        self.order: list[sp.Symbol] = []
        self.defs: dict[sp.Symbol, sp.Expr] = {}
        self.index: dict[sp.Symbol, int] = {}
        self._names: set[str] = set()
        self._memo: dict[sp.Expr, sp.Symbol] = {}
        self._deps: dict[sp.Symbol, tuple[sp.Symbol, ...]] = {}
        self._leaves: dict[sp.Symbol, frozenset] = {}
        self._inlined: dict[int | None, dict[sp.Symbol, object]] = {}
        self._inlined_ops: dict[int | None, dict[sp.Symbol, int]] = {}
        self.partials: dict[sp.Symbol, dict] = {}  # sym -> {var: d def / d var}, by reverse
        # annotation for numeric engines, filled by `obligations.build_model`: program symbol
        # -> (NetworkApplication, "output", i) or (..., "jacobian", i, j) for the outputs and
        # input derivatives of a network with concrete weights applied to input leaves
        self.network_terms: dict[sp.Symbol, tuple] = {}

    def __len__(self) -> int:
        return len(self.order)

    def reserve(self, names) -> None:
        """Names program symbols must not take: the spec's leaves. A symbol is its name, so an
        input called `exp` and the program symbol of an `exp(...)` term would be one symbol."""
        self._names.update(names)

    def fresh_name(self, hint: str) -> str:
        if hint not in self._names:
            return hint
        k = 2
        while f"{hint}'{k}" in self._names:
            k += 1
        return f"{hint}'{k}"

    def assign(self, expr: sp.Expr, hint: str) -> sp.Expr:
        """Bind `expr` to a new program symbol, or return it as is when it is already atomic.

        Identical expressions share one symbol (hash-consing), which is what keeps adjoint
        programs free of duplicated work.
        """
        if not isinstance(expr, sp.Basic):
            expr = sp.sympify(expr)
        if expr.is_Atom:
            return expr
        hit = self._memo.get(expr)
        if hit is not None:
            return hit
        name = self.fresh_name(hint)
        sym = sp.Symbol(name, real=True)
        self._names.add(name)
        free = free_symbols(expr)
        self._deps[sym] = tuple(sorted((s for s in free if s in self.defs),
                                       key=self.index.__getitem__))
        self._leaves[sym] = frozenset(s for s in free if s not in self.defs)
        self.index[sym] = len(self.order)
        self.order.append(sym)
        self.defs[sym] = expr
        self._memo[expr] = sym
        return sym

    def is_defined(self, sym: sp.Basic) -> bool:
        return sym in self.defs

    def deps(self, sym: sp.Symbol) -> tuple[sp.Symbol, ...]:
        """Program symbols that `sym`'s definition reads directly, in program order."""
        return self._deps[sym]

    def def_leaves(self, sym: sp.Symbol) -> frozenset:
        """Input and parameter symbols that `sym`'s definition reads directly."""
        return self._leaves[sym]

    def _roots(self, exprs) -> list[sp.Symbol]:
        out = []
        for e in exprs:
            if isinstance(e, sp.Symbol):
                if e in self.defs:
                    out.append(e)
            else:
                out.extend(s for s in sp.sympify(e).free_symbols if s in self.defs)
        return out

    def leaves(self, exprs) -> set[sp.Symbol]:
        """Input and parameter symbols that the expressions depend on."""
        out: set[sp.Symbol] = set()
        for sym in self.closure(exprs):
            out |= self._leaves[sym]
        for e in exprs:
            out |= {s for s in sp.sympify(e).free_symbols if s not in self.defs}
        return out

    def closure(self, exprs) -> list[sp.Symbol]:
        """Every program symbol the expressions depend on, in program order (iterative walk)."""
        seen: set[sp.Symbol] = set()
        stack = self._roots(exprs)
        while stack:
            s = stack.pop()
            if s in seen:
                continue
            seen.add(s)
            stack.extend(d for d in self._deps[s] if d not in seen)
        return sorted(seen, key=self.index.__getitem__)

    def slice(self, exprs) -> list[tuple[sp.Symbol, sp.Expr]]:
        """The assignments needed to compute the expressions, in order."""
        return [(s, self.defs[s]) for s in self.closure(exprs)]

    def count_ops(self, exprs) -> int:
        """Operations in the slice of the program that computes the expressions."""
        total = sum(sp.count_ops(d) for _, d in self.slice(exprs))
        return total + sum(sp.count_ops(e) for e in exprs)

    def inline(self, expr: sp.Expr, limit: int | None = INLINE_LIMIT) -> sp.Expr:
        """Replace program symbols by their definitions, down to leaves.

        Raises `SpecError` when the inlined form of any program symbol it needs exceeds `limit`
        operations. Inlined forms are memoised per limit, so inlining every entry of a large
        Hessian costs one walk of the program, not one per entry.
        """
        expr = sp.sympify(expr)
        memo = self._inlined.setdefault(limit, {})
        ops = self._inlined_ops.setdefault(limit, {})  # count_ops of memo's inlined forms
        stack = self._roots([expr])
        while stack:  # post-order: a symbol is inlined once all its dependencies are
            s = stack[-1]
            if s in memo:
                stack.pop()
                continue
            todo = [d for d in self._deps[s] if d not in memo]
            if todo:
                stack.extend(todo)
                continue
            stack.pop()
            vals = {d: memo[d] for d in self._deps[s]}
            if any(v is _TOO_LARGE for v in vals.values()):
                memo[s] = _TOO_LARGE
                continue
            if limit is not None:
                # the definition's own operations plus its inlined dependencies': far above
                # the limit it is too large without building it (a wide network's terms
                # grow by a factor of its width per layer); well below, it is small
                uses: dict = {}
                for node in sp.preorder_traversal(self.defs[s]):
                    if node in vals:
                        uses[node] = uses.get(node, 0) + 1
                est = sp.count_ops(self.defs[s]) + sum(ops[d] * k for d, k in uses.items())
                if est > 4 * limit:
                    memo[s] = _TOO_LARGE
                    continue
            v = self.defs[s].xreplace(vals) if vals else self.defs[s]
            if limit is not None:
                n = est if est <= limit // 2 else sp.count_ops(v)
                if n > limit:
                    memo[s] = _TOO_LARGE
                    continue
                ops[s] = n
            memo[s] = v
        vals = {s: memo[s] for s in sp.sympify(expr).free_symbols if s in self.defs}
        if any(v is _TOO_LARGE for v in vals.values()):
            raise SpecError(
                f"inlined closed form exceeds {limit} operations",
                fix="use the CSE form (named intermediate quantities), or a smaller network",
            )
        return expr.xreplace(vals)
