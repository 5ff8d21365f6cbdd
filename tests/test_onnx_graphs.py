"""ONNX graphs that are not a plain chain: skip connections, branches, dead nodes.

Oracles: onnxruntime (values of every graph at many points), torch (a residual MLP exported
by torch.onnx), dense sampling (every `unsat` answer must agree with it) and exact replay of
every witness. An importer that reads a value in the wrong basis fails these at once.
"""

from __future__ import annotations

import warnings
from fractions import Fraction

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper
from spec_oracle import derivation, values

from verifier.diagnostics import SpecError
from verifier.elaborate import elaborate
from verifier.engines.relu_bab import decide
from verifier.obligations import build_model
from verifier.onnx_import import load_onnx
from verifier.vnnlib import parse_vnnlib


def save(path, nodes, inits, n_in, n_out, opset=13):
    X = helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, n_in])
    Y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, n_out])
    tensors = [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()]
    g = helper.make_graph(nodes, "g", [X], [Y], tensors)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def run_ort(path, xs: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return np.stack([sess.run(None, {"X": x[None].astype(np.float32)})[0].ravel() for x in xs])


def box_property(n_in, n_out, lo, hi, unsafe: str):
    lines = [f"(declare-const X_{i} Real)" for i in range(n_in)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    for i in range(n_in):
        lines += [f"(assert (>= X_{i} {lo}))", f"(assert (<= X_{i} {hi}))"]
    lines.append(f"(assert {unsafe})")
    return parse_vnnlib("\n".join(lines) + "\n")


ONES = {"ones": [[1.0], [1.0]]}
THREE = {
    # Y = x0 + x1, next to a Relu nobody reads
    "unused": [helper.make_node("Relu", ["X"], ["dead"]),
               helper.make_node("MatMul", ["X", "ones"], ["Y"])],
    # Y = sum(relu(x) + x)
    "residual": [helper.make_node("Relu", ["X"], ["r"]),
                 helper.make_node("Add", ["r", "X"], ["s"]),
                 helper.make_node("MatMul", ["s", "ones"], ["Y"])],
    # Y = sum(x) - sum(relu(x))
    "branches": [helper.make_node("Relu", ["X"], ["r"]),
                 helper.make_node("MatMul", ["X", "ones"], ["a"]),
                 helper.make_node("MatMul", ["r", "ones"], ["b"]),
                 helper.make_node("Sub", ["a", "b"], ["Y"])],
}


@pytest.mark.parametrize("name", sorted(THREE))
def test_three_small_graphs(name, tmp_path):
    path = save(tmp_path / f"{name}.onnx", THREE[name], ONES, 2, 1)
    net = load_onnx(path)
    corner = np.array([[-1.0, -1.0]])
    assert run_ort(path, corner)[0, 0] == pytest.approx(-2.0)
    assert net.evaluate_exact([-1, -1]) == [Fraction(-2)]
    # the false property (Y >= -1 on the box) is refuted with the corner's value
    res = decide(net, box_property(2, 1, -1, 1, "(<= Y_0 -1)"), 20)
    assert res.answer == "sat"
    y = run_ort(path, np.array([[float(v) for v in res.witness_x]]))[0, 0]
    assert y <= -1 + 1e-6
    # the true ones are proved, the strict one too
    assert decide(net, box_property(2, 1, -1, 1, "(<= Y_0 -2.001)"), 20).answer == "unsat"
    assert decide(net, box_property(2, 1, -1, 1, "(< Y_0 -2)"), 20).answer == "unsat"
    # ...and the boundary value is reached, so `<=` there is sat
    assert decide(net, box_property(2, 1, -1, 1, "(<= Y_0 -2)"), 20).answer == "sat"


@pytest.mark.parametrize("name", sorted(THREE))
def test_spec_claims_on_small_graphs(name, tmp_path):
    save(tmp_path / f"{name}.onnx", THREE[name], ONES, 2, 1)
    spec = tmp_path / "s.snn"
    spec.write_text(f'input u : real[2] in [-1, 1]\nnetwork n(in=2) load "{name}.onnx" {{ }}\n'
                    "claim nonneg: n(u)[0] >= 0\nclaim low: n(u)[0] >= -2\n"
                    "claim above: n(u)[0] > -2\n")
    from verifier import run

    model = run.load(str(spec))
    verdicts = {v.name: v for v in run.check(model, 20)}
    assert verdicts["nonneg"].verdict == "refuted"
    assert verdicts["above"].verdict == "refuted"
    assert verdicts["low"].verdict == "proved"
    for name_ in ("nonneg", "above"):
        cx = verdicts[name_].counterexample
        x = np.array([[float(Fraction(str(cx["u[0]"]))), float(Fraction(str(cx["u[1]"])))]])
        assert run_ort(str(tmp_path / f"{name}.onnx"), x)[0, 0] <= -2 + 1e-6


def residual_mlp(seed: int):
    torch = pytest.importorskip("torch")

    class Residual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = torch.nn.Linear(3, 3)
            self.fc2 = torch.nn.Linear(3, 1)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x)) + x)

    torch.manual_seed(seed)
    return torch, Residual().double().eval()


