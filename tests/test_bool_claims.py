"""Claims with `and`, `or`, `not` (and `or` in `where` conditions) mean what they say.

Oracle: z3 on our own exact encoding of the formula and the ReLU network (ReLU as `If`),
written here from the formula tree, not from the obligations the tool derives. Every claim
proved must have no violation in z3; every claim refuted must be violated in z3, and its
counterexample must violate the formula when evaluated here in exact rationals.
"""

from __future__ import annotations

import random
from fractions import Fraction

import pytest
import z3

from verifier import run
from verifier.diagnostics import SpecError

W1 = [[1, -2], [Fraction(3, 2), 1], [-1, Fraction(1, 2)], [Fraction(1, 2), Fraction(1, 2)]]
B1 = [Fraction(1, 4), 0, Fraction(-1, 2), Fraction(1, 10)]
W2 = [[1, -1, Fraction(1, 2), 2]]
B2 = [Fraction(-1, 5)]

SPEC_HEAD = """input x : real[2] in box([-1, -1], [1, 1])
network f(in=2) {{
  dense(4, act=relu, W={w1}, b={b1})
  dense(1, W={w2}, b={b2})
}}
"""


def _lit(v) -> str:
    v = Fraction(v)
    return str(v.numerator) if v.denominator == 1 else f"{v.numerator}/{v.denominator}"


def _mat(m) -> str:
    return "[" + ", ".join("[" + ", ".join(_lit(v) for v in r) + "]" for r in m) + "]"


def _head() -> str:
    return SPEC_HEAD.format(w1=_mat(W1), b1="[" + ", ".join(_lit(v) for v in B1) + "]",
                            w2=_mat(W2), b2="[" + ", ".join(_lit(v) for v in B2) + "]")


def net(x, relu):
    h = [relu(sum(W1[i][j] * x[j] for j in range(2)) + B1[i]) for i in range(4)]
    return sum(W2[0][i] * h[i] for i in range(4)) + B2[0]


# a formula: ("cmp", coeffs (y, x0, x1), op, const) | ("and"|"or", [f...]) | ("not", f)
OPS = ("<", "<=", ">", ">=")


def text(f) -> str:
    if f[0] == "cmp":
        (cy, c0, c1), op, c = f[1:]
        return (f"{_lit(cy)} * f(x)[0] + {_lit(c0)} * x[0] + {_lit(c1)} * x[1] {op} "
                f"{_lit(c)}")
    if f[0] == "not":
        return f"not ({text(f[1])})"
    return "(" + f" {f[0]} ".join(text(g) for g in f[1]) + ")"


def holds(f, x, y) -> bool:
    if f[0] == "cmp":
        (cy, c0, c1), op, c = f[1:]
        v = cy * y + c0 * x[0] + c1 * x[1]
        return {"<": v < c, "<=": v <= c, ">": v > c, ">=": v >= c}[op]
    if f[0] == "not":
        return not holds(f[1], x, y)
    parts = [holds(g, x, y) for g in f[1]]
    return all(parts) if f[0] == "and" else any(parts)


def z3_of(f, x, y):
    if f[0] == "cmp":
        (cy, c0, c1), op, c = f[1:]
        v = z3.RealVal(str(cy)) * y + z3.RealVal(str(c0)) * x[0] + z3.RealVal(str(c1)) * x[1]
        c = z3.RealVal(str(c))
        return {"<": v < c, "<=": v <= c, ">": v > c, ">=": v >= c}[op]
    if f[0] == "not":
        return z3.Not(z3_of(f[1], x, y))
    parts = [z3_of(g, x, y) for g in f[1]]
    return z3.And(parts) if f[0] == "and" else z3.Or(parts)


def violated_in_z3(formula, where) -> bool:
    x = [z3.Real("x0"), z3.Real("x1")]
    y = net(x, lambda v: z3.If(v > 0, v, 0))
    s = z3.Solver()
    s.add(*[z3.And(-1 <= v, v <= 1) for v in x])
    s.add(*[z3_of(w, x, y) for w in where])
    s.add(z3.Not(z3_of(formula, x, y)))
    return s.check() == z3.sat


