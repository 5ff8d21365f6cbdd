"""Backward linear bounds of the nonlinear-operator engine (`engines.nonlinear_backward`):
they hold onnxruntime's outputs and the exact (60-digit) values on hand-built graphs with Sin,
Cos, Pow, Floor, ReLU and products; McCormick planes hold exactly in rationals with their float
coefficients; a product property the forward bounds cannot close is closed at the root, and
z3 agrees it is unsat."""

from __future__ import annotations

from fractions import Fraction

import mpmath
import numpy as np
from tools import require

require("onnx")
ort = require("onnxruntime")
z3 = require("z3")

from onnx import helper
from test_nonlinear_ops import ORT_TOL, _const, _graphs, _prop, _save

from verifier import vnn
from verifier.engines.nonlinear_backward import BackGraph, mul_lines
from verifier.engines.nonlinear_ops import Engine, FloatGraph, FormGraph, _lines
from verifier.onnx_import import load_onnx
from verifier.vnnlib2 import read_property


def _boxes(rng, k, n):
    centre = rng.uniform(-3, 3, size=(k, n))
    width = rng.choice([0.0, 1e-3, 0.1, 1.0, 4.0], size=(k, 1)) * rng.random((k, n))
    L = np.asarray(centre - width, dtype=np.float32).astype(np.float64)
    H = np.asarray(centre + width, dtype=np.float32).astype(np.float64)
    return L, H


def test_backward_bounds_hold_onnxruntime_and_exact_outputs(tmp_path):
    rng = np.random.default_rng(7)
    for path in _graphs(tmp_path, rng):
        net = load_onnx(path)
        graph = FloatGraph(net)
        forms = FormGraph(graph)
        back = BackGraph(graph, _lines)
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        L, H = _boxes(rng, 6, 3)
        fl, fh = forms.bounds(L, H)
        st = back.bounds(L, H, pre=forms.pre)
        bl, bh = st.ivs[-1]
        assert np.all(bl >= fl) and np.all(bh <= fh)  # intersected with the forward bounds
        rows = rng.normal(size=(3, 4))
        low = back.rows_lower(st, rows, np.zeros((3, 3)), np.zeros(3), L, H)
        for b in range(len(L)):
            X = (L[b] + rng.random((30, 3)) * (H[b] - L[b])).astype(np.float32)
            X = np.concatenate([X, L[b:b + 1].astype(np.float32), H[b:b + 1].astype(np.float32)])
            Y = np.concatenate([sess.run(None, {"x": X[i:i + 1]})[0] for i in range(len(X))])
            tol = ORT_TOL * (1 + np.abs(Y))
            assert np.all(Y >= bl[b] - tol) and np.all(Y <= bh[b] + tol), path
            assert np.all(Y @ rows.T >= low[b] - ORT_TOL * (1 + np.abs(Y) @ np.abs(rows.T)))
            for x in X[:4]:  # exact values: no tolerance at all
                with mpmath.workdps(60):
                    e = net.evaluate_exact([Fraction(float(t)) for t in x])
                    e = [mpmath.mpf(v) if not isinstance(v, Fraction) else
                         mpmath.mpf(v.numerator) / v.denominator for v in e]
                    assert all(bl[b][j] <= e[j] <= bh[b][j] for j in range(4))
                    for r in range(3):
                        val = mpmath.fsum(mpmath.mpf(float(rows[r, j])) * e[j] for j in range(4))
                        assert low[b][r] <= val


def test_point_boxes_bound_the_exact_value():
    """y = (0.1 x0 + 0.3 x1)(0.7 x0 - 0.2 x1) on boxes of one point: the bounds are as tight
    as the rounding allows, and still hold the exact value (a missing slack shows here)."""
    rng = np.random.default_rng(11)

    import onnx
    from onnx import TensorProto

    W = np.array([[0.1, 0.7], [0.3, -0.2]])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])
    nodes = [helper.make_node("MatMul", ["x", "W"], ["a"]),
             helper.make_node("Slice", ["a", "s0", "s1", "ax"], ["p"]),
             helper.make_node("Slice", ["a", "s1", "s2", "ax"], ["q"]),
             helper.make_node("Mul", ["p", "q"], ["y"])]
    inits = [_const("W", W)] + _slices()
    g = helper.make_graph(nodes, "pq", [x], [y], initializer=inits)
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "pq.onnx")
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), path)
        net = load_onnx(path)
    graph = FloatGraph(net)
    back = BackGraph(graph, _lines)
    X = rng.uniform(-2, 2, size=(40, 2))
    st = back.bounds(X, X.copy())
    lo = back.rows_lower(st, np.array([[1.0]]), np.zeros((1, 2)), np.zeros(1), X, X.copy())
    hi = -back.rows_lower(st, np.array([[-1.0]]), np.zeros((1, 2)), np.zeros(1), X, X.copy())
    for b in range(len(X)):
        e = net.evaluate_exact([Fraction(v) for v in X[b]])[0]
        assert Fraction(float(lo[b, 0])) <= e <= Fraction(float(hi[b, 0]))
        assert hi[b, 0] - lo[b, 0] < 1e-12 * (1 + abs(float(e)))


