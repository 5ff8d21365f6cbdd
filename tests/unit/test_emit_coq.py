"""Coq emitter: exact printer strings, names, and coqc on every emitted `.v` file.

The models are built by hand (no parser): a 2-input tanh layer with symbolic weights and a
linear output, reverse-mode gradients, a hand-written derivative claim; a bound over an input
box with concrete weights; a network with every activation. The Lean and JSON/LaTeX tests
import these builders.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import sympy as sp

from verifier.diagnostics import SpecError
from verifier.emit import coq
from verifier.engines.verdict import Verdict
from verifier.layers.activations import leaky_relu, leaky_step, relu, sigmoid, softplus, step
from verifier.obligations import Atom, Derivation, Model, Obligation, Variable
from verifier.symbolic.program import Program
from verifier.symbolic.reverse import gradient


def S(name: str) -> sp.Symbol:
    return sp.Symbol(name, real=True)


X = [S("x[0]"), S("x[1]")]


def _dense_tanh(prog: Program):
    W1 = [[S(f"f.W1[{i},{j}]") for j in range(2)] for i in range(2)]
    b1 = [S(f"f.b1[{i}]") for i in range(2)]
    W2, b2 = [S("f.W2[0,0]"), S("f.W2[0,1]")], S("f.b2[0]")
    z = [prog.assign(W1[i][0] * X[0] + W1[i][1] * X[1] + b1[i], f"f.z1[{i}]") for i in range(2)]
    a = [prog.assign(sp.tanh(z[i]), f"f.a1[{i}]") for i in range(2)]
    y = prog.assign(W2[0] * a[0] + W2[1] * a[1] + b2, "f.y[0]")
    return W1, b1, W2, b2, a, y


def tanh_model() -> tuple[Model, list[Verdict]]:
    """2-2-1 tanh MLP, symbolic weights; a true derivative claim, a ring identity, a refuted
    claim, an unknown one; output, Jacobian and Hessian derivations."""
    prog = Program()
    W1, b1, W2, b2, a, y = _dense_tanh(prog)
    J = gradient(prog, y, X, tag="J0")
    H = [gradient(prog, J[i], X, tag=f"H{i}") for i in range(2)]
    inputs = tuple(Variable(symbol=s, role="input") for s in X)
    params = tuple(Variable(symbol=s, role="param") for s in [*W1[0], *W1[1], *b1, *W2, b2])

    def rhs(j, wrong=False):
        return sum(W2[i] * (1 - (a[i] if wrong else a[i] ** 2)) * W1[i][j] for i in range(2))

    def ob(name, atom, text):
        return Obligation(name=name, kind="identity", goal=(atom,), hypotheses=(),
                          variables=inputs + params, text=text)

    obligations = (
        ob("dy_dx0", Atom(lhs=J[0], op="==", rhs=rhs(0), origin=("derivative", y, X[0])),
           "d(f(x)[0])/d(x[0]) == sum_i W2[0,i] * (1 - a1[i]^2) * W1[i,0]"),
        ob("grad_x1", Atom(lhs=J[1], op="==", rhs=rhs(1)), "grad == formula"),
        ob("wrong", Atom(lhs=J[1], op="==", rhs=rhs(1, True), origin=("derivative", y, X[1])),
           'forgot the square "(*" *)'),
        ob("open", Atom(lhs=J[1], op="==", rhs=rhs(1), origin=("derivative", y, X[1])), "?"),
    )
    derivations = (
        Derivation(name="output", kind="output", terms=(y,), shape=(1,)),
        Derivation(name="jacobian", kind="jacobian", terms=(tuple(J),), shape=(1, 2),
                   wrt=tuple(X)),
        Derivation(name="hessian", kind="hessian", terms=tuple(tuple(h) for h in H),
                   shape=(2, 2), wrt=tuple(X)),
    )
    model = Model(name="mlp", source_path="/home/someone/specs/mlp.snn", program=prog,
                  inputs=inputs, params=params, obligations=obligations,
                  derivations=derivations, parameter_count=len(params))
    verdicts = [
        Verdict(name="dy_dx0", kind="identity", verdict="proved", engine="canonical-form+z3",
                artifact="/tmp/run/mlp.dy_dx0.smt2", seconds=0.25),
        Verdict(name="grad_x1", kind="identity", verdict="proved", engine="canonical-form"),
        Verdict(name="wrong", kind="identity", verdict="refuted", engine="exact-points",
                counterexample={"x[0]": "1/2", "x[1]": "-3"}),
        Verdict(name="open", kind="identity", verdict="unknown", engine="canonical-form",
                reason="timeout after 1 s"),
    ]
    return model, verdicts


def bound_model() -> tuple[Model, list[Verdict]]:
    """Concrete weights, inputs in [-1, 1]^2: an upper bound, a two-sided band, an unknown."""
    prog = Program()
    z0 = prog.assign(sp.Rational(1, 2) * X[0] - sp.Rational(3, 4) * X[1] + sp.Rational(1, 10),
                     "g.z1[0]")
    z1 = prog.assign(X[0] + 2 * X[1], "g.z1[1]")
    a0, a1 = prog.assign(sp.tanh(z0), "g.a1[0]"), prog.assign(relu(z1), "g.a1[1]")
    y = prog.assign(2 * a0 - a1 / 3 + sp.Rational(1, 5), "g.y[0]")
    inputs = tuple(Variable(symbol=s, role="input", lo=sp.Integer(-1), hi=sp.Integer(1))
                   for s in X)

    def ob(name, atoms, text):
        return Obligation(name=name, kind="bound", goal=atoms, hypotheses=(), variables=inputs,
                          text=text)

    obligations = (
        ob("upper", (Atom(lhs=y, op="<=", rhs=sp.Integer(3)),), "g(x)[0] <= 3"),
        ob("band", (Atom(lhs=y, op=">", rhs=sp.Integer(-3)),
                    Atom(lhs=y, op="<", rhs=sp.Rational(5, 2))), "-3 < g(x)[0] < 5/2"),
        ob("tight", (Atom(lhs=y, op="<=", rhs=sp.Integer(2)),), "g(x)[0] <= 2"),
    )
    model = Model(name="bounds", source_path="bounds.snn", program=prog, inputs=inputs,
                  params=(), obligations=obligations,
                  derivations=(Derivation(name="out", kind="output", terms=(y,), shape=(1,)),))
    verdicts = [
        Verdict(name="upper", kind="bound", verdict="proved", engine="z3", artifact="u.smt2"),
        Verdict(name="band", kind="bound", verdict="proved", engine="branch-and-bound"),
        Verdict(name="tight", kind="bound", verdict="unknown", engine="branch-and-bound",
                reason="timeout after 5 boxes"),
    ]
    return model, verdicts


def activation_model() -> tuple[Model, list[Verdict]]:
    """One neuron per activation (relu, leaky_relu, sigmoid, softplus) plus exp(-x[0])/2."""
    prog = Program()
    W = [[S(f"f.W1[{i},{j}]") for j in range(2)] for i in range(4)]
    b = [S(f"f.b1[{i}]") for i in range(4)]
    V = [S(f"f.W2[0,{i}]") for i in range(4)]
    alpha = sp.Rational(1, 100)
    acts = [relu, lambda t: leaky_relu(t, alpha), sigmoid, softplus]
    z = [prog.assign(W[i][0] * X[0] + W[i][1] * X[1] + b[i], f"f.z1[{i}]") for i in range(4)]
    a = [prog.assign(acts[i](z[i]), f"f.a1[{i}]") for i in range(4)]
    y = prog.assign(sum(V[i] * a[i] for i in range(4)) - sp.exp(-X[0]) / 2, "f.y[0]")
    g = gradient(prog, y, X, tag="g")
    rhs = (V[0] * step(z[0]) * W[0][0] + V[1] * leaky_step(z[1], alpha) * W[1][0]
           + V[2] * a[2] * (1 - a[2]) * W[2][0] + V[3] * sigmoid(z[3]) * W[3][0]
           + sp.exp(-X[0]) / 2)
    inputs = tuple(Variable(symbol=s, role="input") for s in X)
    params = tuple(Variable(symbol=s, role="param") for s in [*(w for r in W for w in r), *b, *V])
    ob = Obligation(name="grad_x0", kind="identity", hypotheses=(), variables=inputs + params,
                    goal=(Atom(lhs=g[0], op="==", rhs=rhs, origin=("derivative", y, X[0])),),
                    text="d(f(x)[0])/d(x[0]) == ...")
    derivations = (Derivation(name="out", kind="output", terms=(y,), shape=(1,)),
                   Derivation(name="jac", kind="jacobian", terms=(tuple(g),), shape=(1, 2),
                              wrt=tuple(X)))
    model = Model(name="acts", source_path="acts.snn", program=prog, inputs=inputs,
                  params=params, obligations=(ob,), derivations=derivations)
    return model, [Verdict(name="grad_x0", kind="identity", verdict="proved", engine="id")]


# ---------------------------------------------------------------- coqc


def coqc_path() -> str:
    path = shutil.which("coqc")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("coqc is required in CI (apt-get install coq libcoq-coquelicot "
                        "libcoq-interval)")
        pytest.skip("coqc not installed")
    return path


def compile_coq(tmp_path, files: dict[str, str]) -> subprocess.CompletedProcess:
    (name, text), = files.items()
    (tmp_path / name).write_text(text, encoding="utf-8")
    return subprocess.run([coqc_path(), name], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, check=False)


def assert_compiles(tmp_path, files):
    res = compile_coq(tmp_path, files)
    assert res.returncode == 0, res.stdout + res.stderr


# ---------------------------------------------------------------- printer and names


def _p(e) -> str:
    return coq.CoqPrinter(lambda s: s.name).doprint(e)


x, y, z = sp.symbols("x y z", real=True)


@pytest.mark.parametrize("expr, text", [
    (x**2 * y, "x ^ 2 * y"),
    (sp.Rational(3, 4) * x, "(3 / 4) * x"),
    (x - y, "x - y"),
    (-sp.Rational(3, 4) * x * y, "- (3 / 4) * x * y"),
    (1 / (x + y), "1 / (x + y)"),
    (x / y**2, "x / y ^ 2"),
    (2 * x / (3 * y), "(2 / 3) * x / y"),
    (x * y / (z * (x + 1)), "x * y / (z * (x + 1))"),
    (sp.Integer(-3), "(-3)"),
    (sp.Rational(-3, 4), "(-3 / 4)"),
    (sp.Float("0.1") * x, "(1 / 10) * x"),
    ((x + y) ** 3, "(x + y) ^ 3"),
    (1 - sp.tanh(x) ** 2, "1 - tanh x ^ 2"),
    (sp.tanh(x + 1), "tanh (x + 1)"),
    (sp.exp(-x), "exp (- x)"),
    (sp.log(1 + sp.exp(x)), "ln (exp x + 1)"),
    (sigmoid(-x) * softplus(2 * x), "sigmoid (- x) * softplus (2 * x)"),
    (relu(x - 1) + step(y), "relu (x - 1) + step y"),
    (leaky_relu(x, sp.Rational(1, 100)), "leaky_relu (1 / 100) x"),
    (sp.Max(x, y, z), "Rmax x (Rmax y z)"),
    (sp.Abs(x) + sp.sqrt(x + 1), "sqrt (x + 1) + Rabs x"),
    (sp.pi * sp.E, "(exp 1) * PI"),
    (sp.log(sigmoid(y)), "ln (sigmoid y)"),
    (sp.exp(sp.sqrt(x + 1)) * sp.sqrt(x) ** 3, "(sqrt x) ^ 3 * exp (sqrt (x + 1))"),
    (2 * sp.tanh(sp.Piecewise((sp.Rational(1, 10) * x, x <= -1), (x, x < 1), (2 * x, True))),
     "2 * tanh (if Rle_dec x (-1) then (1 / 10) * x else if Rlt_dec x 1 then x else 2 * x)"),
])
def test_printer(expr, text):
    assert _p(expr) == text


def test_printer_refuses_unknown_functions():
    with pytest.raises(coq.UnsupportedTerm):
        _p(sp.sin(x))


def test_printer_refuses_piecewise_without_default():
    with pytest.raises(coq.UnsupportedTerm):
        _p(sp.Piecewise((x, x > 0)))


@pytest.mark.parametrize("lhs, rhs, expected", [
    (x * (y + 1), x * y + x, True),
    (sp.tanh(x) ** 2, sp.tanh(x) * sp.tanh(x), True),
    (sp.Rational(1, 3) * x + x / 3, 2 * x / 3, True),
    (x / y, x / y, False),  # field would need y <> 0 even here
    (sigmoid(-x), 1 - sigmoid(x), False),  # true, but not by ring over atoms
    (sp.tanh(x + y), sp.tanh(y + x) + 1, False),
])
def test_ring_identity(lhs, rhs, expected):
    assert coq.ring_identity(lhs, rhs, 100) is expected


def test_names_are_sanitised_and_collision_free():
    names = coq.NameMap(coq.COQ_RESERVED)
    assert names.name(1, "f.W1[2,3]") == "f_W1_2_3"
    assert names.name(2, "J0:f.a1[0]") == "J0_f_a1_0"
    assert names.name(3, "x[0]") == "x_0"
    assert names.name(4, "x_0") == "x_0'2"
    assert names.name(5, "exp") == "exp'2"
    assert names.name(6, "snn_h0") == "snn_h0'2"
    assert names.name(7, "0x") == "v_0x"
    assert names.name(3, "ignored") == "x_0"
    assert coq.module_name("my-net.v2") == "my_net_v2"
    assert coq.module_name("Reals") == "Reals_model"


# ---------------------------------------------------------------- emitted files


def lemma(text: str, name: str) -> str:
    """The text of one lemma, from `Lemma NAME :` to its closing Qed./Admitted."""
    start = text.index(f"Lemma {name} :")
    ends = [(text.find(end, start), end) for end in ("\nQed.", "\nAdmitted.")]
    pos, end = min((p, e) for p, e in ends if p >= 0)
    return text[start:pos + len(end)]


def test_tanh_model_lemmas(tmp_path):
    model, verdicts = tanh_model()
    files = coq.emit(model, verdicts, coqc=None)
    text = files["mlp.v"]
    dy = lemma(text, "dy_dx0")
    assert dy.startswith("Lemma dy_dx0 :\n  forall x_1 f_W1_0_0 f_W1_0_1 ")
    assert "is_derive (fun x_0 : R => f_W2_0_0 * tanh (f_W1_0_0 * x_0 + f_W1_0_1 * x_1" in dy
    assert dy.endswith(f"  {coq.DERIVE_TACTIC}\nQed.")
    assert lemma(text, "grad_x1").endswith("unfold Rminus, Rdiv; field; snn_side.\nQed.")
    assert "Lemma wrong" not in text
    assert "counterexample: x[0] = 1/2, x[1] = -3" in text
    assert "unknown (canonical-form): timeout after 1 s" in text
    assert lemma(text, "open").endswith("Proof.\nAdmitted.")
    assert lemma(text, "jacobian_0_0_deriv").endswith("Qed.")
    assert "Definition hessian_1_1" in text
    assert "/home/someone" not in text and "/tmp/run" not in text
    assert text == coq.emit(model, verdicts, coqc=None)["mlp.v"]  # deterministic
    assert_compiles(tmp_path, files)


def test_every_admitted_says_why():
    model, verdicts = tanh_model()
    text = coq.emit(model, verdicts, coqc=None)["mlp.v"]
    blocks = text.split("\n\n")
    for block in blocks:
        if "Admitted." in block:
            assert "(* " in block, block


def test_activation_model_compiles_with_relu_side_conditions(tmp_path):
    model, verdicts = activation_model()
    files = coq.emit(model, verdicts, coqc=None)
    text = files["acts.v"]
    grad = lemma(text, "grad_x0")
    assert "f_W1_0_0 * x_0 + f_W1_0_1 * x_1 + f_b1_0 <> 0 ->" in grad
    assert "leaky_relu (1 / 100)" in grad and grad.endswith("Qed.")
    assert_compiles(tmp_path, files)


def test_bounds_use_interval_when_coqc_confirms(tmp_path):
    coqc = coqc_path()
    model, verdicts = bound_model()
    files = coq.emit(model, verdicts, coqc=coqc)
    text = files["bounds.v"]
    upper = lemma(text, "upper")
    assert "(-1) <= x_0 <= 1 ->" in upper
    assert "interval with (i_bisect x_0, i_bisect x_1, i_depth " in upper and upper.endswith("Qed.")
    assert lemma(text, "band").endswith("Qed.")
    assert lemma(text, "tight").endswith("Admitted.") and "timeout after 5 boxes" in text
    assert_compiles(tmp_path, files)


def test_bounds_without_coqc_are_admitted_with_reason(tmp_path):
    model, verdicts = bound_model()
    text = coq.emit(model, verdicts, coqc=None)["bounds.v"]
    assert "Qed." not in text[text.index("(** * Obligations *)"):]
    assert "coqc was not available" in text
    assert_compiles(tmp_path, {"bounds.v": text})


def test_wrong_derivative_fails_when_a_proof_is_forced(tmp_path):
    """The proof scripts check something: a wrong rhs with a forced proof does not compile."""
    model, _ = tanh_model()
    ctx = coq.Ctx(model)
    good, bad = model.obligations[3], model.obligations[2]  # right and wrong d/d x[1]
    good_lemma = coq.derivative_lemma(ctx, "good", good, good.goal[0], prove=True)
    bad_lemma = coq.derivative_lemma(ctx, "bad", bad, bad.goal[0], prove=True)
    assert "Qed." in good_lemma and "Admitted." in bad_lemma  # the pre-check sees it too
    forced = coq.derivative_lemma(ctx, "bad", bad, bad.goal[0], prove=True, force=True)
    assert "Qed." in forced
    text = coq.render_file("forced", "forced", "", good_lemma + "\n" + forced)
    res = compile_coq(tmp_path, {"forced.v": text})
    assert res.returncode != 0
    assert "bad" in res.stdout + res.stderr or "field" in res.stdout + res.stderr
    ok = coq.render_file("control", "control", "", good_lemma)
    assert_compiles(tmp_path, {"control.v": ok})


def test_power_inside_an_activation(tmp_path):
    """auto_derive rebuilds `x ^ 2` inside tanh as `x * (x * 1)`: the script must cope."""
    prog, x0, w = Program(), X[0], S("n.w[0]")
    a = prog.assign(sp.tanh(w * x0**2 + 1), "n.a[0]")
    r = prog.assign(relu(x0**2 - 1), "n.r[0]")
    y = prog.assign(w * a + r, "n.y[0]")
    g = gradient(prog, y, [x0], tag="g")
    rhs = 2 * w**2 * x0 * (1 - a**2) + 2 * x0 * step(x0**2 - 1)
    ob = Obligation(name="d", kind="identity", hypotheses=(), text="d/dx",
                    variables=(Variable(symbol=x0, role="input"), Variable(symbol=w, role="param")),
                    goal=(Atom(lhs=g[0], op="==", rhs=rhs, origin=("derivative", y, x0)),))
    model = Model(name="pw", source_path="pw.snn", program=prog, inputs=ob.variables[:1],
                  params=ob.variables[1:], obligations=(ob,), derivations=())
    files = coq.emit(model, [Verdict(name="d", kind="identity", verdict="proved", engine="id")],
                     coqc=None)
    text = files["pw.v"]
    assert "tanh (n_w_0 * x_0 ^ 2 + 1)" in text and "x_0 ^ 2 - 1 <> 0 ->" in text
    assert lemma(text, "d").endswith("Qed.")
    assert_compiles(tmp_path, files)


def test_log_of_positive_terms(tmp_path):
    """ln and division by terms positive by construction: field's side goals are discharged."""
    prog, (y0, y1), (t0, t1) = Program(), X, (S("t[0]"), S("t[1]"))
    lse = prog.assign(sp.log(sp.exp(y0) + sp.exp(y1)), "lse")
    loss = prog.assign(-t0 * (y0 - lse) - t1 * (y1 - lse) - sp.log(sigmoid(y1)), "loss")
    g = gradient(prog, loss, [y0, y1], tag="g")
    soft = [sp.exp(y) / (sp.exp(y0) + sp.exp(y1)) for y in X]
    rhs = [-t0 + (t0 + t1) * soft[0], -t1 + (t0 + t1) * soft[1] - (1 - sigmoid(y1))]
    variables = tuple(Variable(symbol=s, role="input") for s in (y0, y1, t0, t1))
    ob = Obligation(name="ce", kind="identity", hypotheses=(), text="d loss / d y",
                    variables=variables,
                    goal=tuple(Atom(lhs=g[k], op="==", rhs=rhs[k], origin=("derivative", loss,
                                                                           X[k]))
                               for k in range(2)))
    model = Model(name="ce", source_path="ce.snn", program=prog, inputs=variables, params=(),
                  obligations=(ob,), derivations=())
    files = coq.emit(model, [Verdict(name="ce", kind="identity", verdict="proved",
                                     engine="id")], coqc=None)
    text = files["ce.v"]
    assert "ln (exp x_0 + exp x_1)" in text and "ln (sigmoid x_1)" in text
    assert lemma(text, "ce_0").endswith("Qed.") and lemma(text, "ce_1").endswith("Qed.")
    assert_compiles(tmp_path, files)


