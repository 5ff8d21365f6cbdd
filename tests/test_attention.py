"""`transformer` and `layernorm` against PyTorch in float64.

Every term is evaluated with `verifier.engines.replay.evaluate` (exact rationals, or mpmath at
60 digits) at a random rational point; PyTorch's `TransformerEncoderLayer` / `TransformerEncoder`
/ `LayerNorm` with the same values give the oracle: forward value, input Jacobian, every
parameter gradient and, for small cases, the input Hessian (`torch.autograd.functional`).
"""

from __future__ import annotations

import re
from fractions import Fraction

import numpy as np
import pytest
import sympy as sp
from spec_oracle import derivation, random_point, values, with_gradients, write

from verifier.diagnostics import SpecError
from verifier.elaborate import elaborate
from verifier.engines.replay import evaluate
from verifier.obligations import build_model

torch = pytest.importorskip("torch")
from torch import nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

TOL = 1e-9


# ---- helpers -----------------------------------------------------------------------------------













def close(ours, theirs) -> None:
    np.testing.assert_allclose(ours, np.asarray(theirs, dtype=np.float64), rtol=TOL, atol=TOL)


def tensor(a, grad: bool = False):
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


# ---- transformer -------------------------------------------------------------------------------

ACTS = {"relu": "relu", "tanh": torch.tanh, "sigmoid": torch.sigmoid,
        "leaky_relu(1/10)": lambda x: torch.nn.functional.leaky_relu(x, 0.1)}


def torch_name(ours: str, net: str) -> str:
    """`t.layers1.linear1.weight` → `layers.1.linear1.weight` (PyTorch's state_dict key)."""
    return re.sub(r"^layers(\d+)\.", r"layers.\1.", ours[len(net) + 1:])


class TorchTransformer:
    """The PyTorch module for a config, as a function of X and named parameter tensors."""

    def __init__(self, cfg: dict, arrays: dict, net: str = "t"):
        self.cfg, self.net = cfg, net
        d, heads = cfg["d"], cfg.get("heads", 1)
        layer = nn.TransformerEncoderLayer(
            d, heads, cfg.get("ff", 4 * d), dropout=0.0, batch_first=True, norm_first=False,
            activation=ACTS[cfg.get("ff_act", "relu")], dtype=torch.float64,
            layer_norm_eps=float(cfg.get("eps", Fraction(1, 100000))))
        n_layers = cfg.get("layers", 1)
        self.module = layer if n_layers == 1 else nn.TransformerEncoder(
            layer, n_layers, enable_nested_tensor=False)
        self.leaves = {}  # our tensor name → torch leaf
        self.params = {}
        for key, p in self.module.named_parameters():
            ours = f"{net}." + re.sub(r"^layers\.(\d+)\.", r"layers\1.", key)
            if ours in arrays:
                self.params[key] = self.leaves[ours] = tensor(arrays[ours], grad=True)
            else:  # a bias switched off: zero, as no bias
                assert key.endswith("bias"), key
                self.params[key] = torch.zeros_like(p, dtype=torch.float64)
        for extra in ("pos", "proj_w", "proj_b"):
            if f"{net}.{extra}" in arrays:
                self.leaves[f"{net}.{extra}"] = tensor(arrays[f"{net}.{extra}"], grad=True)

    def __call__(self, X):
        if self.cfg.get("positional"):
            X = X + self.leaves[f"{self.net}.pos"]
        y = functional_call(self.module, self.params, (X.unsqueeze(0),))[0]
        h = y[self.cfg.get("position", 0)]
        if self.cfg.get("output") == "vector":
            return h
        if "unit" in self.cfg:
            return h[self.cfg["unit"]:self.cfg["unit"] + 1]
        return self.leaves[f"{self.net}.proj_w"] @ h + self.leaves[f"{self.net}.proj_b"]


def transformer_spec(cfg: dict) -> str:
    T, d = cfg["T"], cfg["d"]
    opts = [f"{k}={v}" for k, v in cfg.items() if k not in ("T", "d", "hessian")]
    return (f"input X : real[{T}, {d}]\n"
            f"network t(in=[{T}, {d}]) {{\n  transformer({', '.join(opts)})\n}}\n"
            "derive output t(X)\nderive jacobian t(X) wrt X\n"
            + ("derive hessian t(X)[0] wrt X\n" if cfg.get("hessian") else ""))


