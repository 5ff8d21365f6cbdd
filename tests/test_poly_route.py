"""Spec claims with polynomial atoms or conditions on a wide ReLU network go to the VNN-LIB
2.0 engines (`poly_route`) and get the answers the network gives.

Oracles: onnxruntime on the ONNX file (dense samples set the thresholds: a claim with a
margin above everything sampled must be proved, one below a sampled value refuted) and the
counterexample evaluated with onnxruntime; z3 confirms that the VNN-LIB 2.0 query written
for a claim is, atom for atom, the claim's violation (checked at random points).
"""

from __future__ import annotations

import numpy as np
import pytest
from test_multinet import run_ort, write_mlp
from tools import require

require("onnx")
require("onnxruntime")

from verifier import run
from verifier.engines.poly_route import as_query

BOX = ([-1.0, 0.5], [1.0, 2.0])
HEAD = """input u : real[2] in box([-1, 0.5], [1, 2])
network n(in=2) load "f.onnx" {{ }}
let y = n(u)[0]
claim c: {claim}
"""


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    d = tmp_path_factory.mktemp("poly")
    path = write_mlp(d / "f.onnx", np.random.default_rng(3), [2, 32, 32, 1])
    rng = np.random.default_rng(0)
    U = rng.uniform(BOX[0], BOX[1], size=(4000, 2))
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    Y = np.array([sess.run(None, {name: u.astype(np.float32)[None]})[0].ravel()[0]
                  for u in U])
    return d, path, U, Y


def _decide(d, claim):
    (d / "c.snn").write_text(HEAD.format(claim=claim))
    model = run.load(str(d / "c.snn"))
    return model, run.check(model, 60)


def _cex(v):
    return [float(sum(map(float, str(v.counterexample[k]).split("/")[:1])) /
                  (float(str(v.counterexample[k]).split("/")[1])
                   if "/" in str(v.counterexample[k]) else 1.0))
            for k in ("u[0]", "u[1]")]


def test_a_product_of_output_and_input(net):
    d, path, U, Y = net
    top = float(np.max(Y * U[:, 1]))
    model, (v,) = _decide(d, f"y * u[1] <= {top + 0.25 * abs(top) + 0.5:.4f}")
    assert v.engine == "nonlinear-bab" and v.verdict == "proved", v.reason
    model, (v,) = _decide(d, f"y * u[1] <= {top - 0.2 * abs(top) - 0.05:.4f}")
    assert v.verdict == "refuted"
    x = _cex(v)
    assert BOX[0][0] <= x[0] <= BOX[1][0] and BOX[0][1] <= x[1] <= BOX[1][1]
    assert run_ort(path, x)[0] * x[1] > top - 0.2 * abs(top) - 0.05 - 1e-4


def test_a_condition_on_the_input(net):
    """`where (u[0] - a)^2 + (u[1] - b)^2 <= 1/4`: a disc; the bound is the disc's, not the
    box's (the disc chosen among nine where the network's sampled maximum is farthest above
    the disc's)."""
    d, path, U, Y = net
    centres = [(a, b) for a in (-0.5, 0.0, 0.5) for b in (1.0, 1.25, 1.5)]
    gaps = []
    for a, b in centres:
        disc = (U[:, 0] - a) ** 2 + (U[:, 1] - b) ** 2 <= 0.25
        gaps.append((float(np.max(Y)) - float(np.max(Y[disc])), a, b, float(np.max(Y[disc]))))
    gap, a, b, inside = max(gaps)
    assert gap > 0.05
    bound = inside + 0.3 * gap
    model, (v,) = _decide(d, f"y <= {bound:.4f} where (u[0] - {a})^2 + (u[1] - {b})^2 <= 0.25")
    assert v.verdict == "proved", v.reason
    model, (v,) = _decide(d, f"y <= {bound:.4f}")  # without the condition: false
    assert v.verdict == "refuted"


def test_the_query_is_the_claims_violation(net):
    """At random points (inputs and a free output value), the query's disjuncts hold exactly
    where the claim's hypotheses hold and its goal fails."""
    from fractions import Fraction

    from verifier.vnnlib2 import Var

    d, path, U, Y = net
    model, _ = _decide(d, "y * u[0] < 1/2 or y > u[1]^2 - 3 or not u[0] + u[1] > 1")
    rng = np.random.default_rng(1)
    for ob in model.obligations:
        got = as_query(ob, model.program)
        assert got is not None
        query, _, inputs = got
        out = [s for s, o in model.program.network_terms.items() if o[1] == "output"][0]
        for _ in range(200):
            x = [Fraction(int(rng.integers(-8, 9)), 8), Fraction(int(rng.integers(4, 17)), 8)]
            yv = Fraction(int(rng.integers(-40, 41)), 8)
            env = {Var("f", "X", 0): x[0], Var("f", "X", 1): x[1], Var("f", "Y", 0): yv}
            sub = {inputs[0]: x[0], inputs[1]: x[1], out: yv}

            def val(e):
                import sympy as sp

                e = sp.sympify(e)
                if e in sub:
                    return sub[e]
                if e.is_Number:
                    return Fraction(str(e))
                if model.program.is_defined(e):
                    return val(model.program.defs[e])
                parts = [val(a) for a in e.args]
                if isinstance(e, sp.Add):
                    return sum(parts, Fraction(0))
                if isinstance(e, sp.Mul):
                    out = Fraction(1)
                    for p in parts:
                        out *= p
                    return out
                assert isinstance(e, sp.Pow) and e.exp.is_Integer, e
                return parts[0] ** int(e.exp)

            def holds(a):
                lhs, rhs = val(a.lhs), val(a.rhs)
                return {"<": lhs < rhs, "<=": lhs <= rhs, ">": lhs > rhs, ">=": lhs >= rhs,
                        "==": lhs == rhs, "!=": lhs != rhs}[a.op]

            inside = all(-1 <= x[0] <= 1 and Fraction(1, 2) <= x[1] <= 2 for _ in [0])
            violated = inside and all(holds(h) for h in ob.hypotheses) and not all(
                holds(g) for g in ob.goal)
            assert query.holds(env) == violated
