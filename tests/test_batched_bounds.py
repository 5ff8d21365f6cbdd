"""The batched bound path (engines/batched.py): soundness on random smooth networks against
float64 evaluation at many points, planted violations never proved, and the same verdicts
as the exact path on the bundled examples."""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verifier import run
from verifier.engines import bounds
from verifier.engines.batched import BatchedBab, BatchTape, Unsupported
from verifier.engines.intervals import Tape
from verifier.layers.activations import sigmoid, softplus

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(HERE, "..", "examples")

SPEC = """input x : real[{n}] in [{lo}, {hi}]
network g(in={n}) load "w.npz" {{
{layers}
  dense(1)
}}
claim value: g(x)[0] <= 0
claim slope: abs(d(g(x)[0])/d(x[0])) <= 0
claim low: d(g(x)[0])/d(x[{last}]) >= 0
"""


def _model(tmp, n, widths, act, lo, hi, seed):
    rng = np.random.default_rng(seed)
    sizes = [n, *widths, 1]
    w = {}
    for k in range(len(sizes) - 1):
        a, b = sizes[k], sizes[k + 1]
        w[f"W{k + 1}"] = np.round(rng.normal(0, 1.5 / np.sqrt(a), (b, a)) * 256) / 256
        w[f"b{k + 1}"] = np.round(rng.normal(0, 0.5, b) * 256) / 256
    np.savez(os.path.join(tmp, "w.npz"), **w)
    layers = "\n".join(f"  dense({h}, {act})" for h in widths)
    path = os.path.join(tmp, "net.snn")
    with open(path, "w") as fh:
        fh.write(SPEC.format(n=n, lo=lo, hi=hi, layers=layers, last=n - 1))
    return run.load(path)


_NP = {sp.tanh: np.tanh, sigmoid: lambda z: 1 / (1 + np.exp(-z)),
       softplus: lambda z: np.logaddexp(0, z)}


def _slot_values(tape: Tape, leaves, X):
    """Every slot of the tape at the rows of X, in float64 (an oracle written apart from the
    engine: plain numpy, no rounding control)."""
    vals = {}
    for slot, iv in enumerate(tape.base):
        if np.isfinite(float(iv[0])) and np.isfinite(float(iv[1])):  # constants (enclosed)
            vals[slot] = np.full(X.shape[0], float((iv[0] + iv[1]) / 2))
    for i, s in enumerate(leaves):
        vals[tape.leaves[s]] = X[:, i]
    for _, kind, out, args in tape.code:
        if kind == "affine":
            v = float(args[0]) + sum(float(c) * vals[s] for c, s in args[1])
        elif kind == "mul":
            v = np.prod([vals[s] for s in args], axis=0)
        elif kind == "pow":
            v = vals[args[0]] ** args[1]
        elif kind == "fn":
            v = _NP[args[0]](vals[args[1]])
        elif kind == "abs":
            v = np.abs(vals[args])
        else:
            raise AssertionError(kind)
        vals[out] = v
    return vals


def _margin(v):
    return 1e-9 * (1 + np.abs(v))


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(n=st.integers(1, 3), widths=st.lists(st.integers(1, 5), min_size=1, max_size=2),
       act=st.sampled_from(["tanh", "sigmoid", "softplus"]), seed=st.integers(0, 10**6),
       scale=st.sampled_from([1, 3]))
