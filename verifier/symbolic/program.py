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


def _ops(expr: sp.Basic) -> int:
    """About `sympy.count_ops` (n - 1 per n-ary sum or product, one per other application),
    without its rewriting: the estimate of inlined sizes reads every definition it passes."""
    n, stack = 0, [expr]
    while stack:
        e = stack.pop()
        if e.args and not e.is_Symbol:
            n += len(e.args) - 1 if (e.is_Add or e.is_Mul) else 1
            stack.extend(e.args)
    return n


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
        self._own_ops: dict[sp.Symbol, tuple[int, tuple]] = {}  # (count_ops, dep uses)
        self._estimate: dict[sp.Symbol, int] = {}  # inlined size, where it is at most _capped
        self._capped: dict[sp.Symbol, int] = {}  # symbol -> a cap its inlined size exceeds
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

    def assign(self, expr: sp.Expr, hint: str, *, reads=None, leaves=None,
               new_symbol=None) -> sp.Expr:
        """Bind `expr` to a new program symbol, or return it as is when it is already atomic.

        Identical expressions share one symbol (hash-consing), which is what keeps adjoint
        programs free of duplicated work. A caller that knows what `expr` reads may pass it
        (`reads`: program indices of the symbols it reads, `leaves`: its leaf symbols), which
        skips the walk over it; `new_symbol(name)` makes the symbol (default
        `sp.Symbol(name, real=True)`).
        """
        if not isinstance(expr, sp.Basic):
            expr = sp.sympify(expr)
        if expr.is_Atom:
            return expr
        hit = self._memo.get(expr)
        if hit is not None:
            return hit
        name = self.fresh_name(hint)
        sym = new_symbol(name) if new_symbol is not None else sp.Symbol(name, real=True)
        self._names.add(name)
        if reads is None:
            free = free_symbols(expr)
            self._deps[sym] = tuple(sorted((s for s in free if s in self.defs),
                                           key=self.index.__getitem__))
            self._leaves[sym] = frozenset(s for s in free if s not in self.defs)
        else:
            self._deps[sym] = tuple(self.order[i] for i in sorted(reads))
            self._leaves[sym] = frozenset(leaves)
        self.index[sym] = len(self.order)
        self.order.append(sym)
        self.defs[sym] = expr
        self._memo[expr] = sym
        return sym

    def name_taken(self, name: str) -> bool:
        """Whether a program symbol or a reserved leaf has this name."""
        return name in self._names

    def readable(self, steps) -> list[tuple[sp.Symbol, sp.Expr]]:
        """`steps` ([(symbol, definition)]) with over-long definitions split into named parts
        (`parts`), in an order where every part comes before its use."""
        return [item for sym, e in steps for item in parts(sym, e, self.name_taken)]

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

    def new_closure(self, exprs, seen: set, limit: int | None = None) -> list[sp.Symbol] | None:
        """The program symbols the expressions depend on that are not in `seen`, in program
        order; the walk stops at symbols in `seen`, so emitting a program entry by entry costs
        one walk of it in all. None (and `seen` unchanged) when there are more than `limit`;
        otherwise they are added to `seen`."""
        found: set = set()
        stack = [s for s in self._roots(exprs) if s not in seen]
        while stack:
            s = stack.pop()
            if s in found:
                continue
            found.add(s)
            if limit is not None and len(found) > limit:
                return None
            stack.extend(d for d in self._deps[s] if d not in seen and d not in found)
        seen |= found
        return sorted(found, key=self.index.__getitem__)

    def _own(self, sym: sp.Symbol) -> tuple[int, tuple]:
        """(operations of sym's definition, ((dependency, occurrences), ...)), cached."""
        hit = self._own_ops.get(sym)
        if hit is None:
            d = self.defs[sym]
            uses: dict = {}
            deps = set(self._deps[sym])
            if deps:
                for node in sp.preorder_traversal(d):
                    if node in deps:
                        uses[node] = uses.get(node, 0) + 1
            hit = self._own_ops[sym] = (_ops(d), tuple(uses.items()))
        return hit

    def inlined_size(self, expr, cap: int) -> int | None:
        """An estimate of the operations of `expr` inlined down to leaves (the definitions'
        operations, each dependency counted once per occurrence), or None when it exceeds
        `cap`. The walk stops as soon as the running total passes `cap`, so a refusal costs
        work bounded by `cap`, not by the size of the program behind the term."""
        expr = sp.sympify(expr)
        roots = self._roots([expr])
        uses: dict = {}
        for node in sp.preorder_traversal(expr):
            if node in self.defs:
                uses[node] = uses.get(node, 0) + 1
        total = _ops(expr)
        for r in dict.fromkeys(roots):
            n = self._size(r, cap)
            if n is None:
                return None
            total += n * uses.get(r, 1)
            if total > cap:
                return None
        return total

    def _size(self, root: sp.Symbol, cap: int) -> int | None:
        """Inlined size of one program symbol, None above cap (iterative, early exit)."""
        def known(s):
            if s in self._estimate:
                return self._estimate[s]
            c = self._capped.get(s)
            return -1 if c is not None and cap <= c else None  # size > c >= cap

        k = known(root)
        if k is not None:
            return None if k < 0 or k > cap else k
        stack = [[root, False]]  # [symbol, expanded]: the expanded entries are ancestors
        while stack:
            s, expanded = stack[-1]
            if known(s) is not None:
                stack.pop()
                continue
            own, uses = self._own(s)
            todo = [d for d, _ in uses if known(d) is None]
            if todo and not expanded:
                stack[-1][1] = True
                stack.extend([d, False] for d in todo)
                continue
            stack.pop()
            total = own
            for d, n in uses:
                v = known(d)
                if v is None or v < 0 or total + v * n > cap:
                    total = -1
                    break
                total += v * n
            if total < 0:  # s, and every ancestor of it on the stack, exceeds cap
                for t in (s, *(t for t, up in stack if up)):
                    self._capped[t] = max(self._capped.get(t, cap), cap)
                return None
            self._estimate[s] = total
        v = self._estimate[root]
        return v if v <= cap else None

    def inline_small(self, expr, limit: int):
        """`inline(expr, limit)` for printers: None when the estimate (`inlined_size`) or the
        inlined form exceeds `limit` operations, found without walking a large program."""
        if self.inlined_size(expr, 4 * limit) is None:
            return None
        try:
            return self.inline(expr, limit)
        except SpecError:
            return None

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


