"""Coq 8.16 + Coquelicot + Interval: one `.v` file per model that `coqc` compiles.

What gets a proof (`Qed`), and how:
- derivative identities (atoms with origin `("derivative", f, v)`): `is_derive (fun v => f) v rhs`
  by `auto_derive` (the prelude registers tanh, sigmoid, softplus, relu and leaky_relu with it;
  Coquelicot knows exp and ln) then `field`. This re-derives the derivative inside Coq,
  independently of our reverse mode. ReLU-style functions are stated under the premise that
  their pre-activations are nonzero; ln and divisions only of terms positive by construction
  (sums and products of exp, sigmoid, softplus, positive numbers), whose side goals `snn_side`
  discharges;
  Where that pre-check fails, Coq-specific scripts that also use the claim's premises
  (`coq_derivative_plan`): `ring` with inverses as atoms (no cancellation, so no side goals,
  and small where field would multiply out a product of softmax row sums); `field` with
  denominators, ln and sqrt arguments positive by a premise (`lra`); square roots named as
  atoms `t > 0` first (batchnorm's 1/sqrt(Sigma), stated where Sigma > 0); equation premises
  such as `T_0_0 + T_0_1 = 1` solved for a leaf and substituted; case analysis on every
  decision inside step, relu, leaky_relu and piecewise definitions whose decisions do not
  depend on the variable (nerva's conventions at the kinks, stated where the argument is not
  at the kink);
- plain identities: `field`, with activation applications as opaque atoms, after bringing the
  arguments of applications that differ only by ring arithmetic to one form (`replace ... by
  (f_equal; ring)`: a graph layer's aggregation written in two orders), or the scripts above;
  a case analysis on more than CASE_DECISIONS decisions is not attempted (3^n cases);
- small bounds over an input box: the `interval` tactic, kept only when coqc confirms it;
- Jacobians of an output (derivations): `is_derive` lemmas linking the two Definitions.
A proof is attempted only when a sympy pre-check predicts that the tactic succeeds; everything
else is `Admitted` with a comment saying why. Refuted claims are comments only. The printer,
identifier map and pre-checks are shared with the Lean emitter.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import sympy as sp
from sympy.printing.str import StrPrinter

from ..diagnostics import SpecError
from ..engines.verdict import PROVED, REFUTED, Verdict
from ..obligations import Atom, Model, Obligation
from . import json_export as jx
from .names import NameMap, coq_comment_text, coq_reserved, file_label, printable
from .names import ident as sanitize
from .templating import render, wrap

COQ_RESERVED = coq_reserved()  # keywords, the names our text refers to, the prelude's

PROOF_OPS = 1000  # auto_derive / field are only attempted on terms this small (~1 s each)
INTERVAL_OPS = 300  # and the interval tactic on terms this small
STATEMENT_OPS = 3000  # larger claims are not stated inline (the CSE form is in the JSON/LaTeX)
ATOM_LEMMAS = 32  # lemmas per obligation (one per entry of a vector claim)
INTERVAL_INPUTS = 2
INTERVAL_SECONDS = 20.0  # CPU seconds of one coqc run confirming interval proofs
WALL_FACTOR = 6  # its wall-clock backstop, in multiples of that
# bisections of the interval tactic (i_depth): a 3-8-2 tanh edge network against a fitted law
# on a 1/2 x 1/2 cell closes at |phi - law| <= 1/100 in about 4 s of coqc at depth 12; at
# 1/1000 it fails to conclude even at depth 16, and depth 20 runs past INTERVAL_SECONDS
INTERVAL_DEPTH = 12
INTERVAL_ATTEMPTS = 8  # coqc runs per file to confirm interval proofs
JACOBIAN_LEMMAS = 16
# named quantities in a file's CSE form (coqc: about 1 ms each); the entries beyond are omitted
CSE_DEFINITIONS = 6_000
# auto_derive rebuilds the function with `a + - b`, `a * / b` and `x * (x * 1)` for `x ^ 2`:
# bring the claimed derivative to the same form so that field sees the same atoms
DERIVE_TACTIC = "auto_derive; [snn_side | unfold Rminus, Rdiv; cbn [pow]; field; snn_side]."
# auto_derive's time grows quickly with the size of the function (one entry of a softmax
# layer's DW: 17 s for the whole loss, 0.5 s one summand at a time): sums larger than this are
# derived one summand at a time by the prelude's snn_sum
SPLIT_OPS = 60
# snn_cases splits each decision (step, relu, max, piecewise conditions) three ways: the batch
# library needs at most 6 decisions per lemma (seconds); a graph layer's forward identity with
# 18 did not finish in 32 minutes (6.3 GB). Above this many, the lemma is Admitted
CASE_DECISIONS = 8


# ---------------------------------------------------------------- names, templates, printer


class UnsupportedTerm(Exception):
    """A sympy construct the target language has no form for."""


ATOM, APP, POW, MUL, ADD = 0, 10, 30, 40, 50  # binding levels shared by Coq and Lean 4



class CoqPrinter(StrPrinter):
    """sympy -> Coq `R` terms: `x ^ 2` (nat exponent), `a / b` for negative powers, rationals
    as `(p / q)`, negative literals parenthesised, functions applied by juxtaposition."""

    functions: ClassVar[dict[str, str]] = {
        "tanh": "tanh", "exp": "exp", "log": "ln", "sigmoid": "sigmoid", "softplus": "softplus",
        "relu": "relu", "step": "step", "leaky_relu": "leaky_relu", "leaky_step": "leaky_step",
        "Abs": "Rabs", "Max": "Rmax", "Min": "Rmin", "sqrt": "sqrt",
    }
    e_text, pi_text = "(exp 1)", "PI"
    decide: ClassVar[dict[str, str]] = {  # sympy relation -> Coq decision procedure
        "LessThan": "Rle_dec", "StrictLessThan": "Rlt_dec", "GreaterThan": "Rge_dec",
        "StrictGreaterThan": "Rgt_dec", "Equality": "Req_EM_T",
    }

    def __init__(self, name_of):
        super().__init__()
        self.name_of = name_of

    def level(self, e) -> int:
        """How loosely the printed form of `e` binds (parenthesise above the context's level)."""
        if e.is_Add or (e.is_Mul and e.as_coeff_Mul()[0].is_negative):
            return ADD
        if e.is_Mul or (e.is_Pow and e.exp.is_Rational and e.exp.is_negative):
            return MUL
        if e.is_Pow:
            return APP if e.exp == sp.S.Half or not e.exp.is_Rational or e.exp.q > 2 else POW
        if isinstance(e, (sp.Function, sp.Max, sp.Min)) and not isinstance(e, sp.Piecewise):
            return APP
        return ATOM

    def wrap(self, e, level: int) -> str:
        s = self._print(e)
        return f"({s})" if self.level(e) > level else s

    def _print_Symbol(self, s):
        return self.name_of(s)

    _print_Dummy = _print_Symbol

    def _print_Integer(self, n):
        return str(n.p) if n.p >= 0 else f"({n.p})"

    _print_Zero = _print_Integer

    def _print_Rational(self, q):
        return f"({q.p} / {q.q})"

    def _print_Float(self, x):
        return self._print(sp.Rational(str(x)))

    def _print_Exp1(self, _):
        return self.e_text

    def _print_Pi(self, _):
        return self.pi_text

    def _as_ordered_terms(self, expr, order=None):
        """sympy's term order, from the JSON export's fast ordering on the sums that programs
        consist of (sympy's as_ordered_terms spends most of a large file's printing time)."""
        if order is None and expr.is_Add:
            if len(expr.args) == 2:  # as_ordered_terms' special case: `1 - x` stays so
                key = lambda t: not isinstance(t, (sp.Number, sp.NumberSymbol))  # noqa: E731
                num, mul = sorted(expr.args, key=key)
                if isinstance(num, (sp.Number, sp.NumberSymbol)) and isinstance(mul, sp.Mul):
                    m_args = sorted(mul.args, key=key)
                    if (len(m_args) == 2 and isinstance(m_args[0], sp.Number)
                            and num.is_positive and m_args[0].is_negative):
                        return [num, mul]
            try:
                return jx.lex_terms(expr)
            except jx.Unsupported:
                pass
        return super()._as_ordered_terms(expr, order=order)

    def _print_Add(self, e, order=None):
        out = []
        for k, t in enumerate(self._as_ordered_terms(e)):
            if t.as_coeff_Mul()[0].is_negative:
                out.append("- " + self.wrap(-t, MUL))
            else:
                out.append(("" if k == 0 else "+ ") + self.wrap(t, ADD))
        return " ".join(out)

    def _print_Mul(self, e):
        c, rest = e.as_coeff_Mul()
        if c.is_negative:
            return "- " + self.wrap(-e, MUL)
        num, den = ([c] if c != 1 else []), []
        for f in (jx.ordered_factors(rest.args) if rest.is_Mul else [rest]):
            neg = f.is_Pow and f.exp.is_Rational and f.exp.is_negative
            (den if neg else num).append(f.base ** -f.exp if neg else f)
        body = " * ".join(self.wrap(f, MUL) for f in num) or "1"
        if not den:
            return body
        if len(den) == 1:
            return f"{body} / {self.wrap(den[0], POW)}"
        return f"{body} / ({' * '.join(self.wrap(f, MUL) for f in den)})"

    def _print_Pow(self, e):
        b, x = e.args
        if x.is_Integer and x.is_positive:
            return f"{self.wrap(b, APP)} ^ {x}"
        if x.is_Rational and x.is_negative:
            return f"1 / {self.wrap(b ** -x, POW)}"
        if x == sp.S.Half:
            return self.apply("sqrt", [b])
        if x.is_Rational and x.q == 2:  # b^(p/2) = (sqrt b)^p, exact at b = 0 too
            return f"({self.apply('sqrt', [b])}) ^ {x.p}"
        return self.real_power(b, x)

    def real_power(self, b, x) -> str:
        """b^(p/q) for q > 2. Coq's Rpower is exp(x ln b): the real power for b > 0 only
        (Rpower 0 x = 1), so lemmas reading one state `0 < b` as a premise (`rpower_bases`)."""
        return f"Rpower {self.wrap(b, ATOM)} {self.wrap(x, ATOM)}"

    def apply(self, name: str, args) -> str:
        fn = self.functions.get(name)
        if fn is None:
            raise UnsupportedTerm(f"the function {name}")
        return " ".join([fn, *(self.wrap(a, ATOM) for a in args)])

    def _print_Function(self, e):
        name = fname(e)
        args = e.args[::-1] if name in ("leaky_relu", "leaky_step") else e.args  # alpha first
        return self.apply(name, args)

    def _print_Max(self, e):
        return self._fold(self.functions["Max"], e.args)

    def _print_Min(self, e):
        return self._fold(self.functions["Min"], e.args)

    def _fold(self, fn: str, args) -> str:
        out = self.wrap(args[-1], ATOM)
        for k, a in enumerate(reversed(args[:-1])):
            out = f"{fn} {self.wrap(a, ATOM)} {out if k == 0 else f'({out})'}"
        return out

    def _print_Piecewise(self, e):
        """`(if Rle_dec a b then e1 else ...)`; the last branch must be unconditional."""
        *branches, (last, cond) = e.args
        if cond != sp.true:
            raise UnsupportedTerm(f"a Piecewise without a default branch ({e})")
        out = self._print(last)
        for value, c in reversed(branches):
            out = self.branch(c, self._print(value), out)
        return f"({out})"

    def branch(self, c, then: str, other: str) -> str:
        """`if c then .. else ..` with And/Or/Not unfolded into nested tests."""
        if c == sp.true or c == sp.false:
            return then if c == sp.true else other
        if isinstance(c, sp.Or):
            return self.branch(c.args[0], then, self.branch(sp.Or(*c.args[1:]), then, other))
        if isinstance(c, sp.And):
            return self.branch(c.args[0], self.branch(sp.And(*c.args[1:]), then, other), other)
        if isinstance(c, sp.Not):
            return self.branch(c.args[0], other, then)
        if isinstance(c, sp.Ne):
            return self.branch(sp.Eq(c.lhs, c.rhs), other, then)
        return f"if {self.condition(c)} then {then} else {other}"

    def condition(self, c) -> str:
        test = self.decide.get(type(c).__name__)
        if test is None:
            raise UnsupportedTerm(f"the condition {c}")
        return f"{test} {self.wrap(c.lhs, ATOM)} {self.wrap(c.rhs, ATOM)}"

    def emptyPrinter(self, e):
        raise UnsupportedTerm(f"{type(e).__name__} ({e})")


# ---------------------------------------------------------------- what the tactics can do


def fname(app) -> str:
    return type(app).__name__


def applications(e) -> set:
    """Function applications (activations, exp, log, abs, max, min) anywhere in `e`."""
    return set(e.atoms(sp.Function)) | set(e.atoms(sp.Max)) | set(e.atoms(sp.Min))


def atomize(e):
    """`e` with each outermost function application replaced by a fresh symbol: the view that
    Coq's `field` and Lean's `ring` have of a term (applications are opaque atoms)."""
    apps = sorted(applications(e), key=sp.default_sort_key)
    return e.xreplace({a: sp.Symbol(f"atom#{k}") for k, a in enumerate(apps)})


def _vanishes(d) -> bool:
    """Is the rational function `d` identically zero? Exact evaluation at random rational
    points (Schwartz-Zippel): only decides whether a proof is attempted; Coq checks it."""
    syms = sorted(d.free_symbols, key=lambda s: s.name)
    rng = random.Random(len(syms))  # fixed seed: the same decision on every run
    for _ in range(3):
        point = {s: sp.Rational(rng.randint(1, 10**9), rng.randint(1, 10**6)) for s in syms}
        if d.xreplace(point) != 0:
            return False
    return True


def positive(e) -> bool:
    """Provably > 0 by the prelude's `snn_side` (exp, sigmoid, softplus, positive numbers,
    and sums, products and integer powers of those)."""
    if e.is_Number:
        return bool(e > 0)
    if fname(e) in ("exp", "sigmoid", "softplus"):
        return True
    if e.is_Add or e.is_Mul:
        return all(positive(a) for a in e.args)
    return bool(e.is_Pow and e.exp.is_Integer and positive(e.base))


def _denominators_ok(e, allow_positive: bool) -> bool:
    """Only positive-integer powers, or (if allowed) integer powers of positive terms."""
    return all(
        not n.is_Pow or (n.exp.is_Integer and (n.exp.is_positive or (allow_positive
                                                                     and positive(n.base))))
        for n in sp.preorder_traversal(e))


def ring_identity(lhs, rhs, limit: int, positive_denominators: bool = True) -> bool:
    """Is lhs = rhs an identity of rational functions over leaves and opaque applications,
    with every denominator positive by construction? Exactly what `field` proves when its
    side goals (`denominator <> 0`) are discharged by `snn_side`."""
    if lhs is None or rhs is None or sp.count_ops(lhs) + sp.count_ops(rhs) > limit:
        return False
    lhs, rhs = sp.sympify(lhs), sp.sympify(rhs)
    if not all(_denominators_ok(t, positive_denominators) for t in (lhs, rhs)):
        return False  # field would leave `denominator <> 0` goals we cannot discharge
    return _vanishes(atomize(lhs - rhs))


_AUTO_DERIVE = {"tanh", "exp", "sigmoid", "softplus"}  # registered with auto_derive, smooth
_KINKED = {"relu", "leaky_relu"}  # registered under the premise `argument <> 0`


@dataclass(frozen=True, slots=True)
class DerivativePlan:
    nonzero: tuple  # pre-activations assumed nonzero (ReLU kinks)
    reason: str | None  # why no proof is attempted, or None


def derivative_plan(F, v: sp.Symbol, rhs, limit: int) -> DerivativePlan:
    """Can `auto_derive; field` prove is_derive (fun v => F) v rhs, and under which premises?"""
    nonzero, reason = [], None
    if sp.count_ops(F) > limit:
        reason = f"the function has more than {limit} operations (too large for auto_derive here)"
    for app in sorted(applications(F), key=sp.default_sort_key):
        if v not in app.free_symbols:
            continue
        if fname(app) in _KINKED and all(v not in a.free_symbols for a in app.args[1:]):
            nonzero.append(app.args[0])
        elif fname(app) == "log" and not positive(app.args[0]):
            reason = reason or "log of a term that is not positive by construction"
        elif fname(app) not in _AUTO_DERIVE | {"log"}:
            reason = reason or f"{fname(app)} has no derivative rule registered with auto_derive"
    if not _denominators_ok(F, True):
        reason = reason or "a division by a term of unknown sign, or a root (side conditions)"
    if reason is None and not ring_identity(sp.diff(F, v), rhs, 8 * limit):
        reason = "the derivative does not match the claimed one by ring arithmetic"
    return DerivativePlan(tuple(dict.fromkeys(nonzero)), reason)


# ---------------------------------------------------------------- Coq proof plans
#
# The plans above decide for both proof assistants; the ones below only for Coq's tactics,
# which also use the claim's premises: `field` with denominators positive by construction or
# by a premise (`lra`), square roots named as atoms `t > 0`, `ring` with inverses of terms of
# unknown sign as atoms, and case analysis on the decisions inside step, relu and their kin.


class snn_exp(sp.Function):  # noqa: N801 - exp as an opaque application (sympy joins exp(x)^2)
    def fdiff(self, argindex=1):
        return self


class snn_sqrt(sp.Function):  # noqa: N801 - sqrt as Coq's field sees it: an opaque atom
    def fdiff(self, argindex=1):
        return 1 / (2 * self)


def coq_view(e):
    """`e` with exp and square roots as opaque applications carrying their derivative rules,
    the atoms that auto_derive and field see (sympy would turn exp(x)^2 into exp(2x) and
    s^(1/2) * s^(-1) into s^(-1/2); Coq does neither)."""
    e = sp.sympify(e).replace(sp.exp, snn_exp)
    return e.replace(lambda x: x.is_Pow and x.exp.is_Rational and x.exp.q == 2,
                     lambda x: snn_sqrt(x.base) ** (2 * x.exp))


def facts(ctx: "Ctx", ob: Obligation) -> tuple:
    """Terms positive by a premise of the claim (`a > b`: a - b), expanded, coq_view'd."""
    out = []
    for h in ob.hypotheses:
        if h.op in (">", "<"):
            big, small = (h.lhs, h.rhs) if h.op == ">" else (h.rhs, h.lhs)
            out.append(sp.expand(coq_view(ctx.inline(big) - ctx.inline(small))))
    return tuple(out)


def provably_positive(e, known: tuple) -> bool:
    """> 0 by snn_side: exp, sigmoid, softplus, square roots of positive terms, positive
    numbers, premises (up to a positive factor, by lra), sums, products and powers of those."""
    if e.is_Number:
        return bool(e > 0)
    if isinstance(e, snn_sqrt):
        return provably_positive(e.args[0], known)
    if isinstance(e, snn_exp) or fname(e) in ("exp", "sigmoid", "softplus"):
        return True
    if e.is_Pow and e.exp.is_Integer:
        return provably_positive(e.base, known)
    if (e.is_Add or e.is_Mul) and all(provably_positive(a, known) for a in e.args):
        return True
    return bool(known) and _premise_multiple(e, known)


@lru_cache(maxsize=4096)
def _premise_multiple(e, known: tuple) -> bool:
    """Is `e` a positive multiple of a premise term (what lra finds)? The factor is read off
    at a random rational point, then checked like _vanishes (a pre-check; Coq decides)."""
    syms = sorted(e.free_symbols, key=lambda s: s.name)
    rng = random.Random(len(syms))
    point = {s: sp.Rational(rng.randint(1, 10**9), rng.randint(1, 10**6)) for s in syms}
    x = sp.expand(e)
    for k in known:
        if not k.free_symbols or k.free_symbols != x.free_symbols:
            continue
        at = k.xreplace(point)
        c = x.xreplace(point) / at if at != 0 else None
        if c is not None and c.is_Rational and c > 0 and _vanishes(x - c * k):
            return True
    return False


_CASES = {"relu", "leaky_relu", "step", "leaky_step"}  # unfolded to decisions, then split


@dataclass(frozen=True, slots=True)
class CoqPlan:
    """How the main goal of a lemma is closed after auto_derive (or at once for identities):
    `ring` (inverses as atoms, / (a * b) split first: no cancellation, so no side goals),
    `field` (denominators > 0), `roots` (square roots named first, then field), `cases`
    (decisions split, each case by ring or lra)."""

    mode: str | None
    reason: str | None
    substitute: tuple = ()  # (leaf, term): premises `leaf = term` to rewrite with first
    decide: tuple = ()  # conditions to split on before auto_derive
    near: tuple = ()  # terms the variable is apart from (its decisions are fixed nearby)
    frozen: object = None  # the function with those decisions fixed, in SNN_Y
    dep: object = None  # the summands containing the variable, when the others are split off


def _inverses(e) -> list:
    return [n.base for n in sp.preorder_traversal(e)
            if n.is_Pow and n.exp.is_Rational and n.exp.is_negative]


def _unsupported_power(e) -> str | None:
    for n in sp.preorder_traversal(e):
        if n.is_Pow and not n.exp.is_Integer and n.exp not in (sp.S.Half, -sp.S.Half):
            return f"the power {n.exp} ({'sqrt' if n.exp.q == 2 else 'Rpower'}) has no proof script"
    return None


def coq_plan(lhs, rhs, known: tuple, limit: int) -> CoqPlan:
    """Which script proves lhs = rhs (both in the view of coq_view, lhs as auto_derive leaves
    it), given the terms positive by the premises."""
    if sp.count_ops(lhs) + sp.count_ops(rhs) > limit:
        return CoqPlan(None, f"the terms have more than {limit} operations")
    apps = applications(lhs) | applications(rhs)
    kinked = any(fname(a) in _CASES for a in apps) or any(
        isinstance(n, sp.Piecewise) for t in (lhs, rhs) for n in sp.preorder_traversal(t))
    for a in apps:
        if fname(a) == "log" and not provably_positive(a.args[0], known):
            return CoqPlan(None, "log of a term that is positive neither by construction nor "
                                 "by a premise")
    dens = _inverses(lhs) + _inverses(rhs)
    has_root = any(isinstance(a, snn_sqrt) for a in apps)
    # ring, with each inverse an atom, needs no cancellation and stays small where field
    # would multiply out a common denominator (softmax: a product of row sums)
    if not has_root and _ring_with_inverse_atoms(lhs - rhs, dens):
        return CoqPlan("ring", None)
    if all(provably_positive(d, known) for d in dens):
        if _vanishes(atomize(lhs - rhs)):
            return CoqPlan("roots" if has_root else "field", None)
        if kinked and _holds_at_points(lhs - rhs, known):
            n = case_decisions(lhs, rhs)
            if _entangled_decisions(lhs, rhs):
                return CoqPlan(None, "case analysis on decisions that share a product of "
                                     "variables (z and alpha z): lra sees products as atoms "
                                     "and cannot close the impossible cases")
            if n > CASE_DECISIONS:
                return CoqPlan(None, f"case analysis on {n} decisions (up to 3^{n} cases) is "
                                     f"above the bound for bounded compile time "
                                     f"({CASE_DECISIONS} decisions)")
            return CoqPlan("cases", None)
        return CoqPlan(None, "not an identity of field arithmetic with activations as atoms")
    return CoqPlan(None, "a division by a term that is positive neither by construction nor by "
                         "a premise, and not an identity of ring arithmetic with inverses as atoms")


def _ring_with_inverse_atoms(d, dens) -> bool:
    atoms = {b: sp.Symbol(f"inv#{k}") for k, b in enumerate(dict.fromkeys(dens))}
    flat = d.replace(lambda x: x.is_Pow and x.exp.is_Integer and x.exp < 0 and x.base in atoms,
                     lambda x: atoms[x.base] ** -x.exp)
    return not any(a.is_Pow and a.exp.is_negative for a in sp.preorder_traversal(flat)) \
        and _vanishes(atomize(flat))


def _holds_at_points(d, known: tuple, tries: int = 128, wanted: int = 6) -> bool:
    """Does the piecewise residue `d` vanish at random rational points where the premises
    `known` (terms > 0) hold? The pre-check for case analysis, which Coq then does exactly;
    points off the premises or on a kink (a step argument 0) are skipped. Every try is made
    (not only the first `wanted` that count): a wrong rule may be wrong on one region only
    (srelu's middle piece forgotten: a third of the points)."""
    view = d.replace(snn_exp, sp.exp).replace(snn_sqrt, sp.sqrt)
    syms = sorted(view.free_symbols | set().union(*(k.free_symbols for k in known)),
                  key=lambda s: s.name)
    kinks = [a.args[0] for a in applications(view) if fname(a) in _CASES]
    kinks += [c.lhs - c.rhs for n in sp.preorder_traversal(view) if isinstance(n, sp.Piecewise)
              for _, c in n.args if isinstance(c, sp.core.relational.Relational)]
    rng = random.Random(len(syms))
    seen = 0
    for _ in range(tries):
        point = {s: sp.Rational(rng.randint(-60, 60), rng.randint(1, 7)) for s in syms}
        if not all(k.xreplace(point) > 0 for k in known) or \
                any(k.xreplace(point) == 0 for k in kinks):
            continue
        value = view.xreplace(point)
        if not value.is_number or value != 0:
            return False
        seen += 1
    return seen >= wanted


def _entangled_decisions(*terms) -> bool:
    """Two distinct decisions with a common monomial, one of them nonlinear (z > 0 against
    z - alpha z >= 0): the cases that contradict each other only by multiplying out, which
    lra (products as atoms) cannot see."""
    found = []
    for t in terms:
        for n in sp.preorder_traversal(t):
            if fname(n) in _CASES:
                found.append(n.args[0])
            elif isinstance(n, (sp.Max, sp.Min)):
                found += [a - b for a, b in itertools.combinations(n.args, 2)]
            elif isinstance(n, sp.Piecewise):
                found += [c.lhs - c.rhs for _, c in n.args
                          if isinstance(c, sp.core.relational.Relational)]
    monos = []
    for d in dict.fromkeys(sp.expand(d) for d in found):
        terms_ = {m.as_coeff_Mul()[1] for m in sp.Add.make_args(d) if not m.is_Number}
        if frozenset(terms_) not in {frozenset(ms) for ms, _ in monos}:
            monos.append((terms_, any(sp.total_degree(m) > 1 for m in terms_)))
    return any((n1 or n2) and m1 & m2 for (m1, n1), (m2, n2) in itertools.combinations(monos, 2))


def case_decisions(*terms) -> int:
    """How many distinct decisions snn_cases splits on in `terms`: the arguments of step,
    relu and their kin, the operands of max and min, piecewise conditions. Each splits three
    ways; contradictory branches are pruned, but the rest grows like 3^n."""
    found = set()
    for t in terms:
        for n in sp.preorder_traversal(t):
            if fname(n) in _CASES:
                found.add(n.args[0])
            elif isinstance(n, (sp.Max, sp.Min)):
                found.add(n)
            elif isinstance(n, sp.Piecewise):
                found.update(c for _, c in n.args if c != sp.true)
    return len(found)


COQ_MAIN = {  # the main goal's script per plan mode (after `unfold Rminus, Rdiv in *`)
    "field": "field; snn_side",
    "roots": "snn_roots; field; snn_side",
    "ring": "rewrite ?Rinv_mult; ring",
    "cases": "snn_cases",
}


def substitutions(ctx: "Ctx", ob: Obligation, keep=()) -> tuple:
    """Equation premises solved for a leaf with a constant coefficient (`T_0_0 + T_0_1 = 1`:
    T_0_1 = 1 - T_0_0), in order, each over the leaves left by the earlier ones; Coq proves
    each by lra from the premises and rewrites the goal with it (`subst`)."""
    out, done = [], {}
    for h in ob.hypotheses:
        if h.op != "==":
            continue
        d = sp.expand((ctx.inline(h.lhs) - ctx.inline(h.rhs)).xreplace(done))
        for s in sorted(d.free_symbols - set(keep) - set(done), key=lambda x: x.name,
                        reverse=True):
            c = sp.diff(d, s)
            if c.is_Number and c != 0:
                term = sp.expand(s - d / c)
                done = {k: t.xreplace({s: term}) for k, t in done.items()}
                done[s] = term
                out.append((s, term))
                break
    return tuple((s, done[s]) for s, _ in out)


def _substitute_script(ctx: "Ctx", subs) -> str:
    return "".join(f"  assert ({ctx.sym_name(s)} = {ctx.p(t)}) by lra; subst "
                   f"{ctx.sym_name(s)}.\n" for s, t in subs)


def coq_derivative_plan(ctx: "Ctx", ob: Obligation, F, v, rhs) -> CoqPlan:
    """The plan for is_derive (fun v => F) v rhs: F differentiated as auto_derive does."""
    subs = substitutions(ctx, ob, keep=[v])
    if subs:
        F, rhs = (e.xreplace(dict(subs)) for e in (F, rhs))
    if (bad := _unsupported_power(F) or _unsupported_power(rhs)) is not None:
        return CoqPlan(None, bad)
    for app in applications(F):
        if isinstance(app, sp.Piecewise):
            continue  # below
        if v in app.free_symbols and fname(app) not in _AUTO_DERIVE | _KINKED | {"log"}:
            return CoqPlan(None, f"{fname(app)} has no derivative rule registered with "
                                 "auto_derive")
        if fname(app) in _KINKED and any(v in a.free_symbols for a in app.args[1:]):
            return CoqPlan(None, f"{fname(app)} with a slope that depends on {v}")
    dep = dependent_part(F, v)
    if dep is not None:
        F = dep  # the other summands are constants: split off (snn_rest) before the cases
    decide, near = [], []  # decisions to split on; points v is apart from (premises v <> c)
    for n in sp.preorder_traversal(F):
        if isinstance(n, sp.Piecewise) and v in n.free_symbols:
            for c in (c for _, c in n.args if c != sp.true):
                if v in c.free_symbols:
                    if sum(isinstance(m, sp.Piecewise) for m in sp.preorder_traversal(F)) > 1:
                        return CoqPlan(None, f"piecewise decisions on {v} next to other "
                                             "piecewise terms (the case analysis is too large "
                                             "for coqc here)")
                    k = _apart(ctx, ob, c, v)
                    if k is None:
                        return CoqPlan(None, f"a piecewise decision {c} on {v} that is not a "
                                             f"comparison of {v} with a term a premise keeps "
                                             f"it apart from")
                    near += [k] if k not in near else []
                decide += [c] if c not in decide else []
    known = facts(ctx, ob)
    for app in applications(F):  # auto_derive's side goals: sqrt and ln of positive terms
        if fname(app) == "log" and not provably_positive(coq_view(app.args[0]), known):
            return CoqPlan(None, "log of a term that is positive neither by construction nor "
                                 "by a premise")
    Fv = coq_view(F)
    for n in sp.preorder_traversal(Fv):
        if isinstance(n, snn_sqrt) and not provably_positive(n.args[0], known):
            return CoqPlan(None, "a square root of a term that is not positive by a premise")
    plan = coq_plan(sp.diff(Fv, v), coq_view(rhs), known, 8 * PROOF_OPS)
    frozen = None
    if near:  # F with v's decisions fixed at the point: equal to F near it
        frozen = F.xreplace({v: SNN_Y}).replace(
            lambda x: isinstance(x, sp.Piecewise) and SNN_Y in x.free_symbols,
            lambda x: sp.Piecewise(*((e, c.xreplace({SNN_Y: v})) for e, c in x.args),
                                   evaluate=False))
    return dataclasses.replace(plan, substitute=subs, decide=tuple(decide), near=tuple(near),
                               frozen=frozen, dep=dep)


def dependent_part(F, v):
    """The summands of F that contain v, when F also has summands that do not and v occurs
    in a piecewise definition (whose case analysis must not see the other summands' decisions:
    with N*K srelu terms it exhausts coqc's memory); else None."""
    terms = sp.Add.make_args(F)
    dep = [t for t in terms if v in t.free_symbols]
    if not dep or len(dep) == len(terms):
        return None
    if not any(isinstance(n, sp.Piecewise) and v in n.free_symbols
               for t in dep for n in sp.preorder_traversal(t)):
        return None
    return sp.Add(*dep)


def derive_step(F, closer: str) -> str:
    """Differentiate `fun v => F` and close the main goal with `closer`: auto_derive (its side
    goals by snn_side), or for a large sum snn_sum (one summand at a time)."""
    if F.is_Add and sp.count_ops(F) > SPLIT_OPS:
        return f"snn_sum; {closer}"
    return f"auto_derive; [snn_side | {closer}]"


SNN_Y, SNN_T = sp.Dummy("snn_y"), sp.Dummy("snn_t")  # bound names in proof scripts


def _apart(ctx: "Ctx", ob: Obligation, c, v):
    """For a decision `v ? k` (or `k ? v`) with a premise `v <> k`: k, else None."""
    if not isinstance(c, sp.core.relational.Relational) or {c.lhs, c.rhs} & {v} == set():
        return None
    k = c.rhs if c.lhs == v else c.lhs
    if v in k.free_symbols:
        return None
    for h in ob.hypotheses:
        if h.op == "!=" and {ctx.inline(h.lhs), ctx.inline(h.rhs)} == {v, k}:
            return k
    return None


def _derivative_script(ctx: "Ctx", cp: CoqPlan, v, F) -> str:
    """intros, substitutions, the summands without v split off, then auto_derive on each case
    of the decisions (near a point apart from v's decisions, on F with those decisions frozen:
    is_derive_ext_loc)."""
    vn = ctx.sym_name(v)
    out = [f"  intros.\n{_substitute_script(ctx, cp.substitute)}".rstrip("\n")]
    if cp.dep is not None:
        F = cp.dep
        out.append(f"  apply (snn_rest (fun {vn} : R => {ctx.p(cp.dep)})).\n"
                   "  { intros snn_t; cbv beta; ring. }")
    elif cp.substitute:
        F = F.xreplace(dict(cp.substitute))
    if cp.mode == "cases":
        out.append(f"  snn_keep {vn}.")
    if cp.near:
        out.append(f"  apply is_derive_ext_loc with (f := fun snn_y : R => {ctx.p(cp.frozen)}).")
        nears = [f"(snn_near {vn} {ctx.printer.wrap(k, ATOM)} ltac:(first [assumption | apply "
                 f"not_eq_sym; assumption]))" for k in cp.near]
        both = nears[-1]
        for n in reversed(nears[:-1]):
            both = f"(filter_and _ _ {n} {both})"
        at_t = [c.xreplace({v: SNN_T}) for c in cp.decide if v in c.free_symbols]
        tests = "".join(f"destruct ({ctx.printer.condition(c)}); "
                        for c in [*cp.decide, *at_t])
        out.append(f"  {{ generalize {both}.\n    apply filter_imp; intros snn_t ?; cbv beta;\n"
                   f"    match goal with |- ?a = ?b => change (@eq R a b) end.\n"
                   f"    {tests}solve [exfalso; lra | reflexivity | ring]. }}")
    split_on = "".join(f"destruct ({ctx.printer.condition(c)}); " for c in cp.decide)
    main = f"snn_cases_at {vn}" if cp.near and cp.mode == "cases" else COQ_MAIN[cp.mode]
    body = derive_step(F, f"unfold Rminus, Rdiv in *; cbn [pow] in *; {main}")
    out.append(f"  {split_on}({body})." if split_on else f"  {body}.")
    return "\n".join(out)



def is_derivative(a: Atom) -> bool:
    """An `==` atom whose lhs is d f / d v computed by reverse mode."""
    return a.op == "==" and bool(a.origin) and a.origin[0] == "derivative"


def module_name(model_name: str) -> str:
    """A valid Coq module name for `model.name` (the file is compiled as `coqc NAME.v`)."""
    name = sanitize(model_name)
    return f"{name}_model" if name in COQ_RESERVED or name.startswith("snn_") else name


def coq_comment(lines) -> str:
    """One comment line per line of text, each neutralised by `names.coq_comment_text`."""
    return "".join(f"(* {coq_comment_text(ln)} *)\n" for ln in lines)


class Ctx:
    """Identifiers and the printer for one file; identifiers are fixed in a sorted order."""

    reserved = COQ_RESERVED
    printer_class = CoqPrinter
    ops: ClassVar[dict[str, str]] = {
        "==": "=", "!=": "<>", "<=": "<=", "<": "<", ">=": ">=", ">": ">"}

    def __init__(self, model: Model):
        self.model, self.prog = model, model.program
        self.names = NameMap(self.reserved)
        self.order = jx.leaf_order(model)
        for sym in sorted(self.order, key=lambda s: s.name):
            self.sym_name(sym)
        for sym in self.prog.order:
            self.sym_name(sym)
        self.printer = self.printer_class(self.sym_name)
        self.inlined: dict = {}
        self.printed: dict = {}
        self.interval_attempts = 0

    def sym_name(self, sym: sp.Symbol) -> str:
        if sym in (SNN_Y, SNN_T):
            return sym.name  # user names never start with snn_ (NameMap)
        return self.names.name(("sym" if sym in self.prog.defs else "leaf", sym.name), sym.name)

    def p(self, e) -> str:
        """The printed form of `e`, memoised: a CSE step shared by several Definitions (and
        checked by check_supported) is printed once."""
        e = sp.sympify(e)
        text = self.printed.get(e)
        if text is None:
            text = self.printed[e] = self.printer.doprint(e)
        return text

    def inline(self, e):
        """`e` over leaves only; TooLarge above STATEMENT_OPS operations."""
        e = sp.sympify(e)
        if e not in self.inlined:
            self.inlined[e] = jx.safe_inline(self.prog, e, STATEMENT_OPS)
        if self.inlined[e] is None:
            raise jx.TooLarge(f"the inlined claim exceeds {STATEMENT_OPS} operations "
                              "(its CSE form is in the JSON and LaTeX exports)")
        return self.inlined[e]

    def leaves(self, exprs, skip=()) -> list[sp.Symbol]:
        found = set().union(set(), *(sp.sympify(e).free_symbols for e in exprs)) - set(skip)
        return sorted(found, key=lambda s: (self.order.get(s, len(self.order)), s.name))

    def call(self, ident: str, params) -> str:
        return " ".join([ident, *(self.sym_name(s) for s in params)])

    def atom(self, a: Atom) -> str:
        return f"{self.p(self.inline(a.lhs))} {self.ops[a.op]} {self.p(self.inline(a.rhs))}"

    def premises(self, ob: Obligation, syms) -> list[str]:
        """Domain bounds of the quantified variables, then the obligation's hypotheses."""
        dom = {v.symbol: v for v in ob.variables}
        out = []
        for s in syms:
            d = dom.get(s)
            lo = None if d is None or d.lo is None else self.p(d.lo)
            hi = None if d is None or d.hi is None else self.p(d.hi)
            if lo is not None or hi is not None:
                out.append(self.range_text(lo, self.sym_name(s), hi))
        return out + [self.atom(h) for h in ob.hypotheses]

    def range_text(self, lo, name, hi) -> str:
        return " <= ".join(x for x in (lo, name, hi) if x is not None)

    def quantified(self, ob: Obligation, exprs, skip=()):
        """The variables of an obligation (inlined terms and hypotheses) and its premises."""
        hyp = [self.inline(t) for h in ob.hypotheses for t in (h.lhs, h.rhs)]
        syms = self.leaves([self.inline(e) for e in exprs] + hyp, skip=skip)
        return syms, self.premises(ob, syms)


def _lemma(name: str, statement: str, proof: str | None, why=()) -> str:
    """A lemma closed by the tactic script `proof` with Qed, or Admitted; `why` as a comment."""
    end = "Admitted." if proof is None else f"{proof}\nQed."
    return f"{coq_comment(why)}Lemma {name} :\n  {statement}.\nProof.\n{end}\n"


def _statement(ctx: Ctx, syms, premises, goal: str) -> str:
    head = f"forall {' '.join(ctx.sym_name(s) for s in syms)} : R,\n  " if syms else ""
    return head + "".join(f"{p} ->\n  " for p in premises) + goal


def derivative_lemma(ctx: Ctx, name: str, ob: Obligation, atom: Atom, prove: bool,
                     force: bool = False) -> str:
    """`forall others v, premises -> is_derive (fun v => f) v rhs` for a derivative atom,
    proved by auto_derive + field when the pre-check agrees (`force`: always try, for tests)."""
    _, f, v = atom.origin
    F, rhs = ctx.inline(f), ctx.inline(atom.rhs)
    plan = derivative_plan(F, v, rhs, PROOF_OPS)
    syms, premises = ctx.quantified(ob, [F, rhs], skip=[v])
    premises += [p for p in ctx.premises(ob, [v]) if p not in premises]
    premises += [f"{ctx.p(z)} <> 0" for z in plan.nonzero]
    vn = ctx.sym_name(v)
    goal = f"is_derive (fun {vn} : R => {ctx.p(F)}) {vn}\n    ({ctx.p(rhs)})"
    why = []
    if plan.nonzero:
        why.append(f"stated where the ReLU-style pre-activations depending on {vn} are "
                   "nonzero, the points where the function is differentiable")
    proof = None
    if force or (prove and plan.reason is None):
        step = derive_step(F, "unfold Rminus, Rdiv; cbn [pow]; field; snn_side")
        proof = f"  intros.\n  {step}."
    elif prove:
        cp = coq_derivative_plan(ctx, ob, F, v, rhs)
        if cp.mode is not None:
            proof = _derivative_script(ctx, cp, v, F)
        else:
            why.append(f"Admitted: no proof script because {plan.reason}; and for the Coq "
                       f"specific scripts, {cp.reason}")
    return _lemma(name, _statement(ctx, [*syms, v], premises, goal), proof, why)


def identity_lemma(ctx: Ctx, name: str, ob: Obligation, prove: bool) -> str:
    """`forall leaves, premises -> lhs = rhs /\\ ...`, by `field` when it is a ring identity."""
    syms, premises = ctx.quantified(ob, [t for a in ob.goal for t in (a.lhs, a.rhs)])
    goal = " /\\\n  ".join(ctx.atom(a) for a in ob.goal)
    why, proof = [], None
    ring = all(a.op == "==" and ring_identity(ctx.inline(a.lhs), ctx.inline(a.rhs), PROOF_OPS)
               for a in ob.goal)
    split = "repeat split; " if len(ob.goal) > 1 else ""
    steps = None
    if prove and not ring and all(a.op == "==" for a in ob.goal):
        per_atom = [argument_steps(ctx.inline(a.lhs), ctx.inline(a.rhs)) for a in ob.goal]
        if all(s is not None for s in per_atom):
            steps = tuple(dict.fromkeys(s for st in per_atom for s in st))
    plans = [] if ring or steps or not prove else [identity_plan(ctx, ob, a) for a in ob.goal]
    if prove and ring:
        proof = f"  intros.\n  {split}unfold Rminus, Rdiv; field; snn_side."
    elif prove and steps:
        why.append("the arguments of the activations are first brought to one expanded form "
                   "(f_equal; ring), then the identity holds by field")
        proof = (f"  intros.\n{_argument_script(ctx, steps)}"
                 f"  {split}unfold Rminus, Rdiv; field; snn_side.")
    elif prove and all(cp.mode is not None for cp in plans):
        modes = {cp.mode for cp in plans}
        main = COQ_MAIN[modes.pop()] if len(modes) == 1 else \
            "first [" + " | ".join(f"solve [{COQ_MAIN[m]}]" for m in sorted(modes)) + "]"
        proof = f"  intros.\n  unfold Rminus, Rdiv in *; cbn [pow] in *; {split}{main}."
    elif prove and plans:
        reasons = sorted({cp.reason for cp in plans if cp.reason is not None})
        why.append("Admitted: no proof script because " + "; ".join(reasons))
    elif prove:
        why.append("Admitted: not an identity of ring arithmetic over activation applications "
                   "(it needs function-specific facts, or is too large), so no proof script")
    return _lemma(name, _statement(ctx, syms, premises, goal), proof, why)


def argument_steps(lhs, rhs, limit: int = PROOF_OPS) -> tuple | None:
    """`(old, new)` applications, innermost first, whose arguments (polynomials) are brought to
    sympy's expanded form so that both sides of lhs = rhs have the same atoms (a graph layer's
    aggregation written in two orders: relu (x1 * w + x2 * w) against relu (w * (x1 + x2)));
    None unless lhs = rhs is then a ring identity over the atoms. Coq rewrites each
    (`replace old with new by (f_equal; ring)`) and closes the rest by field, where case
    analysis on every decision would take 3^n cases."""
    lhs, rhs = sp.sympify(lhs), sp.sympify(rhs)
    apps = applications(lhs) | applications(rhs)
    if not apps or any(isinstance(a, sp.Piecewise) or _inverses(a) for a in apps):
        return None
    done, steps = {}, []
    for app in sorted(apps, key=lambda a: (sp.count_ops(a), sp.default_sort_key(a))):
        cur = app.func(*(t.xreplace(done) for t in app.args))
        new = cur.func(*(sp.expand(t) for t in cur.args))
        done[app] = new
        if new != cur:
            steps.append((cur, new))
    if not steps:
        return None
    flat = [t.xreplace(done) for t in (lhs, rhs)]
    return tuple(steps) if ring_identity(*flat, limit) else None


def _argument_script(ctx: Ctx, steps) -> str:
    return "".join(f"  replace ({ctx.p(old)}) with ({ctx.p(new)}) by (f_equal; ring).\n"
                   for old, new in steps)


def identity_plan(ctx: Ctx, ob: Obligation, a: Atom) -> CoqPlan:
    """The Coq plan for one `==` atom of a plain identity (activations as atoms)."""
    if a.op != "==":
        return CoqPlan(None, "only equations have proof scripts")
    lhs, rhs = ctx.inline(a.lhs), ctx.inline(a.rhs)
    if (bad := _unsupported_power(lhs) or _unsupported_power(rhs)) is not None:
        return CoqPlan(None, bad)
    known = facts(ctx, ob)
    lhs, rhs = coq_view(lhs), coq_view(rhs)
    for n in (*sp.preorder_traversal(lhs), *sp.preorder_traversal(rhs)):
        if isinstance(n, snn_sqrt) and not provably_positive(n.args[0], known):
            return CoqPlan(None, "a square root of a term that is not positive by a premise")
    return coq_plan(lhs, rhs, known, PROOF_OPS)


def bound_lemma(ctx: Ctx, name: str, ob: Obligation, prove: bool, coqc) -> str:
    """`forall inputs, lo <= x <= hi -> ... -> goal`, by `interval` when coqc confirms it."""
    syms, premises = ctx.quantified(ob, [t for a in ob.goal for t in (a.lhs, a.rhs)])
    bases = rpower_bases(ctx, [t for a in ob.goal for t in (a.lhs, a.rhs)])
    premises = [*premises, *(f"0 < {ctx.p(b)}" for b in bases)]
    stmt = _statement(ctx, syms, premises, " /\\\n  ".join(ctx.atom(a) for a in ob.goal))
    note = ["stated where every Rpower base is > 0 (Coq's Rpower 0 y is 1, not the real "
            "power)"] if bases else []
    if not prove:
        return _lemma(name, stmt, None, note)
    reason = _interval_unsuitable(ctx, ob, syms)
    if reason is None and coqc is None:
        reason = "coqc was not available to confirm an interval proof when this file was written"
    if reason is None and ctx.interval_attempts >= INTERVAL_ATTEMPTS:
        reason = f"only {INTERVAL_ATTEMPTS} interval proofs are attempted per file"
    if reason is None:
        ctx.interval_attempts += 1
        proof = _interval_script(ctx, ob, syms, len(premises))
        failure = coq_failure(coqc, _lemma(name, stmt, proof))
        if failure is None:
            return _lemma(name, stmt, proof, [*note, "checked by the interval tactic "
                                              f"(bisection to depth {INTERVAL_DEPTH})"])
        reason = f"the interval tactic (bisection to depth {INTERVAL_DEPTH}) {failure}"
    return _lemma(name, stmt, None, [*note, f"Admitted: no Coq proof because {reason}"])


def rpower_bases(ctx: Ctx, terms) -> list:
    """Bases of the powers printed as Rpower (b^(p/q), q > 2) that are not positive numbers."""
    out = []
    for t in terms:
        for n in sp.preorder_traversal(ctx.inline(t)):
            if n.is_Pow and n.exp.is_Rational and n.exp.q > 2 and not n.base.is_positive \
                    and n.base not in out:
                out.append(n.base)
    return sorted(out, key=sp.default_sort_key)


def _simple_bound(h: Atom, dom) -> bool:
    """`leaf OP number` with the leaf's range already narrowed by it (obligations._narrow)."""
    return any(s in dom and n.is_Rational for s, n in ((h.lhs, h.rhs), (h.rhs, h.lhs)))


def _interval_unsuitable(ctx: Ctx, ob: Obligation, syms) -> str | None:
    dom = {v.symbol: v for v in ob.variables}
    terms = [ctx.inline(t) for a in ob.goal for t in (a.lhs, a.rhs)]
    if not all(_simple_bound(h, dom) for h in ob.hypotheses):
        return "the claim has hypotheses, which the interval tactic cannot use"
    if any(a.op in ("==", "!=") for a in ob.goal):
        return "the interval tactic proves inequalities only"
    if any(s not in dom or dom[s].lo is None or dom[s].hi is None for s in syms):
        return "some variable has no bounded range"
    if len(syms) > INTERVAL_INPUTS:
        return f"it has more than {INTERVAL_INPUTS} variables (bisection would be too slow)"
    if sum(sp.count_ops(t) for t in terms) > INTERVAL_OPS:
        return "the network is too large for a quick interval proof"
    for app in sorted(set().union(*(applications(t) for t in terms)), key=sp.default_sort_key):
        if fname(app) not in ("tanh", "exp", "log", "Abs", "relu", "leaky_relu", "sigmoid",
                              "softplus"):
            return f"{fname(app)} is discontinuous or unknown to the interval tactic"
    return None


def _interval_script(ctx: Ctx, ob: Obligation, syms, n_premises: int) -> str:
    bisect = ", ".join(f"i_bisect {ctx.sym_name(s)}" for s in syms)
    tac = f"interval with ({bisect}, i_depth {INTERVAL_DEPTH})" if bisect else "interval"
    hyps = " ".join(f"snn_h{k}" for k in range(n_premises))
    lines = [f"  intros {' '.join(ctx.sym_name(s) for s in syms)} {hyps}".rstrip() + "."]
    for k, a in enumerate(ob.goal):
        diff = f"{ctx.p(ctx.inline(a.lhs))} - {ctx.printer.wrap(ctx.inline(a.rhs), MUL)}"
        body = (f"enough ({diff} {ctx.ops[a.op]} 0) by lra;\n    rewrite ?relu_abs, "
                f"?leaky_relu_abs, ?tanh_exp; unfold sigmoid, softplus; {tac}")
        last = k == len(ob.goal) - 1
        lines.append(f"  {body}." if last else f"  split; [ {body} | ].")
    return "\n".join(lines)


def coq_failure(coqc: str, lemmas: str, timeout: float | None = None) -> str | None:
    """None when coqc accepts the prelude followed by `lemmas` within `timeout` (default
    INTERVAL_SECONDS) seconds of CPU, else why not (for the Admitted comment). The limit is on
    CPU time, so a loaded machine does not turn a proof into an Admitted; the wall clock only
    backs it up (WALL_FACTOR times as long)."""
    limit = INTERVAL_SECONDS if timeout is None else timeout
    text = render_file("snn_check", "check", "", lemmas)

    def cpu_limit():  # in the child, before exec
        import resource

        resource.setrlimit(resource.RLIMIT_CPU, (math.ceil(limit), math.ceil(limit) + 1))

    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "snn_check.v"), "w", encoding="utf-8") as fh:
            fh.write(text)
        try:
            res = subprocess.run([coqc, "snn_check.v"], cwd=tmp, capture_output=True,
                                 timeout=WALL_FACTOR * limit, check=False,
                                 preexec_fn=cpu_limit if os.name == "posix" else None)
        except subprocess.TimeoutExpired:
            return f"did not finish within {WALL_FACTOR * limit:g} s of wall time"
    if res.returncode == 0:
        return None
    if res.returncode < 0:  # SIGXCPU (or SIGKILL at the hard limit)
        return f"did not finish within {limit:g} s of CPU time"
    if b"failed to conclude" in res.stdout + res.stderr:
        return "failed to conclude"
    return "was rejected by coqc"