def test_unsupported_function_is_a_spec_error():
    model, verdicts = tanh_model()
    model.program.assign(sp.sin(X[0]), "f.s[0]")
    with pytest.raises(SpecError, match="Coq emitter cannot express"):
        coq.emit(model, verdicts, coqc=None)


def test_module_name_is_sanitised(tmp_path):
    model, verdicts = activation_model()
    model.name = "my-net.v2"
    files = coq.emit(model, verdicts, coqc=None)
    assert list(files) == ["my_net_v2.v"]


# ---------------------------------------------------------------- Coq-specific proof plans


@pytest.mark.parametrize("lhs, rhs, known, mode", [
    # softmax-like: ring with the inverse of a sum of exps as an atom (no cancellation)
    (sp.exp(x) / (sp.exp(x) + sp.exp(y)), sp.exp(x) * (sp.exp(x) + sp.exp(y)) ** -1, (), "ring"),
    # cancellation of a positive denominator needs field
    ((x * sp.exp(y) + x) / (sp.exp(y) + 1), x, (), "field"),
    # a denominator positive only by a premise
    ((x * y + y) / y, x + 1, (y,), "field"),
    ((x * y + y) / y, x + 1, (), None),
    # a square root of a premise-positive term, named as an atom t > 0, then field
    ((x * sp.sqrt(y) + sp.sqrt(y)) / sp.sqrt(y), x + 1, (y,), "roots"),
    ((x * sp.sqrt(y) + sp.sqrt(y)) / sp.sqrt(y), x + 1, (), None),
    # step: nerva's value at the kink differs from ours; both agree off the kink
    (step(x), 1 - step(-x), (), "cases"),
    (step(x), step(-x), (), None),
])
def test_coq_plan(lhs, rhs, known, mode):
    known = tuple(sp.expand(coq.coq_view(k)) for k in known)
    plan = coq.coq_plan(coq.coq_view(lhs), coq.coq_view(rhs), known, 1000)
    assert plan.mode == mode, plan.reason


