"""The batch backprop library (specs/batch): hand-written batch-matrix backward equations, as
in the nerva libraries, checked against the true vector-Jacobian product with a free upstream
gradient.

Every correct equation must be `proved` at every instantiated size; every wrong variant
(`<claim>__<mistake>` in specs/batch/wrong/) must be `refuted` at every size, and every
equation must have at least one wrong variant.

Timeouts: an identity proved by canonical forms does not depend on z3; the engine still gives
z3 up to min(timeout, 0.25) s to confirm it, which for the softmax layers always runs out. The
tests therefore pass a short timeout (0.2 s) for claims decided by canonical forms or by exact
random points, and the default 30 s for the claims decided by a case split on their kinks
(whose small per-case z3 queries share the claim's time) or by z3 (a side condition that is
an equation); the verdicts and engines asserted are the same at any timeout.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest

from verifier import run
from verifier.elaborate import elaborate
from verifier.syntax import ast
from verifier.syntax.parser import parse

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "specs", "batch")
LAYERS = ("linear", "activation", "softmax", "batchnorm", "dropout", "losses")
FILES = tuple(f"{layer}.snn" for layer in LAYERS) + tuple(
    f"colwise/{layer}.snn" for layer in LAYERS
)
SIZES = ("[N=3,D=4,K=2]", "[N=4,D=2,K=3]", "[N=3,D=2,K=4]")

# Claims (and their wrong variants) decided by a case split on the decisions of their kinks:
# nerva's derivative conventions under side conditions and lemmas about the piecewise builtins.
CASE_CLAIMS = frozenset(
    {
        "relu_DZ_nerva",
        "leaky_relu_form",
        "leaky_relu_DZ",
        "all_relu_DZ",
        "srelu_form",
        "srelu_Al",
        "srelu_Tl",
        "srelu_Ar",
        "srelu_Tr",
        "srelu_DZ",
    }
)
# the one-hot shortcut under `where rowsum(T) == 1`: proved by the canonical form on the points
# where the side condition holds (solved for one entry of T). Every other correct claim is
# proved from the first canonical form (activations as atoms).
SIDE_CONDITION_CLAIMS = frozenset(
    {
        "softmax_cross_entropy_DY_one_hot",
        "softmax_cross_entropy_col_DY_one_hot",
    }
)
LONG_CLAIMS = CASE_CLAIMS | SIDE_CONDITION_CLAIMS
SHORT_TIMEOUT = 0.2
Z3_TIMEOUT = 30.0


def _path(name: str) -> str:
    return os.path.join(ROOT, name)


def _base(obligation_name: str) -> str:
    """`relu_DW[N=3,D=4,K=2]` → `relu_DW`; `relu_DW__mistake[...]` → `relu_DW__mistake`."""
    return obligation_name.split("[", 1)[0]


def _claim(name: str) -> str:
    """The correct claim a wrong variant belongs to."""
    return name.split("__", 1)[0]


def _claim_names(path: str) -> list[str]:
    with open(path, encoding="utf-8") as fh:
        spec = parse(fh.read(), path)
    return [item.name for item in spec.items if isinstance(item, ast.ClaimDecl)]


def _check(model, obligations) -> dict[str, object]:
    """Decide the obligations, case splits and z3's claims with the long timeout, the rest
    with the short one."""
    z3_obs = [ob for ob in obligations if _claim(_base(ob.name)) in LONG_CLAIMS]
    other = [ob for ob in obligations if _claim(_base(ob.name)) not in LONG_CLAIMS]
    verdicts = {}
    for obs, timeout in ((other, SHORT_TIMEOUT), (z3_obs, Z3_TIMEOUT)):
        if obs:
            sub = dataclasses.replace(model, obligations=tuple(obs))
            verdicts.update({v.name: v for v in run.check(sub, timeout)})
    return verdicts


_DECIDED: dict[str, tuple] = {}


def decided(path: str) -> tuple:
    """(model, verdicts by name) of a library file: every claim, or for a file of wrong
    variants only the variants (names with "__"). Decided once per test run: the Coq tests
    (test_coq_batch.py) emit from the same verdicts."""
    hit = _DECIDED.get(path)
    if hit is None:
        model = run.load(path)
        obs = model.obligations
        if os.sep + "wrong" + os.sep in path:
            obs = tuple(ob for ob in obs if "__" in ob.name)
            model = dataclasses.replace(model, obligations=obs)
        hit = _DECIDED[path] = (model, _check(model, obs))
    return hit


@pytest.mark.parametrize("name", FILES)
def test_every_equation_is_proved_at_every_size(name):
    model, verdicts = decided(_path(name))
    claims = _claim_names(_path(name))
    assert claims
    assert sorted(ob.name for ob in model.obligations) == sorted(
        c + s for c in claims for s in SIZES
    )
    for ob in model.obligations:
        v = verdicts[ob.name]
        assert v.verdict == "proved", (ob.name, v.verdict, v.engine, v.reason)
        if _base(ob.name) in SIDE_CONDITION_CLAIMS:
            assert v.engine.startswith("canonical-form"), (ob.name, v.engine)
            assert "side conditions hold" in v.artifact, (ob.name, v.artifact)
        elif _base(ob.name) in CASE_CLAIMS:
            assert v.engine.startswith("canonical-form+cases"), (ob.name, v.engine)
            # a file next to a proof is one z3 answers `unsat`, else there is none
            assert v.smt_answer in ("unsat", None), (ob.name, v.smt_answer)
            assert (v.smt is None) == (v.smt_answer is None), ob.name
        else:
            assert v.engine.startswith("canonical-form"), (ob.name, v.engine)


@pytest.mark.parametrize("name", FILES)
def test_every_wrong_variant_is_refuted_at_every_size(name):
    path = _path(os.path.join("wrong", name))
    wrong = [c for c in _claim_names(path) if "__" in c]
    assert wrong
    model, verdicts = decided(path)
    obs = model.obligations
    assert sorted(ob.name for ob in obs) == sorted(c + s for c in wrong for s in SIZES)
    for ob in obs:
        v = verdicts[ob.name]
        assert v.verdict == "refuted", (ob.name, v.verdict, v.engine, v.reason)
        assert v.counterexample, ob.name


@pytest.mark.parametrize("name", FILES)
def test_every_equation_has_a_wrong_variant(name):
    claims = _claim_names(_path(name))
    wrong = [c for c in _claim_names(_path(os.path.join("wrong", name))) if "__" in c]
    assert all(_claim(w) in claims for w in wrong), "a wrong variant names no equation"
    assert sorted(set(claims) - {_claim(w) for w in wrong}) == []


def test_the_whole_library_imports_together():
    spec = elaborate(_path("all.snn"))
    names = [c.name for c in spec.claims]
    assert len(names) == len(set(names))
    assert sorted(names) == sorted(c for f in FILES for c in _claim_names(_path(f)))
    assert dict(spec.instantiations[0]) == {"N": 3, "D": 4, "K": 2}


BATCHNORM_PITFALL = """
dim N, D sizes (2, 3), (3, 2)
input X : real[N, D]
input DY : real[N, D]
param gamma : real[D]
param beta : real[D]
let R = X - repeat(colsum(X) / N, N)
let isd = exp(-log(colsum(R * R) / N) / 2)
let Z = repeat(isd, N) * R
let Y = repeat(gamma, N) * Z + repeat(beta, N)
let DZ = repeat(gamma, N) * DY
# gamma forgotten, checked with the loss sum(Y): its upstream gradient is ones(N, D)
claim with_sum_loss: vjp(Y, X, ones(N, D)) == repeat(isd / N, N) * ((N * eye(N) - ones(N, N)) @ ones(N, D) - Z * repeat(diag(Z^T @ ones(N, D)), N))
# 1/N forgotten, checked with a free upstream gradient
claim free_dy: vjp(Y, X, DY) == repeat(isd, N) * ((N * eye(N) - ones(N, N)) @ DZ - Z * repeat(diag(Z^T @ DZ), N))
"""


def test_batchnorm_pitfalls_that_the_library_avoids(tmp_path):
    """A loss with zero input gradient proves wrong formulas; so does the batch size N = 2."""
    spec = tmp_path / "pitfall.snn"
    spec.write_text(BATCHNORM_PITFALL)
    verdicts = {v.name: v.verdict for v in run.check(run.load(str(spec)), SHORT_TIMEOUT)}
    assert verdicts == {
        "with_sum_loss[N=2,D=3]": "proved",
        "with_sum_loss[N=3,D=2]": "proved",
        "free_dy[N=2,D=3]": "proved",
        "free_dy[N=3,D=2]": "refuted",
    }


def test_verify_exit_status():
    cmd = [sys.executable, "-m", "verifier"]
    ok = subprocess.run(cmd + [_path("linear.snn")], check=False, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = subprocess.run(
        cmd + [_path("wrong/linear.snn")], check=False, capture_output=True, text=True
    )
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "linear_Db__sum_over_features[N=3,D=4,K=2]" in bad.stdout
    assert "refuted" in bad.stdout
