"""JSON export (reference keys, CSE, closed forms, verdicts) and the LaTeX document."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import sympy as sp
from test_emit_coq import (
    Derivation,
    Model,
    Program,
    S,
    Variable,
    bound_model,
    tanh_model,
)

from verifier.emit import json_export, latex

REFERENCE_KEYS = {"model", "input_symbols", "parameter_count", "output", "jacobian", "hessian"}


def test_json_reference_keys_and_values():
    model, verdicts = tanh_model()
    files = json_export.emit(model, verdicts)
    data = json.loads(files["mlp.json"])
    assert REFERENCE_KEYS | {"cse", "closed_form", "derivations", "obligations"} <= set(data)
    assert data["model"] == "mlp"
    assert data["source"] == "mlp.snn"
    assert data["input_symbols"] == ["x[0]", "x[1]"]
    assert data["parameter_count"] == 9
    assert data["output"] == ["f.y[0]"]
    assert data["jacobian"] == [["J0:x[0]", "J0:x[1]"]]
    assert data["hessian"] == [["H0:x[0]", "H0:x[1]"], ["H1:x[0]", "H1:x[1]"]]
    assert data["derivations"]["jacobian"] == {
        "kind": "jacobian", "shape": [1, 2], "wrt": ["x[0]", "x[1]"],
        "terms": [["J0:x[0]", "J0:x[1]"]]}


def test_json_cse_in_program_order():
    model, verdicts = tanh_model()
    data = json.loads(json_export.emit(model, verdicts)["mlp.json"])
    names = [name for name, _ in data["cse"]]
    order = [s.name for s in model.program.order]
    assert names == sorted(names, key=order.index)
    assert data["cse"][:3] == [["f.z1[0]", "f.W1[0,0]*x[0] + f.W1[0,1]*x[1] + f.b1[0]"],
                               ["f.z1[1]", "f.W1[1,0]*x[0] + f.W1[1,1]*x[1] + f.b1[1]"],
                               ["f.a1[0]", "tanh(f.z1[0])"]]


def test_json_closed_form_only_on_request():
    model, verdicts = tanh_model()
    closed = json.loads(json_export.emit(model, verdicts)["mlp.json"])["closed_form"]
    assert closed["status"] == "not requested"


def test_json_closed_form_inlined():
    model, verdicts = tanh_model()
    model.closed_form = True
    closed = json.loads(json_export.emit(model, verdicts)["mlp.json"])["closed_form"]
    assert closed["status"] == "inlined"
    assert closed["output"] == [
        ("f.W2[0,0]*tanh(f.W1[0,0]*x[0] + f.W1[0,1]*x[1] + f.b1[0]) + "
         "f.W2[0,1]*tanh(f.W1[1,0]*x[0] + f.W1[1,1]*x[1] + f.b1[1]) + f.b2[0]")]


def deep_model() -> Model:
    """Each step reads its predecessor twice: the inlined form doubles per step."""
    prog, x = Program(), S("x[0]")
    s = x
    for k in range(16):
        s = prog.assign(sp.tanh(s) + s * x, f"d.s{k}[0]")
    return Model(name="deep", source_path="deep.snn", program=prog,
                 inputs=(Variable(symbol=x, role="input"),), params=(), obligations=(),
                 derivations=(Derivation(name="output", kind="output", terms=s, shape=()),))


def test_json_closed_form_omitted_when_too_large():
    model = deep_model()
    model.closed_form = True
    data = json.loads(json_export.emit(model, [])["deep.json"])
    assert data["closed_form"]["status"] == "omitted"
    assert "exceeds 20000 operations" in data["closed_form"]["reason"]
    assert data["output"] == "d.s15[0]" and len(data["cse"]) == 16
    assert data["jacobian"] is None and data["hessian"] is None


def test_json_obligations_and_determinism():
    model, verdicts = tanh_model()
    text = json_export.emit(model, verdicts)["mlp.json"]
    assert text == json_export.emit(model, verdicts)["mlp.json"]
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True,
                              ensure_ascii=False) + "\n"
    obs = {o["name"]: o for o in json.loads(text)["obligations"]}
    assert obs["dy_dx0"]["verdict"] == "proved"
    assert obs["dy_dx0"]["artifact"] == "mlp.dy_dx0.smt2"  # no absolute path
    assert "seconds" not in obs["dy_dx0"]  # timings would break byte-identical artifacts
    assert obs["dy_dx0"]["claim"].startswith("d(f(x)[0])/d(x[0])")
    assert obs["wrong"]["counterexample"] == {"x[0]": "1/2", "x[1]": "-3"}
    assert obs["open"]["reason"] == "timeout after 1 s"
    assert obs["grad_x1"]["goal"][0][:2] == ["J0:x[1]", "=="]
    assert "/home/someone" not in text and "/tmp/run" not in text


def test_json_exact_numbers():
    model, verdicts = bound_model()
    data = json.loads(json_export.emit(model, verdicts)["bounds.json"])
    assert ["g.z1[0]", "x[0]/2 - 3*x[1]/4 + 1/10"] in data["cse"]
    assert data["obligations"][1]["goal"][1] == ["g.y[0]", "<", "5/2"]


# ---------------------------------------------------------------- LaTeX


@pytest.mark.parametrize("name, tex", [
    ("f.W1[2,3]", "W^{(1)}_{2,3}"),
    ("x[0]", "x_{0}"),
    ("f.b1[0]", "b^{(1)}_{0}"),
    ("t", "t"),
    ("alpha", r"\alpha"),
    ("my_scale2[1]", r"\mathrm{my\_scale}^{(2)}_{1}"),
    ("g:f.a1[0]", r"\overline{a^{(1)}_{0}}^{\,\mathrm{g}}"),
    ("f.z1'2[0]", None),
])
def test_pretty_names(name, tex):
    assert latex.pretty_name(name) == tex


def test_symbol_names_injective():
    syms = [S("f.W1[0,0]"), S("g.W1[0,0]"), S("f.z1'2[0]")]
    names = latex.symbol_names(syms)
    assert names[syms[0]] == "W^{(1)}_{0,0}"
    assert names[syms[1]] == r"\text{\texttt{g.W1[0,0]}}"
    assert names[syms[2]] == r"\text{\texttt{f.z1'2[0]}}"


def test_escape():
    assert latex.escape(r"a_b & 50% #1 {x} ~ ^ \ <= |y|") == (
        r"a\_b \& 50\% \#1 \{x\} \textasciitilde{} \textasciicircum{} \textbackslash{} "
        r"\textless{}= \textbar{}y\textbar{}")


def test_latex_document():
    model, verdicts = tanh_model()
    files = latex.emit(model, verdicts)
    text = files["mlp.tex"]
    assert text.startswith("% mlp.tex: generated by snn-verify from mlp.snn (model mlp)")
    assert r"\documentclass[10pt]{article}" in text and text.rstrip().endswith(r"\end{document}")
    assert text.count(r"\begin{align*}") == text.count(r"\end{align*}") >= 4
    assert r"  z^{(1)}_{0} &= W^{(1)}_{0,0} x_{0} + W^{(1)}_{0,1} x_{1} + b^{(1)}_{0} \\" in text
    assert r"a^{(1)}_{0} &= \tanh{\left(z^{(1)}_{0} \right)}" in text
    assert r"\mathrm{jacobian}_{0,1} &= \overline{x_{1}}^{\,\mathrm{J0}}" in text
    assert ('\\texttt{wrong} & identity & \\texttt{forgot the square "(*" *)} & refuted & '
            "exact-points & counterexample: x[0] = 1/2, x[1] = -3 \\\\") in text
    assert "/home/someone" not in text
    assert text == latex.emit(model, verdicts)["mlp.tex"]


def test_latex_omits_large_closed_forms():
    text = latex.emit(deep_model(), [])["deep.tex"]
    assert "Closed form omitted" in text and "No claims were stated." in text


def test_latex_compiles_when_available(tmp_path):
    tool = shutil.which("pdflatex")
    if tool is None:
        pytest.skip("pdflatex not installed (the LaTeX output is not compiled in CI)")
    model, verdicts = tanh_model()
    (tmp_path / "mlp.tex").write_text(latex.emit(model, verdicts)["mlp.tex"])
    res = subprocess.run([tool, "-interaction=nonstopmode", "-halt-on-error", "mlp.tex"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stdout[-3000:]


def test_jacobian_pairing_with_matrix_wrt_and_scalar_output():
    w = [S(f"W[{i},{j}]") for i in range(2) for j in range(3)]
    t = [S(f"J:{s.name}") for s in w]
    out = Derivation(name="out", kind="output", terms=S("y"), shape=())
    jac = Derivation(name="jac", kind="jacobian", shape=(2, 3), wrt=tuple(w),
                     terms=(tuple(t[:3]), tuple(t[3:])))
    other = Derivation(name="o2", kind="output", terms=(S("a"), S("b")), shape=(2,))
    assert json_export.jacobian_pairs([other, out, jac]) == [(jac, out)]
    entries = list(json_export.jacobian_entries(jac, out))
    assert entries[4] == (w[4], (), (1, 1))
    assert [e[0] for e in entries] == w


# ---------------------------------------------------------------- fast printers = sympy's text

SMALL_TRANSFORMER = """input X : real[2, 2]
network t(in=[2, 2]) { transformer(heads=1, ff=3, ff_act=tanh, positional=true) }
derive output t(X)
derive jacobian t(X) wrt X
derive hessian t(X)[0] wrt X
"""


@pytest.mark.parametrize("spec", ["mlp.snn", "gru.snn", "gcn.snn", "transformer"])
def test_fast_printers_give_sympys_text(spec, tmp_path):
    """Every program definition (forward, adjoint, second-order) prints exactly as
    sympy.sstr / sympy.latex with order="lex" print it."""
    from pathlib import Path

    from verifier import run

    if spec == "transformer":
        path = tmp_path / "t.snn"
        path.write_text(SMALL_TRANSFORMER)
    else:
        path = Path(__file__).resolve().parents[2] / "specs" / spec
    model = run.load(str(path))
    prog = model.program
    syms = set(prog.order)
    for s in prog.order:
        syms |= prog.def_leaves(s)
    names = latex.symbol_names(syms)
    fast_str, fast_tex = json_export.TermStr(), latex.TermTex(names)
    assert len(prog.order) > 100
    for s in prog.order:
        e = prog.defs[s]
        assert fast_str(e) == sp.sstr(e, order="lex"), e
        assert fast_tex(e) == sp.latex(e, symbol_names=names, order="lex"), e