TRANSFORMER_CASES = {
    # Attention Is All You Need defaults: ff = 4 d, relu, both biases, projection
    "base": {"T": 3, "d": 4, "heads": 2, "hessian": True},
    "one_head_tanh_vector": {"T": 3, "d": 4, "heads": 1, "ff": 3, "ff_act": "tanh",
                             "position": 2, "output": "vector", "eps": Fraction(1, 1000)},
    "stack_positional_unit": {"T": 2, "d": 4, "heads": 4, "ff": 5, "layers": 2,
                              "positional": "true", "position": 1, "unit": 3,
                              "ff_act": "sigmoid"},
    "no_biases_leaky": {"T": 3, "d": 2, "heads": 2, "ff": 2, "qkv_bias": "false",
                        "out_bias": "false", "ff_act": "leaky_relu(1/10)", "projection": "true",
                        "eps": Fraction(1, 10)},
    "small_hessian": {"T": 2, "d": 2, "heads": 1, "ff": 3, "ff_act": "tanh",
                      "positional": "true", "hessian": True},
}


def _spec_value(v):
    return f"{v.numerator}/{v.denominator}" if isinstance(v, Fraction) else v


@pytest.mark.parametrize("case", sorted(TRANSFORMER_CASES))
def test_transformer_matches_pytorch(tmp_path, case):
    cfg = TRANSFORMER_CASES[case]
    text = transformer_spec({k: _spec_value(v) for k, v in cfg.items()})
    spec, model, names = with_gradients(tmp_path, text, "t", "t(X)[0]")
    point, arrays = random_point(spec, seed=len(case))
    ref = TorchTransformer(cfg, arrays)
    X = tensor(arrays["X"], grad=True)
    T, d = cfg["T"], cfg["d"]
    with sdpa_kernel(SDPBackend.MATH):
        out = ref(X)
        close(values(model, derivation(model, "output").terms, point), out.detach().numpy())
        jac = torch.autograd.functional.jacobian(ref, X).reshape(len(out), T * d)
        close(values(model, derivation(model, "jacobian").terms, point), jac.numpy())
        grads = torch.autograd.grad(out[0], [ref.leaves[n] for n in names])
        for k, (name, g) in enumerate(zip(names, grads)):
            ours = values(model, derivation(model, f"grad_{k}").terms, point)
            assert ours.shape == tuple(g.shape), name
            close(ours, g.numpy())
        if cfg.get("hessian"):
            hess = torch.autograd.functional.hessian(lambda x: ref(x)[0], X)
            close(values(model, derivation(model, "hessian").terms, point),
                  hess.reshape(T * d, T * d).numpy())


def test_bundled_transformer_spec_matches_pytorch():
    """specs/transformer.snn at its own sizes: the 2-layer encoder's output, Jacobian and full
    32 x 32 input Hessian with symbolic weights, against torch.autograd."""
    from pathlib import Path

    spec = elaborate(str(Path(__file__).resolve().parents[1] / "specs" / "transformer.snn"))
    model = build_model(spec)
    point, arrays = random_point(spec, seed=23)
    cfg = {"T": 4, "d": 8, "heads": 4, "ff": 16, "layers": 2}
    ref = TorchTransformer(cfg, arrays, net="t2")
    Z = tensor(arrays["Z"], grad=True)
    with sdpa_kernel(SDPBackend.MATH):
        out = ref(Z)
        close(values(model, derivation(model, "output_2").terms, point), out.detach().numpy())
        jac = torch.autograd.functional.jacobian(ref, Z).reshape(1, 32)
        close(values(model, derivation(model, "jacobian_2").terms, point), jac.numpy())
        hess = torch.autograd.functional.hessian(lambda z: ref(z)[0], Z).reshape(32, 32)
    ours = values(model, derivation(model, "hessian_2").terms, point)
    assert ours.shape == (32, 32)
    close(ours, hess.numpy())


def test_transformer_parameter_names_follow_pytorch(tmp_path):
    spec = elaborate(write(tmp_path, transformer_spec({"T": 3, "d": 4, "heads": 2, "layers": 2})))
    layer = nn.TransformerEncoder(nn.TransformerEncoderLayer(4, 2, 16, batch_first=True), 2,
                                  enable_nested_tensor=False)
    ours = {torch_name(t.name, "t"): t.shape for t in spec.params}
    theirs = {k: tuple(v.shape) for k, v in layer.state_dict().items()}
    assert ours == {**theirs, "proj_w": (1, 4), "proj_b": (1,)}


