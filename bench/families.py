"""Symbolic derivation for every layer family of the bundled specs, against naive sympy.diff.

For each network of specs/{mlp,lstm,gru,gcn,transformer}.snn (symbolic weights): the time to
derive output + input Jacobian + full input Hessian (of the scalar read-out, or of entry 0 of a
vector read-out), the time to render JSON + LaTeX, and the operations of the forward, gradient
and Hessian program slices after hash-consing (CSE). In the same run, the naive approach
inlines the network's output into one sympy expression and calls sympy.diff per input and per
pair of inputs, in a subprocess killed after the time limit.

    python bench/families.py [--limit SECONDS] [--out bench/families.md]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from derivecommon import emit_seconds, load, machine_line, naive, op_counts, write_table

PATH4 = "[[0, 1, 0, 0], [1, 0, 1, 1], [0, 1, 0, 1], [0, 1, 1, 0]]"

# (label, input declaration, network body); the network is `f` applied to input `x`
CASES = [
    ("mlp 3-4-3-1 tanh", "x : real[3]", "f(in=3) { dense(4, tanh) dense(3, tanh) dense(1) }"),
    ("lstm in 2, hidden 4, seq 5, 2 layers", "x : real[5, 2]",
     "f(in=[5, 2]) { lstm(hidden=4, layers=2) }"),
    ("lstm in 2, hidden 3, seq 4, step 3, vector (entry 0)", "x : real[4, 2]",
     "f(in=[4, 2]) { lstm(hidden=3, step=3, output=vector) }"),
    ("gru in 2, hidden 3, seq 4, 2 layers, step 3", "x : real[4, 2]",
     "f(in=[4, 2]) { gru(hidden=3, layers=2, step=3) }"),
    ("gru in 2, hidden 3, seq 5, unit 2", "x : real[5, 2]", "f(in=[5, 2]) { gru(hidden=3, unit=2) }"),
    ("gcn 4 nodes, 2 features, 1 layer, hidden 3, tanh", "x : real[4, 2]",
     f"f(in=[4, 2]) {{ gcn(hidden=3, layers=1, act=tanh, adjacency={PATH4}) }}"),
    ("gcn 2 layers, node 2, no normalisation, no self-loops", "x : real[4, 2]",
     (f"f(in=[4, 2]) {{ gcn(hidden=3, layers=2, node=2, normalize=false, self_loops=false, "
      f"adjacency={PATH4}) }}")),
    ("transformer seq 3, width 4, 2 heads", "x : real[3, 4]", "f(in=[3, 4]) { transformer(heads=2) }"),
    ("transformer seq 4, width 8, 4 heads, ff 16, 2 layers", "x : real[4, 8]",
     "f(in=[4, 8]) { transformer(heads=4, ff=16, layers=2) }"),
]


def spec_text(decl: str, net: str, derive: bool = True) -> str:
    text = f"input {decl}\nnetwork {net}\nderive output f(x)\n"
    if derive:
        text += "derive jacobian f(x) wrt x\nderive hessian f(x)[0] wrt x\n"
    return text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=float, default=60.0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    head = ("| network | inputs | ours: out+J+H (s) [CPU s] | JSON+LaTeX (s) | forward ops "
            "| gradient ops (x fwd) | Hessian ops (x fwd) | naive inline+diff (s) "
            "| time ratio naive/ours |")
    rows = [machine_line(args.limit), "", head, "|" + "---|" * (head.count("|") - 1)]
    for label, decl, net in CASES:
        model, secs, cpu = load(spec_text(decl, net))
        emit = emit_seconds(model)
        fwd, grad, hes = op_counts(model)
        n_in = len(model.inputs)
        nv = naive(spec_text(decl, net, derive=False), args.limit)
        if nv is None:
            nv_s, ratio = f"> {args.limit:.0f} (timeout)", f"> {args.limit / secs:.0f}"
        else:
            nv_s, ratio = f"{nv[0]:.2f}", f"{nv[0] / secs:.1f}"
        rows.append(f"| {label} | {n_in} | {secs:.2f} [{cpu:.2f}] | {emit:.2f} | {fwd} "
                    f"| {grad} ({grad / fwd:.2f}) | {hes} ({hes / fwd:.1f}) | {nv_s} | {ratio} |")
        print(rows[-1], flush=True)
    write_table(rows, args.out)


if __name__ == "__main__":
    main()
