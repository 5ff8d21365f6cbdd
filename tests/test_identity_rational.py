"""The program's rational canonical form (engines/rational.py): normalisers, roots and equality
side conditions solved for a leaf.

Oracles: PyTorch autograd for the gradients the form proves equal to a formula (batchnorm's DX
with a free upstream gradient, softmax cross-entropy's shortcut for one-hot targets), exact
replay of every counterexample, z3 on the emitted SMT-LIB where a proof keeps one. Claims
that a careless rule would prove (a root of a square, a condition that divides by a leaf, a
condition on an activation) must come out refuted or unknown.
"""

from __future__ import annotations

import os
import random
from fractions import Fraction

import pytest

from verifier import run
from verifier.elaborate import elaborate
from verifier.engines import decide, rational
from verifier.engines.replay import evaluate
from verifier.engines.z3run import run_z3
from verifier.obligations import build_model

torch = pytest.importorskip("torch")

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "specs", "batch")

SPEC = """
dim N, K sizes (2, 3)
input x : real
input y : real
input Y : real[N, K]
input T : real[N, K]
let loss = -sum(T * log_softmax(Y))
claim one_hot: grad(loss, Y) == softmax(Y) - T where rowsum(T) == 1
claim one_hot_wrong_condition: grad(loss, Y) == softmax(Y) - T where rowsum(T) == 2
claim root_of_square: exp(log(x * x) / 2) == x
claim square_of_root: exp(log(x) / 2) * exp(log(x) / 2) == x where x > 0
claim divided_condition: y == 1 where x * y == x
claim atanh_half: x == 1 / 2 where tanh(x) == 1 / 2
"""


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    spec = tmp_path_factory.mktemp("rational") / "small.snn"
    spec.write_text(SPEC)
    model = run.load(str(spec))
    obs = {ob.name: ob for ob in model.obligations}
    verdicts = {v.name: v for v in run.check(model, 10.0)}
    return model, obs, verdicts


def _library(name: str, sizes: dict):
    return build_model(elaborate(os.path.join(ROOT, name), sizes))


def _point(ob, rng) -> dict:
    return {v.symbol: Fraction(rng.randint(-40, 40), rng.randint(1, 9)) for v in ob.variables}


def _matrix(point, ob, name, rows, cols):
    by_name = {v.symbol.name: point[v.symbol] for v in ob.variables}
    return [[by_name[f"{name}[{i},{j}]"] for j in range(cols)] for i in range(rows)]


def test_one_hot_shortcut_is_proved_from_its_side_condition(small):
    model, obs, verdicts = small
    d = rational.decide(model.program, obs["one_hot"])
    assert (d.zero, d.step, d.solved) == (True, "side conditions", 2)
    v = verdicts["one_hot"]
    assert v.verdict == "proved" and v.engine.startswith("canonical-form"), v
    assert "side conditions hold" in v.artifact
    # torch: the gradient of the loss at one-hot targets is softmax(Y) - T
    g = torch.Generator().manual_seed(3)
    for _ in range(5):
        y = torch.randn(2, 3, dtype=torch.float64, generator=g, requires_grad=True)
        t = torch.nn.functional.one_hot(torch.randint(0, 3, (2,), generator=g), 3).double()
        loss = -(t * torch.log_softmax(y, dim=1)).sum()
        (grad,) = torch.autograd.grad(loss, y)
        assert torch.allclose(grad, torch.softmax(y, dim=1) - t, atol=1e-12)


def test_a_wrong_side_condition_is_not_used_to_prove(small):
    model, obs, verdicts = small
    assert rational.decide(model.program, obs["one_hot_wrong_condition"]).zero is False
    v = verdicts["one_hot_wrong_condition"]
    assert v.verdict == "refuted", v  # a counterexample that replayed with rowsum(T) = 2


