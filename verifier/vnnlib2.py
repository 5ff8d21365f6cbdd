"""VNN-LIB 2.0 queries: several networks, indexed tensor variables, polynomial constraints.

A 2.0 file starts with `(vnnlib-version 2.0)` (the VNN-COMP templates write `<2.0>`) and
declares networks with their input and output tensors:

    (declare-network f (declare-input X_f real [5]) (declare-output Y_f real [5]))
    (declare-network g (equal-to f) (declare-input X_g real [5]) (declare-output Y_g real [5]))

Variables are indexed row-major, `X[0,1]`; a tensor of one element may also be written bare.
Asserts combine `and`, `or`, `not` and comparisons `< <= > >= == !=` of arithmetic terms built
from numbers, variables, `+`, `-`, `*` and `/` by a number, in prefix form `(< a b)` or
infix form `(a < b)` as the VNN-COMP templates write them. As in 1.0, the conjunction of the
asserts is the *unsafe* region: the answer is `sat` when some assignment of every network's
inputs, with the outputs the networks compute there, satisfies it.

`parse_vnnlib2` gives a `Query`: the networks and the formula in disjunctive normal form, each
atom an exact polynomial `p <= 0` or `p < 0` (`==` is two of them, `!=` a disjunction).
Numerals are exact Fractions; nothing of the file is evaluated. Errors are `SpecError`s at the
offending token. `declare-hidden` is refused by name. Limits are those of the 1.0 reader.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction

from .diagnostics import Span, SpecError
from .vnnlib import (
    _NUMBER,
    MAX_DISJUNCTS,
    MAX_ROWS,
    _fraction,
    _List,
    _sexprs,
    _Tok,
    _tokens,
    read_text,
)

MAX_TERMS = 10_000  # monomials of one expanded polynomial
_TOKEN2 = re.compile(r"\s+|;[^\n]*|\(|\)|\[[^\]\n]*\]|<[0-9.]+>|[^\s()\[\];]+|\S")
_BRACKET = re.compile(r"\[[^\]\n]*\]")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_\-.]*")
CMP = ("<=", ">=", "<", ">", "==", "!=")
TYPES = ("real", "float16", "float32", "float64", "Real")
VERSION = re.compile(r"\(\s*vnnlib-version\b")


def is_vnnlib2(text: str) -> bool:
    """Does the text declare a VNN-LIB version (2.0 files do, 1.0 files never)?"""
    return bool(VERSION.search(text[:1 << 16]))


# ---- data ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Var:
    """One scalar: element `index` (row-major) of network `net`'s input (X) or output (Y)."""

    net: str
    kind: str  # "X" | "Y"
    index: int


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]
    span: Span | None = field(default=None, compare=False, repr=False)

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    def label(self, k: int) -> str:
        idx, rest = [], k
        for d in reversed(self.shape):
            idx.append(rest % d)
            rest //= d
        return f"{self.name}[{','.join(str(i) for i in reversed(idx))}]"


@dataclass
class NetDecl:
    name: str
    inputs: Tensor
    outputs: Tensor
    equal_to: str | None = None  # the same function as that network
    isomorphic_to: str | None = None
    span: Span | None = field(default=None, compare=False, repr=False)


Poly = dict  # {monomial: coefficient}, monomial = tuple of (Var, power) sorted; () constant


@dataclass
class Atom:
    """poly <= 0, or poly < 0 when strict."""

    poly: Poly
    strict: bool
    span: Span | None = field(default=None, compare=False, repr=False)

    @property
    def degree(self) -> int:
        return max((sum(p for _, p in m) for m in self.poly), default=0)

    def value(self, env) -> object:
        """The polynomial at env[Var] (exact for Fractions)."""
        total = Fraction(0)
        for m, c in self.poly.items():
            t = c
            for v, p in m:
                t = t * env[v] ** p
            total = total + t
        return total

    def holds(self, env) -> bool:
        v = self.value(env)
        return v < 0 if self.strict else v <= 0

    def variables(self) -> set:
        return {v for m in self.poly for v, _ in m}


