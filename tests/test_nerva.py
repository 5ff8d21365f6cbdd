"""Batch backprop equations phrased as nerva writes them (specs/batch/nerva.snn): leaky relu as
max(X, alpha X) with `1 if x > 0 else alpha`, relu' as 1 - step(-Z), layers on the builtins
leaky_relu and srelu (DW, Db, DX, parameter gradients), softmax shifted by a column or by the
row maxima, log_softmax as log(softmax), the row-max-shifted softmax cross-entropy.

Every equation is proved at every size and every wrong variant (specs/batch/wrong/nerva.snn)
refuted with a replayed counterexample. PyTorch is the oracle for what is proved: autograd's
vector-Jacobian products of the forward passes, written in torch, equal the right-hand sides
the tool proved, at random points.
"""

from __future__ import annotations

import dataclasses
import os
import re
from fractions import Fraction
from functools import cache

import pytest
from test_batch_backprop import SIZES, _base, _claim, _claim_names
from tools import require

from verifier import run
from verifier.elaborate import elaborate
from verifier.engines.replay import evaluate
from verifier.engines.z3run import run_z3
from verifier.obligations import build_model

torch = require("torch")

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "specs", "batch")
NERVA = os.path.join(ROOT, "nerva.snn")
WRONG = os.path.join(ROOT, "wrong", "nerva.snn")
TIMEOUT = 5.0


@cache
def decided(path: str):
    model = run.load(path)
    if path == WRONG:
        model = dataclasses.replace(
            model, obligations=tuple(ob for ob in model.obligations if "__" in ob.name))
    return model, {v.name: v for v in run.check(model, TIMEOUT, jobs=2)}


def test_every_nerva_equation_is_proved_at_every_size():
    _, verdicts = decided(NERVA)
    claims = _claim_names(NERVA)
    assert sorted(verdicts) == sorted(c + s for c in claims for s in SIZES)
    for name, v in verdicts.items():
        assert v.verdict == "proved", (name, v.verdict, v.engine, v.reason)
        assert v.engine.startswith("canonical-form"), (name, v.engine)
        # the .smt2 next to a proof is answered `unsat` by z3, or there is none
        if v.smt is not None:
            assert v.smt_answer == "unsat" and run_z3(v.smt, 30.0).answer == "unsat", name


def test_every_nerva_mutant_is_refuted_at_every_size():
    wrong = [c for c in _claim_names(WRONG) if "__" in c]
    assert sorted({_claim(w) for w in wrong}) == sorted(_claim_names(NERVA))
    _, verdicts = decided(WRONG)
    assert sorted(verdicts) == sorted(c + s for c in wrong for s in SIZES)
    for name, v in verdicts.items():
        assert v.verdict == "refuted", (name, v.verdict, v.engine, v.reason)
        assert v.counterexample, name
    shape = verdicts["nerva_relu_DX__transposed[N=3,D=4,K=2]"]
    assert shape.engine == "shapes" and "cannot multiply" in shape.reason


# ---- PyTorch as the oracle ------------------------------------------------------------------

F = torch.nn.functional


def _vjp(forward, wrt):
    def rule(t):
        p = t[wrt].clone().requires_grad_(True)
        y = forward(dict(t, **{wrt: p}))
        (g,) = torch.autograd.grad((t["DY"] * y).sum(), p)
        return g

    return rule


def _zl(t):
    return t["X"] @ t["W"].T + t["b"]


def _srelu(z, t):
    al, tl, ar, tr = (t[k] for k in ("al", "tl", "ar", "tr"))
    return torch.where(z <= tl, tl + al * (z - tl), torch.where(z < tr, z, tr + ar * (z - tr)))


def _row_max(z):
    return z.max(dim=1, keepdim=True).values


def _stable_log_softmax(y):
    s = y - _row_max(y)
    return s - torch.log(torch.exp(s).sum(dim=1, keepdim=True))


