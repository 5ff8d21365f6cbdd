"""names.py: identifiers, comments and text fragments per target, checked by coqc and z3.

Hostile strings go through each sanitiser; coqc must compile a file whose comments hold them
and in which every keyword, mangled, is an identifier (`Fail Check pwn.` shows that no comment
was closed early); z3 must read every quoted symbol as a fresh constant; the Lean and LaTeX
fragments must hold no delimiter or unescaped special character. Properties are checked with
Hypothesis over arbitrary text.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata

import pytest
import z3
from hypothesis import given, settings
from hypothesis import strategies as st
from test_emit_coq import compile_coq, coqc_path, tanh_model

from verifier.emit import coq, latex, lean, names

HOSTILE = [
    "x*) Axiom pwn : False. (*", 'q" *) Axiom pwn : False. (* "', "(*", "*)", "(**)", "*", "(",
    ")", "y*", "(x", "-/ axiom pwn : False /-", "--", "/-", "-/", "---", "a\nAxiom pwn : False.",
    "\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029", "\x1b[2K\u202e\x00\x7f", "$\\{}&#^_%~<>|",
    "\\immediate\\write18{pwn}", "\udcff\udcfe", "λ «x» ∀", "",
]

text = st.text(st.characters(codec=None), max_size=40) | st.sampled_from(HOSTILE)


def _clean(s: str) -> bool:
    """One line of printable text: no control, format, surrogate or line-break character."""
    return all(unicodedata.category(c)[0] != "C" and (c == " " or not c.isspace()) for c in s)


@settings(max_examples=300, deadline=None)
@given(st.lists(text, max_size=4))
def test_comment_fragments_cannot_close_or_open_a_comment(parts):
    for s in parts:
        assert _clean(names.printable(s))
    coq_frags = [names.coq_comment_text(s) for s in parts]
    joined = "(* " + "".join(coq_frags) + " *)"
    assert joined.count("(*") == joined.count("*)") == 1 and '"' not in joined
    lean_frags = [names.lean_comment_text(s) for s in parts]
    joined = "-- " + "".join(lean_frags)
    assert "/-" not in joined and "-/" not in joined and "--" not in joined[2:]
    for s in [*coq_frags, *lean_frags, *map(names.smt_comment_text, parts)]:
        assert _clean(s)


_TEX_ESCAPE = re.compile(r"\\(?:textbackslash|textasciicircum|textasciitilde|textless|"
                         r"textgreater|textbar)\{\}|\\[{}$&#_%]")


@settings(max_examples=300, deadline=None)
@given(text)
def test_tex_text_escapes_every_special_character(s):
    out = names.tex_text(s)
    assert _clean(out)
    assert not re.search(r"[\\{}$&#^_%~]", _TEX_ESCAPE.sub("", out))
    assert all(ord(c) < 0x100 for c in out)  # T1 fonts: no character pdfLaTeX cannot set
    assert latex.escape(s) == out


@settings(max_examples=500, deadline=None)
@given(text, text)
def test_smt_symbols_are_injective(a, b):
    assert (names.smt_symbol(a) == names.smt_symbol(b)) == (a == b)
    body = names.smt_symbol(a)[1:-1]
    assert "|" not in body and "\\" not in body and _clean(body.replace(" ", "x"))


SMT_NAMES = ["as", "true", "false", "and", "or", "distinct", "_", "!", "&&", "!partial_eq",
             "let", "forall", "exists", "match", "par", "a|b", "a_b", "a\\b", "a\nb", "a b",
             "x[0]", "J0:f.a1[0]", "%", "%25;", "sqrt#1", "\udcff", "λ"]


def test_z3_reads_every_symbol_as_a_fresh_constant():
    decls = "".join(f"(declare-const {names.smt_symbol(n)} Real)" for n in SMT_NAMES)
    eqs = "".join(f"(assert (= {names.smt_symbol(n)} {k}.0))" for k, n in enumerate(SMT_NAMES))
    solver = z3.Solver()
    solver.from_string(decls + eqs)
    assert solver.check() == z3.sat
    model = solver.model()
    expected = {names.smt_symbol(n)[1:-1]: k for k, n in enumerate(SMT_NAMES)}
    # (z3 keeps the define-funs of earlier from_string calls in its context: skip those)
    values = {d.name(): model[d].as_long() for d in model.decls() if d.name() in expected}
    assert values == expected


# Coq's keywords (reference manual, "Lexical conventions"), its tactic keywords, the brief
# list of words that broke the emitted file, and the names our files refer to.
COQ_WORDS = """
_ Axiom CoFixpoint Definition Fixpoint Hypothesis Inductive Parameter Prop SProp Set Theorem
Type Variable as at by cofix else end exists exists2 fix for forall fun if in let match mod
return then using where with struct eqn into Lemma Qed Proof Admitted Defined Require Import
R exp ln tanh relu sigmoid softplus step is_derive Rlt_dec Req_EM_T Rinv_mult filter_and
snn_side snn_rest i_bisect IF Module End
""".split()  # noqa: SIM905 - a word list reads best as text


def test_mangled_keywords_are_coq_identifiers(tmp_path):
    coqc_path()
    nm = coq.NameMap(coq.COQ_RESERVED)
    idents = [nm.name(w, w) for w in COQ_WORDS]
    assert len(set(idents)) == len(idents)
    body = "".join(f"Definition {i} : R := 0.\n" for i in idents)
    binders = " ".join(nm.name(("b", w), w) for w in COQ_WORDS[:20])
    body += f"Lemma snn_probe : forall {binders} : R, True.\nProof. intros. exact I. Qed.\n"
    body += "".join(f"(* {names.coq_comment_text(h)} *)\n" for h in HOSTILE)
    body += "(* " + "".join(names.coq_comment_text(h) for h in HOSTILE) + " *)\n"
    body += "Fail Check pwn.\n"
    text = coq.render_file("probe", HOSTILE[0], body, "", source=HOSTILE[1])
    res = compile_coq(tmp_path, {"probe.v": text})
    assert res.returncode == 0, res.stdout + res.stderr


def test_model_names_cannot_break_the_lean_header():
    model, verdicts = tanh_model()
    plain = lean.emit(model, verdicts)["mlp.lean"]
    for bad in ["-/ axiom pwn : False /-", "x\naxiom pwn : False", "/-! -/ --"]:
        hostile = dataclasses.replace(model, name=f"mlp{bad}", source_path=f"d/{bad}.snn")
        (name, text), = lean.emit(hostile, verdicts).items()
        ns = name.removesuffix(".lean")
        code = [ln for ln in text.splitlines() if not ln.startswith("--")]
        assert code == [ln.replace(" mlp", f" {ns}") if ln in ("namespace mlp", "end mlp")
                        else ln for ln in plain.splitlines() if not ln.startswith("--")]
        for line in text.splitlines():
            if line.startswith("--"):
                assert "/-" not in line and "-/" not in line and "--" not in line[2:], line


@pytest.mark.parametrize("word", ["by", "at", "fun", "Type", "end", "have", "show", "from",
                                  "do", "namespace", "theorem", "def", "as", "Real", "nnRelu"])
def test_lean_keywords_are_mangled(word):
    nm = names.NameMap(lean.LEAN_RESERVED)
    assert nm.name(1, word) == f"{word}'2"
    assert lean.module_name(word) == f"{word}_model"