# ---------------------------------------------------------------- derivations


@dataclass(frozen=True, slots=True)
class CseForm:
    """The derivation entries too large to inline, as one program: `steps` ([(symbol,
    definition)] in program order, long definitions split into named parts), `entries`
    ([(identifier, term, label)]) and the leaves they read, in binder order."""

    steps: list
    entries: list
    leaves: list


def definitions(ctx: Ctx, define, comment, cse) -> tuple[list[str], dict]:
    """A Definition per derivation entry, inlined when its estimated inlined size is small
    (`define(ident, params, body, label)`); the other entries share one CSE form, every named
    quantity defined once (`cse(CseForm)`), up to CSE_DEFINITIONS quantities per file: the
    work is linear in the program. Entries beyond that are omitted with a comment
    (`comment(lines)`); the JSON export has them all."""
    blocks, defs, entries, steps, omitted = [], {}, [], [], []
    seen: set = set()
    budget = CSE_DEFINITIONS
    for d in ctx.model.derivations:
        full = False
        for idx, term in jx.flatten(d.terms):
            ident = ctx.names.name(("def", d.name, idx), "_".join([d.name, *map(str, idx)]))
            label = f"{d.kind} {d.name}{list(idx) if idx else ''}"
            inl = jx.safe_inline(ctx.prog, term, jx.INLINE_OPS)
            if inl is not None:
                params = ctx.leaves([inl])
                blocks.append(define(ident, params, inl, label))
                defs[(d.name, idx)] = (ident, params, inl)
                continue
            new = None if full else ctx.prog.new_closure([term], seen, budget)
            if new is None:  # the rest of this derivation is omitted without another walk
                if not full:
                    omitted.append(f"{label} and the entries of {d.name} after it: omitted, "
                                   f"the CSE form here holds at most {CSE_DEFINITIONS} named "
                                   "quantities (the JSON export has them all)")
                full = True
                continue
            budget -= len(new)
            steps += new
            entries.append((ident, term, label))
            defs[(d.name, idx)] = (ident, None, None)
    if entries:
        leaves = set().union(*(ctx.prog.def_leaves(s) for s in steps))
        leaves |= {x for _, t, _ in entries for x in t.free_symbols if x not in ctx.prog.defs}
        form = CseForm(ctx.prog.readable([(s, ctx.prog.defs[s]) for s in steps]), entries,
                       ctx.leaves(leaves))
        blocks.append(cse(form))
    if omitted:
        blocks.append(comment(omitted))
    return blocks, defs