def test_coq_view_keeps_exp_products_and_roots_opaque():
    assert coq.coq_view(sp.exp(x)) ** 2 == sp.Pow(coq.snn_exp(x), 2)  # sympy: exp(2*x)
    d = sp.diff(coq.coq_view(sp.sqrt(x)), x)
    assert d == 1 / (2 * coq.snn_sqrt(x))


def test_positive_by_construction_or_by_premise():
    known = (sp.expand(x * y + 2),)
    assert coq.provably_positive(coq.snn_exp(x) + coq.snn_exp(y), ())
    assert coq.provably_positive(3 * (x * y + 2), known)
    assert not coq.provably_positive(x * y + 1, known)
    assert not coq.provably_positive(x, ())


def test_case_analysis_above_the_bound_is_not_attempted():
    zs = sp.symbols(f"z0:{coq.CASE_DECISIONS + 1}", real=True)
    small = sum(step(t) for t in zs[:2])
    assert coq.coq_plan(small, sum(1 - step(-t) for t in zs[:2]), (), 1000).mode == "cases"
    big = sum(step(t) for t in zs)
    plan = coq.coq_plan(big, sum(1 - step(-t) for t in zs), (), 1000)
    assert plan.mode is None
    assert f"({coq.CASE_DECISIONS} decisions)" in plan.reason
    assert coq.case_decisions(big, sp.Max(x, y)) == len(zs) + 1


