"""ONNX networks → a chain of exact affine maps and elementwise activations.

`load_onnx(path)` reads a `.onnx` or `.onnx.gz` file and returns an `OnnxNet`: a list of
`Affine` layers (weights as exact `Fraction`s: every float in the file is a dyadic rational,
and consecutive affine operators are composed exactly) and `Act` layers (relu, leaky_relu,
sigmoid, tanh, softmax). The batch dimension is fixed to 1; input and output tensors are
flattened in row-major order, which is how VNN-LIB numbers `X_i` and `Y_j`.

Supported operators: Gemm, MatMul, Add, Sub, Mul, Div (by constants), Neg, Relu, LeakyRelu,
Sigmoid, Tanh, Softmax, BatchNormalization (inference), Flatten, Reshape, Identity, Dropout
(inference), Constant, Transpose, Squeeze, Unsqueeze, Slice, Pad (constant), Concat, Conv and
MaxPool (lowered exactly to affine maps and relu blocks, `onnx_ops`), Sin, Cos, Sign and Pow
with a constant integer exponent (elementwise activations whose rules are in `onnx_ops`), and
Cast/Shape/Gather on constants. Anything else is a `SpecError` naming the operator, the node
and its index.

Conventions, stated: BatchNormalization's factor `scale / sqrt(var + eps)` is irrational in
general; it is taken to 128 bits (relative error below 1e-38). Constant-only subgraphs are
evaluated by numpy in their own dtype, as onnxruntime does.
"""

from __future__ import annotations

import gzip
import io
import math
import os
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from .diagnostics import Span, SpecError
from .onnx_ops import ENGINE_LESS
from .onnx_ops import apply_exact as apply_exact_op
from .onnx_ops import apply_float as apply_float_op
from .onnx_ops import bounds as op_bounds


