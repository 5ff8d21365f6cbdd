"""Conv, MaxPool, Slice, Pad, Concat, Sin, Cos, Sign and Pow in the ONNX importer.

Oracles: onnxruntime on small generated models (forward passes at random inputs, and every
sampled output inside the interval bounds), published VNN-COMP 2025 answers for two cersyve
instances through `verify-vnn`."""

from __future__ import annotations

import os
from fractions import Fraction

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from verifier import onnx_ops, vnn  # noqa: E402
from verifier.diagnostics import SpecError  # noqa: E402
from verifier.onnx_import import graph_lower_bounds, load_onnx  # noqa: E402

DATA = os.path.join(os.path.dirname(__file__), "data", "vnncomp2026", "cersyve")


def _model(tmp_path, nodes, in_shape, inits=(), name="m.onnx", opset=13):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    g = helper.make_graph(nodes, "g", [x], [y],
                          [numpy_helper.from_array(np.asarray(v, dtype=np.float32), k)
                           for k, v in inits])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    path = str(tmp_path / name)
    onnx.save(m, path)
    return path


def _agree(path, in_shape, rng, n=6, scale=1.0, tol=1e-5):
    net = load_onnx(path)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for _ in range(n):
        x = (rng.normal(size=in_shape) * scale).astype(np.float32)
        ref = sess.run(None, {"x": x})[0].ravel().astype(np.float64)
        got = net.evaluate_float(x.reshape(1, -1).astype(np.float64)).ravel()
        assert got.shape == ref.shape
        assert np.max(np.abs(got - ref)) <= tol * (1 + np.max(np.abs(ref)))
        exact = np.array([float(v) for v in net.evaluate_exact([Fraction(float(t)) for t in
                                                                x.ravel()])])
        assert np.max(np.abs(exact - ref)) <= tol * (1 + np.max(np.abs(ref)))
    return net


CONVS = [  # (input shape, weight shape, attributes)
    ((1, 3, 7, 6), (4, 3, 3, 3), dict(pads=[1, 0, 2, 1], strides=[2, 1], dilations=[1, 2])),
    ((1, 4, 6, 5), (6, 2, 2, 3), dict(group=2, strides=[1, 2])),
    ((1, 2, 9), (3, 2, 4), dict(auto_pad="SAME_UPPER", strides=[2])),
    ((1, 2, 5, 5), (2, 2, 3, 3), dict(auto_pad="SAME_LOWER")),
    ((1, 1, 20, 4), (3, 1, 5, 1), dict()),
]


@pytest.mark.parametrize("case", range(len(CONVS)))
def test_conv_matches_onnxruntime(tmp_path, case):
    rng = np.random.default_rng(case)
    shape, wshape, attrs = CONVS[case]
    W, B = rng.normal(size=wshape), rng.normal(size=wshape[0])
    path = _model(tmp_path, [helper.make_node("Conv", ["x", "W", "B"], ["y"], **attrs)],
                  shape, [("W", W), ("B", B)])
    net = _agree(path, shape, rng)
    assert net.is_chain and len(net.blocks) == 1  # one exact affine map


POOLS = [
    ((1, 2, 6, 6), dict(kernel_shape=[2, 2], strides=[2, 2])),
    ((1, 1, 7, 5), dict(kernel_shape=[3, 2], strides=[2, 1], pads=[1, 0, 1, 1])),
    ((1, 2, 7), dict(kernel_shape=[3], strides=[2], ceil_mode=1)),
    ((1, 1, 5, 5), dict(kernel_shape=[2, 2], dilations=[2, 1])),
]


@pytest.mark.parametrize("case", range(len(POOLS)))
def test_maxpool_matches_onnxruntime(tmp_path, case):
    rng = np.random.default_rng(10 + case)
    shape, attrs = POOLS[case]
    path = _model(tmp_path, [helper.make_node("MaxPool", ["x"], ["y"], **attrs)], shape)
    net = _agree(path, shape, rng)
    assert all(b.act is None or b.act.kind == "relu" for b in net.blocks)


