"""HTML: one self-contained page per spec, for people to look at.

The page holds the verdict table (claim, kind, verdict, engine, time, reason or counterexample),
plots of the claimed quantity over the input box for bound claims with one input (a curve and
the claimed bound as a dashed line, sampled with the compiled numeric evaluator) or two inputs
(a heat map, cells where the claim fails outlined), the derived formulas as MathML (printed from
the sympy terms; browsers render it natively, so nothing is fetched) with their LaTeX source
alongside, and relative links to every other artifact written for the spec.

The skeleton is `templates/report.html.j2` with autoescaping on: user text (names, claims,
reasons, file names) reaches the page only through the template, escaped; SVG and MathML are
built here from escaped parts and passed as `Markup`. Apart from the time column, two runs give
the same bytes.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from functools import lru_cache
from pathlib import PurePath
from urllib.parse import quote

import jinja2
import numpy as np
import sympy as sp
from markupsafe import Markup
from sympy.printing.mathml import MathMLPresentationPrinter
from sympy.printing.pretty.pretty_symbology import greek_unicode

from ..engines.verdict import Verdict
from ..obligations import Model, Obligation
from . import json_export as jx
from . import latex as ltx
from . import svgplot
from .templating import template_dir

MAX_ENTRIES = 24  # derivation entries shown per derivation
MAX_STEPS = 60  # intermediate definitions shown per derivation
MAX_TERM_OPS = 300  # a larger term is not rendered (its LaTeX is still in the .tex file)
PLOT_OPS = 20000  # slices larger than this are not compiled for a plot
SAMPLES_1D, SAMPLES_2D = 241, 33
_NAME = re.compile(
    r"^(?:(?P<tag>[^:\s]+):)?(?:[A-Za-z_][A-Za-z0-9_]*\.)*"
    r"(?P<base>[A-Za-z_][A-Za-z0-9_]*?)(?P<layer>\d*)(?:\[(?P<idx>[0-9, ]*)\])?$"
)
_HOLDS = {"<=": np.less_equal, "<": np.less, ">=": np.greater_equal, ">": np.greater,
          "==": np.equal, "!=": np.not_equal}
_SIGN = {"<=": "≤", "<": "<", ">=": "≥", ">": ">", "==": "=", "!=": "≠"}
_KINDS = {".smt2": "SMT-LIB", ".v": "Coq", ".lean": "Lean 4", ".json": "JSON",
          ".tex": "LaTeX", ".html": "HTML"}


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir())), autoescape=True,
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True)


# ---------------------------------------------------------------- MathML

class _MathML(MathMLPresentationPrinter):
    """sympy's presentation MathML with our symbol names: `f.W1[2,3]` -> W with superscript
    (1) and subscript 2,3; an adjoint `g:f.a1[0]` is overlined and tagged g. A name without a
    pretty form, or whose pretty form is taken, is shown in full in monospace."""

    def __init__(self, pretty: dict[str, tuple]):
        super().__init__({"order": "lex"})
        self.pretty = pretty

    def _el(self, tag: str, *children, text: str | None = None, **attrs):
        el = self.dom.createElement(tag)
        if text is not None:
            el.appendChild(self.dom.createTextNode(text))
        for k, v in attrs.items():
            el.setAttribute(k, v)
        for c in children:
            el.appendChild(c)
        return el

    def _print_Symbol(self, sym, style="plain"):
        parts = self.pretty.get(sym.name)
        if parts is None:
            return self._el("mi", text=sym.name, mathvariant="monospace")
        tag, base, layer, idx = parts
        core = self._el("mi", text=greek_unicode.get(base, base),
                        **({"mathvariant": "normal"} if len(base) > 1 and
                           base not in greek_unicode else {}))
        if layer and idx:
            core = self._el("msubsup", core, self._el("mn", text=idx),
                            self._el("mn", text=f"({layer})"))
        elif layer:
            core = self._el("msup", core, self._el("mn", text=f"({layer})"))
        elif idx:
            core = self._el("msub", core, self._el("mn", text=idx))
        if tag:
            core = self._el("msup", self._el("mover", core, self._el("mo", text="‾"),
                                             accent="true"),
                            self._el("mi", text=tag, mathvariant="normal"))
        return core

    _print_Dummy = _print_Symbol

    def equation(self, lhs, rhs) -> str:
        return self._math(self._el("mrow", lhs, self._el("mo", text="="), self._print(rhs)))

    def label(self, name: str, idx: tuple = ()):
        el = self._el("mi", text=name, mathvariant="normal")
        if idx:
            el = self._el("msub", el, self._el("mn", text=",".join(map(str, idx))))
        return el

    def _math(self, el) -> str:
        return '<math display="block">' + el.toxml() + "</math>"


def _pretty_names(symbols) -> dict[str, tuple]:
    """Injective: a pretty form already taken by a name earlier in sorted order is dropped."""
    out, used = {}, set()
    for s in sorted(symbols, key=lambda s: s.name):
        m = _NAME.match(s.name)
        if m is None:
            continue
        key = (m["tag"] or "", m["base"], m["layer"], (m["idx"] or "").replace(" ", ""))
        if key not in used:
            out[s.name] = key
            used.add(key)
    return out


# ---------------------------------------------------------------- verdict table

def _detail(v: Verdict | None) -> str:
    return jx.verdict_detail(v, "no verdict was computed", "backed by ")


def _smt2_link(model: Model, name: str, others) -> str | None:
    from .smtlib import file_name

    f = file_name(model.name, name)
    return f if f in others else None


def _rows(model: Model, verdicts: list[Verdict], others) -> list[dict]:
    by_name = {v.name: v for v in verdicts}
    rows = []
    for ob in model.obligations:
        v = by_name.pop(ob.name, None)
        rows.append(_row(model, ob.name, ob.kind, ob.text, v, others))
    for name, v in sorted(by_name.items()):
        rows.append(_row(model, name, v.kind, "", v, others))
    return rows


def _row(model, name, kind, text, v, others) -> dict:
    smt2 = _smt2_link(model, name, others)
    return {"name": name, "kind": kind, "claim": jx.one_line(text),
            "verdict": v.verdict if v else "none", "engine": v.engine if v else "-",
            "time": f"{v.seconds:.2f} s" if v else "-", "detail": jx.one_line(_detail(v)),
            "smt2": smt2, "smt2_href": quote(smt2) if smt2 else None}


def _summary(verdicts: list[Verdict]) -> str:
    counts = [sum(v.verdict == k for v in verdicts) for k in ("proved", "refuted", "unknown")]
    return "{} proved, {} refuted, {} unknown".format(*counts)


# ---------------------------------------------------------------- plots

def _plot(model: Model, ob: Obligation, v: Verdict | None) -> dict | None:
    """A figure for a bound claim over a box of one or two inputs; None for other claims."""
    if ob.kind != "bound" or not 1 <= len(ob.variables) <= 2:
        return None
    if any(var.lo is None or var.hi is None for var in ob.variables):
        return None
    title = jx.one_line(ob.text) if len(ob.text) <= 80 else jx.one_line(ob.text)[:77] + "..."
    fig = {"name": ob.name, "title": title, "svg": None, "note": None}
    sides = [e for a in ob.goal for e in (a.lhs, a.rhs)]
    hyps = [e for a in ob.hypotheses for e in (a.lhs, a.rhs)]
    if model.program.count_ops(sides + hyps) > PLOT_OPS:
        fig["note"] = f"Plot omitted: the claim takes more than {PLOT_OPS} operations to evaluate."
        return fig
    if any(var.lo > var.hi for var in ob.variables):
        fig["note"] = "Plot omitted: the domain is empty."
        return fig
    try:
        fig["svg"] = Markup(_draw(model, ob, v, sides, hyps, title))
    except _NoPlot as exc:
        fig["note"] = f"Plot omitted: {exc}."
    except (ArithmeticError, ValueError, TypeError) as exc:
        fig["note"] = f"Plot omitted: the claim could not be evaluated numerically ({exc})."
    return fig


class _NoPlot(Exception):
    """Nothing to draw (the message says why)."""


def _evaluate(model: Model, ob: Obligation, exprs, points):
    from ..symbolic.compile import compile_numpy

    f = compile_numpy(model.program, [var.symbol for var in ob.variables], exprs)
    with np.errstate(all="ignore"):
        return [np.asarray(r, dtype=float) for r in f(*points)]


def _draw(model, ob, v, sides, hyps, title) -> str:
    grids = [np.linspace(float(var.lo), float(var.hi), SAMPLES_1D if len(ob.variables) == 1
                         else SAMPLES_2D) for var in ob.variables]
    mesh = np.meshgrid(*grids) if len(grids) == 2 else grids
    values = _evaluate(model, ob, sides + hyps, [m.ravel() for m in mesh])
    goal_vals, hyp_vals = values[:len(sides)], values[len(sides):]
    ok = np.ones(mesh[0].size, dtype=bool)
    for k, a in enumerate(ob.hypotheses):
        ok &= _HOLDS[a.op](hyp_vals[2 * k], hyp_vals[2 * k + 1])
    fails = np.zeros(mesh[0].size, dtype=bool)
    for k, a in enumerate(ob.goal):
        fails |= ~_HOLDS[a.op](goal_vals[2 * k], goal_vals[2 * k + 1])
    if not ok.any():
        raise _NoPlot("the side conditions hold at no sampled point")
    fails &= ok
    names = [var.symbol.name for var in ob.variables]
    curves, bounds = _series(ob, goal_vals, ok)
    if not curves:
        raise _NoPlot("no side of the claim depends on the inputs")
    marks = _marks(model, ob, v, sides)
    if len(grids) == 1:
        ylabel = curves[0][0] if len(curves) == 1 else "value"
        return svgplot.line_plot(grids[0], curves, bounds, xlabel=names[0], ylabel=ylabel,
                                 title=title, marks=marks)
    shape = mesh[0].shape
    label, z = curves[0]
    note = "  (red: the claim fails)" if fails.any() else ""
    return svgplot.heat_map(grids[0], grids[1], z.reshape(shape), fails.reshape(shape),
                            xlabel=names[0], ylabel=names[1], zlabel=label, title=title + note,
                            marks=marks, levels=[y for _, y in bounds])


def _series(ob: Obligation, goal_vals, ok) -> tuple[list, list]:
    """Curves (sides that depend on the inputs, NaN where a side condition fails) and bounds
    (constant sides, with the operator read from the side of the quantity)."""
    curves, bounds, seen = [], [], set()
    for k, a in enumerate(ob.goal):
        for e, vals, op in ((a.lhs, goal_vals[2 * k], _flip(a.op)),
                            (a.rhs, goal_vals[2 * k + 1], a.op)):
            if e in seen:
                continue
            seen.add(e)
            if sp.sympify(e).free_symbols:
                curves.append((_short(e), np.where(ok, vals, np.nan)))
            elif math.isfinite(value := complex(e).real) and complex(e).imag == 0:
                bounds.append((f"claimed bound {_SIGN[op]} {_short(e)}", value))
    return curves, bounds


def _flip(op: str) -> str:
    """The operator read from the right-hand side: `a <= b` bounds b from below by a."""
    return {"<=": ">=", "<": ">", ">=": "<=", ">": "<"}.get(op, op)


_STR = jx.TermStr()


def _short(e, limit: int = 48) -> str:
    s = jx.one_line(_STR(e))
    return s if len(s) <= limit else s[:limit - 3] + "..."


def _marks(model, ob, v, sides) -> list:
    """The counterexample of a refuted claim: (label, x, y), y the first side that depends on
    the inputs (one input) or the second input (two inputs)."""
    if v is None or v.verdict != "refuted" or not v.counterexample:
        return []
    names = [var.symbol.name for var in ob.variables]
    try:
        point = [float(Fraction(str(v.counterexample[n]))) for n in names]
    except (KeyError, ValueError, ZeroDivisionError):
        return []
    label = "counterexample " + ", ".join(f"{n} = {v.counterexample[n]}" for n in names)
    if len(point) == 2:
        return [(label, point[0], point[1])]
    exprs = [e for e in sides if sp.sympify(e).free_symbols]
    y = _evaluate(model, ob, exprs[:1], [np.array([point[0]])])[0].ravel()[0]
    return [(label, point[0], float(y))] if math.isfinite(y) else []


# ---------------------------------------------------------------- formulas

def _derivations(model: Model) -> list[dict]:
    out = []
    prog = model.program
    for d in model.derivations:
        entries = jx.flatten(d.terms)
        shown = entries[:MAX_ENTRIES]
        terms = [t for _, t in shown]
        steps = prog.slice(terms)
        syms = {s for s, _ in steps} | {s for _, t in shown for s in sp.sympify(t).free_symbols}
        syms |= {s for _, e in steps for s in e.free_symbols} | set(d.wrt)
        mml = _MathML(_pretty_names(syms))
        tex = ltx.TermTex(ltx.symbol_names(syms))
        notes = []
        if len(entries) > len(shown):
            notes.append(f"Showing {len(shown)} of {len(entries)} entries.")
        if len(steps) > MAX_STEPS:
            notes.append(f"Showing the last {MAX_STEPS} of {len(steps)} intermediate "
                         "definitions; the .tex and .json files have them all.")
            steps = steps[-MAX_STEPS:]
        defs, tex_lines = [], []
        for s, e in steps:
            defs.append(_formula(mml, mml._print(s), e, notes))
            tex_lines.append(f"{tex(s)} &= {tex(e)}")
        rows = []
        for idx, t in shown:
            rows.append(_formula(mml, mml.label(d.name, idx), t, notes))
            label = r"\mathrm{" + ltx.escape(d.name) + "}"
            if idx:
                label += "_{" + ",".join(map(str, idx)) + "}"
            tex_lines.append(f"{label} &= {tex(t)}")
        out.append({
            "name": d.name, "kind": d.kind,
            "shape": " × ".join(map(str, d.shape)) or "scalar",
            "wrt": ", ".join(w.name for w in d.wrt),
            "definitions": defs, "entries": rows, "notes": sorted(set(notes)),
            "latex": "\\begin{align*}\n" + " \\\\\n".join(tex_lines) + "\n\\end{align*}",
        })
    return out


def _formula(mml: _MathML, lhs, e, notes: list) -> Markup:
    if sp.count_ops(e) > MAX_TERM_OPS:
        notes.append(f"Terms above {MAX_TERM_OPS} operations are not rendered here.")
        return Markup(mml._math(mml._el("mrow", lhs, mml._el("mo", text="="),
                                        mml._el("mtext", text="(too large to show)"))))
    return Markup(mml.equation(lhs, e))


# ---------------------------------------------------------------- page

def _artifacts(others) -> list[dict]:
    return [{"name": f, "href": quote(f), "kind": _KINDS.get(PurePath(f).suffix, "file")}
            for f in sorted(others) if not f.endswith(".html")]


def emit(model: Model, verdicts: list[Verdict], others=()) -> dict[str, str]:
    """{`NAME.html`: the page}; `others` are the names of the artifacts written beside it."""
    from .coq import sanitize  # file names follow the same rule as the other emitters

    by_name = {v.name: v for v in verdicts}
    plots = [p for ob in model.obligations if (p := _plot(model, ob, by_name.get(ob.name)))]
    text = _environment().get_template("report.html.j2").render(
        model=jx.one_line(model.name),
        source=PurePath(model.source_path).name if model.source_path else None,
        summary=_summary(verdicts), rows=_rows(model, verdicts, others), plots=plots,
        derivations=_derivations(model), artifacts=_artifacts(others),
        inputs=", ".join(var.symbol.name for var in model.inputs),
    )
    return {f"{sanitize(model.name)}.html": text}
