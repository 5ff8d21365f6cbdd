"""ONNX import against onnxruntime: the layer zoo, benchmark networks, hand-built graphs."""

from __future__ import annotations

import glob
import gzip
import os
import pickle
from fractions import Fraction

import numpy as np
import pytest
from tools import require

from verifier.diagnostics import SpecError

onnx = require("onnx")
ort = require("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

from verifier.onnx_import import load_onnx, network_from_onnx

HERE = os.path.dirname(__file__)
DATA = os.path.join(HERE, "data")  # third-party files, sources in data/README.md
ZOO = sorted(glob.glob(os.path.join(DATA, "marabou-layer-zoo", "*.onnx")))
# optional: a folder holding the full VNN-COMP 2021 sets (not shipped, see data/README.md)
REFUSED = {  # file -> words the error must contain
    "dropout_training_mode_true.onnx": ["Dropout", "training mode", "#0"],
}
OTHERS = [os.path.join(DATA, p) for p in (
    "../../examples/wind_controller.onnx", "vnncomp2021-test/test_nano.onnx",
    "vnncomp2021-test/test_tiny.onnx", "vnncomp2021-test/test_small.onnx",
    "vnncomp2021-test/test_sat.onnx")]


def run_ort(path_or_bytes, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(path_or_bytes, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
    return sess.run(None, {inp.name: x.astype(np.float32).reshape(shape)})[0]


def check_agrees(path_or_bytes, net, seed=0, tol=1e-5):
    rng = np.random.default_rng(seed)
    for _ in range(3):
        x = rng.uniform(-2, 2, size=net.n_in).astype(np.float32)
        ref = run_ort(path_or_bytes, x).astype(np.float64)
        assert ref.shape == tuple(net.out_shape) or ref.size == net.n_out
        exact = np.array([float(v) for v in net.evaluate_exact([float(t) for t in x])])
        flt = net.evaluate_float(x.astype(np.float64)[None])[0]
        scale = 1 + np.abs(ref.ravel())
        assert np.all(np.abs(exact - ref.ravel()) <= tol * scale), (exact, ref)
        assert np.all(np.abs(flt - exact) <= 1e-9 * scale)


def test_zoo_is_there():
    assert len(ZOO) == 24


@pytest.mark.parametrize("path", ZOO, ids=os.path.basename)
def test_layer_zoo_matches_onnxruntime(path):
    name = os.path.basename(path)
    if name in REFUSED:
        with pytest.raises(SpecError) as err:
            load_onnx(path)
        for word in REFUSED[name]:
            assert word in err.value.message
        assert "node" in err.value.message
        return
    net = load_onnx(path)
    check_agrees(path, net)


@pytest.mark.parametrize("path", OTHERS, ids=os.path.basename)
def test_benchmark_networks_match_onnxruntime(path):
    check_agrees(path, load_onnx(path))


def _acasxu_networks():
    return sorted(glob.glob(os.path.join(DATA, "vnncomp2021-acasxu", "*.onnx")))


@pytest.mark.parametrize("path", _acasxu_networks(), ids=lambda p: os.path.basename(p or "none"))
def test_all_acasxu_networks_match_onnxruntime(path):
    check_agrees(path, load_onnx(path))


def test_acasxu_initializers_in_graph_input_and_folding():
    net = load_onnx(os.path.join(DATA, "vnncomp2021-test", "test_unsat.onnx"))
    kinds = [type(la).__name__ for la in net.layers]
    assert kinds == ["Affine", "Act"] * 6 + ["Affine"]  # Sub + Flatten + MatMul + Add folded
    assert net.n_in == 5 and net.n_out == 5


def test_gzip(tmp_path):
    src = os.path.join(DATA, "marabou-layer-zoo", "gemm.onnx")
    gz = tmp_path / "gemm.onnx.gz"
    with open(src, "rb") as fh, gzip.open(gz, "wb") as out:
        out.write(fh.read())
    check_agrees(src, load_onnx(str(gz)))


def _model(nodes, inits, in_shape, out_shape, opset=13):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        initializer=[numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return model.SerializeToString()


def _load_bytes(tmp_path, data, name="m.onnx"):
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def test_gemm_transposes_alpha_beta_and_chain(tmp_path):
    rng = np.random.default_rng(3)
    inits = {"A": rng.normal(size=(3, 4)), "C": rng.normal(size=(3,)),
             "B2": rng.normal(size=(3, 2)), "s": np.array([0.5, -2.0]),
             "d": np.array([4.0, 0.25]), "shape": np.array([1, -1]),
             "mean": rng.normal(size=2), "var": rng.uniform(0.5, 2, size=2),
             "sc": rng.normal(size=2), "bi": rng.normal(size=2)}
    inits["shape"] = inits["shape"].astype(np.float32)
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0]),  # (1,4)
        helper.make_node("Transpose", ["xt"], ["xtt"]),  # (4,1) again
        helper.make_node("Gemm", ["xtt", "A", "C"], ["g"], transA=1, transB=1, alpha=0.75,
                         beta=-1.5),  # (1,3)
        helper.make_node("LeakyRelu", ["g"], ["h"], alpha=0.1),
        helper.make_node("MatMul", ["h", "B2"], ["m"]),  # (1,2)
        helper.make_node("Mul", ["m", "s"], ["m2"]),
        helper.make_node("Div", ["m2", "d"], ["m3"]),
        helper.make_node("Unsqueeze", ["m3", "ax"], ["u"]),  # (1,1,2)
        helper.make_node("Squeeze", ["u", "ax"], ["q"]),
        helper.make_node("BatchNormalization", ["q", "sc", "bi", "mean", "var"], ["bn"],
                         epsilon=1e-3),
        helper.make_node("Tanh", ["bn"], ["t"]),
        helper.make_node("Reshape", ["t", "shp"], ["y"]),
    ]
    graph_inits = {k: v for k, v in inits.items() if k != "shape"}
    data = _model(nodes, graph_inits, [4, 1], [1, 2])
    model = onnx.load_from_string(data)
    model.graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), "ax"))
    model.graph.initializer.append(numpy_helper.from_array(np.array([0, -1], np.int64), "shp"))
    path = _load_bytes(tmp_path, model.SerializeToString())
    net = load_onnx(path)
    check_agrees(path, net, tol=1e-5)