def _coq_definition(ctx: Ctx):
    def define(ident, params, inl, label) -> str:
        args = f" ({' '.join(ctx.sym_name(s) for s in params)} : R)" if params else ""
        return (f"(* {coq_comment_text(label)} *)\nDefinition {ident}{args} : R :=\n"
                f"  {ctx.p(inl)}.\n")
    return define


def _coq_cse(ctx: Ctx):
    """The CSE form as a functor over a module type of the leaves: each named quantity one
    short Definition (a Section would abstract each one over its variables when it closes,
    applying every use to all of them: quadratic in a deep network)."""
    def cse(form: CseForm) -> str:
        names = " ".join(ctx.sym_name(s) for s in form.leaves)
        out = [coq_comment([
            "CSE form: the entries below are too large to inline; each named quantity is "
            "defined once, over the inputs and parameters declared in snn_leaves. "
            "Instantiate snn_cse with a module of values to evaluate them."]),
            "Module Type snn_leaves.", f"  Parameters {names} : R." if names else "",
            "End snn_leaves.", "", "Module snn_cse (L : snn_leaves).", "Import L.", ""]
        for sym, e in form.steps:
            out.append(f"Definition {ctx.sym_name(sym)} : R := {ctx.p(e)}.")
        for ident, term, label in form.entries:
            out.append(f"(* {coq_comment_text(label)} *)\nDefinition {ident} : R := "
                       f"{ctx.p(term)}.")
        out += ["", "End snn_cse.", ""]
        return "\n".join(x for x in out if x is not None)
    return cse


