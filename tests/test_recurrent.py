"""`lstm` and `gru` layers against PyTorch in float64.

For every option we compare, at random weights and inputs, the forward value, the input
Jacobian (`derive jacobian`, the sequence input flattened row-major) and the gradient with
respect to `weight_ih_l0` (`derive gradient`, symbolic weights evaluated at the point) with
`torch.nn.LSTM` / `torch.nn.GRU` (plus `torch.nn.Linear(H, 1)` for the projection) when the
convention is PyTorch's, and with a hand-written torch implementation otherwise (single bias,
GRU reset before the recurrent product, other activations). The hand-written implementation
is itself checked against the torch modules. Our terms are evaluated exactly / at 60 digits by
`verifier.engines.replay.evaluate`.
"""

from __future__ import annotations

import json
import re
import zlib
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

from verifier.diagnostics import SpecError
from verifier.elaborate import elaborate
from verifier.engines.replay import evaluate
from verifier.obligations import build_model
from verifier.run import load

torch = pytest.importorskip("torch")
nn = torch.nn

SPECS = Path(__file__).resolve().parent.parent / "specs"
TOL = 1e-9
ACT = {"sigmoid": torch.sigmoid, "tanh": torch.tanh,
       "softplus": torch.nn.functional.softplus, "identity": lambda v: v}


# ---- our side ---------------------------------------------------------------------------------


def spec_text(kind: str, options: str, T: int, n: int, load_file: str | None = None,
              hessian: bool = False) -> str:
    src = f' load "{load_file}"' if load_file else ""
    lines = [f"input x : real[{T}, {n}]",
             f"network f(in=[{T}, {n}]){src} {{",
             f"  {kind}({options})",
             "}",
             "derive output f(x) as out",
             "derive jacobian f(x) wrt x as jac"]
    if load_file is None:
        lines.append("derive gradient f(x)[0] wrt f.weight_ih_l0 as grad")
    if hessian:
        lines.append("derive hessian f(x)[0] wrt x as hess")
    return "\n".join(lines) + "\n"


def build(tmp_path: Path, text: str):
    path = tmp_path / "net.snn"
    path.write_text(text)
    spec = elaborate(str(path))
    return spec, build_model(spec)


def random_point(spec, rng):
    """Random float64 values for the input and every symbolic weight, by tensor name."""
    values = {}
    for t in spec.inputs + spec.params:
        if not t.concrete:
            values[t.name] = rng.uniform(-1, 1, size=t.shape)
    return values


def as_point(spec, values) -> dict:
    point = {}
    for t in spec.inputs + spec.params:
        if t.name not in values:
            continue
        for sym, v in zip(t.entries, np.asarray(values[t.name]).flat):
            point[sym] = Fraction(float(v))
    return point


def ours(spec, model, values) -> dict[str, np.ndarray]:
    """Every derivation of the model evaluated at the point, as float arrays."""
    derivs = {d.name: d for d in model.derivations}
    flat = {k: [sp.sympify(t) for t in np.array(d.terms, dtype=object).flat]
            for k, d in derivs.items()}
    exprs = [t for ts in flat.values() for t in ts]
    vals, _ = evaluate(model.program, exprs, as_point(spec, values))
    out, k = {}, 0
    for name, ts in flat.items():
        out[name] = np.array([float(v) for v in vals[k:k + len(ts)]]).reshape(derivs[name].shape)
        k += len(ts)
    return out


# ---- torch side -------------------------------------------------------------------------------


def parse_options(text: str) -> dict:
    opts = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, value = (s.strip() for s in part.split("="))
        opts[key] = int(value) if value.isdigit() else value
    return opts