def _aggregation_model() -> tuple[Model, list[Verdict]]:
    """A graph layer's forward identity written in two orders of aggregation (the atoms
    relu(w*x0 + w*x1) and relu(w*(x0 + x1)) differ until their arguments are expanded)."""
    prog = Program()
    w, v, b = S("g.w"), S("g.v"), S("g.b")
    h = [prog.assign(relu(w * X[0] + w * X[1] + b), "g.h[0]"),
         prog.assign(relu(v * X[0] - v * X[1]), "g.h[1]")]
    y = prog.assign(relu(2 * h[0] + h[1] * 3), "g.y[0]")
    rhs = relu((h[1] + h[1] + h[1]).xreplace({h[1]: relu(v * (X[0] - X[1]))})
               + 2 * relu(w * (X[0] + X[1]) + b))
    inputs = tuple(Variable(symbol=s, role="input") for s in X)
    params = tuple(Variable(symbol=s, role="param") for s in (w, v, b))
    ob = Obligation(name="forward", kind="identity", hypotheses=(), variables=inputs + params,
                    goal=(Atom(lhs=y, op="==", rhs=rhs),), text="g(x)[0] == by hand")
    model = Model(name="agg", source_path="agg.snn", program=prog, inputs=inputs,
                  params=params, obligations=(ob,), derivations=())
    return model, [Verdict(name="forward", kind="identity", verdict="proved", engine="id")]


