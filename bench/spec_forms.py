"""Properties written as `.snn` specs with `and` / `or` / `not` and polynomial atoms, against
`verify-vnn` on the same VNN-LIB files: the adaptive cruise control property of VNN-COMP 2026
(per input box; its cases decided as one query by `poly_route`) and ACAS Xu properties as
`not (c_1 and ... and c_m)` claims.

    python bench/spec_forms.py [--timeout S] [--boxes 2_5,3_6,...]

Each row runs `verify SPEC --no-cache -q` and `verify-vnn` as fresh processes (wall clock,
one run each, one after the other) and prints their answers and the ratio spec / vnn.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")
ACC = os.path.join(DATA, "vnncomp2026")
ACC_NET = "acc-2000000-64-64-64-64-retrain-100000-200000-0.9.onnx"
sys.path.insert(0, os.path.join(ROOT, "tests"))


def acc_files(box: str, tmp: str) -> tuple[str, str]:
    """The spec and VNN-LIB texts of ACC box (i, j): rPos in [20i, 20i + 20], rVel in
    [-200 + 40j, -160 + 40j] (the benchmark generator's boxes)."""
    i, j = (int(t) for t in box.split("_"))
    lo0, hi0, lo1, hi1 = 20 * i, 20 * i + 20, -200 + 40 * j, -160 + 40 * j
    spec = open(os.path.join(ACC, "acc_box_2_5.snn")).read().replace(
        "box([40, 0], [60, 40])", f"box([{lo0}, {lo1}], [{hi0}, {hi1}])")
    lines = open(os.path.join(ACC, "acc_box_2_5.vnnlib")).read().split("\n")
    lines = [f"(assert (and (>= X[0,0] {lo0}.0) (<= X[0,0] {hi0}.0)))"
             if ln.startswith("(assert (and (>= X[0,0]") else
             f"(assert (and (>= X[0,1] {lo1}.0) (<= X[0,1] {hi1}.0)))"
             if ln.startswith("(assert (and (>= X[0,1]") else ln for ln in lines]
    shutil.copy(os.path.join(ACC, ACC_NET), tmp)
    sp, vp = os.path.join(tmp, f"acc_{box}.snn"), os.path.join(tmp, f"acc_{box}.vnnlib")
    open(sp, "w").write(spec)
    open(vp, "w").write("\n".join(lines))
    return sp, vp


def acas_files(net: str, prop: str, tmp: str) -> tuple[str, str]:
    from test_spec_vs_vnn_bool import bool_spec

    from verifier.vnnlib import read_vnnlib

    onnx = os.path.join(DATA, "vnncomp2021-test", f"{net}.onnx")
    vnnlib = os.path.join(DATA, "vnncomp2021-acasxu", f"{prop}.vnnlib")
    shutil.copy(onnx, os.path.join(tmp, "net.onnx"))
    sp = os.path.join(tmp, f"{net}_{prop}.snn")
    open(sp, "w").write(bool_spec(read_vnnlib(vnnlib), "net.onnx"))
    return sp, vnnlib


def timed(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    return time.perf_counter() - t0, (out.stdout.strip().split("\n") or [""])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--timeout", type=float, default=100.0)
    ap.add_argument("--boxes", default="0_0,2_5,3_6")
    args = ap.parse_args()
    bindir = os.path.dirname(sys.executable)
    verify, vnn = os.path.join(bindir, "verify"), os.path.join(bindir, "verify-vnn")
    rows = ["| property | spec: verdicts | spec s | verify-vnn | vnn s | spec / vnn |",
            "|---|---|---:|---|---:|---:|"]
    cases = [("acc", b) for b in args.boxes.split(",") if b] + [
        ("acas", ("test_unsat", "prop_3")), ("acas", ("test_sat", "prop_4"))]
    for kind, what in cases:
        tmp = tempfile.mkdtemp()
        if kind == "acc":
            sp, vp = acc_files(what, tmp)
            onnx, label = os.path.join(tmp, ACC_NET), f"ACC box {what}"
        else:
            sp, vp = acas_files(*what, tmp)
            onnx, label = os.path.join(tmp, "net.onnx"), f"ACAS Xu {what[0]} {what[1]}"
        ts, out_s = timed([verify, sp, "--no-cache", "-q", "--timeout", str(args.timeout)])
        tv, out_v = timed([vnn, "--onnx", onnx, "--vnnlib", vp, "--timeout",
                           str(args.timeout)])
        rows.append(f"| {label} | {out_s[-1]} | {ts:.1f} | {out_v[0]} | {tv:.1f} | "
                    f"{ts / tv:.2f} |")
        print(rows[-1], flush=True)
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
