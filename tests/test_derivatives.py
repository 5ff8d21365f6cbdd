"""Derivations checked against oracles we did not write: PyTorch autograd, finite
differences in mpmath, and (for the size claim) naive `sympy.diff` of the inlined output.

Specs are written as text with exact decimal weights (`0.375`), loaded through the whole
front end (`verifier.run.load`), and their derivation terms evaluated with
`verifier.engines.replay.evaluate` at exact rational points.
"""

from __future__ import annotations

import random
from fractions import Fraction
from itertools import pairwise

import mpmath
import pytest
import sympy as sp
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from verifier.engines.replay import evaluate
from verifier.run import load

TOL = 1e-9

# activation as written in a spec → (torch module, mpmath function)
ACTIVATIONS = {
    "tanh": (nn.Tanh, mpmath.tanh),
    "sigmoid": (nn.Sigmoid, lambda z: 1 / (1 + mpmath.exp(-z))),
    "softplus": (nn.Softplus, lambda z: mpmath.log(1 + mpmath.exp(z))),
    "relu": (nn.ReLU, lambda z: z if z > 0 else 0 * z),
    "leaky_relu(0.1)": (lambda: nn.LeakyReLU(0.1),
                        lambda z: z if z > 0 else mpmath.mpf(1) / 10 * z),
    "identity": (nn.Identity, lambda z: z),
}
SMOOTH = ["tanh", "sigmoid", "softplus"]


# ---- building specs and reference networks ----------------------------------------------------


def decimal(k: int) -> str:
    """k / 1000 as an exact decimal literal, e.g. -375 → "-0.375"."""
    sign = "-" if k < 0 else ""
    return f"{sign}{abs(k) // 1000}.{abs(k) % 1000:03d}"


def random_layers(rng: random.Random, sizes: list[int], acts: list[str]):
    """[(W, b, act)] with entries k/1000, |k| <= 900; W is [out, in] as in torch."""
    layers = []
    for n_in, n_out, act in zip(sizes, sizes[1:], acts):
        W = [[rng.randint(-900, 900) for _ in range(n_in)] for _ in range(n_out)]
        b = [rng.randint(-900, 900) for _ in range(n_out)]
        layers.append((W, b, act))
    return layers


def spec_text(n_in: int, layers, derives: list[str], concrete: bool = True) -> str:
    lines = [f"input x : real[{n_in}]", f"network f(in={n_in}) {{"]
    for W, b, act in layers:
        args = [str(len(b)), act]
        if concrete:
            rows = ", ".join("[" + ", ".join(decimal(k) for k in row) + "]" for row in W)
            args += [f"W=[{rows}]", "b=[" + ", ".join(decimal(k) for k in b) + "]"]
        lines.append(f"  dense({', '.join(args)})")
    lines.append("}")
    return "\n".join(lines + derives) + "\n"


def torch_net(layers) -> nn.Sequential:
    mods = []
    for W, b, act in layers:
        lin = nn.Linear(len(W[0]), len(W)).double()
        with torch.no_grad():
            lin.weight.copy_(torch.tensor([[k / 1000 for k in row] for row in W],
                                          dtype=torch.float64))
            lin.bias.copy_(torch.tensor([k / 1000 for k in b], dtype=torch.float64))
        mods += [lin, ACTIVATIONS[act][0]()]
    return nn.Sequential(*mods)


def mp_forward(layers, x: list) -> list:
    """The network in mpmath at the current precision, from the weights alone."""
    v = [mpmath.mpf(xi) for xi in x]
    for W, b, act in layers:
        fn = ACTIVATIONS[act][1]
        v = [fn(mpmath.fsum(mpmath.mpf(W[i][j]) / 1000 * v[j] for j in range(len(v)))
                + mpmath.mpf(b[i]) / 1000) for i in range(len(W))]
    return v


def load_spec(tmp_path, text: str, name: str = "net.snn"):
    path = tmp_path / name
    path.write_text(text)
    return load(str(path))


def flatten(terms) -> list:
    if isinstance(terms, tuple):
        return [t for sub in terms for t in flatten(sub)]
    return [terms]


def derivation(model, name: str):
    (d,) = [d for d in model.derivations if d.name == name]
    return d


