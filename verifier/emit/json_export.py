"""JSON export: a superset of the reference export, and the model view other emitters share.

Top-level keys: `model`, `input_symbols`, `parameter_count`, `output`, `jacobian`, `hessian`
(as in the reference export; terms in the CSE names), plus `cse` (the named intermediate
quantities those terms need, in program order), `closed_form` (fully inlined terms, or why they
were omitted), `derivations` (all of them, by name, with shape), `parameter_symbols`, `source`
and `obligations` (each verdict with the claim text, and under `proofs` its lemmas in the
Coq and Lean files: `coq_qed`, `coq_admitted`, `lean_sorry`, `admitted_reasons`). Numbers are exact strings; output is
deterministic (sorted keys, no timings, no absolute paths).
"""

from __future__ import annotations

import json
import math
from pathlib import PurePath

import sympy as sp
from sympy.core.exprtools import decompose_power
from sympy.printing.precedence import precedence
from sympy.printing.str import StrPrinter

from ..diagnostics import SpecError
from ..engines.verdict import PROVED, REFUTED, Verdict
from ..obligations import Derivation, Model
from ..symbolic.program import Program
from .names import encodable, ident, printable

INLINE_OPS = 1000  # inlined terms above this size are shown in CSE form by the proof emitters
_REFERENCE_KINDS = {"output": ("output",), "jacobian": ("jacobian",),
                    "hessian": ("hessian", "hessian_diagonal")}


class TooLarge(Exception):
    """A term whose inlined form exceeds the program's inline limit."""


def safe_inline(program: Program, expr, limit: int | None = None):
    """`program.inline(expr)`, or None when the inlined term would be too large. With a
    limit, a term whose estimated inlined size is far above it is refused without walking
    the program behind it (`Program.inlined_size`), so asking costs little for a large net."""
    if limit is None:
        try:
            return program.inline(expr)
        except SpecError:
            return None
    out = program.inline_small(expr, limit)
    if out is None or (expr in program.defs and getattr(expr, "is_Symbol", False)):
        return out  # a program symbol's inlined form was measured against `limit` by inline
    return None if sp.count_ops(out) > limit else out


def flatten(terms, prefix: tuple = ()) -> list[tuple[tuple, sp.Expr]]:
    """[(index, term)] of a nested tuple of terms, in row-major order; a scalar has index ()."""
    if isinstance(terms, (tuple, list)):
        return [item for k, t in enumerate(terms) for item in flatten(t, (*prefix, k))]
    return [(prefix, sp.sympify(terms))]


def nested(terms, fn):
    """Apply `fn` to every term of a nested tuple, keeping the nesting as lists."""
    if isinstance(terms, (tuple, list)):
        return [nested(t, fn) for t in terms]
    return fn(sp.sympify(terms))


def leaf_order(model: Model) -> dict[sp.Symbol, int]:
    """Inputs then parameters, in declaration order: the order of binders in lemmas."""
    return {v.symbol: k for k, v in enumerate((*model.inputs, *model.params))}


def one_line(text: str) -> str:
    """One printable line (`names.printable`): for comments and table cells."""
    return printable(text)


def artifact_label(artifact: str | None) -> str | None:
    """What backs a verdict, without absolute paths (a file is named by its base name)."""
    if artifact is None:
        return None
    return PurePath(artifact).name if PurePath(artifact).is_absolute() else one_line(artifact)


def verdict_detail(v: Verdict | None, missing: str, backed: str) -> str:
    """One phrase for a verdict table: the counterexample, else the reason, else what backs it
    (`backed` + the artifact); `missing` where there is no verdict."""
    if v is None:
        return missing
    if v.counterexample:
        return "counterexample: " + ", ".join(
            f"{k} = {val}" for k, val in sorted(v.counterexample.items()))
    if v.reason:
        return v.reason
    return f"{backed}{artifact_label(v.artifact)}" if v.artifact else ""


NOTE_WIDTH = 150  # a note line longer than this (a counterexample) continues on more lines


def _note_lines(line: str) -> list[str]:
    """`line` broken after its commas into lines of about NOTE_WIDTH characters, the
    continuation lines indented by two spaces."""
    if len(line) <= NOTE_WIDTH:
        return [line]
    out, cur = [], ""
    for piece in line.split(", "):
        if cur and len(cur) + len(piece) + 2 > NOTE_WIDTH:
            out.append(cur + ",")
            cur = "  " + piece
        else:
            cur = f"{cur}, {piece}" if cur else piece
    return [*out, cur]


