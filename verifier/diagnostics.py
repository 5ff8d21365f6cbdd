"""Source spans and the two kinds of error: the user's (`SpecError`) and ours (`InternalError`)."""

from __future__ import annotations

import sys
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

MAX_ECHO = 200  # characters of a quoted source line; longer lines show a window around the caret
MAX_MESSAGE = 1000  # characters of a message or hint (they may embed names and paths)
# bidirectional overrides and isolates reorder what a terminal shows ("Trojan Source")
_BIDI = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")


def _unsafe(ch: str) -> bool:
    return unicodedata.category(ch) == "Cc" or ch in _BIDI


def printable(text: str, limit: int = MAX_MESSAGE) -> str:
    """User text made safe to print: control characters escaped (`\\x1b`), at most `limit`
    characters (cut with `...`)."""
    if len(text) > limit:
        text = text[:limit] + "..."
    if not any(_unsafe(ch) for ch in text):
        return text
    return "".join(ch.encode("unicode_escape").decode("ascii") if _unsafe(ch) else ch
                   for ch in text)


def echo_line(text: str, column: int, width: int) -> tuple[str, int, int]:
    """A source line to quote under a message: (shown text, caret column, caret width).

    Each control character becomes one `?` (so the caret stays aligned; tabs become a space),
    and a line longer than MAX_ECHO shows the MAX_ECHO characters around the caret.
    """
    shown = "".join(" " if ch == "\t" else "?" if _unsafe(ch) else ch for ch in text)
    if len(shown) <= MAX_ECHO:
        return shown, column, width
    start = max(0, min(column - 1 - MAX_ECHO // 2, len(shown) - MAX_ECHO))
    end = start + MAX_ECHO
    head, tail = ("..." if start else ""), ("..." if end < len(shown) else "")
    caret = column - start + len(head)
    width = max(1, min(width, end - (column - 1)))
    return head + shown[start:end] + tail, caret, width


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
        message = printable(self.message)
        fix = printable(self.fix) if self.fix else None
        if span is None:
            head = f"error: {message}"
            return head + (f"\n   fix: {fix}" if fix else "")
        out = [f"{printable(span.path)}:{span.line}:{span.column}: error: {message}"]
        text = span.source_line()
        if text is not None:
            shown, column, width = echo_line(text, span.column, span.width())
            gutter = f"{span.line:>4}"
            out.append(f"{gutter} | {shown}")
            pad = " " * (column - 1)
            out.append(f"{' ' * len(gutter)} | {pad}{'^' * width}")
        if fix:
            out.append(f"   fix: {fix}")
        return "\n".join(out)


class InternalError(Exception):
    """A bug in snn-verify itself; the command line asks the user to report it."""


EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED = 2, 4, 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer killed by it


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
    except BrokenPipeError:  # the reader stopped early (`verify-vnn ... | head -1`): not a bug
        import os

        try:  # further writes, and Python's own flush at exit, go nowhere
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return EXIT_BROKEN_PIPE
    except Exception as err:  # noqa: BLE001 - our bug: say so instead of a traceback
        kind = "internal error" if isinstance(err, InternalError) else type(err).__name__
        print(f"internal error ({kind}): {err}\nThis is a bug in snn-verify; please report it "
              f"with the {inputs} that triggered it.", file=sys.stderr)
        return EXIT_INTERNAL
