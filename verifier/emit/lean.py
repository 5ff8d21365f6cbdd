"""Lean 4 + Mathlib: statements of the obligations and derivations (golden-tested here).

No Lean toolchain is installable in this environment, so the output keeps to Mathlib names
that exist (`Real.tanh`, `Real.exp`, `Real.log`, `HasDerivAt`, `Set.Icc`) and proves nothing
that needs checking: a goal gets `by ring` only when the sympy pre-check shows it is a ring
identity over opaque applications (what `ring` decides); everything else is `sorry`, with a
comment naming the engine that decided the claim. Derivative claims are `HasDerivAt`
statements with explicit side conditions (`z ≠ 0` for every ReLU pre-activation z).
"""

from __future__ import annotations

from typing import ClassVar

import sympy as sp

from ..diagnostics import SpecError
from ..engines.verdict import PROVED, REFUTED, Verdict
from ..obligations import Atom, Model, Obligation
from . import json_export as jx
from .coq import (
    APP,
    ATOM,
    ATOM_LEMMAS,
    CoqPrinter,
    Ctx,
    UnsupportedTerm,
    definitions,
    derivative_plan,
    is_derivative,
    jacobian_claims,
    ring_identity,
)
from .names import file_label, ident, lean_comment_text, lean_reserved, printable
from .templating import render, wrap

LEAN_RESERVED = lean_reserved()  # keywords, the names our text refers to, the prelude's

PROOF_OPS = 300  # `by ring` only on small identities


class LeanPrinter(CoqPrinter):
    """sympy -> Lean 4 / Mathlib real terms (same binding levels as Coq's notation)."""

    functions: ClassVar[dict[str, str]] = {
        "tanh": "Real.tanh", "exp": "Real.exp", "log": "Real.log", "sigmoid": "nnSigmoid",
        "softplus": "nnSoftplus", "relu": "nnRelu", "step": "nnStep",
        "leaky_relu": "nnLeakyRelu", "leaky_step": "nnLeakyStep", "Max": "max", "Min": "min",
        "sqrt": "Real.sqrt",
    }
    e_text, pi_text = "(Real.exp 1)", "Real.pi"

    def _print_Abs(self, e):
        return f"|{self._print(e.args[0])}|"

    def real_power(self, b, x) -> str:
        return f"{self.wrap(b, APP)} ^ ({self._print(x)} : ℝ)"

    def branch(self, c, then: str, other: str) -> str:
        return f"if {self.condition(c)} then {then} else {other}"

    def condition(self, c) -> str:
        """A decidable proposition: comparisons joined by ∧, ∨, ¬."""
        if isinstance(c, (sp.And, sp.Or)):
            op = " ∧ " if isinstance(c, sp.And) else " ∨ "
            return op.join(f"({self.condition(a)})" for a in c.args)
        if isinstance(c, sp.Not):
            return f"¬({self.condition(c.args[0])})"
        op = {"LessThan": "≤", "StrictLessThan": "<", "GreaterThan": "≥",
              "StrictGreaterThan": ">", "Equality": "=", "Unequality": "≠"}.get(type(c).__name__)
        if op is None:
            raise UnsupportedTerm(f"the condition {c}")
        return f"{self._print(c.lhs)} {op} {self._print(c.rhs)}"


class LeanCtx(Ctx):
    """Lean identifiers, printer and notation for one file (see `coq.Ctx`)."""

    reserved = LEAN_RESERVED
    printer_class = LeanPrinter
    ops: ClassVar[dict[str, str]] = {
        "==": "=", "!=": "≠", "<=": "≤", "<": "<", ">=": "≥", ">": ">"}

    def range_text(self, lo, name, hi) -> str:
        parts = ([f"{lo} ≤ {name}"] if lo is not None else []) + \
            ([f"{name} ≤ {hi}"] if hi is not None else [])
        return " ∧ ".join(parts)


def lean_comment(lines) -> str:
    """`--` comment lines, each neutralised by `names.lean_comment_text`."""
    return "".join(f"-- {lean_comment_text(ln)}\n" for ln in lines)


