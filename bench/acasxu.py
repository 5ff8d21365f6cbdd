"""ACAS Xu (VNN-COMP 2021): run instances from acasxu_instances.csv against the ground truth.

    python bench/acasxu.py [--max-time S] [--only 1_1/prop_1,...] [--first N] [--props 1,3]
                           [--bench DIR] [--no-z3] [--workers N] [--certificates] [--overhead]

One row per instance (network, property, expected, answer, seconds), in csv order, then the
totals: correct, wrong, unknown/timeout, total time. A witness of every `sat` answer is
checked again with onnxruntime when it is installed (VNN-COMP's rule: within 1e-4).
`--certificates`: every `unsat` answer's certificate is written and re-validated by
`verify-check`'s checker (its time, leaves and size per row; the totals give the checking time
against the engine's). `--overhead`: every instance is also run once without recording the
split tree, first, and the totals give the ratio of the times (recording / not).
Exit status 1 when any answer is wrong or a certificate is not valid.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT = os.path.join(HERE, "..", "tests", "data", "vnncomp2021-acasxu")  # shipped


def _short(onnx: str) -> str:
    return onnx.replace("ACASXU_run2a_", "").replace("_batch_2000.onnx", "")


def ort_check(onnx_path: str, prop, x, tol: float = 1e-4) -> bool:
    """Re-execute the witness with onnxruntime and check one disjunct holds within tol."""
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError:
        return True
    sess = ort.InferenceSession(onnx_path)
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
    y = sess.run(None, {inp.name: np.array([float(v) for v in x], dtype=np.float32)
                        .reshape(shape)})[0].ravel().astype(float)
    xs = [float(v) for v in x]
    for d in prop.disjuncts:
        if all(float(c.value(xs, list(y))) <= tol for c in d.constraints):
            return True
    return False


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", default=DEFAULT)
    ap.add_argument("--max-time", type=float, default=None, help="cap every time limit")
    ap.add_argument("--only", default=None, help="comma list like 1_1/prop_1")
    ap.add_argument("--props", default=None, help="comma list of property numbers")
    ap.add_argument("--first", type=int, default=None, help="only the first N instances")
    ap.add_argument("--no-z3", action="store_true")
    ap.add_argument("--workers", type=int, default=2, help="processes per instance")
    ap.add_argument("--certificates", action="store_true",
                    help="write and re-validate the certificate of every unsat answer")
    ap.add_argument("--overhead", action="store_true",
                    help="also run each instance without recording its tree (paired)")
    args = ap.parse_args(argv)
    cert_time = engine_unsat = plain = recorded = 0.0
    invalid = 0

    from verifier.engines.relu_bab import decide
    from verifier.onnx_import import load_onnx
    from verifier.vnnlib import read_vnnlib

    with open(os.path.join(args.bench, "acasxu_instances.csv")) as fh:
        rows = [r for r in csv.reader(fh) if r]
    with open(os.path.join(args.bench, "ground_truth.csv")) as fh:
        truth = {(r["onnx"], r["vnnlib"]): r["expected"] for r in csv.DictReader(fh)}
    if args.only:
        want = set(args.only.split(","))
        rows = [r for r in rows if f"{_short(r[0])}/{r[1].replace('.vnnlib', '')}" in want]
    if args.props:
        props = {f"prop_{p}.vnnlib" for p in args.props.split(",")}
        rows = [r for r in rows if r[1] in props]
    if args.first:
        rows = rows[:args.first]
    print(f"{'instance':<16} {'expected':<8} {'answer':<8} {'seconds':>8}  note", flush=True)
    correct = wrong = undecided = 0
    total = 0.0
    for onnx, vnnlib, limit in rows:
        limit = float(limit)
        if args.max_time:
            limit = min(limit, args.max_time)
        if args.overhead:
            t0 = time.perf_counter()
            decide(load_onnx(os.path.join(args.bench, onnx)),
                   read_vnnlib(os.path.join(args.bench, vnnlib)), limit,
                   use_z3=not args.no_z3, workers=args.workers, certify=False)
            plain_secs = time.perf_counter() - t0
        start = time.perf_counter()
        net = load_onnx(os.path.join(args.bench, onnx))
        prop = read_vnnlib(os.path.join(args.bench, vnnlib))
        res = decide(net, prop, max(limit - (time.perf_counter() - start), 0.01),
                     use_z3=not args.no_z3, workers=args.workers)
        secs = time.perf_counter() - start
        total += secs
        exp = truth.get((onnx, vnnlib), "?")
        note = ""
        if res.answer == "sat" and not ort_check(os.path.join(args.bench, onnx), prop,
                                                 res.witness_x):
            note = "witness fails onnxruntime check"
        if res.answer in ("sat", "unsat"):
            if res.answer == exp and not note:
                correct += 1
            else:
                wrong += 1
                note = note or "WRONG"
        else:
            undecided += 1
            note = res.reason[:60]
        st = res.stats
        note += f" [{st.get('boxes', 0)} boxes, {st.get('z3_leaves', 0)} z3]"
        if args.overhead:
            plain += plain_secs
            recorded += secs
            note += f" [without tree {plain_secs:.2f}s]"
        if args.certificates and res.answer == "unsat":
            ok, c_secs, leaves, size = _certify(res, os.path.join(args.bench, onnx),
                                                os.path.join(args.bench, vnnlib))
            cert_time += c_secs
            engine_unsat += secs
            invalid += not ok
            note += (f" [certificate {'valid' if ok else 'INVALID'}: {leaves} leaves, "
                     f"{size / 1e3:.0f} kB, checked in {c_secs:.2f}s]")
        name = f"{_short(onnx)}/{vnnlib.replace('.vnnlib', '')}"
        print(f"{name:<16} {exp:<8} {res.answer:<8} {secs:8.2f}  {note}", flush=True)
    n = correct + wrong + undecided
    print(f"\ntotal {n}: correct {correct}, wrong {wrong}, unknown/timeout {undecided}, "
          f"time {total:.1f}s", flush=True)
    if args.certificates:
        print(f"certificates: {invalid} invalid; checking {cert_time:.1f}s against "
              f"{engine_unsat:.1f}s of the engine on the unsat instances "
              f"(ratio {cert_time / max(engine_unsat, 1e-9):.2f})", flush=True)
    if args.overhead:
        print(f"recording the trees: {recorded:.1f}s against {plain:.1f}s without "
              f"(ratio {recorded / max(plain, 1e-9):.3f})", flush=True)
    return 1 if wrong or invalid else 0


def _certify(res, onnx_path: str, vnnlib_path: str):
    """(valid, seconds, leaves, bytes) of the answer's certificate, checked independently."""
    import tempfile

    from verifier import check
    from verifier.emit.certificate import vnn_document

    t0 = time.perf_counter()
    text = vnn_document(res, onnx_path, vnnlib_path)
    if text is None:
        return False, 0.0, 0, 0
    with tempfile.NamedTemporaryFile("w", suffix=".cert.json", delete=False) as fh:
        fh.write(text)
    try:
        rep = check.check_certificate(fh.name)
        ok, leaves = rep.valid, rep.leaves
    except check.Invalid as exc:
        print(f"  invalid certificate: {exc}", flush=True)
        ok, leaves = False, 0
    finally:
        os.unlink(fh.name)
    return ok, time.perf_counter() - t0, leaves, len(text)


if __name__ == "__main__":
    sys.exit(main())
