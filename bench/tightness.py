"""Tightness of certified bounds on random tanh MLPs, against the best sampled values.

For tanh networks n-h-h-1 on [-1, 1]^n (random Xavier-scaled weights on a 2^-12 grid, so the
spec's exact rationals are short), measures for the output f and for |d f/d x_1|:

- the best sampled value: dense uniform samples plus the box corners (up to 256), then
  projected gradient ascent from the best points (float64; a lower bound on the maximum);
- plain interval propagation over the whole box (the baseline);
- the engine's tightest certified bound within a time limit (branch and bound on the
  enclosures, `engines.bounds.certified_bound`): bound, boxes, seconds;
- the time to decide `f <= 1.05 * sampled` and `|df/dx_1| <= 1.05 * sampled` through the same
  code path as `verify` (a spec file, `run.load`, `run.check`); a timeout is reported as such.

    python bench/tightness.py [--timeout 120] [--bound-time 30] [--samples 200000]
                              [--nets 2-8:0+1+2,4-16:0,8-32:0] [--out bench/tightness.md]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import tempfile
import time
from fractions import Fraction
from itertools import pairwise

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from verifier import run
from verifier.engines.bounds import certified_bound
from verifier.engines.intervals import Tape

GRID = 4096


def weights(n: int, h: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = [n, h, h, 1]
    out = {}
    for k, (a, b) in enumerate(pairwise(sizes), 1):
        W = rng.normal(0.0, np.sqrt(2.0 / (a + b)), (b, a))
        out[f"W{k}"] = np.round(W * GRID) / GRID
        out[f"b{k}"] = np.round(rng.normal(0.0, 0.1, b) * GRID) / GRID
    return out


def forward(p, X):
    """f and d f/d x_1 at the rows of X."""
    z1 = X @ p["W1"].T + p["b1"]
    a1 = np.tanh(z1)
    z2 = a1 @ p["W2"].T + p["b2"]
    a2 = np.tanh(z2)
    f = (a2 @ p["W3"].T + p["b3"])[:, 0]
    d1 = p["W1"][:, 0] * (1 - a1**2)  # d z2 / d x_1 through layer 1
    dz2 = d1 @ p["W2"].T
    df = ((1 - a2**2) * dz2) @ p["W3"][0]
    return f, df


def sampled_max(p, n: int, samples: int, seed: int, which: str) -> float:
    """Best value of f (which="f") or |df/dx_1| over samples, corners and gradient ascent."""
    rng = np.random.default_rng(1000 + seed)

    def val(X):
        f, df = forward(p, X)
        return f if which == "f" else np.abs(df)

    X = rng.uniform(-1, 1, (samples, n))
    if n <= 8:
        corners = np.array(np.meshgrid(*[[-1.0, 1.0]] * n)).reshape(n, -1).T
        X = np.vstack([X, corners])
    v = val(X)
    starts = X[np.argsort(v)[-32:]]
    best = float(v.max())
    step, eps = 0.05, 1e-6
    for _ in range(300):
        g = np.zeros_like(starts)
        for i in range(n):  # central differences: n is small
            e = np.zeros(n)
            e[i] = eps
            g[:, i] = (val(starts + e) - val(starts - e)) / (2 * eps)
        starts = np.clip(starts + step * g / (np.abs(g).max(axis=1, keepdims=True) + 1e-12),
                         -1, 1)
        best = max(best, float(val(starts).max()))
        step *= 0.985
    return best


def up6(x: float) -> str:
    """A decimal >= x with 6 significant digits (x > 0)."""
    e = 5 - math.floor(math.log10(x))
    q = math.ceil(Fraction(x) * Fraction(10) ** e)
    return f"{q / 10**e:.{max(e, 0)}f}"


SPEC = """input x : real[{n}] in [-1, 1]
network g(in={n}) load "weights.npz" {{
  dense({h}, tanh)
  dense({h}, tanh)
  dense(1)
}}
claim upper: g(x)[0] <= {c_f}
claim slope: abs(d(g(x)[0])/d(x[0])) <= {c_d}
"""


def plain_interval(model, ob) -> float:
    tape = Tape(model.program, [ob.goal[0].lhs])
    box = {v.symbol: (v.lo, v.hi) for v in ob.variables}
    return float(tape.run(box, linear=False).values[tape.outputs[0]][1])


def measure(n: int, h: int, seed: int, args) -> list[dict]:
    p = weights(n, h, seed)
    best = {w: sampled_max(p, n, args.samples, seed, w) for w in ("f", "d")}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(os.path.join(tmp, "weights.npz"), **p)
        path = os.path.join(tmp, "mlp.snn")
        with open(path, "w") as fh:
            fh.write(SPEC.format(n=n, h=h, c_f=up6(1.05 * best["f"]), c_d=up6(1.05 * best["d"])))
        model = run.load(path)
        verdicts = run.check(model, args.timeout)
        for ob, v, w in zip(model.obligations, verdicts, ("f", "d")):
            rhs = float(ob.goal[0].rhs)
            # refine until within 0.1 % of the sampled value (lhs - rhs <= that) or time is up
            cert = certified_bound(ob, model.program, args.bound_time,
                                   tolerance=best[w] * 1.001 - rhs)
            rows.append({
                "net": f"{n}-{h}-{h}-1", "seed": seed, "quantity": "f" if w == "f" else
                "\\|df/dx_1\\|", "sampled": best[w], "interval": plain_interval(model, ob),
                "certified": cert["approx"] + rhs, "cert_boxes": cert["boxes"],
                "cert_s": cert["seconds"], "claim": float(ob.goal[0].rhs), "verdict": v.verdict,
                "engine": v.engine, "seconds": v.seconds, "boxes": v.details.get("boxes"),
                "reason": v.reason})
            print(rows[-1], flush=True)
    return rows


def table(rows, args) -> str:
    out = [("| net | seed | quantity | sampled max | interval bound (ratio) | certified bound "
            "(ratio) | boxes, s | claim at 1.05x | verdict | time to decide |"),
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        timed_out = r["verdict"] == "unknown" and "timeout" in (r["reason"] or "")
        verdict = r["verdict"] + (f" (timeout at {args.timeout:.0f} s)" if timed_out else "")
        out.append(
            f"| {r['net']} | {r['seed']} | {r['quantity']} | {r['sampled']:.4f} | "
            f"{r['interval']:.3f} ({r['interval'] / r['sampled']:.2f}x) | "
            f"{r['certified']:.4f} ({r['certified'] / r['sampled']:.3f}x) | "
            f"{r['cert_boxes']}, {r['cert_s']:.0f} s | <= {r['claim']:.6g} | {verdict}, "
            f"{r['engine']}, {r['boxes'] or 0} boxes | {r['seconds']:.1f} s |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=float, default=120.0, help="per claim, as verify --timeout")
    ap.add_argument("--bound-time", type=float, default=30.0,
                    help="seconds for the tightest certified bound")
    ap.add_argument("--samples", type=int, default=200_000)
    ap.add_argument("--nets", default="2-8:0+1+2,4-16:0,8-32:0",
                    help="inputs-width:seeds entries, e.g. 2-8:0+1+2,4-16:0")
    ap.add_argument("--out", default=None, help="write the markdown table here")
    args = ap.parse_args()
    rows = []
    start = time.perf_counter()
    for entry in args.nets.split(","):
        shape, _, seeds = entry.partition(":")
        n, h = map(int, shape.split("-"))
        for seed in map(int, (seeds or "0").split("+")):
            rows.extend(measure(n, h, seed, args))
    text = table(rows, args)
    print(text)
    print(f"total {time.perf_counter() - start:.0f} s on {platform.processor() or platform.machine()}")
    if args.out:  # replaces the table, keeps the prose above it
        prose = ""
        if os.path.exists(args.out):
            with open(args.out) as fh:
                prose = fh.read().split("| net |", 1)[0]
        with open(args.out, "w") as fh:
            fh.write(prose + text + "\n")


if __name__ == "__main__":
    main()