def test_residual_mlp_exported_by_torch(tmp_path):
    torch, model = residual_mlp(3)
    path = str(tmp_path / "res.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model.float(), torch.zeros(1, 3, dtype=torch.float32), path,
                          input_names=["X"],
                          output_names=["Y"], dynamo=False)
    ops = [n.op_type for n in onnx.load(path).graph.node]
    assert "Add" in ops and "Relu" in ops
    net = load_onnx(path)
    assert not net.is_chain
    rng = np.random.default_rng(0)
    xs = rng.uniform(-1, 1, size=(4000, 3))
    with torch.no_grad():
        ref = model.double()(torch.tensor(xs)).numpy()
    assert np.max(np.abs(net.evaluate_float(xs) - ref)) < 1e-5
    assert np.allclose(run_ort(path, xs[:50]), ref[:50], atol=1e-5)
    lowest = float(ref.min())
    # above the sampled minimum: a violation exists, and must be found and replayed
    t = lowest + 0.01
    res = decide(net, box_property(3, 1, -1, 1, f"(<= Y_0 {t!r})"), 30)
    assert res.answer == "sat"
    assert float(res.witness_y[0]) <= t
    with torch.no_grad():
        assert model(torch.tensor([[float(v) for v in res.witness_x]],
                                  dtype=torch.float64)).item() <= t + 1e-6
    # far below it: proved, and consistent with every sample
    t = lowest - 0.25
    res = decide(net, box_property(3, 1, -1, 1, f"(<= Y_0 {t!r})"), 30)
    assert res.answer == "unsat"


def random_dag(rng, n_in: int, n_out: int, acts: tuple[str, ...], steps: int = 7):
    """A random graph over [1, w] tensors: linear maps of any earlier value, activations,
    sums and differences of two earlier values of one width, and dead nodes."""
    nodes, inits = [], {}
    vals = [("X", n_in)]
    for k in range(steps):
        op = rng.choice(["linear", "linear", "act", "act", "add", "dead"])
        src, w = vals[int(rng.integers(len(vals)))]
        name = f"v{k}"
        if op == "linear":
            m = int(rng.integers(2, 5))
            inits[f"W{k}"] = rng.normal(size=(w, m)) / np.sqrt(w)
            inits[f"c{k}"] = rng.normal(size=m) * 0.3
            if rng.random() < 0.5:
                nodes += [helper.make_node("MatMul", [src, f"W{k}"], [name + "m"]),
                          helper.make_node("Add", [name + "m", f"c{k}"], [name])]
            else:
                inits[f"W{k}"] = inits[f"W{k}"].T
                nodes.append(helper.make_node("Gemm", [src, f"W{k}", f"c{k}"], [name],
                                              transB=1))
            vals.append((name, m))
        elif op in ("act", "dead"):
            kind = str(rng.choice(acts))
            extra = {"alpha": 0.125} if kind == "LeakyRelu" else {}
            nodes.append(helper.make_node(kind, [src], [name], **extra))
            if op == "act":
                vals.append((name, w))
        else:
            same = [v for v in vals if v[1] == w and v[0] != src]
            if not same:
                continue
            other = same[int(rng.integers(len(same)))][0]
            nodes.append(helper.make_node(str(rng.choice(["Add", "Sub"])), [src, other], [name]))
            vals.append((name, w))
    # the output reads the last value and an earlier one (a skip to the output)
    last, w = vals[-1]
    early, we = vals[int(rng.integers(len(vals) - 1))] if len(vals) > 1 else vals[0]
    inits["Wo"] = rng.normal(size=(w, n_out)) / np.sqrt(w)
    inits["We"] = rng.normal(size=(we, n_out)) / np.sqrt(we)
    nodes += [helper.make_node("MatMul", [last, "Wo"], ["o1"]),
              helper.make_node("MatMul", [early, "We"], ["o2"]),
              helper.make_node("Add", ["o1", "o2"], ["Y"])]
    return nodes, inits


