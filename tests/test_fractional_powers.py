"""Rational exponents `x^(p/q)` in the spec language: the real power, defined for x >= 0
(x > 0 when p/q < 0).

Oracles: numpy and mpmath values of the power at random points (against the spec's terms and
against interval enclosures over random boxes); z3 on the emitted SMT-LIB text (the fresh
root with its defining polynomial); the verdicts of claims whose truth is known in closed
form, counterexamples evaluated again by mpmath and numpy; coqc on the emitted lemma.
"""

from __future__ import annotations

import os
import subprocess
import sys
from fractions import Fraction

import mpmath
import numpy as np
import pytest
import sympy as sp
from tools import coqc as _coqc
from tools import require

from verifier import run
from verifier.emit import coq, lean, smtlib
from verifier.emit.proofs import coq_counts
from verifier.engines.intervals import bounds_of, interval_of
from verifier.engines.replay import evaluate
from verifier.symbolic.program import Program

z3 = require("z3")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPONENTS = ["3/2", "-1/2", "2/3", "-5/4", "7/3", "1/2", "-3/2", "5/6"]


def load(tmp_path, text: str, name: str = "spec"):
    path = tmp_path / f"{name}.snn"
    path.write_text(text, encoding="utf-8")
    return run.load(str(path))


def verify(tmp_path, text: str, *args):
    path = tmp_path / "spec.snn"
    path.write_text(text, encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "verifier", str(path), *args],
                          capture_output=True, text=True, timeout=300, check=False, cwd=ROOT)


def _power(v: float, e: str) -> float:
    p, q = map(int, e.split("/"))
    return float(np.power(v, p / q))


