"""Proof obligations: the only thing engines and emitters see.

A claim in a spec becomes one `Obligation`: a conjunction of atomic comparisons (`goal`) that
must hold for every assignment of its variables that lies in the domain and satisfies the
hypotheses. Terms are sympy expressions over a shared `Program` (named intermediate
quantities) and leaf symbols (inputs, parameters).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np
import sympy as sp

from .diagnostics import Span
from .symbolic.program import Program
from .symbolic.translate import Translator

OPS = ("==", "!=", "<=", "<", ">=", ">")
NEGATE = {"==": "!=", "!=": "==", "<=": ">", "<": ">=", ">=": "<", ">": "<="}


@dataclass(frozen=True, slots=True, kw_only=True)
class Atom:
    """lhs OP rhs with OP one of OPS; a strict `<` stays strict everywhere."""

    lhs: sp.Expr
    op: str
    rhs: sp.Expr
    # ("derivative", f, v) when lhs is d f / d v computed by reverse mode: emitters can then
    # state the claim independently of our differentiation (Coq `is_derive`, Lean `HasDerivAt`)
    origin: tuple | None = field(default=None, compare=False, hash=False)
    entry: tuple = field(default=(), compare=False, hash=False)  # index in the compared tensors

    def negated(self) -> Atom:
        return Atom(lhs=self.lhs, op=NEGATE[self.op], rhs=self.rhs, origin=self.origin,
                    entry=self.entry)

    def holds(self, left, right) -> bool:
        """Decide the comparison on two numbers (exact rationals or mpmath values)."""
        return {
            "==": left == right, "!=": left != right, "<=": left <= right,
            "<": left < right, ">=": left >= right, ">": left > right,
        }[self.op]

    def slack(self, left, right):
        """How far the comparison is from failing: positive when it holds strictly."""
        if self.op in ("<=", "<"):
            return right - left
        if self.op in (">=", ">"):
            return left - right
        return -abs(left - right) if self.op == "==" else abs(left - right)


@dataclass(frozen=True, slots=True, kw_only=True)
class Variable:
    """A leaf the obligation quantifies over, with its closed range if it has one."""

    symbol: sp.Symbol
    role: str  # "input" or "param"
    lo: sp.Rational | None = None
    hi: sp.Rational | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Derivation:
    """A named family of terms to export (output, Jacobian, Hessian, parameter gradient)."""

    name: str
    kind: str  # "output" | "jacobian" | "hessian" | "hessian_diagonal" | "gradient" | "term"
    terms: tuple  # nested tuples of sympy expressions (shape of the result)
    shape: tuple[int, ...]
    wrt: tuple[sp.Symbol, ...] = ()
    span: Span | None = field(default=None, compare=False, hash=False, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Obligation:
    """`forall variables in domain. hypotheses -> goal` (goal: conjunction of atoms).

    kind: "identity" (over all values; domain ranges only where declared) or
    "bound" (over the declared input domain).
    """

    name: str
    kind: str
    goal: tuple[Atom, ...]
    hypotheses: tuple[Atom, ...]
    variables: tuple[Variable, ...]
    text: str  # the claim as the user wrote it, for comments in artifacts
    span: Span | None = field(default=None, compare=False, hash=False, repr=False)
    # an identity whose two sides have different shapes at these sizes is false as stated
    shape_mismatch: str | None = None
    # the claim this is one case of (a claim with `or` / `not`: `NAME.1`, `NAME.2`, ...);
    # engines that take a union of polyhedra may decide the cases together
    case_of: str | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class NetworkApplication:
    """A network with concrete weights applied to a vector of distinct input leaves.

    Recorded in `Program.network_terms` (output and input-derivative symbols → this), so
    numeric engines can evaluate those symbols with matrix-level code (`CompiledNetwork`)
    instead of the scalar program. `inputs` and `outputs` are flattened row-major.
    """

    network: object  # ir.Network
    tensors: tuple  # the network's ir.TensorVars (all concrete)
    inputs: tuple[sp.Symbol, ...]
    outputs: tuple[sp.Expr, ...]


@dataclass(slots=True, kw_only=True)
class Model:
    """Everything derived from one spec: the shared program, obligations and derivations."""

    name: str
    source_path: str
    program: Program
    inputs: tuple[Variable, ...]
    params: tuple[Variable, ...]
    obligations: tuple[Obligation, ...]
    derivations: tuple[Derivation, ...]
    networks: tuple = ()  # IR networks, for exporters that describe the architecture
    parameter_count: int = 0
    closed_form: bool = False  # exporters add fully inlined terms (below the size limit)


# ---- network applications → program annotation -----------------------------------------------


class _RecordingTranslator(Translator):
    """A Translator that also records network applications with concrete weights."""

    def __init__(self, spec, program: Program):
        super().__init__(spec, program)
        self.applications: list[NetworkApplication] = []
        self.tensor_vars = {t.name: t for t in spec.params}

    def _apply_network(self, net, node):
        # evaluating the argument first adds nothing: the program shares identical terms
        x = self.value(node.args[0]) if len(node.args) == 1 and not node.kwargs else None
        y = super()._apply_network(net, node)
        app = _application(self, net, x, y)
        if app is not None:
            self.applications.append(app)
        return y


def _application(tr, net, x, y) -> NetworkApplication | None:
    names = [t for layer in net.layers for t in layer.params]
    tensors = [tr.tensor_vars.get(n) for n in names]
    if x is None or any(t is None or not t.concrete for t in tensors):
        return None
    inputs = tuple(sp.sympify(e) for e in x.flat)
    if len(set(inputs)) != len(inputs) or not all(
            isinstance(e, sp.Symbol) and not tr.program.is_defined(e) for e in inputs):
        return None
    return NetworkApplication(network=net, tensors=tuple(tensors), inputs=inputs,
                              outputs=tuple(sp.sympify(e) for e in y.flat))


def _annotate(program: Program, tr) -> None:
    """Record outputs and input derivatives of `tr`'s network applications on the program."""
    terms = program.network_terms
    outputs: dict = {}
    for app in tr.applications:
        position = {s: j for j, s in enumerate(app.inputs)}
        for i, e in enumerate(app.outputs):
            if isinstance(e, sp.Symbol) and program.is_defined(e):
                terms.setdefault(e, (app, "output", i))
                outputs.setdefault(e, (app, i, position))
    for term, origin in tr.origins.items():
        if not (isinstance(term, sp.Symbol) and program.is_defined(term)) or term in terms:
            continue
        _, f, leaf = origin
        hit = outputs.get(f)
        if hit is not None and leaf in hit[2]:
            terms[term] = (hit[0], "jacobian", hit[1], hit[2][leaf])


