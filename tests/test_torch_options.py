"""PyTorch options of the layer families against PyTorch itself, in float64.

Transformer: `norm_first` (pre-LN), `ff_act=gelu` / `gelu_tanh`, `bias=false`, the final norm
of `nn.TransformerEncoder`, attention masks (`src_mask`, `src_key_padding_mask`). Recurrent:
`bidirectional`, LSTM `proj_size`, nonzero initial states. GCN: a torch_geometric `GCNConv`
state_dict and an `edge_index` graph, against GCNConv's message-passing formula written out in
torch (self-loops added where missing, in-degrees at the target, scatter-add of messages).

Every case compares our terms (evaluated exactly / at 60 digits at a random rational point)
with the torch module's output and `torch.autograd` input Jacobian; the transformer cases also
every parameter gradient.
"""

from __future__ import annotations

import itertools
import re
from fractions import Fraction

import numpy as np
import pytest
from spec_oracle import derivation, random_point, values, with_gradients, write

from verifier.diagnostics import SpecError
from verifier.elaborate import elaborate
from verifier.obligations import build_model

torch = pytest.importorskip("torch")
from torch import nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

TOL = 1e-9


def close(ours, theirs) -> None:
    np.testing.assert_allclose(ours, np.asarray(theirs, dtype=np.float64), rtol=TOL, atol=TOL)


def tensor(a, grad: bool = False):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


def spec_value(v) -> str:
    if isinstance(v, Fraction):
        return f"{v.numerator}/{v.denominator}"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, list):
        return "[" + ", ".join(spec_value(x) for x in v) + "]"
    return str(v)


# ---- transformer -------------------------------------------------------------------------------

FF_ACTS = {"relu": "relu", "gelu": "gelu",
           "gelu_tanh": lambda x: nn.functional.gelu(x, approximate="tanh")}


class TorchEncoder:
    """nn.TransformerEncoderLayer / nn.TransformerEncoder for a config, functional in X and the
    parameters (named as ours), with the config's masks."""

    def __init__(self, cfg: dict, arrays: dict, net: str = "t"):
        d, heads, n_layers = cfg["d"], cfg.get("heads", 1), cfg.get("layers", 1)
        eps = float(cfg.get("eps", Fraction(1, 100000)))
        bias = cfg.get("bias", True)
        layer = nn.TransformerEncoderLayer(
            d, heads, cfg.get("ff", 4 * d), dropout=0.0, batch_first=True,
            norm_first=cfg.get("norm_first", False), bias=bias,
            activation=FF_ACTS[cfg.get("ff_act", "relu")], layer_norm_eps=eps,
            dtype=torch.float64)
        final = cfg.get("final_norm", False)
        self.wrapped = n_layers > 1 or final
        self.module = nn.TransformerEncoder(
            layer, n_layers, enable_nested_tensor=False,
            norm=nn.LayerNorm(d, eps=eps, bias=bias, dtype=torch.float64) if final else None,
        ) if self.wrapped else layer
        self.cfg, self.net = cfg, net
        self.leaves, self.params = {}, {}
        for key, _ in self.module.named_parameters():
            ours = self.ours(key)
            self.params[key] = self.leaves[ours] = tensor(arrays[ours], grad=True)
        for extra in ("proj_w", "proj_b"):
            if f"{net}.{extra}" in arrays:
                self.leaves[f"{net}.{extra}"] = tensor(arrays[f"{net}.{extra}"], grad=True)
        T = cfg["T"]
        self.mask = self.padding = None
        if cfg.get("mask") == "causal":
            self.mask = nn.Transformer.generate_square_subsequent_mask(T, dtype=torch.float64)
        elif "mask" in cfg:
            self.mask = torch.tensor(cfg["mask"], dtype=torch.bool)
        if "additive_mask" in cfg:
            self.mask = tensor([[float(v) for v in row] for row in cfg["additive_mask"]])
        if "key_padding_mask" in cfg:
            pad = torch.tensor([cfg["key_padding_mask"]], dtype=torch.bool)
            # one mask type, as PyTorch asks: a float padding mask next to a float src_mask
            self.padding = pad if self.mask is None or self.mask.dtype == torch.bool else \
                torch.zeros(pad.shape, dtype=torch.float64).masked_fill(pad, float("-inf"))

    def ours(self, key: str) -> str:
        if not self.wrapped or self.cfg.get("layers", 1) > 1 or key.startswith("norm."):
            return f"{self.net}." + re.sub(r"^layers\.(\d+)\.", r"layers\1.", key)
        return f"{self.net}." + key.removeprefix("layers.0.")  # one layer plus a final norm

    def __call__(self, X):
        y = functional_call(self.module, self.params, (X.unsqueeze(0), self.mask, self.padding))
        h = y[0, self.cfg.get("position", 0)]
        if self.cfg.get("output") == "vector":
            return h
        return self.leaves[f"{self.net}.proj_w"] @ h + self.leaves[f"{self.net}.proj_b"]