@dataclass(frozen=True, slots=True)
class JacobianClaim:
    """d output_i / d v = jacobian_ij, between two inlined Definitions."""

    name: str  # suggested lemma name
    binders: list  # leaves, v last
    nonzero: list  # printed pre-activations that must be nonzero
    f_call: str  # the output Definition applied to its parameters
    j_call: str
    v: sp.Symbol
    plan: DerivativePlan
    note: str
    ids: tuple  # (output Definition, Jacobian Definition)


def jacobian_claims(ctx: Ctx, defs: dict) -> list[JacobianClaim]:
    """One claim per Jacobian entry whose output and entry are both inlined Definitions."""
    out = []
    for jac, output in jx.jacobian_pairs(ctx.model.derivations):
        for v, o_idx, j_idx in jx.jacobian_entries(jac, output):
            if (output.name, o_idx) not in defs or (jac.name, j_idx) not in defs:
                continue
            f_id, f_params, F = defs[(output.name, o_idx)]
            j_id, j_params, Jt = defs[(jac.name, j_idx)]
            if len(out) >= JACOBIAN_LEMMAS:
                break
            if f_params is None or j_params is None:
                out.append(JacobianClaim(
                    name=f"{j_id}_deriv", binders=[v], nonzero=[], f_call=f_id, j_call=j_id,
                    v=v, plan=DerivativePlan((), "the Definitions are in CSE form (too large "
                                                 "to inline)"), note="", ids=(f_id, j_id)))
                continue
            plan = derivative_plan(F, v, Jt, PROOF_OPS) if F is not None and Jt is not None \
                else DerivativePlan((), "the Definitions are in CSE form (too large to inline)")
            syms = ctx.leaves([*f_params, *j_params], skip=[v])
            note = (f"the Jacobian entry {jac.name}{list(j_idx)} is the derivative of "
                    f"{output.name}{list(o_idx)} in {v.name}")
            out.append(JacobianClaim(
                name=f"{j_id}_deriv", binders=[*syms, v], nonzero=[ctx.p(z) for z in plan.nonzero],
                f_call=ctx.call(f_id, f_params), j_call=ctx.call(j_id, j_params), v=v, plan=plan,
                note=note, ids=(f_id, j_id)))
    return out