def verdict_note(v: Verdict | None) -> list[str]:
    """Comment lines saying who decided an obligation and how (long ones broken)."""
    return [part for line in _verdict_note(v) for part in _note_lines(line)]


def _verdict_note(v: Verdict | None) -> list[str]:
    if v is None:
        return ["verdict: none was computed"]
    art = artifact_label(v.artifact)
    if v.verdict == PROVED:
        return [f"verdict: proved by {v.engine}" + (f" (artifact: {art})" if art else "")]
    if v.verdict == REFUTED:
        point = ", ".join(f"{k} = {val}" for k, val in sorted((v.counterexample or {}).items()))
        lines = [f"verdict: refuted by {v.engine}; counterexample: {point or '(none given)'}"]
        if v.violation:
            lines.append("violation: " + ", ".join(
                f"{k} = {one_line(val)}" for k, val in sorted(v.violation.items())))
        return lines
    return [f"verdict: unknown ({v.engine}): {one_line(v.reason or 'no reason given')}"]


def jacobian_pairs(derivations) -> list[tuple[Derivation, Derivation]]:
    """(jacobian, output) pairs: the Jacobian's shape is the output's shape followed by the
    shape of what it is taken with respect to (the first output that fits)."""
    outputs = [d for d in derivations if d.kind == "output"]
    pairs = []
    for jac in (d for d in derivations if d.kind == "jacobian" and d.wrt):
        for o in outputs:
            n = len(o.shape)
            if tuple(jac.shape[:n]) == tuple(o.shape) and \
                    math.prod(jac.shape[n:]) == len(jac.wrt):
                pairs.append((jac, o))
                break
    return pairs


def jacobian_entries(jac: Derivation, output: Derivation):
    """(wrt symbol, output index, Jacobian index) for every Jacobian entry."""
    n = len(output.shape)
    for idx, _ in flatten(jac.terms):
        flat = 0
        for k, size in zip(idx[n:], jac.shape[n:]):
            flat = flat * size + k
        yield jac.wrt[flat], tuple(idx[:n]), idx


# ---------------------------------------------------------------- the export


# ---------------------------------------------------------------- fast term printing
#
# A Hessian program has tens of thousands of definitions, and sympy's printers spend a few
# hundred microseconds on each (most of it ordering terms). The printers here give the same
# text as sympy's (`sstr(e, order="lex")`, `latex(e, order="lex")`) on the sums and products
# that programs consist of: they reproduce sympy's term and factor order and its layout rules,
# print every other sub-term with sympy itself (memoised: a factor such as `1 - a**2` recurs in
# many definitions), and hand whole terms of any other shape to sympy.


class Unsupported(Exception):
    """A term outside the shapes the fast printers reproduce: sympy prints it."""


_SORT_KEYS: dict = {}


def _default_key(e):
    key = _SORT_KEYS.get(e)
    if key is None:
        key = _SORT_KEYS[e] = e.sort_key()
        if len(_SORT_KEYS) > 1 << 16:
            _SORT_KEYS.clear()
    return key


def _complex(e) -> complex:
    """complex(e) as sympy's `as_terms` takes it (numerically), memoised per number."""
    out = _SORT_KEYS.get(("complex", e))
    if out is None:
        try:
            out = _SORT_KEYS[("complex", e)] = complex(e)
        except (TypeError, ValueError):
            raise Unsupported(e) from None
    return out


_LAST = "\U0010ffff"  # sorts after every name


def _linear_keys(terms) -> list | None:
    """Sort keys equivalent to sympy's lex order when every term is a rational multiple of a
    product of distinct symbols with one set of assumptions (or a number): the order compares
    exponent vectors over the symbols sorted by name, i.e. the first symbol by name that one
    term has and the other lacks puts that term first; numbers go last."""
    a0 = None
    keys = []
    for term in terms:
        if type(term) is sp.Symbol:
            factors = (term,)
        elif term.is_Mul:
            args = term.args
            if args[0].is_Number:
                if not args[0].is_Rational:
                    return None
                factors = args[1:]
            else:
                factors = args
        elif term.is_Rational:
            keys.append((_LAST,))
            continue
        else:
            return None
        for f in factors:
            if type(f) is not sp.Symbol:
                return None
            if a0 is None:
                a0 = f._assumptions0
            elif f._assumptions0 != a0:
                return None
        keys.append((*(f.name for f in factors), _LAST))
    return keys


