"""The pipeline as functions: spec file → model → verdicts → artifacts on disk."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

from .diagnostics import SpecError
from .elaborate import elaborate
from .engines.verdict import Verdict
from .fileio import check_writable_dir, check_writable_target
from .obligations import Model, build_model


def load(path: str, import_roots=None) -> Model:
    """Parse, elaborate and translate a spec (raises SpecError for any user mistake).

    A spec with symbolic sizes (`dim`) is elaborated once per size tuple. `import_roots`:
    folders besides the spec's own (and the bundled library) that imports may read from.
    """
    spec = elaborate(path, import_roots=import_roots)
    if len(spec.instantiations) <= 1:
        return build_model(spec)
    instances = [spec if dict(inst) == dict(spec.dims)
                 else elaborate(path, dict(inst), import_roots=import_roots)
                 for inst in spec.instantiations]
    return build_model(spec, instances)


def check(model: Model, timeout: float, *, jobs: int = 1, cache=None, cluster=None,
          on_verdict: Callable[[int, Verdict, bool], None] | None = None) -> list[Verdict]:
    """Decide every obligation of the model; the list is in spec order whatever `jobs` is.

    `jobs > 1` decides on that many forked processes, `cluster` (a `parallel.Cluster`) on a
    Dask cluster; `cache` (a `cache.Cache`) answers unchanged obligations without deciding
    them. `on_verdict(index, verdict, cached)` is called as soon as each verdict exists.
    """
    from . import parallel

    verdicts: list[Verdict | None] = [None] * len(model.obligations)
    keys: dict[int, str] = {}

    def done(i: int, v: Verdict, cached: bool = False) -> None:
        verdicts[i] = v
        if cache is not None and not cached and v.engine != parallel.LOST:
            cache.put(keys[i], v)
        if on_verdict is not None:
            on_verdict(i, v, cached)

    todo = []
    if cache is not None:
        from .cache import Keys

        hashing = Keys(model, timeout)
        for i, ob in enumerate(model.obligations):
            keys[i] = hashing.key(ob)
            hit = cache.get(keys[i], ob)
            if hit is None:
                todo.append(i)
            else:
                done(i, hit, cached=True)
    else:
        todo = list(range(len(model.obligations)))
    todo = _cases_together(model, todo, timeout, done)
    parallel.decide_all(model, todo, timeout, done, jobs=jobs, cluster=cluster)
    return verdicts


def _cases_together(model: Model, todo: list[int], timeout: float, done) -> list[int]:
    """The cases of a claim with `or` / `not` decided as one query where the VNN-LIB 2.0
    engines take them (`poly_route.decide_cases`: the union of their violations); returns the
    obligations still to decide one by one."""
    groups: dict[str, list[int]] = {}
    for i in todo:
        name = model.obligations[i].case_of
        if name is not None and model.obligations[i].kind == "bound":
            groups.setdefault(name, []).append(i)
    decided: set[int] = set()
    for members in groups.values():
        if len(members) < 2:
            continue
        from .engines.poly_route import decide_cases

        got = decide_cases([model.obligations[i] for i in members], model.program, timeout)
        for i, v in zip(members, got or ()):
            if v is not None:
                done(i, v)
                decided.add(i)
    return [i for i in todo if i not in decided]


def exit_status(verdicts: list[Verdict]) -> int:
    """0 all proved, 1 something refuted, 3 nothing refuted but something unknown."""
    kinds = {v.verdict for v in verdicts}
    if "refuted" in kinds:
        return 1
    if "unknown" in kinds:
        return 3
    return 0


def artifacts(model: Model, verdicts: list[Verdict], targets: list[str]) -> dict[str, str]:
    """Render every requested artifact in memory (nothing is written yet)."""
    from .emit import render

    return render(model, verdicts, targets)  # the HTML report sees the other files


def check_output_dir(outdir: str) -> None:
    """Refuse, before any work, an output path that exists but is not a directory (a device,
    FIFO, socket, ordinary file, or a symbolic link to one or to nothing)."""
    check_writable_dir(outdir, "output directory", fix="give -o a new or an existing directory")


DEFAULT_MAX_ARTIFACT_BYTES = 256 << 20
MAX_ARTIFACT_VAR = "SNN_VERIFY_MAX_ARTIFACT_BYTES"


def max_artifact_bytes() -> int:
    """The largest artifact file written: $SNN_VERIFY_MAX_ARTIFACT_BYTES, else 256 MiB."""
    text = os.environ.get(MAX_ARTIFACT_VAR, "")
    if text.strip().isdigit() and int(text) > 0:
        return int(text)
    return DEFAULT_MAX_ARTIFACT_BYTES


def write_atomically(outdir: str, files: dict[str, str]) -> list[str]:
    """Write all files, each via a temporary file and rename, so none is half written.

    Nothing is written if the directory or any target is a device, fifo or socket (or a
    symbolic link to one) or a directory: that is a SpecError naming it.
    """
    check_output_dir(outdir)
    limit = max_artifact_bytes()
    for name in sorted(files):
        check_writable_target(os.path.join(outdir, name), "artifact")
        size = len(files[name].encode("utf-8", "surrogateescape"))
        if size > limit:  # before anything is written
            raise SpecError(f"too large: artifact {name} would be ~{size:,} bytes (limit "
                            f"{limit:,})", fix=f"emit fewer kinds (--emit), or raise the limit "
                            f"with {MAX_ARTIFACT_VAR}=BYTES")
    try:
        return _write_all(outdir, files)
    except OSError as err:
        raise SpecError(f"cannot write artifacts to {outdir}: {err.strerror or err}",
                        fix="check the directory's permissions and free space") from None


def _write_all(outdir: str, files: dict[str, str]) -> list[str]:
    os.makedirs(outdir, exist_ok=True)
    umask = os.umask(0)
    os.umask(umask)
    staged = []
    try:
        for name, text in sorted(files.items()):
            fd, tmp = tempfile.mkstemp(dir=outdir, prefix=".tmp-", suffix="-" + name)
            staged.append((tmp, os.path.join(outdir, name)))
            os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; artifacts are ordinary files
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
                fh.write(text)
    except BaseException:
        for tmp, _ in staged:
            os.unlink(tmp)
        raise
    for tmp, final in staged:
        os.replace(tmp, final)
    return [final for _, final in staged]
