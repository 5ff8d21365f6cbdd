"""What `verify` prints: rows as verdicts arrive, warnings and errors, the summary line.

Three reporters share one interface. `Plain` prints lines (flushed, so a pipe sees each row
when its verdict exists); `Live` adds a rich progress bar when stdout is a terminal; `Json`
prints nothing until the end and then one JSON document, errors included.
"""

from __future__ import annotations

import json
import math
import sys
import time

from .diagnostics import EXIT_BAD_INPUT, SpecError
from .engines.verdict import PROVED, REFUTED, UNKNOWN

REPORT_FIX = "this is a bug in snn-verify; please report it with the spec that triggered it"


def row(v, cached: bool = False) -> str:
    """One obligation's line: name, kind, verdict, engine, seconds, then what backs it."""
    extra = ""
    if v.verdict == "refuted" and v.counterexample:
        pts = ", ".join(f"{k}={val}" for k, val in list(v.counterexample.items())[:6])
        extra = f"  counterexample: {pts}" + (" ..." if len(v.counterexample) > 6 else "")
    elif v.verdict == "unknown" and v.reason:
        extra = f"  ({v.reason})"
    mark = " [cached]" if cached else ""
    return (f"  {v.name:<24} {v.kind:<9} {v.verdict:<8} {v.engine:<22} "
            f"{v.seconds:7.2f}s{mark}{extra}")


def proof_text(c: dict) -> str:
    """`3 Qed, 1 Admitted (reason), 4 sorry` of an obligation's proof counts."""
    parts = []
    if "coq_qed" in c:
        parts.append(f"Coq {c['coq_qed']} Qed, {c['coq_admitted']} Admitted")
        if c.get("admitted_reasons"):
            why = "; ".join(c["admitted_reasons"])
            parts[-1] += f" ({why[:120]}{' ...' if len(why) > 120 else ''})"
    if "lean_sorry" in c:
        parts.append(f"Lean {c['lean_sorry']} sorry")
    return ", ".join(parts)


def error_object(err: SpecError, path: str | None = None) -> dict:
    """{file, line, col, message, fix} of a user error (file: the spec when unlocated)."""
    span = err.span
    return {"file": span.path if span else path, "line": span.line if span else None,
            "col": span.column if span else None, "message": err.message, "fix": err.fix}


def json_error(err: SpecError, exit_status: int = EXIT_BAD_INPUT) -> str:
    """A usage error (or an interrupted run) as the whole JSON output of the command."""
    return json.dumps({"error": error_object(err), "exit": exit_status}, indent=2,
                      sort_keys=True)


def _internal_message(err: Exception) -> str:
    kind = type(err).__name__
    return f"internal error ({kind}): {err}"


class Plain:
    """Lines on stdout as things happen; errors and warnings on stderr."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.start = time.perf_counter()
        self.counts = {PROVED: 0, REFUTED: 0, UNKNOWN: 0}
        self.loaded = 0  # specs that got as far as deciding
        self.cached: set[int] = set()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    def begin(self, path: str, model) -> None:
        self.loaded += 1
        self.cached = set()
        self.say(f"{path}: {len(model.obligations)} obligation(s), "
                 f"{len(model.derivations)} derivation(s)")

    def verdict(self, i: int, v, cached: bool) -> None:
        self.counts[v.verdict] = self.counts.get(v.verdict, 0) + 1
        if cached:
            self.cached.add(i)
        self.say(row(v, cached))

    def end(self, path: str, model, verdicts, written) -> None:
        for v in verdicts:
            c = v.details.get("proofs")
            if c and any(c.get(k) for k in ("coq_qed", "coq_admitted", "lean_sorry")):
                self.say(f"  {v.name:<24} proofs    " + proof_text(c))
        for f in written:
            self.say(f"  wrote {f}")

    def complain(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def warning(self, path: str, message: str, fix: str) -> None:
        self.complain(f"{path}: warning: {message}\n   fix: {fix}")

    def error(self, path: str, err: SpecError) -> None:
        self.complain(err.render())

    def internal_error(self, path: str, err: Exception) -> None:
        self.complain(f"{path}: {_internal_message(err)}\nThis is a bug in snn-verify; please "
                      f"report it with the spec that triggered it.")

    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def summary(self) -> str:
        c = self.counts
        return (f"{c[PROVED]} proved, {c[REFUTED]} refuted, {c[UNKNOWN]} unknown "
                f"in {self.seconds():.2f} s")

    def finish(self, status: int) -> None:
        if self.loaded:  # a run where no spec loaded ends with its errors alone
            print(self.summary(), flush=True)


class Live(Plain):
    """Plain's rows, printed above a rich progress bar (stdout is a terminal)."""

    def __enter__(self):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        # no refresh thread: the bar is redrawn on each verdict, and forked deciders never
        # inherit a lock held by a drawing thread
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(),
                                 auto_refresh=False, transient=True, redirect_stderr=False)
        self.progress.start()
        self.task = None
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def say(self, text: str) -> None:
        self.progress.console.print(text, markup=False, highlight=False, soft_wrap=True)
        self.progress.refresh()

    def complain(self, text: str) -> None:
        if sys.stderr.isatty():  # the same terminal: above the bar, like the rows
            self.progress.console.print(text, markup=False, highlight=False, soft_wrap=True)
            self.progress.refresh()
        else:
            super().complain(text)

    def begin(self, path: str, model) -> None:
        super().begin(path, model)
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(path, total=len(model.obligations) or 1)
        self.progress.refresh()

    def verdict(self, i: int, v, cached: bool) -> None:
        super().verdict(i, v, cached)
        self.progress.advance(self.task)
        self.progress.refresh()

    def finish(self, status: int) -> None:
        self.progress.stop()
        super().finish(status)


class Json(Plain):
    """Nothing until the end, then one JSON document on stdout (errors included)."""

    def __init__(self) -> None:
        super().__init__(quiet=True)
        self.specs: list[dict] = []
        self.warnings: dict[str, str] = {}

    def warning(self, path: str, message: str, fix: str) -> None:
        self.warnings[path] = message

    def end(self, path: str, model, verdicts, written) -> None:
        obligations = []
        for i, v in enumerate(verdicts):
            entry = v.to_json()
            entry["cached"] = i in self.cached
            obligations.append(entry)
        spec = {"spec": path, "model": model.name, "obligations": obligations,
                "artifacts": written}
        if path in self.warnings:
            spec["warning"] = self.warnings[path]
        self.specs.append(spec)

    def error(self, path: str, err: SpecError) -> None:
        self.specs.append({"spec": path, "error": error_object(err, path)})

    def internal_error(self, path: str, err: Exception) -> None:
        self.specs.append({"spec": path, "error": {
            "file": path, "line": None, "col": None, "message": _internal_message(err),
            "fix": REPORT_FIX}})

    def finish(self, status: int) -> None:
        c = self.counts
        summary = {"proved": c[PROVED], "refuted": c[REFUTED], "unknown": c[UNKNOWN],
                   "seconds": round(self.seconds(), 3)}
        report = _finite({"specs": self.specs, "exit": status, "summary": summary})
        print(json.dumps(report, indent=2, sort_keys=True, default=str, allow_nan=False))


def _finite(value):
    """The report with infinite or NaN floats as the strings "inf", "-inf", "nan" (JSON has
    no such numbers) and tuples as lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        return _finite(value.item())
    return value


def make_reporter(args) -> Plain:
    if args.json:
        return Json()
    if not args.quiet and sys.stdout.isatty():
        return Live()
    return Plain(quiet=args.quiet)