def hand_written(kind: str, opts: dict, p: dict, x):
    """The recurrence written out in torch, for every convention the layer offers."""
    H, T = opts["hidden"], x.shape[0]
    L = opts.get("layers", 1)
    R, S = opts.get("readout_layer", L), opts.get("step", T)
    S = T if S == "last" else S
    ga, a = ACT[opts.get("gate_act", "sigmoid")], ACT[opts.get("act", "tanh")]
    bias, reset = opts.get("bias", "pytorch"), opts.get("reset", "pytorch")
    zero = torch.zeros((4 if kind == "lstm" else 3) * H, dtype=torch.float64)
    seq = [x[t] for t in range(S)]
    for k in range(R):
        Wi, Wh = p[f"weight_ih_l{k}"], p[f"weight_hh_l{k}"]
        bi, bh = {"pytorch": (p.get(f"bias_ih_l{k}"), p.get(f"bias_hh_l{k}")),
                  "single": (p.get(f"bias_l{k}"), zero), "none": (zero, zero)}[bias]
        h = c = torch.zeros(H, dtype=torch.float64)
        outs = []
        for xt in seq:
            gi, gh = Wi @ xt + bi, Wh @ h + bh
            if kind == "lstm":
                i, f, g, o = (gi + gh).chunk(4)
                c = ga(f) * c + ga(i) * a(g)
                h = ga(o) * a(c)
            else:
                (ir, iz, i_n), (hr, hz, h_n) = gi.chunk(3), gh.chunk(3)
                r, z = ga(ir + hr), ga(iz + hz)
                if reset == "pytorch":
                    n = a(i_n + r * h_n)
                else:
                    n = a(i_n + Wh[2 * H:] @ (r * h) + bh[2 * H:])
                h = (1 - z) * n + z * h
            outs.append(h)
        seq = outs
    return readout(opts, p, seq[-1])


def readout(opts: dict, p: dict, h):
    if opts.get("output") == "vector":
        return h
    if "unit" in opts:
        return h[opts["unit"]:opts["unit"] + 1]
    return p["proj_w"] @ h + p["proj_b"]


def pytorch_convention(opts: dict) -> bool:
    return (opts.get("bias", "pytorch") != "single" and opts.get("reset", "pytorch") == "pytorch"
            and opts.get("gate_act", "sigmoid") == "sigmoid" and opts.get("act", "tanh") == "tanh")


def torch_module(kind: str, opts: dict, p: dict, x):
    """The same read-out through torch.nn.LSTM / torch.nn.GRU (functional in the weights)."""
    H, T, n = opts["hidden"], x.shape[0], x.shape[1]
    L = opts.get("layers", 1)
    R, S = opts.get("readout_layer", L), opts.get("step", T)
    S = T if S == "last" else S
    cls = nn.LSTM if kind == "lstm" else nn.GRU
    mod = cls(n, H, num_layers=R, bias=opts.get("bias") != "none", batch_first=True).double()
    names = [name for name, _ in mod.named_parameters()]
    y, _ = torch.func.functional_call(mod, {k: p[k] for k in names}, (x[None, :S],))
    return readout(opts, p, y[0, S - 1])


def oracle(kind: str, opts: dict, values: dict, fn, hessian: bool = False, entry: int = 0):
    p = {k.split(".", 1)[1]: torch.tensor(v, dtype=torch.float64, requires_grad=True)
         for k, v in values.items() if k != "x"}
    x = torch.tensor(values["x"], dtype=torch.float64)
    out = fn(kind, opts, p, x)
    jac = torch.autograd.functional.jacobian(lambda v: fn(kind, opts, p, v), x)
    res = {"out": out.detach().numpy(), "jac": jac.reshape(out.shape[0], -1).numpy(),
           "grad": torch.autograd.grad(out[0], p["weight_ih_l0"])[0].numpy()}
    if hessian:
        hess = torch.autograd.functional.hessian(lambda v: fn(kind, opts, p, v)[entry], x)
        res["hess"] = hess.reshape(x.numel(), x.numel()).numpy()
    return res