def test_tangent_bands_hold_at_60_digits():
    """The tangent bands of sin, cos, sigmoid and tanh hold at 60 digits on boxes narrow and
    wide, near zero and far from it; a narrow box gets a band narrower than its interval."""
    from verifier.engines.nonlinear_ops import _tangent_lines

    rng = np.random.default_rng(5)
    zl = rng.uniform(-1, 1, 300) * rng.choice([1.0, 10.0, 1e4], 300)
    zh = zl + rng.choice([0.0, 1e-9, 1e-3, 0.5, 3.0], 300) * rng.random(300)
    with mpmath.workdps(60):
        for kind, f in (("sin", mpmath.sin), ("cos", mpmath.cos), ("tanh", mpmath.tanh),
                        ("sigmoid", lambda t: 1 / (1 + mpmath.exp(-t)))):
            la, lc, ua, uc = _tangent_lines(kind, zl, zh)
            for i in range(300):
                for t in (0, 1, 0.5, 0.123):
                    z = mpmath.mpf(zl[i]) + t * (mpmath.mpf(zh[i]) - mpmath.mpf(zl[i]))
                    v = f(z)
                    assert mpmath.mpf(la[i]) * z + mpmath.mpf(lc[i]) <= v
                    assert mpmath.mpf(ua[i]) * z + mpmath.mpf(uc[i]) >= v
            narrow = (zh - zl < 1e-2) & (zh > zl) & (np.abs(zl) < 5)
            assert np.all(la[narrow] != 0) and np.all(uc[narrow] - lc[narrow] < 1e-4)


def test_mccormick_planes_hold_exactly():
    rng = np.random.default_rng(3)
    xl = rng.uniform(-3, 3, 200) * 0.1 + 1e-3 * rng.normal(size=200)
    xh = xl + rng.choice([0.0, 1e-7, 0.3, 2.0], 200) * rng.random(200)
    yl = rng.uniform(-3, 3, 200) / 3
    yh = yl + rng.choice([0.0, 1e-7, 0.3, 2.0], 200) * rng.random(200)
    (lx, ly, lc), (ux, uy, uc) = mul_lines(xl, xh, yl, yh)
    for i in range(200):
        for tx, ty in ((0, 0), (1, 1), (0, 1), (1, 0), (0.37, 0.81)):
            x = Fraction(xl[i]) + Fraction(tx) * (Fraction(xh[i]) - Fraction(xl[i]))
            y = Fraction(yl[i]) + Fraction(ty) * (Fraction(yh[i]) - Fraction(yl[i]))
            assert Fraction(lx[i]) * x + Fraction(ly[i]) * y + Fraction(lc[i]) <= x * y
            assert Fraction(ux[i]) * x + Fraction(uy[i]) * y + Fraction(uc[i]) >= x * y
    (lx, ly, lc), _ = mul_lines(np.array([-np.inf]), np.array([1.0]), np.array([0.0]),
                                np.array([1.0]))
    assert lx[0] == ly[0] == 0 and lc[0] == -np.inf  # no plane: the interval is used


def _slices():
    from onnx import numpy_helper

    return [numpy_helper.from_array(np.array([v], np.int64), name)
            for name, v in (("s0", 0), ("s1", 1), ("s2", 2), ("ax", 1))]


