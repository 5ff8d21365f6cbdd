"""AST → IR: imports, names, shapes, weight files and exact numerals.

Every mistake in a spec that is not a syntax error is reported here with its span.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from itertools import product as iproduct

import numpy as np
import sympy as sp

from .budget import Budget, ExprSizes, layer_terms
from .diagnostics import Span, SpecError
from .fileio import read_regular_file
from .ir import Network, Spec, TensorVar
from .layers import LAYER_RULES
from .syntax import ast
from .syntax.parser import MAX_SOURCE_BYTES, parse
from .weights import WeightFile, load_weight_file

MAX_ENTRIES = 250_000  # scalars per tensor (~200 MB of symbols); beyond this a symbolic spec is not useful
MAX_IMPORT_DEPTH = 32
ENTRIES_FIX = ("every entry becomes a symbol and its terms; verify a smaller network or input "
               "(a slice, a patch, a reduced model)")


IMPORT_PATH_VAR = "SNN_VERIFY_IMPORT_PATH"  # extra import folders, os.pathsep-separated
# the spec library shipped in a source checkout (specs/batch/wrong/*.snn import `../*.snn`)
BUNDLED_SPECS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "specs")


def read_spec(path: str, span: Span | None = None, what: str = "spec file") -> ast.SpecFile:
    """Read and parse a spec file of at most MAX_SOURCE_BYTES; a missing, unreadable or
    special file (device, FIFO, directory) is a SpecError."""
    try:
        raw = read_regular_file(path, MAX_SOURCE_BYTES, what, span)
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise SpecError(f"no such {what}: {path}", span) from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"{what} {path} is not UTF-8 text (byte {exc.start})", span) from None
    except OSError as exc:
        raise SpecError(f"cannot read {what} {path}: {exc.strerror or exc}", span) from None
    return parse(text, path)


def import_roots_from(explicit, root_spec: str) -> tuple[str, ...]:
    """The folders imports may read from: the root spec's folder, the `explicit` ones, those in
    $SNN_VERIFY_IMPORT_PATH, and the bundled spec library; all with symlinks resolved."""
    env = [d for d in os.environ.get(IMPORT_PATH_VAR, "").split(os.pathsep) if d]
    roots = [os.path.dirname(os.path.abspath(root_spec)), *(explicit or ()), *env]
    if os.path.isdir(BUNDLED_SPECS):
        roots.append(BUNDLED_SPECS)
    return tuple(dict.fromkeys(os.path.realpath(r) for r in roots))


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def exact(value: float, span: Span | None) -> sp.Rational:
    """A float from a weight file as the shortest decimal that round-trips to it."""
    if not np.isfinite(value):
        raise SpecError(f"weight file holds a non-finite value ({value})", span)
    f = Fraction(repr(float(value)))
    return sp.Rational(f.numerator, f.denominator)


class Elaborator:
    """Builds one `ir.Spec` from a root spec file and its imports."""

    def __init__(self, dims: dict[str, int] | None = None, import_roots=None) -> None:
        self.import_roots = tuple(import_roots or ())
        self._roots: tuple[str, ...] = ()
        self.bound_dims: dict[str, int] = dict(dims or {})
        self.dim_decls: list[ast.DimDecl] = []
        self.inputs: list[TensorVar] = []
        self.params: list[TensorVar] = []
        self.networks: list[Network] = []
        self.lets: list = []
        self.claims: list = []
        self.derives: list = []
        self.declared: dict[str, Span | None] = {}
        self.files: dict[str, dict] = {}
        self._loading: list[str] = []
        self._done: set[str] = set()
        self._dir = "."
        self._net_file: WeightFile | None = None
        self.budget = Budget()  # size estimate, checked before anything large is built
        self._net_terms: dict[str, int] = {}

    # ---- files and imports
    def run(self, path: str) -> Spec:
        self._roots = import_roots_from(self.import_roots, path)
        self._file(path, None, 0)
        self._charge_expressions()
        name = os.path.splitext(os.path.basename(path))[0]
        return Spec(name=name, path=path, inputs=tuple(self.inputs), params=tuple(self.params),
                    networks=tuple(self.networks), lets=tuple(self.lets),
                    claims=tuple(self.claims), derives=tuple(self.derives),
                    dims=tuple((n, self.bound_dims[n]) for d in self.dim_decls for n in d.names),
                    instantiations=self._instantiations())

    def _charge_expressions(self) -> None:
        """The size estimate of every let, claim and derivation (budget.ExprSizes)."""
        shapes = {t.name: t.shape for t in (*self.inputs, *self.params)}
        nets = {n.name: (n.out_shape, self._net_terms.get(n.name, 0)) for n in self.networks}
        sizes = ExprSizes(self.budget, shapes, nets)
        for name, expr in self.lets:
            sizes.let(name, expr)
        for c in self.claims:
            for comparison in (c.comparison, *c.where):
                sizes.top(comparison, f"claim `{c.name}`")
        for d in self.derives:
            sizes.derive(d)

    def _instantiations(self):
        """Size tuples to check: each `dim` declaration's list (rotations of distinct sizes by
        default, so no two dimensions are equal and transpositions cannot hide), zipped."""
        lists = []
        for d in self.dim_decls:
            if d.sizes:
                lists.append([tuple(zip(d.names, s)) for s in d.sizes])
            else:
                base = list(range(2, len(d.names) + 2))
                rots = [base[k:] + base[:k] for k in range(len(base))] if len(base) > 1 else \
                    [[2], [3]]
                lists.append([tuple(zip(d.names, r)) for r in rots])
        if not lists:
            return ()
        n = max(len(x) for x in lists)
        return tuple(tuple(sum((list(x[k % len(x)]) for x in lists), [])) for k in range(n))

    def _file(self, path: str, span: Span | None, depth: int) -> None:
        if "\x00" in path:
            raise SpecError("a file path cannot contain a NUL character", span)
        real = os.path.realpath(path)
        if real in self._loading:
            raise SpecError(f"import cycle through {path}", span)
        if real in self._done:
            return
        if depth > MAX_IMPORT_DEPTH:
            raise SpecError("imports nested too deeply", span)
        if span is not None:
            self._check_import(path, real, span)
        spec = read_spec(path, span, "spec file" if span is None else "imported file")
        self._loading.append(real)
        saved = self._dir
        self._dir = os.path.dirname(path) or "."
        for item in spec.items:
            self._item(item, depth)
        self._dir = saved
        self._loading.pop()
        self._done.add(real)

    def _check_import(self, path: str, real: str, span: Span) -> None:
        if not os.path.lexists(path):
            raise SpecError(f"imported file not found: {path}", span,
                            fix="import paths are relative to the importing spec")
        if not any(_inside(real, root) for root in self._roots):
            raise SpecError(f"import of {path} reaches outside the spec's folder", span,
                            fix=f"import files under the folder of the spec being checked, or "
                                f"allow another folder (--allow-import DIR, or "
                                f"{IMPORT_PATH_VAR}=DIR)")

    def _item(self, item, depth: int) -> None:
        if isinstance(item, ast.Import):
            self._file(os.path.join(self._dir, item.path), item.span, depth + 1)
        elif isinstance(item, ast.DimDecl):
            self._dims(item)
        elif isinstance(item, ast.InputDecl):
            self._declare(item.name, item.span)
            self.inputs.append(self._input(item))
        elif isinstance(item, ast.ParamDecl):
            self._declare(item.name, item.span)
            self.params.append(self._param(item))
        elif isinstance(item, ast.NetworkDecl):
            self._declare(item.name, item.span)
            self.networks.append(self._network(item))
        elif isinstance(item, ast.LetDecl):
            self._declare(item.name, item.span)
            self.lets.append((item.name, item.expr))
        elif isinstance(item, ast.ClaimDecl):
            self._declare("claim " + item.name, item.span, what=f"claim `{item.name}`")
            self.claims.append(item)
        elif isinstance(item, ast.DeriveDecl):
            self.derives.append(item)

    def _declare(self, name: str, span: Span | None, what: str | None = None) -> None:
        if name == "d":
            raise SpecError("`d` is reserved for derivatives, d(f)/d(x)", span,
                            fix="choose another name")
        if name in self.declared:
            prev = self.declared[name]
            where = f" (first declared at {prev.path}:{prev.line})" if prev else ""
            raise SpecError(f"{what or f'`{name}`'} is declared twice{where}", span,
                            fix="rename one of them")
        self.declared[name] = span

    def _dims(self, d: ast.DimDecl) -> None:
        for name in d.names:
            self._declare(name, d.span)
        for sizes in d.sizes:
            if len(sizes) != len(d.names):
                raise SpecError(f"size tuple {sizes} has {len(sizes)} entries for "
                                f"{len(d.names)} dimensions", d.span)
            if any(n <= 0 or n > 64 for n in sizes):
                raise SpecError("symbolic sizes are instantiated between 1 and 64", d.span)
        self.dim_decls.append(d)
        first = d.sizes[0] if d.sizes else tuple(range(2, len(d.names) + 2))
        for name, n in zip(d.names, first):
            self.bound_dims.setdefault(name, n)

    def dim_value(self, name: str, span) -> int:
        if name not in self.bound_dims:
            raise SpecError(f"unknown size `{name}`", span, fix=f"declare it: dim {name}")
        return self.bound_dims[name]

    # ---- constants
    def constant(self, node) -> np.ndarray:
        """Evaluate a constant expression (numbers, lists, arithmetic) to exact Rationals."""
        from .symbolic.translate import Translator

        value = Translator.constants_only(self.bound_dims).value(node)
        for v in value.flat:
            if not sp.sympify(v).is_Rational:
                raise SpecError("expected a number here", node.span,
                                fix="domains, ranges and inline weights must be constants")
        return value

    def scalar_constant(self, node) -> sp.Rational:
        v = self.constant(node)
        if v.shape != ():
            raise SpecError(f"expected a single number, got shape {list(v.shape)}", node.span)
        return sp.Rational(v[()])

    def positive_int(self, arg, what: str) -> int:
        v = self.scalar_constant(arg.value)
        if not v.is_Integer or v <= 0:
            raise SpecError(f"{what} must be a positive integer, got {v}", arg.value.span)
        if v > MAX_ENTRIES:
            raise SpecError(f"{what} {v} is too large (at most {MAX_ENTRIES})", arg.value.span)
        return int(v)

    def boolean(self, arg) -> bool:
        node = arg.value
        if isinstance(node, ast.Ref) and node.name in ("true", "false"):
            return node.name == "true"
        raise SpecError("expected true or false", node.span)

    # ---- inputs and params
    def _check_shape(self, shape: ast.Shape) -> tuple[int, ...]:
        dims = tuple(d if isinstance(d, int) else self.dim_value(d, shape.span)
                     for d in shape.dims)
        if len(dims) > 2:
            raise SpecError("tensors have at most two dimensions", shape.span)
        total = math.prod(dims)
        if any(d <= 0 for d in dims) or total > MAX_ENTRIES:
            raise SpecError(f"shape {list(dims)} must have positive sizes and at most "
                            f"{MAX_ENTRIES} entries", shape.span,
                            fix=ENTRIES_FIX if total > MAX_ENTRIES else None)
        self.budget.charge(total, shape.span, f"a tensor of shape {list(dims)}")
        return dims

    @staticmethod
    def symbols(name: str, dims: tuple[int, ...]) -> tuple[sp.Symbol, ...]:
        if not dims:
            return (sp.Symbol(name, real=True),)
        return tuple(sp.Symbol(f"{name}[{','.join(map(str, idx))}]", real=True)
                     for idx in iproduct(*(range(d) for d in dims)))

    def _bounds(self, dims, lo_node, hi_node, span, kind="interval"):
        lo, hi = self.constant(lo_node), self.constant(hi_node)
        if kind == "ball":
            center, radius = lo, hi
            if radius.shape != ():
                raise SpecError("the radius of a ball is a single number", hi_node.span)
            if radius[()] < 0:
                raise SpecError("the radius of a ball must be nonnegative", hi_node.span)
            lo, hi = center - radius[()], center + radius[()]
        full = []
        for v, node in ((lo, lo_node), (hi, hi_node if kind != "ball" else lo_node)):
            if v.shape == ():
                v = np.full(dims, v[()], dtype=object)
            if v.shape != tuple(dims):
                raise SpecError(f"bound has shape {list(v.shape)}, the input has {list(dims)}",
                                node.span)
            full.append(tuple(sp.Rational(e) for e in v.flat))
        for a, b in zip(*full):
            if a > b:
                raise SpecError(f"empty range: lower bound {a} exceeds upper bound {b}", span)
        return full[0], full[1]

    def _input(self, d: ast.InputDecl) -> TensorVar:
        dims = self._check_shape(d.shape)
        lo = hi = None
        if d.domain is not None:
            lo, hi = self._bounds(dims, d.domain.first, d.domain.second, d.domain.span,
                                  d.domain.kind)
        return TensorVar(name=d.name, role="input", shape=dims, entries=self.symbols(d.name, dims),
                         lo=lo, hi=hi, span=d.span)

    def _param(self, d: ast.ParamDecl) -> TensorVar:
        dims = self._check_shape(d.shape)
        if d.value is not None:
            v = self.constant(d.value)
            if v.shape == ():
                v = np.full(dims, v[()], dtype=object)
            if v.shape != tuple(dims):
                raise SpecError(f"value has shape {list(v.shape)}, declared {list(dims)}",
                                d.value.span)
            return TensorVar(name=d.name, role="param", shape=dims,
                             entries=tuple(sp.Rational(e) for e in v.flat), span=d.span)
        lo = hi = None
        if d.lo is not None:
            lo, hi = self._bounds(dims, d.lo, d.hi, d.span)
        return TensorVar(name=d.name, role="param", shape=dims,
                         entries=self.symbols(d.name, dims), lo=lo, hi=hi, span=d.span)

    # ---- networks
    def _network(self, d: ast.NetworkDecl) -> Network:
        size = math.prod(d.in_shape)
        if len(d.in_shape) > 2 or min(d.in_shape) <= 0 or size > MAX_ENTRIES:
            raise SpecError(f"input shape {list(d.in_shape)} must have one or two positive sizes "
                            f"and at most {MAX_ENTRIES} entries", d.span,
                            fix=ENTRIES_FIX if size > MAX_ENTRIES else None)
        if d.load is not None and d.load.endswith((".onnx", ".onnx.gz")):
            from .onnx_import import network_from_onnx

            if d.layers:
                raise SpecError("a network loaded from ONNX takes its layers from the file",
                                d.layers[0].span, fix="leave the braces empty: { }")
            net, weights = network_from_onnx(os.path.join(self._dir, d.load), d.name,
                                             d.load_span, in_shape=tuple(d.in_shape),
                                             budget=self.budget)
            self._charge_network(net, {w.name: len(w.entries) for w in weights}, d.load_span)
            self.params.extend(weights)
            return net
        if not d.layers:
            raise SpecError(f"network `{d.name}` has no layers", d.span)
        self._net_file = None
        if d.load is not None:
            path = os.path.join(self._dir, d.load)
            self._net_file = WeightFile(path, load_weight_file(path, d.load_span), d.load_span)
        shape: tuple[int, ...] = tuple(d.in_shape)
        layers = []
        for k, decl in enumerate(d.layers, start=1):
            rule = LAYER_RULES.get(decl.kind)
            if rule is None:
                raise SpecError(f"unknown layer `{decl.kind}`", decl.span,
                                fix="one of: " + ", ".join(sorted(LAYER_RULES)))
            layer, weights = rule.elaborate(self, decl, d.name, k, shape)
            self.params.extend(weights)
            layers.append(layer)
            shape = layer.out_shape
        self._check_unused_keys(d)
        net = Network(name=d.name, in_shape=tuple(d.in_shape), out_shape=shape,
                      layers=tuple(layers), span=d.span)
        self._charge_network(net, {p.name: len(p.entries) for p in self.params}, d.span)
        return net

    def _charge_network(self, net: Network, sizes: dict[str, int], span) -> None:
        """One forward pass of `net` in the size estimate, layer by layer."""
        total = 0
        for layer in net.layers:
            terms = layer_terms(layer, sum(sizes.get(p, 0) for p in layer.params))
            self.budget.charge(terms, layer.span or span, f"the forward pass of network "
                               f"`{net.name}` reaches {layer.kind} layer {layer.index}")
            total += terms
        self._net_terms[net.name] = total

    def _check_unused_keys(self, d: ast.NetworkDecl) -> None:
        if self._net_file is None:
            return
        wf = self._net_file
        unused = sorted(set(wf.data) - wf.used)
        if unused:
            raise SpecError(f"weight file {wf.name} has arrays no layer uses: "
                            f"{', '.join(unused)}", wf.span,
                            fix="check that the layers match the trained network")

    def layer_args(self, decl: ast.LayerDecl, positional: tuple[str, ...], allowed: set[str]):
        """Map positional and keyword layer arguments to names, rejecting unknown ones."""
        out: dict[str, ast.LayerArg] = {}
        pos = 0
        for arg in decl.args:
            name = arg.name
            if name is None:
                if pos >= len(positional):
                    raise SpecError(f"too many positional arguments for {decl.kind}", arg.span,
                                    fix="name the argument, e.g. W=[[...]]")
                name = positional[pos]
                pos += 1
            if name not in allowed:
                raise SpecError(f"{decl.kind} has no option `{name}`", arg.span,
                                fix="options: " + ", ".join(sorted(allowed)))
            if name in out:
                raise SpecError(f"option `{name}` given twice", arg.span)
            out[name] = arg
        return out

    def weight(self, decl, net: str, short: str, shape: tuple[int, ...], arg, index: int,
               torch_kind: str, file_keys: tuple[str, ...] = ()) -> TensorVar:
        """A layer's weight tensor: inline, ranged, from the network's file, or symbolic.

        In a weight file the array is found by `short` (e.g. `W1`), then by any of
        `file_keys` (exact names such as PyTorch's `lstm.weight_ih_l0`), then as the
        `<torch_kind>` attribute of a module that the file's names or shapes determine
        (`weights.WeightFile.match`); an ambiguous file is an error, never a guess.
        """
        name = f"{net}.{short}"
        if math.prod(shape) > MAX_ENTRIES:
            raise SpecError(f"{short} would have {math.prod(shape)} entries (at most "
                            f"{MAX_ENTRIES})", decl.span, fix=ENTRIES_FIX)
        self.budget.charge(math.prod(shape), decl.span, f"weight {name} of shape {list(shape)}")
        symbols = self.symbols(name, shape)
        if arg is not None and arg.value is not None:
            v = self.constant(arg.value)
            if v.shape != shape:
                raise SpecError(f"{short} has shape {list(v.shape)}, expected {list(shape)}",
                                arg.value.span, fix=f"weights are [out, in] = {list(shape)}")
            return TensorVar(name=name, role="param", shape=shape,
                             entries=tuple(sp.Rational(e) for e in v.flat), span=arg.span)
        if arg is not None:
            lo, hi = self._bounds(shape, arg.lo, arg.hi, arg.span)
            return TensorVar(name=name, role="param", shape=shape, entries=symbols, lo=lo, hi=hi,
                             span=arg.span)
        if self._net_file is not None:
            return self._weight_from_file(name, short, shape, index, torch_kind, decl, file_keys)
        return TensorVar(name=name, role="param", shape=shape, entries=symbols, span=decl.span)

    def _weight_from_file(self, name, short, shape, index, torch_kind, decl,
                          file_keys=()) -> TensorVar:
        wf = self._net_file
        key = wf.find((short, *file_keys)) or wf.match(torch_kind, shape, index, short, decl)
        arr = wf.take(key, index)
        if arr.dtype.kind not in "fiub":
            raise SpecError(f"array `{key}` in {wf.name} is not numeric", wf.span)
        if tuple(arr.shape) != shape:
            raise SpecError(f"array `{key}` in {wf.name} has shape "
                            f"{list(arr.shape)}, layer {index} needs {list(shape)}", decl.span,
                            fix="weights are [out, in], as in torch.nn.Linear")
        entries = tuple(exact(v, wf.span) for v in arr.astype(float).flat)
        return TensorVar(name=name, role="param", shape=shape, entries=entries, span=decl.span)


def elaborate(path: str, dims: dict[str, int] | None = None, import_roots=None) -> Spec:
    """Read the spec at `path` with its imports and check everything but expressions.

    `dims` binds symbolic sizes; unbound ones take their first instantiation. Imports must be
    regular files under the spec's folder or one of `import_roots` (see `import_roots_from`).
    """
    return Elaborator(dims, import_roots).run(path)