def _ce_grad(t):
    y = t["nerva_Y"].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(-(t["nerva_T"] * _stable_log_softmax(y)).sum(), y)
    return g


LAYERS = {
    "relu": lambda t: F.relu(_zl(t)),
    "leaky_relu": lambda t: torch.maximum(_zl(t), _zl(t) / 10),
    "all_relu": lambda t: torch.maximum(_zl(t), t["alpha"] * _zl(t)),
    "leaky_builtin": lambda t: F.leaky_relu(_zl(t), 0.1),
    "srelu": lambda t: _srelu(_zl(t), t),
}
ORACLE = {
    f"nerva_{layer}_D{p}": _vjp(fwd, wrt)
    for layer, fwd in LAYERS.items()
    for p, wrt in (("W", "W"), ("b", "b"), ("X", "X"), ("al", "al"), ("tl", "tl"),
                   ("ar", "ar"), ("tr", "tr"))
}
ORACLE |= {
    "nerva_leaky_relu_form": lambda t: torch.maximum(t["Z"], t["Z"] / 10),
    "nerva_leaky_relu_DZ": _vjp(lambda t: torch.maximum(t["Z"], t["Z"] / 10), "Z"),
    "nerva_softmax_shift": lambda t: F.softmax(t["Z"] - t["nerva_c"][:, None], dim=1),
    "nerva_stable_softmax": lambda t: F.softmax(t["Z"] - _row_max(t["Z"]), dim=1),
    "nerva_log_softmax": lambda t: F.log_softmax(t["Z"], dim=1),
    "nerva_log_softmax_shift": lambda t: F.log_softmax(t["Z"] - t["nerva_c"][:, None], dim=1),
    "nerva_stable_log_softmax": lambda t: _stable_log_softmax(t["Z"]),
    "nerva_log_softmax_DZ": _vjp(lambda t: torch.log(F.softmax(t["Z"], dim=1)), "Z"),
    "nerva_softmax_cross_entropy_DY": _ce_grad,
}
FIXED = {"alpha": Fraction(3, 10), "al": Fraction(1, 5), "tl": Fraction(-1, 2),
         "ar": Fraction(3, 2), "tr": Fraction(1, 2)}
_LEAF = re.compile(r"^([A-Za-z_]\w*)(?:\[([\d,]+)\])?$")


def _point(model, seed: int):
    """Random exact values for every leaf, and the same values as float64 torch tensors."""
    rng = torch.Generator().manual_seed(seed)
    point, entries = {}, {}
    for var in model.inputs + model.params:
        name, idx = _LEAF.match(var.symbol.name).groups()
        idx = tuple(int(i) for i in idx.split(",")) if idx else ()
        q = FIXED.get(name)
        if q is None:
            q = Fraction(int(torch.randint(-200, 201, (), generator=rng)), 97)
        point[var.symbol] = q
        entries.setdefault(name, {})[idx] = float(q)
    tensors = {}
    for name, vals in entries.items():
        shape = tuple(max(i[k] for i in vals) + 1 for k in range(len(next(iter(vals)))))
        t = torch.zeros(shape, dtype=torch.float64)
        for i, x in vals.items():
            t[i] = x
        tensors[name] = t
    return point, tensors


def test_pytorch_agrees_with_every_proved_equation():
    model = build_model(elaborate(NERVA, {"N": 3, "D": 4, "K": 2}))
    claims = {_base(ob.name): ob for ob in model.obligations}
    assert set(claims) <= set(ORACLE), sorted(set(claims) - set(ORACLE))
    for seed in range(3):
        point, tensors = _point(model, seed)
        for name, ob in claims.items():
            want = ORACLE[name](tensors)
            got, _ = evaluate(model.program, [a.rhs for a in ob.goal], point)
            for atom, value in zip(ob.goal, got):
                assert float(value) == pytest.approx(float(want[atom.entry]), rel=1e-9,
                                                     abs=1e-9), (name, atom.entry, seed)