# ---- claims → obligations ---------------------------------------------------------------------

DERIVE_KINDS = ("output", "jacobian", "hessian", "hessian_diagonal", "gradient")


def _atoms(tr, comparison) -> list[Atom]:
    """A chained comparison a OP b OP c as entrywise atoms (scalars broadcast)."""
    from .symbolic.translate import ShapeError, _shape

    values = [tr.value(e) for e in comparison.operands]
    out: list[Atom] = []
    for (a, b), op, node in zip(pairwise(values), comparison.ops, comparison.operands[1:]):
        if a.shape != b.shape and a.shape != () and b.shape != ():
            if op == "==" and tr.spec is not None and tr.spec.dims:
                raise _ShapeMismatch(f"the sides have shapes {_shape(a)} and {_shape(b)}")
            raise ShapeError(f"cannot compare {_shape(a)} with {_shape(b)}", comparison.span,
                            fix="compare entries of one shape, or index the output")
        shape = np.broadcast(a, b).shape
        xs, ys = (np.broadcast_to(v, shape) for v in (a, b))
        for idx in np.ndindex(shape):
            x, y = sp.sympify(xs[idx]), sp.sympify(ys[idx])
            out.append(Atom(lhs=x, op=op, rhs=y, origin=tr.origins.get(x), entry=idx))
    return out