def encoder_spec(cfg: dict) -> str:
    T, d = cfg["T"], cfg["d"]
    opts = [f"{k}={spec_value(v)}" for k, v in cfg.items() if k not in ("T", "d")]
    return (f"input X : real[{T}, {d}]\n"
            f"network t(in=[{T}, {d}]) {{\n  transformer({', '.join(opts)})\n}}\n"
            "derive output t(X)\nderive jacobian t(X) wrt X\n")


ENCODER_CASES = {
    "pre_ln": {"T": 3, "d": 4, "heads": 2, "ff": 5, "norm_first": True},
    "pre_ln_stack_gelu_final_norm": {"T": 2, "d": 4, "heads": 2, "ff": 3, "layers": 2,
                                     "norm_first": True, "ff_act": "gelu", "final_norm": True,
                                     "position": 1},
    "post_ln_gelu_tanh_no_bias": {"T": 3, "d": 2, "heads": 1, "ff": 3, "ff_act": "gelu_tanh",
                                  "bias": False, "output": "vector", "eps": Fraction(1, 100)},
    "pre_ln_no_bias_final_norm": {"T": 3, "d": 4, "heads": 4, "ff": 2, "norm_first": True,
                                  "bias": False, "final_norm": True, "position": 2},
    "post_ln_final_norm_gelu": {"T": 2, "d": 2, "heads": 2, "ff": 4, "final_norm": True,
                                "ff_act": "gelu"},
    "causal_and_padding": {"T": 3, "d": 4, "heads": 2, "ff": 3, "mask": "causal",
                           "key_padding_mask": [0, 1, 0], "position": 2},
    "bool_mask_pre_ln": {"T": 3, "d": 2, "heads": 1, "ff": 2, "norm_first": True,
                         "mask": [[0, 1, 1], [0, 0, 1], [1, 0, 0]], "position": 2},
    "additive_mask_stack": {"T": 3, "d": 2, "heads": 2, "ff": 2, "layers": 2,
                            "additive_mask": [[0, Fraction(-1, 2), 1], [Fraction(3, 4), 0, -2],
                                              [1, 1, 0]],
                            "key_padding_mask": [0, 0, 1], "position": 1},
}


@pytest.mark.parametrize("case", sorted(ENCODER_CASES))
def test_encoder_options_match_pytorch(tmp_path, case):
    cfg = ENCODER_CASES[case]
    spec, model, names = with_gradients(tmp_path, encoder_spec(cfg), "t", "t(X)[0]")
    point, arrays = random_point(spec, seed=len(case))
    ref = TorchEncoder(cfg, arrays)
    X = tensor(arrays["X"], grad=True)
    with sdpa_kernel(SDPBackend.MATH):
        out = ref(X)
        close(values(model, derivation(model, "output").terms, point), out.detach().numpy())
        jac = torch.autograd.functional.jacobian(ref, X).reshape(len(out), -1)
        close(values(model, derivation(model, "jacobian").terms, point), jac.numpy())
        grads = torch.autograd.grad(out[0], [ref.leaves[n] for n in names])
    for k, (name, g) in enumerate(zip(names, grads)):
        close(values(model, derivation(model, f"grad_{k}").terms, point), g.numpy())


def _encoder_state(norm_first: bool, final: bool = False, bias: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    layer = nn.TransformerEncoderLayer(4, 2, 6, dropout=0.0, batch_first=True,
                                       norm_first=norm_first, bias=bias, dtype=torch.float64)
    module = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False,
                                   norm=nn.LayerNorm(4, dtype=torch.float64) if final else None)
    with torch.no_grad():  # LayerNorm's default gamma = 1, beta = 0 would hide mistakes
        for name, p in module.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5) if name.endswith("weight") else p.uniform_(-0.5, 0.5)
    head = nn.Linear(4, 1, dtype=torch.float64)
    state = {**module.state_dict(), "proj.weight": head.weight.detach(),
             "proj.bias": head.bias.detach()}
    return module, head, state