def lex_terms(expr: sp.Add) -> list:
    """`expr.as_ordered_terms(order="lex")` for a sum of products with rational coefficients
    (sympy's `as_terms` with its numeric evaluations memoised)."""
    out = _ORDERED.get(expr)  # JSON and LaTeX print the same sums
    if out is None:
        if len(_ORDERED) > 1 << 17:
            _ORDERED.clear()
        out = _ORDERED[expr] = _lex_terms(expr)
    return out


_ORDERED: dict = {}


def linear_terms(expr: sp.Add):
    """[(rational coefficient, symbols)] in sympy's print order when every term of the sum is
    a rational multiple of a product of plain symbols with one set of assumptions (a number
    has no symbols); None otherwise."""
    out = []
    for term in lex_terms(expr):
        if type(term) is sp.Symbol:
            out.append((sp.S.One, (term,)))
        elif term.is_Rational:
            out.append((term, ()))
        elif term.is_Mul:
            args = term.args
            if args[0].is_Number:
                if not args[0].is_Rational:
                    return None
                c, rest = args[0], args[1:]
            else:
                c, rest = sp.S.One, args
            if not _plain_symbols(rest):
                return None
            out.append((c, rest))
        else:
            return None
    a0 = {rest[0]._assumptions0 for _, rest in out if rest}
    return out if len(a0) <= 1 else None


def _lex_terms(expr: sp.Add) -> list:
    args = expr.args
    keys = _linear_keys(args)
    if keys is not None:
        return [args[k] for _, k in sorted(zip(keys, range(len(args))))]
    gens, rows = set(), []
    for term in expr.args:
        if type(term) is sp.Symbol:
            rows.append((term, 1.0 + 0j, {term: 1}))
            gens.add(term)
            continue
        if term.is_Mul:
            args = term.args
            coeff, factors = (args[0], args[1:]) if args[0].is_Number else (sp.S.One, args)
        elif term.is_Number:
            coeff, factors = term, ()
        else:
            coeff, factors = sp.S.One, (term,)
        if not coeff.is_Rational:
            raise Unsupported(term)
        cz = _complex(coeff)
        cpart = {}
        for f in factors:
            if type(f) is sp.Symbol:
                base, exp = f, 1
            elif not f.is_commutative:
                raise Unsupported(term)
            elif f.is_number:
                cz *= _complex(f)  # sympy folds numeric factors into the coefficient
                continue
            else:
                base, exp = decompose_power(f)
            cpart[base] = exp
            gens.add(base)
        rows.append((term, cz, cpart))
    order = {g: k for k, g in enumerate(sorted(gens, key=_default_key))}
    keyed = []
    for k, (term, cz, cpart) in enumerate(rows):
        monom = [0] * len(order)
        for base, exp in cpart.items():
            monom[order[base]] = -exp
        # sympy's key for order="lex" (Expr._parse_order): negated monomial, no
        # non-commutative part, then the coefficient; k keeps the sort stable
        keyed.append((tuple(monom), (), ((bool(cz.imag), cz.imag), (cz.real, cz.imag)), k))
    keyed.sort()
    return [rows[key[-1]][0] for key in keyed]


def _plain_symbols(factors) -> bool:
    """Symbols with one set of assumptions: their sort keys order them by name, the order
    a canonical product already keeps them in."""
    a0 = factors[0]._assumptions0 if factors and type(factors[0]) is sp.Symbol else None
    return a0 is not None and all(type(f) is sp.Symbol and f._assumptions0 == a0
                                  for f in factors)


def ordered_factors(factors) -> list:
    """`Mul.as_ordered_factors()`: commutative factors by sympy's sort key (numbers first)."""
    head = 1 if factors and factors[0].is_Number else 0
    if _plain_symbols(factors[head:]) and all(
            a.name < b.name for a, b in zip(factors[head:], factors[head + 1:])):
        return list(factors)
    return sorted(factors, key=_default_key)


_ADD_PREC, _MUL_PREC, _ATOM_PREC = precedence(sp.Add(*sp.symbols("a b"))), 50, 1000


def prec(e) -> int:
    """`sympy.printing.precedence.precedence`, without negating products to find their sign."""
    if type(e) is sp.Symbol:
        return _ATOM_PREC
    if e.is_Mul and (e.args[0].is_Rational or not e.args[0].is_Number):
        return _ADD_PREC if e.args[0].is_Rational and e.args[0].p < 0 else _MUL_PREC
    return precedence(e)


