"""LaTeX: a standalone `article` with the CSE form, the derivations and a table of verdicts.

Terms are printed by `sympy.latex` with a `symbol_names` map from our names to mathematical
ones (`f.W1[2,3]` -> `W^{(1)}_{2,3}`, the adjoint `g:f.a1[0]` -> an overlined `a^{(1)}_{0}`
tagged `g`); a name whose pretty form is already taken keeps its full spelling in typewriter
type, so the map stays injective. User text (claims, reasons) is escaped.
"""

from __future__ import annotations

import re

import sympy as sp
from sympy.printing.latex import LatexPrinter, _between_two_numbers_p
from sympy.simplify.radsimp import fraction

from ..engines.verdict import Verdict
from ..obligations import Model
from . import json_export as jx
from .names import file_label, printable, tex_text
from .names import ident as sanitize
from .templating import render, wrap

_NAME = re.compile(
    r"^(?:(?P<tag>[^:\s]+):)?(?:[A-Za-z_][A-Za-z0-9_]*\.)*"
    r"(?P<base>[A-Za-z_][A-Za-z0-9_]*?)(?P<layer>\d*)(?:\[(?P<idx>[0-9, ]*)\])?$"
)
_GREEK = frozenset((  # noqa: SIM905 - a word list reads best as text
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi pi rho sigma tau "
    "upsilon phi chi psi omega").split())
CLOSED_FORM_OPS = 200  # closed forms larger than this are left to the CSE form
CSE_DEFINITIONS = 6_000  # named quantities listed; a larger program is left to the JSON export


def escape(text: str) -> str:
    """User text for LaTeX text mode (`names.tex_text`)."""
    return tex_text(text)


def _tt(text: str) -> str:
    return r"\texttt{" + escape(text) + "}"


def _text_tt(name: str) -> str:
    """A name kept verbatim inside math mode (`'` would otherwise become a prime)."""
    return r"\text{" + _tt(name) + "}"


def pretty_name(name: str) -> str | None:
    """`f.W1[2,3]` -> `W^{(1)}_{2,3}`; None when the name has no pretty form."""
    m = _NAME.match(name)
    if m is None:
        return None
    base = m["base"]
    out = f"\\{base}" if base in _GREEK else base if len(base) == 1 else \
        r"\mathrm{" + escape(base) + "}"
    if m["layer"]:
        out += "^{(" + m["layer"] + ")}"
    if m["idx"]:
        out += "_{" + m["idx"].replace(" ", "") + "}"
    if m["tag"]:
        out = r"\overline{" + out + r"}^{\,\mathrm{" + escape(m["tag"]) + "}}"
    return out


def symbol_names(symbols) -> dict[sp.Symbol, str]:
    """An injective map symbol -> LaTeX, assigned in sorted order of names."""
    out, used = {}, set()
    for s in sorted(symbols, key=lambda s: s.name):
        tex = pretty_name(s.name)
        if tex is None or tex in used:
            tex = _text_tt(s.name)
        out[s] = tex
        used.add(tex)
    return out


