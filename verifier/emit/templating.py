"""The jinja2 environment for file skeletons, wherever the package is installed."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import jinja2


def template_dir() -> Path:
    """Installed: `verifier/templates` inside the package; in a source checkout (or an editable
    install): the top-level `templates/`."""
    from importlib import resources

    installed = Path(str(resources.files("verifier") / "templates"))
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parents[2] / "templates"


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir())),
        autoescape=False,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(name: str, **context) -> str:
    return environment().get_template(name).render(**context)


LINE_WIDTH = 200  # emitted lines are broken at spaces to at most this many characters


def wrap(text: str, width: int = LINE_WIDTH, comment: str | None = None,
         quotes: str = '"') -> str:
    """`text` with every line longer than `width` broken at spaces, the continuation lines
    indented four more than the line itself. No break inside a quoted token (`quotes`:
    characters that open and close one, such as SMT-LIB's `|`), nor after `comment` (a line
    comment marker: what follows it must stay on its line); lines that start with it are
    kept whole. A token longer than `width` stays whole. Linear in the text."""
    if all(len(line) <= width for line in text.split("\n")):
        return text
    return "\n".join(_wrap_line(line, width, comment, quotes) if len(line) > width else line
                     for line in text.split("\n"))


def _wrap_line(line: str, width: int, comment: str | None, quotes: str) -> str:
    body = line.lstrip(" ")
    if comment is not None and body.startswith(comment):
        return line
    indent = len(line) - len(body)
    stop = len(line)
    breaks = []  # positions of spaces where the line may be broken
    quote = None
    k = indent
    while k < stop:
        c = line[k]
        if quote is not None:
            if c == quote:
                quote = None
        elif c in quotes:
            quote = c
        elif c == " ":
            if k > indent and line[k - 1] != " ":
                breaks.append(k)
        elif comment is not None and line.startswith(comment, k):
            stop = k
            break
        k += 1
    pad = " " * (indent + 4)
    tokens, prev = [], indent  # the text between break points, separators dropped
    for b in breaks:
        tokens.append(line[prev:b])
        prev = b + 1
        while prev < len(line) and line[prev] == " " and prev < stop:
            prev += 1
    tokens.append(line[prev:])
    out, cur = [], " " * indent + tokens[0]
    for t in tokens[1:]:
        if len(cur) + 1 + len(t) > width and cur.strip():
            out.append(cur)
            cur = pad + t
        else:
            cur += " " + t
    out.append(cur)
    return "\n".join(out)
