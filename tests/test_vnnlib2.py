"""The VNN-LIB 2.0 reader: VNN-COMP 2026 files, prefix and infix forms, located errors.

Oracles: exact evaluation of the parsed polynomials against a direct evaluation of random
expressions (Hypothesis), and the PyPI `vnnlib` package (the VNN-LIB 2.0 reference parser) when
it is installed: its canonical print of a file must read back to the same query.
"""

from __future__ import annotations

import os
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verifier.diagnostics import SpecError
from verifier.vnnlib import Property, read_vnnlib
from verifier.vnnlib2 import Var, is_vnnlib2, parse_vnnlib2, read_property

HERE = os.path.dirname(__file__)
DATA = os.path.join(HERE, "data", "vnncomp2026")
MONO = os.path.join(DATA, "monotonic_instance_0.vnnlib")
ACC = os.path.join(DATA, "acc_instance_1.vnnlib")

HEAD = """(vnnlib-version <2.0>)
(declare-network f (declare-input X real [1,2]) (declare-output Y real [3]))
"""


def _read(path) -> str:
    with open(path) as fh:
        return fh.read()


def _atoms(q):
    return [[(dict(a.poly), a.strict) for a in d] for d in q.disjuncts]


def test_monotonic_acasxu_file():
    q = read_property(MONO)
    assert [n.name for n in q.networks] == ["f", "g"]
    f, g = q.networks
    assert g.equal_to == "f" and f.inputs.shape == (5,) and g.outputs.name == "Y_g"
    assert q.linear and len(q.disjuncts) == 1
    last = q.disjuncts[0][-1]  # (Y_f[1] < Y_g[1]), written infix
    assert last.strict
    assert last.poly == {((Var("f", "Y", 1), 1),): 1, ((Var("g", "Y", 1), 1),): -1}
    # (== X_f[3] 0.227272727): both sides, exactly
    eq = [a for a in q.disjuncts[0] if a.variables() == {Var("f", "X", 3)}]
    assert {a.poly[()] for a in eq} == {Fraction(-227272727, 10**9), Fraction(227272727, 10**9)}


def test_adaptive_cruise_control_file():
    q = read_property(ACC)
    assert not q.linear
    assert max(a.degree for d in q.disjuncts for a in d) == 2
    x0, x1 = Var("f", "X", 0), Var("f", "X", 1)
    # (>= (* X[0,0] 200.0) (* X[0,1] X[0,1])) is X1^2 - 200 X0 <= 0 in every disjunct
    phys = {((x1, 2),): Fraction(1), ((x0, 1),): Fraction(-200)}
    assert all(any(a.poly == phys and not a.strict for a in d) for d in q.disjuncts)
    # X[0,0] indexes row-major into the [1,2] tensor
    assert q.networks[0].inputs.label(1) == "X[0,1]"


def test_infix_and_prefix_agree():
    pre = parse_vnnlib2(HEAD + "(assert (< (+ Y[0] (* 2 Y[1])) (- X[0,1] 3)))")
    inf = parse_vnnlib2(HEAD + "(assert ((+ Y[0] (* 2 Y[1])) < (X[0,1] - 3)))")
    assert _atoms(pre) == _atoms(inf)


def test_equal_and_not_equal_and_not():
    q = parse_vnnlib2(HEAD + "(assert (== Y[0] 1))")
    assert len(q.disjuncts) == 1 and len(q.disjuncts[0]) == 2
    q = parse_vnnlib2(HEAD + "(assert (!= Y[0] 1))")
    assert len(q.disjuncts) == 2 and all(a.strict for d in q.disjuncts for a in d)
    a = parse_vnnlib2(HEAD + "(assert (not (<= Y[0] 1)))").disjuncts[0][0]
    b = parse_vnnlib2(HEAD + "(assert (> Y[0] 1))").disjuncts[0][0]
    assert (a.poly, a.strict) == (b.poly, b.strict)


def test_version_detection_keeps_v1_files():
    path = os.path.join(HERE, "data", "vnncomp2021-test", "test_prop.vnnlib")
    old = read_property(path)
    assert isinstance(old, Property)
    assert old == read_vnnlib(path)
    assert not is_vnnlib2(_read(path)) and is_vnnlib2(_read(MONO))


@pytest.mark.parametrize("body, where, words", [
    ("(assert (<= Z[0] 1))", (3, 13), "`Z` is not declared"),
    ("(assert (<= Y[3] 1))", (3, 13), "out of range"),
    ("(assert (<= X[0] 1))", (3, 13), "indexed with 1"),
    ("(assert (<= X 1))", (3, 13), "index it"),
    ("(assert (<= (* Y[0] (/ 1 Y[1])) 1))", (3, 26), "division by a term"),
    ("(assert (<= Y[0] 1)", (3, 1), "unclosed"),
    ("(assert (foo Y[0] 1))", (3, 10), "expected a formula"),
    ("(declare-const X_0 Real)", (3, 2), "VNN-LIB 1.0"),
    ("(assert (<= Y] 1))", (3, 9), "takes two terms"),  # a stray bracket is not dropped
    ("(assert (<= Y[0][1] 1))", (3, 9), "takes two terms"),
])
def test_located_errors(body, where, words):
    with pytest.raises(SpecError) as e:
        parse_vnnlib2(HEAD + body, "q.vnnlib")
    assert words in e.value.message
    assert (e.value.span.line, e.value.span.column) == where
    assert e.value.render().startswith(f"q.vnnlib:{where[0]}:{where[1]}: error:")


