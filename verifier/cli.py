"""`verify`: argument handling, exit codes and terminal output; the work is in `run`."""

from __future__ import annotations

import argparse
import json
import os
import sys

from .diagnostics import SpecError, run_guarded
from .emit import EMITTERS

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # usage errors exit 2 with our format, never a traceback
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="verify", description="Decide the claims of .snn specs and write "
                "SMT-LIB, Coq, Lean, JSON and LaTeX artifacts.")
    p.add_argument("specs", nargs="+", metavar="SPEC", help=".snn spec files")
    p.add_argument("-o", "--output", metavar="DIR", help="directory for artifacts")
    p.add_argument("--emit", default=None, metavar="LIST",
                   help="comma-separated artifacts: " + ",".join(EMITTERS) +
                   " (default: all when -o is given)")
    p.add_argument("--json", action="store_true", help="print a machine-readable report")
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                   help="time limit per obligation (default 30)")
    p.add_argument("--closed-form", action="store_true",
                   help="also export fully inlined terms (refused above a size limit)")
    return p


def _targets(args) -> list[str]:
    if args.emit is None:
        return list(EMITTERS) if args.output else []
    names = [t.strip() for t in args.emit.split(",") if t.strip()]
    bad = [t for t in names if t not in EMITTERS]
    if bad:
        raise SpecError(f"unknown artifact kind(s) for --emit: {', '.join(bad)}",
                        fix="choose from " + ",".join(EMITTERS))
    if names and not args.output:
        raise SpecError("--emit needs an output directory", fix="add -o DIR")
    return names


def _row(v) -> str:
    extra = ""
    if v.verdict == "refuted" and v.counterexample:
        pts = ", ".join(f"{k}={val}" for k, val in list(v.counterexample.items())[:6])
        extra = f"  counterexample: {pts}" + (" ..." if len(v.counterexample) > 6 else "")
    elif v.verdict == "unknown" and v.reason:
        extra = f"  ({v.reason})"
    return f"  {v.name:<24} {v.kind:<9} {v.verdict:<8} {v.engine:<22} {v.seconds:7.2f}s{extra}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 0 < args.timeout < float("inf"):
        print("error: --timeout must be positive", file=sys.stderr)
        return EXIT_BAD_INPUT
    return run_guarded(lambda: _main(args))


def _main(args) -> int:
    from . import run

    targets = _targets(args)
    report, status = [], 0
    for path in args.specs:
        model = run.load(path)
        model.closed_form = args.closed_form
        verdicts = run.check(model, args.timeout)
        written = []
        if targets:
            files = run.artifacts(model, verdicts, targets)
            written = run.write_atomically(args.output, files)
            _attach_paths(model, verdicts, written)
        status = max(status, run.exit_status(verdicts), key=_severity)
        if args.json:
            report.append({"spec": path, "model": model.name,
                           "obligations": [v.to_json() for v in verdicts],
                           "artifacts": written})
        else:
            print(f"{path}: {len(verdicts)} obligation(s), {len(model.derivations)} derivation(s)")
            for v in verdicts:
                print(_row(v))
            for f in written:
                print(f"  wrote {f}")
    if args.json:
        print(json.dumps({"specs": report, "exit": status}, indent=2, sort_keys=True))
    return status


def _severity(code: int) -> int:
    return {0: 0, 3: 1, 1: 2}.get(code, 3)


def _attach_paths(model, verdicts, written) -> None:
    from .emit.smtlib import file_name

    names = {os.path.basename(w): w for w in written}
    for v in verdicts:
        f = names.get(file_name(model.name, v.name))
        if f:
            v.details["smt2_file"] = f


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
