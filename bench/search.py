"""Counterexample search: matrix-level network code against the scalar program path.

For tanh MLPs n-h-h-1 on [-1, 1]^n (random weights, seed 0) and two claims as
bench/tightness.py writes them, `f: g(x)[0] <= c` and `|df/dx_1|: abs(d(g(x)[0])/d(x[0]))
<= c`, build `engines.search.Searcher` both ways (`matrix=True`: network outputs and input
Jacobians through `CompiledNetwork`; `matrix=False`: the whole program slice compiled line by
line) and measure, in one process: the time to build each (code generation), samples per
second of the slack on a batch of 4000 points (the search's sampling batch), of the gradient
of the goal atom on 4000 points and on 8 points (the search refines its best 8), and one
whole `Searcher.run` (4000 samples, 40 gradient steps). Each rate is the best of a few
repetitions of at least `--min-time` seconds of CPU time (`time.process_time`); build
times are CPU seconds too. BLAS is limited to one thread during matrix-path calls.

    python bench/search.py [--out bench/search.md] [--min-time 0.3]
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import os
import platform
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from derivecommon import write_table

from verifier import run
from verifier.engines.search import Searcher

NETS = [(2, 8), (4, 16), (8, 32), (16, 64)]
SPEC = """input x : real[{n}] in [-1, 1]
network g(in={n}) load "weights.npz" {{
  dense({h}, tanh)
  dense({h}, tanh)
  dense(1)
}}
claim f: g(x)[0] <= 100
claim slope: abs(d(g(x)[0])/d(x[0])) <= 100
"""


def weights(n: int, h: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes, out = [n, h, h, 1], {}
    for k, (a, b) in enumerate(itertools.pairwise(sizes), start=1):
        out[f"W{k}"] = rng.normal(0, np.sqrt(2 / (a + b)), (b, a))
        out[f"b{k}"] = rng.normal(0, 0.1, b)
    return out


def cpu(fn) -> tuple[float, object]:
    c0 = time.process_time()
    value = fn()
    return time.process_time() - c0, value


def rate(fn, batch: int, min_time: float, repeats: int = 3) -> float:
    """Best samples per CPU second of fn() over `repeats` runs of at least min_time each."""
    fn()  # warm up (workspace allocation)
    best = 0.0
    for _ in range(repeats):
        calls, c0 = 0, time.process_time()
        while (t := time.process_time() - c0) < min_time:
            fn()
            calls += 1
        best = max(best, calls * batch / t)
    return best


def measure(model, ob, min_time: float) -> dict:
    row = {}
    rng = np.random.default_rng(1)
    for path, matrix in (("program", False), ("matrix", True)):
        build, s = cpu(lambda m=matrix: Searcher(ob, model.program, matrix=m))
        assert s.path == path, (s.path, path)
        row[path] = {"build": build, **rates(s, rng, min_time)}
    return row


def rates(s: Searcher, rng, min_time: float) -> dict:
    """Samples per CPU second of the slack and the step direction; one run's CPU seconds."""
    X, x8 = (rng.uniform(-1, 1, (len(s.leaves), b)) for b in (4000, 8))
    width = np.full(len(s.leaves), 2.0)
    return {
        "slack": rate(lambda: s.slack(X), 4000, min_time),
        "grad": rate(lambda: s._direction(X, width), 4000, min_time),
        "grad8": rate(lambda: s._direction(x8, width), 8, min_time),
        "run": min(cpu(lambda: s.run(budget=1e9, samples=4000, steps=40))[0]
                   for _ in range(3)),
    }


def fmt_rate(r: float) -> str:
    return f"{r / 1e6:.2f} M" if r >= 1e6 else f"{r / 1e3:.0f} k" if r >= 1e4 else \
        f"{r / 1e3:.1f} k"


def table(results: list[tuple]) -> list[str]:
    head = ("| net | claim | build, s: program / matrix | slack, samples/s: program / matrix "
            "(ratio) | gradient, batch 4000 (ratio) | gradient, batch 8 (ratio) | one search "
            "run, s (ratio) |")
    rows = [head, "|---|---|---|---|---|---|---|"]
    for net, claim, r in results:
        p, m = r["program"], r["matrix"]
        cells = [f"{net}", claim, f"{p['build']:.2f} / {m['build']:.2f}"]
        for key in ("slack", "grad", "grad8"):
            cells.append(f"{fmt_rate(p[key])} / {fmt_rate(m[key])} ({m[key] / p[key]:.1f}x)")
        cells.append(f"{p['run']:.3f} / {m['run']:.3f} ({p['run'] / m['run']:.1f}x)")
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None, help="write the markdown table here")
    ap.add_argument("--min-time", type=float, default=0.3, help="CPU seconds per repetition")
    args = ap.parse_args()
    results, loads = [], []
    t0 = time.perf_counter()
    for n, h in NETS:
        with tempfile.TemporaryDirectory() as tmp:
            np.savez(os.path.join(tmp, "weights.npz"), **weights(n, h))
            path = os.path.join(tmp, "mlp.snn")
            with open(path, "w") as fh:
                fh.write(SPEC.format(n=n, h=h))
            load_s, model = cpu(lambda p=path: run.load(p))
        loads.append(f"{n}-{h}-{h}-1 {load_s:.1f} s")
        for ob, claim in zip(model.obligations, ("f", "\\|df/dx_1\\|")):
            results.append((f"{n}-{h}-{h}-1", claim, measure(model, ob, args.min_time)))
            print(table(results)[-1], flush=True)
    total = time.perf_counter() - t0
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cmd = "python bench/search.py" + (f" --out {args.out}" if args.out else "") + (
        f" --min-time {args.min_time:g}" if args.min_time != 0.3 else "")
    lines = [
        "# Counterexample search: matrix-level network code against the program path", "",
        (f"Measured {datetime.date.today().isoformat()} with `{cmd}` (total {total:.0f} s) on "
         f"a {os.cpu_count()}-core {platform.machine()} machine shared with other jobs (load "
         f"average {load:.1f} at the end), Python {platform.python_version()}, numpy "
         f"{np.__version__}. Absolute rates depend on the other tenants; compare the ratios "
         "(matrix over program; for build and run times, program over matrix)."), "",
        "Networks n-h-h-1 with tanh hidden layers, random weights loaded from a file. Claims "
        "`f: g(x)[0] <= c` and `|df/dx_1|: abs(d(g(x)[0])/d(x[0])) <= c`. *Program*: "
        "`Searcher(ob, program, matrix=False)`, the obligation's program slice compiled to "
        "numpy one scalar operation per line (vectorised over samples), with its reverse-mode "
        "gradient. *Matrix*: the default, network outputs and input Jacobians through "
        "`CompiledNetwork` (one matmul per layer), gradients composed with vector-Jacobian "
        "and input Hessian-vector products. Rates: best of 3 repetitions, samples per CPU "
        "second. *Gradient* is the search's step direction (`Searcher._direction`). *One "
        "search run*: `Searcher.run(samples=4000, steps=40)` without a time budget, best of "
        "3, CPU seconds. Build: CPU seconds to construct the Searcher (code generation). "
        "Loading each spec (`run.load`: parsing, program, derivatives) took "
        + ", ".join(loads) + " and is shared by both paths.", "",
    ]
    write_table(lines + table(results), args.out)


if __name__ == "__main__":
    main()