@dataclass
class Query:
    path: str
    networks: list[NetDecl]
    disjuncts: list[list[Atom]]
    conjuncts: list[Atom] = field(default_factory=list)  # atoms every disjunct holds

    @property
    def linear(self) -> bool:
        return all(a.degree <= 1 for d in self.disjuncts for a in d)

    def network(self, name: str) -> NetDecl:
        return next(n for n in self.networks if n.name == name)

    def holds(self, env) -> bool:
        """Is the assignment env[Var] -> value (inputs and outputs) in the unsafe region?"""
        return any(all(a.holds(env) for a in d) for d in self.disjuncts)


# ---- text ----------------------------------------------------------------------------------

def _is_tok(node, text: str | None = None) -> bool:
    return isinstance(node, _Tok) and (text is None or node.text == text)


def _indices(tok: _Tok) -> tuple[int, ...]:
    body = tok.text[1:-1].strip()
    if not body:
        return ()
    out = []
    for part in body.split(","):
        part = part.strip()
        if not part.isdigit():
            raise SpecError(f"index `{part}` is not a natural number", tok.span,
                            fix="write indices as [0,1]")
        out.append(int(part))
    return tuple(out)


# ---- polynomials ---------------------------------------------------------------------------

def _padd(a: Poly, b: Poly, sign: int = 1) -> Poly:
    out = dict(a)
    for m, c in b.items():
        v = out.get(m, Fraction(0)) + sign * c
        if v:
            out[m] = v
        else:
            out.pop(m, None)
    return out


def _pmul(a: Poly, b: Poly, span) -> Poly:
    out: Poly = {}
    for m1, c1 in a.items():
        for m2, c2 in b.items():
            powers: dict = {}
            for v, p in m1 + m2:
                powers[v] = powers.get(v, 0) + p
            m = tuple(sorted(powers.items(), key=lambda t: (t[0].net, t[0].kind, t[0].index)))
            v = out.get(m, Fraction(0)) + c1 * c2
            if v:
                out[m] = v
            else:
                out.pop(m, None)
    if len(out) > MAX_TERMS:
        raise SpecError(f"too large: a product expands to more than {MAX_TERMS} terms", span)
    return out


def _const(p: Poly) -> Fraction | None:
    if not p:
        return Fraction(0)
    if set(p) == {()}:
        return p[()]
    return None


# ---- the reader ----------------------------------------------------------------------------

