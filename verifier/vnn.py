"""`verify-vnn`: answer a VNN-LIB property on an ONNX network, VNN-COMP style.

    python -m verifier.vnn --onnx NET.onnx --vnnlib PROP.vnnlib [--timeout S]
                           [--onnx NAME=NET.onnx ...]  (VNN-LIB 2.0: one per network)
                           [--answer FILE] [--artifacts DIR] [--certificate FILE] [--json]
                           [--workers N]
                           [--scheduler ADDRESS]

Prints `unsat` (the property holds: the unsafe region of the VNN-LIB file is empty), `sat`
followed by a witness `((X_0 v) ... (Y_0 v))` that was replayed exactly on the network, or
`unknown` / `timeout` with the reason. `--answer FILE` writes the same in VNN-COMP's result
file format. `--artifacts DIR` keeps every SMT-LIB leaf that z3 answered `unsat` and a
`summary.json`. `--certificate FILE` writes, with `unsat`, the closed branch-and-bound tree,
which `verify-check FILE` re-validates independently (VNN-LIB 1.0 properties, and VNN-LIB 2.0
queries with polynomial constraints on one network). `--workers N` runs branch and bound on N forked processes (default 2);
`--scheduler ADDRESS` sends its subtrees to the workers of a Dask distributed cluster instead.
A VNN-LIB 2.0 file (`multinet`, `vnnlib2`) may declare several networks: give each its file
with `--onnx NAME=FILE` (a network declared `equal-to` another may be left out; a single bare
`--onnx FILE` is the first network); its `sat` witness is the 2.0 textual assignment.
Exit status: 0 unsat, 1 sat, 3 unknown or timeout, 2 bad input, 4 our bug.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from fractions import Fraction

EXIT = {"unsat": 0, "sat": 1, "unknown": 3, "timeout": 3}


def witness_text(x: list, y: list) -> str:
    """VNN-COMP witness lines: floats that round-trip, one variable per line."""
    rows = [f"(X_{i} {_num(v)})" for i, v in enumerate(x)]
    rows += [f"(Y_{j} {_num(v)})" for j, v in enumerate(y)]
    return "(" + "\n ".join(rows) + ")"


def _num(v) -> str:
    return repr(float(v))


def check(onnx_path, vnnlib_path: str, timeout: float = 60.0, use_z3: bool = True,
          seed: int = 0, workers: int = 1, cluster=None, certificate: bool = False):
    """Load both files and decide; returns (Result, seconds). Raises SpecError on bad input.

    `onnx_path`: a file, or a list of `--onnx` values (`NAME=FILE` for 2.0 queries). For a
    2.0 query the result carries `query` and `env` (the replayed assignment of `sat`).
    `certificate`: a certificate will be asked for, so a query that cannot have one is refused
    before any work."""
    from .engines.relu_bab import decide
    from .onnx_import import load_onnx
    from .vnnlib2 import Query, read_property

    start = time.perf_counter()
    paths = [onnx_path] if isinstance(onnx_path, str) else list(onnx_path)
    prop = read_property(vnnlib_path)
    if isinstance(prop, Query) and certificate:
        from .multinet import certificate_refusal

        why = certificate_refusal(prop)
        if why is not None:
            from .diagnostics import SpecError

            raise SpecError(f"{vnnlib_path}: no certificate is written for this VNN-LIB 2.0 "
                            f"query: {why}",
                            fix="drop --certificate, or state the property in VNN-LIB 1.0 "
                                "(one network, linear constraints)")
    if isinstance(prop, Query):
        from .multinet import decide_query, onnx_arguments

        named = onnx_arguments(paths)
        if "" in named:
            named = {prop.networks[0].name: named[""]}
        files = {name: load_onnx(p) for name, p in named.items()}
        left = max(timeout - (time.perf_counter() - start), 0.01)
        result, env = decide_query(prop, files, left, use_z3=use_z3, seed=seed,
                                   workers=workers, cluster=cluster)
        result.query, result.env = prop, env
        return result, time.perf_counter() - start
    if len(paths) != 1 or "=" in paths[0] and not os.path.exists(paths[0]):
        from .diagnostics import SpecError

        raise SpecError("a VNN-LIB 1.0 property is about one network: give one --onnx FILE",
                        fix="several networks need a VNN-LIB 2.0 query with declare-network")
    net = load_onnx(paths[0])
    left = max(timeout - (time.perf_counter() - start), 0.01)
    from .engines import nonlinear_ops

    if nonlinear_ops.takes(net):  # sin, cos, pow, products, floor, sign
        result = nonlinear_ops.decide(net, prop, left, seed=seed)
    else:
        result = decide(net, prop, left, use_z3=use_z3, seed=seed, workers=workers,
                        cluster=cluster)
    return result, time.perf_counter() - start


def answer_text(result) -> str:
    if result.answer == "sat" and getattr(result, "query", None) is not None:
        from .multinet import witness_text as witness_text2

        return "sat\n" + witness_text2(result.query, result.env) + "\n"
    if result.answer == "sat":
        return "sat\n" + witness_text(result.witness_x, result.witness_y) + "\n"
    return result.answer + "\n"


def check_outputs(args) -> None:
    """Refuse, before any work, an --answer or --artifacts target we must not replace."""
    from .fileio import check_writable_dir, check_writable_target

    if args.answer:
        check_writable_target(args.answer, "answer file")
    if args.certificate:
        check_writable_target(args.certificate, "certificate")
    if args.artifacts:
        check_writable_dir(args.artifacts, "artifacts folder")
        check_writable_target(os.path.join(args.artifacts, "summary.json"), "artifact")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # usage errors exit 2, never a traceback
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="verify-vnn", description="Decide a VNN-LIB property on an ONNX network.")
    p.add_argument("--onnx", required=True, metavar="NET", action="append",
                   help=".onnx or .onnx.gz network; for a VNN-LIB 2.0 query with several "
                        "networks, NAME=FILE once per network")
    p.add_argument("--vnnlib", required=True, metavar="PROP", help=".vnnlib property")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S",
                   help="time limit in seconds (default 60); running out is `timeout`")
    p.add_argument("--answer", metavar="FILE", help="write the VNN-COMP result file")
    p.add_argument("--artifacts", metavar="DIR",
                   help="keep the z3 leaf queries (.smt2) and a summary.json")
    p.add_argument("--certificate", metavar="FILE",
                   help="with `unsat`, write the closed branch-and-bound tree for "
                        "`verify-check FILE`")
    p.add_argument("--json", action="store_true", help="print a JSON report instead")
    p.add_argument("--no-z3", action="store_true", help="never call z3 on leaves")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="send branch-and-bound subtrees to a Dask distributed cluster "
                        "(workers with one thread each, e.g. `dask worker --nthreads 1`)")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), metavar="N",
                   help="processes for branch and bound (default: 2, or 1 on one core)")
    return p


def main(argv: list[str] | None = None) -> int:
    from .diagnostics import run_guarded

    args = build_parser().parse_args(argv)
    if not 0 < args.timeout < float("inf"):
        print("error: --timeout must be positive", file=sys.stderr)
        return 2
    if args.workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return 2
    return run_guarded(lambda: _run(args), inputs="files")


def _run(args) -> int:
    from .fileio import write_text_atomically

    check_outputs(args)
    cluster = None
    if args.scheduler:
        from .parallel import Cluster

        cluster = Cluster(args.scheduler)
    try:
        onnx = args.onnx if len(args.onnx) > 1 else args.onnx[0]
        result, seconds = check(onnx, args.vnnlib, args.timeout, use_z3=not args.no_z3,
                                workers=args.workers,
                                cluster=cluster.client if cluster is not None else None,
                                certificate=bool(args.certificate))
    finally:
        if cluster is not None:
            cluster.close()
    text = answer_text(result)
    if args.answer:
        write_text_atomically(args.answer, text, "answer file")
    if args.certificate:
        from .emit.certificate import vnn_document

        net_file = args.onnx[0]
        if getattr(result, "query", None) is not None:  # 2.0: `--onnx NAME=FILE` or FILE
            from .multinet import onnx_arguments

            (net_file,) = onnx_arguments(args.onnx).values()
        cert = vnn_document(result, net_file, args.vnnlib)
        if cert is not None:
            write_text_atomically(args.certificate, cert, "certificate")
    files = []
    if args.artifacts:
        for name, smt in result.smt:
            path = os.path.join(args.artifacts, name + ".smt2")
            write_text_atomically(path, smt, "artifact")
            files.append(path)
        summary = _summary(args, result, seconds, files)
        write_text_atomically(os.path.join(args.artifacts, "summary.json"),
                              json.dumps(summary, indent=2, sort_keys=True) + "\n", "artifact")
    if args.json:
        print(json.dumps(_summary(args, result, seconds, files), indent=2, sort_keys=True))
    else:
        sys.stdout.write(text)
        if result.reason and result.answer != "sat":
            print(f"; {result.reason}")
        print(f"; {seconds:.2f}s, {result.stats.get('boxes', 0)} boxes, "
              f"{result.stats.get('z3_leaves', 0)} z3 leaves")
    return EXIT[result.answer]


def _summary(args, result, seconds, files) -> dict:
    out = {
        "onnx": (os.path.basename(args.onnx[0]) if len(args.onnx) == 1 else
                 [os.path.basename(p) for p in args.onnx]),
        "vnnlib": os.path.basename(args.vnnlib),
        "answer": result.answer, "seconds": round(seconds, 3), "reason": result.reason,
        "stats": result.stats, "smt2": [os.path.basename(f) for f in files],
    }
    if result.answer == "sat" and getattr(result, "query", None) is not None:
        decls = {d.name: d for d in result.query.networks}
        out["witness"] = {
            (decls[v.net].inputs if v.kind == "X" else decls[v.net].outputs).label(v.index):
            str(value) for v, value in result.env.items()}
    elif result.answer == "sat":
        out["witness"] = {
            "X": [str(Fraction(v)) for v in result.witness_x],
            "Y": [str(v) if isinstance(v, Fraction) else repr(float(v))
                  for v in result.witness_y],
        }
    return out


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
