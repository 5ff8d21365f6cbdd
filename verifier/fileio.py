"""Reading user files and writing result files without surprises.

Reads are bounded and accept regular files only, so a spec cannot make us read `/dev/zero`,
block on a FIFO or list a directory. Writes go through a fresh `mkstemp` file in the target's
folder and `os.replace`, so a reader never sees half a file, two runs never share a temporary
name, and a device or FIFO in the target's place is refused instead of replaced.
"""

from __future__ import annotations

import os
import stat
import tempfile

from .diagnostics import Span, SpecError

MAX_WEIGHT_BYTES = 256 * 2**20  # weight files: 256 MiB, far beyond what a symbolic spec can use


def kind_of(mode: int) -> str:
    """`a directory`, `a FIFO`, ... for a file mode that is not a regular file."""
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
             (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def read_regular_file(path: str, limit: int, what: str, span: Span | None = None) -> bytes:
    """At most `limit` bytes of the regular file at `path`.

    A special file or a larger file is a SpecError naming `what` ("spec file", ...); a missing
    or unreadable file raises the OSError for the caller to word.
    """
    if "\x00" in path:
        raise SpecError(f"the path of a {what} cannot contain a NUL character", span)
    # O_NONBLOCK: opening a FIFO must not wait for a writer; we refuse it right after.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise SpecError(f"{what} {path} is {kind_of(mode)}, not a regular file", span,
                            fix="give the path of an ordinary file")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > limit:
        raise SpecError(f"{what} {path} is larger than {limit} bytes", span,
                        fix=f"check that this is the file you meant: a {what} is read only "
                            f"up to {limit} bytes")
    return b"".join(chunks)


def _refuse_special(path: str, what: str) -> None:
    try:
        st = os.stat(path)  # follows symlinks: a link to a device is a device
    except FileNotFoundError:
        if os.path.islink(path):
            raise SpecError(f"{what} {path} is a symbolic link to nothing",
                            fix="remove the link or choose another path") from None
        return
    except OSError as exc:
        raise SpecError(f"cannot use {what} {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise SpecError(f"{what} {path} is {kind_of(st.st_mode)}; refusing to replace it",
                        fix="choose the path of a regular file, or a new one")


def check_writable_target(path: str, what: str = "output file") -> None:
    """Refuse, before any work, a target that exists and is not a regular file, or whose
    folder exists and is not a directory."""
    _refuse_special(path, what)
    parent = os.path.dirname(os.path.realpath(path))
    if os.path.lexists(parent) and not os.path.isdir(parent):
        raise SpecError(f"cannot write {what} {path}: {parent} is not a directory")


def check_writable_dir(path: str, what: str = "output folder",
                       fix: str = "choose a new folder or an existing directory") -> None:
    """Refuse, before any work, a folder argument that exists but is not a directory (a
    device, FIFO, socket, ordinary file, or a symbolic link to one or to nothing)."""
    try:
        mode = os.stat(path).st_mode  # follows symbolic links: a link to a FIFO is a FIFO
    except FileNotFoundError:
        if os.path.islink(path):
            raise SpecError(f"{what} {path} is a symbolic link to nothing",
                            fix="remove the link or " + fix) from None
        return
    except OSError as err:
        raise SpecError(f"cannot use {what} {path}: {err.strerror}") from None
    if not stat.S_ISDIR(mode):
        kind = "an ordinary file" if stat.S_ISREG(mode) else kind_of(mode)
        raise SpecError(f"{what} {path} is {kind}, not a directory", fix=fix)


def write_text_atomically(path: str, text: str, what: str = "output file") -> str:
    """Write `text` to `path` via mkstemp in its folder and os.replace; returns the path.

    A symlink to a regular file keeps pointing at the updated file. Failures are SpecErrors.
    """
    check_writable_target(path, what)
    final = os.path.realpath(path) if os.path.islink(path) else path
    folder = os.path.dirname(final) or "."
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(final) + ".",
                                   suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fh.fileno(), 0o666 & ~umask)  # mkstemp makes 0600; results are ordinary
            fh.write(text)
        os.replace(tmp, final)
        tmp = None
    except OSError as exc:
        raise SpecError(f"cannot write {what} {path}: {exc.strerror or exc}") from None
    finally:
        if tmp is not None and os.path.lexists(tmp):
            os.unlink(tmp)
    return path
