"""A result cache for verdicts, so that an unchanged re-run of `verify` is nearly instant.

An entry is keyed by a SHA-256 over what the engine reads and how it was asked:

- the obligation (name, kind, claim text, and `verifier.digest.obligation`: the exact digest
  of every goal and hypothesis atom, of every program definition they depend on and of the
  variables with their ranges), so the weights and the spec text that produced the terms are
  in the key through the terms themselves (editing a comment or another claim of the spec
  keeps the entry valid);
- the engine version: the package version, a digest of the package's source files and
  `CACHE_FORMAT`;
- the options that can change a verdict (the per-obligation timeout).

Entries live in `$SNN_VERIFY_CACHE`, else `$XDG_CACHE_HOME/snn-verify`, else
`~/.cache/snn-verify`, one JSON file each, written via a temporary file and rename. An entry
that does not parse or has the wrong shape is ignored (and decided again), never trusted.
Under pytest (`PYTEST_CURRENT_TEST` set) the cache is off unless `SNN_VERIFY_CACHE` names a
folder, so tests never touch the user's cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from importlib import metadata

from .engines.verdict import PROVED, REFUTED, UNKNOWN, Verdict
from .obligations import Model, Obligation

CACHE_FORMAT = 1  # bump when the entry layout or the meaning of a key changes
ENV_DIR = "SNN_VERIFY_CACHE"


def package_version() -> str:
    """The installed package's version (what `verify --version` prints)."""
    try:
        return metadata.version("snn-verify")
    except metadata.PackageNotFoundError:  # a source tree that is not installed
        return "0+unknown"


def engine_version() -> str:
    """The package version and a digest of its source: an edited engine (an editable install,
    a patched file) never reads the verdicts of the code before it."""
    global _VERSION
    if _VERSION is None:
        version = package_version()
        h = hashlib.sha256()
        root = os.path.dirname(os.path.abspath(__file__))
        for folder, dirs, files in sorted(os.walk(root)):
            dirs.sort()
            for name in sorted(files):
                if name.endswith((".py", ".lark")):
                    path = os.path.join(folder, name)
                    h.update(os.path.relpath(path, root).encode() + b"\0")
                    with open(path, "rb") as fh:
                        h.update(fh.read())
        _VERSION = f"{version}+{h.hexdigest()[:16]}"
    return _VERSION


_VERSION: str | None = None


def default_dir() -> str | None:
    """The cache folder, or None when caching is off by default (under pytest)."""
    explicit = os.environ.get(ENV_DIR)
    if explicit:
        return explicit
    if os.environ.get("PYTEST_CURRENT_TEST"):
        return None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "snn-verify")


class Keys:
    """Cache keys of one model's obligations; subexpression and definition digests are shared
    between them (`verifier.digest`)."""

    def __init__(self, model: Model, timeout: float) -> None:
        from .digest import Hasher

        self.hasher = Hasher(model.program)
        self.prefix = json.dumps({"format": CACHE_FORMAT, "version": engine_version(),
                                  "timeout": repr(float(timeout))}, sort_keys=True)

    def key(self, ob: Obligation) -> str:
        h = hashlib.sha256(self.prefix.encode())
        for part in (ob.name, ob.kind, ob.text, str(ob.shape_mismatch)):
            h.update(part.encode() + b"\0")
        h.update(self.hasher.obligation(ob).encode())
        return h.hexdigest()


_FIELDS = {  # Verdict field -> accepted JSON types
    "name": (str,), "kind": (str,), "verdict": (str,), "engine": (str,),
    "seconds": (int, float), "counterexample": (dict, type(None)),
    "violation": (dict, type(None)), "reason": (str, type(None)),
    "artifact": (str, type(None)), "smt": (str, type(None)),
    "smt_answer": (str, type(None)), "details": (dict,),
}


def _plain(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, (tuple, set, frozenset)):
        return list(value)
    raise TypeError(f"not JSON data: {type(value).__name__}")


class Cache:
    """Verdicts on disk under `folder`; every failure to read or write is a miss, not an error."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def _path(self, key: str) -> str:
        return os.path.join(self.folder, key[:2], key + ".json")

    def get(self, key: str, ob: Obligation) -> Verdict | None:
        try:
            with open(self._path(key), encoding="utf-8") as fh:
                entry = json.load(fh)
        except (OSError, ValueError):
            return None
        return _verdict_from(entry, key, ob)

    def put(self, key: str, v: Verdict) -> None:
        fields = {f: getattr(v, f) for f in _FIELDS}
        try:
            text = json.dumps({"format": CACHE_FORMAT, "key": key, "verdict": fields},
                              sort_keys=True, default=_plain)
        except (TypeError, ValueError):
            return  # a verdict with data JSON cannot hold is simply not cached
        path = self._path(key)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only or full disk only costs the speed-up


def _verdict_from(entry, key: str, ob: Obligation) -> Verdict | None:
    """The cached verdict if the entry has exactly the expected shape, else None."""
    if not isinstance(entry, dict) or entry.get("format") != CACHE_FORMAT \
            or entry.get("key") != key:
        return None
    fields = entry.get("verdict")
    if not isinstance(fields, dict) or set(fields) != set(_FIELDS):
        return None
    for name, types in _FIELDS.items():
        value = fields[name]
        if not isinstance(value, types) or isinstance(value, bool) and bool not in types:
            return None
    if fields["verdict"] not in (PROVED, REFUTED, UNKNOWN):
        return None
    if (fields["name"], fields["kind"]) != (ob.name, ob.kind):
        return None
    for d in ("counterexample", "violation", "details"):
        if fields[d] is not None and not all(isinstance(k, str) for k in fields[d]):
            return None
    cex = fields["counterexample"]
    if cex is not None and not all(isinstance(x, (str, int, float)) for x in cex.values()):
        return None
    if fields["verdict"] == REFUTED and not fields["counterexample"] and not fields["reason"]:
        return None  # a refutation always carries its counterexample (or the shape reason)
    if fields["seconds"] < 0:
        return None
    return Verdict(**fields)