def assert_close(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert a.shape == b.shape, (a.shape, b.shape)
    np.testing.assert_allclose(a, b, rtol=0, atol=TOL)


# ---- every option against PyTorch -------------------------------------------------------------

CASES = [
    ("lstm", "hidden=3"),
    ("lstm", "hidden=3, layers=2"),
    ("lstm", "hidden=3, layers=2, readout_layer=1"),
    ("lstm", "hidden=3, layers=2, step=2"),
    ("lstm", "hidden=2, layers=3, readout_layer=2, step=3"),
    ("lstm", "hidden=3, projection=true"),
    ("lstm", "hidden=3, unit=1"),
    ("lstm", "hidden=3, unit=2, projection=false, layers=2"),
    ("lstm", "hidden=3, output=vector, layers=2, step=3"),
    ("lstm", "hidden=3, bias=none"),
    ("lstm", "hidden=3, bias=single, layers=2"),
    ("lstm", "hidden=3, gate_act=tanh, act=sigmoid"),
    ("lstm", "hidden=3, act=softplus, output=vector"),
    ("gru", "hidden=3"),
    ("gru", "hidden=3, layers=2"),
    ("gru", "hidden=3, layers=2, readout_layer=1"),
    ("gru", "hidden=3, layers=2, step=2"),
    ("gru", "hidden=3, unit=0"),
    ("gru", "hidden=3, unit=2, projection=false, layers=2, step=3"),
    ("gru", "hidden=3, output=vector, layers=2"),
    ("gru", "hidden=3, bias=none, layers=2"),
    ("gru", "hidden=3, bias=single"),
    ("gru", "hidden=3, reset=before"),
    ("gru", "hidden=3, reset=before, bias=single, layers=2, step=3"),
    ("gru", "hidden=3, reset=pytorch, bias=pytorch, gate_act=sigmoid, act=tanh, step=last"),
    ("gru", "hidden=3, gate_act=tanh, act=identity, reset=before"),
]


@pytest.mark.parametrize("kind,options", CASES, ids=[f"{k}({o})" for k, o in CASES])
def test_matches_pytorch(kind, options, tmp_path):
    opts = parse_options(options)
    T, n = 4, 2
    spec, model = build(tmp_path, spec_text(kind, options, T, n))
    rng = np.random.default_rng(zlib.crc32(f"{kind}({options})".encode()))
    values = random_point(spec, rng)
    got = ours(spec, model, values)
    fn = torch_module if pytorch_convention(opts) else hand_written
    want = oracle(kind, opts, values, fn)
    for key in ("out", "jac", "grad"):
        assert_close(got[key], want[key])


@pytest.mark.parametrize("kind,options", [c for c in CASES if pytorch_convention(
    parse_options(c[1]))])
def test_hand_written_reference_is_pytorch(kind, options):
    """The oracle for the other conventions agrees with torch.nn where both apply."""
    opts = parse_options(options)
    rng = np.random.default_rng(7)
    H, L, n = opts["hidden"], opts.get("layers", 1), 2
    rows = (4 if kind == "lstm" else 3) * H
    values = {"x": rng.uniform(-1, 1, (4, n)), "f.proj_w": rng.uniform(-1, 1, (1, H)),
              "f.proj_b": rng.uniform(-1, 1, (1,))}
    for k in range(L):
        values[f"f.weight_ih_l{k}"] = rng.uniform(-1, 1, (rows, n if k == 0 else H))
        values[f"f.weight_hh_l{k}"] = rng.uniform(-1, 1, (rows, H))
        values[f"f.bias_ih_l{k}"] = rng.uniform(-1, 1, (rows,))
        values[f"f.bias_hh_l{k}"] = rng.uniform(-1, 1, (rows,))
    a = oracle(kind, opts, values, hand_written)
    b = oracle(kind, opts, values, torch_module)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind,options", [("lstm", "hidden=2, layers=2"),
                                          ("gru", "hidden=2, layers=2, step=2"),
                                          ("gru", "hidden=2, reset=before, unit=1")])
def test_hessian_matches_torch(kind, options, tmp_path):
    """`derive hessian f(x)[0] wrt x` with x a [T, n] sequence: flattened row-major."""
    opts = parse_options(options)
    spec, model = build(tmp_path, spec_text(kind, options, 3, 2, hessian=True))
    values = random_point(spec, np.random.default_rng(3))
    got = ours(spec, model, values)
    fn = torch_module if pytorch_convention(opts) else hand_written
    want = oracle(kind, opts, values, fn, hessian=True)
    assert got["hess"].shape == (6, 6)
    assert_close(got["hess"], want["hess"])
    assert_close(got["hess"], got["hess"].T)