def test_activation_arguments_brought_to_one_form(tmp_path):
    model, verdicts = _aggregation_model()
    files = coq.emit(model, verdicts, coqc=None)
    text = lemma(files["agg.v"], "forward")
    assert text.count("by (f_equal; ring).") == 2  # the inner relus of the rhs; then the
    # outer ones agree as written
    assert "snn_cases" not in text and text.endswith("field; snn_side.\nQed.")
    assert_compiles(tmp_path, files)


def test_proof_counts_per_obligation():
    from verifier.emit import proofs

    model, verdicts = tanh_model()
    counts = proofs.proof_counts(model, verdicts, coqc=None)
    assert counts["dy_dx0"] == {"coq_qed": 1, "coq_admitted": 0, "lean_sorry": 1,
                                "admitted_reasons": [], "not_stated": None}
    assert counts["wrong"] == {"coq_qed": 0, "coq_admitted": 0, "lean_sorry": 0,
                               "admitted_reasons": [], "not_stated": "the claim is false"}
    assert counts["open"]["coq_admitted"] == 1 and counts["open"]["lean_sorry"] == 1
    assert counts["open"]["admitted_reasons"] == [
        "the claim was not proved, so this lemma is an open statement"]
    assert counts["grad_x1"]["lean_sorry"] == 0  # `by ring`