def values(model, name: str, point: dict) -> torch.Tensor:
    """A derivation's terms at the point, as a float64 tensor of its shape."""
    d = derivation(model, name)
    vals, _exact = evaluate(model.program, flatten(d.terms), point)
    return torch.tensor([float(v) for v in vals], dtype=torch.float64).reshape(d.shape)


def input_point(model, x: list[Fraction]) -> dict:
    assert [v.symbol.name for v in model.inputs] == [f"x[{i}]" for i in range(len(x))]
    return {v.symbol: xi for v, xi in zip(model.inputs, x)}


def weight_point(model, layers) -> dict:
    """Symbolic weights `f.W<k>[i,j]`, `f.b<k>[i]` bound to the given values."""
    by_name = {v.symbol.name: v.symbol for v in model.params}
    point = {}
    for k, (W, b, _act) in enumerate(layers, start=1):
        for i, row in enumerate(W):
            for j, w in enumerate(row):
                point[by_name[f"f.W{k}[{i},{j}]"]] = Fraction(w, 1000)
            point[by_name[f"f.b{k}[{i}]"]] = Fraction(b[i], 1000)
    assert len(point) == len(by_name)
    return point


def random_input(rng: random.Random, n: int) -> list[Fraction]:
    return [Fraction(rng.randint(-1000, 1000), 1000) for _ in range(n)]


def assert_close(ours: torch.Tensor, ref: torch.Tensor, tol: float = TOL) -> None:
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    err = (ours - ref).abs() / ref.abs().clamp(min=1.0)
    assert float(err.max()) <= tol, f"max relative error {float(err.max()):.3g}\n{ours}\n{ref}"


DERIVES = ["derive output f(x)", "derive jacobian f(x) wrt x",
           "derive hessian f(x)[0] wrt x as hess0", "derive hessian f(x)[1] wrt x as hess1",
           "derive hessian_diagonal f(x)[1] wrt x as hdiag1"]


def check_against_torch(tmp_path, n_in, layers, x, hessians=True):
    derives = DERIVES if hessians else DERIVES[:2]
    model = load_spec(tmp_path, spec_text(n_in, layers, derives))
    net = torch_net(layers)
    xt = torch.tensor([float(v) for v in x], dtype=torch.float64)
    point = input_point(model, x)
    assert_close(values(model, "output", point), net(xt).detach())
    assert_close(values(model, "jacobian", point), torch.autograd.functional.jacobian(net, xt))
    if hessians:
        for k in (0, 1):
            h = torch.autograd.functional.hessian(lambda v, k=k: net(v)[k], xt)
            assert_close(values(model, f"hess{k}", point), h)
            if k == 1:
                assert_close(values(model, "hdiag1", point), torch.diagonal(h))


# ---- concrete weights: output, Jacobian, Hessian --------------------------------------------


@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_dense_network_against_torch(act, tmp_path):
    rng = random.Random(f"dense-{act}")
    layers = random_layers(rng, [3, 5, 4, 2], [act, act, "identity"])
    check_against_torch(tmp_path, 3, layers, random_input(rng, 3))


def test_mixed_activations_against_torch(tmp_path):
    rng = random.Random("mixed")
    acts = ["tanh", "sigmoid", "softplus", "relu", "leaky_relu(0.1)", "identity"]
    layers = random_layers(rng, [3, 4, 4, 3, 3, 3, 2], acts)
    for _ in range(3):
        check_against_torch(tmp_path, 3, layers, random_input(rng, 3))


@st.composite
def networks(draw):
    depth = draw(st.integers(1, 3))
    sizes = [draw(st.integers(1, 3))] + [draw(st.integers(1, 4)) for _ in range(depth - 1)]
    sizes.append(draw(st.integers(2, 3)))
    acts = [draw(st.sampled_from(list(ACTIVATIONS))) for _ in range(depth)]
    k = st.integers(-1000, 1000)
    layers = []
    for n_in, n_out, act in zip(sizes, sizes[1:], acts):
        W = [[draw(k) for _ in range(n_in)] for _ in range(n_out)]
        b = [draw(k) for _ in range(n_out)]
        layers.append((W, b, act))
    x = [Fraction(draw(k), 1000) for _ in range(sizes[0])]
    return sizes[0], layers, x


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture], database=None)
@given(net=networks())
def test_random_networks_against_torch(net, tmp_path):
    n_in, layers, x = net
    check_against_torch(tmp_path, n_in, layers, x)


