"""The pipeline as functions: spec file → model → verdicts → artifacts on disk."""

from __future__ import annotations

import os
import tempfile

from .elaborate import elaborate
from .engines import decide
from .engines.verdict import Verdict
from .obligations import Model, build_model


def load(path: str) -> Model:
    """Parse, elaborate and translate a spec (raises SpecError for any user mistake).

    A spec with symbolic sizes (`dim`) is elaborated once per size tuple.
    """
    spec = elaborate(path)
    if len(spec.instantiations) <= 1:
        return build_model(spec)
    instances = [spec if dict(inst) == dict(spec.dims) else elaborate(path, dict(inst))
                 for inst in spec.instantiations]
    return build_model(spec, instances)


def check(model: Model, timeout: float) -> list[Verdict]:
    """Decide every obligation of the model, in spec order."""
    return [decide(ob, model.program, timeout) for ob in model.obligations]


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


def write_atomically(outdir: str, files: dict[str, str]) -> list[str]:
    """Write all files, each via a temporary file and rename, so none is half written."""
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
