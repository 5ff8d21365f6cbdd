"""`verify`: argument handling, exit codes and terminal output; the work is in `run`."""

from __future__ import annotations

import argparse
import os
import sys

from .diagnostics import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, SpecError, run_guarded
from .emit import EMITTERS
from .terminal import REPORT_FIX, json_error

EMPTY_SPEC = "the spec has no claim and no derivation, so nothing is proved"
EMPTY_FIX = "add a `claim` or a `derive` to the spec"


class _Parser(argparse.ArgumentParser):
    json_errors = False  # set when --json is on the command line: usage errors as JSON too

    def error(self, message):  # usage errors exit 2 with our format, never a traceback
        if self.json_errors:
            print(json_error(SpecError(message, fix=f"see `{self.prog} --help`")))
        else:
            self.print_usage(sys.stderr)
            print(f"error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def default_jobs() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def build_parser() -> argparse.ArgumentParser:
    from .cache import package_version

    p = _Parser(prog="verify", description="Decide the claims of .snn specs and write "
                "SMT-LIB, Coq, Lean, JSON and LaTeX artifacts.")
    p.add_argument("specs", nargs="+", metavar="SPEC", help=".snn spec files")
    p.add_argument("-o", "--output", metavar="DIR", help="directory for artifacts")
    p.add_argument("--emit", default=None, metavar="LIST",
                   help="comma-separated artifacts: " + ",".join(EMITTERS) +
                   " (default: all when -o is given)")
    p.add_argument("--json", action="store_true", help="print a machine-readable report")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="print only the summary line, warnings and errors")
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                   help="time limit per obligation (default 30)")
    p.add_argument("-j", "--jobs", type=_positive_int, default=None, metavar="N",
                   help=f"decide obligations on N processes (default: all cores, "
                   f"{default_jobs()} here)")
    p.add_argument("--no-cache", action="store_true",
                   help="decide everything again and leave the result cache alone")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="decide obligations on a Dask distributed cluster "
                   "(e.g. tcp://127.0.0.1:8786)")
    p.add_argument("--allow-import", action="append", default=[], metavar="DIR",
                   help="let imports read spec files under DIR too (repeatable; besides "
                   "the spec's folder, $SNN_VERIFY_IMPORT_PATH and the bundled library)")
    p.add_argument("--max-terms", type=_positive_int, default=None, metavar="N",
                   help="refuse a spec whose estimated program size exceeds N terms "
                   "(default: $SNN_VERIFY_MAX_TERMS, else 1000000)")
    p.add_argument("--closed-form", action="store_true",
                   help="also export fully inlined terms (refused above a size limit)")
    p.add_argument("--version", action="version", version=f"verify (snn-verify) "
                   f"{package_version()}")
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    parser.json_errors = "--json" in argv
    args = parser.parse_args(argv)
    return run_guarded(lambda: _main_json(args) if args.json else _main(args))


def _main_json(args) -> int:
    """`_main`, but stdout is valid JSON even when the run is interrupted or hits our bug."""
    try:
        return _main(args)
    except KeyboardInterrupt:
        print(json_error(SpecError("interrupted"), exit_status=EXIT_INTERRUPTED))
        raise
    except BrokenPipeError:
        raise
    except Exception as err:
        message = f"internal error ({type(err).__name__}): {err}"
        print(json_error(SpecError(message, fix=REPORT_FIX), exit_status=EXIT_INTERNAL))
        raise


SEVERITY = {0: 0, 3: 1, 1: 2, EXIT_BAD_INPUT: 3, EXIT_INTERNAL: 4}  # README "Exit status"


def worst(a: int, b: int) -> int:
    return max(a, b, key=lambda code: SEVERITY.get(code, 5))


def _options(args):
    """The usage checks that need no spec: (artifact targets, cache, cluster)."""
    if not 0 < args.timeout < float("inf"):
        raise SpecError("--timeout must be positive")
    from .budget import configure, max_terms

    configure(args.max_terms)
    max_terms()  # a malformed $SNN_VERIFY_MAX_TERMS is a usage error, before any spec
    targets = _targets(args)
    for d in args.allow_import:
        if not os.path.isdir(d):
            raise SpecError(f"--allow-import {d} is not a directory",
                            fix="give a folder that holds the spec files to import")
    if args.output:
        from .run import check_output_dir

        check_output_dir(args.output)
    cache = None
    if not args.no_cache:
        from .cache import Cache, default_dir

        folder = default_dir()
        cache = Cache(folder) if folder else None
    cluster = None
    if args.scheduler:
        from .parallel import Cluster

        cluster = Cluster(args.scheduler)
    return targets, cache, cluster


def _main(args) -> int:
    try:
        targets, cache, cluster = _options(args)
    except SpecError as err:
        if not args.json:
            raise
        print(json_error(err))
        return EXIT_BAD_INPUT
    from .terminal import make_reporter

    reporter = make_reporter(args)
    try:
        with reporter:
            status = 0
            for path in args.specs:
                status = worst(status, _one_spec(path, args, targets, cache, cluster,
                                                 reporter))
            reporter.finish(status)
    finally:
        if cluster is not None:
            cluster.close()
    return status


def _attach_proofs(model, verdicts, files: dict[str, str]) -> None:
    """Per obligation, the Qed / Admitted lemmas of the written .v file (with the reasons) and
    the sorry theorems of the .lean file, for the table and the JSON report."""
    from .emit.proofs import counts_of

    coq = next((t for f, t in files.items() if f.endswith(".v")), None)
    lean = next((t for f, t in files.items() if f.endswith(".lean")), None)
    if coq is None and lean is None:
        return
    counts = counts_of(model, coq or "", lean or "")
    for v in verdicts:
        c = counts.get(v.name)
        if c is not None:
            if coq is None:
                c = {"lean_sorry": c["lean_sorry"]}
            elif lean is None:
                c = {k: x for k, x in c.items() if k != "lean_sorry"}
            v.details["proofs"] = c


def _one_spec(path, args, targets, cache, cluster, reporter) -> int:
    """Load, decide and write one spec; a user error or our own bug ends this spec only."""
    from . import run

    try:
        model = run.load(path, import_roots=args.allow_import)
        model.closed_form = args.closed_form
        reporter.begin(path, model)
        if not model.obligations and not model.derivations:
            reporter.warning(path, EMPTY_SPEC, EMPTY_FIX)
        verdicts = run.check(model, args.timeout, jobs=args.jobs or default_jobs(),
                             cache=cache, cluster=cluster, on_verdict=reporter.verdict)
        written = []
        if targets:
            files = run.artifacts(model, verdicts, targets)
            written = run.write_atomically(args.output, files)
            _attach_paths(model, verdicts, written)
            _attach_proofs(model, verdicts, files)
        reporter.end(path, model, verdicts, written)
    except SpecError as err:
        reporter.error(path, err)
        return EXIT_BAD_INPUT
    except (KeyboardInterrupt, BrokenPipeError):  # the reader of stdout went away: stop
        raise
    except Exception as err:  # noqa: BLE001 - our bug: say so, then go on with the next spec
        reporter.internal_error(path, err)
        return EXIT_INTERNAL
    if not model.obligations and not model.derivations:
        return 3
    return run.exit_status(verdicts)


def _attach_paths(model, verdicts, written) -> None:
    from .emit.smtlib import file_name

    names = {os.path.basename(w): w for w in written}
    for v in verdicts:
        f = names.get(file_name(model.name, v.name))
        if f:
            v.details["smt2_file"] = f


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