def _theorem(ctx: LeanCtx, name: str, syms, premises, goal: str, proof: str | None,
             why) -> str:
    binders = f" ({' '.join(ctx.sym_name(s) for s in syms)} : ℝ)" if syms else ""
    hyps = "".join(f"\n    (snn_h{k} : {p})" for k, p in enumerate(premises))
    return (f"{lean_comment(why)}theorem {name}{binders}{hyps} :\n    {goal} := by\n"
            f"  {proof or 'sorry'}\n")


def _derivative(ctx: LeanCtx, name: str, ob: Obligation, atom: Atom, why) -> str:
    _, f, v = atom.origin
    F, rhs = ctx.inline(f), ctx.inline(atom.rhs)
    plan = derivative_plan(F, v, rhs, PROOF_OPS)
    syms, premises = ctx.quantified(ob, [F, rhs], skip=[v])
    premises += [p for p in ctx.premises(ob, [v]) if p not in premises]
    premises += [f"{ctx.p(z)} ≠ 0" for z in plan.nonzero]
    vn = ctx.sym_name(v)
    goal = f"HasDerivAt (fun {vn} : ℝ => {ctx.p(F)})\n      ({ctx.p(rhs)}) {vn}"
    return _theorem(ctx, name, [*syms, v], premises, goal, None, why)


def _identity(ctx: LeanCtx, name: str, ob: Obligation, why, proved: bool) -> str:
    syms, premises = ctx.quantified(ob, [t for a in ob.goal for t in (a.lhs, a.rhs)])
    goal = " ∧\n    ".join(ctx.atom(a) for a in ob.goal)
    ring = proved and all(
        a.op == "==" and ring_identity(ctx.inline(a.lhs), ctx.inline(a.rhs), PROOF_OPS,
                                       positive_denominators=False)  # ring: no cancellation
        for a in ob.goal)
    proof = None
    if ring:
        proof = "ring" if len(ob.goal) == 1 else \
            f"refine ⟨{', '.join(['?_'] * len(ob.goal))}⟩ <;> ring"
    return _theorem(ctx, name, syms, premises, goal, proof, why)


def _bound(ctx: LeanCtx, name: str, ob: Obligation, why) -> str:
    """`∀ x ∈ Set.Icc lo hi, ... goal`; variables without a box become theorem binders."""
    syms, _ = ctx.quantified(ob, [t for a in ob.goal for t in (a.lhs, a.rhs)])
    dom = {v.symbol: v for v in ob.variables}
    boxed = [s for s in syms if s in dom and dom[s].lo is not None and dom[s].hi is not None]
    free = [s for s in syms if s not in boxed]
    head = [f"∀ {ctx.sym_name(s)} ∈ Set.Icc ({ctx.p(dom[s].lo)} : ℝ) "
            f"{ctx.printer.wrap(dom[s].hi, ATOM)}," for s in boxed]
    head += [f"{p} →" for p in ctx.premises(ob, free)]  # one-sided ranges, hypotheses
    goal = " ∧ ".join(ctx.atom(a) for a in ob.goal)
    return _theorem(ctx, name, free, [], "\n    ".join([*head, goal]), None, why)


def _obligation(ctx: LeanCtx, ob: Obligation, verdict: Verdict | None) -> str:
    status = verdict.verdict if verdict is not None else "unknown"
    why = [f"obligation {ob.name} ({ob.kind}): {line}" for line in ob.text.splitlines()]
    why += jx.verdict_note(verdict)
    if status == REFUTED:
        return lean_comment(why + ["not stated as a theorem: the claim is false"])
    if status != PROVED:
        why.append("open: the claim was not proved")
    try:
        if ob.kind == "identity" and all(is_derivative(a) for a in ob.goal):
            out = [_derivative(ctx, ctx.names.name(("thm", ob.name, k), _label(ob, k)), ob, a,
                               why if k == 0 else [])
                   for k, a in enumerate(ob.goal[:ATOM_LEMMAS])]
            if len(ob.goal) > ATOM_LEMMAS:
                out.append(lean_comment([(f"entries {ATOM_LEMMAS}..{len(ob.goal) - 1} are not "
                                          f"stated (limit {ATOM_LEMMAS} per claim)")]))
            return "\n".join(out)
        name = ctx.names.name(("thm", ob.name, 0), ob.name)
        if ob.kind == "identity":
            return _identity(ctx, name, ob, why, status == PROVED)
        return _bound(ctx, name, ob, why)
    except jx.TooLarge as exc:
        return lean_comment(why + [f"not stated: {exc}"])