class _Reader:
    def __init__(self, path: str, text: str):
        self.path = path
        self.text = text
        self.networks: list[NetDecl] = []
        self.vars: dict[str, tuple[NetDecl, str, Tensor]] = {}
        self.version_seen = False

    def read(self) -> Query:
        conj = []
        for top in _sexprs(_tokens(self.text, self.path, _TOKEN2), self.path, self.text):
            if not isinstance(top, _List) or not top.items or not _is_tok(top.items[0]):
                raise SpecError("expected a command such as (declare-network ...) or "
                                "(assert ...)", top.span)
            head = top.items[0].text
            if head == "vnnlib-version":
                self._version(top)
            elif head == "declare-network":
                self._network(top)
            elif head == "assert":
                if not self.networks:
                    raise SpecError("assert before any declare-network", top.span)
                if len(top.items) != 2:
                    raise SpecError("assert takes one formula", top.span)
                conj.append(self._formula(top.items[1]))
            elif head in ("set-logic", "set-info", "check-sat", "exit", "get-model"):
                continue
            elif head == "declare-const":
                raise SpecError("`declare-const` is VNN-LIB 1.0; this file declares "
                                "(vnnlib-version 2.0)", top.items[0].span,
                                fix="declare variables inside (declare-network ...), or drop "
                                    "the vnnlib-version line for a 1.0 file")
            else:
                raise SpecError(f"unsupported command `{head}`", top.items[0].span,
                                fix="VNN-LIB 2.0 uses vnnlib-version, declare-network and "
                                    "assert")
        if not self.networks:
            raise SpecError("the query declares no network",
                            Span(path=self.path, line=1, column=1),
                            fix="add (declare-network f (declare-input X real [n]) "
                                "(declare-output Y real [m]))")
        conjuncts = _conjuncts(("and", conj))
        disjuncts = _dnf(("and", conj), None)
        return Query(self.path, self.networks, disjuncts, conjuncts)

    def _version(self, top: _List) -> None:
        items = top.items
        if len(items) != 2 or not _is_tok(items[1]):
            raise SpecError("expected (vnnlib-version 2.0)", top.span)
        v = items[1].text.strip("<>")
        if v.split(".")[0] != "2":
            raise SpecError(f"VNN-LIB version {v} is not supported here", items[1].span,
                            fix="this reader takes version 2.x; a 1.0 file has no "
                                "vnnlib-version line")
        self.version_seen = True

    def _network(self, top: _List) -> None:
        items = top.items
        if len(items) < 2 or not _is_tok(items[1]) or not _NAME.fullmatch(items[1].text):
            raise SpecError("expected (declare-network NAME ...)", top.span)
        name = items[1].text
        if any(n.name == name for n in self.networks):
            raise SpecError(f"network `{name}` is declared twice", items[1].span)
        eq = iso = None
        ins: list[Tensor] = []
        outs: list[Tensor] = []
        for it in items[2:]:
            if not isinstance(it, _List) or not it.items or not _is_tok(it.items[0]):
                raise SpecError("expected (declare-input ...), (declare-output ...) or "
                                "(equal-to NAME)", it.span)
            h = it.items[0].text
            if h in ("equal-to", "isomorphic-to"):
                if len(it.items) != 2 or not _is_tok(it.items[1]):
                    raise SpecError(f"expected ({h} NAME)", it.span)
                other = it.items[1].text
                if not any(n.name == other for n in self.networks):
                    raise SpecError(f"`{other}` is not a network declared before `{name}`",
                                    it.items[1].span)
                if h == "equal-to":
                    eq = other
                else:
                    iso = other
            elif h in ("declare-input", "declare-output"):
                (ins if h == "declare-input" else outs).append(self._tensor(it))
            elif h == "declare-hidden":
                raise SpecError("`declare-hidden` (constraints on hidden nodes) is not "
                                "supported", it.items[0].span,
                                fix="state the property over the network's inputs and "
                                    "outputs")
            else:
                raise SpecError(f"unexpected `{h}` in declare-network", it.items[0].span)
        if len(ins) != 1 or len(outs) != 1:
            raise SpecError(f"network `{name}` must declare one input and one output tensor "
                            f"(it declares {len(ins)} and {len(outs)})", top.span,
                            fix="networks with several input or output tensors are not "
                                "supported")
        decl = NetDecl(name, ins[0], outs[0], eq, iso, items[1].span)
        if eq is not None:
            src = next(n for n in self.networks if n.name == eq)
            if src.inputs.shape != decl.inputs.shape or src.outputs.shape != decl.outputs.shape:
                raise SpecError(f"`{name}` is equal to `{eq}` but declares other shapes",
                                items[1].span)
        for t, kind in ((decl.inputs, "X"), (decl.outputs, "Y")):
            if t.name in self.vars:
                raise SpecError(f"`{t.name}` is declared twice", t.span)
            self.vars[t.name] = (decl, kind, t)
        self.networks.append(decl)

    def _tensor(self, it: _List) -> Tensor:
        items = it.items
        if (len(items) != 4 or not all(_is_tok(t) for t in items)
                or not items[3].text.startswith("[")):
            raise SpecError(f"expected ({items[0].text} NAME real [d1,d2,...])", it.span)
        name, typ, shape = items[1], items[2], items[3]
        if not _NAME.fullmatch(name.text):
            raise SpecError(f"`{name.text}` is not a variable name", name.span)
        if typ.text not in TYPES:
            raise SpecError(f"unsupported element type `{typ.text}`", typ.span,
                            fix="use real, float32 or float64")
        dims = _indices(shape)
        if any(d == 0 for d in dims):
            raise SpecError("a tensor dimension is 0", shape.span)
        return Tensor(name.text, dims, name.span)

    # formulas: ("and"|"or", [sub]) or ("atom", Atom)
    def _formula(self, node):
        if isinstance(node, _Tok):
            raise SpecError(f"expected a formula, got `{node.text}`", node.span)
        items = node.items
        if not items:
            raise SpecError("empty formula", node.span)
        items, op = self._infix(items)
        if op is None:
            op = items[0].text if _is_tok(items[0]) else None
            args = items[1:]
        else:
            args = [items[0], items[2]]
        if op in ("and", "or"):
            if not args:
                raise SpecError(f"`{op}` needs at least one formula", node.span)
            return (op, [self._formula(s) for s in args])
        if op == "not":
            if len(args) != 1:
                raise SpecError("`not` takes one formula", node.span)
            return _negate(self._formula(args[0]))
        if op in CMP:
            if len(args) != 2:
                raise SpecError(f"`{op}` takes two terms", node.span,
                                fix="chain comparisons with (and ...)")
            a, b = self._term(args[0]), self._term(args[1])
            return _compare(op, a, b, node.span)
        where = items[0].span if items else node.span
        raise SpecError(f"expected a formula: and, or, not or a comparison, got "
                        f"`{items[0].text if _is_tok(items[0]) else '(...)'}`", where)

    def _infix(self, items: list):
        """(a OP b) with OP a comparison or arithmetic operator in the middle → (items, OP)."""
        grouped = self._group(items)
        if (len(grouped) == 3 and _is_tok(grouped[1]) and grouped[1].text in CMP + ("+", "-",
                                                                                  "*", "/")
                and not (_is_tok(grouped[0]) and grouped[0].text in CMP + (
                    "+", "-", "*", "/", "and", "or", "not"))):
            return grouped, grouped[1].text
        return grouped, None

    def _group(self, items: list) -> list:
        """Attach index brackets to the names before them: `X [0,1]` is one item."""
        out: list = []
        for it in items:
            if _is_tok(it) and _BRACKET.fullmatch(it.text) and out and _is_tok(out[-1]) \
                    and not out[-1].text.startswith("[") and "[" not in out[-1].text:
                prev = out.pop()
                out.append(_Tok(prev.text + it.text, prev.span))
            else:
                out.append(it)
        return out

    def _term(self, node) -> Poly:
        if isinstance(node, _Tok):
            return self._leaf(node)
        items, op = self._infix(node.items)
        if not items:
            raise SpecError("empty term", node.span)
        if op is None:
            if not _is_tok(items[0]):
                raise SpecError("expected an operator", items[0].span)
            op, args = items[0].text, items[1:]
        else:
            args = [items[0], items[2]]
        if op in ("+", "-", "*", "/") and not args:
            raise SpecError(f"`{op}` needs arguments", node.span)
        if op == "+":
            out: Poly = {}
            for a in args:
                out = _padd(out, self._term(a))
            return out
        if op == "-":
            first = self._term(args[0])
            if len(args) == 1:
                return {m: -c for m, c in first.items()}
            for a in args[1:]:
                first = _padd(first, self._term(a), -1)
            return first
        if op == "*":
            out = {(): Fraction(1)}
            for a in args:
                out = _pmul(out, self._term(a), node.span)
            return out
        if op == "/":
            out = self._term(args[0])
            for a in args[1:]:
                d = _const(self._term(a))
                if d is None:
                    raise SpecError("division by a term with variables is not supported",
                                    a.span, fix="multiply both sides by the divisor (mind "
                                                "its sign)")
                if d == 0:
                    raise SpecError("division by zero", a.span)
                out = {m: c / d for m, c in out.items()}
            return out
        raise SpecError(f"unsupported operator `{op}` in a term", items[0].span,
                        fix="terms are numbers, variables, +, -, * and / by a number")

    def _leaf(self, tok: _Tok) -> Poly:
        s = tok.text
        if _NUMBER.fullmatch(s):
            q = _fraction(s, tok.span)
            return {(): q} if q else {}
        name, _, rest = s.partition("[")
        if name not in self.vars:
            if _NAME.fullmatch(name):
                raise SpecError(f"`{name}` is not declared", tok.span,
                                fix="declare it in a (declare-network ...) as declare-input "
                                    "or declare-output")
            raise SpecError(f"unknown name or malformed number `{s}`", tok.span)
        decl, kind, t = self.vars[name]
        if rest:
            idx = _indices(_Tok("[" + rest, tok.span))
            if len(idx) != len(t.shape):
                raise SpecError(f"`{name}` has {len(t.shape)} dimensions {list(t.shape)}, "
                                f"indexed with {len(idx)}", tok.span)
            flat = 0
            for i, d in zip(idx, t.shape):
                if i >= d:
                    raise SpecError(f"index {i} is out of range for `{name}` of shape "
                                    f"{list(t.shape)}", tok.span)
                flat = flat * d + i
        elif t.size == 1:
            flat = 0
        else:
            raise SpecError(f"`{name}` is a tensor of shape {list(t.shape)}: index it",
                            tok.span, fix=f"write {name}[{','.join('0' * len(t.shape))}]")
        return {((Var(decl.name, kind, flat), 1),): Fraction(1)}