def test_unsupported_operator_names_node_and_index(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="first"),
             helper.make_node("Exp", ["r"], ["y"], name="the_exp")]
    path = _load_bytes(tmp_path, _model(nodes, {}, [1, 2], [1, 2]))
    with pytest.raises(SpecError) as err:
        load_onnx(path)
    msg = err.value.message
    assert "`Exp`" in msg and "`the_exp`" in msg and "#1" in msg


def test_nonlinear_quotient_is_refused(tmp_path):
    nodes = [helper.make_node("Div", ["x", "x"], ["y"], name="sq")]
    path = _load_bytes(tmp_path, _model(nodes, {}, [1, 2], [1, 2]))
    with pytest.raises(SpecError, match="not linear"):
        load_onnx(path)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        load_onnx(str(tmp_path / "nope.onnx"))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not a model")
    with pytest.raises(SpecError):
        load_onnx(str(bad))


def test_network_from_onnx_builds_dense_layers():
    path = os.path.join(DATA, "vnncomp2021-test", "test_small.onnx")
    network, weights = network_from_onnx(path, "f", None, in_shape=(1,))
    assert [la.kind for la in network.layers] == ["dense"] * 3
    assert [la.option("act") for la in network.layers] == ["relu", "relu", "identity"]
    vals = {w.name: w for w in weights}
    assert vals["f.W1"].shape == (2, 1) and vals["f.b3"].shape == (1,)
    assert all(e.is_Rational for w in weights for e in w.entries)

    def run(x):
        v = [Fraction(x)]
        for la in network.layers:
            W, b = vals[la.params[0]], vals[la.params[1]]
            n_out, n_in = W.shape
            z = [sum(Fraction(str(W.entries[i * n_in + j])) * v[j] for j in range(n_in))
                 + Fraction(str(b.entries[i])) for i in range(n_out)]
            v = [max(t, 0) for t in z] if la.option("act") == "relu" else z
        return v[0]

    assert [run(x) for x in (-1, 0, 1)] == [Fraction("30.5"), Fraction("54.5"), Fraction("78.5")]
    with pytest.raises(SpecError, match="takes 1 inputs"):
        network_from_onnx(path, "f", None, in_shape=(3,))


def test_exact_replays_reuse_integer_weights_and_pickle_without_them():
    """Exact forward passes keep each matrix's integer form for the next replay (the same
    values as onnxruntime, checked above on three points each); a pickled network (sent to a
    worker) leaves them out and evaluates the same rationals."""
    net = load_onnx(os.path.join(DATA, "vnncomp2021-test", "test_small.onnx"))
    x = [Fraction(1, 3), Fraction(-2, 7)][: net.n_in] + [Fraction(1, 5)] * max(0, net.n_in - 2)
    first = net.evaluate_exact(x)
    assert net.__dict__.get("_scaled_weights")
    again = pickle.loads(pickle.dumps(net))
    assert "_scaled_weights" not in again.__dict__
    assert again.evaluate_exact(x) == first == net.evaluate_exact(x)