# ---- symbolic weights: parameter gradients ----------------------------------------------------


@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_parameter_gradients_against_torch(act, tmp_path):
    rng = random.Random(f"grad-{act}")
    layers = random_layers(rng, [3, 4, 3, 2], [act, act, "sigmoid"])
    derives = [f"derive gradient f(x)[1] wrt f.{p}{k} as g{p}{k}"
               for k in (1, 2, 3) for p in ("W", "b")]
    derives.append("derive output f(x)")
    model = load_spec(tmp_path, spec_text(3, layers, derives, concrete=False))
    net = torch_net(layers)
    for _ in range(2):
        x = random_input(rng, 3)
        point = {**input_point(model, x), **weight_point(model, layers)}
        xt = torch.tensor([float(v) for v in x], dtype=torch.float64)
        net.zero_grad()
        out = net(xt)
        out[1].backward()
        assert_close(values(model, "output", point), out.detach())
        linears = [m for m in net if isinstance(m, nn.Linear)]
        for k, lin in enumerate(linears, start=1):
            assert_close(values(model, f"gW{k}", point), lin.weight.grad)
            assert_close(values(model, f"gb{k}", point), lin.bias.grad)


# ---- finite differences in mpmath ---------------------------------------------------------------


def test_against_central_differences_in_mpmath(tmp_path):
    """Jacobian (step 1e-20 at 50 digits), Hessian (step 1e-12) and a few parameter partials,
    all from a forward pass written here in mpmath."""
    rng = random.Random("fd")
    layers = random_layers(rng, [3, 4, 3, 2], ["tanh", "softplus", "sigmoid"])
    derives = ["derive jacobian f(x) wrt x", "derive hessian f(x)[0] wrt x",
               "derive gradient f(x)[0] wrt f.W1 as gW1",
               "derive gradient f(x)[0] wrt f.b2 as gb2"]
    model = load_spec(tmp_path, spec_text(3, layers, derives, concrete=False))
    x = random_input(rng, 3)
    point = {**input_point(model, x), **weight_point(model, layers)}

    def ours(name):
        d = derivation(model, name)
        vals, _ = evaluate(model.program, flatten(d.terms), point)
        return vals, d.shape

    with mpmath.workdps(50):
        h = mpmath.mpf(10) ** -20
        jac, shape = ours("jacobian")
        assert shape == (2, 3)
        for i in range(2):
            for j in range(3):
                up = [mpmath.mpf(v.numerator) / v.denominator for v in x]
                dn = list(up)
                up[j] += h
                dn[j] -= h
                fd = (mp_forward(layers, up)[i] - mp_forward(layers, dn)[i]) / (2 * h)
                assert abs(jac[3 * i + j] - fd) < mpmath.mpf(10) ** -25

        h2 = mpmath.mpf(10) ** -12
        hess, _ = ours("hessian")
        x0 = [mpmath.mpf(v.numerator) / v.denominator for v in x]
        for i in range(3):
            for j in range(3):
                def f(di, dj, i=i, j=j):
                    p = list(x0)
                    p[i] += di * h2
                    p[j] += dj * h2
                    return mp_forward(layers, p)[0]

                fd = (f(1, 1) - f(1, -1) - f(-1, 1) + f(-1, -1)) / (4 * h2 * h2)
                assert abs(hess[3 * i + j] - fd) < mpmath.mpf(10) ** -18

        def perturbed(layer, kind, i, j, delta):
            W, b, act = layers[layer]
            W = [list(r) for r in W]
            b = list(b)
            if kind == "W":
                W[i][j] += delta
            else:
                b[i] += delta
            new = list(layers)
            new[layer] = (W, b, act)
            return new

        # weights are in thousandths inside mp_forward, so perturb by h * 1000 there
        for name, layer, kind, shape in (("gW1", 0, "W", (4, 3)), ("gb2", 1, "b", (3,))):
            vals, got_shape = ours(name)
            assert got_shape == shape
            cols = shape[1] if kind == "W" else 1
            for n, (i, j) in enumerate((i, j) for i in range(shape[0]) for j in range(cols)):
                fd = (mp_forward(perturbed(layer, kind, i, j, h * 1000), x0)[0]
                      - mp_forward(perturbed(layer, kind, i, j, -h * 1000), x0)[0]) / (2 * h)
                assert abs(vals[n] - fd) < mpmath.mpf(10) ** -25, (name, i, j)