@pytest.mark.parametrize("n_layers", [1, 2])
def test_transformer_loads_a_state_dict(tmp_path, n_layers):
    torch.manual_seed(n_layers)
    layer = nn.TransformerEncoderLayer(4, 2, 6, dropout=0.0, batch_first=True,
                                       dtype=torch.float64)
    module = layer if n_layers == 1 else nn.TransformerEncoder(layer, n_layers,
                                                               enable_nested_tensor=False)
    head = nn.Linear(4, 1, dtype=torch.float64)
    state = {**module.state_dict(), "proj.weight": head.weight.detach(),
             "proj.bias": head.bias.detach()}
    torch.save(state, tmp_path / "enc.pt")
    text = ("input X : real[3, 4]\n"
            f"network t(in=[3, 4]) load \"enc.pt\" {{ transformer(heads=2, ff=6, "
            f"layers={n_layers}, position=2) }}\n"
            "derive output t(X)\n")
    spec = elaborate(write(tmp_path, text))
    model = build_model(spec)
    point, arrays = random_point(spec, seed=3)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        y = module(tensor(arrays["X"]).unsqueeze(0))[0, 2]
        expected = head(y).numpy()
    close(values(model, derivation(model, "output").terms, point), expected)


def test_transformer_after_another_layer_is_prefixed(tmp_path):
    """As the network's 2nd layer its parameters are `t.layer2.<key>`; ranges reach them all."""
    text = ("input X : real[2, 4]\n"
            "network t(in=[2, 4]) { layernorm(affine=false) "
            "transformer(heads=2, ff=3, position=1, W in [-1, 1]) }\n"
            "derive output t(X)\n")
    spec = elaborate(write(tmp_path, text))
    names = [t.name for t in spec.params]
    assert names[0] == "t.layer2.self_attn.in_proj_weight" and "t.layer2.proj_w" in names
    assert all(t.lo is not None for t in spec.params)
    model = build_model(spec)
    point, arrays = random_point(spec, seed=2)
    ref = TorchTransformer({"d": 4, "heads": 2, "ff": 3, "position": 1},
                           {k.replace("t.layer2.", "t."): v for k, v in arrays.items()})
    X = tensor(arrays["X"])
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        expected = ref(nn.functional.layer_norm(X, (4,), eps=1e-5)).numpy()
    close(values(model, derivation(model, "output").terms, point), expected)


def test_softmax_is_one_symbol_per_quantity():
    from verifier.layers.attention import softmax
    from verifier.symbolic.program import Program

    prog = Program()
    s = sp.symbols("s0:3", real=True)
    a = softmax(prog, [2 * x for x in s], "sm")
    point = {x: Fraction(k, 3) for k, x in enumerate(s)}
    got = [float(v) for v in evaluate(prog, a, point)[0]]
    close(got, torch.softmax(torch.tensor([0.0, 2 / 3, 4 / 3], dtype=torch.float64), 0))
    # 3 scores, 3 exps, the sum, its reciprocal, 3 quotients
    assert len(prog) == 11


# ---- layernorm ---------------------------------------------------------------------------------

def test_layernorm_vector_matches_pytorch(tmp_path):
    text = ("input x : real[5]\nnetwork f(in=5) { layernorm() }\n"
            "derive output f(x)\nderive jacobian f(x) wrt x\nderive hessian f(x)[1] wrt x\n")
    spec, model, names = with_gradients(tmp_path, text, "f", "f(x)[1]")
    assert names == ["f.ln1.weight", "f.ln1.bias"]
    point, arrays = random_point(spec, seed=5)
    ln = nn.LayerNorm(5, dtype=torch.float64)
    params = {"weight": tensor(arrays["f.ln1.weight"], True),
              "bias": tensor(arrays["f.ln1.bias"], True)}
    x = tensor(arrays["x"], True)

    def ref(v):
        return functional_call(ln, params, (v,))

    out = ref(x)
    close(values(model, derivation(model, "output").terms, point), out.detach().numpy())
    close(values(model, derivation(model, "jacobian").terms, point),
          torch.autograd.functional.jacobian(ref, x).numpy())
    close(values(model, derivation(model, "hessian").terms, point),
          torch.autograd.functional.hessian(lambda v: ref(v)[1], x).numpy())
    grads = torch.autograd.grad(out[1], [params["weight"], params["bias"]])
    for k, g in enumerate(grads):
        close(values(model, derivation(model, f"grad_{k}").terms, point), g.numpy())


@pytest.mark.parametrize("options, affine, bias", [
    ("eps=1e-3", True, True), ("bias=false", True, False), ("affine=false", False, False)])