def test_conv_relu_pool_flatten_gemm_chain(tmp_path):
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "G", "gb"], ["y"], transB=1)]
    inits = [("W", rng.normal(size=(3, 2, 3, 3))), ("B", rng.normal(size=3)),
             ("G", rng.normal(size=(2, 12))), ("gb", rng.normal(size=2))]
    _agree(_model(tmp_path, nodes, (1, 2, 4, 4), inits), (1, 2, 4, 4), rng)


def test_slice_pad_concat_neg(tmp_path):
    rng = np.random.default_rng(4)
    nodes = [helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["s"]),
             helper.make_node("Pad", ["s", "pads", "pv"], ["p"]),
             helper.make_node("Neg", ["x"], ["n"]),
             helper.make_node("Relu", ["n"], ["r"]),
             helper.make_node("Flatten", ["p"], ["pf"]),
             helper.make_node("Flatten", ["r"], ["rf"]),
             helper.make_node("Concat", ["pf", "rf", "k"], ["y"], axis=1)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    inits = [numpy_helper.from_array(np.asarray(v, dtype=np.int64), k) for k, v in
             (("st", [0, 5]), ("en", [2, 0]), ("ax", [1, 2]), ("sp", [1, -2]),
              ("pads", [0, 1, 0, 0, 0, 2]))]
    inits += [numpy_helper.from_array(np.float32(0.5).reshape(()), "pv"),
              numpy_helper.from_array(np.ones((1, 2), np.float32), "k")]
    m = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits),
                          opset_imports=[helper.make_opsetid("", 13)])
    path = str(tmp_path / "s.onnx")
    onnx.save(m, path)
    _agree(path, (1, 3, 6), rng)


UNARY = [("Sin", None, 4.0), ("Cos", None, 4.0), ("Sign", None, 1.0), ("Pow", 2, 2.0),
         ("Pow", 3, 2.0)]


def _unary_model(tmp_path, op, p, n=5):
    rng = np.random.default_rng(7)
    ins = ["h", "e"] if op == "Pow" else ["h"]
    nodes = [helper.make_node("Gemm", ["x", "A", "a"], ["h"], transB=1),
             helper.make_node(op, ins, ["u"]),
             helper.make_node("Gemm", ["u", "C", "c"], ["y"], transB=1)]
    inits = [("A", rng.normal(size=(n, 3))), ("a", rng.normal(size=n)),
             ("C", rng.normal(size=(2, n))), ("c", rng.normal(size=2))]
    if op == "Pow":
        inits.append(("e", np.float32(p)))
    return _model(tmp_path, nodes, (1, 3), inits, name=f"{op}{p}.onnx")


@pytest.mark.parametrize("op,p,scale", UNARY)
def test_elementwise_matches_onnxruntime(tmp_path, op, p, scale):
    net = _agree(_unary_model(tmp_path, op, p), (1, 3), np.random.default_rng(8), n=20,
                 scale=scale)
    assert net.blocks[0].act.kind == op.lower()


@pytest.mark.parametrize("op,p,scale", UNARY)
def test_interval_bounds_contain_onnxruntime_samples(tmp_path, op, p, scale):
    """Single activation on random intervals: every onnxruntime value inside the bounds; and
    the graph's certified lower bounds below every sampled value of each block."""
    rng = np.random.default_rng(9)
    ins = ["x", "e"] if op == "Pow" else ["x"]
    inits = [("e", np.float32(p))] if op == "Pow" else []
    path = _model(tmp_path, [helper.make_node(op, ins, ["y"])], (1, 4000), inits, "u.onnx")
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for width in (1e-3, 0.5, 3.0, 10.0):
        lo = rng.uniform(-3 * scale, 3 * scale, 4000)
        hi = lo + rng.uniform(0, width, 4000)
        bl, bh = onnx_ops.bounds(op.lower(), lo, hi, p)
        for t in np.linspace(0, 1, 9):
            x32 = (lo + t * (hi - lo)).astype(np.float32)
            x = x32.astype(np.float64)
            y = sess.run(None, {"x": x32.reshape(1, -1)})[0].ravel()
            inside = (x >= lo) & (x <= hi)  # the interval's float32 points only
            # onnxruntime computes in float32: allow its rounding, nothing more
            slack = np.abs(y) * 1e-6 + 1e-7
            assert np.all((y >= bl - slack)[inside]) and np.all((y <= bh + slack)[inside])
    net = load_onnx(_unary_model(tmp_path, op, p))
    box_lo, box_hi = -np.ones(3) * scale / 2, np.ones(3) * scale / 2
    low = graph_lower_bounds(net, box_lo, box_hi)
    xs = rng.uniform(box_lo, box_hi, (500, 3))
    out = net.evaluate_float(xs)
    assert np.all(out >= low[-1] - 1e-9)