def split_coeff(e: sp.Mul) -> tuple:
    """(rational coefficient, other factors) of a canonical product."""
    args = e.args
    if args[0].is_Number:
        if not args[0].is_Rational:
            raise Unsupported(e)
        return args[0], args[1:]
    return sp.S.One, args


class TermStr:
    """`sympy.sstr(e, order="lex")`, fast on program definitions."""

    def __init__(self) -> None:
        self.sympy = StrPrinter({"order": "lex"})
        self.memo: dict = {}

    def __call__(self, e) -> str:
        if not isinstance(e, sp.Basic):
            e = sp.sympify(e)
        try:
            return self.term(e)
        except Unsupported:
            return self.sympy.doprint(e)

    def term(self, e) -> str:
        if type(e) is sp.Symbol:
            return e.name
        if e.is_Add:
            return self.add(e)
        if e.is_Mul:
            return self.mul(e)
        return self.other(e)

    def other(self, e) -> str:
        out = self.memo.get(e)
        if out is None:
            out = self.memo[e] = self.sympy._print(e)
        return out

    def paren(self, e, level: int) -> str:
        if type(e) is sp.Symbol:
            return e.name
        key = (e, level)
        out = self.memo.get(key)
        if out is None:
            out = self.memo[key] = self.sympy.parenthesize(e, level, strict=False)
        return out

    def add(self, e) -> str:  # StrPrinter._print_Add
        linear = linear_terms(e)
        if linear is not None:  # no term needs parentheses: print the pieces directly
            out = []
            for c, rest in linear:
                if not rest:
                    t = self.other(c)
                    sign, t = ("-", t[1:]) if t.startswith("-") else ("+", t)
                else:
                    sign = "-" if c.p < 0 else "+"
                    p = -c.p if c.p < 0 else c.p
                    t = "*".join(f.name for f in rest)
                    if p != 1:
                        t = f"{p}*{t}"
                    if c.q != 1:
                        t = f"{t}/{c.q}"
                out += [sign, t]
            sign = out.pop(0)
            return ("" if sign == "+" else sign) + " ".join(out)
        level = prec(e)
        out = []
        for term in lex_terms(e):
            t = self.term(term)
            sign = "+"
            if t.startswith("-") and not term.is_Add:
                sign, t = "-", t[1:]
            if prec(term) < level or term.is_Add:
                t = f"({t})"
            out += [sign, t]
        sign = out.pop(0)
        return ("" if sign == "+" else sign) + " ".join(out)

    def mul(self, e) -> str:  # StrPrinter._print_Mul on a canonical (evaluated) product
        args = e.args
        if args[0] is sp.S.One or any(a.is_Number or a.is_Pow and all(x.is_Integer for x in a.args)
                                      for a in args[1:]):
            raise Unsupported(e)
        level = prec(e)
        c, rest = split_coeff(e)
        sign = "-" if c.p < 0 else ""
        c = -c if c.p < 0 else c
        if len(rest) == 1 and rest[0].is_Add and c is sp.S.One:
            raise Unsupported(e)  # _keep_coeff would leave a bare sum
        if _plain_symbols(rest):  # c * x * y ...: the common case
            out = "*".join(f.name for f in rest)
            if c.p != 1:
                out = f"{c.p}*{out}"
            return sign + (out if c.q == 1 else f"{out}/{c.q}")
        num, den = [], []
        for item in ordered_factors(([] if c is sp.S.One else [c]) + list(rest)):
            if item.is_Pow and item.exp.is_Number and item.exp < 0:
                if not item.exp.is_Rational:
                    raise Unsupported(e)
                if item.exp is sp.S.NegativeOne:
                    if isinstance(item.base, (sp.Mul, sp.Pow)) and len(item.base.args) != 1:
                        raise Unsupported(e)
                    den.append(item.base)
                else:
                    den.append(sp.Pow(item.base, -item.exp, evaluate=False))
            elif item.is_Pow and not item.exp.is_Number:
                raise Unsupported(e)
            elif item.is_Rational:
                if item.p != 1:
                    num.append(sp.Integer(item.p))
                if item.q != 1:
                    den.append(sp.Integer(item.q))
            else:
                num.append(item)
        a = "*".join(self.paren(x, level) for x in (num or [sp.S.One]))
        if not den:
            return sign + a
        if len(den) == 1:
            return sign + a + "/" + self.paren(den[0], level)
        return sign + a + "/(" + "*".join(self.paren(x, level) for x in den) + ")"