def _jacobian_lemmas(ctx: Ctx, defs: dict) -> list[str]:
    """Proved `is_derive` lemmas tying small Jacobian entries to their output Definitions;
    entries the pre-check cannot confirm get a comment only (they are not user claims)."""
    out = []
    for c in jacobian_claims(ctx, defs):
        if c.plan.reason is not None:
            out.append(coq_comment([f"no is_derive lemma for {c.ids[1]}: {c.plan.reason}"]))
            continue
        vn = ctx.sym_name(c.v)
        goal = f"is_derive (fun {vn} : R => {c.f_call}) {vn}\n    ({c.j_call})"
        why = [c.note] + (["stated where the ReLU-style pre-activations are nonzero"]
                          if c.nonzero else [])
        proof = f"  intros.\n  unfold {', '.join(c.ids)}.\n  {DERIVE_TACTIC}"
        premises = [f"{z} <> 0" for z in c.nonzero]
        lemma = ctx.names.name(("jaclemma", c.name), c.name)
        out.append(_lemma(lemma, _statement(ctx, c.binders, premises, goal), proof, why))
    return out


# ---------------------------------------------------------------- obligations and the file


def _obligation(ctx: Ctx, ob: Obligation, verdict: Verdict | None, coqc) -> str:
    """A comment naming the claim and its verdict, then its lemma(s), or only the comment."""
    status = verdict.verdict if verdict is not None else "unknown"
    why = [f"obligation {ob.name} ({ob.kind}): {line}" for line in ob.text.splitlines()]
    why += jx.verdict_note(verdict)
    if status == REFUTED:
        return coq_comment(why + ["not stated as a lemma: the claim is false"])
    prove = status == PROVED
    if not prove:
        why.append("Admitted: the claim was not proved, so this lemma is an open statement")
    try:
        if ob.kind == "identity" and all(is_derivative(a) for a in ob.goal):
            lemmas = [derivative_lemma(ctx, lemma_name(ctx, ob, k), ob, a, prove)
                      for k, a in enumerate(ob.goal[:ATOM_LEMMAS])]
            if len(ob.goal) > ATOM_LEMMAS:
                lemmas.append(coq_comment([(f"entries {ATOM_LEMMAS}..{len(ob.goal) - 1} are "
                                            f"not stated (limit {ATOM_LEMMAS} per claim)")]))
        elif ob.kind == "identity":
            lemmas = [identity_lemma(ctx, lemma_name(ctx, ob), ob, prove)]
        else:
            lemmas = [bound_lemma(ctx, lemma_name(ctx, ob), ob, prove, coqc)]
    except jx.TooLarge as exc:
        return coq_comment(why + [f"not stated: {exc}"])
    return coq_comment(why) + "\n".join(lemmas)


