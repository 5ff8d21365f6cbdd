"""The batch backprop library (specs/batch) decided by snn-verify against sympy.simplify.

For every equation of the library (both layouts) at each size tuple, times the identity engine
deciding the obligation (`verifier.engines.decide`, with the engine's own z3 confirmation), and
in the same run the naive approach: inline both sides to leaves with `model.program.inline`
and call `sympy.simplify(lhs - rhs)` on every entry, in a child process that is killed at the
time limit. Side conditions (`where`) are invisible to simplify, so claims that need them show
a non-zero residue. Prints a markdown table: equation, sizes, ours (s), simplify (s or
timeout), ratio.

    python bench/batch_backprop.py [--sizes 3,2,4 4,3,5] [--limit SECONDS] [--timeout SECONDS]
                                   [--only SUBSTRING] [--nerva] [--out bench/batch_backprop.md]

The engine gives z3 min(timeout, 0.25) s to confirm an identity it has already proved from
canonical forms (or by cases); `--timeout 0.2` shows the time of the decision itself.
`--nerva` adds the equations phrased as nerva writes them (specs/batch/nerva.snn). The
summary gives our total per size tuple: the library's target is under 10 s per size.
`--before` also times the previous route on every equation (the inlined canonical form only,
z3 confirming every proof) and gives the ratio ours / previous per size tuple, both measured
in this run and so under the same load.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import sympy as sp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from derivecommon import run_with_limit

from verifier.elaborate import elaborate
from verifier.engines import decide, identity
from verifier.obligations import build_model

LAYERS = ("linear", "activation", "softmax", "batchnorm", "dropout", "losses")
FILES = [f"{layer}.snn" for layer in LAYERS] + [f"colwise/{layer}.snn" for layer in LAYERS]


def load(name: str, sizes: tuple[int, int, int]):
    """The model of one library file at one size tuple (obligation names without suffix)."""
    path = os.path.join(ROOT, "specs", "batch", name)
    return build_model(elaborate(path, dict(zip("NDK", sizes))))


def _simplify(program, ob, q) -> None:
    t0 = time.perf_counter()
    zero = True
    for atom in ob.goal:
        residue = program.inline(atom.lhs, limit=None) - program.inline(atom.rhs, limit=None)
        if sp.simplify(residue) != 0:
            zero = False
    q.put((time.perf_counter() - t0, zero))


def naive(program, ob, limit: float):
    """(seconds, residue is zero) or None on timeout; a forked child inherits the program."""
    return run_with_limit(_simplify, (program, ob), limit)


CPU: dict = {}  # size tuple -> our CPU seconds (z3 runs in this process): robust to load
BEFORE: dict = {}  # size tuple -> [wall, CPU] seconds of the previous route (--before)


def _timed(ob, program, timeout: float):
    t0, c0 = time.perf_counter(), time.process_time()
    v = decide(ob, program, timeout)
    return v, time.perf_counter() - t0, time.process_time() - c0


def _before(ob, model, timeout: float):
    """The verdict and times of the previous route: the inlined canonical form only, z3
    confirming every proof (on a fresh model, so no memo of ours helps it)."""
    identity.PROGRAM_FORM = False
    try:
        return _timed(ob, model.program, timeout)
    finally:
        identity.PROGRAM_FORM = True


def rows(sizes_list, limit: float, timeout: float, only: str, files=FILES, before=False):
    for sizes in sizes_list:
        for name in files:
            model = load(name, sizes)
            old_model = load(name, sizes) if before else None
            for ob, old_ob in zip(model.obligations, old_model.obligations if before
                                  else model.obligations):
                if only and only not in ob.name:
                    continue
                v, ours, cpu = _timed(ob, model.program, timeout)
                CPU[sizes] = CPU.get(sizes, 0.0) + cpu
                if before:
                    old, wall, cpu = _before(old_ob, old_model, timeout)
                    acc = BEFORE.setdefault(sizes, [0.0, 0.0])
                    acc[0] += wall
                    acc[1] += cpu
                    if old.verdict != v.verdict:
                        print(f"note: {ob.name} at {sizes}: {v.verdict}, previously "
                              f"{old.verdict}", file=sys.stderr)
                yield ob.name, sizes, v, ours, naive(model.program, ob, limit) if limit > 0 else 0


def fmt_sizes(sizes) -> str:
    return "N={},D={},K={}".format(*sizes)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--sizes",
        nargs="+",
        default=["3,2,4", "4,3,5"],
        help="size tuples N,D,K (default: 3,2,4 4,3,5)",
    )
    ap.add_argument(
        "--limit",
        type=float,
        default=30.0,
        help="simplify time limit per case (s); 0 skips simplify",
    )
    ap.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="our per-obligation timeout (default 30 s, as `verify`)",
    )
    ap.add_argument("--only", default="", help="only equations whose name contains this")
    ap.add_argument("--nerva", action="store_true",
                    help="also the equations as nerva writes them (specs/batch/nerva.snn)")
    ap.add_argument("--before", action="store_true",
                    help="also time the previous route (inlined canonical form, every proof "
                         "confirmed by z3) on each equation, for the ratio")
    ap.add_argument("--out", help="also write the table to this file")
    args = ap.parse_args(argv)
    sizes_list = [tuple(int(x) for x in s.split(",")) for s in args.sizes]

    lines = [
        (
            f"python {platform.python_version()}, sympy {sp.__version__}, "
            f"{platform.machine()}; our timeout {args.timeout:g} s, "
            f"simplify limit {args.limit:g} s"
        ),
        "",
        "| equation | sizes | verdict (engine) | ours s | simplify s | ratio |",
        "|---|---|---|---:|---:|---:|",
    ]
    print("\n".join(lines), flush=True)
    total_ours = total_naive = 0.0
    timeouts = nonzero = count = 0
    per_size: dict = {}
    files = FILES + (["nerva.snn"] if args.nerva else [])
    for name, sizes, v, ours, res in rows(sizes_list, args.limit, args.timeout, args.only, files,
                                               args.before):
        count += 1
        total_ours += ours
        per_size[sizes] = per_size.get(sizes, 0.0) + ours
        if res == 0:
            naive_s, ratio = "skipped", ""
        elif res is None:
            timeouts += 1
            naive_s, ratio = f"timeout (>{args.limit:g})", f">{args.limit / ours:.0f}x"
            total_naive += args.limit
        else:
            seconds, zero = res
            total_naive += seconds
            nonzero += not zero
            naive_s = f"{seconds:.3f}" + ("" if zero else " (not 0)")
            ratio = f"{seconds / ours:.1f}x"
        line = (
            f"| {name} | {fmt_sizes(sizes)} | {v.verdict} ({v.engine}) | {ours:.3f} | "
            f"{naive_s} | {ratio} |"
        )
        lines.append(line)
        print(line, flush=True)
    summary = (
        f"\n{count} cases: ours {total_ours:.1f} s in total; simplify {total_naive:.1f} s "
        f"(timeouts counted at the limit), {timeouts} timeouts, {nonzero} residues that "
        "simplify leaves non-zero (side conditions it cannot see)"
    )
    summary += "\n" + "\n".join(f"ours at {fmt_sizes(k)}: {t:.1f} s ({CPU[k]:.1f} s CPU)"
                                 for k, t in per_size.items())
    for k, (wall, cpu) in BEFORE.items():
        summary += (f"\nprevious route at {fmt_sizes(k)}: {wall:.1f} s ({cpu:.1f} s CPU); "
                    f"ours / previous: {per_size[k] / wall:.2f} wall, {CPU[k] / cpu:.2f} CPU")
    lines.append(summary)
    print(summary)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
