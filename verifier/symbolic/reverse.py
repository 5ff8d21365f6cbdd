"""Reverse-mode differentiation of straight-line programs.

The adjoint of every program symbol is itself a program symbol, so a gradient costs a small
constant times the forward program (the cheap-gradient principle). Local partials are taken of
each small definition only; activation rules are written with the forward symbol
(`tanh' = 1 - a^2` where `a = tanh(z)`).
"""

from __future__ import annotations

import sympy as sp

from ..layers.activations import output_rule
from .program import Program


def local_diff(e: sp.Expr, x: sp.Symbol) -> sp.Expr:
    """d e / d x for a small definition, skipping the terms and factors free of x.

    sympy.diff builds a Derivative for every term of a sum; a dense layer's pre-activation has
    one term per input, and only one of them depends on a given input.
    """
    if e == x:
        return sp.Integer(1)
    if e.is_Add:
        return sp.Add(*[local_diff(t, x) for t in e.args if t.has(x)])
    if e.is_Mul:
        hits = [i for i, f in enumerate(e.args) if f.has(x)]
        if not hits:
            return sp.Integer(0)
        if len(hits) == 1:
            i = hits[0]
            return sp.Mul(*e.args[:i], *e.args[i + 1:]) * local_diff(e.args[i], x)
    if e.is_Atom:
        return sp.Integer(0)
    return sp.diff(e, x)


def _local_partial(prog: Program, sym: sp.Symbol, dep: sp.Symbol) -> sp.Expr:
    d = prog.defs[sym]
    if isinstance(d, sp.Function) and len(d.args) >= 1 and d.args[0] == dep:
        rule = output_rule(d, sym)
        if rule is not None and all(dep not in a.free_symbols for a in d.args[1:]):
            return rule
    return local_diff(d, dep)


def _seed(expr: sp.Expr, prog: Program, wrt: set) -> dict[sp.Symbol, list[sp.Expr]]:
    adj: dict[sp.Symbol, list[sp.Expr]] = {}
    for s in expr.free_symbols:
        if s in prog.defs or s in wrt:
            adj.setdefault(s, []).append(local_diff(expr, s))
    return adj


def gradient(prog: Program, expr: sp.Expr, wrt: list[sp.Symbol], tag: str = "g") -> list[sp.Expr]:
    """d expr / d w for each w in `wrt` (leaves or program symbols), as program terms."""
    expr = sp.sympify(expr)
    targets = set(wrt)
    leaf_targets = [w for w in wrt if w not in prog.defs]
    adj = _seed(expr, prog, targets)
    for sym in reversed(prog.closure([expr])):
        parts = adj.pop(sym, None)
        if not parts:
            continue
        bar = prog.assign(sp.Add(*parts), f"{tag}:{sym.name}")
        if sym in targets:
            adj[sym] = [bar]  # keep the finished adjoint of a target that is itself a symbol
        if bar == 0:
            continue
        for dep in prog.deps(sym):
            adj.setdefault(dep, []).append(bar * _local_partial(prog, sym, dep))
        free = prog.defs[sym].free_symbols if leaf_targets else ()
        for leaf in leaf_targets:
            if leaf in free:
                adj.setdefault(leaf, []).append(bar * local_diff(prog.defs[sym], leaf))
    return [prog.assign(sp.Add(*adj.get(w, [])), f"{tag}:{w.name}") for w in wrt]


def jacobian(prog: Program, outs: list[sp.Expr], wrt: list[sp.Symbol], tag: str = "J") -> list:
    """Rows of d outs / d wrt, one reverse pass per output."""
    return [gradient(prog, o, wrt, f"{tag}{i}") for i, o in enumerate(outs)]


def hessian(prog: Program, expr: sp.Expr, wrt: list[sp.Symbol], diagonal: bool = False,
            tag: str = "H") -> list:
    """Second derivatives by reverse over reverse: one extra pass per gradient entry."""
    grad = gradient(prog, expr, wrt, f"{tag}g")
    if diagonal:
        return [gradient(prog, g, [w], f"{tag}{i}")[0] for i, (g, w) in enumerate(zip(grad, wrt))]
    return [gradient(prog, g, wrt, f"{tag}{i}") for i, g in enumerate(grad)]