def test_roots_and_conditions_a_careless_rule_would_prove(small):
    model, obs, verdicts = small
    # exp(log(x^2)/2) is |x|: u^2 = x^2 does not make u = x
    assert rational.decide(model.program, obs["root_of_square"]).zero is False
    assert verdicts["root_of_square"].verdict == "refuted"
    assert float(Fraction(verdicts["root_of_square"].counterexample["x"])) < 0
    # u^2 = x does make u u = x
    d = rational.decide(model.program, obs["square_of_root"])
    assert (d.zero, d.step, d.roots) == (True, "roots", 1)
    assert verdicts["square_of_root"].verdict == "proved"
    # x y = x is linear in y with coefficient x, not a constant: never solved for y
    assert rational.decide(model.program, obs["divided_condition"]).zero is False
    assert verdicts["divided_condition"].verdict == "refuted"
    assert verdicts["divided_condition"].counterexample["x"] == "0"
    # a condition on an activation is never solved for its atom; x = atanh(1/2) has no
    # rational witness, so the claim stays open
    assert rational.decide(model.program, obs["atanh_half"]).zero is not True
    assert verdicts["atanh_half"].verdict == "unknown"


def test_batchnorm_dx_is_proved_with_its_root_and_agrees_with_torch():
    model = _library("batchnorm.snn", {"N": 3, "D": 2, "K": 4})
    ob = next(o for o in model.obligations if o.name == "bn_plain_DX")
    d = rational.decide(model.program, ob)
    assert d.zero is True and d.roots == 2 and d.step == "roots", d
    v = decide(ob, model.program, 10.0)
    assert v.verdict == "proved" and v.engine == "canonical-form", v
    assert v.smt is None and "not asked" in v.details["notes"][0]  # z3 not asked on a root
    # the formula the claim states (its rhs) against torch's gradient of batchnorm
    rng = random.Random(5)
    for _ in range(3):
        point = _point(ob, rng)
        rhs, _ = evaluate(model.program, [a.rhs for a in ob.goal], point)
        x = torch.tensor(_matrix(point, ob, "X", 3, 2), dtype=torch.float64, requires_grad=True)
        dy = torch.tensor(_matrix(point, ob, "DYd", 3, 2), dtype=torch.float64)
        centred = x - x.mean(dim=0)
        z = centred / torch.sqrt(x.var(dim=0, unbiased=False))
        (dx,) = torch.autograd.grad(z, x, dy)
        want = {a.entry: float(dx[a.entry]) for a in ob.goal}
        for a, got in zip(ob.goal, rhs):
            assert abs(float(got) - want[a.entry]) <= 1e-9 * (1 + abs(want[a.entry]))


def test_softmax_proofs_skip_z3_and_small_ones_keep_a_checked_file():
    model = _library("softmax.snn", {"N": 3, "D": 2, "K": 4})
    ob = next(o for o in model.obligations if o.name == "softmax_DZ")
    d = rational.decide(model.program, ob)
    assert d.zero is True and d.step == "free" and d.normalisers == 3, d  # one softmax sum per row
    v = decide(ob, model.program, 10.0)
    assert v.verdict == "proved" and v.smt is None, v
    model = _library("linear.snn", {"N": 3, "D": 2, "K": 4})
    ob = next(o for o in model.obligations if o.name == "linear_Db")
    v = decide(ob, model.program, 10.0)
    assert v.verdict == "proved", v
    if v.smt is not None:  # z3 confirmed within its short budget: the file says so again
        assert v.engine == "canonical-form+z3" and run_z3(v.smt, 30.0).answer == "unsat"


@pytest.mark.parametrize("name", ["bn_plain_DX__sign", "bn_DX_yeh__sqrt_forgotten"])
def test_batchnorm_mutants_are_refuted_by_a_replayed_point(name):
    model = _library(os.path.join("wrong", "batchnorm.snn"), {"N": 3, "D": 2, "K": 4})
    ob = next(o for o in model.obligations if o.name == name)
    assert rational.decide(model.program, ob).zero is False
    v = decide(ob, model.program, 10.0)
    assert v.verdict == "refuted" and v.counterexample, v
