"""Symbolic derivation: reverse mode over per-layer symbols against naive inlined sympy.diff.

For tanh MLPs with symbolic weights, times building output + input Jacobian + input Hessian
with snn-verify, and counts operations of the forward program, of the gradient program and of
the Hessian program (after the program's hash-consing, i.e. CSE). In the same run, the naive
approach inlines the whole network into one sympy expression and calls sympy.diff per input
(and per pair of inputs for the Hessian), under a time limit per case.

    python bench/derive.py [--limit SECONDS] [--out bench/derive.md]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from derivecommon import load, machine_line, naive, op_counts, write_table

CASES = [(3, (4, 3)), (3, (8, 8)), (4, (16, 16)), (3, (8, 8, 8, 8)), (4, (32, 32))]


def spec_text(n_in: int, hidden: tuple[int, ...]) -> str:
    layers = "\n".join(f"  dense({h}, tanh)" for h in hidden)
    return (f"input x : real[{n_in}]\nnetwork f(in={n_in}) {{\n{layers}\n  dense(1)\n}}\n"
            "derive output f(x)\nderive jacobian f(x) wrt x\nderive hessian f(x)[0] wrt x\n")


def ours(n_in, hidden):
    model, seconds, _ = load(spec_text(n_in, hidden))
    return (seconds, *op_counts(model))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=float, default=60.0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows = [
        machine_line(args.limit),
        "",
        ("| network | ours: out+J+H (s) | forward ops | gradient ops (x fwd) | Hessian ops (x fwd)"
         " | naive inline+diff (s) | naive ops out/J/H | time ratio naive/ours |"),
        "|---|---|---|---|---|---|---|---|",
    ]
    for n_in, hidden in CASES:
        name = "-".join(map(str, (n_in, *hidden, 1))) + " tanh"
        secs, fwd, grad, hes = ours(n_in, hidden)
        nv = naive(spec_text(n_in, hidden).split("derive")[0] + "derive output f(x)\n", args.limit)
        if nv is None:
            nv_s, nv_ops, ratio = f"> {args.limit:.0f} (timeout)", "-", f"> {args.limit / secs:.0f}"
        else:
            nv_s = f"{nv[0]:.2f}"
            nv_ops = f"{nv[1]}/{nv[2]}/{nv[3]}"
            ratio = f"{nv[0] / secs:.1f}"
        rows.append(f"| {name} | {secs:.2f} | {fwd} | {grad} ({grad / fwd:.2f}) | {hes} "
                    f"({hes / fwd:.1f}) | {nv_s} | {nv_ops} | {ratio} |")
        print(rows[-1], flush=True)
    write_table(rows, args.out)


if __name__ == "__main__":
    main()
