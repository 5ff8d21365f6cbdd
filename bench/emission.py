"""Artifact emission: CPU seconds per emitter against the derivation, sizes and line lengths.

    python bench/emission.py [--runs N] [SPEC ...]

For each spec (default: specs/transformer.snn, specs/lstm.snn, examples/wind_controller.snn):
the derivation (parse, elaborate, forward and reverse-mode program) is timed once per run, then
each emitter (Coq, Lean, JSON, LaTeX; SMT-LIB as `smtlib.encode` of every obligation) on the
same model, without deciding the claims (no verdicts: every lemma is an open statement, no
interval proof is attempted), so the figures are those of printing alone. CPU seconds
(process_time, robust to the machine's load), median over the runs; the ratio emission /
derivation is taken within each run. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from verifier import run  # noqa: E402
from verifier.emit import coq, json_export, latex, lean, smtlib  # noqa: E402

SPECS = ["specs/transformer.snn", "specs/lstm.snn", "examples/wind_controller.snn"]


def _smtlib(model) -> dict[str, str]:
    return {f"{ob.name}.smt2": smtlib.encode(ob, model.program).text for ob in model.obligations}


EMITTERS = {
    "coq": lambda m: coq.emit(m, [], coqc=None),
    "lean": lambda m: lean.emit(m, []),
    "json": lambda m: json_export.emit(m, []),
    "latex": lambda m: latex.emit(m, []),
    "smtlib": _smtlib,
}


def one_run(spec: str) -> dict:
    t = time.process_time()
    model = run.load(str(ROOT / spec))
    out = {"derive": time.process_time() - t, "program": len(model.program), "files": {}}
    for kind, emit in EMITTERS.items():
        t = time.process_time()
        files = emit(model)
        out[kind] = time.process_time() - t
        out["files"][kind] = (sum(len(x.encode()) for x in files.values()),
                              max((len(ln) for x in files.values() for ln in x.split("\n")),
                                  default=0), len(files))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("specs", nargs="*", default=SPECS)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"uptime at start: {load}\n")
    print("| spec | program | derive s | " + " | ".join(f"{k} s" for k in EMITTERS)
          + " | emission / derivation |")
    print("|---|---|---|" + "---|" * len(EMITTERS) + "---|")
    sizes = {}
    for spec in args.specs:
        runs = [one_run(spec) for _ in range(args.runs)]
        med = {k: statistics.median(r[k] for r in runs) for k in ("derive", *EMITTERS)}
        ratio = statistics.median(sum(r[k] for k in EMITTERS) / r["derive"] for r in runs)
        print(f"| {os.path.basename(spec)} | {runs[0]['program']} | {med['derive']:.1f} | "
              + " | ".join(f"{med[k]:.1f}" for k in EMITTERS) + f" | {ratio:.2f} |")
        sizes[spec] = runs[0]["files"]
    print("\n| spec | artifact | files | bytes | longest line |\n|---|---|---|---|---|")
    for spec, files in sizes.items():
        for kind, (size, longest, n) in files.items():
            print(f"| {os.path.basename(spec)} | {kind} | {n} | {size:,} | {longest} |")
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"\nuptime at end: {load}")


if __name__ == "__main__":
    main()