@pytest.mark.parametrize("seed", range(12))
def test_random_dags_agree_with_onnxruntime(seed, tmp_path):
    rng = np.random.default_rng(seed)
    acts = ("Relu", "LeakyRelu", "Tanh", "Sigmoid") if seed % 3 == 2 else ("Relu", "LeakyRelu")
    nodes, inits = random_dag(rng, 3, 2, acts)
    path = save(tmp_path / "g.onnx", nodes, inits, 3, 2)
    net = load_onnx(path)
    xs = rng.uniform(-2, 2, size=(300, 3))
    ref = run_ort(path, xs)
    ours = net.evaluate_float(xs)
    assert np.allclose(ours, ref, rtol=1e-4, atol=1e-4), np.max(np.abs(ours - ref))
    for x in xs[:5]:
        exact = [float(v) for v in net.evaluate_exact([Fraction(float(t)) for t in x])]
        assert np.allclose(exact, net.evaluate_float(x[None])[0], rtol=1e-12, atol=1e-12)
    # the spec path reads the same graph
    spec = tmp_path / "s.snn"
    spec.write_text('input u : real[3] in [-2, 2]\nnetwork n(in=3) load "g.onnx" { }\n'
                    "derive output n(u)\n")
    spec = elaborate(str(spec))
    model = build_model(spec)
    u = [s for t in spec.inputs for s in t.entries]
    for x in xs[:3]:
        point = {s: Fraction(float(v)) for s, v in zip(u, x)}
        got = values(model, derivation(model, "output").terms, point)
        assert np.allclose(got, net.evaluate_float(x[None])[0], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("seed", range(8))
def test_random_relu_dag_answers_agree_with_sampling(seed, tmp_path):
    rng = np.random.default_rng(100 + seed)
    nodes, inits = random_dag(rng, 2, 1, ("Relu", "LeakyRelu"), steps=8)
    path = save(tmp_path / "g.onnx", nodes, inits, 2, 1)
    net = load_onnx(path)
    grid = np.stack(np.meshgrid(np.linspace(-1, 1, 121), np.linspace(-1, 1, 121)), -1)
    ys = run_ort(path, grid.reshape(-1, 2))[:, 0]
    lowest, spread = float(ys.min()), float(ys.max() - ys.min()) + 1e-3
    for t in (lowest - 0.3 * spread, lowest - 0.02 * spread, lowest + 0.05 * spread):
        res = decide(net, box_property(2, 1, -1, 1, f"(<= Y_0 {t!r})"), 20)
        if res.answer == "unsat":
            assert lowest > t, f"unsat, but a sampled point has Y = {lowest} <= {t}"
        elif res.answer == "sat":
            x = np.array([[float(v) for v in res.witness_x]])
            assert float(res.witness_y[0]) <= t
            assert run_ort(path, x)[0, 0] <= t + 1e-4
        if t > lowest:
            assert res.answer == "sat"
        if t == lowest - 0.3 * spread:
            assert res.answer == "unsat"


def test_skip_across_a_smooth_activation_is_refused_by_name(tmp_path):
    nodes = [helper.make_node("Tanh", ["X"], ["t"], name="the_tanh"),
             helper.make_node("Add", ["t", "X"], ["s"]),
             helper.make_node("Tanh", ["s"], ["u"], name="second_tanh"),
             helper.make_node("Add", ["u", "X"], ["v"]),
             helper.make_node("MatMul", ["v", "ones"], ["Y"])]
    path = save(tmp_path / "t.onnx", nodes, ONES, 2, 1)
    net = load_onnx(path)
    with pytest.raises(SpecError, match="the_tanh"):
        decide(net, box_property(2, 1, -1, 1, "(<= Y_0 -5)"), 5)
    # the spec path takes the graph as it is
    spec = tmp_path / "s.snn"
    spec.write_text('input u : real[2] in [-1, 1]\nnetwork n(in=2) load "t.onnx" { }\n'
                    "claim low: n(u)[0] >= -5\nclaim tight: n(u)[0] >= -2\n")
    from verifier import run

    verdicts = {v.name: v.verdict for v in run.check(run.load(str(spec)), 20)}
    assert verdicts == {"low": "proved", "tight": "refuted"}


def test_special_and_oversized_onnx_files_are_located_errors(tmp_path, monkeypatch):
    import verifier.onnx_import as oi

    link = tmp_path / "zero.onnx"
    link.symlink_to("/dev/zero")
    with pytest.raises(SpecError, match="not a regular file"):
        load_onnx(str(link))
    path = save(tmp_path / "r.onnx", THREE["residual"], ONES, 2, 1)
    monkeypatch.setattr(oi, "MAX_ONNX_BYTES", 16)
    with pytest.raises(SpecError, match="larger than 16 bytes"):
        load_onnx(path)