def _loaded_output(tmp_path, state, options: str, name: str):
    torch.save(state, tmp_path / f"{name}.pt")
    text = (f"input X : real[3, 4]\nnetwork t(in=[3, 4]) load \"{name}.pt\" {{ "
            f"transformer(heads=2, ff=6, layers=2{', ' + options if options else ''}) }}\n"
            "derive output t(X)\n")
    spec = elaborate(write(tmp_path, text, name))
    model = build_model(spec)
    point, arrays = random_point(spec, seed=5)
    return values(model, derivation(model, "output").terms, point)[0], arrays["X"]


@pytest.mark.parametrize("norm_first", [False, True])
def test_state_dicts_of_both_orders_load_with_the_matching_option(tmp_path, norm_first):
    """A pre-LN and a post-LN model have the same state_dict names and shapes: the spec says
    which one it is, and each order matches its torch module. Read in the other order the
    output differs, which is why `norm_first` must be stated."""
    module, head, state = _encoder_state(norm_first, final=True, seed=int(norm_first))
    opts = "final_norm=true, position=1"
    ours, X = _loaded_output(tmp_path, state, f"norm_first={str(norm_first).lower()}, {opts}",
                             "right")
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        want = head(module(tensor(X).unsqueeze(0))[0, 1]).item()
    assert abs(ours - want) < TOL
    other, _ = _loaded_output(tmp_path, state,
                              f"norm_first={str(not norm_first).lower()}, {opts}", "wrong")
    assert abs(other - want) > 1e-3


@pytest.mark.parametrize("state_opts, spec_opts, message", [
    ({"final": True}, "", "has arrays no layer uses: norm.bias, norm.weight"),
    ({"bias": False}, "", "has no array for layers0.self_attn.in_proj_bias"),
    ({}, "bias=false", "has arrays no layer uses: layers.0.linear1.bias"),
])
def test_a_state_dict_with_other_options_is_an_error(tmp_path, state_opts, spec_opts, message):
    _, _, state = _encoder_state(False, **state_opts)
    with pytest.raises(SpecError) as info:
        _loaded_output(tmp_path, state, spec_opts, "mismatch")
    assert message in info.value.message


def test_masks_from_the_weight_file(tmp_path):
    """`mask=file` reads a bool `src_mask`, `additive_mask=file` a float one with -inf, and
    `key_padding_mask=file` `src_key_padding_mask`, as PyTorch applies them."""
    module, head, state = _encoder_state(True, seed=3)
    causal = nn.Transformer.generate_square_subsequent_mask(3, dtype=torch.float64)
    pad = torch.tensor([False, True, False])
    for option, mask in (("mask", causal == float("-inf")), ("additive_mask", causal)):
        text = {**state, "src_mask": mask, "src_key_padding_mask": pad}
        ours, X = _loaded_output(tmp_path, text, f"norm_first=true, {option}=file, "
                                 "key_padding_mask=file, position=2", option)
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
            y = module(tensor(X).unsqueeze(0), mask,
                       pad[None] if mask.dtype == torch.bool else
                       torch.zeros((1, 3), dtype=torch.float64).masked_fill(pad, float("-inf")))
            want = head(y[0, 2]).item()
        assert abs(ours - want) < TOL, option


MASK_ERRORS = {
    "mask=[[0, 1], [2, 0]]": "mask is boolean (1 where attention is blocked), got 2",
    "key_padding_mask=[1, 1]": "the mask blocks every key for query position 0",
    "mask=[[0, 1, 0]]": "mask has shape [1, 3], the sequence needs [2, 2]",
    "mask=file": "mask=file, but the network loads no weight file",
    "mask=causal, additive_mask=[[0, 0], [0, 0]]": "mask and additive_mask both given",
    "bias=false, qkv_bias=true": "bias=false removes every bias, but qkv_bias=true",
}


@pytest.mark.parametrize("options", sorted(MASK_ERRORS))
def test_located_option_errors(tmp_path, options):
    text = f"network t(in=[2, 2]) {{\n  transformer({options})\n}}\n"
    with pytest.raises(SpecError) as info:
        elaborate(write(tmp_path, text))
    assert info.value.message == MASK_ERRORS[options]
    assert info.value.span.line == 2


