"""Two networks in one query: the combined network, and answers against exact oracles.

Oracles: onnxruntime on the original ONNX files (the combined network must compute each
network's outputs from the shared input columns; every `sat` witness must hold there), and
z3 on an exact encoding of both small networks (ReLU as `If`) for `unsat`.
"""

from __future__ import annotations

import itertools
import os
from fractions import Fraction

import numpy as np
import pytest
from tools import require

require("onnx")
ort = require("onnxruntime")
import z3
from onnx import TensorProto, helper, numpy_helper

from verifier import vnn
from verifier.multinet import combine, decide_query, linear_property
from verifier.onnx_import import load_onnx
from verifier.vnnlib2 import Var, parse_vnnlib2, read_property

HERE = os.path.dirname(__file__)
ACAS = os.path.join(HERE, "data", "vnncomp2021-acasxu")
MONO = os.path.join(HERE, "data", "vnncomp2026", "monotonic_instance_0.vnnlib")


def write_mlp(path, rng, sizes):
    """A Gemm/Relu chain with float32 weights, as an ONNX file."""
    nodes, inits, prev = [], [], "x"
    for k, (a, b) in enumerate(itertools.pairwise(sizes)):
        W = (rng.normal(size=(b, a)) / np.sqrt(a)).astype(np.float32)
        c = (rng.normal(size=b) * 0.1).astype(np.float32)
        inits += [numpy_helper.from_array(W, f"W{k}"), numpy_helper.from_array(c, f"b{k}")]
        out = "y" if k == len(sizes) - 2 else f"z{k}"
        nodes.append(helper.make_node("Gemm", [prev, f"W{k}", f"b{k}"], [out], transB=1))
        if out != "y":
            nodes.append(helper.make_node("Relu", [out], [f"h{k}"]))
            prev = f"h{k}"
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, sizes[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, sizes[-1]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    with open(path, "wb") as fh:
        fh.write(model.SerializeToString())
    return str(path)


def run_ort(path, x):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
    return sess.run(None, {inp.name: np.asarray(x, dtype=np.float32).reshape(shape)})[0].ravel()


def test_combined_acas_pair_equals_each_copy():
    """monotonic_acasxu_2026: g equal to f, inputs 1..4 tied, X_g[0] free: 6 columns."""
    q = read_property(MONO)
    path = os.path.join(ACAS, "ACASXU_run2a_4_2_batch_2000.onnx")
    comb = combine(q, {"f": load_onnx(path)})
    assert comb.n_cols == 6 and comb.net.is_chain
    assert [comb.column[Var("g", "X", i)] for i in range(5)] == [5, 1, 2, 3, 4]
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = rng.uniform(-0.3, 0.5, size=6)
        y = comb.net.evaluate_float(x[None])[0]
        assert np.allclose(y[:5], run_ort(path, x[:5]), atol=1e-5)
        assert np.allclose(y[5:], run_ort(path, x[[5, 1, 2, 3, 4]]), atol=1e-5)
    prop = linear_property(comb)
    (d,), = [prop.disjuncts]
    assert d.lo[3] == d.hi[3] == Fraction(227272727, 10**9)  # (== X_f[3] 0.227272727)
    assert d.hi[5] == Fraction(667245963, 10**9) and d.lo[5] == Fraction(-16247807, 10**8)


def test_serial_combination_of_different_depths(tmp_path):
    rng = np.random.default_rng(1)
    pf = write_mlp(tmp_path / "f.onnx", rng, [3, 6, 2])
    pg = write_mlp(tmp_path / "g.onnx", rng, [3, 5, 4, 2])
    q = parse_vnnlib2(_pair_query("(assert (<= Y_f[0] Y_g[0]))", tie=True))
    comb = combine(q, {"f": load_onnx(pf), "g": load_onnx(pg)})
    assert not comb.net.is_chain  # the blocks one after the other, one output block
    for _ in range(3):
        x = rng.uniform(-1, 1, size=comb.n_cols)
        y = comb.net.evaluate_exact([Fraction(float(v)) for v in x])
        assert np.allclose([float(v) for v in y[:2]], run_ort(pf, x[:3]), atol=1e-5)
        assert np.allclose([float(v) for v in y[2:]], run_ort(pg, x[:3]), atol=1e-5)


def _pair_query(output: str, tie: bool) -> str:
    ties = "".join(f"(assert (== X_f[{i}] X_g[{i}]))\n" for i in range(3)) if tie else \
        "".join(f"(assert (and (>= X_g[{i}] -1) (<= X_g[{i}] 1)))\n" for i in range(3))
    return ("(vnnlib-version <2.0>)\n"
            "(declare-network f (declare-input X_f real [3]) (declare-output Y_f real [2]))\n"
            "(declare-network g (declare-input X_g real [3]) (declare-output Y_g real [2]))\n"
            + "".join(f"(assert (and (>= X_f[{i}] -1) (<= X_f[{i}] 1)))\n" for i in range(3))
            + ties + output + "\n")


def _z3_net(net, xs):
    vals = [xs]
    for blk in net.blocks:
        z = [z3.RealVal(str(c)) for c in blk.b]
        for s, W in blk.terms:
            z = [z[r] + z3.Sum([z3.RealVal(str(W[r, c])) * vals[s][c]
                                for c in range(W.shape[1]) if W[r, c] != 0] + [0])
                 for r in range(W.shape[0])]
        vals.append(z if blk.act is None else [z3.If(t > 0, t, 0) for t in z])
    return vals[-1]


def z3_answer(q, nets) -> str:
    """The exact answer of a linear or polynomial query on small networks."""
    s = z3.Solver()
    env = {}
    for d in q.networks:
        xs = [z3.Real(f"{d.name}_x{i}") for i in range(d.inputs.size)]
        ys = _z3_net(nets[d.name], xs)
        env.update({Var(d.name, "X", i): v for i, v in enumerate(xs)})
        env.update({Var(d.name, "Y", j): v for j, v in enumerate(ys)})
    cases = []
    for dj in q.disjuncts:
        atoms = []
        for a in dj:
            p = z3.Sum([z3.RealVal(str(c)) * z3.Product([env[v] ** k for v, k in m] + [1])
                        for m, c in a.poly.items()] + [0])
            atoms.append(p < 0 if a.strict else p <= 0)
        cases.append(z3.And(atoms))
    s.add(z3.Or(cases))
    return str(s.check())


@pytest.mark.parametrize("seed, output, tie", [
    (2, "(assert (> (- Y_f[0] Y_g[0]) 0.5))", True),
    (3, "(assert (> (- Y_f[0] Y_g[0]) 2.0))", True),
    (4, "(assert (and (> Y_f[1] Y_g[1]) (< Y_f[0] (- Y_g[0] 0.3))))", False),
    (5, "(assert (or (> Y_f[0] 1.5) (> (+ Y_g[0] Y_g[1]) 1.5)))", True),
    (6, "(assert (>= (- Y_g[1] Y_f[1]) 3))", False),
])
def test_two_networks_against_z3(tmp_path, seed, output, tie):
    rng = np.random.default_rng(seed)
    pf = write_mlp(tmp_path / "f.onnx", rng, [3, 8, 2])
    pg = write_mlp(tmp_path / "g.onnx", rng, [3, 8, 2])
    q = parse_vnnlib2(_pair_query(output, tie))
    nets = {"f": load_onnx(pf), "g": load_onnx(pg)}
    res, env = decide_query(q, nets, 30.0, workers=1)
    truth = z3_answer(q, nets)
    assert res.answer == truth
    if res.answer == "sat":
        x_f = [float(env[Var("f", "X", i)]) for i in range(3)]
        x_g = [float(env[Var("g", "X", i)]) for i in range(3)]
        if tie:
            assert x_f == x_g
        yf, yg = run_ort(pf, x_f), run_ort(pg, x_g)
        ort_env = {**{Var("f", "X", i): x_f[i] for i in range(3)},
                   **{Var("g", "X", i): x_g[i] for i in range(3)},
                   **{Var("f", "Y", j): float(yf[j]) for j in range(2)},
                   **{Var("g", "Y", j): float(yg[j]) for j in range(2)}}
        assert any(all(float(a.value(ort_env)) <= 1e-4 for a in d) for d in q.disjuncts)


def test_cli_two_networks(tmp_path, capsys):
    rng = np.random.default_rng(2)
    pf = write_mlp(tmp_path / "f.onnx", rng, [3, 8, 2])
    pg = write_mlp(tmp_path / "g.onnx", rng, [3, 8, 2])
    prop = tmp_path / "q.vnnlib"
    prop.write_text(_pair_query("(assert (> (- Y_f[0] Y_g[0]) 0.5))", True))
    code = vnn.main(["--onnx", f"f={pf}", "--onnx", f"g={pg}", "--vnnlib", str(prop),
                     "--timeout", "30", "--workers", "1"])
    out = capsys.readouterr().out
    assert code == vnn.EXIT[out.split()[0]]
    if out.startswith("sat"):
        assert "X_f real [3]" in out and "Y_g real [2]" in out
    code = vnn.main(["--onnx", f"f={pf}", "--vnnlib", str(prop), "--timeout", "5"])
    assert code == 2
    assert "no ONNX file for network `g`" in capsys.readouterr().err


def test_monotonic_acasxu_instance_is_sat_with_a_replayed_witness(capsys):
    """The published monotonic_acasxu_2026 query on ACAS Xu 4_2 (its instances.csv's network):
    a witness with X_f[0] <= X_g[0] and Y_f[1] < Y_g[1], checked with onnxruntime."""
    path = os.path.join(ACAS, "ACASXU_run2a_4_2_batch_2000.onnx")
    code = vnn.main(["--onnx", f"f={path}", "--vnnlib", MONO, "--timeout", "60",
                     "--workers", "1"])
    out = capsys.readouterr().out.split("\n")
    assert code == 1 and out[0] == "sat"
    assert out[1] == "X_f real [5]" and out[7] == "Y_f real [5]"
    x_f = [float(v) for v in out[2:7]]
    x_g = [float(v) for v in out[14:19]]
    assert out[13] == "X_g real [5]"
    assert x_f[1:] == x_g[1:] and x_f[0] <= x_g[0] <= 0.667245963
    y_f, y_g = run_ort(path, x_f), run_ort(path, x_g)
    assert y_f[1] < y_g[1] + 1e-6
    assert abs(float(out[9]) - y_f[1]) < 1e-4


def test_isomorphic_pruned_pair(capsys):
    """isomorphic_acasxu_2026 instance 1 (ACAS Xu 3_4 against its 5% node-pruned copy, as the
    source repository ships them). The file asserts the outputs *within* 0.05 of each other
    (its README describes the opposite, the distance above 0.05); it is read as written, so
    the answer is `sat`, with a witness that onnxruntime confirms on both networks."""
    d = os.path.join(HERE, "data", "vnncomp2026")
    pf = os.path.join(d, "iso_ACASXU_run2a_3_4_batch_2000.onnx")
    pg = os.path.join(d, "iso_ACASXU_run2a_3_4_batch_2000_pruned5.onnx")
    prop = os.path.join(d, "isomorphic_instance_1.vnnlib")
    assert read_property(prop).networks[1].isomorphic_to == "f"
    code = vnn.main(["--onnx", f"f={pf}", "--onnx", f"g={pg}", "--vnnlib", prop,
                     "--timeout", "60", "--workers", "1"])
    out = capsys.readouterr().out.split("\n")
    assert code == 1 and out[0] == "sat"
    x_f, x_g = [float(v) for v in out[2:7]], [float(v) for v in out[14:19]]
    assert x_f == x_g and 0.6 <= x_f[0] <= 0.679857769 and x_f[4] == -0.45
    y_f, y_g = run_ort(pf, x_f), run_ort(pg, x_g)
    assert np.max(np.abs(y_f - y_g)) <= 0.05 + 1e-5