_STR = TermStr()


def _string(e) -> str:
    return _STR(e)


def _reference_terms(model: Model, kind: str):
    for d in model.derivations:
        if d.kind in _REFERENCE_KINDS[kind]:
            return d
    return None


def _closed_form(model: Model) -> dict:
    if not model.closed_form:  # inlined terms grow fast (about tenfold per LSTM step)
        return {"status": "not requested", "reason": "run with --closed-form to export them"}
    out = {"status": "inlined"}
    for key in _REFERENCE_KINDS:
        d = _reference_terms(model, key)
        if d is None:
            out[key] = None
            continue
        try:
            out[key] = nested(d.terms, lambda t: _string(model.program.inline(t)))
        except SpecError as exc:
            return {"status": "omitted", "reason": f"{key}: {exc.message}"}
    return out


def _proofs(model: Model, verdicts: list[Verdict]) -> dict:
    """Per obligation, the Qed / Admitted lemmas of the `.v` file and the `sorry`s of the
    `.lean` file (emit/proofs.py); or why those files cannot be written."""
    from . import coq
    from .proofs import proof_counts  # proofs -> coq -> this module

    if not coq.emitted(model, verdicts):  # counts only of a .v written with this file: a
        # JSON-only run does not pay for a Coq emission (and its interval confirmations)
        absent = {"status": "omitted", "reason": "no .v file written with this export"}
        return {ob.name: absent for ob in model.obligations}
    try:
        return proof_counts(model, verdicts)
    except SpecError as exc:
        omitted = {"status": "omitted", "reason": exc.message}
        return {ob.name: omitted for ob in model.obligations}


def _obligations(model: Model, verdicts: list[Verdict]) -> list[dict]:
    by_name = {v.name: v for v in verdicts}
    proofs = _proofs(model, verdicts)
    out = []
    for ob in model.obligations:
        v = by_name.pop(ob.name, None)
        entry = _verdict_json(v) if v is not None else {"name": ob.name, "verdict": None}
        entry.update(claim=ob.text, obligation_kind=ob.kind,
                     goal=[[_string(a.lhs), a.op, _string(a.rhs)] for a in ob.goal],
                     proofs=proofs[ob.name])
        out.append(entry)
    out += [_verdict_json(v) for _, v in sorted(by_name.items())]
    return out


def _verdict_json(v: Verdict) -> dict:
    data = v.to_json()
    data.pop("seconds", None)  # timings differ between runs: artifacts must be byte-identical
    data["artifact"] = artifact_label(v.artifact)
    return json.loads(json.dumps(data, default=str))


def export(model: Model, verdicts: list[Verdict]) -> dict:
    """The export as plain JSON data (see the module docstring for the keys)."""
    prog = model.program
    all_terms = [t for d in model.derivations for _, t in flatten(d.terms)]
    all_terms += [t for ob in model.obligations for a in (*ob.goal, *ob.hypotheses)
                  for t in (a.lhs, a.rhs)]
    ref = {k: _reference_terms(model, k) for k in _REFERENCE_KINDS}
    return {
        "model": encodable(model.name),
        "source": encodable(PurePath(model.source_path).name) if model.source_path else None,
        "input_symbols": [v.symbol.name for v in model.inputs],
        "parameter_symbols": [v.symbol.name for v in model.params],
        "parameter_count": model.parameter_count,
        **{k: (nested(d.terms, _string) if d is not None else None) for k, d in ref.items()},
        "cse": [[s.name, _string(e)] for s, e in prog.readable(prog.slice(all_terms))],
        "closed_form": _closed_form(model),
        "derivations": {
            d.name: {"kind": d.kind, "shape": list(d.shape), "wrt": [w.name for w in d.wrt],
                     "terms": nested(d.terms, _string)}
            for d in model.derivations
        },
        "obligations": _obligations(model, verdicts),
    }


def emit(model: Model, verdicts: list[Verdict]) -> dict[str, str]:
    """{`NAME.json`: text}, deterministic (`indent=2, sort_keys=True`)."""
    text = json.dumps(export(model, verdicts), indent=2, sort_keys=True, ensure_ascii=False)
    return {f"{ident(model.name)}.json": text + "\n"}  # file names: the Coq module rule