def _deep(tmp_path, seed):
    """x (2) -> ReLU(W1 x) (4) -> ReLU(W2 .) (4) -> W3 . = [p, q] -> y = p q."""
    rng = np.random.default_rng(seed)
    Ws = [rng.normal(size=(2, 4)), rng.normal(size=(4, 4)) / 2, rng.normal(size=(4, 2))]
    path = _save(tmp_path, f"deep{seed}", [
        helper.make_node("MatMul", ["x", "W1"], ["a"]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("MatMul", ["r", "W2"], ["b"]),
        helper.make_node("Relu", ["b"], ["s"]),
        helper.make_node("MatMul", ["s", "W3"], ["pq"]),
        helper.make_node("Slice", ["pq", "s0", "s1", "ax"], ["p"]),
        helper.make_node("Slice", ["pq", "s1", "s2", "ax"], ["q"]),
        helper.make_node("Mul", ["p", "q"], ["y"]),
    ], [_const("W1", Ws[0]), _const("W2", Ws[1]), _const("W3", Ws[2])] + _slices(), 2, 1)
    return path, [np.asarray(W, dtype=np.float32) for W in Ws]


def _z3_max_at_least(Ws, box, T):
    """z3's answer to `p q >= T` on the exact network, one query per ReLU phase pattern (in
    each, p and q are linear and the query is one product: fast, where `If` terms are not)."""
    import itertools

    W = [[[z3.RealVal(Fraction(float(w))) for w in row] for row in M.T] for M in Ws]
    xs = z3.Reals("x0 x1")
    sizes = [len(W[0]), len(W[1])]
    for phases in itertools.product((0, 1), repeat=sum(sizes)):
        s = z3.Solver()
        s.add(*[c for v, (a, b) in zip(xs, box) for c in (v >= a, v <= b)])
        h, k = list(xs), 0
        for layer in W[:2]:
            nxt = []
            for row in layer:
                e = z3.Sum([w * v for w, v in zip(row, h)])
                s.add(e >= 0 if phases[k] else e <= 0)
                nxt.append(e if phases[k] else z3.RealVal(0))
                k += 1
            h = nxt
        p, q = (z3.Sum([w * v for w, v in zip(row, h)]) for row in W[2])
        s.add(p * q >= z3.RealVal(Fraction(T)))
        if s.check() != z3.unsat:
            return z3.sat
    return z3.unsat


def test_deep_product_property_closed_by_backward_bounds_agrees_with_z3(tmp_path):
    """Two ReLU layers under a product: on one of a few seeded networks the backward bound of
    y is below the forward one; a threshold between them is closed on the root box by the
    engine (and left open without the backward bounds); z3 on the exact network agrees
    that y >= T is unsat, and onnxruntime's sampled outputs stay below T."""
    box = [(-1.0, 1.0), (-1.0, 1.0)]
    L, H = np.array([[-1.0, -1.0]]), np.array([[1.0, 1.0]])
    for seed in range(8):
        path, Ws = _deep(tmp_path, seed)
        net = load_onnx(path)
        graph = FloatGraph(net)
        forms = FormGraph(graph)
        _, fh = forms.bounds(L, H)
        back = BackGraph(graph, _lines)
        st = back.bounds(L, H, pre=forms.pre)
        bh = -back.rows_lower(st, np.array([[-1.0]]), np.zeros((1, 2)), np.zeros(1), L, H)
        if bh[0, 0] < fh[0, 0] - 0.1 * abs(fh[0, 0]) - 1e-3:
            break
    else:
        raise AssertionError("no seeded network where the backward bound is tighter")
    T = 0.5 * (float(bh[0, 0]) + float(fh[0, 0]))
    prop = _prop(tmp_path, 2, 1, box, f"(assert (>= Y_0 {T!r}))")
    eng = Engine(net, read_property(prop), 20.0)
    assert not eng.alive(eng.lo[None], eng.hi[None])[0].any()
    fwd = Engine(net, read_property(prop), 20.0, backward=False)
    assert fwd.alive(fwd.lo[None], fwd.hi[None])[0].any()
    res, _ = vnn.check(path, prop, 3.0)
    assert res.answer == "unsat"
    assert _z3_max_at_least(Ws, box, T) == z3.unsat
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    X = np.random.default_rng(0).uniform(-1, 1, (300, 2)).astype(np.float32)
    top = max(float(sess.run(None, {"x": X[i:i + 1]})[0][0, 0]) for i in range(300))
    assert top < T
    assert _z3_max_at_least(Ws, box, top - 1e-3) == z3.sat  # the oracle can say sat


def test_search_starts_from_the_corners_of_the_rows_backward_forms(tmp_path):
    """y = sum_i (-1)^i x_i + x_0 x_1 on [0, 1]^30 reaches 15 only at corners with the even
    inputs 1 and the odd ones 0 (x_1 may be 1): no sampled or perturbed point comes near, the
    corner where the row's backward lower form is least is one of them. The witness replays
    exactly and onnxruntime agrees."""
    n = 30
    w = np.array([[(-1.0) ** i] for i in range(n)])
    path = _save(tmp_path, "alt", [
        helper.make_node("MatMul", ["x", "w"], ["s"]),
        helper.make_node("Slice", ["x", "s0", "s1", "ax"], ["p"]),
        helper.make_node("Slice", ["x", "s1", "s2", "ax"], ["q"]),
        helper.make_node("Mul", ["p", "q"], ["pq"]),
        helper.make_node("Add", ["s", "pq"], ["y"]),
    ], [_const("w", w)] + _slices(), n, 1)
    net = load_onnx(path)
    prop = _prop(tmp_path, n, 1, [(0, 1)] * n, "(assert (>= Y_0 14.999))")
    eng = Engine(net, read_property(prop), 5.0)
    eng.alive(eng.lo[None], eng.hi[None])
    assert eng.search(0.3) is None  # without the corners: not found
    res = Engine(net, read_property(prop), 5.0).run()
    assert res.answer == "sat"
    x = np.array([float(v) for v in res.witness_x])
    assert np.all(x[0::2] == 1) and np.all(x[3::2] == 0)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert float(sess.run(None, {"x": x[None].astype(np.float32)})[0][0, 0]) >= 14.999
