"""Proof obligations: the only thing engines and emitters see.

A claim in a spec becomes one `Obligation`: a conjunction of atomic comparisons (`goal`) that
must hold for every assignment of its variables that lies in the domain and satisfies the
hypotheses. Terms are sympy expressions over a shared `Program` (named intermediate
quantities) and leaf symbols (inputs, parameters).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import sympy as sp

from .diagnostics import Span
from .symbolic.program import Program

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

    def negated(self) -> "Atom":
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


# ---- claims → obligations ---------------------------------------------------------------------

DERIVE_KINDS = ("output", "jacobian", "hessian", "hessian_diagonal", "gradient")


def _atoms(tr, comparison) -> list[Atom]:
    """A chained comparison a OP b OP c as entrywise atoms (scalars broadcast)."""
    from .diagnostics import SpecError
    from .symbolic.translate import _shape

    values = [tr.value(e) for e in comparison.operands]
    out: list[Atom] = []
    for (a, b), op, node in zip(zip(values, values[1:]), comparison.ops, comparison.operands[1:]):
        if a.shape != b.shape and a.shape != () and b.shape != ():
            if op == "==" and tr.spec is not None and tr.spec.dims:
                raise _ShapeMismatch(f"the sides have shapes {_shape(a)} and {_shape(b)}")
            raise SpecError(f"cannot compare {_shape(a)} with {_shape(b)}", comparison.span,
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


def _obligation(spec, tr, claim) -> Obligation:
    try:
        goal = _atoms(tr, claim.comparison)
    except _ShapeMismatch as err:
        return Obligation(name=claim.name, kind="identity", goal=(), hypotheses=(),
                          variables=(), text=claim.text, span=claim.span,
                          shape_mismatch=f"{err} at sizes "
                          + ", ".join(f"{k}={v}" for k, v in spec.dims))
    hyps = [a for c in claim.where for a in _atoms(tr, c)]
    kind = "identity" if all(a.op == "==" for a in goal) else "bound"
    variables = _narrow(_variables(spec, tr.program, goal + hyps), hyps)
    return Obligation(name=claim.name, kind=kind, goal=tuple(goal), hypotheses=tuple(hyps),
                      variables=variables, text=claim.text, span=claim.span)


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

    from .symbolic.program import Program
    from .symbolic.translate import Translator

    program = Program()
    obligations, derivations = [], []
    for inst in instances or [spec]:
        tr = Translator(inst, program)
        suffix = _suffix(inst) if instances and len(instances) > 1 else ""
        obligations += [replace(_obligation(inst, tr, c), name=c.name + suffix)
                        for c in inst.claims]
        derivations += [replace(d, name=d.name + suffix)
                        for d in (_derivation(inst, tr, d) for d in inst.derives)]
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