class _Lazy:
    """A module imported on first use: ReLU networks never need mpmath (smooth ones do)."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr):
        import importlib

        module = importlib.import_module(self._name)
        globals()[self._name] = module
        return getattr(module, attr)


mpmath = _Lazy("mpmath")

ACTIVATION_OPS = {"Relu": "relu", "LeakyRelu": "leaky_relu", "Sigmoid": "sigmoid",
                  "Tanh": "tanh", "Softmax": "softmax"}


@dataclass(frozen=True)
class Affine:
    """y = W x + b with exact rational weights (object arrays of Fraction)."""

    W: np.ndarray  # (out, in)
    b: np.ndarray  # (out,)

    @property
    def shape(self):
        return self.W.shape


@dataclass(frozen=True)
class Act:
    """An elementwise activation (softmax: over the whole vector)."""

    kind: str  # relu | leaky_relu | sigmoid | tanh | softmax | sin | cos | sign | pow
    alpha: Fraction | None = None  # leaky_relu's slope for x < 0
    param: int | None = None  # pow's exponent


@dataclass(frozen=True)
class Block:
    """One value of the graph: h = act(sum_s W_s h_s + b) over earlier values h_s.

    Source 0 is the network input, source k the output of block k (1-based); `act` None is an
    affine map (only the last block, the network output, has none). `node` names the ONNX node
    that made the block, for error messages.
    """

    terms: tuple[tuple[int, np.ndarray], ...]  # (source, W_s of shape (size, size of source))
    b: np.ndarray  # (size,)
    act: Act | None
    node: str = ""

    @property
    def size(self) -> int:
        return len(self.b)

    def sources(self) -> tuple[int, ...]:
        return tuple(s for s, _ in self.terms)


@dataclass
class OnnxNet:
    """An imported network: a DAG of blocks (see `Block`); the last block is the output.

    A plain chain (each block reads only the one before it) is also available as alternating
    `layers`; every other graph (skip connections, branches, dead nodes) keeps its own
    representation per value and is lowered to a chain only for a given input box (`chain`).
    """

    path: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    input_name: str
    output_name: str
    blocks: list[Block]

    @classmethod
    def from_layers(cls, layers: list, **kw) -> OnnxNet:
        """A chain network from alternating `Affine` / `Act` layers (consecutive affine maps
        are composed, consecutive activations get an identity map between them)."""
        n = int(np.prod(kw["in_shape"]))
        blocks: list[Block] = []
        pending: Affine | None = None
        size = n
        for layer in layers:
            if isinstance(layer, Affine):
                pending = layer if pending is None else compose(pending, layer)
                size = layer.W.shape[0]
            else:
                aff = pending or identity_affine(size)
                blocks.append(Block(terms=((len(blocks), aff.W),), b=aff.b, act=layer))
                pending = None
        aff = pending or identity_affine(size)
        blocks.append(Block(terms=((len(blocks), aff.W),), b=aff.b, act=None))
        return cls(blocks=blocks, **kw)

    @property
    def n_in(self) -> int:
        return int(np.prod(self.in_shape))

    @property
    def n_out(self) -> int:
        return int(np.prod(self.out_shape))

    @property
    def is_chain(self) -> bool:
        """Each block reads only the block before it (block 1 the input)."""
        return all(blk.sources() in ((k,), ()) for k, blk in enumerate(self.blocks))

    def sizes(self) -> list[int]:
        return [self.n_in] + [blk.size for blk in self.blocks]

    @property
    def layers(self) -> list:
        """Alternating Affine / Act layers of a chain network."""
        out: list = []
        for aff, act in self.chain():
            out.append(aff)
            if act is not None:
                out.append(act)
        return out

    def chain(self, lo=None, hi=None) -> list[tuple[Affine, Act | None]]:
        """(affine, activation) pairs computing the network.

        A chain network needs no box. Any other graph is lowered on the input box [lo, hi]: a
        value read again after later activations is carried through them as extra neurons
        relu(v - l) with l a certified lower bound of v minus 1 over the box, so the carried
        neuron is always active and equals v - l exactly (see `lower_graph`).
        """
        from .onnx_ops import has_engine_less

        other = has_engine_less(self.blocks)
        if other is not None:
            from .engines.crown import Unsupported

            raise Unsupported(f"the network has a {other} activation, which the bound engines "
                              "do not relax (only the importer's forward, replay and interval "
                              "rules know it)")
        if self.is_chain:
            return _chain_pairs(self)
        if lo is None or hi is None:
            raise SpecError(f"{os.path.basename(self.path)}: the network is not a plain chain "
                            "of layers (it has skip connections or branches); this use needs "
                            "an input box to lower it")
        return lower_graph(self, lo, hi)

    def evaluate_exact(self, x) -> list:
        """Output at x (rationals) exactly for piecewise-linear nets; else mpmath at 60 digits."""
        smooth = any(blk.act is not None and blk.act.kind in ("sigmoid", "tanh", "softmax",
                                                              "sin", "cos")
                     for blk in self.blocks)
        ctx = mpmath.workdps(60) if smooth else _Null()
        with ctx:
            v = np.array([Fraction(t) for t in x], dtype=object)
            if smooth:
                v = _to_mp(v)
            values = [v]
            for blk in self.blocks:
                z = _to_mp(blk.b) if smooth else blk.b.copy()
                for s, W in blk.terms:
                    z = z + (_to_mp(W).dot(values[s]) if smooth else
                             _int_dot(W, values[s][:, None], self._integer_weights(W))[:, 0])
                values.append(z if blk.act is None else _apply_exact(blk.act, z))
            return list(values[-1])

    def _integer_weights(self, W: np.ndarray) -> tuple[np.ndarray, int]:
        """`_scaled(W)`, computed once per weight matrix (each exact replay of a candidate
        read every matrix again: 5.5 s a replay on a network of 7 million weights)."""
        cache = self.__dict__.setdefault("_scaled_weights", {})
        hit = cache.get(id(W))
        if hit is None or hit[0] is not W:
            hit = cache[id(W)] = (W, *_scaled(W))
        return hit[1], hit[2]

    def float_blocks(self) -> list:
        """Per block ([(source, W as nearest floats)], b as floats), converted once."""
        out = self.__dict__.get("_float_blocks")
        if out is None:
            from .engines.crown import float_and_error

            def near(a):
                return float_and_error(a)[0]

            out = self.__dict__["_float_blocks"] = [
                ([(s, near(W)) for s, W in blk.terms], near(blk.b)) for blk in self.blocks]
        return out

    def __getstate__(self):
        """Pickled (for worker processes) without the converted weights (integer forms of
        exact replays, floats)."""
        state = dict(self.__dict__)
        state.pop("_scaled_weights", None)
        state.pop("_float_blocks", None)
        return state

    def evaluate_float(self, x: np.ndarray) -> np.ndarray:
        """Float64 forward pass on a batch (B, n_in) → (B, n_out)."""
        values = [np.asarray(x, dtype=np.float64)]
        for blk, (terms, b) in zip(self.blocks, self.float_blocks(), strict=True):
            z = np.broadcast_to(b, values[0].shape[:-1] + (blk.size,)).copy()
            for s, W in terms:
                z += values[s] @ W.T
            values.append(z if blk.act is None else apply_float(blk.act, z))
        return values[-1]


def _chain_pairs(net: OnnxNet) -> list[tuple[Affine, Act | None]]:
    sizes = net.sizes()
    out = []
    for k, blk in enumerate(net.blocks):
        W = dict(blk.terms).get(k)
        if W is None:
            W = np.full((blk.size, sizes[k]), Fraction(0), dtype=object)
        out.append((Affine(W=W, b=blk.b), blk.act))
    if len(out) > 1 and _is_identity(out[-1][0]):
        out.pop()  # the output is the last activation's value
    return out


def _is_identity(aff: Affine) -> bool:
    n, m = aff.W.shape
    return n == m and all(t == 0 for t in aff.b) and all(
        aff.W[i, j] == (1 if i == j else 0) for i in range(n) for j in range(m))


CARRY_ACTS = ("relu", "leaky_relu")  # activations a carried neuron relu(v - l) passes exactly


def lower_graph(net: OnnxNet, lo, hi) -> list[tuple[Affine, Act | None]]:
    """An equivalent chain of a DAG network on the box [lo, hi].

    Chain layer k computes block k and carries every earlier value s that a later block reads,
    as neurons h_s - l_s with l_s an integer at least 1 below a certified lower bound of h_s on
    the box (`graph_lower_bounds`); they pass block k's activation unchanged because it is relu
    or leaky_relu and h_s - l_s >= 1 there. The next layer reads them back as entry + l_s.
    A carry through any other activation is refused with the block's node named.
    """
    sizes = net.sizes()
    last_use: dict[int, int] = {}
    for k, blk in enumerate(net.blocks, start=1):
        for s in blk.sources():
            last_use[s] = max(last_use.get(s, 0), k)
    low = graph_lower_bounds(net, lo, hi)
    shift = {s: np.array([Fraction(math.floor(t) - 1) for t in low[s]], dtype=object)
             for s in last_use}
    pairs = []
    for k, blk in enumerate(net.blocks, start=1):
        carried_in = [s for s in sorted(last_use) if s < k - 1 and last_use[s] >= k]
        carried_out = [s for s in sorted(last_use) if s < k and last_use[s] > k]
        if carried_out and (blk.act is None or blk.act.kind not in CARRY_ACTS):
            kind = blk.act.kind if blk.act is not None else "output"
            raise SpecError(
                f"{os.path.basename(net.path)}: a value computed before node `{blk.node}` "
                f"({kind}) is used after it (a skip connection across a {kind} activation); "
                "only skips across relu and leaky_relu are lowered for the ReLU engine",
                fix="write the property as a .snn spec claim, whose engines take the graph "
                    "as it is")
        # input layout of chain layer k: h_{k-1} first, then the carried values
        pos: dict[int, tuple[int, np.ndarray | None]] = {k - 1: (0, None)}
        width = sizes[k - 1]
        for s in carried_in:
            pos[s] = (width, shift[s])
            width += sizes[s]
        rows = blk.size + sum(sizes[s] for s in carried_out)
        W = np.full((rows, width), Fraction(0), dtype=object)
        b = np.full((rows,), Fraction(0), dtype=object)
        b[:blk.size] = blk.b
        for s, Ws in blk.terms:
            off, sh = pos[s]
            W[:blk.size, off:off + sizes[s]] += Ws
            if sh is not None:
                b[:blk.size] += Ws.dot(sh)
        r = blk.size
        for s in carried_out:
            off, sh = pos[s]
            for i in range(sizes[s]):
                W[r + i, off + i] = Fraction(1)
                b[r + i] = (sh[i] if sh is not None else 0) - shift[s][i]
            r += sizes[s]
        pairs.append((Affine(W=W, b=b), blk.act))
    return pairs


def graph_lower_bounds(net: OnnxNet, lo, hi) -> list[np.ndarray]:
    """Certified float lower bounds of every value of the graph over the box [lo, hi].

    Interval arithmetic in float64 with every dot product widened by its a-priori rounding
    bound (gamma_n sum |W| |h| plus one ulp of each weight), so each bound is below the exact
    value; `lower_graph` then keeps a further margin of at least 1.
    """
    from .engines.crown import TINY, gamma, smooth_bounds

    lo = np.array([float(t) for t in lo], dtype=np.float64)
    hi = np.array([float(t) for t in hi], dtype=np.float64)
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise SpecError("lowering a graph network needs a bounded input box")
    ivs = [(lo, hi)]
    for blk in net.blocks:
        bf = to_float(blk.b)
        zl, zh, acc = bf.copy(), bf.copy(), np.abs(bf) + np.spacing(np.abs(bf))
        n = 1
        for s, Ws in blk.terms:
            Wf = to_float(Ws)
            sl, sh = ivs[s]
            mag = np.maximum(np.abs(sl), np.abs(sh))
            pos, neg = np.maximum(Wf, 0.0), np.minimum(Wf, 0.0)
            zl = zl + pos @ sl + neg @ sh
            zh = zh + pos @ sh + neg @ sl
            acc = acc + (np.abs(Wf) + np.spacing(np.abs(Wf))) @ mag
            n += Ws.shape[1] + 1
        err = gamma(n) * acc * 2 + TINY
        zl, zh = zl - err, zh + err
        act = blk.act
        if act is None:
            ivs.append((zl, zh))
        elif act.kind == "relu":
            ivs.append((np.maximum(zl, 0.0), np.maximum(zh, 0.0)))
        elif act.kind == "leaky_relu":
            a = float(act.alpha)
            cands = np.stack([zl, zh, a * zl, a * zh])
            w = np.abs(cands) * 1e-15 + TINY
            ivs.append(((cands - w).min(axis=0), (cands + w).max(axis=0)))
        elif act.kind in ("tanh", "sigmoid"):
            ivs.append(smooth_bounds(act.kind, zl, zh))
        elif act.kind in ENGINE_LESS:
            ivs.append(op_bounds(act.kind, zl, zh, act.param))
        else:  # softmax
            ivs.append((np.zeros_like(zl), np.ones_like(zh)))
    return [iv[0] for iv in ivs]


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _to_mp(a: np.ndarray) -> np.ndarray:
    out = np.empty(a.shape, dtype=object)
    for idx, t in np.ndenumerate(a):
        out[idx] = mpmath.mpf(t.numerator) / t.denominator
    return out


def _apply_exact(act: Act, v: np.ndarray) -> np.ndarray:
    k = act.kind
    if k in ENGINE_LESS:
        return apply_exact_op(k, v, act.param)
    if k == "relu":
        return np.array([t if t > 0 else 0 * t for t in v], dtype=object)
    if k == "leaky_relu":
        a = act.alpha if not isinstance(v[0], mpmath.mpf) else (
            mpmath.mpf(act.alpha.numerator) / act.alpha.denominator)
        return np.array([t if t > 0 else a * t for t in v], dtype=object)
    if k == "sigmoid":
        return np.array([1 / (1 + mpmath.exp(-t)) for t in v], dtype=object)
    if k == "tanh":
        return np.array([mpmath.tanh(t) for t in v], dtype=object)
    if k == "softmax":
        m = max(v)
        e = [mpmath.exp(t - m) for t in v]
        s = mpmath.fsum(e)
        return np.array([t / s for t in e], dtype=object)
    raise AssertionError(k)


def apply_float(act: Act, v: np.ndarray) -> np.ndarray:
    k = act.kind
    if k in ENGINE_LESS:
        return apply_float_op(k, v, act.param)
    if k == "relu":
        return np.maximum(v, 0.0)
    if k == "leaky_relu":
        return np.where(v > 0, v, float(act.alpha) * v)
    if k == "sigmoid":
        return 0.5 * (1.0 + np.tanh(0.5 * v))
    if k == "tanh":
        return np.tanh(v)
    if k == "softmax":
        e = np.exp(v - v.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    raise AssertionError(k)


def to_float(a: np.ndarray) -> np.ndarray:
    """Nearest float64 of each exact entry (Fraction → float rounds correctly)."""
    return np.array([float(t) for t in a.flat], dtype=np.float64).reshape(a.shape)


def fractions(a) -> np.ndarray:
    """A numeric numpy array as exact Fractions (floats are dyadic, so exact)."""
    a = np.asarray(a)
    if a.dtype == object:
        return a
    if a.dtype.kind == "b":
        a = a.astype(np.int64)
    if a.dtype.kind in "iu":
        flat = [Fraction(int(t)) for t in a.flat]
    else:
        if not np.all(np.isfinite(a)):
            raise SpecError("ONNX constant holds a non-finite value (inf or nan)")
        flat = [Fraction(float(t)) for t in a.astype(np.float64).flat]
    out = np.empty(a.shape, dtype=object)
    out.flat[:] = flat if flat else []
    return out


def identity_affine(n: int) -> Affine:
    W = np.full((n, n), Fraction(0), dtype=object)
    for i in range(n):
        W[i, i] = Fraction(1)
    return Affine(W=W, b=np.full((n,), Fraction(0), dtype=object))


def compose(first: Affine, second: Affine) -> Affine:
    """second ∘ first, exactly."""
    return Affine(W=second.W.dot(first.W), b=second.W.dot(first.b) + second.b)


# ---- symbolic tensors: each entry an affine form over earlier values of the graph ----------

@dataclass
class _Sym:
    """A tensor of `shape` whose entry i is sum_s A[s][i, :] . h_s + c[i].

    `A` maps a source (0: the network input, k: block k's output) to its coefficients; a
    selection (A None) is entry i = scale[i] * h_src[rows[i]] + c[i], which keeps reshapes and
    transposes of wide inputs cheap. Every value keeps its own sources, so a tensor computed
    before an activation and read after it stays correct (skips, branches, dead nodes).
    """

    shape: tuple[int, ...]
    c: np.ndarray  # object Fractions, (numel,)
    A: dict[int, np.ndarray] | None = None  # source -> object (numel, size of source)
    src: int = 0  # for a selection
    rows: np.ndarray | None = None  # int (numel,), for a selection
    scale: np.ndarray | None = None  # object (numel,), for a selection (None: all ones)

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    def take(self, idx: np.ndarray, shape: tuple[int, ...]) -> _Sym:
        """Entries idx (flat indices) arranged in `shape` (reshapes, transposes, broadcasts)."""
        idx = np.asarray(idx, dtype=np.int64).ravel()
        if self.A is not None:
            return _Sym(shape, self.c[idx], A={s: a[idx] for s, a in self.A.items()})
        return _Sym(shape, self.c[idx], src=self.src, rows=self.rows[idx],
                    scale=None if self.scale is None else self.scale[idx])

    def terms(self, sizes: list[int]) -> dict[int, np.ndarray]:
        if self.A is not None:
            return self.A
        A = np.full((self.numel, sizes[self.src]), Fraction(0), dtype=object)
        for i, r in enumerate(self.rows):
            A[i, r] = Fraction(1) if self.scale is None else self.scale[i]
        return {self.src: A}


def _zeros(n: int) -> np.ndarray:
    return np.full((n,), Fraction(0), dtype=object)


def _merge(a: dict[int, np.ndarray], b: dict[int, np.ndarray], sign: int) -> dict:
    out = dict(a)
    for s, m in b.items():
        out[s] = out[s] + sign * m if s in out else sign * m
    return out


# element types stored one value per item (raw_data: itemsize bytes each)
_WHOLE_BYTE_TYPES = frozenset(range(1, 8)) | {9, 10, 11, 12, 13}


class _Importer:
    def __init__(self, path: str, span: Span | None):
        self.path = path
        self.span = span
        self.blocks: list[Block] = []
        self.sizes: list[int] = []  # size of each source: the input, then each block

    def error(self, msg: str, node=None, index=None, fix=None) -> SpecError:
        where = ""
        if node is not None:
            where = f" in node `{node.name or '(unnamed)'}` (#{index}, {node.op_type})"
        return SpecError(f"{os.path.basename(self.path)}: {msg}{where}", self.span, fix=fix)

    def _check_initializer(self, init) -> None:
        """Refuse, before numpy allocates anything, an initializer whose declared shape does
        not match the values it holds (`dims` of 2^40 over 8 bytes) or that points at
        external data (a file beside the model, which we do not read)."""
        from onnx import TensorProto, helper

        name = init.name or "(unnamed)"
        if init.data_location == TensorProto.EXTERNAL:
            raise self.error(f"initializer `{name}` keeps its values in an external file",
                             fix="save the model with its weights inside: "
                                 "onnx.save(model, PATH, save_as_external_data=False)")
        dims = list(init.dims)
        declared = math.prod(dims)
        if any(d < 0 for d in dims) or declared > MAX_ONNX_BYTES:
            raise self.error(f"initializer `{name}` declares shape {dims}, too large for an "
                             f"ONNX file of at most {MAX_ONNX_BYTES} bytes",
                             fix="check the file: the shape does not fit the data it holds")
        if init.data_type not in _WHOLE_BYTE_TYPES:
            return  # strings, packed 4-bit types: the importer reports them where used
        size = helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
        fields = (init.float_data, init.int32_data, init.int64_data, init.double_data,
                  init.uint64_data, init.string_data)
        held = len(init.raw_data) // max(size, 1) if init.raw_data else \
            max(len(f) for f in fields)
        if held != declared and not (held == 0 and declared == 0):
            raise self.error(f"initializer `{name}` declares shape {dims} ({declared} values) "
                             f"but holds {held}",
                             fix="check the file: it is truncated or was written wrongly")

    # ---- graph
    def run(self, model) -> OnnxNet:
        from onnx import numpy_helper

        g = model.graph
        self.values: dict[str, object] = {}
        for init in g.initializer:
            self._check_initializer(init)
            self.values[init.name] = numpy_helper.to_array(init)
        inputs = [i for i in g.input if i.name not in self.values]
        if len(inputs) != 1:
            raise self.error(f"expected one network input, found {len(inputs)} "
                             f"({', '.join(i.name for i in inputs)})")
        if len(g.output) != 1:
            raise self.error(f"expected one network output, found {len(g.output)}")
        inp = inputs[0]
        dims = tuple(d.dim_value if d.dim_value > 0 else 1
                     for d in inp.type.tensor_type.shape.dim)
        n = int(np.prod(dims)) if dims else 1
        self.sizes = [n]
        self.values[inp.name] = _Sym(dims, _zeros(n), src=0, rows=np.arange(n))
        self._run_nodes(g)
        out_name = g.output[0].name
        if out_name not in self.values:
            raise self.error(f"the graph output `{out_name}` is never computed")
        out = self.values[out_name]
        if not isinstance(out, _Sym):  # a constant network: no input dependence
            const = fractions(out)
            out = _Sym(tuple(const.shape), const.ravel(), A={})
        self.blocks.append(Block(terms=_nonzero_terms(out.terms(self.sizes)), b=out.c.copy(),
                                 act=None, node=out_name))
        return OnnxNet(path=self.path, in_shape=dims, out_shape=tuple(out.shape),
                       input_name=inp.name, output_name=out_name, blocks=self.blocks)

    def _run_nodes(self, g) -> None:
        pending = list(enumerate(g.node))
        while pending:
            progress = []
            for index, node in pending:
                if all(not n or n in self.values for n in node.input):
                    self._node(node, index)
                    progress.append(index)
            if not progress:
                index, node = pending[0]
                missing = [n for n in node.input if n and n not in self.values]
                raise self.error(f"input `{missing[0]}` is never computed", node, index)
            done = set(progress)
            pending = [(i, n) for i, n in pending if i not in done]

    def _node(self, node, index: int) -> None:
        from onnx import helper

        op = node.op_type
        handler = getattr(self, f"op_{op}", None)
        if handler is None:
            raise self.error(f"unsupported ONNX operator `{op}`", node, index,
                             fix="supported: " + ", ".join(sorted(
                                 m[3:] for m in dir(self) if m.startswith("op_"))))
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        args = [self.values[n] if n else None for n in node.input]
        self._ctx = (node, index)
        try:
            result = handler(args, attrs)
        except SpecError:
            raise
        except (ValueError, IndexError, TypeError, ZeroDivisionError) as exc:
            raise self.error(f"cannot import `{op}`: {exc}", node, index) from None
        if not isinstance(result, tuple):
            result = (result,)
        for name, val in zip(node.output, result):
            if name:
                self.values[name] = val

    def fail(self, msg: str, fix=None) -> SpecError:
        node, index = self._ctx
        return self.error(msg, node, index, fix)

    # ---- helpers
    def const(self, v, what: str) -> np.ndarray:
        if isinstance(v, _Sym):
            raise self.fail(f"{what} must be a constant, not computed from the input")
        return np.asarray(v)

    def activation(self, x, act: Act):
        """A new block: act of x's affine form; the result is a fresh value of the graph."""
        if not isinstance(x, _Sym):
            raise self.fail("activation of a constant is not supported")
        node, index = self._ctx
        self.blocks.append(Block(terms=_nonzero_terms(x.terms(self.sizes)), b=x.c.copy(),
                                 act=act, node=node.name or f"#{index} {node.op_type}"))
        self.sizes.append(x.numel)
        k = len(self.blocks)
        return _Sym(x.shape, _zeros(x.numel), src=k, rows=np.arange(x.numel))

    def reshape(self, x, shape: tuple[int, ...]):
        shape = tuple(int(s) for s in shape)
        if isinstance(x, _Sym):
            return x.take(np.arange(x.numel), shape)
        return np.asarray(x).reshape(shape)

    def permute(self, x, fn):
        """Apply an index-only numpy function (transpose, broadcast) to a tensor."""
        if isinstance(x, _Sym):
            idx = fn(np.arange(x.numel).reshape(x.shape))
            return x.take(np.ascontiguousarray(idx), tuple(idx.shape))
        return fn(np.asarray(x))

    def add(self, x, y, sign: int = 1):
        if isinstance(x, _Sym) and isinstance(y, _Sym):
            shape = np.broadcast_shapes(x.shape, y.shape)
            bx = self.permute(x, lambda a: np.broadcast_to(a, shape))
            by = self.permute(y, lambda a: np.broadcast_to(a, shape))
            return _Sym(shape, bx.c + sign * by.c,
                        A=_merge(bx.terms(self.sizes), by.terms(self.sizes), sign))
        if isinstance(y, _Sym):
            neg = self.scale(y, np.array(sign))
            return self.add(neg, x)
        if not isinstance(x, _Sym):
            return x + y if sign > 0 else x - y
        y = np.asarray(y)
        shape = np.broadcast_shapes(x.shape, y.shape)
        bx = self.permute(x, lambda a: np.broadcast_to(a, shape))
        cy = fractions(np.broadcast_to(y, shape)).ravel()
        bx.c = bx.c + cy if sign > 0 else bx.c - cy
        return bx

    def scale(self, x: _Sym, s) -> _Sym:
        s = np.asarray(s)
        shape = np.broadcast_shapes(x.shape, s.shape)
        bx = self.permute(x, lambda a: np.broadcast_to(a, shape))
        f = fractions(np.broadcast_to(s, shape)).ravel() if s.dtype != object else \
            np.broadcast_to(s, shape).ravel()
        c = bx.c * f
        if bx.A is not None:
            return _Sym(shape, c, A={k: a * f[:, None] for k, a in bx.A.items()})
        sc = f if bx.scale is None else bx.scale * f
        return _Sym(shape, c, src=bx.src, rows=bx.rows, scale=sc)

    def matmul(self, x, w):
        """x @ w with exactly one of them symbolic (numpy matmul semantics)."""
        if not isinstance(x, _Sym) and not isinstance(w, _Sym):
            return np.matmul(x, w)
        if isinstance(x, _Sym) and isinstance(w, _Sym):
            raise self.fail("product of two input-dependent tensors is not linear")
        if isinstance(x, _Sym):
            W = fractions(w)
            if W.ndim == 1 and len(x.shape) >= 1:  # x @ v: the last axis contracted
                y = self.matmul(x, W.reshape(-1, 1))
                return y.take(np.arange(y.numel), tuple(y.shape[:-1]))
            if W.ndim != 2:
                raise self.fail(f"constant matrix operand must be 2-D, got {list(W.shape)}")
            if len(x.shape) == 0:
                raise self.fail("matrix product of a scalar")
            k = x.shape[-1]
            if k != W.shape[0]:
                raise self.fail(f"sizes do not match: {list(x.shape)} @ {list(W.shape)}")
            lead = x.shape[:-1]
            L = int(np.prod(lead)) if lead else 1
            m = W.shape[1]
            c = x.c.reshape(L, k).dot(W).ravel()
            if (x.A is None and L == 1 and x.scale is None
                    and len(np.unique(x.rows)) == len(x.rows)):
                A = np.full((m, self.sizes[x.src]), Fraction(0), dtype=object)
                A[:, x.rows] = W.T  # fast path: a permutation of one value, e.g. layer 1
                return _Sym(lead + (m,), c, A={x.src: A})
            out = {}
            for s, As in x.terms(self.sizes).items():
                A3 = As.reshape(L, k, As.shape[1])
                out[s] = _odot_each(W.T, A3).reshape(L * m, -1)
            return _Sym(lead + (m,), c, A=out)
        # constant @ symbolic
        W = fractions(x)
        y = w
        if W.ndim == 1 and len(y.shape) >= 1:  # v @ y: y's first (or only) axis contracted
            r = self.matmul(W.reshape(1, -1), y)
            return r.take(np.arange(r.numel), tuple(r.shape[1:]))
        if W.ndim != 2:
            raise self.fail(f"constant matrix operand must be 2-D, got {list(W.shape)}")
        if len(y.shape) == 1:
            if y.shape[0] != W.shape[1]:
                raise self.fail(f"sizes do not match: {list(W.shape)} @ {list(y.shape)}")
            return _Sym((W.shape[0],), W.dot(y.c),
                        A={s: _odot(W, As) for s, As in y.terms(self.sizes).items()})
        if len(y.shape) != 2 or y.shape[0] != W.shape[1]:
            raise self.fail(f"sizes do not match: {list(W.shape)} @ {list(y.shape)}")
        k, p = y.shape
        out = {}
        for s, As in y.terms(self.sizes).items():
            A3 = As.reshape(k, p, As.shape[1])
            out[s] = np.stack([_odot(W, A3[:, j, :]) for j in range(p)], axis=1).reshape(
                -1, As.shape[1])
        c = W.dot(y.c.reshape(k, p))
        return _Sym((W.shape[0], p), c.ravel(), A=out)

    def product(self, x: _Sym, y: _Sym) -> _Sym:
        """x * y of two input-dependent tensors (numpy broadcasting): one `mul` block whose
        pre-activation is [x; y] (2n entries) and whose output is [x*y; x*y] (`onnx_ops`),
        so every block keeps as many outputs as pre-activations; the first half is read."""
        shape = np.broadcast_shapes(x.shape, y.shape)
        n = int(np.prod(shape)) if shape else 1
        bx = self.permute(x, lambda a: np.broadcast_to(a, shape))
        by = self.permute(y, lambda a: np.broadcast_to(a, shape))
        pair = self.op_Concat([bx.take(np.arange(n), (n,)), by.take(np.arange(n), (n,))],
                              {"axis": 0})
        out = self.activation(pair, Act("mul"))
        return out.take(np.arange(n), shape)

    def transpose2(self, x):
        return self.permute(x, lambda a: a.T)

    # ---- operators
    def op_Constant(self, args, attrs):
        from onnx import numpy_helper

        if "value" in attrs:
            return numpy_helper.to_array(attrs["value"])
        for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                           ("value_int", np.int64), ("value_ints", np.int64)):
            if key in attrs:
                return np.asarray(attrs[key], dtype=dtype)
        raise self.fail("Constant without a numeric value")

    def op_Identity(self, args, attrs):
        return args[0]

    def op_Dropout(self, args, attrs):
        training = args[2] if len(args) > 2 and args[2] is not None else None
        if training is not None and bool(np.asarray(self.const(training, "training_mode"))):
            ratio = args[1] if len(args) > 1 and args[1] is not None else 0.5
            if float(self.const(ratio, "ratio")) != 0.0:
                raise self.fail("Dropout in training mode is random; export the network "
                                "in inference mode")
        if attrs.get("is_test", 1) == 0 and "is_test" in attrs:
            raise self.fail("Dropout with is_test=0 is random; export in inference mode")
        return args[0], None

    def op_Cast(self, args, attrs):
        from onnx import helper

        x = args[0]
        dtype = helper.tensor_dtype_to_np_dtype(attrs["to"])
        if isinstance(x, _Sym):
            if np.dtype(dtype).kind != "f":
                raise self.fail("Cast of the network's values to a non-float type")
            return x
        return np.asarray(x).astype(dtype)

    def op_Shape(self, args, attrs):
        x = args[0]
        shape = x.shape if isinstance(x, _Sym) else np.asarray(x).shape
        return np.asarray(shape, dtype=np.int64)[attrs.get("start", 0):attrs.get("end", None)]

    def op_Gather(self, args, attrs):
        data, idx = args
        idx = self.const(idx, "Gather indices").astype(np.int64)
        axis = attrs.get("axis", 0)
        return self.permute(data, lambda a: np.take(a, idx, axis=axis))

    def op_Concat(self, args, attrs):
        if not any(isinstance(a, _Sym) for a in args):
            return np.concatenate([np.asarray(a) for a in args], axis=attrs["axis"])
        parts = [a if isinstance(a, _Sym) else _Sym(np.asarray(a).shape,
                                                    fractions(a).ravel(), A={})
                 for a in args if a is not None]
        offsets = np.cumsum([0] + [p.numel for p in parts])
        order = np.concatenate([np.arange(p.numel).reshape(p.shape) + off
                                for p, off in zip(parts, offsets)], axis=attrs["axis"])
        c = np.concatenate([p.c for p in parts])
        A: dict[int, np.ndarray] = {}
        for p, off in zip(parts, offsets):
            for s, m in p.terms(self.sizes).items():
                if s not in A:
                    A[s] = np.full((offsets[-1], m.shape[1]), Fraction(0), dtype=object)
                A[s][off:off + p.numel] = m
        return _Sym(tuple(order.shape), c, A=A).take(order.ravel(), tuple(order.shape))

    def op_Add(self, args, attrs):
        return self.add(args[0], args[1])

    def op_Sub(self, args, attrs):
        return self.add(args[0], args[1], sign=-1)

    def op_Mul(self, args, attrs):
        x, y = args
        if isinstance(x, _Sym) and isinstance(y, _Sym):
            return self.product(x, y)
        if isinstance(y, _Sym):
            x, y = y, x
        if not isinstance(x, _Sym):
            return np.asarray(x) * np.asarray(y)
        return self.scale(x, y)

    def op_Div(self, args, attrs):
        x, y = args
        if isinstance(y, _Sym):
            raise self.fail("division by an input-dependent tensor is not linear")
        if not isinstance(x, _Sym):
            return np.asarray(x) / np.asarray(y)
        f = fractions(y)
        if any(t == 0 for t in f.flat):
            raise self.fail("division by zero")
        inv = np.empty(f.shape, dtype=object)
        inv.flat[:] = [1 / t for t in f.flat] if f.size else []
        return self.scale(x, inv)

    def op_MatMul(self, args, attrs):
        return self.matmul(args[0], args[1])

    def op_Gemm(self, args, attrs):
        a, b = args[0], args[1]
        c = args[2] if len(args) > 2 else None
        if attrs.get("transA", 0):
            a = self.transpose2(a)
        if attrs.get("transB", 0):
            b = self.transpose2(b)
        alpha = Fraction(float(np.float32(attrs.get("alpha", 1.0))))
        beta = Fraction(float(np.float32(attrs.get("beta", 1.0))))
        y = self.matmul(a, b)
        if alpha != 1:
            y = self.scale(y, np.array(alpha, dtype=object)) if isinstance(y, _Sym) else \
                y * float(alpha)
        if c is not None:
            if isinstance(c, _Sym):
                c = self.scale(c, np.array(beta, dtype=object))
            elif beta != 1:
                cf = fractions(c)
                c = cf * beta
            y = self.add(y, c)
        return y

    def op_Flatten(self, args, attrs):
        x = args[0]
        shape = x.shape if isinstance(x, _Sym) else np.asarray(x).shape
        axis = attrs.get("axis", 1)
        if axis < 0:
            axis += len(shape)
        outer = int(np.prod(shape[:axis])) if axis else 1
        return self.reshape(x, (outer, int(np.prod(shape[axis:])) if shape[axis:] else 1))

    def op_Reshape(self, args, attrs):
        x, shp = args
        shape = x.shape if isinstance(x, _Sym) else np.asarray(x).shape
        target = [int(t) for t in self.const(shp, "Reshape's shape")]
        allowzero = attrs.get("allowzero", 0)
        out = []
        for i, t in enumerate(target):
            if t == 0 and not allowzero:
                if i >= len(shape):
                    raise self.fail(f"Reshape copies dimension {i}, the input has {len(shape)}")
                out.append(shape[i])
            else:
                out.append(t)
        n = int(np.prod(shape)) if shape else 1
        if out.count(-1) > 1:
            raise self.fail("Reshape with more than one -1")
        if -1 in out:
            known = int(np.prod([t for t in out if t != -1]))
            if known == 0 or n % known:
                raise self.fail(f"cannot reshape {list(shape)} to {target}")
            out[out.index(-1)] = n // known
        if int(np.prod(out)) != n:
            raise self.fail(f"cannot reshape {list(shape)} to {target}")
        return self.reshape(x, tuple(out))

    def op_Transpose(self, args, attrs):
        perm = attrs.get("perm")
        return self.permute(args[0], lambda a: np.transpose(a, perm))

    def _axes(self, args, attrs):
        if len(args) > 1 and args[1] is not None:
            return [int(t) for t in self.const(args[1], "axes")]
        return list(attrs["axes"]) if "axes" in attrs else None

    def op_Squeeze(self, args, attrs):
        x = args[0]
        shape = x.shape if isinstance(x, _Sym) else np.asarray(x).shape
        axes = self._axes(args, attrs)
        if axes is None:
            axes = [i for i, s in enumerate(shape) if s == 1]
        axes = [a + len(shape) if a < 0 else a for a in axes]
        if any(shape[a] != 1 for a in axes):
            raise self.fail(f"Squeeze of an axis whose size is not 1 ({list(shape)})")
        return self.reshape(x, tuple(s for i, s in enumerate(shape) if i not in axes))

    def op_Unsqueeze(self, args, attrs):
        x = args[0]
        shape = list(x.shape if isinstance(x, _Sym) else np.asarray(x).shape)
        axes = self._axes(args, attrs)
        if axes is None:
            raise self.fail("Unsqueeze needs axes")
        rank = len(shape) + len(axes)
        axes = sorted(a + rank if a < 0 else a for a in axes)
        for a in axes:
            shape.insert(a, 1)
        return self.reshape(x, tuple(shape))

    def op_BatchNormalization(self, args, attrs):
        x = args[0]
        if attrs.get("training_mode", 0):
            raise self.fail("BatchNormalization in training mode; export in inference mode")
        scale, bias, mean, var = (fractions(self.const(a, "BatchNormalization parameter"))
                                  for a in args[1:5])
        eps = Fraction(float(np.float32(attrs.get("epsilon", 1e-5))))
        shape = x.shape if isinstance(x, _Sym) else np.asarray(x).shape
        if len(shape) < 2:
            raise self.fail("BatchNormalization needs an input with a channel axis")
        C = shape[1]
        with mpmath.workprec(128):
            f = []
            for s, v in zip(scale.ravel(), var.ravel()):
                q = v + eps
                if q <= 0:
                    raise self.fail("BatchNormalization with var + epsilon <= 0")
                r = mpmath.sqrt(mpmath.mpf(q.numerator) / q.denominator)
                f.append(s / _mp_fraction(r))
        f = np.array(f, dtype=object)
        if f.size != C:
            raise self.fail(f"BatchNormalization has {f.size} channels, the input has {C}")
        bshape = (1, C) + (1,) * (len(shape) - 2)
        factor = f.reshape(bshape)
        offset = (bias.ravel() - mean.ravel() * f).reshape(bshape)
        if not isinstance(x, _Sym):
            return fractions(x) * factor + offset
        return self.add(self.scale(x, factor), offset)

    def _act(self, args, act):
        return self.activation(args[0], act)

    def op_Relu(self, args, attrs):
        return self._act(args, Act("relu"))

    def op_LeakyRelu(self, args, attrs):
        alpha = Fraction(float(np.float32(attrs.get("alpha", 0.01))))
        return self._act(args, Act("leaky_relu", alpha))

    def op_Sigmoid(self, args, attrs):
        return self._act(args, Act("sigmoid"))

    def op_Tanh(self, args, attrs):
        return self._act(args, Act("tanh"))

    def op_Softmax(self, args, attrs):
        x = args[0]
        if not isinstance(x, _Sym):
            raise self.fail("Softmax of a constant is not supported")
        axis = attrs.get("axis", -1)
        axis = axis + len(x.shape) if axis < 0 else axis
        others = [s for i, s in enumerate(x.shape) if i != axis]
        if any(s != 1 for s in others):
            raise self.fail(f"Softmax over axis {axis} of shape {list(x.shape)}: only one "
                            "vector (batch 1) is supported")
        return self._act(args, Act("softmax"))

    # ---- index maps, convolutions, pooling (exact lowerings: `onnx_ops`)
    def op_Neg(self, args, attrs):
        x = args[0]
        return self.scale(x, np.array(-1)) if isinstance(x, _Sym) else -np.asarray(x)

    def op_Slice(self, args, attrs):
        from .onnx_ops import slice_indices

        x = args[0]
        shape = x.shape if isinstance(x, _Sym) else np.asarray(x).shape
        if len(args) > 1:  # opset 10+: starts, ends, axes, steps as inputs
            vals = [None if i >= len(args) or args[i] is None else
                    [int(t) for t in self.const(args[i], "Slice " + n).ravel()]
                    for i, n in ((1, "starts"), (2, "ends"), (3, "axes"), (4, "steps"))]
        else:
            vals = [list(attrs["starts"]), list(attrs["ends"]), attrs.get("axes"), None]
        idx = slice_indices(shape, *vals)
        return self.permute(x, lambda a: a[idx])

    def op_Pad(self, args, attrs):
        x = args[0]
        mode = attrs.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode != "constant":
            raise self.fail(f"Pad mode `{mode}`: only constant padding is supported")
        shape = x.shape if isinstance(x, _Sym) else np.asarray(x).shape
        pads = ([int(t) for t in self.const(args[1], "Pad's pads").ravel()]
                if len(args) > 1 and args[1] is not None else list(attrs.get("pads", [])))
        value = (self.const(args[2], "Pad's value") if len(args) > 2 and args[2] is not None
                 else np.array(attrs.get("value", 0.0)))
        rank = len(shape)
        axes = ([int(t) for t in self.const(args[3], "Pad's axes").ravel()]
                if len(args) > 3 and args[3] is not None else list(range(rank)))
        if len(pads) != 2 * len(axes) or any(p < 0 for p in pads):
            raise self.fail(f"Pad with pads {pads} on a rank-{rank} tensor (only "
                            "nonnegative pads are supported)")
        width = [(0, 0)] * rank
        for i, a in enumerate(axes):
            width[a + rank if a < 0 else a] = (pads[i], pads[i + len(axes)])
        if not isinstance(x, _Sym):
            return np.pad(np.asarray(x), width, constant_values=np.asarray(value).item())
        # entries of x, then one constant entry for the padding
        n = x.numel
        pad_row = _Sym((1,), fractions(np.asarray(value, dtype=np.float64).reshape(1)),
                       A={})
        ext = self.op_Concat([x.take(np.arange(n), (n,)), pad_row], {"axis": 0})
        idx = np.pad(np.arange(n).reshape(shape), width, constant_values=n)
        return ext.take(idx.ravel(), tuple(idx.shape))

    def op_Conv(self, args, attrs):
        from .onnx_ops import conv_matrix

        x, W = args[0], args[1]
        B = args[2] if len(args) > 2 else None
        W = self.const(W, "Conv weights")
        if B is not None:
            B = self.const(B, "Conv bias")
        shape = x.shape if isinstance(x, _Sym) else np.asarray(x).shape
        rows, bias, out_shape = conv_matrix(shape, W, B, attrs, self.fail)
        if not isinstance(x, _Sym):
            xf = fractions(x).ravel()
            val = np.array([ws.dot(xf[cols]) if len(cols) else Fraction(0)
                            for cols, ws in rows], dtype=object) + bias
            return np.asarray(to_float(val), dtype=np.asarray(x).dtype).reshape(out_shape)
        c = np.array([ws.dot(x.c[cols]) if len(cols) else Fraction(0) for cols, ws in rows],
                     dtype=object) + bias
        if x.A is None:  # a selection of one value: scatter the taps into its columns
            A = np.full((len(rows), self.sizes[x.src]), Fraction(0), dtype=object)
            for i, (cols, ws) in enumerate(rows):
                sc = ws if x.scale is None else ws * x.scale[cols]
                for r, w in zip(x.rows[cols], sc):
                    A[i, r] += w
            return _Sym(out_shape, c, A={x.src: A})
        terms = {}
        for s, As in x.A.items():
            out = np.full((len(rows), As.shape[1]), Fraction(0), dtype=object)
            for i, (cols, ws) in enumerate(rows):
                if len(cols):
                    out[i] = ws.dot(As[cols])
            terms[s] = out
        return _Sym(out_shape, c, A=terms)

    def op_MaxPool(self, args, attrs):
        from .onnx_ops import maxpool_windows

        node, _ = self._ctx
        if len(node.output) > 1 and node.output[1]:
            raise self.fail("MaxPool's Indices output is not supported")
        x = args[0]
        if not isinstance(x, _Sym):
            raise self.fail("MaxPool of a constant is not supported")
        windows, out_shape = maxpool_windows(x.shape, attrs, self.fail)
        K = max(len(w) for w in windows)
        idx = np.array([w + [w[0]] * (K - len(w)) for w in windows], dtype=np.int64)
        n = len(windows)
        flat = x.take(np.arange(x.numel), (x.numel,))
        cands = [flat.take(idx[:, k], (n,)) for k in range(K)]
        while len(cands) > 1:  # max(a, b) = a + relu(b - a), a tree over the window
            nxt = []
            for a, b in zip(cands[0::2], cands[1::2]):
                nxt.append(self.add(a, self.activation(self.add(b, a, sign=-1), Act("relu"))))
            if len(cands) % 2:
                nxt.append(cands[-1])
            cands = nxt
        return cands[0].take(np.arange(n), out_shape)

    # ---- elementwise activations without engine relaxations (rules: `onnx_ops.RULES`)
    def op_Sin(self, args, attrs):
        return self._act(args, Act("sin"))

    def op_Cos(self, args, attrs):
        return self._act(args, Act("cos"))

    def op_Floor(self, args, attrs):
        x = args[0]
        return self._act(args, Act("floor")) if isinstance(x, _Sym) else np.floor(x)

    # ---- shape computations on constants (as torch exports them around broadcasts)
    def op_ConstantOfShape(self, args, attrs):
        from onnx import numpy_helper

        shape = [int(t) for t in self.const(args[0], "ConstantOfShape's shape").ravel()]
        value = numpy_helper.to_array(attrs["value"]) if "value" in attrs else \
            np.zeros(1, dtype=np.float32)
        return np.full(shape, value.ravel()[0], dtype=value.dtype)

    def op_Equal(self, args, attrs):
        return np.equal(self.const(args[0], "Equal's operand"),
                        self.const(args[1], "Equal's operand"))

    def op_Where(self, args, attrs):
        cond = self.const(args[0], "Where's condition")
        return np.where(cond, self.const(args[1], "Where's operand"),
                        self.const(args[2], "Where's operand"))

    def op_Expand(self, args, attrs):
        x = args[0]
        shape = [int(t) for t in self.const(args[1], "Expand's shape").ravel()]
        xs = x.shape if isinstance(x, _Sym) else np.asarray(x).shape
        out = np.broadcast_shapes(tuple(xs), tuple(shape))
        return self.permute(x, lambda a: np.broadcast_to(a, out))

    def op_Sign(self, args, attrs):
        return self._act(args, Act("sign"))

    def op_Pow(self, args, attrs):
        x, y = args
        if isinstance(y, _Sym):
            raise self.fail("Pow with an input-dependent exponent is not supported")
        e = np.asarray(y)
        if not isinstance(x, _Sym):
            return np.power(np.asarray(x), e)
        if e.size != 1 or float(e.ravel()[0]) != int(float(e.ravel()[0])) or not \
                0 <= float(e.ravel()[0]) <= 64:
            raise self.fail(f"Pow with exponent {e.ravel().tolist()}: only one constant "
                            "integer exponent from 0 to 64 is supported")
        p = int(float(e.ravel()[0]))
        if p == 1:
            return x
        shape = np.broadcast_shapes(x.shape, e.shape)
        x = self.permute(x, lambda a: np.broadcast_to(a, shape))
        return self.activation(x, Act("pow", param=p))