def test_a_boolean_mask_is_not_read_as_an_additive_one(tmp_path):
    _, _, state = _encoder_state(False)
    state["src_mask"] = torch.tensor([[False, True, True], [False, False, True],
                                      [False, False, False]])
    with pytest.raises(SpecError) as info:
        _loaded_output(tmp_path, state, "additive_mask=file", "boolmask")
    assert info.value.message == "array `src_mask` in boolmask.pt is boolean, not an additive mask"


# ---- recurrent ---------------------------------------------------------------------------------


def recurrent_spec(kind: str, T: int, n: int, options: str) -> str:
    return (f"input x : real[{T}, {n}]\nnetwork f(in=[{T}, {n}]) {{\n  {kind}({options})\n}}\n"
            "derive output f(x)\nderive jacobian f(x) wrt x\n")


def torch_recurrent(kind: str, opts: dict, p: dict, x):
    """torch.nn.LSTM / GRU (unbatched input, h_0 / c_0 rows for the layers read), then the
    read-out of output[step - 1]."""
    H, L = opts["hidden"], opts.get("layers", 1)
    R, S = opts.get("readout_layer", L), opts.get("step", x.shape[0])
    D = 2 if opts.get("bidirectional") else 1
    P = opts.get("proj_size", 0)
    extra = {"proj_size": P} if kind == "lstm" else {}
    mod = (nn.LSTM if kind == "lstm" else nn.GRU)(
        x.shape[1], H, num_layers=R, bidirectional=D == 2, batch_first=True,
        dtype=torch.float64, **extra)
    params = {name: p[name] for name, _ in mod.named_parameters()}
    zeros = torch.zeros
    h0 = p["h0"][:R * D] if "h0" in p else zeros(R * D, P or H, dtype=torch.float64)
    c0 = p["c0"][:R * D] if "c0" in p else zeros(R * D, H, dtype=torch.float64)
    y, _ = functional_call(mod, params, (x, (h0, c0) if kind == "lstm" else h0))
    h = y[S - 1]
    if opts.get("output") == "vector":
        return h
    if "unit" in opts:
        return h[opts["unit"]:opts["unit"] + 1]
    return p["proj_w"] @ h + p["proj_b"]


RECURRENT_CASES = [  # kind, T, n, options (spec text), the same as torch options
    ("lstm", 4, 2, "hidden=2, layers=2, bidirectional=true",
     {"hidden": 2, "layers": 2, "bidirectional": True}),
    ("gru", 3, 2, "hidden=3, bidirectional=true, step=2, output=vector",
     {"hidden": 3, "bidirectional": True, "step": 2, "output": "vector"}),
    ("lstm", 3, 3, "hidden=3, proj_size=2, layers=2, unit=1",
     {"hidden": 3, "proj_size": 2, "layers": 2, "unit": 1}),
    ("lstm", 3, 2, ("hidden=2, proj_size=1, bidirectional=true, h0=symbolic, c0=symbolic, "
                    "output=vector"), {"hidden": 2, "proj_size": 1, "bidirectional": True, "output": "vector"}),
    ("gru", 3, 2, "hidden=2, layers=2, h0=[[1/2, -1], [1/4, 3/4]]", {"hidden": 2, "layers": 2}),
    ("lstm", 4, 1, "hidden=2, layers=2, readout_layer=1, step=3, h0 in [-1, 1], c0=symbolic",
     {"hidden": 2, "layers": 2, "readout_layer": 1, "step": 3}),
    ("gru", 4, 2, "hidden=2, layers=2, bidirectional=true, step=2, unit=3, h0=symbolic",
     {"hidden": 2, "layers": 2, "bidirectional": True, "step": 2, "unit": 3}),
    ("lstm", 2, 2, ("hidden=3, bidirectional=true, proj_size=2, layers=2, step=1, "
                    "c0=[[1, 0, -1], [0, 1, 0], [1, 1, 1], [-1, 0, 0]]"),
     {"hidden": 3, "bidirectional": True, "proj_size": 2, "layers": 2, "step": 1}),
]


@pytest.mark.parametrize("kind, T, n, options, opts", RECURRENT_CASES,
                         ids=[f"{c[0]}({c[3]})"[:60] for c in RECURRENT_CASES])