def random_formula(rng: random.Random, depth: int):
    if depth == 0 or rng.random() < 0.3:
        coeffs = (rng.choice([1, -1, Fraction(1, 2)]), rng.choice([0, 1, -1]),
                  rng.choice([0, Fraction(1, 2), -1]))
        return ("cmp", coeffs, rng.choice(OPS), Fraction(rng.randint(-14, 14), 4))
    if rng.random() < 0.25:
        return ("not", random_formula(rng, depth - 1))
    return (rng.choice(["and", "or"]),
            [random_formula(rng, depth - 1) for _ in range(rng.randint(2, 3))])


def decide(tmp_path, formula, where=()):
    spec = _head() + f"claim c: {text(formula)}"
    if where:
        spec += " where " + ", ".join(text(w) for w in where)
    path = tmp_path / "c.snn"
    path.write_text(spec + "\n")
    model = run.load(str(path))
    return model, run.check(model, 20)


def _point(cex) -> list[Fraction]:
    return [Fraction(cex["x[0]"]), Fraction(cex["x[1]"])]


@pytest.mark.parametrize("seed", range(16))
def test_random_formulas_against_z3(tmp_path, seed):
    rng = random.Random(seed)
    formula = random_formula(rng, 3)
    where = [random_formula(rng, 1)] if seed % 3 == 0 else []
    _, verdicts = decide(tmp_path, formula, where)
    truth = violated_in_z3(formula, where)
    kinds = {v.verdict for v in verdicts}
    assert "unknown" not in kinds, [v.reason for v in verdicts]
    if truth:
        assert "refuted" in kinds, text(formula)
        for v in verdicts:
            if v.verdict == "refuted":
                x = _point(v.counterexample)
                assert all(-1 <= t <= 1 for t in x)
                y = net(x, lambda t: max(t, 0))
                assert all(holds(w, x, y) for w in where)
                assert not holds(formula, x, y), (text(formula), x)
    else:
        assert kinds == {"proved"}, (text(formula), [v.reason for v in verdicts])


def test_a_disjunction_is_one_obligation_and_cases_are_named(tmp_path):
    a = ("cmp", (1, 0, 0), "<", Fraction(1))
    b = ("cmp", (0, 1, 0), "<", Fraction(1, 2))
    c = ("cmp", (0, 0, 1), ">", Fraction(-1, 2))
    model, _ = decide(tmp_path, ("or", [a, b]))
    assert [ob.name for ob in model.obligations] == ["c"]
    (ob,) = model.obligations
    assert len(ob.goal) == 1 and len(ob.hypotheses) == 1  # one literal the goal, one negated
    model, _ = decide(tmp_path, ("and", [("or", [a, b]), ("or", [a, c])]))
    assert [ob.name for ob in model.obligations] == ["c.1", "c.2"]


def test_a_claim_true_by_its_form_is_proved(tmp_path):
    a = ("cmp", (1, 0, 0), "<", Fraction(1, 3))
    _, verdicts = decide(tmp_path, ("or", [a, ("not", a)]))
    assert [v.verdict for v in verdicts] == ["proved"]


def test_too_many_cases_is_a_located_error(tmp_path):
    atoms = [("cmp", (1, 0, 0), "<", Fraction(k, 7)) for k in range(9)]
    formula = ("and", [("or", [atoms[i], ("cmp", (0, 1, 0), ">", Fraction(i, 9))])
                       for i in range(9)])
    with pytest.raises(SpecError) as err:
        decide(tmp_path, ("not", formula))
    assert "cases" in err.value.message and err.value.span is not None


def test_or_binds_looser_than_and_and_not_tightest(tmp_path):
    """`a or b and not c` is `a or (b and (not c))`."""
    path = tmp_path / "p.snn"
    path.write_text(_head() + "claim p: x[0] < 0 or x[1] < 0 and not x[0] > 1/2\n")
    model = run.load(str(path))
    # CNF of a or (b and not c): (a or b) and (a or not c): two cases
    assert [ob.name for ob in model.obligations] == ["p.1", "p.2"]
    ops = sorted(sorted(a.op for a in ob.goal + ob.hypotheses) for ob in model.obligations)
    assert ops == [["<", ">="], ["<=", ">="]]
