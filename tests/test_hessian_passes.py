"""Reverse passes build exactly what sympy builds.

`reverse.gradient` lays products and sums out in canonical order itself instead of calling
`sympy.Mul` and `sympy.Add` (the cost of a Hessian program). Here a plain reverse over
reverse pass, which builds every product and sum with `sympy.Mul(bar, p)` and
`sympy.Add(*parts)`, runs on a second copy of the same forward program; both programs must
agree symbol for symbol: names, definitions with their argument order (sympy's `==`
compares arguments in order), and the symbols each definition reads. The Hessians' values
against PyTorch are checked per family in test_attention, test_recurrent, test_graph and
test_derivatives (the seed-size transformer in
test_attention::test_bundled_transformer_spec_matches_pytorch).
"""

from __future__ import annotations

import gc

import pytest
import sympy as sp

from verifier.run import load
from verifier.symbolic import reverse

NETS = {
    "mlp": ("x : real[3]", "f(in=3) { dense(4, tanh) dense(3, sigmoid) dense(1) }"),
    "lstm": ("x : real[2, 2]", "f(in=[2, 2]) { lstm(hidden=2, layers=2) }"),
    "gru": ("x : real[3, 2]", "f(in=[3, 2]) { gru(hidden=2, step=1) }"),
    "gcn": ("x : real[3, 2]",
            "f(in=[3, 2]) { gcn(hidden=2, layers=2, act=tanh, "
            "adjacency=[[0, 1, 0], [1, 0, 1], [0, 1, 0]]) }"),
    "transformer": ("x : real[2, 4]", "f(in=[2, 4]) { transformer(heads=2, ff=3) }"),
    "transformer_causal": ("x : real[3, 2]",
                           "f(in=[3, 2]) { transformer(heads=1, ff=2, mask=causal, "
                           "ff_act=tanh, positional=true) }"),
}


def reference_gradient(prog, expr, wrt, tag):
    """Reverse mode with sympy's own products and sums (the pass before the layouts)."""
    targets = set(wrt)
    leaves = {w for w in wrt if w not in prog.defs}
    adj = {expr: [sp.Integer(1)]}
    for sym in reversed(prog.closure([expr])):
        parts = adj.pop(sym, None)
        if not parts:
            continue
        bar = prog.assign(sp.Add(*parts), f"{tag}:{sym.name}")
        if sym in targets:
            adj[sym] = [bar]
        if bar == 0:
            continue
        for v, p in reverse.partials(prog, sym).items():
            if v in prog.defs or v in leaves:
                adj.setdefault(v, []).append(sp.Mul(bar, p))
    return [prog.assign(sp.Add(*adj.get(w, [])), f"{tag}:{w.name}") for w in wrt]


def reference_hessian(prog, expr, wrt, tag="H"):
    grad = reference_gradient(prog, expr, wrt, f"{tag}g")
    return [reference_gradient(prog, g, wrt, f"{tag}{i}") for i, g in enumerate(grad)]


def forward(tmp_path, decl, net):
    path = tmp_path / "net.snn"
    path.write_text(f"input {decl}\nnetwork {net}\nderive output f(x)\n")
    model = load(str(path))
    out = next(d for d in model.derivations if d.kind == "output")
    term = out.terms[0] if isinstance(out.terms, tuple) else out.terms
    while isinstance(term, tuple):
        term = term[0]
    return model.program, term, [v.symbol for v in model.inputs]


def listing(prog):
    return [(s.name, prog.defs[s], tuple(d.name for d in prog.deps(s)),
             sorted(v.name for v in prog.def_leaves(s))) for s in prog.order]


@pytest.mark.parametrize("name", sorted(NETS))
def test_hessian_program_is_sympys(tmp_path, name):
    decl, net = NETS[name]
    prog, f, xs = forward(tmp_path, decl, net)
    ours = reverse.hessian(prog, f, xs)
    ref_prog, ref_f, ref_xs = forward(tmp_path, decl, net)
    theirs = reference_hessian(ref_prog, ref_f, ref_xs)
    assert len(prog.order) > len(ref_xs) ** 2  # a real second-order program
    assert [[str(e) for e in row] for row in ours] == [[str(e) for e in row] for row in theirs]
    a, b = listing(prog), listing(ref_prog)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x == y and x[1].args == y[1].args, (x, y)


def test_gc_is_restored():
    """The collector is paused during a pass and left as it was found."""
    x = sp.Symbol("x", real=True)
    prog = reverse.Program()
    y = prog.assign(sp.tanh(x) * x, "y")
    for enabled in (True, False):
        (gc.enable if enabled else gc.disable)()
        try:
            reverse.hessian(prog, y, [x])
            assert gc.isenabled() is enabled
        finally:
            gc.enable()