def test_recurrent_options_match_pytorch(tmp_path, kind, T, n, options, opts):
    spec, model, names = with_gradients(tmp_path, recurrent_spec(kind, T, n, options), "f",
                                        "f(x)[0]")
    point, arrays = random_point(spec, seed=T * 10 + n + len(options))
    p = {k.split(".", 1)[1]: tensor(v, grad=True) for k, v in arrays.items() if k != "x"}
    x = tensor(arrays["x"], grad=True)
    out = torch_recurrent(kind, opts, p, x)
    close(values(model, derivation(model, "output").terms, point), out.detach().numpy())
    jac = torch.autograd.functional.jacobian(lambda v: torch_recurrent(kind, opts, p, v), x)
    close(values(model, derivation(model, "jacobian").terms, point),
          jac.reshape(len(out), -1).numpy())
    grads = torch.autograd.grad(out[0], [p[k.split(".", 1)[1]] for k in names],
                                allow_unused=True)
    for k, g in enumerate(grads):
        ours = values(model, derivation(model, f"grad_{k}").terms, point)
        close(ours, np.zeros(ours.shape) if g is None else g.numpy())


def test_bidirectional_projected_lstm_state_dict_loads(tmp_path):
    """A bidirectional LSTM with proj_size, its h_0 / c_0 and a head, from one state_dict."""
    torch.manual_seed(4)
    lstm = nn.LSTM(2, 3, num_layers=2, bidirectional=True, proj_size=2, batch_first=True,
                   dtype=torch.float64)
    head = nn.Linear(4, 1, dtype=torch.float64)
    h0, c0 = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    state = {**{f"lstm.{k}": v for k, v in lstm.state_dict().items()}, "h0": h0, "c0": c0,
             "proj.weight": head.weight.detach(), "proj.bias": head.bias.detach()}
    torch.save(state, tmp_path / "bi.pt")
    text = ("input x : real[4, 2]\nnetwork f(in=[4, 2]) load \"bi.pt\" {\n"
            "  lstm(hidden=3, layers=2, bidirectional=true, proj_size=2, h0=file, c0=file, "
            "step=2)\n}\nderive output f(x)\n")
    spec = elaborate(write(tmp_path, text))
    model = build_model(spec)
    point, arrays = random_point(spec, seed=9)
    with torch.no_grad():
        y, _ = lstm(tensor(arrays["x"]), (h0, c0))
        want = head(y[1]).numpy()
    close(values(model, derivation(model, "output").terms, point), want)


RECURRENT_ERRORS = {
    "lstm(hidden=2, proj_size=2)": "proj_size 2 must be smaller than hidden=2",
    "gru(hidden=2, proj_size=1)": "gru has no option `proj_size`",
    "gru(hidden=2, c0=[[0, 0]])": "gru has no option `c0`",
    "lstm(hidden=2, h0=[[0, 0]], bidirectional=true)": "h0 has shape [1, 2], expected [2, 2]",
    "lstm(hidden=2, h0=file)": "h0=file, but the network loads no weight file",
    "lstm(hidden=2, bidirectional=true, unit=4)": "unit 4 is out of range: it must be in 0..3",
}


@pytest.mark.parametrize("layer", sorted(RECURRENT_ERRORS))
def test_recurrent_option_errors(tmp_path, layer):
    text = f"network f(in=[3, 2]) {{\n  {layer}\n}}\n"
    with pytest.raises(SpecError) as info:
        elaborate(write(tmp_path, text))
    assert info.value.message == RECURRENT_ERRORS[layer]
    assert info.value.span.line == 2


# ---- gcn: torch_geometric's GCNConv ------------------------------------------------------------


def gcn_conv(x, edge_index, lin_weight, bias, add_self_loops=True, normalize=True):
    """torch_geometric.nn.GCNConv's forward (PyG 2.x gcn_norm + propagate) in plain torch:
    remaining self-loops added with weight 1, degrees summed at the target, messages
    dinv[src] * w * dinv[dst] * (x W^T)[src] scatter-added at the target, then the bias."""
    n = x.shape[0]
    src, dst = edge_index
    w = torch.ones(src.shape[0], dtype=torch.float64)
    if add_self_loops:
        keep = src != dst
        loop = torch.arange(n)
        src, dst = torch.cat([src[keep], loop]), torch.cat([dst[keep], loop])
        w = torch.cat([w[keep], torch.ones(n, dtype=torch.float64)])
    if normalize:
        deg = torch.zeros(n, dtype=torch.float64).index_add_(0, dst, w)
        dinv = deg.pow(-0.5).masked_fill(deg == 0, 0.0)
        w = dinv[src] * w * dinv[dst]
    h = x @ lin_weight.T
    out = torch.zeros(n, h.shape[1], dtype=torch.float64).index_add_(0, dst, w[:, None] * h[src])
    return out if bias is None else out + bias


