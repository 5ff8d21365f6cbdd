"""ONNX networks → a chain of exact affine maps and elementwise activations.

`load_onnx(path)` reads a `.onnx` or `.onnx.gz` file and returns an `OnnxNet`: a list of
`Affine` layers (weights as exact `Fraction`s: every float in the file is a dyadic rational,
and consecutive affine operators are composed exactly) and `Act` layers (relu, leaky_relu,
sigmoid, tanh, softmax). The batch dimension is fixed to 1; input and output tensors are
flattened in row-major order, which is how VNN-LIB numbers `X_i` and `Y_j`.

Supported operators: Gemm, MatMul, Add, Sub, Mul, Div (by constants), Relu, LeakyRelu,
Sigmoid, Tanh, Softmax, BatchNormalization (inference), Flatten, Reshape, Identity, Dropout
(inference), Constant, Transpose, Squeeze, Unsqueeze, and Cast/Shape/Gather/Concat on
constants. Anything else is a `SpecError` naming the operator, the node and its index.

Conventions, stated: BatchNormalization's factor `scale / sqrt(var + eps)` is irrational in
general; it is taken to 128 bits (relative error below 1e-38). Constant-only subgraphs are
evaluated by numpy in their own dtype, as onnxruntime does.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from fractions import Fraction

import mpmath
import numpy as np

from .diagnostics import Span, SpecError

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

    kind: str  # relu | leaky_relu | sigmoid | tanh | softmax
    alpha: Fraction | None = None  # leaky_relu's slope for x < 0


@dataclass
class OnnxNet:
    """An imported network: input/output sizes and an alternating layer list."""

    path: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    input_name: str
    output_name: str
    layers: list  # Affine | Act

    @property
    def n_in(self) -> int:
        return int(np.prod(self.in_shape))

    @property
    def n_out(self) -> int:
        return int(np.prod(self.out_shape))

    def chain(self) -> list[tuple[Affine, Act | None]]:
        """(affine, activation) pairs; identity affines are inserted between activations."""
        out: list[tuple[Affine, Act | None]] = []
        pending: Affine | None = None
        size = self.n_in
        for layer in self.layers:
            if isinstance(layer, Affine):
                pending = layer if pending is None else compose(pending, layer)
                size = layer.W.shape[0]
            else:
                out.append((pending or identity_affine(size), layer))
                pending = None
        if pending is not None:
            out.append((pending, None))
        return out

    def evaluate_exact(self, x) -> list:
        """Output at x (rationals) exactly for piecewise-linear nets; else mpmath at 60 digits."""
        v = np.array([Fraction(t) for t in x], dtype=object)
        smooth = any(isinstance(la, Act) and la.kind in ("sigmoid", "tanh", "softmax")
                     for la in self.layers)
        ctx = mpmath.workdps(60) if smooth else _Null()
        with ctx:
            if smooth:
                v = np.array([mpmath.mpf(t.numerator) / t.denominator for t in v], dtype=object)
            for layer in self.layers:
                if isinstance(layer, Affine):
                    W, b = layer.W, layer.b
                    if smooth:
                        W = _to_mp(W)
                        b = _to_mp(b)
                    v = W.dot(v) + b
                else:
                    v = _apply_exact(layer, v)
            return list(v)

    def evaluate_float(self, x: np.ndarray) -> np.ndarray:
        """Float64 forward pass on a batch (B, n_in) → (B, n_out)."""
        v = np.asarray(x, dtype=np.float64)
        for layer in self.layers:
            if isinstance(layer, Affine):
                v = v @ to_float(layer.W).T + to_float(layer.b)
            else:
                v = apply_float(layer, v)
        return v


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


# ---- symbolic tensors: each entry an affine form over the current layer's input vector ----

@dataclass
class _Sym:
    """A tensor of `shape` whose entry i is sum_j A[i, j] v_j + c[i] (A None: v[rows[i]])."""

    shape: tuple[int, ...]
    c: np.ndarray  # object Fractions, (numel,)
    A: np.ndarray | None = None  # object (numel, d), or None for a selection
    rows: np.ndarray | None = None  # int (numel,), for a selection
    scale: np.ndarray | None = None  # object (numel,), for a selection (None: all ones)

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    def take(self, idx: np.ndarray, shape: tuple[int, ...]) -> _Sym:
        """Entries idx (flat indices) arranged in `shape` (reshapes, transposes, broadcasts)."""
        idx = np.asarray(idx, dtype=np.int64).ravel()
        if self.A is not None:
            return _Sym(shape, self.c[idx], A=self.A[idx])
        return _Sym(shape, self.c[idx], rows=self.rows[idx],
                    scale=None if self.scale is None else self.scale[idx])

    def dense(self, d: int) -> np.ndarray:
        if self.A is not None:
            return self.A
        A = np.full((self.numel, d), Fraction(0), dtype=object)
        for i, r in enumerate(self.rows):
            A[i, r] = Fraction(1) if self.scale is None else self.scale[i]
        return A

    def is_plain(self, d: int) -> bool:
        """The identity on v (no pending affine map)."""
        return (self.A is None and self.scale is None and len(self.rows) == d
                and bool(np.all(self.rows == np.arange(d))) and all(t == 0 for t in self.c))


def _zeros(n: int) -> np.ndarray:
    return np.full((n,), Fraction(0), dtype=object)


class _Importer:
    def __init__(self, path: str, span: Span | None):
        self.path = path
        self.span = span
        self.layers: list = []
        self.d = 0  # size of the current layer input vector v

    def error(self, msg: str, node=None, index=None, fix=None) -> SpecError:
        where = ""
        if node is not None:
            where = f" in node `{node.name or '(unnamed)'}` (#{index}, {node.op_type})"
        return SpecError(f"{os.path.basename(self.path)}: {msg}{where}", self.span, fix=fix)

    # ---- graph
    def run(self, model) -> OnnxNet:
        from onnx import numpy_helper

        g = model.graph
        self.values: dict[str, object] = {}
        for init in g.initializer:
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
        self.d = int(np.prod(dims)) if dims else 1
        self.values[inp.name] = _Sym(dims, _zeros(self.d), rows=np.arange(self.d))
        self._run_nodes(g)
        out_name = g.output[0].name
        if out_name not in self.values:
            raise self.error(f"the graph output `{out_name}` is never computed")
        out = self.values[out_name]
        if not isinstance(out, _Sym):  # a constant network: zero weights
            const = fractions(out)
            out = _Sym(tuple(const.shape), const.ravel(),
                       A=np.full((const.size, self.d), Fraction(0), dtype=object))
        if not out.is_plain(self.d) or not self.layers:
            self.layers.append(Affine(W=out.dense(self.d), b=out.c.copy()))
        return OnnxNet(path=self.path, in_shape=dims, out_shape=tuple(out.shape),
                       input_name=inp.name, output_name=out_name, layers=self.layers)

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
        if not isinstance(x, _Sym):
            raise self.fail("activation of a constant is not supported")
        if not x.is_plain(self.d):
            self.layers.append(Affine(W=x.dense(self.d), b=x.c.copy()))
        elif not self.layers or isinstance(self.layers[-1], Act):
            self.layers.append(identity_affine(self.d))
        self.layers.append(act)
        self.d = x.numel
        return _Sym(x.shape, _zeros(self.d), rows=np.arange(self.d))

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
            return _Sym(shape, bx.c + sign * by.c, A=bx.dense(self.d) + sign * by.dense(self.d))
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
            return _Sym(shape, c, A=bx.A * f[:, None])
        sc = f if bx.scale is None else bx.scale * f
        return _Sym(shape, c, rows=bx.rows, scale=sc)

    def matmul(self, x, w):
        """x @ w with exactly one of them symbolic (numpy matmul semantics)."""
        if not isinstance(x, _Sym) and not isinstance(w, _Sym):
            return np.matmul(x, w)
        if isinstance(x, _Sym) and isinstance(w, _Sym):
            raise self.fail("product of two input-dependent tensors is not linear")
        if isinstance(x, _Sym):
            W = fractions(w)
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
                A = np.full((m, self.d), Fraction(0), dtype=object)
                A[:, x.rows] = W.T  # fast path: a permutation of the input, e.g. layer 1
            else:
                A3 = x.dense(self.d).reshape(L, k, self.d)
                A = np.stack([W.T.dot(A3[l_]) for l_ in range(L)]).reshape(L * m, self.d)
            return _Sym(lead + (m,), c, A=A)
        # constant @ symbolic
        W = fractions(x)
        y = w
        if W.ndim != 2:
            raise self.fail(f"constant matrix operand must be 2-D, got {list(W.shape)}")
        if len(y.shape) == 1:
            if y.shape[0] != W.shape[1]:
                raise self.fail(f"sizes do not match: {list(W.shape)} @ {list(y.shape)}")
            return _Sym((W.shape[0],), W.dot(y.c), A=W.dot(y.dense(self.d)))
        if len(y.shape) != 2 or y.shape[0] != W.shape[1]:
            raise self.fail(f"sizes do not match: {list(W.shape)} @ {list(y.shape)}")
        k, p = y.shape
        A3 = y.dense(self.d).reshape(k, p, self.d)
        A = np.stack([W.dot(A3[:, j, :]) for j in range(p)], axis=1)
        c = W.dot(y.c.reshape(k, p))
        return _Sym((W.shape[0], p), c.ravel(), A=A.reshape(-1, self.d))

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
        if any(isinstance(a, _Sym) for a in args):
            raise self.fail("Concat of input-dependent tensors is not supported")
        return np.concatenate([np.asarray(a) for a in args], axis=attrs["axis"])

    def op_Add(self, args, attrs):
        return self.add(args[0], args[1])

    def op_Sub(self, args, attrs):
        return self.add(args[0], args[1], sign=-1)

    def op_Mul(self, args, attrs):
        x, y = args
        if isinstance(x, _Sym) and isinstance(y, _Sym):
            raise self.fail("product of two input-dependent tensors is not linear")
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


def _mp_fraction(r) -> Fraction:
    man, exp = (int(t) for t in mpmath.mpf(r).man_exp)
    return Fraction(man * 2**exp) if exp >= 0 else Fraction(man, 2**-exp)


def read_model(path: str, span: Span | None = None):
    """The onnx ModelProto of a `.onnx` or `.onnx.gz` file; errors are SpecErrors."""
    try:
        import onnx
    except ImportError:
        raise SpecError("reading ONNX files needs the `onnx` package", span,
                        fix='pip install "snn-verify[onnx]"') from None
    if not os.path.exists(path):
        raise SpecError(f"ONNX file not found: {path}", span)
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                return onnx.load_from_string(fh.read())
        return onnx.load(path)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several unrelated types
        raise SpecError(f"cannot read ONNX file {path}: {exc}", span) from None


def load_onnx(path: str, span: Span | None = None) -> OnnxNet:
    """Import an ONNX network as exact affine maps and activations (see module doc)."""
    model = read_model(path, span)
    return _Importer(path, span).run(model)


# ---- bridge to the .snn IR ------------------------------------------------------------------

_ACT_NAMES = {"relu": "relu", "leaky_relu": "leaky_relu", "sigmoid": "sigmoid", "tanh": "tanh",
              "softmax": "softmax"}


def network_from_onnx(path: str, name: str, span: Span | None = None,
                      in_shape: tuple[int, ...] | None = None):
    """An `ir.Network` of `dense` layers (concrete Rational weights) and its weight TensorVars.

    For `network NAME(in=N) load "net.onnx" { }` in a spec: the layers come from the file.
    Weights are the float values of the file read as the shortest decimal that round-trips
    (`Fraction(repr(float))`, as for other weight files); composed maps that are not floats
    keep their exact value.
    """
    from .ir import Layer, Network, TensorVar
    from .layers.activations import ACTIVATIONS

    net = load_onnx(path, span)
    if in_shape is not None and int(np.prod(in_shape)) != net.n_in:
        raise SpecError(f"{os.path.basename(path)} takes {net.n_in} inputs, the network is "
                        f"declared with in={list(in_shape) if len(in_shape) > 1 else in_shape[0]}",
                        span, fix=f"write in={net.n_in}")
    layers, weights = [], []
    size = net.n_in
    for k, (aff, act) in enumerate(net.chain(), start=1):
        kind, params = "identity", ()
        if act is not None:
            kind = _ACT_NAMES[act.kind]
            if kind not in ACTIVATIONS:
                raise SpecError(f"{os.path.basename(path)}: activation `{act.kind}` is not "
                                "available in .snn dense layers", span)
            if act.alpha is not None:
                params = (_rational(act.alpha),)
        n_out, n_in = aff.W.shape
        W = TensorVar(name=f"{name}.W{k}", role="param", shape=(n_out, n_in),
                      entries=tuple(_rational(t) for t in aff.W.flat), span=span)
        b = TensorVar(name=f"{name}.b{k}", role="param", shape=(n_out,),
                      entries=tuple(_rational(t) for t in aff.b.flat), span=span)
        weights += [W, b]
        layers.append(Layer(kind="dense", index=k, in_shape=(size,), out_shape=(n_out,),
                            options=(("act", kind), ("act_params", params), ("bias", True)),
                            params=(W.name, b.name), span=span))
        size = n_out
    network = Network(name=name, in_shape=in_shape or (net.n_in,), out_shape=(size,),
                      layers=tuple(layers), span=span)
    return network, weights


def _rational(t: Fraction):
    import sympy as sp

    f = float(t)
    if Fraction(f) == t:
        t = Fraction(repr(f))
    return sp.Rational(t.numerator, t.denominator)