class TermTex:
    """`sympy.latex(e, symbol_names=names, order="lex")`, fast on program definitions (the
    LaTeX twin of `json_export.TermStr`: same shapes, sympy for every other sub-term)."""

    def __init__(self, names: dict) -> None:
        self.names = names
        self.sympy = LatexPrinter({"symbol_names": names, "order": "lex"})
        settings = self.sympy._settings
        self.sep = settings["mul_symbol_latex"]
        self.numsep = settings["mul_symbol_latex_numbers"]
        self.plain_fracs = not settings["fold_short_frac"] and settings["long_frac_ratio"] is None
        self.memo: dict = {}

    def __call__(self, e) -> str:
        try:
            return self.term(e)
        except jx.Unsupported:
            return self.sympy.doprint(e)

    def term(self, e) -> str:
        if type(e) is sp.Symbol:
            name = self.names.get(e)
            if name is None:
                raise jx.Unsupported(e)
            return name
        if e.is_Add:
            return self.add(e)
        if e.is_Mul:
            c, rest = jx.split_coeff(e)
            return self.mul(c, rest)
        return self._memo(("print", e), lambda: self.sympy._print(e))

    def _memo(self, key, compute):
        out = self.memo.get(key)
        if out is None:
            out = self.memo[key] = compute()
        return out

    def _minus(self, e) -> bool:
        if type(e) is sp.Symbol:
            return False
        if e.is_Mul:
            return jx.split_coeff(e)[0].p < 0
        return self._memo(("minus", e), e.could_extract_minus_sign)

    def add(self, e) -> str:  # LatexPrinter._print_Add
        linear = jx.linear_terms(e)
        if linear is not None and all(c.q == 1 for c, rest in linear if rest):
            tex = ""
            for i, (c, rest) in enumerate(linear):
                neg = i > 0 and c.p < 0
                if i > 0:
                    tex += " - " if neg else " + "
                if not rest:
                    tex += self.term(-c if neg else c)
                    continue
                p = c.p
                if p < 0 and not neg:
                    tex += "- "
                texes = [self.term(f) for f in rest]
                if any(t[:1].isdigit() or t.startswith(r"\frac") for t in texes):
                    raise jx.Unsupported(e)
                if abs(p) != 1:
                    texes.insert(0, self.term(sp.Integer(abs(p))))
                tex += self.sep.join(texes)
            return tex
        tex = ""
        for i, term in enumerate(jx.lex_terms(e)):
            neg = i > 0 and self._minus(term)
            if i > 0:
                tex += " - " if neg else " + "
            if term.is_Mul:
                c, rest = jx.split_coeff(term)
                t = self.mul(-c if neg else c, rest)
                brackets = any(self._brackets(f) for f in rest)
            else:
                t = self.term(-term if neg else term)
                brackets = type(term) is not sp.Symbol and self.sympy._needs_add_brackets(
                    -term if neg else term)
            tex += rf"\left({t}\right)" if brackets else t
        return tex

    def _brackets(self, f) -> bool:
        """Whether a factor makes its product need brackets in a sum (sympy: one with Mod)."""
        if type(f) is sp.Symbol:
            return False
        return self._memo(("addbr", f), lambda: f.has(sp.Mod))

    def mul(self, c, rest: tuple) -> str:  # LatexPrinter._print_Mul on c * rest
        if any(f.is_Number for f in rest):
            raise jx.Unsupported(rest)
        tex = ""
        if c.p < 0:
            tex, c = "- ", -c
        one = c is sp.S.One
        if one and len(rest) == 1:
            expr = rest[0]
            if expr.is_Add:
                raise jx.Unsupported(expr)  # `- (a + b)`: sympy adds parentheses
            if type(expr) is sp.Symbol or not (expr.is_Pow or isinstance(expr, sp.exp)):
                return tex + self.term(expr)
        elif c.q == 1 and all(type(f) is sp.Symbol for f in rest) and \
                jx.ordered_factors(rest) == list(rest):
            # a product of symbols: names never start with a digit, so no \cdot between them
            texes = [self.term(f) for f in rest]
            if any(t[:1].isdigit() or t.startswith(r"\frac") for t in texes):
                raise jx.Unsupported(rest)
            return tex + self.sep.join(texes if one else [self.term(c), *texes])
        elif c.q == 1 and not any(type(f) is not sp.Symbol and (f.is_Pow or isinstance(f, sp.exp))
                                  for f in rest):
            # no denominator: sympy prints the factors in order
            return tex + self._convert_args(jx.ordered_factors(rest if one else (c, *rest)))
        elif all(type(f) is sp.Symbol or f.is_Pow and f.exp.is_Rational and f.exp.p > 0
                 for f in rest):
            # no factor goes below the line: sympy's fraction() leaves the numerator p * rest
            # and the denominator q
            numer = (rest if c.p == 1 else (sp.Integer(c.p), *rest))
            snumer = self._convert_args(jx.ordered_factors(numer)) if len(numer) > 1 \
                else self.term(numer[0])
            if c.q == 1:
                return tex + snumer
            if not self.plain_fracs:
                raise jx.Unsupported(rest)
            return tex + rf"\frac{{{snumer}}}{{{self.term(sp.Integer(c.q))}}}"
        else:
            expr = sp.Mul._from_args(rest if one else (c, *rest))
        numer, denom = fraction(expr, exact=True)
        if denom is sp.S.One:
            return tex + self._convert(expr)
        if not self.plain_fracs:
            raise jx.Unsupported(expr)
        return tex + rf"\frac{{{self._convert(numer)}}}{{{self._convert(denom)}}}"

    def _convert(self, expr) -> str:
        if not expr.is_Mul:
            return self.term(expr)
        return self._convert_args(jx.ordered_factors(expr.args))

    def _convert_args(self, args) -> str:
        out = last = ""
        for i, term in enumerate(args):
            t = self.term(term)
            if type(term) is not sp.Symbol:
                if hasattr(term, "_scale_factor") or hasattr(term, "is_physical_constant"):
                    raise jx.Unsupported(term)  # units go last in sympy's layout
                key = ("mulbr", term, i == 0, i == len(args) - 1)
                brackets = self.memo.get(key)
                if brackets is None:
                    brackets = self.memo[key] = self.sympy._needs_mul_brackets(
                        term, first=key[2], last=key[3])
                if brackets:
                    t = rf"\left({t}\right)"
            if _between_two_numbers_p[0].search(last) and _between_two_numbers_p[1].match(t):
                out += self.numsep
            elif out:
                out += self.sep
            out += t
            last = t
        return out


