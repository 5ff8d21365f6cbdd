"""SMT-LIB 2.6 for obligations: the exact text z3 is given and the file users re-check.

Piecewise-linear functions (relu, leaky_relu, their steps, abs, max, min, Piecewise, and sign
and Heaviside with sympy's value at 0) become `ite`;
integer powers become products; numerals are real literals with `(- n)` for negatives.
Smooth functions (tanh, sigmoid, softplus, exp, log) are opaque to z3, so each application is
declared as a fresh real *atom*, constrained by the function's range and by whatever sound
enclosure the caller supplies. Named intermediate quantities are `define-fun`s in program
order, so the file has the size of the program, not of the inlined term.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import sympy as sp
from sympy.printing.smtlib import SMTLibPrinter

if hasattr(sys, "set_int_max_str_digits"):
    sys.set_int_max_str_digits(0)  # exact numerals may be long; they are ours to print

from ..layers.activations import (
    SMOOTH_FUNCTIONS,
    sigmoid,
    softplus,
)
from ..obligations import Atom, Obligation
from ..symbolic.program import Program
from .names import smt_comment_text, smt_symbol
from .templating import wrap

_RANGES = {  # sound range facts for atoms: (lo, lo_strict, hi, hi_strict)
    sp.tanh: (-1, True, 1, True),
    sigmoid: (0, True, 1, True),
    softplus: (0, True, None, False),
    sp.exp: (0, True, None, False),
}


def smt_name(name: str) -> str:
    """A quoted SMT-LIB symbol for any of our names (`names.smt_symbol`: injective)."""
    return smt_symbol(name)


def real_literal(q) -> str:
    q = sp.Rational(q)
    if q.q == 1:
        body = f"{abs(q.p)}.0"
    else:
        body = f"(/ {abs(q.p)}.0 {q.q}.0)"
    return f"(- {body})" if q < 0 else body


class SmtPrinter(SMTLibPrinter):
    """sympy → SMT-LIB terms that z3 accepts (no `pow`, `max` or negative literals)."""

    def __init__(self, names: dict[sp.Basic, str], root_atom=None):
        super().__init__({"known_functions": {}})
        self.names = names  # symbols and atom applications → SMT names
        self.root_atom = root_atom  # (base, q, strict) → SMT name of its declared q-th root

    def _print(self, expr, **kwargs):
        hit = self.names.get(expr)
        if hit is not None:
            return hit
        return super()._print(expr, **kwargs)

    def _print_Symbol(self, x):
        return smt_name(x.name)

    def _print_Integer(self, x):
        return real_literal(x)

    def _print_Rational(self, x):
        return real_literal(x)

    def _print_Float(self, x):
        return real_literal(sp.Rational(str(x)))

    def _print_Add(self, e):
        return self._s_expr("+", sorted(e.args, key=sp.default_sort_key))

    def _print_Mul(self, e):
        args = e.args
        if len(args) == 2 and args[0].is_Rational and args[1].is_Symbol:
            # a weight times a symbol, the bulk of a trained network: the general path's text
            # without sympy's as_numer_denom
            c, x = args
            p, q = int(c.p), int(c.q)
            num = (self._print(x) if p == 1 else f"(- {self._print(x)})" if p == -1
                   else self._s_expr("*", [sp.Integer(p), x]))
            return num if q == 1 else f"(/ {num} {self._print(sp.Integer(q))})"
        num, den = e.as_numer_denom()
        if den != 1:
            return f"(/ {self._print(num)} {self._print(den)})"
        args = list(e.args)
        if args[0] == -1:
            return f"(- {self._print(sp.Mul(*args[1:]))})"
        return self._s_expr("*", args)

    def _print_Pow(self, e):
        base, ex = e.args
        if ex.is_Rational and not ex.is_Integer and self.root_atom is not None:
            # b^(p/q) is exact in real arithmetic: s^p for a fresh s with s >= 0 and s^q = b
            root = self.root_atom(base, int(ex.q), bool(ex < 0))
            power = root if abs(ex.p) == 1 else f"(* {' '.join([root] * abs(int(ex.p)))})"
            return power if ex.p > 0 else f"(/ 1.0 {power})"
        if ex.is_Integer and ex > 0:
            return "(* " + " ".join([self._print(base)] * int(ex)) + ")"
        if ex.is_Integer and ex < 0:
            return f"(/ 1.0 {self._print(base ** -ex)})"
        raise NotImplementedError(f"power {e} has no SMT-LIB form")

    def _ite(self, cond, a, b):
        return f"(ite {cond} {a} {b})"

    def _print_relu(self, e):
        x = self._print(e.args[0])
        return self._ite(f"(> {x} 0.0)", x, "0.0")

    def _print_step(self, e):
        x = self._print(e.args[0])
        return self._ite(f"(> {x} 0.0)", "1.0", "0.0")

    def _print_leaky_relu(self, e):
        x, a = (self._print(v) for v in e.args)
        return self._ite(f"(> {x} 0.0)", x, f"(* {a} {x})")

    def _print_leaky_step(self, e):
        x, a = (self._print(v) for v in e.args)
        return self._ite(f"(> {x} 0.0)", "1.0", a)

    def _print_Abs(self, e):
        x = self._print(e.args[0])
        return self._ite(f"(>= {x} 0.0)", x, f"(- {x})")

    def _print_Max(self, e):
        out = self._print(e.args[0])
        for a in e.args[1:]:
            y = self._print(a)
            out = self._ite(f"(>= {out} {y})", out, y)
        return out

    def _print_Min(self, e):
        out = self._print(e.args[0])
        for a in e.args[1:]:
            y = self._print(a)
            out = self._ite(f"(<= {out} {y})", out, y)
        return out

    def _print_sign(self, e):
        x = self._print(e.args[0])
        return self._ite(f"(> {x} 0.0)", "1.0", self._ite(f"(< {x} 0.0)", "(- 1.0)", "0.0"))

    def _print_Heaviside(self, e):
        x = self._print(e.args[0])
        at0 = self._print(e.args[1]) if len(e.args) > 1 else real_literal(sp.Rational(1, 2))
        return self._ite(f"(> {x} 0.0)", "1.0", self._ite(f"(< {x} 0.0)", "0.0", at0))

    def _print_Piecewise(self, e):
        out = None
        for expr, cond in reversed(e.args):
            if out is None:
                if cond is not sp.true:
                    raise NotImplementedError("Piecewise without a default branch")
                out = self._print(expr)
            else:
                out = self._ite(self._print(cond), self._print(expr), out)
        return out

    def _print_Relational(self, e):
        op = {"==": "=", "<=": "<=", "<": "<", ">=": ">=", ">": ">"}.get(e.rel_op)
        if e.rel_op == "!=":
            return f"(not (= {self._print(e.lhs)} {self._print(e.rhs)}))"
        return f"({op} {self._print(e.lhs)} {self._print(e.rhs)})"

    def _print_BooleanTrue(self, e):
        return "true"

    def _print_BooleanFalse(self, e):
        return "false"

    def _print_And(self, e):
        return self._s_expr("and", e.args)

    def _print_Or(self, e):
        return self._s_expr("or", e.args)

    def _print_Not(self, e):
        return self._s_expr("not", e.args)

    def _print_Function(self, e):
        raise NotImplementedError(f"function {e.func} has no SMT-LIB form")


_OP = {"==": "=", "<=": "<=", "<": "<", ">=": ">=", ">": ">"}


@dataclass
class SmtQuery:
    """An SMT-LIB text and how its names map back to ours."""

    text: str
    variables: dict[str, sp.Symbol]  # SMT name → leaf symbol
    atoms: dict[str, sp.Expr] = field(default_factory=dict)  # SMT name → smooth application


def atom_applications(exprs) -> list[sp.Expr]:
    """Smooth function applications in the expressions, innermost first, deterministic."""
    found: dict[sp.Expr, None] = {}
    stack = list(exprs)
    seen = set()
    while stack:
        e = stack.pop()
        if e in seen:
            continue
        seen.add(e)
        if isinstance(e, SMOOTH_FUNCTIONS):
            found[e] = None
        stack.extend(e.args)
    return sorted(found, key=lambda a: (sp.count_ops(a), sp.default_sort_key(a)))


def print_atom(printer: SmtPrinter, atom: Atom) -> str:
    lhs, rhs = printer._print(atom.lhs), printer._print(atom.rhs)
    if atom.op == "!=":
        return f"(not (= {lhs} {rhs}))"
    return f"({_OP[atom.op]} {lhs} {rhs})"


def _bound(name: str, lo, lo_strict: bool, hi, hi_strict: bool) -> list[str]:
    out = []
    if lo is not None:
        out.append(f"({'<' if lo_strict else '<='} {real_literal(lo)} {name})")
    if hi is not None:
        out.append(f"({'<' if hi_strict else '<='} {name} {real_literal(hi)})")
    return out


def known_sign(program: Program, e, memo: dict, depth: int = 3) -> str | None:
    """"positive" or "nonnegative" when sympy's sign rules show it of `e` for every real value
    of the leaves (a variance plus an epsilon: a sum of squares and a positive constant), with
    the program's quantities replaced by symbols carrying the sign shown of their definitions,
    `depth` definitions deep; None where the rules do not show it."""
    e = sp.sympify(e)
    if e.is_positive:
        return "positive"
    sub = {}
    if depth > 0:
        for sym in e.free_symbols:
            if sym in program.defs:
                if sym not in memo:
                    memo[sym] = known_sign(program, program.defs[sym], memo, depth - 1)
                if memo[sym] is not None:
                    sub[sym] = sp.Dummy(**{memo[sym]: True})
    if sub:
        e = e.xreplace(sub)
        if e.is_positive:
            return "positive"
    return "nonnegative" if e.is_nonnegative else None


def encode(
    ob: Obligation,
    program: Program,
    *,
    enclosures: dict[sp.Expr, list[tuple[str, sp.Expr]]] | None = None,
    atom_key=None,
    extra_bounds: dict[sp.Symbol, tuple] | None = None,
    note: str = "",
) -> SmtQuery:
    """The negated obligation as a standalone SMT-LIB script: `unsat` means it holds.

    enclosures: per atom application, extra constraints `(op, bound)` on its value, where
        bound is a linear sympy term over program symbols and leaves (sound envelopes).
    atom_key: maps an atom application to a canonical key; applications with equal keys
        share one SMT constant (used by the identity engine).
    extra_bounds: tighter boxes for variables (branch-and-bound leaves).
    """
    terms = [a.lhs for a in ob.goal] + [a.rhs for a in ob.goal]
    terms += [a.lhs for a in ob.hypotheses] + [a.rhs for a in ob.hypotheses]
    for cons in (enclosures or {}).values():
        terms += [b for _, b in cons]
    steps = program.slice(terms)
    leaves = sorted(program.leaves(terms), key=lambda s: s.name)
    names: dict[sp.Basic, str] = {}
    atoms_by_key: dict = {}
    atoms: dict[str, sp.Expr] = {}
    roots: dict[tuple, str] = {}
    outside: dict[sp.Expr, bool] = {}  # base of a real power -> its domain excludes 0

    signs: dict = {}

    def root_atom(base, q: int, strict: bool) -> str:
        """The q-th root of `base`, defined by its polynomial where base >= 0; unless the
        base's sign shows it is inside the power's domain everywhere, the negated goal also
        admits a point outside it (base < 0, or base <= 0 for a negative exponent), so no box
        reaching there is closed."""
        b = printer._print(base)
        sign = known_sign(program, base, signs)
        inside = sign == "positive" or (sign == "nonnegative" and not strict)
        if not inside:
            outside[b] = outside.get(b, False) or strict
        if (base, q) not in roots:
            name = smt_name(f"sqrt#{len(roots) + 1}" if q == 2 else f"root{q}#{len(roots) + 1}")
            roots[(base, q)] = name
            what = "sqrt" if q == 2 else f"root{q}"
            lines.append(f"(declare-const {name} Real)  ; {what}({_short(base)})")
            power = f"(* {' '.join([name] * q)})"
            root = f"(and (<= 0.0 {name}) (= {power} {b}))"
            pending.append(root if sign else f"(=> (<= 0.0 {b}) {root})")
        return roots[(base, q)]

    printer = SmtPrinter(names, root_atom)
    lines = [
        f"; {smt_comment_text(f'obligation {ob.name} ({ob.kind})')}",
        *[f"; {smt_comment_text(line)}" for line in ob.text.splitlines()],
    ]
    if note:
        lines += [f"; {smt_comment_text(line)}" for line in note.splitlines()]
    lines += ["; unsat means the claim holds", "(set-logic QF_NRA)"]
    domain = {v.symbol: v for v in ob.variables}
    for leaf in leaves:
        lines.append(f"(declare-const {smt_name(leaf.name)} Real)")
    for leaf in leaves:
        v = domain.get(leaf)
        lo, hi = (v.lo, v.hi) if v is not None else (None, None)
        if extra_bounds and leaf in extra_bounds:
            lo, hi = extra_bounds[leaf]
        cons = _bound(smt_name(leaf.name), lo, False, hi, False)
        if cons:
            lines.append(f"(assert (and {' '.join(cons)}))" if len(cons) > 1 else f"(assert {cons[0]})")
    pending: list[str] = []
    atom_count = 0

    def declare_atoms(expr):
        nonlocal atom_count
        for app in atom_applications([expr]):
            if app in names:
                continue
            key = atom_key(app) if atom_key else app
            if key in atoms_by_key:
                names[app] = atoms_by_key[key]
                continue
            atom_count += 1
            name = smt_name(f"{type(app).__name__}#{atom_count}")
            names[app] = name
            atoms_by_key[key] = name
            atoms[name] = app
            lines.append(f"(declare-const {name} Real)  ; {app.func}({_short(app.args[0])})")
            lo, lo_s, hi, hi_s = _RANGES.get(app.func, (None, False, None, False))
            pending.extend(_bound(name, lo, lo_s, hi, hi_s))

    for sym, d in steps:
        if isinstance(d, SMOOTH_FUNCTIONS):
            declare_atoms(d.args[0])
            declare_atoms(d)
            names[sym] = names[d]
            continue
        declare_atoms(d)
        lines.append(f"(define-fun {smt_name(sym.name)} () Real {printer._print(d)})")
    for t in terms:
        declare_atoms(t)
    for c in pending:
        lines.append(f"(assert {c})")
    for app, cons in sorted((enclosures or {}).items(), key=lambda kv: sp.default_sort_key(kv[0])):
        name = names.get(app)
        if name is None:
            continue
        for op, b in cons:
            lines.append(f"(assert ({op} {name} {printer._print(b)}))")
    for h in ob.hypotheses:
        lines.append(f"(assert {print_atom(printer, h)})")
    negs = [print_atom(printer, a.negated()) for a in ob.goal]
    negs += [f"({'<=' if strict else '<'} {b} 0.0)" for b, strict in sorted(outside.items())]
    lines.append(f"(assert (or {' '.join(negs)}))" if len(negs) > 1 else f"(assert {negs[0]})")
    lines.append("(check-sat)")
    variables = {smt_name(s.name).strip("|"): s for s in leaves}
    text = wrap("\n".join(lines) + "\n", comment=";", quotes="|")
    return SmtQuery(text=text, variables=variables, atoms=atoms)


def _short(e: sp.Expr) -> str:
    """A term for a comment: one printable line of at most 60 characters."""
    s = smt_comment_text(str(e))
    return s if len(s) <= 60 else s[:57] + "..."


def file_name(model_name: str, obligation: str) -> str:
    return f"{safe_file_part(model_name)}.{safe_file_part(obligation)}.smt2"


def safe_file_part(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "_"


def emit(model, verdicts) -> dict[str, str]:
    """One standalone .smt2 per obligation: exactly the text z3 answered for the verdict."""
    files = {}
    for v in verdicts:
        if v.smt is None:
            continue
        files[file_name(model.name, v.name)] = v.smt
        stem = file_name(model.name, v.name)[: -len(".smt2")]
        # branch and bound: one standalone file per box that z3 closed
        for k, leaf in enumerate(v.details.get("smt_leaves") or []):
            if leaf != v.smt:
                files[f"{stem}.box{k}.smt2"] = leaf
        # a case split: one file per case that z3 excluded (unsat)
        for k, case in enumerate(v.details.get("smt_cases") or []):
            files[f"{stem}.case{k}.smt2"] = case
    return files