def _odot(W: np.ndarray, A: np.ndarray) -> np.ndarray:
    """W @ A for object (Fraction) arrays, W 2-D: a sum over W's nonzero entries when W is
    sparse (the stacked paths of lattice networks, selection matrices), else numpy's dot."""
    nz = np.nonzero(W != 0)
    if len(nz[0]) * 4 > W.size:
        return _int_dot(W, A)
    out = np.full((W.shape[0],) + A.shape[1:], Fraction(0), dtype=object)
    for i, j in zip(*nz):
        out[i] = out[i] + W[i, j] * A[j]
    return out


def _odot_each(W: np.ndarray, A3: np.ndarray) -> np.ndarray:
    """np.stack([W @ A for A in A3]) exactly; each side scaled to integers once."""
    if len(np.nonzero(W != 0)[0]) * 4 <= W.size or W.size == 0 or A3.size == 0:
        return np.stack([_odot(W, A) for A in A3])
    Wi, dw = _scaled(W)
    Ai, da = _scaled(A3)
    P = np.stack([Wi.dot(A) for A in Ai])
    d = dw * da
    out = np.empty(P.shape, dtype=object)
    out.flat[:] = [Fraction(int(t), d) for t in P.flat]
    return out


def _int_dot(W: np.ndarray, A: np.ndarray, scaled_w=None) -> np.ndarray:
    """W @ A exactly, as integers over each side's common denominator (a float's is a power
    of two): Python int products instead of Fraction ones, which normalise at every step.
    scaled_w: `_scaled(W)` if already known."""
    if W.size == 0 or A.size == 0:
        return W.dot(A)
    Wi, dw = scaled_w if scaled_w is not None else _scaled(W)
    Ai, da = _scaled(A)
    P = Wi.dot(Ai)
    d = dw * da
    out = np.empty(P.shape, dtype=object)
    out.flat[:] = [Fraction(int(t), d) for t in P.flat]
    return out