def test_sin_bounds_are_tight_near_extrema():
    lo, hi = onnx_ops.sin_bounds(np.array([1.0, 4.0]), np.array([2.0, 5.0]))
    assert hi[0] == 1.0 and lo[0] > 0.84  # pi/2 inside, sin(1) = 0.841...
    assert lo[1] == -1.0 and hi[1] < -0.75  # 3 pi / 2 inside, sin(4) = -0.757


def test_unsupported_operator_and_attribute_are_located(tmp_path):
    path = _model(tmp_path, [helper.make_node("Erf", ["x"], ["y"], name="erf1")], (1, 3))
    with pytest.raises(SpecError, match=r"unsupported ONNX operator `Erf` in node `erf1` "
                                        r"\(#0, Erf\)"):
        load_onnx(path)
    path = _model(tmp_path, [helper.make_node("Pow", ["x", "e"], ["y"], name="p")], (1, 3),
                  [("e", np.float32(0.5))], "p.onnx")
    with pytest.raises(SpecError, match=r"only one constant integer exponent.* in node `p`"):
        load_onnx(path)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y",)]
    node = helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2], name="mp")
    m = helper.make_model(helper.make_graph([node], "g", [x], outs),
                          opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(m, str(tmp_path / "mp.onnx"))
    with pytest.raises(SpecError, match=r"Indices output .* in node `mp`"):
        load_onnx(str(tmp_path / "mp.onnx"))
    path = _model(tmp_path, [helper.make_node("Pad", ["x", "pads"], ["y"], mode="reflect",
                                              name="pd")], (1, 3),
                  [("pads", np.zeros(4))], "pd.onnx")
    with pytest.raises(SpecError, match=r"Pad mode `reflect`.* in node `pd`"):
        load_onnx(path)


def test_sin_networks_go_to_the_nonlinear_operator_engine(tmp_path):
    """sin <= 1 everywhere: the interval engine of `nonlinear_ops` proves Y_0 >= 1000
    unreachable and names itself."""
    path = _unary_model(tmp_path, "Sin", None)
    prop = tmp_path / "p.vnnlib"
    prop.write_text("(declare-const X_0 Real)\n(declare-const X_1 Real)\n"
                    "(declare-const X_2 Real)\n(declare-const Y_0 Real)\n"
                    "(declare-const Y_1 Real)\n"
                    + "".join(f"(assert (>= X_{i} -1))\n(assert (<= X_{i} 1))\n"
                              for i in range(3))
                    + "(assert (>= Y_0 1000))\n")
    res, _ = vnn.check(path, str(prop), 10.0)
    assert res.answer == "unsat" and res.stats["engine"].startswith("nonlinear_ops")


@pytest.mark.parametrize("net,answer", [("pendulum_pretrain_con.onnx", "sat"),
                                        ("pendulum_finetune_con.onnx", "unsat")])
def test_cersyve_published_answers(net, answer):
    """VNN-COMP 2025 cersyve: alpha-beta-CROWN's published answers for these two rows."""
    res, _ = vnn.check(os.path.join(DATA, net), os.path.join(DATA, "prop_pendulum.vnnlib"),
                       100.0)
    assert res.answer == answer
    if answer == "sat":
        sess = ort.InferenceSession(os.path.join(DATA, net), providers=["CPUExecutionProvider"])
        y = sess.run(None, {"data_0": np.array([[float(v) for v in res.witness_x]],
                                               dtype=np.float32)})[0].ravel()
        assert y[0] <= 1e-5 and y[1] >= -1e-5  # the property's unsafe region: Y_0 <= 0 <= Y_1
