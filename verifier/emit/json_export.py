"""JSON export: a superset of the reference export, and the model view other emitters share.

Top-level keys: `model`, `input_symbols`, `parameter_count`, `output`, `jacobian`, `hessian`
(as in the reference export; terms in the CSE names), plus `cse` (the named intermediate
quantities those terms need, in program order), `closed_form` (fully inlined terms, or why they
were omitted), `derivations` (all of them, by name, with shape), `parameter_symbols`, `source`
and `obligations` (each verdict with the claim text). Numbers are exact strings; output is
deterministic (sorted keys, no timings, no absolute paths).
"""

from __future__ import annotations

import json
import math
from pathlib import PurePath

import sympy as sp

from ..diagnostics import SpecError
from ..engines.verdict import PROVED, REFUTED, Verdict
from ..obligations import Derivation, Model
from ..symbolic.program import Program

INLINE_OPS = 1000  # inlined terms above this size are shown in CSE form by the proof emitters
_REFERENCE_KINDS = {"output": ("output",), "jacobian": ("jacobian",),
                    "hessian": ("hessian", "hessian_diagonal")}


class TooLarge(Exception):
    """A term whose inlined form exceeds the program's inline limit."""


def safe_inline(program: Program, expr, limit: int | None = None):
    """`program.inline(expr)`, or None when the inlined term would be too large."""
    try:
        out = program.inline(expr) if limit is None else program.inline(expr, limit)
    except SpecError:
        return None
    if limit is not None and sp.count_ops(out) > limit:
        return None
    return out


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
    return " ".join(str(text).split())


def artifact_label(artifact: str | None) -> str | None:
    """What backs a verdict, without absolute paths (a file is named by its base name)."""
    if artifact is None:
        return None
    return PurePath(artifact).name if PurePath(artifact).is_absolute() else one_line(artifact)


def verdict_note(v: Verdict | None) -> list[str]:
    """Comment lines saying who decided an obligation and how."""
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


def _string(e) -> str:
    return sp.sstr(sp.sympify(e), order="lex")


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


def _obligations(model: Model, verdicts: list[Verdict]) -> list[dict]:
    by_name = {v.name: v for v in verdicts}
    out = []
    for ob in model.obligations:
        v = by_name.pop(ob.name, None)
        entry = _verdict_json(v) if v is not None else {"name": ob.name, "verdict": None}
        entry.update(claim=ob.text, obligation_kind=ob.kind,
                     goal=[[_string(a.lhs), a.op, _string(a.rhs)] for a in ob.goal])
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
        "model": model.name,
        "source": PurePath(model.source_path).name if model.source_path else None,
        "input_symbols": [v.symbol.name for v in model.inputs],
        "parameter_symbols": [v.symbol.name for v in model.params],
        "parameter_count": model.parameter_count,
        **{k: (nested(d.terms, _string) if d is not None else None) for k, d in ref.items()},
        "cse": [[s.name, _string(e)] for s, e in prog.slice(all_terms)],
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
    from .coq import sanitize  # file names follow the same rule as Coq module names

    text = json.dumps(export(model, verdicts), indent=2, sort_keys=True, ensure_ascii=False)
    return {f"{sanitize(model.name)}.json": text + "\n"}