# ---------------------------------------------------------------- readable definitions
#
# A definition of a wide layer (a sum over a thousand products, an adjoint collecting every
# use of a quantity) prints as one line of thousands of characters. Printers show such a
# definition as named parts, each a sum or product of at most about WIDTH characters.

WIDTH = 160  # estimated printed characters per part


def _width(e, memo: dict) -> int:
    """Estimated printed length of `e` (names, numerals, about three characters per
    operation), iterative and memoised."""
    stack = [e]
    while stack:
        x = stack[-1]
        if x in memo:
            stack.pop()
            continue
        if x.is_Symbol:
            memo[x] = len(x.name) + 1
        elif x.is_Rational:
            memo[x] = len(str(x.p)) + (len(str(x.q)) + 1 if x.q != 1 else 0) + 1
        elif x.is_Number or not x.args:
            memo[x] = len(str(x)) + 1
        else:
            todo = [a for a in x.args if a not in memo]
            if todo:
                stack.extend(todo)
                continue
            memo[x] = 3 * len(x.args) + 2 + sum(memo[a] for a in x.args)
        stack.pop()
    return memo[e]


def parts(sym: sp.Symbol, expr, taken, width: int | None = None
          ) -> list[tuple[sp.Symbol, sp.Expr]]:
    """`[(part, expr)..., (sym, rest)]`: `sym = expr` with each over-long sum or product split
    into parts named `NAME'partK` (K from 1, in order), defined before `sym`. Work and output
    are linear in the size of `expr`; a definition within `width` comes back unchanged.
    `taken(name)` tells names already in use (they are skipped); `width`: WIDTH."""
    width = WIDTH if width is None else width
    memo: dict = {}
    if _width(expr, memo) <= width:
        return [(sym, expr)]
    out: list = []
    counter = [0]

    def name():
        while True:
            counter[0] += 1
            n = f"{sym.name}'part{counter[0]}"
            if not taken(n):
                return sp.Symbol(n, real=True)

    def named(e):
        p = name()
        out.append((p, e))
        memo[p] = len(p.name) + 1
        return p

    def shrink(e):
        """e with wide arguments replaced by parts; e itself may still be wide."""
        if _width(e, memo) <= width or not e.args:
            return e
        if e.is_Add or e.is_Mul:
            args = [shrink(a) for a in e.args]
            args = [named(a) if _width(a, memo) > width and (a.is_Add or a.is_Mul) else a
                    for a in args]
            groups, cur, w = [], [], 0
            for a in args:
                aw = _width(a, memo) + 3
                if len(cur) >= 2 and w + aw > width:  # two at least: each level halves
                    groups.append(cur)
                    cur, w = [], 0
                cur.append(a)
                w += aw
            groups.append(cur)
            if len(groups) == 1:
                return e.func(*groups[0], evaluate=False)
            if len(groups) == len(args):  # no two arguments fit together: name the wide ones
                return e.func(*(named(a) if a.args and _width(a, memo) > width // 4 else a
                                for a in args), evaluate=False)
            # the groups are sums (products) of the canonical term's own arguments: nothing
            # to combine, so sympy is not asked to (it would sort and flatten them again)
            terms = [g[0] if len(g) == 1 else named(e.func(*g, evaluate=False)) for g in groups]
            new = e.func(*terms, evaluate=False)
            return shrink(new) if _width(new, memo) > width and len(terms) > 1 else new
        if not (e.is_Pow or isinstance(e, sp.Function)):
            return e  # piecewise definitions and conditions are printed as they are
        # an application or power: its wide arguments become parts
        args = [shrink(a) for a in e.args]
        args = [named(a) if _width(a, memo) > width and a.args else a for a in args]
        return e.func(*args)

    rest = shrink(sp.sympify(expr))
    return [*out, (sym, rest)]