class _ShapeMismatch(Exception):
    pass


def _variables(spec, program: Program, atoms: list[Atom]) -> tuple[Variable, ...]:
    terms = [t for a in atoms for t in (a.lhs, a.rhs)]
    leaves = program.leaves(terms)
    out = []
    for t in spec.inputs + spec.params:
        for k, e in enumerate(t.entries):
            if e in leaves:
                lo = t.lo[k] if t.lo is not None else None
                hi = t.hi[k] if t.hi is not None else None
                out.append(Variable(symbol=e, role=t.role, lo=lo, hi=hi))
    return tuple(out)


def _narrow(variables: tuple[Variable, ...], hyps: list[Atom]) -> tuple[Variable, ...]:
    """Intersect variable ranges with hypotheses `leaf OP number` (kept as hypotheses too).

    A strict bound narrows the closed range to its closure; the hypothesis itself stays
    strict wherever it is checked.
    """
    out = []
    for v in variables:
        lo, hi = v.lo, v.hi
        for h in hyps:
            for leaf, num, op in ((h.lhs, h.rhs, h.op), (h.rhs, h.lhs, _FLIP.get(h.op))):
                if leaf != v.symbol or not sp.sympify(num).is_Rational or op is None:
                    continue
                if op in ("<=", "<", "=="):
                    hi = num if hi is None else min(hi, num)
                if op in (">=", ">", "=="):
                    lo = num if lo is None else max(lo, num)
        out.append(Variable(symbol=v.symbol, role=v.role, lo=lo, hi=hi))
    return tuple(out)


_FLIP = {"<=": ">=", "<": ">", ">=": "<=", ">": "<", "==": "=="}


MAX_CASES = 256  # obligations one claim with `or` / `not` may become


def _cnf(tr, node, positive: bool, span) -> list[list[Atom]]:
    """The formula (negated unless `positive`) as clauses: a list of disjunctions of atoms.

    A comparison of tensors is the conjunction of its entries' atoms, so it gives one unit
    clause per entry, and its negation one clause of the negated entries."""
    from .syntax import ast

    if isinstance(node, ast.Not):
        return _cnf(tr, node.arg, not positive, span)
    if isinstance(node, ast.BoolOp):
        parts = [_cnf(tr, a, positive, span) for a in node.args]
        if (node.op == "and") == positive:  # a conjunction of the parts' clauses
            return [c for p in parts for c in p]
        out: list[list[Atom]] = [[]]  # a disjunction: one clause per choice of clauses
        for p in parts:
            if len(out) * len(p) > MAX_CASES:
                _too_many(span)
            out = [a + b for a in out for b in p]
        return out
    atoms = _atoms(tr, node)
    return [[a] for a in atoms] if positive else [[a.negated() for a in atoms]]


def _too_many(span):
    from .diagnostics import SpecError

    raise SpecError(f"the claim's `or` / `not` give more than {MAX_CASES} cases", span,
                    fix="split the claim into several claims, or state it without negated "
                        "conjunctions")


def _key(a: Atom) -> tuple:
    return (a.lhs, a.op, a.rhs)


def _clean(clause: list[Atom]) -> list[Atom] | None:
    """The clause without repeated literals, or None when it holds everywhere (it contains a
    comparison and its negation)."""
    seen: dict = {}
    for a in clause:
        seen.setdefault(_key(a), a)
    if any(_key(a.negated()) in seen for a in seen.values()):
        return None
    return list(seen.values())