def _scaled(M: np.ndarray) -> tuple[np.ndarray, int]:
    """(integer array N, d) with M = N / d exactly."""
    flat = [t if isinstance(t, Fraction) else Fraction(t) for t in M.flat]
    d = math.lcm(*{t.denominator for t in flat})
    N = np.empty(M.shape, dtype=object)
    N.flat[:] = [t.numerator * (d // t.denominator) for t in flat]
    return N, d


def _nonzero_terms(terms: dict[int, np.ndarray]) -> tuple[tuple[int, np.ndarray], ...]:
    """The sources a value really reads (a cancelled contribution is no edge of the graph)."""
    return tuple((s, m) for s, m in sorted(terms.items()) if any(t != 0 for t in m.flat))


def _mp_fraction(r) -> Fraction:
    man, exp = (int(t) for t in mpmath.mpf(r).man_exp)
    return Fraction(man * 2**exp) if exp >= 0 else Fraction(man, 2**-exp)


MAX_ONNX_BYTES = 512 << 20  # an ONNX file (or its gzip stream, unpacked) above this is refused


def read_model(path: str, span: Span | None = None):
    """The onnx ModelProto of a `.onnx` or `.onnx.gz` file; errors are SpecErrors.

    Only a regular file is read, and at most `MAX_ONNX_BYTES` of it (unpacked), so a device
    such as /dev/zero or a gzip bomb is a located error, not a hang."""
    from .fileio import read_regular_file

    try:
        import onnx
    except ImportError:
        raise SpecError("reading ONNX files needs the `onnx` package", span,
                        fix='pip install "snn-verify[onnx]"') from None
    try:
        data = read_regular_file(path, MAX_ONNX_BYTES, "ONNX file", span)
    except FileNotFoundError:
        raise SpecError(f"ONNX file not found: {path}", span) from None
    except OSError as exc:
        raise SpecError(f"cannot read ONNX file {path}: {exc.strerror or exc}", span) from None
    try:
        if path.endswith(".gz"):
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as fh:
                data = fh.read(MAX_ONNX_BYTES + 1)
            if len(data) > MAX_ONNX_BYTES:
                raise SpecError(f"ONNX file {path} unpacks to more than {MAX_ONNX_BYTES} bytes",
                                span)
        return onnx.load_from_string(data)
    except SpecError:
        raise
    except Exception as exc:  # noqa: BLE001 - protobuf and gzip raise several unrelated types
        raise SpecError(f"cannot read ONNX file {path}: {exc}", span) from None


def load_onnx(path: str, span: Span | None = None) -> OnnxNet:
    """Import an ONNX network as exact affine maps and activations (see module doc)."""
    model = read_model(path, span)
    return _Importer(path, span).run(model)


# ---- bridge to the .snn IR ------------------------------------------------------------------

_ACT_NAMES = {"relu": "relu", "leaky_relu": "leaky_relu", "sigmoid": "sigmoid", "tanh": "tanh",
              "softmax": "softmax"}


def network_from_onnx(path: str, name: str, span: Span | None = None,
                      in_shape: tuple[int, ...] | None = None, budget=None):
    """An `ir.Network` (concrete Rational weights) and its weight TensorVars.

    For `network NAME(in=N) load "net.onnx" { }` in a spec: the layers come from the file. A
    chain becomes `dense` layers; any other graph (skip connections, branches) one
    `onnx_graph` layer that keeps every edge of the graph. Weights are the float values of the
    file read as the shortest decimal that round-trips (`Fraction(repr(float))`, as for other
    weight files); composed maps that are not floats keep their exact value.
    """
    from .ir import Layer, Network, TensorVar
    from .layers import onnx_graph

    model = read_model(path, span)
    if budget is not None:  # before the import computes with any weight
        budget.charge(sum(math.prod(init.dims) for init in model.graph.initializer), span,
                      f"the weights of {os.path.basename(path)}")
    net = _Importer(path, span).run(model)
    if in_shape is not None and int(np.prod(in_shape)) != net.n_in:
        raise SpecError(f"{os.path.basename(path)} takes {net.n_in} inputs, the network is "
                        f"declared with in={list(in_shape) if len(in_shape) > 1 else in_shape[0]}",
                        span, fix=f"write in={net.n_in}")

    def act_of(act: Act | None) -> tuple[str, tuple]:
        if act is None:
            return "identity", ()
        kind = _ACT_NAMES[act.kind]
        if kind == "softmax":
            raise SpecError(f"{os.path.basename(path)}: activation `softmax` is not available "
                            "in .snn dense layers", span,
                            fix="export the network without its final Softmax and apply "
                                "softmax(...) in the claim")
        return kind, ((_rational(act.alpha),) if act.alpha is not None else ())

    def rationals(a: np.ndarray) -> np.ndarray:
        out = np.empty(a.shape, dtype=object)
        out.flat[:] = [_rational(t) for t in a.flat] if a.size else []
        return out

    if not net.is_chain:
        blocks = [(tuple((s, rationals(W)) for s, W in blk.terms), rationals(blk.b),
                   *act_of(blk.act)) for blk in net.blocks]

        def weight_name(kind, k, s):
            return f"{name}.{kind}{k}" if s is None else f"{name}.{kind}{k}_{s}"

        layer, weights = onnx_graph.make_layer(blocks, net.n_in, name, weight_name, span)
        network = Network(name=name, in_shape=in_shape or (net.n_in,),
                          out_shape=layer.out_shape, layers=(layer,), span=span)
        return network, weights
    layers, weights = [], []
    size = net.n_in
    for k, (aff, act) in enumerate(net.chain(), start=1):
        kind, params = act_of(act)
        n_out, n_in = aff.W.shape
        W = TensorVar(name=f"{name}.W{k}", role="param", shape=(n_out, n_in),
                      entries=tuple(rationals(aff.W).flat), span=span)
        b = TensorVar(name=f"{name}.b{k}", role="param", shape=(n_out,),
                      entries=tuple(rationals(aff.b).flat), span=span)
        weights += [W, b]
        layers.append(Layer(kind="dense", index=k, in_shape=(size,), out_shape=(n_out,),
                            options=(("act", kind), ("act_params", params), ("bias", True)),
                            params=(W.name, b.name), span=span))
        size = n_out
    network = Network(name=name, in_shape=in_shape or (net.n_in,), out_shape=(size,),
                      layers=tuple(layers), span=span)
    return network, weights


def _rational(t: Fraction):
    """A float's value as the shortest decimal that round-trips (what `Fraction(repr(f))`
    gives, parsed with integer arithmetic), any other rational as it is."""
    import math

    import sympy as sp

    f = float(t)
    if math.isfinite(f) and Fraction(f) == t:
        text = repr(f)
        mant, _, exp = text.partition("e")
        whole, _, frac = mant.partition(".")
        p = int(whole + frac)
        shift = int(exp or 0) - len(frac)
        q = 1
        if shift >= 0:
            p *= 10 ** shift
        else:
            q = 10 ** -shift
        return sp.Rational(p, q)
    return sp.Rational(t.numerator, t.denominator)