class Conv(nn.Module):
    """The parameters of a PyG GCNConv, under PyG's names: `lin` (bias-free) and `bias`."""

    def __init__(self, n_in: int, n_out: int, bias: bool = True):
        super().__init__()
        self.lin = nn.Linear(n_in, n_out, bias=False, dtype=torch.float64)
        self.bias = nn.Parameter(torch.randn(n_out, dtype=torch.float64)) if bias else None


class PygNet(nn.Module):
    """conv1 -> relu -> conv2 (-> relu) and a head, as a PyG model would be written."""

    def __init__(self, n_in: int, hidden: int, layers: int, bias: bool = True, convs=False):
        super().__init__()
        sizes = [n_in] + [hidden] * layers
        mods = [Conv(a, b, bias) for a, b in itertools.pairwise(sizes)]
        if convs:
            self.convs = nn.ModuleList(mods)
        else:
            for k, m in enumerate(mods, start=1):
                setattr(self, f"conv{k}", m)
        self.mods = mods
        self.proj = nn.Linear(hidden, 1, dtype=torch.float64)

    def forward(self, x, edge_index, node: int, last_act, **kw):
        for k, m in enumerate(self.mods):
            x = gcn_conv(x, edge_index, m.lin.weight, m.bias, **kw)
            x = torch.relu(x) if k < len(self.mods) - 1 else last_act(x)
        return self.proj(x[node])


EDGES = [[0, 1], [1, 0], [1, 2], [2, 1], [1, 3], [3, 2], [0, 3], [0, 3]]  # directed, a repeat

GCN_PYG_CASES = {  # options of our layer, PygNet arguments, forward keywords
    "two_layers_edges_identity_last": (
        "hidden=3, layers=2, node=1, last_act=identity, edges=EDGES",
        {"layers": 2}, {}, torch.nn.Identity()),
    "one_layer_edge_index_relu": (
        "hidden=2, node=3, edge_index=EDGE_INDEX", {"layers": 1}, {}, torch.relu),
    "convs_list_no_bias_plain": (
        ("hidden=2, layers=3, node=2, bias=false, normalize=false, self_loops=false, "
         "last_act=tanh, edges=EDGES"), {"layers": 3, "bias": False, "convs": True},
        {"add_self_loops": False, "normalize": False}, torch.tanh),
}


@pytest.mark.parametrize("case", sorted(GCN_PYG_CASES))
def test_gcn_loads_a_pyg_state_dict_and_matches_gcnconv(tmp_path, case):
    options, net_args, kw, last = GCN_PYG_CASES[case]
    torch.manual_seed(len(case))
    N, F = 4, 3
    net = PygNet(F, options_hidden(options), **net_args)
    torch.save(net.state_dict(), tmp_path / "pyg.pt")
    edge_index = torch.tensor(EDGES).T
    spec_opts = options.replace("EDGE_INDEX", spec_value(edge_index.tolist())) \
        .replace("EDGES", spec_value(EDGES))
    text = (f"input X : real[{N}, {F}]\nnetwork g(in=[{N}, {F}]) load \"pyg.pt\" {{\n"
            f"  gcn({spec_opts})\n}}\nderive output g(X)\nderive jacobian g(X) wrt X\n")
    spec = elaborate(write(tmp_path, text))
    model = build_model(spec)
    point, arrays = random_point(spec, seed=len(case))
    node = int(re.search(r"node=(\d)", options).group(1))
    X = tensor(arrays["X"], grad=True)

    def ref(x):
        return net(x, edge_index, node, last, **kw)

    out = ref(X)
    close(values(model, derivation(model, "output").terms, point), out.detach().numpy())
    jac = torch.autograd.functional.jacobian(ref, X).reshape(1, -1)
    close(values(model, derivation(model, "jacobian").terms, point), jac.detach().numpy())


def options_hidden(options: str) -> int:
    return int(re.search(r"hidden=(\d+)", options).group(1))


