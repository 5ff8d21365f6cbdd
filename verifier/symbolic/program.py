"""Straight-line programs over sympy: one symbol per intermediate quantity.

A `Program` is an SSA list `s_k = e_k` where each `e_k` is a small sympy expression over
*leaves* (input and parameter symbols) and earlier program symbols. Forward passes append to
it layer by layer; reverse mode (`symbolic.reverse`) appends adjoints. Sizes therefore grow
linearly with the network. `inline` expands a symbol back into leaves; it exists for small
terms and for tests, and refuses terms above a size limit.
"""

from __future__ import annotations

import sympy as sp

from ..diagnostics import SpecError

INLINE_LIMIT = 20_000  # operations; inlined LSTM terms grow about tenfold per time step


class Program:
    """An append-only SSA program. Symbols are unique by name; leaves are any other symbols."""

    def __init__(self) -> None:
        self.order: list[sp.Symbol] = []
        self.defs: dict[sp.Symbol, sp.Expr] = {}
        self.index: dict[sp.Symbol, int] = {}
        self._names: set[str] = set()
        self._memo: dict[sp.Expr, sp.Symbol] = {}

    def __len__(self) -> int:
        return len(self.order)

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
        expr = sp.sympify(expr)
        if expr.is_Atom:
            return expr
        hit = self._memo.get(expr)
        if hit is not None:
            return hit
        name = self.fresh_name(hint)
        sym = sp.Symbol(name, real=True)
        self._names.add(name)
        self.index[sym] = len(self.order)
        self.order.append(sym)
        self.defs[sym] = expr
        self._memo[expr] = sym
        return sym

    def is_defined(self, sym: sp.Basic) -> bool:
        return sym in self.defs

    def deps(self, sym: sp.Symbol) -> list[sp.Symbol]:
        """Program symbols that `sym`'s definition reads directly, in program order."""
        return sorted(
            (s for s in self.defs[sym].free_symbols if s in self.defs), key=self.index.__getitem__
        )

    def leaves(self, exprs) -> set[sp.Symbol]:
        """Input and parameter symbols that the expressions depend on."""
        out: set[sp.Symbol] = set()
        for sym in self.closure(exprs):
            out |= {s for s in self.defs[sym].free_symbols if s not in self.defs}
        for e in exprs:
            out |= {s for s in sp.sympify(e).free_symbols if s not in self.defs}
        return out

    def closure(self, exprs) -> list[sp.Symbol]:
        """Every program symbol the expressions depend on, in program order (iterative walk)."""
        seen: set[sp.Symbol] = set()
        stack = [s for e in exprs for s in sp.sympify(e).free_symbols if s in self.defs]
        while stack:
            s = stack.pop()
            if s in seen:
                continue
            seen.add(s)
            stack.extend(d for d in self.defs[s].free_symbols if d in self.defs and d not in seen)
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

        Raises `SpecError` when the result would exceed `limit` operations.
        """
        expr = sp.sympify(expr)
        values: dict[sp.Symbol, sp.Expr] = {}
        for sym, d in self.slice([expr]):
            v = d.xreplace(values)
            if limit is not None and sp.count_ops(v) > limit:
                raise SpecError(
                    f"inlined closed form exceeds {limit} operations",
                    fix="use the CSE form (named intermediate quantities), or a smaller network",
                )
            values[sym] = v
        return expr.xreplace(values)
