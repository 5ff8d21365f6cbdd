"""VNN-LIB inputs that are not a plain box, strict bounds, and generated hostile numerals and
nesting, in process (fast). Answers of `verify-vnn` are checked against z3's exact optimum of
the network over the input region (ReLU as `If`, the float32 weights as exact rationals) and
witnesses against every constraint and onnxruntime.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import z3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_hostile import VHEAD, relu_onnx
from verifier.diagnostics import SpecError
from verifier.syntax.parser import MAX_DEPTH, parse
from verifier.vnn import check
from verifier.vnnlib import MAX_EXPONENT, MAX_NUMERAL, parse_vnnlib

LINEAR = VHEAD + ("(assert (>= X_0 -1))\n(assert (<= X_0 1))\n"
                  "(assert (<= (+ X_0 X_1) 1))\n(assert (>= (- X_1 X_0) 0))\n")


def _exact(a) -> list:
    return [[Fraction(float(v)) for v in row] for row in np.atleast_2d(a)]


def z3_max(weights) -> Fraction:
    """max Y_0 over the region of LINEAR (-1 <= X_0 <= 1, X_0 + X_1 <= 1, X_1 >= X_0),
    exactly."""
    w1, b1, w2, b2 = (np.asarray(a, dtype=np.float32) for a in weights)
    x0, x1 = xs = z3.Reals("X_0 X_1")
    hidden = [z3.If(h > 0, h, 0) for h in
              (z3.Sum([z3.RealVal(str(w)) * x for w, x in zip(row, xs)]) + z3.RealVal(str(b))
               for row, b in zip(_exact(w1), [Fraction(float(v)) for v in b1]))]
    y = z3.Sum([z3.RealVal(str(w)) * h for w, h in zip(_exact(w2)[0], hidden)]) + \
        z3.RealVal(str(Fraction(float(b2[0]))))
    opt = z3.Optimize()
    opt.add(x0 >= -1, x0 <= 1, x0 + x1 <= 1, x1 - x0 >= 0)
    goal = opt.maximize(y)
    assert opt.check() == z3.sat
    v = goal.value()
    return Fraction(v.as_long()) if z3.is_int_value(v) else \
        Fraction(v.numerator_as_long(), v.denominator_as_long())


def decide(tmp_path, weights, text: str):
    (tmp_path / "n.onnx").write_bytes(relu_onnx(*weights))
    (tmp_path / "p.vnnlib").write_text(text)
    result, _ = check(str(tmp_path / "n.onnx"), str(tmp_path / "p.vnnlib"), timeout=30,
                      workers=1)
    return result


def ort(weights, x) -> float:
    import onnxruntime as rt

    sess = rt.InferenceSession(relu_onnx(*weights), providers=["CPUExecutionProvider"])
    return float(sess.run(None, {"X": np.asarray([x], dtype=np.float32)})[0][0, 0])


def test_an_input_bounded_only_by_linear_constraints_gets_its_exact_range():
    (d,) = parse_vnnlib(LINEAR + "(assert (>= Y_0 0))\n").disjuncts
    # X_1 >= X_0 >= -1 and X_1 <= 1 - X_0 <= 2
    assert (d.lo, d.hi) == ([-1, -1], [1, 2])
    assert len([c for c in d.output_constraints() if not c.y]) == 2  # rows stay exact


def test_an_input_left_unbounded_is_a_located_error():
    with pytest.raises(SpecError) as err:
        parse_vnnlib(VHEAD + "(assert (>= X_0 -1))(assert (<= X_0 1))"
                     "(assert (>= (+ X_0 X_1) 0))(assert (>= Y_0 0))", "p.vnnlib")
    assert "X_1 is unbounded above" in err.value.message
    assert err.value.render().startswith("p.vnnlib:2:16: error:") and err.value.fix


WEIGHTS = st.lists(st.integers(-4, 4).map(lambda k: k / 2), min_size=9, max_size=9)


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(flat=WEIGHTS, offset=st.sampled_from([Fraction(-1, 4), Fraction(1, 4)]))
def test_answers_over_a_linear_input_region_match_the_exact_optimum(tmp_path_factory, flat,
                                                                     offset):
    weights = ([flat[0:2], flat[2:4]], flat[4:6], [flat[6:8]], [flat[8]])
    best = z3_max(weights)
    threshold = best + offset
    text = LINEAR + f"(assert (>= Y_0 {float(threshold)!r}))\n"
    result = decide(tmp_path_factory.mktemp("lin"), weights, text)
    if offset > 0:
        assert result.answer == "unsat", (best, result.answer, result.reason)
        return
    assert result.answer == "sat", (best, result.answer, result.reason)
    x = [Fraction(v) for v in result.witness_x]
    assert -1 <= x[0] <= 1 and x[0] + x[1] <= 1 and x[1] - x[0] >= 0  # in the region, exactly
    assert ort(weights, [float(v) for v in x]) >= float(threshold) - 1e-5


def test_a_strict_bound_at_a_point_is_an_empty_region(tmp_path):
    weights = ([[1, 0], [0, 1]], [0, 0], [[1, 1]], [0])
    box = "(assert (>= X_1 -1))(assert (<= X_1 1))(assert (>= Y_0 -100))"
    assert parse_vnnlib(VHEAD + "(assert (> X_0 1))(assert (< X_0 1))" + box).disjuncts == []
    assert decide(tmp_path, weights, VHEAD + "(assert (> X_0 1))(assert (< X_0 1))"
                  + box).answer == "unsat"
    closed = decide(tmp_path, weights, VHEAD + "(assert (>= X_0 1))(assert (<= X_0 1))" + box)
    assert closed.answer == "sat" and Fraction(closed.witness_x[0]) == 1


def test_a_strict_bound_is_never_crossed_by_a_witness(tmp_path):
    # Y_0 = relu(X_0) with X_0 < 1: Y_0 >= 1 has no solution, though it holds at X_0 = 1
    weights = ([[1, 0], [0, 0]], [0, 0], [[1, 0]], [0])
    text = VHEAD + "(assert (>= X_0 0))(assert (< X_0 1))(assert (>= X_1 0))(assert (<= X_1 1))"
    assert decide(tmp_path, weights, text + "(assert (>= Y_0 1))").answer == "unsat"
    near = decide(tmp_path, weights, text + "(assert (>= Y_0 0.99))")
    assert near.answer == "sat" and 0.99 <= Fraction(near.witness_x[0]) < 1


def test_empty_input_region_from_linear_constraints(tmp_path):
    weights = ([[1, 0], [0, 1]], [0, 0], [[1, 1]], [0])
    text = VHEAD + ("(assert (>= X_0 -1))(assert (<= X_0 1))(assert (< (+ X_0 X_1) 0))"
                    "(assert (> (+ X_0 X_1) 0))(assert (>= Y_0 -100))")
    assert decide(tmp_path, weights, text).answer == "unsat"


# ---- generated numerals and nesting ---------------------------------------------------------

DIGITS = st.text("0123456789", min_size=1, max_size=1200)
NUMERALS = st.builds(lambda a, b, e: a + ("." + b if b else "") + e, DIGITS,
                     st.text("0123456789", max_size=1200),
                     st.one_of(st.just(""), st.integers(-5000, 5000).map(lambda k: f"e{k}")))


@settings(max_examples=60, deadline=None)
@given(numeral=NUMERALS)
def test_vnnlib_numerals_are_exact_or_a_located_error(numeral):
    text = VHEAD + f"(assert (>= X_0 -1))(assert (<= X_0 1))(assert (>= X_1 -1))" \
                   f"(assert (<= X_1 1))\n(assert (>= Y_0 {numeral}))"
    exponent = int(numeral.partition("e")[2] or 0)
    try:
        prop = parse_vnnlib(text, "p.vnnlib")
    except SpecError as err:
        assert len(numeral) > MAX_NUMERAL or abs(exponent) > MAX_EXPONENT
        assert err.render().startswith("p.vnnlib:5:17: error:")
        assert err.fix
        return
    assert len(numeral) <= MAX_NUMERAL and abs(exponent) <= MAX_EXPONENT
    (c,) = prop.disjuncts[0].output_constraints()
    assert c.const == Fraction(numeral)  # (>= Y_0 n) is -Y_0 + n <= 0


NESTINGS = {
    "parentheses": lambda n: "(" * n + "x" + ")" * n,
    "negations": lambda n: "- " * n + "x",
    "calls": lambda n: "tanh(" * n + "x" + ")" * n,
    "sum": lambda n: " + ".join(["x"] * (n + 1)),
    "powers": lambda n: "x" + " ^ 1" * n,
    "lists": lambda n: "[" * n + "x" + "]" * n,
}


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(sorted(NESTINGS)), depth=st.integers(1, 3 * MAX_DEPTH))
def test_nesting_parses_up_to_the_limit_and_is_a_located_error_beyond(kind, depth):
    text = "input x : real\nclaim c: " + NESTINGS[kind](depth) + " <= 1\n"
    try:
        parse(text, "s.snn")
    except SpecError as err:
        assert depth > MAX_DEPTH - 2, (kind, depth, err.message)
        assert "nested too deeply" in err.message and err.fix
        assert err.render().startswith("s.snn:2:")
        return
    assert depth <= MAX_DEPTH, (kind, depth)


# ---- the size budget ------------------------------------------------------------------------

def test_max_terms_refuses_below_the_estimate_and_admits_above(tmp_path, monkeypatch):
    from verifier import budget
    from verifier.elaborate import elaborate

    spec = tmp_path / "s.snn"
    spec.write_text("input z : real[4]\nnetwork f(in=4) { dense(8, tanh) dense(1) }\n"
                    "derive hessian f(z)[0] wrt z\n")
    monkeypatch.setattr(budget, "_override", None)
    monkeypatch.setenv(budget.MAX_TERMS_VAR, "100")
    with pytest.raises(SpecError) as err:
        elaborate(str(spec))
    assert err.value.message.startswith("too large: ~") and "(limit 100)" in err.value.message
    assert err.value.span is not None and "--max-terms" in err.value.fix
    budget.configure(10**6)  # the command line wins over the environment
    try:
        assert elaborate(str(spec)).networks
    finally:
        budget.configure(None)