def test_edge_list_equals_the_dense_adjacency_with_symbolic_weights(tmp_path):
    """`edges=` builds A[target, source] (repeats add up): the same terms as `adjacency=`."""
    A = [[0] * 4 for _ in range(4)]
    for s, t in EDGES:
        A[t][s] += 1
    outs = []
    for graph in (f"edges={spec_value(EDGES)}", f"adjacency={spec_value(A)}"):
        text = (f"input X : real[4, 2]\nnetwork g(in=[4, 2]) {{ gcn(hidden=2, layers=2, "
                f"act=tanh, {graph}) }}\nderive jacobian g(X) wrt X\n")
        spec = elaborate(write(tmp_path, text))
        model = build_model(spec)
        point, _ = random_point(spec, seed=1)
        outs.append(values(model, derivation(model, "jacobian").terms, point))
    close(outs[0], outs[1])


def test_edge_index_from_the_weight_file(tmp_path):
    torch.manual_seed(2)
    net = PygNet(2, 2, 1)
    edge_index = torch.tensor([[0, 1, 2], [1, 2, 0]])
    torch.save({**net.state_dict(), "edge_index": edge_index}, tmp_path / "g.pt")
    text = ("input X : real[3, 2]\nnetwork g(in=[3, 2]) load \"g.pt\" {\n"
            "  gcn(hidden=2, node=2, edge_index=file)\n}\nderive output g(X)\n")
    spec = elaborate(write(tmp_path, text))
    point, arrays = random_point(spec, seed=4)
    with torch.no_grad():
        want = net(tensor(arrays["X"]), edge_index, 2, torch.relu).numpy()
    close(values(build_model(spec), derivation(build_model(spec), "output").terms, point), want)


GCN_ERRORS = {
    "edges=[[0, 1], [1, 3]]": "edge 1 names node 3, the graph has nodes 0..2",
    "edges=[[0, 1], [2, 2]]": "edge 1 is a self-loop (2, 2), and self_loops=true adds one to "
                              "every node",
    "edge_index=[[0, 1, 2]]": "edge_index has shape [1, 3], expected [2, E]",
    "edges=[[0, 1]], adjacency=symbolic": "adjacency and an edge list both given",
    "edges=[[0, 1, 2]]": "edges has shape [1, 3], expected [E, 2]",
}


@pytest.mark.parametrize("graph", sorted(GCN_ERRORS))
def test_edge_list_errors(tmp_path, graph):
    text = f"network g(in=[3, 2]) {{\n  gcn(hidden=2, {graph})\n}}\n"
    with pytest.raises(SpecError) as info:
        elaborate(write(tmp_path, text))
    assert info.value.message == GCN_ERRORS[graph]
    assert info.value.span.line == 2


def test_pyg_state_dict_with_the_wrong_width_is_located(tmp_path):
    torch.save(PygNet(3, 4, 1).state_dict(), tmp_path / "pyg.pt")
    text = ("network g(in=[4, 3]) load \"pyg.pt\" {\n  gcn(hidden=2, edges=[[0, 1]])\n}\n")
    with pytest.raises(SpecError) as info:
        elaborate(write(tmp_path, text))
    assert info.value.message == ("array `conv1.lin.weight` in pyg.pt has shape [4, 3], gcn "
                                  "layer 1 needs [2, 3]")
    assert info.value.span.line == 2


# ---- `verify` end to end, one spec per family ---------------------------------------------------

END_TO_END = {
    "recurrent": """input x : real[3, 2]
network f(in=[3, 2]) {
  lstm(hidden=2, bidirectional=true, proj_size=1, h0=symbolic, c0=[[1/2, 0], [0, -1/2]], step=2)
}
network q(in=[3, 2]) {
  gru(hidden=2, bidirectional=true, layers=2, h0 in [-1, 1], unit=3)
}
claim head_bias: d(f(x)[0])/d(f.proj_b[0]) == 1
claim reverse_biases_agree: grad(f(x)[0], f.bias_ih_l0_reverse) == grad(f(x)[0], f.bias_hh_l0_reverse)
derive jacobian f(x) wrt x
derive gradient f(x)[0] wrt f.h0 as dh0
derive jacobian q(x) wrt x as jq
""",
    "gcn": """input X : real[4, 2]
network g(in=[4, 2]) {
  gcn(hidden=2, layers=2, act=tanh, last_act=identity, edges=[[0, 1], [1, 0], [1, 2], [3, 2]])
}
network c(in=[4, 2]) {
  gcn(hidden=2, edge_index=[[0, 1, 2], [1, 2, 3]], W in [-1/2, 1/2])
}
claim proj_bias: d(g(X)[0])/d(g.proj_b[0]) == 1
derive jacobian g(X) wrt X
derive hessian g(X)[0] wrt X
derive output c(X) as c_out
""",
    "transformer": """input X : real[3, 4]
network t(in=[3, 4]) {
  transformer(heads=2, ff=3, norm_first=true, ff_act=gelu_tanh, bias=false, final_norm=true,
              mask=causal, key_padding_mask=[0, 1, 0], position=2)
}
claim head_bias: d(t(X)[0])/d(t.proj_b[0]) == 1
derive jacobian t(X) wrt X
""",
}