def lemma_name(ctx: Ctx, ob: Obligation, k: int | None = None) -> str:
    """The identifier of an obligation's lemma (`NAME_k` for the k-th of several atoms)."""
    text = ob.name if k is None or len(ob.goal) == 1 else f"{ob.name}_{k}"
    return ctx.names.name(("lemma", ob.name, k), text)


def check_supported(ctx: Ctx) -> None:
    """Refuse, before writing anything, terms that have no Coq form (a located SpecError)."""
    try:
        for sym in ctx.prog.order:
            ctx.p(ctx.prog.defs[sym])
    except UnsupportedTerm as exc:
        raise SpecError(f"the Coq emitter cannot express {exc}") from None
    for ob in ctx.model.obligations:
        try:
            for a in (*ob.goal, *ob.hypotheses):
                ctx.p(a.lhs), ctx.p(a.rhs)
        except UnsupportedTerm as exc:
            raise SpecError(f"the Coq emitter cannot express {exc}", span=ob.span) from None


def render_file(module: str, model_name: str, derivations: str, obligations: str,
                source: str = "") -> str:
    """The file: header comment (file, source and model names neutralised), prelude, body."""
    return render("coq.v.j2", file=f"{module}.v", source=coq_comment_text(source or "(none)"),
                  model=coq_comment_text(model_name),
                  derivations=derivations.rstrip() or "(* none *)",
                  obligations=obligations.rstrip() or "(* none *)")