def test_every_certified_bound_holds_at_sampled_points(n, widths, act, seed, scale):
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        model = _model(tmp, n, widths, act, -scale, scale, seed)
        for ob in model.obligations:
            tape = Tape(model.program, [a.lhs - a.rhs for a in ob.goal])
            leaves = [v.symbol for v in ob.variables if v.symbol in tape.leaves]
            try:
                bt = BatchTape(tape, leaves)
            except Unsupported:  # e.g. sigmoid of a constant the exact path cannot enclose
                continue
            B, per = 25, 400  # 10^4 points in all
            a = rng.uniform(-scale, scale, (B, n))
            b = rng.uniform(-scale, scale, (B, n))
            lo, hi = np.minimum(a, b), np.maximum(a, b)
            lo[0], hi[0] = -scale, scale  # the whole box too
            lo[1], hi[1] = lo[1], lo[1]  # a point box
            at = rng.uniform(lo, hi)
            res = bt.run(lo, hi, at)
            back = {(o, sg): bt.backward(res, o, sg)[0] for o in tape.outputs for sg in (1, -1)}
            for k in range(B):
                X = rng.uniform(lo[k], hi[k], (per, n))
                X[0], X[1] = lo[k], hi[k]
                vals = _slot_values(tape, leaves, X)
                for (o, sg), bound in back.items():  # CROWN: sign * out <= bound
                    assert np.all(sg * vals[o] - _margin(vals[o]) <= bound[k]), (o, sg, k)
                for slot, v in vals.items():
                    if res.vlo[slot] is None:
                        continue
                    m = _margin(v)
                    assert np.all(res.vlo[slot][k] <= v + m), (slot, k)
                    assert np.all(v - m <= res.vhi[slot][k]), (slot, k)
                    for f, upper in ((res.L[slot], False), (res.U[slot], True)):
                        if f is None:
                            continue
                        lin = f[k, 0] + X @ f[k, 1:]
                        assert np.all(lin <= v + m) if not upper else np.all(v - m <= lin)


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(widths=st.lists(st.integers(2, 6), min_size=1, max_size=2),
       act=st.sampled_from(["tanh", "sigmoid", "softplus"]), seed=st.integers(0, 10**6))
def test_planted_violation_is_never_proved(widths, act, seed):
    """Claims just below the densely sampled maximum of each quantity: no proof."""
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        model = _model(tmp, 2, widths, act, -1, 1, seed)
        for ob in model.obligations:
            tape = Tape(model.program, [a.lhs - a.rhs for a in ob.goal])
            leaves = [v.symbol for v in ob.variables if v.symbol in tape.leaves]
            X = np.vstack([rng.uniform(-1, 1, (10**4, 2)),
                           np.array(np.meshgrid([-1, 1], [-1, 1])).reshape(2, -1).T])
            v = _slot_values(tape, leaves, X)[tape.outputs[0]]
            upper = ob.goal[0].op in ("<=", "<")
            worst = float(v.max() if upper else -v.min())  # badness attained somewhere
            try:
                bt = BatchTape(tape, leaves)
            except Unsupported:
                continue
            bab = BatchedBab(bt, [ob.goal[0].op], tape.outputs[:1],
                             [-1.0, -1.0], [1.0, 1.0], tol=worst - 1e-7)
            res = bab.run(time.perf_counter() + 1.0)
            assert res.status != "proved"
            assert res.bound >= worst - 1e-9


def _verdicts(path, monkeypatch, batched: bool):
    if not batched:
        monkeypatch.setattr(bounds._Decider, "batched_setup", lambda self, tol=0.0: None)
    model = run.load(path)
    out = {v.name: v for v in run.check(model, 20.0)}
    monkeypatch.undo()
    return out


@pytest.mark.parametrize("name", ["gauss.snn", "gauss_fit.snn"])
def test_batched_and_exact_paths_agree_on_examples(name, monkeypatch):
    path = os.path.join(EXAMPLES, name)
    with_b = _verdicts(path, monkeypatch, True)
    without = _verdicts(path, monkeypatch, False)
    assert {k: v.verdict for k, v in with_b.items()} == {k: v.verdict for k, v in without.items()}
    assert "proved" in {v.verdict for v in with_b.values()}
    if name == "gauss.snn":
        assert {v.verdict for v in with_b.values()} >= {"proved", "refuted"}
        assert any(v.engine == "batched-branch-and-bound" for v in with_b.values())


def test_batched_verdict_names_engine_and_boxes(tmp_path):
    (tmp_path / "w.npz").write_bytes(b"")
    model = _model(str(tmp_path), 2, [6, 6], "tanh", -1, 1, 3)
    ob = model.obligations[1]
    tape = Tape(model.program, [ob.goal[0].lhs])
    leaves = [v.symbol for v in ob.variables if v.symbol in tape.leaves]
    X = np.random.default_rng(0).uniform(-1, 1, (20000, 2))
    top = float(_slot_values(tape, leaves, X)[tape.outputs[0]].max())
    c = sp.Rational(str(round(top * 1.05 + 1e-3, 6)))
    from dataclasses import replace
    ob = replace(ob, goal=(replace(ob.goal[0], rhs=c),))
    v = bounds.decide_bound(ob, model.program, 30)
    assert v.verdict == "proved"
    assert v.engine == "batched-branch-and-bound" and v.details["boxes"] >= 1
    assert "batched branch and bound" in v.artifact