# ---- names, sizes, ranges ---------------------------------------------------------------------


def test_names_follow_pytorch_and_the_readout(tmp_path):
    spec, model = build(tmp_path, spec_text("lstm", "hidden=3, layers=2", 4, 2))
    params = [v.symbol.name for v in model.params]
    assert params[:2] == ["f.weight_ih_l0[0,0]", "f.weight_ih_l0[0,1]"]
    assert "f.weight_ih_l0[11,1]" in params and "f.bias_hh_l1[11]" in params
    assert params[-4:] == ["f.proj_w[0,0]", "f.proj_w[0,1]", "f.proj_w[0,2]", "f.proj_b[0]"]
    assert [t.name for t in spec.params] == [
        "f.weight_ih_l0", "f.weight_hh_l0", "f.bias_ih_l0", "f.bias_hh_l0",
        "f.weight_ih_l1", "f.weight_hh_l1", "f.bias_ih_l1", "f.bias_hh_l1",
        "f.proj_w", "f.proj_b"]
    names = {s.name for s in model.program.order}
    for q in ("pre_i", "i", "f", "g", "o", "c", "act_c", "h"):
        assert f"f.l2.t3.{q}[2]" in names
    spec, model = build(tmp_path, spec_text("gru", "hidden=3, reset=before", 4, 2))
    names = {s.name for s in model.program.order}
    for q in ("pre_r", "r", "z", "rh", "pre_n", "n", "h"):
        assert f"f.l1.t3.{q}[2]" in names


def test_program_grows_linearly_with_the_sequence(tmp_path):
    sizes = []
    for T in (4, 8, 16):
        _, model = build(tmp_path, f"input x : real[{T}, 2]\nnetwork f(in=[{T}, 2]) {{\n"
                         "  lstm(hidden=3, layers=2)\n}\nderive jacobian f(x) wrt x\n")
        sizes.append(len(model.program))
    assert sizes[2] - sizes[1] == 2 * (sizes[1] - sizes[0])


def test_ranged_weights(tmp_path):
    spec, _ = build(tmp_path, "input x : real[3, 2]\nnetwork f(in=[3, 2]) {\n"
                    "  gru(hidden=2, W in [-1, 1/2])\n}\nderive output f(x)\n")
    for t in spec.params:
        assert set(t.lo) == {-1} and set(t.hi) == {sp.Rational(1, 2)}


# ---- weight files -----------------------------------------------------------------------------


class Wrapper(nn.Module):
    def __init__(self, kind: str, n: int, hidden: int, layers: int):
        super().__init__()
        cls = nn.LSTM if kind == "lstm" else nn.GRU
        setattr(self, kind, cls(n, hidden, num_layers=layers, batch_first=True))
        self.kind = kind
        self.proj = nn.Linear(hidden, 1)

    def forward(self, x):
        y, _ = getattr(self, self.kind)(x[None])
        return self.proj(y[0, -1])


def save(state: dict, path: Path) -> None:
    if path.suffix == ".pt":
        torch.save(state, path)
    else:
        np.savez(path, **{k: v.detach().numpy() for k, v in state.items()})


@pytest.mark.parametrize("suffix", [".pt", ".npz"])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_state_dict_of_a_wrapper_module_loads(kind, suffix, tmp_path):
    torch.manual_seed(1)
    module = Wrapper(kind, 2, 3, 2).double()
    save(module.state_dict(), tmp_path / f"w{suffix}")
    spec, model = build(tmp_path, spec_text(kind, "hidden=3, layers=2", 5, 2, f"w{suffix}"))
    assert all(t.concrete for t in spec.params)
    x = np.random.default_rng(5).uniform(-1, 1, (5, 2))
    got = ours(spec, model, {"x": x})
    xt = torch.tensor(x)
    assert_close(got["out"], module(xt).detach().numpy())
    assert_close(got["jac"], torch.autograd.functional.jacobian(module, xt).reshape(1, -1))