class _Tex:
    def __init__(self, model: Model):
        prog = model.program
        syms = set(prog.order) | {v.symbol for v in (*model.inputs, *model.params)}
        for sym in prog.order:
            syms |= prog.def_leaves(sym)
        for d in model.derivations:
            syms |= {s for _, t in jx.flatten(d.terms) for s in t.free_symbols}
        self.names = symbol_names(syms)
        self.printer = TermTex(self.names)

    def __call__(self, e) -> str:
        e = sp.sympify(e)
        try:
            return self.printer.term(e)
        except jx.Unsupported:
            pass
        extra = {s: _text_tt(s.name) for s in e.free_symbols if s not in self.names}
        if not extra:
            return self.printer.sympy.doprint(e)
        return sp.latex(e, symbol_names={**self.names, **extra}, order="lex")


def _align(rows: list[tuple[str, str]]) -> str:
    if not rows:
        return "(none)"
    body = " \\\\\n".join(f"  {lhs} &= {rhs}" for lhs, rhs in rows)
    return "\\begin{align*}\n" + body + "\n\\end{align*}"


def _cse(model: Model, tex: _Tex) -> str:
    terms = [t for d in model.derivations for _, t in jx.flatten(d.terms)]
    terms += [t for ob in model.obligations for a in ob.goal for t in (a.lhs, a.rhs)]
    steps = model.program.slice(terms)
    prog = model.program
    rows = []
    for sym, e in steps[:CSE_DEFINITIONS]:
        pieces = prog.readable([(sym, e)])
        for k, (part, _) in enumerate(pieces[:-1], start=1):  # over-long sums, in parts
            tex.names[part] = "{" + tex.names[sym] + r"}^{\langle " + str(k) + r"\rangle}"
        rows += [(tex.names[s], tex(x)) for s, x in pieces]
    if len(steps) > CSE_DEFINITIONS:  # a document nobody reads or typesets; the JSON has all
        return (_align(rows) + f"\n\nThe other {len(steps) - CSE_DEFINITIONS} of the "
                f"{len(steps)} named quantities are omitted here; the JSON export lists them "
                "all.")
    return _align(rows)


def _entry(name: str, idx: tuple) -> str:
    return r"\mathrm{" + escape(name) + "}" + ("_{" + ",".join(map(str, idx)) + "}" if idx else "")


def _derivations(model: Model, tex: _Tex) -> str:
    parts = []
    for d in model.derivations:
        head = f"\\subsection*{{{_tt(d.name)} ({escape(d.kind)}, shape " \
               f"{escape(' x '.join(map(str, d.shape)) or 'scalar')})}}"
        if d.wrt:
            head += "\nWith respect to $" + ", ".join(tex(w) for w in d.wrt) + "$."
        entries = jx.flatten(d.terms)
        rows = [(_entry(d.name, idx), tex(t)) for idx, t in entries]
        closed = []
        for idx, t in entries:  # stop at the first entry too large to show
            c = jx.safe_inline(model.program, t, CLOSED_FORM_OPS)
            if c is None:
                break
            closed.append((_entry(d.name, idx), c))
        parts.append(head + "\n" + _align(rows))
        if len(closed) < len(entries):
            parts.append(f"Closed form omitted: it exceeds {CLOSED_FORM_OPS} operations.")
        elif any(c != t for (_, c), (_, t) in zip(closed, entries)):
            parts.append("Closed form:\n" + _align([(lab, tex(c)) for lab, c in closed]))
    return "\n\n".join(parts) if parts else "No derivations were requested."


def _detail(v: Verdict | None) -> str:
    return jx.verdict_detail(v, "no verdict", "artifact: ")


def _obligations(model: Model, verdicts: list[Verdict]) -> str:
    by_name = {v.name: v for v in verdicts}
    rows = []
    for ob in model.obligations:
        v = by_name.get(ob.name)
        cells = [_tt(ob.name), escape(ob.kind), _tt(jx.one_line(ob.text)),
                 escape(v.verdict if v else "none"), escape(v.engine if v else "-"),
                 escape(jx.one_line(_detail(v)))]
        rows.append(" & ".join(cells) + r" \\")
    if not rows:
        return "No claims were stated."
    head = (r"\begin{longtable}{p{2.2cm}lp{5.2cm}llp{3.6cm}}" "\n"
            r"claim & kind & statement & verdict & engine & detail \\ \hline\endhead")
    return head + "\n" + "\n".join(rows) + "\n\\end{longtable}"


def emit(model: Model, verdicts: list[Verdict]) -> dict[str, str]:
    """{`NAME.tex`: a standalone document}."""
    tex = _Tex(model)
    name = sanitize(model.name)
    note = ("Inputs: $" + ", ".join(tex(v.symbol) for v in model.inputs) + "$."
            if model.inputs else "")
    text = render("latex.tex.j2", file=f"{name}.tex", model=escape(printable(model.name)),
                  model_tt=_tt(printable(model.name)),
                  source=escape(file_label(model.source_path)),
                  symbols_note=note, cse=_cse(model, tex),
                  derivations=_derivations(model, tex),
                  obligations=_obligations(model, verdicts))
    # the preamble stays as the template writes it (its title holds the model's name); the
    # body's long formula lines are broken
    head, sep, body = text.partition("\\begin{document}")
    return {f"{name}.tex": head + sep + wrap(body, comment="%")}
