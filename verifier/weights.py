"""Weight files (`.npz`, `.json`, PyTorch `.pt` state_dicts) and matching their arrays to layers.

A layer asks for each tensor by an explicit name (`W1`, `lstm.weight_ih_l0`, ...) or, failing
that, by a PyTorch attribute (`weight`, `bias`, `weight_ih_l0`, ...) of some module of the file.
Key order in a file is not the order a module applies its layers (a module may register `out`
before `hidden`), so a module is chosen by what the file itself determines:

- numeric path components fix the order (`nn.Sequential`: `0.weight` before `2.weight`;
  `layers.1.*` before `layers.10.*`): only the first unused module in that order is eligible;
- otherwise the shape decides: exactly one eligible module whose array has the layer's shape;
- several eligible modules of the right shape is an error asking for explicit names.

The bias (`bias`, `bias_ih_l0`, `b`, ...) of a layer comes from the module its weight came from.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import warnings
import zipfile
from collections.abc import Mapping

import numpy as np
import numpy.lib.format as npformat

from .diagnostics import Span, SpecError
from .fileio import MAX_WEIGHT_BYTES, read_regular_file

STATE_DICT_FIX = ("save `model.state_dict()` itself: `torch.save(model.state_dict(), PATH)`")
MAX_ARRAY_ENTRIES = 1_000_000  # per array, as for any tensor of a spec (elaborate.MAX_ENTRIES)
MAX_JSON_BYTES = 32 * 2**20  # parsed JSON takes ~30 bytes of memory per byte of text


def load_weight_file(path: str, span: Span | None) -> dict[str, np.ndarray]:
    """Named arrays of a weight file; anything else (missing, special, corrupt, a pickle that
    is not a state_dict) is a SpecError at `span`."""
    base = os.path.basename(path)
    if not path.endswith((".npz", ".json", ".pt", ".pth")):
        raise SpecError(f"unsupported weight file type: {path}", span,
                        fix="use .npz, .json or a PyTorch state_dict .pt")
    try:
        raw = read_regular_file(path, MAX_WEIGHT_BYTES, "weight file", span)
    except FileNotFoundError:
        raise SpecError(f"weight file not found: {path}", span,
                        fix="paths are relative to the spec file") from None
    except OSError as exc:
        raise SpecError(f"cannot read weight file {path}: {exc.strerror}", span) from None
    try:
        if path.endswith(".npz"):
            return _npz(raw, base, span)
        if path.endswith(".json"):
            if len(raw) > MAX_JSON_BYTES:
                raise SpecError(f"weight file {base} is larger than {MAX_JSON_BYTES} bytes",
                                span, fix="save large weights as .npz")
            parsed = json.loads(raw.decode("utf-8"))
            if not isinstance(parsed, dict):
                raise ValueError("top level must be an object of named arrays")
            return _checked({str(k): np.asarray(v, dtype=float) for k, v in parsed.items()},
                            base, span)
        return _checked(_state_dict(raw, base, span), base, span)
    except SpecError:
        raise
    except RecursionError:
        raise SpecError(f"weight file {base} nests its arrays too deeply", span,
                        fix="weights are vectors and matrices: at most two levels of lists")
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, TypeError, KeyError,
            RuntimeError, pickle.UnpicklingError, UnicodeDecodeError, AttributeError,
            IndexError, OverflowError, MemoryError) as exc:
        raise SpecError(f"corrupt weight file {path}: {_first_line(exc)}", span) from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _checked(arrays: dict[str, np.ndarray], base: str, span) -> dict[str, np.ndarray]:
    for key, arr in arrays.items():
        if arr.size > MAX_ARRAY_ENTRIES:
            raise SpecError(f"array `{key}` of weight file {base} has {arr.size} entries "
                            f"(at most {MAX_ARRAY_ENTRIES})", span)
    return arrays


def _zip_entries(raw: bytes, base: str, span) -> zipfile.ZipFile:
    """The archive, refused when its entries unpack to more than MAX_WEIGHT_BYTES."""
    archive = zipfile.ZipFile(io.BytesIO(raw))
    total = sum(info.file_size for info in archive.infolist())
    if total > MAX_WEIGHT_BYTES:
        raise SpecError(f"weight file {base} unpacks to {total} bytes (at most "
                        f"{MAX_WEIGHT_BYTES})", span,
                        fix="check the file; weights a symbolic spec can use are far smaller")
    return archive


def _npz(raw: bytes, base: str, span) -> dict[str, np.ndarray]:
    """The arrays of an .npz, each header checked before its data is allocated."""
    if not zipfile.is_zipfile(io.BytesIO(raw)):
        raise ValueError("not an .npz archive")
    out = {}
    with _zip_entries(raw, base, span) as archive:
        for info in archive.infolist():
            key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            with archive.open(info) as fh:
                version = npformat.read_magic(fh)
                read_header = (npformat.read_array_header_1_0 if version == (1, 0)
                               else npformat.read_array_header_2_0)
                shape, _, dtype = read_header(fh, max_header_size=10_000)
                count = 1
                for n in shape:
                    count *= n
                if count > MAX_ARRAY_ENTRIES:
                    raise SpecError(f"array `{key}` of weight file {base} declares shape "
                                    f"{list(shape)} ({count} entries, at most "
                                    f"{MAX_ARRAY_ENTRIES})", span)
                if dtype.hasobject:
                    raise ValueError(f"array `{key}` holds Python objects")
            with archive.open(info) as fh:
                out[key] = npformat.read_array(fh, allow_pickle=False)
    return out


def _state_dict(raw: bytes, base: str, span: Span | None) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise SpecError("loading .pt files needs PyTorch installed", span) from None
    if zipfile.is_zipfile(io.BytesIO(raw)):
        _zip_entries(raw, base, span).close()
    # weights_only: the unpickler builds tensors and containers only, never runs code
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols on stderr
            state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        found = next((line.strip() for line in text.splitlines()
                      if "Unsupported" in line or "GLOBAL" in line), None)
        if "Weights only load failed" not in text or found is None:
            raise
        what = ("is a pickle not written by torch.save" if "operand" in found
                else "holds pickled objects besides tensors")
        raise SpecError(f"weight file {base} {what} ({found[:200]}); it is not loaded, since "
                        "unpickling it could run code", span, fix=STATE_DICT_FIX) from None
    if not isinstance(state, Mapping):
        raise SpecError(f"weight file {base} holds {_what(state)}, not a state_dict (a "
                        f"mapping of names to tensors)", span, fix=STATE_DICT_FIX)
    out = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise SpecError(f"weight file {base} has a key {_what(key)}, not a name", span,
                            fix=STATE_DICT_FIX)
        if not isinstance(value, torch.Tensor):
            raise SpecError(f"entry `{key}` of weight file {base} is {_what(value)}, not a "
                            f"tensor", span, fix=STATE_DICT_FIX)
        if value.is_complex() or value.is_sparse or value.is_quantized:
            raise SpecError(f"tensor `{key}` of weight file {base} is not a dense real tensor",
                            span)
        # bool tensors stay bool: a boolean attention mask is not an additive one
        out[key] = value.detach().numpy() if value.dtype == torch.bool else \
            value.detach().double().numpy()
    return out


def _what(value) -> str:
    name = type(value).__name__
    return f"an {name}" if name[:1].lower() in "aeiou" else f"a {name}"


def _follows_weight(attr: str) -> bool:
    """A bias-like attribute belongs to the module the layer's weight came from."""
    last = attr.rsplit(".", 1)[-1]
    return last == "b" or last.startswith("bias")


