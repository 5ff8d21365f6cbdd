"""Kinks, exp and log in identities: derivatives of max/min/abs, the case split of the identity
engine (engines/cases.py), the exp/log canonical form, and a shape error inside one claim.

Oracles: central finite differences in 60-digit arithmetic (mpmath) for the derivatives, the
replayed counterexample for every refutation, z3 on the emitted per-case SMT-LIB files, coqc
on the emitted .v file. A claim that holds off a tie but not at it must not be proved.
"""

from __future__ import annotations

import random
import subprocess
from fractions import Fraction

import mpmath
import pytest
import sympy as sp
import z3
from tools import coqc as _coqc

from verifier import run
from verifier.emit.smtlib import SmtPrinter
from verifier.engines.replay import evaluate
from verifier.symbolic import reverse
from verifier.symbolic.program import Program

u, v, w = sp.symbols("u v w", real=True)


def _fd(f, point, x):
    """Central difference of f (a sympy term over leaves) in x at the point, 60 digits."""
    with mpmath.workdps(60):
        h = mpmath.mpf("1e-25")
        env = {s: mpmath.mpf(c.numerator) / c.denominator for s, c in point.items()}
        g = sp.lambdify([*env], f, modules="mpmath")
        hi = {**env, x: env[x] + h}
        lo = {**env, x: env[x] - h}
        return (g(*hi.values()) - g(*lo.values())) / (2 * h)


KINKED = [
    sp.Max(u / 10, u) * w,
    sp.Max(u, v, 2 * w) ** 2,
    sp.Min(u - v, w * u) + sp.Abs(u - w) * v,
    sp.Abs(u * v - w) + sp.Max(sp.Min(u, v), w),
]


@pytest.mark.parametrize("f", KINKED, ids=str)
def test_derivatives_of_max_min_abs_match_finite_differences(f):
    prog = Program()
    grads = reverse.gradient(prog, f, [u, v, w])
    rng = random.Random(str(f))
    for _ in range(12):
        point = {s: Fraction(rng.randint(-300, 300), rng.choice([7, 11, 13])) for s in (u, v, w)}
        vals, _ = evaluate(prog, grads, point)
        for g, x in zip(vals, (u, v, w)):
            with mpmath.workdps(60):
                err = abs(mpmath.mpf(g.p) / g.q - _fd(f, point, x))
                assert err < mpmath.mpf("1e-20"), (f, x, point)


def test_derivatives_at_ties_are_the_printers_choice():
    """max' is the first maximal argument's derivative (ite (>= a b) a b), abs'(0) = 0; no
    Heaviside(0) = 1/2 anywhere."""
    prog = Program()
    (dmax_u, dmax_v) = reverse.gradient(prog, sp.Max(u, v), [u, v])
    (dabs,) = reverse.gradient(prog, sp.Abs(u), [u])
    full = prog.inline(dmax_u) + prog.inline(dmax_v)
    assert not full.has(sp.Heaviside, sp.sign)
    first = sp.Max(u, v).args[0]
    tie = {u: Fraction(1), v: Fraction(1)}
    vals, exact = evaluate(prog, [dmax_u, dmax_v, dabs], tie)
    assert exact and vals[0] + vals[1] == 1
    assert vals[0] == (1 if first == u else 0)
    assert evaluate(prog, [dabs], {u: Fraction(0)})[0] == [0]


SOUNDNESS = """
input u : real
input v : real
input z : real
param al : real
param tl : real
param ar : real
param tr : real
param alpha : real
claim max_tie: d(max(u, v))/d(u) + d(max(u, v))/d(v) == 1
claim max_step_at_tie: d(max(u, v))/d(u) + d(max(v, u))/d(u) == 2 * step(u - v)
claim max_step: d(max(u, v))/d(u) + d(max(v, u))/d(u) == 2 * step(u - v) where u != v
claim step_mirror_at_kink: step(-z) == 1 - step(z)
claim step_mirror: step(-z) == 1 - step(z) where z != 0
claim abs_derivative: d(abs(u))/d(u) == step(u) - step(-u)
claim max_min: max(u, v) + min(u, v) == u + v
claim max_minus_min: max(u, v) - min(u, v) == abs(u - v)
claim relu_max: relu(u) == max(u, 0)
claim leaky: max(alpha * z, z) == relu(z) - alpha * relu(-z) where alpha < 1
claim leaky_any_alpha: max(alpha * z, z) == relu(z) - alpha * relu(-z)
claim srelu_unordered: srelu(u, al, tl, ar, tr) == u - (al - 1) * relu(tl - u) + (ar - 1) * relu(u - tr)
claim srelu_ordered: srelu(u, al, tl, ar, tr) == u - (al - 1) * relu(tl - u) + (ar - 1) * relu(u - tr) where tl < tr
claim exp_split: exp(u - v) == exp(u) / exp(v)
claim log_exp: log(exp(u) * exp(v) / (exp(u) + exp(v))) == u + v - log(exp(u) + exp(v))
claim log_product: log(u * v) == log(u) + log(v)
claim shift: exp(u - max(u, v)) / (exp(u - max(u, v)) + exp(v - max(u, v))) == exp(u) / (exp(u) + exp(v))
"""