@pytest.mark.parametrize("family", sorted(END_TO_END))
def test_verify_runs_end_to_end_with_the_new_options(tmp_path, family):
    """`verify SPEC -o DIR`: every claim proved, every artifact written, z3 agrees with each
    .smt2 file."""
    import subprocess

    from verifier.cli import main

    spec = write(tmp_path, END_TO_END[family], family)
    out = tmp_path / "out"
    assert main([spec, "-o", str(out), "-q", "--no-cache"]) == 0
    names = {p.name for p in out.iterdir()}
    for suffix in (".json", ".tex", ".v", ".lean", ".html"):
        assert f"{family}{suffix}" in names, names
    smt = sorted(out.glob("*.smt2"))
    assert smt
    for path in smt:
        answer = subprocess.run(["z3", str(path)], capture_output=True, text=True, timeout=60,
                                check=False)
        assert answer.stdout.split()[0] == "unsat", (path.name, answer.stdout)


def test_exact_gelu_is_refused_by_coq_and_lean_with_a_message(tmp_path, capsys):
    text = ("input x : real[2]\nnetwork f(in=2) { dense(2, gelu) dense(1) }\n"
            "claim head: d(f(x)[0])/d(f.b2[0]) == 1\nderive jacobian f(x) wrt x\n")
    from verifier.cli import main

    spec = write(tmp_path, text, "g")
    assert main([spec, "-o", str(tmp_path / "a"), "-q", "--emit", "smtlib,json,latex"]) == 0
    for target in ("coq", "lean"):
        assert main([spec, "-o", str(tmp_path / target), "-q", "--emit", target]) == 2
        err = capsys.readouterr().err
        assert f"the {target.capitalize()} emitter cannot express the function normal_" in err


@pytest.mark.parametrize("act, approximate", [("gelu", "none"), ("gelu_tanh", "tanh")])
def test_gelu_hessian_matches_pytorch(tmp_path, act, approximate):
    """Second derivatives through gelu (normal_pdf, its output rule) against torch."""
    text = (f"input x : real[3]\nnetwork f(in=3) {{ dense(4, {act}) dense(2, {act}) dense(1) }}\n"
            "derive output f(x)\nderive jacobian f(x) wrt x\nderive hessian f(x)[0] wrt x\n")
    spec = elaborate(write(tmp_path, text))
    model = build_model(spec)
    point, arrays = random_point(spec, seed=len(act))
    W = {k: tensor(v) for k, v in arrays.items()}

    def ref(x):
        g = lambda z: nn.functional.gelu(z, approximate=approximate)
        h = g(W["f.W1"] @ x + W["f.b1"])
        h = g(W["f.W2"] @ h + W["f.b2"])
        return W["f.W3"] @ h + W["f.b3"]

    x = tensor(arrays["x"])
    close(values(model, derivation(model, "output").terms, point), ref(x).numpy())
    close(values(model, derivation(model, "jacobian").terms, point),
          torch.autograd.functional.jacobian(ref, x).numpy())
    close(values(model, derivation(model, "hessian").terms, point),
          torch.autograd.functional.hessian(lambda v: ref(v)[0], x).numpy())


def test_a_false_bound_through_gelu_is_refuted_by_a_replayed_counterexample(tmp_path):
    """Search evaluates gelu in compiled code and replays the candidate exactly."""
    from verifier import run

    text = ("input x : real[2] in [-1, 1]\nnetwork f(in=2) {\n"
            "  dense(2, gelu, W=[[1, -1], [1/2, 1]], b=[0, 1/4])\n  dense(1, W=[[1, 1]], b=[0])\n}\n"
            "claim wrong: f(x)[0] < 1/2\n")
    model = run.load(write(tmp_path, text))
    (v,) = run.check(model, timeout=10)
    assert v.verdict == "refuted" and v.counterexample