def test_declaration_errors():
    with pytest.raises(SpecError, match="declare-hidden"):
        parse_vnnlib2("(vnnlib-version 2.0)\n(declare-network f (declare-input X real [2]) "
                      "(declare-hidden H real [2] \"n1\") (declare-output Y real [1]))")
    with pytest.raises(SpecError, match="not a network declared before") as e:
        parse_vnnlib2("(vnnlib-version 2.0)\n(declare-network g (equal-to f) "
                      "(declare-input X real [2]) (declare-output Y real [1]))")
    assert e.value.span.line == 2
    with pytest.raises(SpecError, match="version 3.0"):
        parse_vnnlib2("(vnnlib-version 3.0)")


# ---- random expressions: the parsed polynomial is the expression's value ------------------

_VARS = ["X[0,0]", "X[0,1]", "Y[0]", "Y[1]", "Y[2]"]
_SLOTS = [Var("f", "X", 0), Var("f", "X", 1), Var("f", "Y", 0), Var("f", "Y", 1),
          Var("f", "Y", 2)]


def _exprs():
    leaf = st.one_of(st.sampled_from(range(5)).map(lambda i: ("v", i)),
                     st.fractions(min_value=-8, max_value=8, max_denominator=8)
                     .map(lambda q: ("n", q)))
    return st.recursive(leaf, lambda sub: st.one_of(
        st.tuples(st.sampled_from(["+", "*", "-"]), st.lists(sub, min_size=1, max_size=3)),
        st.tuples(st.just("infix"), st.sampled_from(["+", "-", "*"]), sub, sub)),
        max_leaves=8)


def _text(e) -> str:
    if e[0] == "v":
        return _VARS[e[1]]
    if e[0] == "n":
        q = e[1]
        s = f"{abs(q.numerator)}" if q.denominator == 1 else None
        if s is None:  # a decimal when exact, else a quotient
            s = f"(/ {abs(q.numerator)} {q.denominator})"
        return s if q >= 0 else f"(- {s})"
    if e[0] == "infix":
        return f"({_text(e[2])} {e[1]} {_text(e[3])})"
    return f"({e[0]} {' '.join(_text(a) for a in e[1])})"


def _value(e, env):
    if e[0] == "v":
        return env[e[1]]
    if e[0] == "n":
        return e[1]
    if e[0] == "infix":
        a, b = _value(e[2], env), _value(e[3], env)
        return a + b if e[1] == "+" else a - b if e[1] == "-" else a * b
    vals = [_value(a, env) for a in e[1]]
    if e[0] == "+":
        return sum(vals, Fraction(0))
    if e[0] == "-":
        return -vals[0] if len(vals) == 1 else vals[0] - sum(vals[1:], Fraction(0))
    out = Fraction(1)
    for v in vals:
        out *= v
    return out


@settings(max_examples=60, deadline=None)
@given(_exprs(), st.lists(st.fractions(min_value=-3, max_value=3, max_denominator=5),
                          min_size=5, max_size=5))
def test_random_expressions_evaluate_exactly(e, point):
    q = parse_vnnlib2(HEAD + f"(assert (<= {_text(e)} 0))")
    (atom,), = q.disjuncts
    env = dict(zip(_SLOTS, point))
    assert atom.value(env) == _value(e, dict(enumerate(point)))


# ---- the reference parser (PyPI `vnnlib`), when installed ---------------------------------

@pytest.mark.parametrize("path", [MONO, ACC])
def test_reference_parser_round_trip(path, tmp_path):
    ref = pytest.importorskip("vnnlib")
    text = _read(path)
    # the reference grammar takes neither the infix comparison nor a bare `2.0` version
    text = text.replace("(Y_f[1] < Y_g[1])", "(< Y_f[1] Y_g[1])")
    text = text.replace("(vnnlib-version 2.0)", "(vnnlib-version <2.0>)")
    canonical = str(ref.parse_query_string(text))
    assert _atoms(parse_vnnlib2(canonical)) == _atoms(parse_vnnlib2(text))
    assert _atoms(parse_vnnlib2(text)) == _atoms(read_property(path))


_PIECES = ["(", ")", "(", ")", " ", "assert", "and", "or", "not", "<=", "<", "==", "!=", "+",
           "-", "*", "/", "X", "Y", "[0]", "[0,1]", "[", "]", "1", "-2.5", "0", "1e400",
           "declare-network", "declare-input", "declare-output", "equal-to", "f", "g", "real",
           "[2]", "[1,2]", "vnnlib-version", "2.0", "<2.0>", ";", "\n"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=40))
def test_any_text_parses_or_raises_spec_error(pieces):
    text = "(vnnlib-version 2.0)\n(declare-network f (declare-input X real [1,2]) " \
           "(declare-output Y real [1]))\n" + " ".join(pieces)
    try:
        parse_vnnlib2(text, "fuzz.vnnlib")
    except SpecError as e:
        assert e.span is None or e.span.line >= 1
