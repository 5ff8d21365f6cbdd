"""reach_prob_density robot (VNN-COMP 2022): the ReLU engine on the unsat instances, with the
engine's switches set per run, so that settings are compared in one run on one machine.

    python bench/robot.py [--dir DIR] [--only 3,5,...] [--timeout S] [--workers N]
                          [--set NAME=VALUE ...] [--certificates]

`DIR` holds `robot.onnx.gz` and `robot_<i>.vnnlib.gz` (or `.vnnlib`: a part of an instance's
box written by hand). The default, `tests/data/vnncomp2022-reach_prob_density`, ships robot_0,
3 and 11; the others come from ChristopherBrix/vnncomp2022_benchmarks,
`benchmarks/reach_prob_density/`. Without `--only`, the unsat ones of 3, 5, 6, 7, 8 that DIR
holds are run. `--set` changes a module constant of `verifier.engines.relu_bab` for the run
(`--set BETA=0 --set WARM=0`: no beta multipliers, no warm starts). One row per instance:
answer, seconds, boxes, phase splits, empty copies, the load average before the instance;
`--certificates`: every `unsat` certificate is written and re-validated by `verify-check`'s
checker.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
DEFAULT = os.path.join(HERE, "..", "tests", "data", "vnncomp2022-reach_prob_density")
EXPECTED = {0: "sat", 1: "sat", 2: "sat", 3: "unsat", 4: "sat", 5: "unsat", 6: "unsat",
            7: "unsat", 8: "unsat", 9: "sat", 10: "sat", 11: "sat"}


def main(argv=None) -> int:
    from verifier import vnn
    from verifier.engines import relu_bab

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default=DEFAULT)
    ap.add_argument("--only", help="instances, e.g. 3,5,6,7,8 (default: the unsat ones in DIR)")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--certificates", action="store_true")
    args = ap.parse_args(argv)
    for item in args.set:
        name, value = item.split("=", 1)
        if not hasattr(relu_bab, name):
            ap.error(f"relu_bab has no {name}")
        setattr(relu_bab, name, type(getattr(relu_bab, name))(float(value)))
    onnx = os.path.join(args.dir, "robot.onnx.gz")
    print(f"settings: {' '.join(args.set) or 'defaults'}; timeout {args.timeout:g} s, "
          f"{args.workers} worker(s)")
    print("| instance | answer | seconds | boxes | phase splits | empty | load |")
    print("|---|---|---|---|---|---|---|")
    wrong = 0
    only = args.only or ",".join(str(i) for i in (3, 5, 6, 7, 8) if os.path.exists(
        os.path.join(args.dir, f"robot_{i}.vnnlib.gz")))
    for i in only.split(","):
        prop = os.path.join(args.dir, f"robot_{i}.vnnlib.gz")
        if not os.path.exists(prop):  # a part of an instance's box, written by hand
            prop = prop.removesuffix(".gz")
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        res, _ = vnn.check(onnx, prop, args.timeout, workers=args.workers,
                           certificate=args.certificates)
        secs = time.perf_counter() - t0
        st = res.stats
        note = ""
        want = EXPECTED.get(int(i.rstrip("abcdefghijklmnopqrstuvwxyz")))
        if res.answer in ("sat", "unsat") and res.answer != want:
            wrong += 1
            note = " WRONG"
        if args.certificates and res.answer == "unsat":
            ok, c_secs = _certify(res, onnx, prop)
            wrong += not ok
            note += f" (certificate {'valid' if ok else 'INVALID'}, {c_secs:.1f} s)"
        print(f"| robot_{i} | {res.answer}{note} | {secs:.1f} | {st.get('boxes', 0)} | "
              f"{st.get('phase_splits', 0)} | {st.get('empty', 0)} | {load:.2f} |", flush=True)
    return 1 if wrong else 0


def _certify(res, onnx_path: str, vnnlib_path: str):
    """(valid, seconds) of the answer's certificate, checked independently."""
    import tempfile

    from verifier import check
    from verifier.emit.certificate import vnn_document

    t0 = time.perf_counter()
    text = vnn_document(res, onnx_path, vnnlib_path)
    if text is None:
        return False, 0.0
    with tempfile.NamedTemporaryFile("w", suffix=".cert.json", delete=False) as fh:
        fh.write(text)
    try:
        ok = check.check_certificate(fh.name).valid
    except check.Invalid as exc:
        print(f"  invalid certificate: {exc}", flush=True)
        ok = False
    finally:
        os.unlink(fh.name)
    return ok, time.perf_counter() - t0


if __name__ == "__main__":
    sys.exit(main())
