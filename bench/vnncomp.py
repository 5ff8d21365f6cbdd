"""Run `verify-vnn` on a VNN-COMP benchmark directory: its instances.csv, its time limits.

    python bench/vnncomp.py BENCHMARK_DIR [--expected CSV] [--cap S] [--first N]
                            [--workers N] [--markdown]

`BENCHMARK_DIR` holds `instances.csv` (rows `network,property,timeout`; VNN-LIB 2.0
benchmarks write the network column as `[('f', 'onnx/a.onnx'), ('g', 'onnx/b.onnx')]`) and
the files it names, relative to it (a missing `X` is looked for as `X.gz`). `--expected`: a csv
of `property,answer` rows (published answers; `holds`/`unsat`, `violated`/`sat`), or a
VNN-COMP results csv (`benchmark,network,property,prepare,answer,seconds`), whose answers are
matched by network and property both (benchmarks that share one property among networks;
`timeout`/`unknown` rows are no answer). `--cap S`
shortens every time limit to at most S seconds (and says so in the table).

Per instance: the answer, the seconds (loading included), and the verdict: `correct` (agrees
with the expected answer, or a `sat` whose witness replays: every witness of `verify-vnn` was
replayed exactly, and is checked here again with onnxruntime when it is installed), `wrong`,
`unknown` (unknown or timeout), or `unsat?` (no published answer to compare with). Totals at
the end. Nothing here is cached: every run decides every instance again.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from verifier import vnn
from verifier.diagnostics import SpecError

_PAIR = re.compile(r"\(\s*'([A-Za-z][A-Za-z0-9_]*)'\s*,\s*'([^']+)'\s*\)")
_ALIASES = {"holds": "unsat", "violated": "sat", "unsat": "unsat", "sat": "sat"}


def _file(root: str, rel: str) -> str:
    path = os.path.normpath(os.path.join(root, rel))
    return path if os.path.exists(path) or not os.path.exists(path + ".gz") else path + ".gz"


def instances(root: str):
    """(onnx argument for `vnn.check`, property path, timeout) per csv row."""
    with open(os.path.join(root, "instances.csv"), newline="") as fh:
        for row in csv.reader(fh):
            if not row or row[0].startswith("#"):
                continue
            nets, prop, limit = row[0].strip(), row[1].strip(), float(row[2])
            pairs = _PAIR.findall(nets)
            onnx = ([f"{name}={_file(root, p)}" for name, p in pairs] if pairs
                    else _file(root, nets))
            yield onnx, _file(root, prop), limit


def ort_replays(result, onnx) -> bool | None:
    """onnxruntime's outputs at the witness agree with the reported ones (1e-4), or None when
    onnxruntime is not installed."""
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError:
        return None
    from verifier.vnnlib2 import Var

    if getattr(result, "query", None) is None:
        runs = [(onnx if isinstance(onnx, str) else onnx[0], result.witness_x,
                 result.witness_y)]
    else:
        files = dict(a.split("=", 1) for a in onnx) if not isinstance(onnx, str) else {
            result.query.networks[0].name: onnx}
        runs = []
        for d in result.query.networks:
            path = files.get(d.name) or files.get(d.equal_to)
            runs.append((path, [result.env[Var(d.name, "X", i)] for i in range(d.inputs.size)],
                         [result.env[Var(d.name, "Y", j)] for j in range(d.outputs.size)]))
    for path, x, y in runs:
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        shape = [s if isinstance(s, int) and s > 0 else 1 for s in inp.shape]
        got = sess.run(None, {inp.name: np.array([float(v) for v in x],
                                                 dtype=np.float32).reshape(shape)})[0]
        if np.max(np.abs(np.ravel(got) - np.array([float(v) for v in y]))) > 1e-4:
            return False
    return True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("benchmark")
    p.add_argument("--expected", help="csv of property,answer (published answers)")
    p.add_argument("--cap", type=float, help="at most this many seconds per instance")
    p.add_argument("--first", type=int, help="only the first N instances")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--markdown", action="store_true", help="print the table as markdown")
    args = p.parse_args(argv)
    expected = {}
    if args.expected:
        with open(args.expected, newline="") as fh:
            for row in csv.reader(fh):
                row = [c.strip() for c in row]
                if len(row) >= 5 and row[4] in _ALIASES:
                    key = (os.path.basename(row[1]), os.path.basename(row[2]))
                    expected[key] = _ALIASES[row[4]]
                elif len(row) >= 2 and row[1] in _ALIASES:
                    expected[os.path.basename(row[0])] = _ALIASES[row[1]]
    rows = list(instances(args.benchmark))[:args.first]
    totals = {"correct": 0, "wrong": 0, "unknown": 0, "unsat?": 0}
    total_time = 0.0
    sep = " | " if args.markdown else "  "
    head = ["instance", "networks", "limit", "answer", "seconds", "verdict"]
    print(("| " + sep.join(head) + " |") if args.markdown else sep.join(head))
    if args.markdown:
        print("|" + "---|" * len(head))
    for onnx, prop, limit in rows:
        t = min(limit, args.cap) if args.cap else limit
        start = time.perf_counter()
        try:
            res, _ = vnn.check(onnx, prop, t, workers=args.workers)
            answer = res.answer
        except SpecError as exc:
            res, answer = None, f"error: {exc.message}"
        secs = time.perf_counter() - start
        total_time += secs
        pname = os.path.basename(prop).removesuffix(".gz")
        nname = os.path.basename(onnx).removesuffix(".gz") if isinstance(onnx, str) else None
        want = (expected.get((nname, pname)) or expected.get(os.path.basename(prop))
                or expected.get(pname))
        if answer in ("unknown", "timeout") or answer.startswith("error"):
            verdict = "unknown"
        elif want is not None:
            verdict = "correct" if want == answer else "wrong"
        elif answer == "sat":
            ok = ort_replays(res, onnx)
            verdict = "correct" if ok is not False else "wrong"
        else:
            verdict = "unsat?"
        totals[verdict] += 1
        nets = (os.path.basename(onnx) if isinstance(onnx, str) else
                ", ".join(a.split("=")[0] + "=" + os.path.basename(a.split("=", 1)[1])
                          for a in onnx))
        cells = [os.path.basename(prop), nets, f"{t:g}", answer, f"{secs:.1f}", verdict]
        print(("| " + sep.join(cells) + " |") if args.markdown else sep.join(cells),
              flush=True)
    print(f"\n{len(rows)} instances: {totals['correct']} correct, {totals['wrong']} wrong, "
          f"{totals['unknown']} unknown/timeout, {totals['unsat?']} unsat without a published "
          f"answer; {total_time:.0f} s in all")
    return 1 if totals["wrong"] else 0


if __name__ == "__main__":
    sys.exit(main())
