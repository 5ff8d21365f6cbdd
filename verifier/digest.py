"""Digests of obligations: what the result cache keys on and what a certificate names.

`obligation(ob, program)` is a SHA-256 over the obligation's mathematics: its goal and `where`
atoms, the program definitions they depend on (with each network application's tag, as the
numeric engines read those through the network code) and its variables with their ranges. An
expression's digest is a Merkle hash over its sympy tree, each distinct subexpression hashed
once (iteratively, so deep terms need no recursion): a node is its class name with its
children's digests in sympy's argument order, a symbol its name and assumptions, a rational
its numerator and denominator. It is exact and canonical like `srepr`, without printing the
terms (for a network with thousands of weights that print is most of the cost).
"""

from __future__ import annotations

import hashlib

import sympy as sp


class Hasher:
    """Memoised digests of expressions and of program definitions (shared by obligations)."""

    def __init__(self, program) -> None:
        self.program = program
        self.memo: dict = {}
        self.defs: dict = {}

    def expr(self, e) -> bytes:
        memo = self.memo
        hit = memo.get(e)
        if hit is not None:
            return hit
        stack = [e]
        while stack:
            node = stack[-1]
            if node in memo:
                stack.pop()
                continue
            args = node.args if isinstance(node, sp.Basic) else ()
            todo = [a for a in args if a not in memo]
            if todo:
                stack.extend(todo)
                continue
            stack.pop()
            memo[node] = hashlib.sha256(_token(node) + b"".join(memo[a] for a in args)).digest()
        return memo[e]

    def definition(self, sym) -> bytes:
        d = self.defs.get(sym)
        if d is None:
            h = hashlib.sha256(b"def " + sym.name.encode() + b"=" + self.expr(self.program.defs[sym]))
            tag = self.program.network_terms.get(sym)
            if tag is not None:
                h.update(f";net{tag[1:]!r}<-".encode())
                for s in tag[0].inputs:
                    h.update(self.expr(s))
            d = self.defs[sym] = h.digest()
        return d

    def obligation(self, ob) -> str:
        h = hashlib.sha256()
        exprs = []
        for label, atoms in (("goal", ob.goal), ("hyp", ob.hypotheses)):
            for a in atoms:
                h.update(f"{label} {a.op} ".encode() + self.expr(a.lhs) + self.expr(a.rhs))
                exprs += [a.lhs, a.rhs]
        for sym in self.program.closure(exprs):
            h.update(self.definition(sym))
        for v in ob.variables:
            h.update(f"var {v.role} {v.lo} {v.hi} ".encode() + self.expr(v.symbol))
        return h.hexdigest()


def _token(node) -> bytes:
    if isinstance(node, sp.Symbol):
        assumptions = ",".join(f"{k}={v}" for k, v in sorted(node.assumptions0.items()))
        return f"S {node.name} [{assumptions}]|".encode()
    if isinstance(node, sp.Rational):
        return f"Q {node.p}/{node.q}|".encode()
    if isinstance(node, sp.Float):
        return f"F {sp.srepr(node)}|".encode()
    if not isinstance(node, sp.Basic):
        return f"P {type(node).__name__} {node!r}|".encode()
    if not node.args:
        return f"A {sp.srepr(node)}|".encode()
    return f"N {type(node).__name__} {len(node.args)}|".encode()


def obligation(ob, program) -> str:
    return Hasher(program).obligation(ob)