def _cases(tr, claim) -> list[tuple[list[Atom], list[Atom]]]:
    """(goal, hypotheses) pairs whose obligations together say exactly what the claim says.

    `where W: F` holds iff for every conjunction M of the conditions' disjunctive normal form
    and every clause l_1 or ... or l_k of F's conjunctive normal form, M and not l_2 ... not
    l_k imply l_1. Unit clauses share one obligation (the plain claim: one case); the goal
    literal of a longer clause is an inequality where it has one (a bound obligation), the
    rest become hypotheses (a negated atom is an atom: `<` and `>=`, `==` and `!=`)."""
    span = claim.span
    conditions: list[list[Atom]] = [[]]  # the DNF of the conditions
    for c in claim.where:
        dnf = [[a.negated() for a in clause] for clause in _cnf(tr, c, False, span)]
        if len(conditions) * len(dnf) > MAX_CASES:
            _too_many(span)
        conditions = [m + d for m in conditions for d in dnf]
    raw = _cnf(tr, claim.comparison, True, span)
    clauses = [k for k in (_clean(c) for c in raw) if k is not None]
    if raw and not clauses:  # it holds by its form: keep one case for the engines to prove
        clauses = raw[:1]
    units = [c[0] for c in clauses if len(c) == 1]
    longer = [c for c in clauses if len(c) > 1]
    out = []
    for m in conditions:
        if units or not longer:
            out.append((units, m))
        for c in longer:
            pick = max(range(len(c)), key=lambda i: (c[i].op not in ("==", "!="), i))
            rest = [a.negated() for i, a in enumerate(c) if i != pick]
            out.append(([c[pick]], m + rest))
    if len(out) > 1:  # drop cases whose conditions exclude each other (they hold vacuously)
        out = [(g, h) for g, h in out if not _contradictory(h)] or out[:1]
    if len(out) > MAX_CASES:
        _too_many(span)
    return out


def _term_bound(a: Atom):
    """(term, op, number) for an atom comparing a term with a rational number, else None."""
    lhs, rhs = sp.sympify(a.lhs), sp.sympify(a.rhs)
    if rhs.is_Rational and not lhs.is_Number:
        return lhs, a.op, rhs
    if lhs.is_Rational and not rhs.is_Number:
        return rhs, _FLIP.get(a.op, a.op), lhs
    return None


def _contradictory(atoms: list[Atom]) -> bool:
    """Do these atoms exclude each other by their comparisons of one term with numbers alone
    (`t <= 0`, `t >= 0`, `t != 0`; `t < 100`, `t >= 100`)? Only ever True when no value of
    the term meets them all."""
    by_term: dict = {}
    for a in atoms:
        got = _term_bound(a)
        if got is not None:
            by_term.setdefault(got[0], []).append(got[1:])
    for facts in by_term.values():
        lo, lo_strict, hi, hi_strict, points = None, False, None, False, set()
        for op, c in facts:
            if op in (">=", ">", "=="):
                if lo is None or c > lo or (c == lo and op == ">"):
                    lo, lo_strict = c, op == ">"
            if op in ("<=", "<", "=="):
                if hi is None or c < hi or (c == hi and op == "<"):
                    hi, hi_strict = c, op == "<"
            if op == "!=":
                points.add(c)
        if lo is not None and hi is not None and (
                lo > hi or (lo == hi and (lo_strict or hi_strict or lo in points))):
            return True
    return False


def _obligations(spec, tr, claim) -> list[Obligation]:
    """The claim's obligations: one, or one per case of a claim with `or` / `not` (named
    `NAME.1`, `NAME.2`, ...; the claim holds when every case does)."""
    from .symbolic.translate import ShapeError

    try:
        cases = _cases(tr, claim)
    except (_ShapeMismatch, ShapeError) as err:
        if isinstance(err, ShapeError) and not spec.dims:
            raise  # fixed sizes: a mistake in the spec, not a claim false at some sizes
        return [Obligation(name=claim.name, kind="identity", goal=(), hypotheses=(),
                           variables=(), text=claim.text, span=claim.span,
                           shape_mismatch=f"{_located(err)} at sizes "
                           + ", ".join(f"{k}={v}" for k, v in spec.dims))]
    out = []
    for k, (goal, hyps) in enumerate(cases, 1):
        kind = "identity" if goal and all(a.op == "==" for a in goal) else "bound"
        variables = _narrow(_variables(spec, tr.program, goal + hyps), hyps)
        name = claim.name if len(cases) == 1 else f"{claim.name}.{k}"
        out.append(Obligation(name=name, kind=kind, goal=tuple(goal), hypotheses=tuple(hyps),
                              variables=variables, text=claim.text, span=claim.span,
                              case_of=claim.name if len(cases) > 1 else None))
    return out