def _compare(op: str, a: Poly, b: Poly, span):
    if op in ("<=", "<"):
        return ("atom", Atom(_padd(a, b, -1), op == "<", span))
    if op in (">=", ">"):
        return ("atom", Atom(_padd(b, a, -1), op == ">", span))
    d = _padd(a, b, -1)
    neg = {m: -c for m, c in d.items()}
    if op == "==":
        return ("and", [("atom", Atom(d, False, span)), ("atom", Atom(neg, False, span))])
    return ("or", [("atom", Atom(d, True, span)), ("atom", Atom(neg, True, span))])


def _conjuncts(f) -> list[Atom]:
    """The atoms of a formula's top-level conjunction (each holds in every disjunct)."""
    if f[0] == "atom":
        return [f[1]]
    if f[0] == "and":
        return [a for s in f[1] for a in _conjuncts(s)]
    return []


def _negate(f):
    kind, body = f
    if kind == "atom":
        return ("atom", Atom({m: -c for m, c in body.poly.items()}, not body.strict, body.span))
    return ("or" if kind == "and" else "and", [_negate(s) for s in body])


def _dnf(f, span) -> list[list[Atom]]:
    kind, body = f
    if kind == "atom":
        return [[body]]
    if kind == "or":
        out = []
        for s in body:
            out += _dnf(s, span)
            _check(out, span)
        return out
    out = [[]]
    for s in body:
        sub = _dnf(s, span)
        if len(out) * len(sub) > MAX_DISJUNCTS:
            _check([None] * (len(out) * len(sub)), span)
        out = [a + b for a in out for b in sub]
        _check(out, span)
    return out


