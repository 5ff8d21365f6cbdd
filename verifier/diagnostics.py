"""Source spans and the two kinds of error: the user's (`SpecError`) and ours (`InternalError`)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Span:
    """A region of a source file: 1-based line and column, end column exclusive."""

    path: str
    line: int
    column: int
    end_line: int | None = None
    end_column: int | None = None
    source: str | None = None  # full text of the file, for rendering the offending line

    def width(self) -> int:
        if self.end_line == self.line and self.end_column and self.end_column > self.column:
            return self.end_column - self.column
        return 1

    def source_line(self) -> str | None:
        if self.source is None:
            return None
        lines = self.source.splitlines()
        if 1 <= self.line <= len(lines):
            return lines[self.line - 1]
        return None


class SpecError(Exception):
    """A mistake in the user's input: spec text, weight files, command-line flags."""

    def __init__(self, message: str, span: Span | None = None, fix: str | None = None):
        super().__init__(message)
        self.message = message
        self.span = span
        self.fix = fix

    def render(self) -> str:
        """The message as `file:line:col: error: ...` with the source line, caret and hint."""
        span = self.span
        if span is None:
            head = f"error: {self.message}"
            return head + (f"\n   fix: {self.fix}" if self.fix else "")
        out = [f"{span.path}:{span.line}:{span.column}: error: {self.message}"]
        text = span.source_line()
        if text is not None:
            gutter = f"{span.line:>4}"
            out.append(f"{gutter} | {text}")
            pad = " " * (span.column - 1)
            out.append(f"{' ' * len(gutter)} | {pad}{'^' * span.width()}")
        if self.fix:
            out.append(f"   fix: {self.fix}")
        return "\n".join(out)


class InternalError(Exception):
    """A bug in snn-verify itself; the command line asks the user to report it."""


EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED = 2, 4, 130


def run_guarded(action: Callable[[], int], inputs: str = "spec") -> int:
    """Run a command's body: a user error prints its located message and exits 2; our own bug
    prints a request to report it (never a traceback) and exits 4."""
    try:
        return action()
    except SpecError as err:
        print(err.render(), file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # noqa: BLE001 - our bug: say so instead of a traceback
        kind = "internal error" if isinstance(err, InternalError) else type(err).__name__
        print(f"internal error ({kind}): {err}\nThis is a bug in snn-verify; please report it "
              f"with the {inputs} that triggered it.", file=sys.stderr)
        return EXIT_INTERNAL