_LAST: list = []  # [(model, verdicts, coqc, files)]: the JSON export counts this file's proofs


def emit(model: Model, verdicts: list[Verdict], *, coqc: str | None = "auto") -> dict[str, str]:
    """{`NAME.v`: text}. `coqc`: the binary used to confirm interval proofs ("auto": look it
    up on PATH; None: never run it, so bound lemmas stay Admitted). The last result is kept:
    the JSON export of the same model and verdicts reads its counts from the same text
    (emitting twice would also run the interval confirmations twice)."""
    if coqc == "auto":
        coqc = shutil.which("coqc")
    verdicts = list(verdicts)
    if _LAST and _LAST[0][0] is model and _LAST[0][1] == verdicts and _LAST[0][2] == coqc:
        return dict(_LAST[0][3])
    files = _emit(model, verdicts, coqc)
    _LAST[:] = [(model, verdicts, coqc, files)]
    return dict(files)


def emitted(model: Model, verdicts: list[Verdict], *, coqc: str | None = "auto") -> bool:
    """Whether the `.v` file of this model and verdicts was just emitted (and is kept)."""
    if coqc == "auto":
        coqc = shutil.which("coqc")
    return bool(_LAST) and _LAST[0][0] is model and _LAST[0][1] == list(verdicts) \
        and _LAST[0][2] == coqc


def _emit(model: Model, verdicts: list[Verdict], coqc: str | None) -> dict[str, str]:
    ctx = Ctx(model)
    check_supported(ctx)
    module = module_name(model.name)
    blocks, defs = definitions(ctx, _coq_definition(ctx), coq_comment, _coq_cse(ctx))
    blocks += _jacobian_lemmas(ctx, defs)
    by_name = {v.name: v for v in verdicts}
    obs = [_obligation(ctx, ob, by_name.get(ob.name), coqc) for ob in model.obligations]
    text = render_file(module, printable(model.name), "\n".join(blocks), "\n".join(obs),
                       file_label(model.source_path) if model.source_path else "")
    return {f"{module}.v": wrap(text, comment="(*")}