def _path(prefix: str) -> list[str]:
    return prefix.split(".") if prefix else []


def _precedes(p: str, q: str) -> bool:
    """The file's names say module `p` applies before `q`: they first differ in a numeric
    component (`0` < `2`, `layers.1` < `layers.10`)."""
    a, b = _path(p), _path(q)
    for x, y in zip(a, b):
        if x != y:
            return x.isdigit() and y.isdigit() and int(x) < int(y)
    return False


class WeightFile:
    """The arrays of one network's `load` file, and which of them each layer has taken."""

    def __init__(self, path: str, data: dict[str, np.ndarray], span: Span | None):
        self.path, self.data, self.span = path, data, span
        self.name = os.path.basename(path)
        self.used: set[str] = set()
        self._module: dict[int, str] = {}  # layer index -> module its last weight came from
        self._owner: dict[str, int] = {}  # module prefix -> layer index that took it

    def find(self, keys: tuple[str, ...]) -> str | None:
        """The first of the explicit names present in the file."""
        return next((k for k in keys if k in self.data), None)

    def take(self, key: str, index: int) -> np.ndarray:
        self.used.add(key)
        return np.asarray(self.data[key])

    def match(self, attr: str, shape: tuple[int, ...], index: int, short: str, decl) -> str:
        """The key holding layer `index`'s PyTorch attribute `attr` (see the module docstring)."""
        current = self._module.get(index)
        if current is not None:
            key = f"{current}.{attr}" if current else attr
            if key in self.data and key not in self.used:
                return key
            if _follows_weight(attr):
                raise SpecError(f"weight file {self.name}: module `{current or '(top)'}` that "
                                f"layer {index} takes its weight from has no `{attr}`",
                                decl.span, fix="if the layer has no bias, write bias=false")
        modules = self._candidates(attr, index)
        if not modules:
            raise SpecError(f"weight file {self.name} has no array for {short}", self.span,
                            fix="available arrays: " + ", ".join(sorted(self.data)))
        eligible = [m for m in modules if not any(_precedes(p, m) for p in modules if p != m)]
        fitting = [m for m in eligible if tuple(np.shape(self.data[self._key(m, attr)])) == shape]
        if len(fitting) == 1:
            self._module[index] = fitting[0]
            self._owner[fitting[0]] = index
            return self._key(fitting[0], attr)
        if not fitting:
            if len(eligible) == 1:  # the caller reports the shape mismatch of the one array
                return self._key(eligible[0], attr)
            shapes = ", ".join(f"{k} {list(np.shape(self.data[k]))}"
                               for k in (self._key(m, attr) for m in eligible))
            raise SpecError(f"weight file {self.name} has no `{attr}` array of shape "
                            f"{list(shape)} for layer {index}", decl.span,
                            fix=f"arrays that could come next: {shapes}")
        keys = [f"`{self._key(m, attr)}`" for m in fitting]
        names = ", ".join(keys[:-1]) + " and " + keys[-1]
        raise SpecError(f"weight file {self.name} does not determine which array is layer "
                        f"{index}'s {attr}: {names} {'both' if len(keys) == 2 else 'all'} have shape "
                        f"{list(shape)}, and the names "
                        f"do not fix the order in which the module applies them", decl.span,
                        fix=f"name the arrays by layer: save an .npz with key `{short}` for this "
                            f"one (dense layers: W1, b1, W2, b2, ...), or save an nn.Sequential, "
                            f"whose keys 0.weight, 1.weight, ... give the order")

    @staticmethod
    def _key(module: str, attr: str) -> str:
        return f"{module}.{attr}" if module else attr

    def _candidates(self, attr: str, index: int) -> list[str]:
        """Module prefixes with an unused `attr` array that no other layer has taken."""
        out = []
        for key in self.data:
            if key in self.used:
                continue
            if key == attr:
                module = ""
            elif key.endswith("." + attr):
                module = key[: -len(attr) - 1]
            else:
                continue
            if self._owner.get(module, index) == index:
                out.append(module)
        return out