def test_layernorm_rows_and_options(tmp_path, options, affine, bias):
    text = (f"input X : real[3, 4]\nnetwork f(in=[3, 4]) {{ layernorm({options}) }}\n"
            "derive output f(X)\n")
    out_entry = "f(X)[1, 2]"
    spec, model, _names = with_gradients(tmp_path, text + f"derive gradient {out_entry} wrt X "
                                        "as gX\n", "f", out_entry)
    point, arrays = random_point(spec, seed=7)
    eps = 1e-3 if "eps" in options else 1e-5
    ln = nn.LayerNorm(4, eps=eps, elementwise_affine=affine, bias=bias, dtype=torch.float64)
    params = {}
    if affine:
        params["weight"] = tensor(arrays["f.ln1.weight"], True)
    if bias:
        params["bias"] = tensor(arrays["f.ln1.bias"], True)
    X = tensor(arrays["X"], True)
    out = functional_call(ln, params, (X,))
    close(values(model, derivation(model, "output").terms, point), out.detach().numpy())
    leaves = [X] + [params[k] for k in ("weight", "bias") if k in params]
    grads = torch.autograd.grad(out[1, 2], leaves)
    close(values(model, derivation(model, "gX").terms, point), grads[0].numpy())
    for k, g in enumerate(grads[1:]):
        close(values(model, derivation(model, f"grad_{k}").terms, point), g.numpy())


def test_layernorm_between_dense_layers_loads_a_sequential(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 1)).double()
    with torch.no_grad():
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(-1, 1)
    torch.save(net.state_dict(), tmp_path / "mlp.pt")
    text = ("input x : real[3]\n"
            "network f(in=3) load \"mlp.pt\" { dense(4) layernorm() dense(1) }\n"
            "derive output f(x)\nderive jacobian f(x) wrt x\n")
    spec = elaborate(write(tmp_path, text))
    model = build_model(spec)
    point, arrays = random_point(spec, seed=11)
    x = tensor(arrays["x"], True)
    close(values(model, derivation(model, "output").terms, point), net(x).detach().numpy())
    close(values(model, derivation(model, "jacobian").terms, point),
          torch.autograd.functional.jacobian(net, x).numpy())


def test_layernorm_inline_values(tmp_path):
    text = ("input x : real[3]\nnetwork f(in=3) { layernorm(gamma=[1, 2, 3], beta=[0, 0, 1]) }\n"
            "derive output f(x)\n")
    spec = elaborate(write(tmp_path, text))
    model = build_model(spec)
    point = {e: Fraction(v) for e, v in zip(spec.inputs[0].entries, (1, 2, 4))}
    ln = nn.LayerNorm(3, dtype=torch.float64)
    with torch.no_grad():
        ln.weight.copy_(torch.tensor([1.0, 2.0, 3.0]))
        ln.bias.copy_(torch.tensor([0.0, 0.0, 1.0]))
        expected = ln(torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)).numpy()
    close(values(model, derivation(model, "output").terms, point), expected)


# ---- located errors ----------------------------------------------------------------------------

ERROR_CASES = {  # spec text, line and the text the error points at, message
    "heads_do_not_divide": (
        "network t(in=[3, 4]) {\n  transformer(heads=3)\n}\n",
        2, "3)", "3 heads do not divide the model width 4"),
    "position_out_of_range": (
        "network t(in=[3, 4]) {\n  transformer(heads=2, position=3)\n}\n",
        2, "3)", "position 3 is out of range: it must be in 0..2"),
    "unknown_ff_activation": (
        "network t(in=[3, 4]) {\n  transformer(ff_act=swish)\n}\n",
        2, "swish", "unknown activation `swish`"),
    "vector_input": (
        "network t(in=4) {\n  transformer()\n}\n",
        2, "transformer", "transformer expects a sequence [T, d], got shape [4]"),
    "unit_out_of_range": (
        "network t(in=[3, 4]) {\n  transformer(unit=4)\n}\n",
        2, "4)", "unit 4 is out of range: it must be in 0..3"),
    "projection_with_unit": (
        "network t(in=[3, 4]) {\n  transformer(unit=1, projection=true)\n}\n",
        2, "projection", "unit reads the hidden vector directly, but projection=true"),
    "eps_not_positive": (
        "network f(in=4) {\n  layernorm(eps=0)\n}\n",
        2, "0)", "eps must be positive, got 0"),
    "layernorm_gamma_without_affine": (
        "network f(in=4) {\n  layernorm(affine=false, gamma=[1, 1, 1, 1])\n}\n",
        2, "gamma", "`gamma` given, but the layer has no gamma"),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_located_errors(tmp_path, case):
    text, line, marker, message = ERROR_CASES[case]
    column = text.splitlines()[line - 1].index(marker) + 1
    with pytest.raises(SpecError) as info:
        elaborate(write(tmp_path, text, case))
    err = info.value
    assert err.message == message
    assert (err.span.line, err.span.column) == (line, column)
    assert err.render().startswith(f"{tmp_path / case}.snn:{line}:{column}: error: {message}")