def _located(err) -> str:
    """A shape error inside a claim as `line:column: message` (the claim is refuted alone)."""
    span = getattr(err, "span", None)
    message = getattr(err, "message", str(err))
    return f"{span.line}:{span.column}: {message}" if span is not None else message


def _nested(v) -> tuple:
    if isinstance(v, np.ndarray) and v.ndim > 0:
        return tuple(_nested(x) for x in v)
    return sp.sympify(v[()] if isinstance(v, np.ndarray) else v)


def _derivation(spec, tr, d) -> Derivation:
    from .diagnostics import SpecError
    from .syntax import ast

    if d.kind not in DERIVE_KINDS:
        raise SpecError(f"unknown derivation `{d.kind}`", d.kind_span,
                        fix="one of: " + ", ".join(DERIVE_KINDS))
    wrt = d.wrt
    if d.kind != "output" and wrt is None:
        if d.kind != "gradient" and len(spec.inputs) == 1:
            wrt = ast.Ref(parts=(spec.inputs[0].name,), span=d.span)
        else:
            raise SpecError(f"say what the {d.kind} is taken with respect to", d.span,
                            fix=f"derive {d.kind} EXPR wrt NAME")
    if d.kind == "output":
        v = tr.value(d.expr)
    elif d.kind in ("hessian", "hessian_diagonal"):
        v = tr.hessian(tr.value(d.expr), wrt, d.kind == "hessian_diagonal", d.span)
    else:
        f = tr.value(d.expr)
        if d.kind == "gradient" and f.shape != ():
            raise SpecError("a gradient is taken of a scalar", d.expr.span,
                            fix="index the output, e.g. f(x)[0], or derive jacobian")
        v = tr.derivative(f, wrt, flatten=d.kind == "jacobian")
    wrt_syms = tuple(sp.sympify(e) for e in tr.value(wrt).flat) if wrt is not None else ()
    return Derivation(name=d.alias or d.kind, kind=d.kind, terms=_nested(v), shape=v.shape,
                      wrt=wrt_syms, span=d.span)


def _suffix(spec) -> str:
    return "[" + ",".join(f"{k}={v}" for k, v in spec.dims) + "]" if spec.dims else ""


def build_model(spec, instances=None) -> Model:
    """Translate every claim and derivation over one shared program.

    `instances` (elaborations of the same spec at each size tuple of its `dim`s) each
    contribute their obligations, named `claim[N=2,D=3]`.
    """
    from dataclasses import replace

    program = Program()
    obligations, derivations = [], []
    for inst in instances or [spec]:
        tr = _RecordingTranslator(inst, program)
        suffix = _suffix(inst) if instances and len(instances) > 1 else ""
        obligations += [replace(ob, name=ob.name + suffix)
                        for c in inst.claims for ob in _obligations(inst, tr, c)]
        derivations += [replace(d, name=d.name + suffix)
                        for d in (_derivation(inst, tr, d) for d in inst.derives)]
        _annotate(program, tr)
    inputs = tuple(Variable(symbol=e, role="input",
                            lo=t.lo[k] if t.lo else None, hi=t.hi[k] if t.hi else None)
                   for t in spec.inputs for k, e in enumerate(t.entries))
    params = tuple(Variable(symbol=e, role="param",
                            lo=t.lo[k] if t.lo else None, hi=t.hi[k] if t.hi else None)
                   for t in spec.params for k, e in enumerate(t.entries)
                   if isinstance(e, sp.Symbol))
    count = sum(len(t.entries) for t in spec.params)
    return Model(name=spec.name, source_path=spec.path, program=program, inputs=inputs,
                 params=params, obligations=tuple(obligations), derivations=tuple(derivations),
                 networks=spec.networks, parameter_count=count)