@pytest.mark.parametrize("e", EXPONENTS)
def test_powers_equal_numpy_and_mpmath_at_random_points(tmp_path, e):
    model = load(tmp_path, f"input x : real[2] in box([1/10, 0], [3, 2])\n"
                           f"claim c: (x[0] + x[1]^2)^({e}) - x[1]^({e}) * x[0] <= 1000\n")
    (ob,) = model.obligations
    term = ob.goal[0].lhs
    x0, x1 = (v.symbol for v in ob.variables)
    p, q = map(int, e.split("/"))
    rng = np.random.default_rng(abs(p) * 31 + q)
    for a, b in rng.uniform((0.1, 0.01), (3.0, 2.0), (20, 2)):
        fa, fb = Fraction(a).limit_denominator(10**6), Fraction(b).limit_denominator(10**6)
        (got,), _ = evaluate(model.program, [term], {x0: fa, x1: fb})
        with mpmath.workdps(40):
            ma = mpmath.mpf(fa.numerator) / fa.denominator
            mb = mpmath.mpf(fb.numerator) / fb.denominator
            r = mpmath.mpf(p) / q
            want = mpmath.power(ma + mb**2, r) - mpmath.power(mb, r) * ma
            assert abs(mpmath.mpf(got) - want) <= mpmath.mpf(10) ** -25 * (1 + abs(want))
        npv = _power(float(fa) + float(fb) ** 2, e) - _power(float(fb), e) * float(fa)
        assert float(got) == pytest.approx(npv, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("e", EXPONENTS)
def test_interval_enclosures_contain_sampled_values(e):
    x = sp.Symbol("x", real=True)
    p, q = map(int, e.split("/"))
    term = x ** sp.Rational(p, q)

    rng = np.random.default_rng(q * 17 + abs(p))
    for _ in range(20):
        lo, hi = sorted(rng.uniform(0.0 if p > 0 else 0.05, 5.0, 2))
        box = {x: (Fraction(lo), Fraction(hi))}
        elo, ehi = bounds_of(interval_of(Program(), term, box))
        pts = np.concatenate([[lo, hi], rng.uniform(lo, hi, 50)])
        vals = np.power(pts, p / q)
        assert elo is not None and ehi is not None
        assert float(elo) <= vals.min() * (1 + 1e-12) + 1e-300
        assert vals.max() <= float(ehi) * (1 + 1e-12)
    # a box reaching outside the domain gets no bound at all (it was clipped at 0)
    box = {x: (Fraction(-1, 100), Fraction(4))}
    assert bounds_of(interval_of(Program(), term, box)) == (None, None)
    if p < 0:
        assert bounds_of(interval_of(Program(), term, {x: (Fraction(0), Fraction(1))})) \
            == (None, None)


def test_claims_are_decided_within_the_domain_only(tmp_path):
    text = ("input x : real in [1, 2]\ninput y : real in [0, 3]\ninput z : real in [-1, 4]\n"
            "claim a: x^(3/2) <= 2829/1000\n"      # 2^(3/2) = 2.8284...
            "claim b: x^(3/2) <= 2828/1000\n"      # false at x = 2
            "claim c: y^(1/3) < 1443/1000\n"       # 3^(1/3) = 1.44225...
            "claim h: y^(1/3) < 1442/1000\n"       # false at y = 3
            "claim e: z^(1/2) <= 2\n"              # undefined for z < 0: never proved
            "claim f: (z^(1/2))^2 <= 4\n"          # not cancelled to z <= 4
            "claim g: x^(-1/2) >= 7071/10000\n")   # 2^(-1/2) = 0.70710...
    model = load(tmp_path, text)
    verdicts = {v.name: v for v in run.check(model, 30, jobs=1)}
    assert {n: v.verdict for n, v in verdicts.items()} == {
        "a": "proved", "b": "refuted", "c": "proved", "h": "refuted", "e": "unknown",
        "f": "unknown", "g": "proved"}
    for name, var, e, bound in (("b", "x", Fraction(3, 2), Fraction(2828, 1000)),
                                ("h", "y", Fraction(1, 3), Fraction(1442, 1000))):
        point = Fraction(str(verdicts[name].counterexample[var]))
        with mpmath.workdps(40):
            value = mpmath.power(mpmath.mpf(point.numerator) / point.denominator,
                                 mpmath.mpf(e.numerator) / e.denominator)
        assert value > mpmath.mpf(bound.numerator) / bound.denominator
        assert np.power(float(point), float(e)) > float(bound)


def test_smtlib_roots_are_answered_by_z3_as_reported(tmp_path):
    model = load(tmp_path, "input x : real in [1, 2]\ninput z : real in [-1, 4]\n"
                           "claim a: x^(3/2) <= 2829/1000\n"
                           "claim b: x^(-2/3) <= 1\n"
                           "claim e: z^(1/2) <= 2\n")
    answers = {}
    for ob in model.obligations:
        text = smtlib.encode(ob, model.program).text
        assert "(= (* " in text  # the root's defining polynomial
        s = z3.Solver()
        s.from_string(text)
        answers[ob.name] = str(s.check())
        if ob.name == "e":  # z3's witness lies outside the square root's domain
            m = s.model()
            zv = next(m[d] for d in m.decls() if d.name() == "z")
            assert float(Fraction(str(zv.as_fraction()))) < 0
    assert answers == {"a": "unsat", "b": "unsat", "e": "sat"}


def test_roots_of_bases_positive_by_their_sign_rules_need_no_domain_case(tmp_path):
    """A base that is a sum of squares plus a positive constant (a variance plus epsilon) is
    inside the power's domain everywhere: its root is defined unconditionally and the negated
    goal has no point outside the domain to offer, so z3 proves the true claim; a square
    under a negative exponent can still be 0 (outside the domain), and a false claim on a
    positive base stays sat at a point where it is false."""
    model = load(tmp_path, "input z : real in [-1, 4]\n"
                           "claim f: (z^2 + 1/100)^(1/2) >= z\n"
                           "claim g: (z^2)^(-1/2) * z^2 <= 5\n"
                           "claim h: (z^2 + 1)^(1/2) <= 4\n")
    answers, texts = {}, {}
    for ob in model.obligations:
        text = texts[ob.name] = smtlib.encode(ob, model.program).text
        s = z3.Solver()
        s.from_string(text)
        answers[ob.name] = str(s.check())
        if ob.name == "h":
            m = s.model()
            zv = float(Fraction(str(next(m[d] for d in m.decls()
                                         if d.name() == "z").as_fraction())))
            assert (zv * zv + 1) ** 0.5 > 4
    assert answers == {"f": "unsat", "g": "sat", "h": "sat"}
    # f: the root unconditional, no disjunct beside the negated claim; g: the case z^2 <= 0
    assert "(=> " not in texts["f"] and "(assert (or " not in texts["f"]
    assert "(assert (or " in texts["g"]


@pytest.mark.parametrize("text, where, message", [
    ("claim c: x^(3/) <= 1", "2:15", "unexpected"),
    ("claim c: x^(1/0) <= 1", "2:15", "division by zero"),
    ("claim c: x^(x) <= 1", "2:13", "the exponent must be a constant number"),
    ("claim c: x^(1/100) <= 1", "2:13", "exponent 1/100 is out of range"),
    ("claim c: (x - 5)^(1/2) <= 1", "2:10", "defined for x >= 0, but its base is at most -3"),
    ("claim c: (x - 2)^(-1/2) <= 1", "2:10", "defined for x > 0, but its base is at most 0"),
    ("claim c: (-8)^(1/3) + x <= 1", "2:10", "the base is -8 here"),
])
def test_malformed_or_impossible_exponents_are_located_errors(tmp_path, text, where, message):
    res = verify(tmp_path, "input x : real in [1, 2]\n" + text + "\n")
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr
    assert f"spec.snn:{where}: error:" in res.stderr and message in res.stderr, res.stderr


def test_a_wrong_law_with_a_three_halves_power_is_refuted_with_a_replayed_point(tmp_path):
    """phi(u, r) against a law with r^(3/2) terms; the law's true form is known exactly:
    the network is phi = 0.3 * r^(3/2) - 0.1 * tanh(u0) written as a one-unit dense net plus
    the power, and the wrong law has the power's coefficient negated."""
    rng = np.random.default_rng(3)
    W1 = np.round(rng.normal(0, 0.5, (4, 3)), 3)
    b1 = np.round(rng.normal(0, 0.1, 4), 3)
    W2, b2 = np.round(rng.normal(0, 0.5, (1, 4)), 3), np.round(rng.normal(0, 0.1, 1), 3)
    np.savez(tmp_path / "phi.npz", W1=W1, b1=b1, W2=W2, b2=b2)
    spec = ('network phi(in=3) load "phi.npz" {\n  dense(4, tanh)\n  dense(1)\n}\n'
            "input u : real[2] in box([1, 1/2], [3/2, 1])\n"
            "let r = sqrt(u[0]^2 + u[1]^2)\n"
            "let m = phi([u[0], u[1], r])\n"
            "claim right: abs(m[0] + 3/10 * r^(3/2) - (m[0] + 3/10 * r^(3/2))) <= 1/1000\n"
            "claim wrong: abs(m[0] + 3/10 * r^(3/2) - (m[0] - 3/10 * r^(3/2))) <= 1/10\n")
    model = load(tmp_path, spec)
    verdicts = {v.name: v for v in run.check(model, 30, jobs=1)}
    assert verdicts["right"].verdict == "proved"
    v = verdicts["wrong"]
    assert v.verdict == "refuted"
    u = np.array([float(Fraction(str(v.counterexample[f"u[{i}]"]))) for i in (0, 1)])
    assert np.all(u >= [1, 0.5]) and np.all(u <= [1.5, 1])
    r = np.hypot(*u)
    assert abs(0.6 * r**1.5) > 0.1  # numpy: the law is off by 0.6 r^(3/2) there


def test_coq_and_lean_print_real_powers_and_coqc_proves_the_bound(tmp_path):
    model = load(tmp_path, "input x : real in [1, 2]\ninput y : real in [1/2, 3]\n"
                           "claim a: x^(3/2) <= 2829/1000\n"
                           "claim c: y^(1/3) < 1443/1000\n")
    verdicts = run.check(model, 30, jobs=1)
    assert [v.verdict for v in verdicts] == ["proved", "proved"]
    (ltext,) = lean.emit(model, verdicts).values()
    assert "y ^ ((1 / 3) : ℝ)" in ltext and "(Real.sqrt x) ^ 3" in ltext
    coqc = _coqc()
    if coqc is None:
        pytest.skip("coqc not installed")
    ((vname, text),) = coq.emit(model, verdicts, coqc=coqc).items()
    assert "(sqrt x) ^ 3 <= (2829 / 1000)" in text
    assert "0 < y ->" in text and "Rpower y (1 / 3) < (1443 / 1000)" in text
    counts = {k: (c["coq_qed"], c["coq_admitted"]) for k, c in coq_counts(text).items()}
    assert counts == {"a": (1, 0), "c": (1, 0)}
    (tmp_path / vname).write_text(text, encoding="utf-8")
    res = subprocess.run([coqc, vname], cwd=tmp_path, capture_output=True, text=True,
                         timeout=600, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