def _check(out: list, span) -> None:
    if len(out) > MAX_DISJUNCTS:
        raise SpecError(f"too large: the query has at least {len(out)} disjuncts in normal "
                        f"form (limit {MAX_DISJUNCTS})", span,
                        fix="split the query into several files and check each")
    if sum(len(d) for d in out if d is not None) > MAX_ROWS:
        raise SpecError(f"too large: the normal form has more than {MAX_ROWS} constraints",
                        span)


def parse_vnnlib2(text: str, path: str = "<vnnlib>") -> Query:
    """Parse VNN-LIB 2.0 text (see the module doc); raises SpecError with a location."""
    r = _Reader(path, text)
    q = r.read()
    if not r.version_seen:
        raise SpecError("a VNN-LIB 2.0 query starts with (vnnlib-version 2.0)",
                        Span(path=path, line=1, column=1))
    return q


def read_property(path: str):
    """A 1.0 `Property` or a 2.0 `Query`, by the file's version line."""
    from .vnnlib import parse_vnnlib

    text = read_text(path)
    return parse_vnnlib2(text, path) if is_vnnlib2(text) else parse_vnnlib(text, path)


def from_v1(prop) -> Query:
    """A 1.0 property as a one-network 2.0 query (network `f`, tensors X and Y)."""
    decl = NetDecl("f", Tensor("X", (prop.n_inputs,)), Tensor("Y", (prop.n_outputs,)))
    out = []
    for d in prop.disjuncts:
        atoms = []
        for c in d.constraints:
            p: Poly = {(): c.const} if c.const else {}
            for i, a in c.x:
                p[((Var("f", "X", i), 1),)] = a
            for j, a in c.y:
                p[((Var("f", "Y", j), 1),)] = a
            atoms.append(Atom(p, c.strict, c.span))
        for i, (lo, hi) in enumerate(zip(d.lo, d.hi)):  # the box, which holds the region
            atoms.append(Atom({((Var("f", "X", i), 1),): Fraction(-1), (): lo} if lo else
                              {((Var("f", "X", i), 1),): Fraction(-1)}, False))
            atoms.append(Atom({((Var("f", "X", i), 1),): Fraction(1), (): -hi} if hi else
                              {((Var("f", "X", i), 1),): Fraction(1)}, False))
        out.append(atoms)
    return Query(prop.path, [decl], out)


__all__ = ["Atom", "NetDecl", "Query", "Tensor", "Var", "is_vnnlib2", "parse_vnnlib2",
           "read_property", "read_text"]