@pytest.mark.parametrize("suffix", [".pt", ".npz"])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_state_dict_of_a_bare_module_loads(kind, suffix, tmp_path):
    torch.manual_seed(2)
    module = (nn.LSTM if kind == "lstm" else nn.GRU)(2, 3, num_layers=2,
                                                     batch_first=True).double()
    save(module.state_dict(), tmp_path / f"w{suffix}")
    spec, model = build(tmp_path, spec_text(kind, "hidden=3, layers=2, output=vector, step=3",
                                            4, 2, f"w{suffix}"))
    x = np.random.default_rng(6).uniform(-1, 1, (4, 2))
    got = ours(spec, model, {"x": x})
    y, _ = module(torch.tensor(x)[None])
    assert_close(got["out"], y[0, 2].detach().numpy())


def test_other_attribute_names_load_by_suffix(tmp_path):
    """Keys like `encoder.weight_ih_l0` and `head.weight` are found by their suffix."""
    torch.manual_seed(3)
    module = Wrapper("gru", 2, 3, 1).double()
    renamed = {k.replace("gru.", "encoder.").replace("proj.", "head."): v
               for k, v in module.state_dict().items()}
    save(renamed, tmp_path / "w.npz")
    spec, model = build(tmp_path, spec_text("gru", "hidden=3", 4, 2, "w.npz"))
    x = np.random.default_rng(8).uniform(-1, 1, (4, 2))
    assert_close(ours(spec, model, {"x": x})["out"], module(torch.tensor(x)).detach().numpy())


def test_weight_file_with_a_wrong_shape(tmp_path):
    module = nn.GRU(2, 4, batch_first=True).double()
    save(module.state_dict(), tmp_path / "w.pt")
    with pytest.raises(SpecError, match=r"has shape \[12, 2\], layer 1 needs \[9, 2\]"):
        build(tmp_path, spec_text("gru", "hidden=3, unit=0", 4, 2, "w.pt"))


# ---- the bundled specs ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_bundled_spec_loads_and_exports(name):
    model = load(str(SPECS / f"{name}.snn"))
    shapes = {d.name: d.shape for d in model.derivations}
    if name == "lstm":
        assert shapes == {"output": (1,), "jacobian": (1, 10), "hessian": (10, 10),
                          "dW_ih0": (16, 2), "g_output": (3,), "g_jacobian": (3, 8),
                          "g_hessian": (8, 8)}
    else:
        assert shapes == {"output": (1,), "jacobian": (1, 8), "hessian": (8, 8),
                          "dW_hh1": (9, 3), "g_output": (1,), "g_jacobian": (1, 10),
                          "g_hessian": (10, 10)}
    assert model.params and all(isinstance(v.symbol, sp.Symbol) for v in model.params)
    data = json.loads(run_artifacts(model)[f"{name}.json"])
    assert [len(row) for row in data["jacobian"]] == [10 if name == "lstm" else 8]
    assert data["input_symbols"][:3] == ["x[0,0]", "x[0,1]", "x[1,0]"]


def run_artifacts(model) -> dict[str, str]:
    from verifier.run import artifacts

    return artifacts(model, [], ["json"])


def test_bundled_lstm_spec_matches_pytorch():
    spec = elaborate(str(SPECS / "lstm.snn"))
    model = build_model(spec)
    values = random_point(spec, np.random.default_rng(12))
    got = ours(spec, model, values)
    f_values = {k: v for k, v in values.items() if k.startswith("f.") or k == "x"}
    want = oracle("lstm", {"hidden": 4, "layers": 2}, f_values, torch_module, hessian=True)
    assert_close(got["output"], want["out"])
    assert_close(got["jacobian"], want["jac"])
    assert_close(got["hessian"], want["hess"])  # the full 10 x 10 Hessian of the 2-layer stack
    assert_close(got["dW_ih0"], want["grad"])
    g_values = {k.replace("g.", "f.", 1) if k.startswith("g.") else "x": v
                for k, v in values.items() if k.startswith("g.") or k == "s"}
    want = oracle("lstm", {"hidden": 3, "step": 3, "output": "vector"}, g_values, torch_module,
                  hessian=True, entry=0)
    assert_close(got["g_output"], want["out"])
    assert_close(got["g_jacobian"], want["jac"])
    assert_close(got["g_hessian"], want["hess"])