def _label(ob: Obligation, k: int) -> str:
    return ob.name if len(ob.goal) == 1 else f"{ob.name}_{k}"


def _define(ctx: LeanCtx):
    def define(ident, params, inl, label) -> str:
        args = f" ({' '.join(ctx.sym_name(s) for s in params)} : ℝ)" if params else ""
        return f"-- {lean_comment_text(label)}\ndef {ident}{args} : ℝ :=\n  {ctx.p(inl)}\n"
    return define


def _cse(ctx: LeanCtx):
    """The CSE form: a structure of the leaves, and one short def per named quantity taking
    the leaves as its argument `snn_p` (uses of earlier quantities are applied to it)."""
    def cse(form) -> str:
        named = {s for s, _ in form.steps}
        printer = LeanPrinter(lambda s: f"({ctx.sym_name(s)} snn_p)" if s in named
                              else f"snn_p.{ctx.sym_name(s)}")
        fields = " ".join(ctx.sym_name(s) for s in form.leaves)
        out = [lean_comment([
            "CSE form: the entries below are too large to inline; each named quantity is "
            "defined once, as a function of the inputs and parameters (the fields of "
            "snn_leaves)."]).rstrip("\n"),
            "structure snn_leaves where", "  snn_mk ::"]
        out += [f"  ({fields} : ℝ)"] if fields else []
        out.append("")
        for sym, e in form.steps:
            out.append(f"def {ctx.sym_name(sym)} (snn_p : snn_leaves) : ℝ :=\n  "
                       f"{printer.doprint(e)}")
        for ident, term, label in form.entries:
            out.append(f"-- {lean_comment_text(label)}\ndef {ident} (snn_p : snn_leaves) : ℝ :="
                       f"\n  {printer.doprint(term)}")
        return "\n".join(out) + "\n"
    return cse


def _jacobian_theorems(ctx: LeanCtx, defs: dict) -> list[str]:
    """`HasDerivAt` statements for the Jacobian entries that the Coq file proves."""
    out = []
    for c in jacobian_claims(ctx, defs):
        if c.plan.reason is not None:
            continue
        vn = ctx.sym_name(c.v)
        goal = f"HasDerivAt (fun {vn} : ℝ => {c.f_call})\n      ({c.j_call}) {vn}"
        why = [c.note, "proved by auto_derive in the Coq file emitted alongside"]
        thm = ctx.names.name(("jacthm", c.name), c.name)
        out.append(_theorem(ctx, thm, c.binders, [f"{z} ≠ 0" for z in c.nonzero], goal, None,
                            why))
    return out


def module_name(model_name: str) -> str:
    """The Lean file and namespace name for a model."""
    name = ident(model_name)
    return f"{name}_model" if name in LEAN_RESERVED or name.startswith("snn_") else name


def emit(model: Model, verdicts: list[Verdict]) -> dict[str, str]:
    """{`NAME.lean`: text} with the model's derivations and obligations as Lean statements."""
    ctx = LeanCtx(model)
    try:
        blocks, defs = definitions(ctx, _define(ctx), lean_comment, _cse(ctx))
        blocks += _jacobian_theorems(ctx, defs)
        by_name = {v.name: v for v in verdicts}
        obs = [_obligation(ctx, ob, by_name.get(ob.name)) for ob in model.obligations]
    except UnsupportedTerm as exc:  # e.g. gelu's normal_cdf, which has no Mathlib name here
        raise SpecError(f"the Lean emitter cannot express {exc}") from None
    name = module_name(model.name)
    text = render("lean.lean.j2", file=f"{name}.lean", namespace=name,
                  source=lean_comment_text(file_label(model.source_path)),
                  model=lean_comment_text(printable(model.name)),
                  derivations="\n".join(blocks).rstrip() or "-- none",
                  obligations="\n".join(obs).rstrip() or "-- none")
    return {f"{name}.lean": wrap(text, comment="--")}
