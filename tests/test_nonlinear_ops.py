"""The nonlinear-operator engine (`engines.nonlinear_ops`): its interval and linear bounds hold
onnxruntime's outputs on small hand-built graphs with Sin, Cos, Pow, Floor and products of two
input-dependent tensors, and the 60-digit values there; verdicts against onnxruntime and
against VNN-COMP 2025's published ml4acopf answers."""

from __future__ import annotations

import os

import mpmath
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from verifier import vnn
from verifier.engines.nonlinear_ops import FloatGraph, FormGraph
from verifier.onnx_import import load_onnx

DATA = os.path.join(os.path.dirname(__file__), "data", "vnncomp2026", "ml4acopf")
ORT_TOL = 1e-5  # onnxruntime computes in float32: its outputs may stray this far (relative)


def _const(name, a):
    return numpy_helper.from_array(np.asarray(a, dtype=np.float32), name)


def _save(tmp_path, name, nodes, inits, n_in, n_out):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n_in])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n_out])
    g = helper.make_graph(nodes, name, [x], [y], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    path = str(tmp_path / f"{name}.onnx")
    onnx.save(m, path)
    return path


def _graphs(tmp_path, rng):
    """Three graphs: power-flow-like sin/cos products, squares and products of a ReLU layer,
    and a floor-based range reduction (x - 2 pi floor(x / 2 pi)) under a product."""
    W1 = rng.normal(size=(3, 4))
    W2 = rng.normal(size=(4, 4))
    flow = _save(tmp_path, "flow", [
        helper.make_node("MatMul", ["x", "W1"], ["a"]),
        helper.make_node("Sin", ["a"], ["s"]),
        helper.make_node("Cos", ["a"], ["c"]),
        helper.make_node("Mul", ["s", "c"], ["sc"]),
        helper.make_node("Pow", ["a", "two"], ["a2"]),
        helper.make_node("Mul", ["sc", "a2"], ["p"]),
        helper.make_node("Add", ["p", "c"], ["y"]),
    ], [_const("W1", W1), _const("two", 2.0)], 3, 4)
    relu = _save(tmp_path, "relu", [
        helper.make_node("MatMul", ["x", "W1"], ["a"]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("MatMul", ["r", "W2"], ["b"]),
        helper.make_node("Mul", ["b", "a"], ["ab"]),
        helper.make_node("Pow", ["b", "three"], ["b3"]),
        helper.make_node("Sub", ["ab", "b3"], ["y"]),
    ], [_const("W1", W1), _const("W2", W2), _const("three", 3.0)], 3, 4)
    floor = _save(tmp_path, "floor", [
        helper.make_node("MatMul", ["x", "W1"], ["a"]),
        helper.make_node("Div", ["a", "tau"], ["q"]),
        helper.make_node("Floor", ["q"], ["k"]),
        helper.make_node("Mul", ["k", "tau"], ["kt"]),
        helper.make_node("Sub", ["a", "kt"], ["red"]),
        helper.make_node("Cos", ["red"], ["c"]),
        helper.make_node("Mul", ["c", "a"], ["y"]),
    ], [_const("W1", W1), _const("tau", 2 * np.pi)], 3, 4)
    return [flow, relu, floor]


def _exact(net, x):
    with mpmath.workdps(60):
        return np.array([float(v) for v in net.evaluate_exact([float(t) for t in x])])


@pytest.mark.parametrize("seed", [0, 1])
def test_bounds_hold_onnxruntime_and_60_digit_outputs(tmp_path, seed):
    rng = np.random.default_rng(seed)
    for path in _graphs(tmp_path, rng):
        net = load_onnx(path)
        graph = FloatGraph(net)
        forms = FormGraph(graph)
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        centre = rng.uniform(-3, 3, size=(6, 3))
        width = rng.choice([1e-3, 0.1, 1.0, 4.0], size=(6, 1)) * rng.random((6, 3))
        L = np.asarray(centre - width, dtype=np.float32).astype(np.float64)
        H = np.asarray(centre + width, dtype=np.float32).astype(np.float64)
        il, ih = graph.bounds(L, H)
        fl, fh = forms.bounds(L, H)
        for b in range(len(L)):
            X = (L[b] + rng.random((40, 3)) * (H[b] - L[b])).astype(np.float32)
            X = np.concatenate([X, L[b:b + 1].astype(np.float32), H[b:b + 1].astype(np.float32)])
            Y = np.concatenate([sess.run(None, {"x": X[i:i + 1]})[0] for i in range(len(X))])
            tol = ORT_TOL * (1 + np.abs(Y))
            for lo, hi in ((il[b], ih[b]), (fl[b], fh[b])):
                assert np.all(Y >= lo - tol) and np.all(Y <= hi + tol), path
            for x in X[:5]:  # the 60-digit values lie inside with no tolerance at all
                e = _exact(net, x)
                assert np.all(e >= fl[b]) and np.all(e <= fh[b]) and np.all(e >= il[b])
            assert np.all(fl[b] >= il[b]) and np.all(fh[b] <= ih[b])  # intersected


def test_import_matches_onnxruntime(tmp_path):
    rng = np.random.default_rng(5)
    for path in _graphs(tmp_path, rng):
        net = load_onnx(path)
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        X = rng.uniform(-3, 3, size=(20, 3)).astype(np.float32)
        want = np.concatenate([sess.run(None, {"x": X[i:i + 1]})[0] for i in range(20)])
        got = net.evaluate_float(X.astype(np.float64))
        assert np.allclose(got, want, rtol=1e-4, atol=1e-4)


def _prop(tmp_path, n_in, n_out, box, unsafe):
    text = "".join(f"(declare-const X_{i} Real)\n" for i in range(n_in))
    text += "".join(f"(declare-const Y_{j} Real)\n" for j in range(n_out))
    for i, (a, b) in enumerate(box):
        text += f"(assert (>= X_{i} {a}))\n(assert (<= X_{i} {b}))\n"
    path = tmp_path / "p.vnnlib"
    path.write_text(text + unsafe + "\n")
    return str(path)


def test_sat_witness_replays_on_onnxruntime(tmp_path):
    """sin(a) cos(a) a^2 + cos(a) reaches its largest sampled value: a witness just below it
    is found, replayed at 60 digits, and onnxruntime agrees it is unsafe."""
    path = _graphs(tmp_path, np.random.default_rng(3))[0]
    box = [(-0.5, 0.5)] * 3
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    X = np.random.default_rng(4).uniform(-0.5, 0.5, (2000, 3)).astype(np.float32)
    top = max(float(sess.run(None, {"x": X[i:i + 1]})[0][0, 0]) for i in range(2000))
    prop = _prop(tmp_path, 3, 4, box, f"(assert (>= Y_0 {top - 0.05!r}))")
    res, _ = vnn.check(path, prop, 20.0)
    assert res.answer == "sat"
    y = sess.run(None, {"x": np.array([[float(v) for v in res.witness_x]],
                                      dtype=np.float32)})[0]
    assert y[0, 0] >= top - 0.05 - 1e-5
    assert all(-0.5 <= v <= 0.5 for v in res.witness_x)


def test_unsat_above_the_bound_and_strict_stays_strict(tmp_path):
    """Above the forms' upper bound is unsat. On the single point x = 0 the ReLU-product
    graph gives y = b a - b^3 = 0 exactly: `>= 0` is sat (exact replay in Fractions), and
    `> 0` is never sat."""
    flow, relu, _ = _graphs(tmp_path, np.random.default_rng(3))
    net = load_onnx(flow)
    box = [(-0.25, 0.25)] * 3
    L, H = np.array([[a for a, _ in box]]), np.array([[b for _, b in box]])
    _, hi = FormGraph(FloatGraph(net)).bounds(L, H)
    res, _ = vnn.check(flow, _prop(tmp_path, 3, 4, box,
                                   f"(assert (>= Y_0 {float(hi[0, 0]) + 1e-6!r}))"), 20.0)
    assert res.answer == "unsat" and "linear" in res.reason
    point = [(0, 0)] * 3
    res, _ = vnn.check(relu, _prop(tmp_path, 3, 4, point, "(assert (>= Y_0 0))"), 20.0)
    assert res.answer == "sat" and res.witness_y[0] == 0
    res, _ = vnn.check(relu, _prop(tmp_path, 3, 4, point, "(assert (> Y_0 0))"), 5.0)
    assert res.answer in ("unknown", "timeout")


@pytest.mark.parametrize("prop", ["14_ieee_prop1.vnnlib", "14_ieee_prop2.vnnlib",
                                  "14_ieee_prop5.vnnlib"])
def test_ml4acopf_published_answer(prop):
    """VNN-COMP 2025 ml4acopf_2024, 14-bus network with sin, cos, sigmoid, squares and
    products: alpha-beta-CROWN's published answer `unsat` for properties 1, 2 and 5 (1 and 5
    need the backward bounds with the tangent bands of sin, cos and sigmoid), and no sampled
    input, run through onnxruntime, is in the property's unsafe region."""
    onnx_path, path = os.path.join(DATA, "14_ieee_ml4acopf.onnx"), os.path.join(DATA, prop)
    res, _ = vnn.check(onnx_path, path, 20.0)
    assert res.answer == "unsat" and res.stats["engine"].startswith("nonlinear_ops")
    from verifier.vnnlib2 import read_property

    p = read_property(path)
    d = p.disjuncts[0]
    rng = np.random.default_rng(0)
    lo, hi = np.array([float(v) for v in d.lo]), np.array([float(v) for v in d.hi])
    X = (lo + rng.random((50, len(lo))) * (hi - lo)).astype(np.float32)
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    for x in X:
        y = sess.run(None, {name: x[None]})[0].ravel().astype(np.float64)
        xf = x.astype(np.float64)
        for dj in p.disjuncts:  # every constraint's left side: sum a x + sum b y + c <= 0
            vals = [sum(float(a) * xf[i] for i, a in c.x) + sum(float(a) * y[j] for j, a in c.y)
                    + float(c.const) for c in dj.output_constraints()]
            assert max(vals) > -1e-6
