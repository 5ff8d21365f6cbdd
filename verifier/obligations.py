"""Proof obligations: the only thing engines and emitters see.

A claim in a spec becomes one `Obligation`: a conjunction of atomic comparisons (`goal`) that
must hold for every assignment of its variables that lies in the domain and satisfies the
hypotheses. Terms are sympy expressions over a shared `Program` (named intermediate
quantities) and leaf symbols (inputs, parameters).
"""

from __future__ import annotations

from dataclasses import dataclass, field

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

    def negated(self) -> "Atom":
        return Atom(lhs=self.lhs, op=NEGATE[self.op], rhs=self.rhs)

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
