"""ACAS Xu properties as `.snn` specs against `verify-vnn` on the same files, as ratios.

    python bench/acasxu_specs.py [--bench DIR] [--only 1_1/prop_3,...] [--timeout S]
                                 [--workers N] [--out FILE]

For each instance the VNN-LIB property becomes a spec (`verifier.vnnlib.spec_text`: each
disjunct's negation as one claim over its box); both run in fresh processes, one after the
other, so the ratio compares whole commands as a user runs them: `verify SPEC` against
`verify-vnn --onnx NET --vnnlib PROP`. The table gives both answers (they must agree),
both wall times and their ratio; the total line gives the geometric mean of the ratios.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT = os.path.join(HERE, "..", "tests", "data", "vnncomp2021-acasxu")  # shipped
INSTANCES = ["1_1/prop_3", "1_1/prop_4", "1_6/prop_1", "1_6/prop_3", "1_7/prop_3",
             "1_7/prop_4", "2_1/prop_2", "3_3/prop_1", "4_5/prop_4", "5_9/prop_2"]


def run(cmd: list[str], timeout: float) -> tuple[int, float, str]:
    t0 = time.perf_counter()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        return out.returncode, time.perf_counter() - t0, out.stdout
    except subprocess.TimeoutExpired:
        return -1, time.perf_counter() - t0, ""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", default=DEFAULT, help="folder with the ACAS Xu .onnx/.vnnlib")
    ap.add_argument("--only", default=",".join(INSTANCES))
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=None, help="also write the table (markdown) here")
    args = ap.parse_args(argv)

    sys.path.insert(0, os.path.join(HERE, ".."))
    from verifier.vnnlib import read_vnnlib, spec_text

    rows, ratios, disagree = [], [], 0
    work = tempfile.mkdtemp()
    try:
        for inst in args.only.split(","):
            net, prop = inst.split("/")
            onnx = os.path.join(args.bench, f"ACASXU_run2a_{net}_batch_2000.onnx")
            vnnlib = os.path.join(args.bench, f"{prop}.vnnlib")
            shutil.copy(onnx, os.path.join(work, "net.onnx"))
            spec = os.path.join(work, f"{net}_{prop}.snn")
            with open(spec, "w") as fh:
                fh.write(spec_text(read_vnnlib(vnnlib), "net.onnx"))
            _, t_v, out_v = run([sys.executable, "-m", "verifier.vnn", "--onnx", onnx,
                                      "--vnnlib", vnnlib, "--timeout", str(args.timeout),
                                      "--workers", str(args.workers)], args.timeout + 60)
            code_s, t_s, _ = run([sys.executable, "-m", "verifier", spec, "--timeout",
                                  str(args.timeout), "--no-cache", "--jobs", "1"],
                                 args.timeout + 60)
            vnn = (out_v.split() or ["?"])[0]
            spec_answer = {0: "proved", 1: "refuted", 3: "unknown"}.get(code_s, f"exit {code_s}")
            agree = {"unsat": "proved", "sat": "refuted"}.get(vnn) == spec_answer
            disagree += not agree and vnn in ("sat", "unsat") and spec_answer != "unknown"
            ratio = t_s / t_v
            ratios.append(ratio)
            rows.append(f"| {inst} | {vnn} | {spec_answer} | {t_v:.1f} | {t_s:.1f} | "
                        f"{ratio:.2f} |")
            print(rows[-1], flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    gmean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    head = ["| instance | verify-vnn | verify (spec) | vnn s | spec s | spec / vnn |",
            "|---|---|---|---|---|---|"]
    total = (f"{len(rows)} instances, {disagree} disagreements, geometric mean of spec / vnn "
             f"{gmean:.2f}, max {max(ratios):.2f}")
    print(total)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write("\n".join(head + rows) + "\n\n" + total + "\n")
    return 1 if disagree else 0


if __name__ == "__main__":
    sys.exit(main())
