"""VNN-LIB reader: the benchmark files, normal form, exact numerals and located errors."""

from __future__ import annotations

import glob
import os
from fractions import Fraction

import pytest

from verifier.diagnostics import SpecError
from verifier.vnnlib import parse_vnnlib, read_vnnlib

DATA = os.path.join(os.path.dirname(__file__), "data")  # sources in data/README.md
FILES = sorted(p for p in glob.glob(os.path.join(DATA, "**", "*.vnnlib"), recursive=True)
               if "(vnnlib-version" not in open(p, encoding="utf-8").read(1 << 16))  # 1.0 only
HEAD = "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n"
BOX = "(assert (>= X_0 -1))\n(assert (<= X_0 1))\n(assert (>= X_1 0))\n(assert (<= X_1 2))\n"


def test_shipped_files_are_there():
    """The VNN-LIB 1.0 files other tests read are shipped (further ones may be added; every
    one of them is parsed below)."""
    names = {os.path.relpath(p, DATA) for p in FILES}
    expected = {f"vnncomp2021-acasxu/prop_{i}.vnnlib" for i in range(1, 11)}
    expected |= {f"vnncomp2021-test/test_{n}.vnnlib" for n in ("nano", "prop", "small", "tiny")}
    expected |= {"windController.vnnlib", "vnncomp2026/cersyve/prop_pendulum.vnnlib"}
    assert expected <= names, sorted(expected - names)


@pytest.mark.parametrize("path", FILES, ids=lambda p: os.path.relpath(p, DATA))
def test_benchmark_files_parse(path):
    prop = read_vnnlib(path)
    assert prop.disjuncts
    for d in prop.disjuncts:
        assert all(lo <= hi for lo, hi in zip(d.lo, d.hi))


def test_acasxu_shapes():
    base = os.path.join(DATA, "vnncomp2021-acasxu")
    p1 = read_vnnlib(os.path.join(base, "prop_1.vnnlib"))
    assert (p1.n_inputs, p1.n_outputs, len(p1.disjuncts)) == (5, 5, 1)
    (c,) = p1.disjuncts[0].output_constraints()
    # (>= Y_0 3.991125645861615) becomes -Y_0 + 3.991125645861615 <= 0, exactly
    assert c.y == ((0, Fraction(-1)),) and c.const == Fraction("3.991125645861615")
    assert p1.disjuncts[0].lo[0] == Fraction("0.6")
    p6 = read_vnnlib(os.path.join(base, "prop_6.vnnlib"))
    assert len(p6.disjuncts) == 8  # 2 input boxes x 4 output disjuncts
    assert {tuple(d.lo) for d in p6.disjuncts} and len({tuple(d.lo) for d in p6.disjuncts}) == 2


def test_normal_form_strict_linear_and_exponents():
    text = HEAD + BOX + """
(assert (or (and (< Y_0 1.5e-1) (> (+ Y_0 (* 2 X_0) (- X_1)) -3E+2))
            (>= (* -0.5 Y_0) (- 1))))
"""
    prop = parse_vnnlib(text)
    assert len(prop.disjuncts) == 2
    a, b = prop.disjuncts[0].output_constraints()
    assert a.strict and a.y == ((0, Fraction(1)),) and a.const == Fraction(-15, 100)
    # Y_0 + 2 X_0 - X_1 > -300  ->  -Y_0 - 2 X_0 + X_1 - 300 < 0
    assert b.strict and b.x == ((0, Fraction(-2)), (1, Fraction(1)))
    assert b.const == Fraction(-300)
    (c,) = prop.disjuncts[1].output_constraints()
    assert not c.strict and c.y == ((0, Fraction(1, 2)),) and c.const == Fraction(-1)
    assert prop.disjuncts[0].lo == [Fraction(-1), Fraction(0)]


def test_strict_input_bound_is_kept_as_constraint():
    text = HEAD + "(assert (> X_0 -1))(assert (<= X_0 1))(assert (>= X_1 0))(assert (<= X_1 2))"
    (d,) = parse_vnnlib(text).disjuncts
    assert d.lo[0] == -1  # the closed box for bounding
    assert any(c.strict for c in d.output_constraints())  # and the strict fact for replay


@pytest.mark.parametrize("text, line, col, words", [
    (HEAD + BOX + "(assert (= Y_0 1))", 8, 10, "unsupported operator `=`"),
    (HEAD + BOX + "(assert (<= Y_1 1))", 8, 13, "`Y_1` is used before it is declared"),
    (HEAD + BOX + "(assert (<= (* X_0 Y_0) 1))", 8, 20, "not linear"),
    (HEAD + BOX + "(assert (<= Y_0 1)", 8, 1, "unclosed"),
    (HEAD + BOX + "(assert (<= Y_0 1)))", 8, 20, "unexpected `)`"),
    (HEAD + BOX + "(assert (<= Y_0 1x))", 8, 17, "malformed number `1x`"),
    (HEAD + BOX + "(assert (not (<= Y_0 1)))", 8, 10, "unsupported operator `not`"),
    ("(declare-const Z Real)", 1, 16, "unsupported variable name"),
    ("(declare-const X_0 Int)", 1, 20, "unsupported sort"),
    (HEAD + "(assert (<= X_0 1))", 1, 16, "X_0 is unbounded below"),
    (HEAD + BOX + "(push 1)", 8, 2, "unsupported command"),
])
def test_errors_are_located(text, line, col, words):
    with pytest.raises(SpecError) as err:
        parse_vnnlib(text, "p.vnnlib")
    e = err.value
    assert words in e.message
    assert e.span is not None and (e.span.line, e.span.column) == (line, col), e.render()
    assert e.render().startswith(f"p.vnnlib:{line}:{col}: error:")


def test_missing_file():
    with pytest.raises(SpecError, match="no such VNN-LIB file"):
        read_vnnlib("/nonexistent/p.vnnlib")
