"""`verify` on a whole spec: one process against `--jobs N`, and a re-run from the result cache.

    python bench/cli.py [--spec specs/batch/all.snn] [--jobs 2] [--timeout 30] [--out FILE]

Each run is the real command in a subprocess (`python -m verifier --json SPEC`), timed by the
wall clock around it (interpreter start and spec loading included). The parallel run writes a
fresh, temporary result cache, and the cached run reads it. The three reports must give the
same verdicts in the same order; the table shows wall seconds and ratios, with `uptime`'s load
average before and after (the machine is shared, so absolute times move with its load).
The cache key includes a digest of the package source, so run it in a tree nobody edits
meanwhile (e.g. an export of HEAD: `git archive HEAD | tar -x -C DIR`), or the re-run misses.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from derivecommon import write_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def uptime() -> str:
    try:
        out = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return "unknown"
    return out.strip().split("load average:")[-1].strip()


def verify(spec: str, *args: str, cache: str | None) -> tuple[float, dict]:
    env = dict(os.environ)
    env.pop("PYTEST_CURRENT_TEST", None)
    if cache:
        env["SNN_VERIFY_CACHE"] = cache
    cmd = [sys.executable, "-m", "verifier", "--json", *args, spec]
    if not cache:
        cmd.insert(3, "--no-cache")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - t0
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        sys.exit(f"verify failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return seconds, report


def verdicts(report: dict, field: str = "verdict") -> list[tuple]:
    return [(o["name"], o[field]) for s in report["specs"] for o in s.get("obligations", [])]


def engine_changes(a: dict, b: dict) -> list[str]:
    """Obligations whose deciding engine differs (e.g. a z3 confirmation that made its short
    budget in one run and not in the other)."""
    return [f"{n}: {x} / {y}" for (n, x), (_, y) in zip(verdicts(a, "engine"),
                                                        verdicts(b, "engine")) if x != y]


def counts(report: dict) -> str:
    s = report["summary"]
    return f"{s['proved']} proved, {s['refuted']} refuted, {s['unknown']} unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default="specs/batch/all.snn")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--out", help="also write the markdown table to this file")
    args = ap.parse_args()
    opts = ("--timeout", str(args.timeout))
    load_before = uptime()
    with tempfile.TemporaryDirectory() as cache:
        t1, r1 = verify(args.spec, "--jobs", "1", *opts, cache=None)
        tn, rn = verify(args.spec, "--jobs", str(args.jobs), *opts, cache=cache)
        tc, rc = verify(args.spec, "--jobs", str(args.jobs), *opts, cache=cache)
    load_after = uptime()
    same = verdicts(r1) == verdicts(rn) == verdicts(rc)
    engines = engine_changes(r1, rn)
    hits = sum(o.get("cached", False) for s in rc["specs"] for o in s.get("obligations", []))
    n = len(verdicts(r1))
    rows = [
        f"`verify {args.spec} --timeout {args.timeout:g}`: {n} obligations, {counts(r1)}; "
        f"verdicts identical in all three runs: {'yes' if same else 'NO'}; cache hits on the "
        f"re-run: {hits}/{n}; engines that differ between --jobs 1 and --jobs {args.jobs}: "
        f"{len(engines)}{(' (' + '; '.join(engines[:4]) + ')') if engines else ''}. Load average (1, 5, 15 min) before: {load_before}; after: "
        f"{load_after}; {os.cpu_count()} cores.",
        "",
        "| run | wall (s) | ratio to --jobs 1 |",
        "|---|---|---|",
        f"| --jobs 1, no cache | {t1:.1f} | 1.00 |",
        f"| --jobs {args.jobs}, empty cache | {tn:.1f} | {tn / t1:.2f} ({t1 / tn:.2f}x faster) |",
        f"| --jobs {args.jobs}, cached re-run | {tc:.1f} | {tc / t1:.3f} ({t1 / tc:.1f}x faster) |",
    ]
    write_table(rows, args.out)
    if not same:
        sys.exit("the verdicts differ between runs")


if __name__ == "__main__":
    main()