EXPECTED = {
    "max_tie": "proved",
    "max_step_at_tie": "refuted",
    "max_step": "proved",
    "step_mirror_at_kink": "refuted",
    "step_mirror": "proved",
    "abs_derivative": "proved",
    "max_min": "proved",
    "max_minus_min": "proved",
    "relu_max": "proved",
    "leaky": "proved",
    "leaky_any_alpha": "refuted",
    "srelu_unordered": "refuted",
    "srelu_ordered": "proved",
    "exp_split": "proved",
    "log_exp": "proved",
    "shift": "proved",
}


@pytest.fixture(scope="module")
def soundness(tmp_path_factory):
    spec = tmp_path_factory.mktemp("piecewise") / "kinks.snn"
    spec.write_text(SOUNDNESS)
    model = run.load(str(spec))
    return model, {x.name: x for x in run.check(model, 5.0)}


def test_kinked_identities_are_decided_and_never_proved_at_a_tie(soundness):
    _, verdicts = soundness
    got = {name: verdicts[name].verdict for name in EXPECTED}
    assert got == EXPECTED
    # log(u v) = log u + log v needs u, v > 0: never proved (its sides differ in definedness)
    assert verdicts["log_product"].verdict != "proved"
    for name in ("max_step", "step_mirror", "leaky", "srelu_ordered"):
        assert verdicts[name].engine.startswith("canonical-form+cases"), name


def test_refutations_at_kinks_replay_on_the_kink(soundness):
    _, verdicts = soundness
    cex = verdicts["max_step_at_tie"].counterexample
    assert Fraction(cex["u"]) == Fraction(cex["v"])  # only the tie breaks it
    assert Fraction(verdicts["step_mirror_at_kink"].counterexample["z"]) == 0


def test_case_files_are_answered_unsat_by_z3(soundness, tmp_path):
    model, verdicts = soundness
    files = run.artifacts(model, list(verdicts.values()), ["smtlib"])
    cases = {k: t for k, t in files.items() if ".case" in k}
    assert any(".leaky.case" in k for k in cases)
    assert any(".srelu_ordered.case" in k for k in cases)
    for name, text in cases.items():
        s = z3.Solver()
        s.from_string(text)
        assert s.check() == z3.unsat, name


def test_coq_file_compiles(soundness, tmp_path):
    coqc = _coqc()
    if coqc is None:
        pytest.skip("coqc is not installed")
    model, verdicts = soundness
    files = run.artifacts(model, list(verdicts.values()), ["coq"])
    (name, text), = ((k, t) for k, t in files.items() if k.endswith(".v"))
    (tmp_path / name).write_text(text)
    res = subprocess.run([coqc, name], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("expr, values", [
    (sp.sign(u), {-2: -1, 0: 0, 3: 1}),
    (sp.Heaviside(u), {-2: 0, 0: sp.Rational(1, 2), 3: 1}),
    (sp.Heaviside(u, 0), {-2: 0, 0: 0, 3: 1}),
])
def test_sign_and_heaviside_print_to_smtlib_with_sympys_value_at_zero(expr, values):
    term = SmtPrinter({})._print(expr)
    for x, want in values.items():
        s = z3.Solver()
        s.from_string(f"(declare-const |u| Real)(assert (= |u| {float(x)}))"
                      f"(assert (not (= {term} {float(want)})))")
        assert s.check() == z3.unsat


SHAPES = """
dim N, D, K sizes (3, 4, 2), (4, 2, 3)
input X : real[N, D]
input DY : real[N, K]
param W : real[K, D]
let Y = X @ W^T
claim good: vjp(Y, X, DY) == DY @ W
claim bad: vjp(Y, X, DY) == DY @ W^T
claim bad_where: vjp(Y, X, DY) == DY @ W where X <= DY
claim good2: vjp(Y, W, DY) == DY^T @ X
"""


def test_a_shape_error_refutes_its_claim_only(tmp_path):
    spec = tmp_path / "shapes.snn"
    spec.write_text(SHAPES)
    verdicts = {x.name.split("[")[0] + x.name[x.name.index("["):]: x
                for x in run.check(run.load(str(spec)), 1.0)}
    for sizes in ("[N=3,D=4,K=2]", "[N=4,D=2,K=3]"):
        assert verdicts["good" + sizes].verdict == "proved"
        assert verdicts["good2" + sizes].verdict == "proved"
        bad = verdicts["bad" + sizes]
        assert bad.verdict == "refuted" and bad.engine == "shapes"
        assert bad.reason.startswith("8:29: cannot multiply"), bad.reason
        assert verdicts["bad_where" + sizes].reason.startswith("9:48: cannot compare")
    assert run.exit_status(list(verdicts.values())) == 1