def test_bundled_gru_spec_matches_pytorch():
    spec = elaborate(str(SPECS / "gru.snn"))
    model = build_model(spec)
    rng = np.random.default_rng(11)
    values = random_point(spec, rng)
    got = ours(spec, model, values)
    f_values = {k: v for k, v in values.items() if k.startswith("f.") or k == "x"}
    want = oracle("gru", {"hidden": 3, "layers": 2, "step": 3}, f_values, torch_module,
                  hessian=True)
    assert_close(got["output"], want["out"])
    assert_close(got["jacobian"], want["jac"])
    assert_close(got["hessian"], want["hess"])


# ---- located errors ---------------------------------------------------------------------------

# (layer, message, the text the caret must point at)
ERRORS = [
    ("lstm(hidden=3, layers=2, readout_layer=3)",
     "readout_layer 3 is out of range: it must be in 1..2", "3)"),
    ("gru(hidden=3, step=6)", "step 6 is out of range: it must be in 1..5", "6"),
    ("lstm(hidden=3, unit=3, projection=false)", "unit 3 is out of range: it must be in 0..2",
     "3, p"),
    ("gru(hidden=3, unit=-1)", "unit -1 is out of range", "-1"),
    ("lstm(hidden=3, unit=1, projection=true)",
     "unit reads the hidden state directly, but projection=true", "projection"),
    ("gru(hidden=3, output=vector, projection=true)",
     "output=vector reads the hidden state directly, but projection=true", "projection"),
    ("lstm(hidden=3, act=foo)", "unknown activation `foo`", "foo"),
    ("lstm(hidden=3, gate_act=swish(2))", "unknown activation `swish`", "swish"),
    ("lstm(hidden=3, reset=before)", "lstm has no option `reset`", "reset"),
    ("gru(hidden=3, reset=after)", "reset must be one of: pytorch, before", "after"),
    ("gru(hidden=3, bias=two)", "bias must be one of: pytorch, single, none", "two"),
    ("gru(hidden=3, output=matrix)", "output must be one of: scalar, vector", "matrix"),
    ("lstm(hidden=3, step=first)", "step must be a 1-based time step or `last`", "first"),
    ("lstm(layers=2)", "lstm layer needs its hidden size", "lstm"),
    ("lstm(hidden=0)", "hidden size must be a positive integer, got 0", "0"),
    ("gru(hidden=3, projection=false)", "without projection, say what is read out", "projection"),
    ("gru(hidden=3, unit=1, output=vector)", "unit selects one hidden unit", "unit"),
    ("lstm(hidden=3, W=[1])", "lstm takes a range for all its weights", "W"),
]


@pytest.mark.parametrize("layer,message,marker", ERRORS, ids=[e[1][:40] for e in ERRORS])
def test_located_errors(layer, message, marker, tmp_path):
    path = tmp_path / "bad.snn"
    path.write_text(f"input x : real[5, 2]\n\nnetwork f(in=[5, 2]) {{\n  {layer}\n}}\n"
                    "derive output f(x)\n")
    with pytest.raises(SpecError) as info:
        load(str(path))
    err = info.value
    assert message in err.message
    column = 3 + layer.index(marker)
    assert err.span is not None and (err.span.line, err.span.column) == (4, column), \
        err.render()


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_input_must_be_a_sequence(kind, tmp_path):
    path = tmp_path / "bad.snn"
    path.write_text(f"input x : real[4]\nnetwork f(in=4) {{\n  {kind}(hidden=2)\n}}\n")
    with pytest.raises(SpecError) as info:
        load(str(path))
    err = info.value
    assert err.message == f"{kind} layer expects a sequence input [T, n], got shape [4]"
    assert (err.span.line, err.span.column) == (3, 3)
    assert "in=[T, n]" in err.fix
    assert re.search(r"bad\.snn:3:3: error: ", err.render())