# ---- the cheap-gradient principle --------------------------------------------------------------


def mp_eval(expr: sp.Expr, env: dict):
    """Evaluate a (large, shared) sympy tree in mpmath, iteratively with a memo per node.

    `lambdify` and `evalf(subs=...)` take minutes on the ~10^4-operation inlined derivatives.
    """
    memo: dict = {}
    stack = [(expr, False)]
    while stack:
        e, ready = stack.pop()
        if e in memo:
            continue
        if e in env:
            memo[e] = env[e]
        elif e.is_Rational:
            memo[e] = mpmath.mpf(e.p) / e.q
        elif not ready:
            stack.append((e, True))
            stack.extend((a, False) for a in e.args)
        else:
            a = [memo[x] for x in e.args]
            if e.is_Add:
                memo[e] = mpmath.fsum(a)
            elif e.is_Mul:
                memo[e] = mpmath.fprod(a)
            elif e.is_Pow:
                memo[e] = a[0] ** a[1]
            elif isinstance(e, sp.tanh):
                memo[e] = mpmath.tanh(a[0])
            else:
                raise TypeError(f"no mpmath rule for {type(e).__name__}")
    return memo[expr]


def test_gradient_program_stays_within_five_times_the_forward(tmp_path):
    """3-8-8-8-1 tanh net, symbolic weights: the slice computing every parameter gradient and
    the input gradient costs at most 5x the forward slice, and agrees with naive sympy.diff
    of the fully inlined output at random points."""
    rng = random.Random("size")
    sizes = [3, 8, 8, 8, 1]
    layers = random_layers(rng, sizes, ["tanh", "tanh", "tanh", "identity"])
    params = [f"f.{p}{k}" for k in range(1, 5) for p in ("W", "b")]
    derives = ["derive output f(x)", "derive jacobian f(x) wrt x"]
    derives += [f"derive gradient f(x)[0] wrt {p} as g_{p.replace('.', '_')}" for p in params]
    model = load_spec(tmp_path, spec_text(3, layers, derives, concrete=False))
    prog = model.program

    out = flatten(derivation(model, "output").terms)
    grads = [t for d in model.derivations if d.kind in ("gradient", "jacobian")
             for t in flatten(d.terms)]
    assert len(grads) == 3 + sum(n_in * n_out + n_out for n_in, n_out in pairwise(sizes))
    forward_ops = prog.count_ops(out)
    gradient_ops = prog.count_ops(grads)
    assert forward_ops > 0
    assert gradient_ops <= 5 * forward_ops, (gradient_ops, forward_ops)

    # naive oracle: differentiate the inlined closed form
    inlined = prog.inline(out[0], limit=None)
    assert not set(inlined.free_symbols) & set(prog.defs)
    by_name = {s.name: s for s in inlined.free_symbols}
    assert len(by_name) == 3 + (len(grads) - 3)  # every input and weight occurs
    checks = [("jacobian", (0, 0), "x[0]"), ("jacobian", (0, 2), "x[2]"),
              ("g_f_W1", (0, 0), "f.W1[0,0]"), ("g_f_W1", (7, 2), "f.W1[7,2]"),
              ("g_f_b2", (5,), "f.b2[5]"), ("g_f_W3", (2, 6), "f.W3[2,6]"),
              ("g_f_W4", (0, 4), "f.W4[0,4]"), ("g_f_b4", (0,), "f.b4[0]")]
    naive = {leaf: sp.diff(inlined, by_name[leaf]) for _, _, leaf in checks}
    for _ in range(2):
        point = {**input_point(model, random_input(rng, 3)),
                 **weight_point(model, random_layers(rng, sizes, ["tanh"] * 4))}
        for name, idx, leaf in checks:
            term = derivation(model, name).terms
            for i in idx:
                term = term[i]
            (ours,), _ = evaluate(prog, [term], point)
            with mpmath.workdps(40):
                env = {s: mpmath.mpf(v.numerator) / v.denominator for s, v in point.items()}
                ref = mp_eval(naive[leaf], env)
                assert abs(ours - ref) <= mpmath.mpf(10) ** -30 * max(1, abs(ref)), leaf
