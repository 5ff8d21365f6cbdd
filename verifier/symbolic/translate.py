"""Expressions → sympy terms over a shared `Program`, with shape checks.

Values are numpy object arrays of sympy terms: shape () for scalars, (n,) for vectors,
(n, m) for matrices. Elementwise operations need equal shapes (or a scalar operand); there is
no other broadcasting, so a transposition mistake is a located error, not a silent outer
product. Network applications and elementwise functions bind every entry to a program
symbol; derivative operators run reverse mode over the program.
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from ..diagnostics import SpecError
from ..layers import RULES
from ..layers.activations import ACTIVATIONS, step
from ..syntax import ast
from . import reverse
from .program import Program

MAX_POWER = 64


def real_or_error(value, span):
    """Constants folded by sympy must stay real and finite (log(0), sqrt(-1) do not)."""
    value = sp.sympify(value)
    if value.has(sp.zoo, sp.nan, sp.I, sp.oo, -sp.oo):
        raise SpecError(f"this evaluates to {value}, which is not a real number", span)
    return value


class ShapeError(SpecError):
    """Operands whose shapes do not fit. With symbolic sizes (`dim`) a claim that has one at
    some size is false as stated there: that claim is refuted, the others still decided."""


def scalar(v) -> np.ndarray:
    return np.array(sp.sympify(v), dtype=object)


def _shape(v: np.ndarray) -> str:
    return "scalar" if v.shape == () else "[" + ", ".join(map(str, v.shape)) + "]"


class Translator:
    """Evaluates expression ASTs of one spec; results share one program."""

    def __init__(self, spec=None, program: Program | None = None):
        self.spec = spec
        self.program = program if program is not None else Program()
        self.env: dict[str, np.ndarray] = {}
        self.networks = {}
        self.lets: dict[str, object] = {}
        self.let_values: dict[str, np.ndarray] = {}
        self._evaluating: set[str] = set()
        self.origins: dict[sp.Expr, tuple] = {}  # derivative term → ("derivative", f, v)
        self.leaf_names: dict[sp.Symbol, str] = {}
        self._applied: dict[tuple, np.ndarray] = {}  # (network, input entries) -> outputs
        if spec is not None:
            for name, n in spec.dims:
                self.env[name] = scalar(n)
            for t in spec.inputs + spec.params:
                arr = np.array(t.entries, dtype=object).reshape(t.shape)
                self.env[t.name] = arr
                for e in t.entries:
                    if isinstance(e, sp.Symbol):
                        self.leaf_names[e] = t.name
            self.program.reserve(e.name for e in self.leaf_names)
            self.networks = {n.name: n for n in spec.networks}
            self.lets = dict(spec.lets)

    @classmethod
    def constants_only(cls, dims: dict[str, int] | None = None) -> Translator:
        tr = cls()
        for name, n in (dims or {}).items():
            tr.env[name] = scalar(n)
        return tr

    # ---- dispatch
    def value(self, node) -> np.ndarray:
        method = getattr(self, "_" + type(node).__name__, None)
        if method is None:
            raise SpecError(f"unsupported expression {type(node).__name__}", node.span)
        out = method(node)
        if not isinstance(out, np.ndarray):
            out = scalar(out)  # numpy turns 0-d results back into plain scalars
        return out

    def _Num(self, node: ast.Num):
        return scalar(sp.Rational(node.value.numerator, node.value.denominator))

    def _Ref(self, node: ast.Ref):
        name = node.name
        if name in self.env:
            return self.env[name]
        if name in self.lets:
            return self._let(name, node)
        if name in self.networks:
            raise SpecError(f"`{name}` is a network; apply it to an input", node.span,
                            fix=f"write {name}(x)")
        if len(node.parts) == 2 and node.parts[0] in self.networks:
            net = self.networks[node.parts[0]]
            have = sorted(k.split(".", 1)[1] for k in self.env if k.startswith(net.name + "."))
            raise SpecError(f"network `{net.name}` has no parameter `{node.parts[1]}`", node.span,
                            fix="its parameters are " + ", ".join(have))
        raise SpecError(f"unknown name `{name}`", node.span,
                        fix="declare it with input, param or let before use" if self.spec else
                        "only numbers are allowed here")

    def _let(self, name: str, node) -> np.ndarray:
        if name in self.let_values:
            return self.let_values[name]
        if name in self._evaluating:
            raise SpecError(f"`{name}` is defined in terms of itself", node.span)
        self._evaluating.add(name)
        try:
            v = self.value(self.lets[name])
        finally:
            self._evaluating.discard(name)
        self.let_values[name] = v
        return v

    def _ListLit(self, node: ast.ListLit):
        items = [self.value(i) for i in node.items]
        first = items[0].shape
        for item, sub in zip(items, node.items):
            if item.shape != first:
                raise ShapeError(f"list entries must have one shape: {_shape(item)} after "
                                f"{_shape(items[0])}", sub.span)
            if len(first) >= 2:
                raise SpecError("tensors have at most two dimensions", node.span)
        out = np.empty((len(items),) + first, dtype=object)
        for k, item in enumerate(items):
            out[k] = item[()] if item.shape == () else item
        return out

    def _Neg(self, node: ast.Neg):
        return -self.value(node.operand)

    def _BinOp(self, node: ast.BinOp):
        a, b = self.value(node.left), self.value(node.right)
        if node.op == "@":
            return self._matmul(a, b, node)
        if node.op == "^":
            return self._power(a, b, node)
        if a.shape != b.shape and a.shape != () and b.shape != ():
            raise ShapeError(f"shapes {_shape(a)} and {_shape(b)} do not match for `{node.op}`",
                            node.span, fix="use @ for matrix products and ^T to transpose")
        if node.op == "+":
            return a + b
        if node.op == "-":
            return a - b
        if node.op == "*":
            return a * b
        for d in np.ravel(b):
            if sp.sympify(d).is_zero:
                raise SpecError("division by zero", node.right.span)
        return np.vectorize(lambda x, y: x / y, otypes=[object])(a, b)

    def _matmul(self, a, b, node):
        if a.ndim == 0 or b.ndim == 0:
            raise SpecError("@ needs vectors or matrices; use * to scale", node.span)
        if a.shape[-1] != b.shape[0]:
            raise ShapeError(f"cannot multiply {_shape(a)} by {_shape(b)}: inner sizes "
                            f"{a.shape[-1]} and {b.shape[0]} differ", node.span,
                            fix="check the orientation; ^T transposes")
        out = np.dot(a, b)
        return out if isinstance(out, np.ndarray) else scalar(out)

    def _power(self, a, b, node):
        if b.shape != ():
            raise SpecError("exponents are single numbers", node.right.span)
        e = sp.sympify(b[()])
        if not e.is_Rational:
            raise SpecError(f"the exponent must be a constant number, got {e}",
                            node.right.span, fix="write a constant such as 2, -1 or (3/2); "
                            "for a variable exponent y write exp(y * log(x))")
        if abs(e.p) > MAX_POWER or e.q > MAX_POWER:
            raise SpecError(f"exponent {e} is out of range: p/q with |p| and q at most "
                            f"{MAX_POWER}", node.right.span,
                            fix="write a larger power as a product of powers, or take exp/log")
        if not e.is_Integer:
            return self._real_power(a, e, node)
        if e < 0 and any(sp.sympify(x).is_zero for x in a.flat):
            raise SpecError("division by zero", node.span)
        return np.vectorize(lambda x: real_or_error(sp.sympify(x) ** e, node.span),
                            otypes=[object])(a)

    def _real_power(self, a, e: sp.Rational, node):
        """x^(p/q), the real power: defined for x >= 0 (x > 0 when p/q < 0). Each application
        is a program symbol, so sympy never cancels it against another power ((x^(1/2))^2 is
        not x where x < 0); engines enforce the domain per box, and a base that is outside it
        everywhere on the declared domain is a located error here."""
        where = "x > 0" if e < 0 else "x >= 0"
        out = np.empty(a.shape, dtype=object)
        for idx in np.ndindex(a.shape):
            x = sp.sympify(a[idx])
            if x.is_number:
                if x.is_negative or (e < 0 and x.is_zero) or not x.is_real:
                    raise SpecError(f"x^({e}) is the real power, defined for {where}; the base "
                                    f"is {x} here", node.span,
                                    fix="powers of negative numbers: use an integer exponent")
                out[idx] = real_or_error(x ** e, node.span)
                continue
            self._check_power_domain(x, e, node, where)
            arg = self.program.assign(x, "pow.arg")
            out[idx] = self.program.assign(sp.Pow(arg, e), "pow")
        return out

    def _check_power_domain(self, x, e, node, where: str) -> None:
        """A located error when the base is outside the power's domain on all of the declared
        input domain (an interval enclosure of the base lies below 0, or at most 0 for p/q < 0)."""
        if self.spec is None:
            return
        from ..engines.intervals import bounds_of, interval_of  # engines import this package

        box = {}
        for t in self.spec.inputs + self.spec.params:
            if t.lo is None:
                continue
            for sym, lo, hi in zip(t.entries, t.lo, t.hi):
                if isinstance(sym, sp.Symbol):
                    box[sym] = (lo, hi)
        if not any(s in box for s in self.program.leaves([x])):
            return
        lo, hi = bounds_of(interval_of(self.program, x, box, linear=False))
        if hi is not None and (hi < 0 or (e < 0 and hi <= 0)):
            raise SpecError(f"x^({e}) is the real power, defined for {where}, but its base is "
                            f"at most {hi} on the whole input domain", node.span,
                            fix="check the sign of the base or the input domain")

    def _Transpose(self, node: ast.Transpose):
        v = self.value(node.operand)
        if v.ndim == 1:
            return v.reshape((1, v.shape[0]))  # a vector transposes to a row
        return v.T

    def _Index(self, node: ast.Index):
        v = self.value(node.base)
        if len(node.indices) > v.ndim:
            raise ShapeError(f"{len(node.indices)} indices for a value of shape {_shape(v)}",
                            node.span)
        idx = []
        for axis, i in enumerate(node.indices):
            if i is None:
                idx.append(slice(None))
                continue
            iv = self.value(i)
            k = sp.sympify(iv[()]) if iv.shape == () else None
            if k is None or not k.is_Integer:
                raise SpecError("indices are integers (0-based)", i.span)
            if not 0 <= int(k) < v.shape[axis]:
                raise SpecError(f"index {k} out of range for size {v.shape[axis]} (0-based)",
                                i.span)
            idx.append(int(k))
        out = v[tuple(idx)]
        return out if isinstance(out, np.ndarray) else scalar(out)

    # ---- calls
    def _Call(self, node: ast.Call):
        if node.func in self.networks:
            return self._apply_network(self.networks[node.func], node)
        fn = BUILTINS.get(node.func)
        if fn is None:
            raise SpecError(f"unknown function `{node.func}`", node.span,
                            fix="functions: " + ", ".join(sorted(BUILTINS)))
        return fn(self, node)

    def _apply_network(self, net, node):
        if len(node.args) != 1 or node.kwargs:
            raise SpecError(f"network `{net.name}` takes one input", node.span)
        x = self.value(node.args[0])
        if x.shape != net.in_shape:
            raise SpecError(f"network `{net.name}` expects input shape {list(net.in_shape)}, got "
                            f"{_shape(x)}", node.args[0].span)
        # the program shares identical terms anyway; applying a network again to the same
        # input (`max(n(x)[1], n(x)[2]) > n(x)[0]`) need not rebuild them
        key = (net.name, x.shape, tuple(x.flat))
        hit = self._applied.get(key)
        if hit is not None:
            return hit.copy()
        params = {t: self.env[t] for layer in net.layers for t in layer.params}
        for layer in net.layers:
            x = RULES[layer.kind].forward(layer, x, params, self.program, net.name)
        self._applied[key] = x
        return x.copy()

    def elementwise(self, fn, v: np.ndarray, hint: str, span=None) -> np.ndarray:
        """Apply a sympy function entrywise, binding each application to a program symbol."""
        out = np.empty(v.shape, dtype=object)
        for idx in np.ndindex(v.shape):
            arg = self.program.assign(v[idx], f"{hint}.arg")
            out[idx] = self.program.assign(real_or_error(fn(arg), span), hint)
        return out

    # ---- derivatives
    def leaves_of(self, v: np.ndarray, node) -> list[sp.Symbol]:
        out = []
        for e in v.flat:
            e = sp.sympify(e)
            if not isinstance(e, sp.Symbol) or self.program.is_defined(e):
                raise SpecError("derivatives are taken with respect to inputs or free "
                                "(symbolic) parameters", node.span,
                                fix="name an input such as x[0] or a symbolic weight")
            out.append(e)
        return out

    def derivative(self, f: np.ndarray, wrt_node, flatten: bool = False) -> np.ndarray:
        """d f / d w with shape f.shape + w.shape (at most two dimensions).

        `flatten` (Jacobians) takes a matrix w row-major as a vector: [len(f), rows * cols].
        """
        w = self.value(wrt_node)
        if flatten:
            w = w.reshape(-1)
        leaves = self.leaves_of(w, wrt_node)
        if f.ndim + w.ndim > 2:
            raise SpecError("derivative would have more than two dimensions", wrt_node.span,
                            fix="index the expression first, e.g. d(f(x)[0])/d(x)")
        rows = []
        for fi in f.flat:
            g = reverse.gradient(self.program, fi, leaves, tag="d")
            for gij, leaf in zip(g, leaves):
                self.origins.setdefault(gij, ("derivative", sp.sympify(fi), leaf))
            rows.append(g)
        out = np.empty(f.shape + w.shape, dtype=object)
        for i, fi_idx in enumerate(np.ndindex(f.shape)):
            for j, wj_idx in enumerate(np.ndindex(w.shape)):
                out[fi_idx + wj_idx] = rows[i][j]
        return out

    def _Deriv(self, node: ast.Deriv):
        return self.derivative(self.value(node.expr), node.wrt)

    def hessian(self, f: np.ndarray, wrt_node, diagonal: bool, span) -> np.ndarray:
        if f.shape != ():
            raise SpecError(f"hessian needs a scalar, got {_shape(f)}", span,
                            fix="index the output, e.g. f(x)[0]")
        w = self.value(wrt_node)
        if w.ndim not in (1, 2):  # a matrix (a sequence input) is flattened row-major
            raise SpecError("hessian is taken with respect to a vector or matrix", wrt_node.span)
        leaves = self.leaves_of(w, wrt_node)
        h = reverse.hessian(self.program, f[()], leaves, diagonal=diagonal)
        return np.array(h, dtype=object)


def _args(node: ast.Call, n: int, names: str = "") -> None:
    if len(node.args) != n or node.kwargs:
        raise SpecError(f"`{node.func}` takes {n} argument(s){names}", node.span)


def _unary(fn, hint):
    def rule(tr: Translator, node):
        _args(node, 1)
        return tr.elementwise(fn, tr.value(node.args[0]), hint, node.span)

    return rule


def _leaky(tr: Translator, node):
    if len(node.args) not in (1, 2) or node.kwargs:
        raise SpecError("`leaky_relu` takes x and an optional slope", node.span)
    alpha = sp.Rational(1, 100)
    if len(node.args) == 2:
        a = tr.value(node.args[1])
        if a.shape != () or not sp.sympify(a[()]).is_Rational:
            raise SpecError("the slope of leaky_relu is a number", node.args[1].span)
        alpha = sp.sympify(a[()])
    return tr.elementwise(lambda z: ACTIVATIONS["leaky_relu"].build(z, alpha),
                          tr.value(node.args[0]), "leaky_relu")


def _sum(tr: Translator, node):
    if len(node.args) != 1:
        raise SpecError("`sum` takes one argument and an optional axis=0|1", node.span)
    v = tr.value(node.args[0])
    axis = None
    for k, val in node.kwargs:
        if k != "axis":
            raise SpecError(f"`sum` has no option `{k}`", node.span)
        a = tr.value(val)
        axis = int(a[()]) if a.shape == () and sp.sympify(a[()]).is_Integer else -1
        if not 0 <= axis < max(v.ndim, 1):
            raise SpecError(f"axis must be 0..{v.ndim - 1}", val.span)
    if axis is None:
        return scalar(sp.Add(*v.flat))
    return np.sum(v, axis=axis)


def _abs(tr, node):
    _args(node, 1)
    return np.vectorize(lambda x: sp.Abs(x), otypes=[object])(tr.value(node.args[0]))


def _maxmin(fn):
    """max(e) of a tensor's entries, max(e, axis=k) along an axis (nerva's rows_max is
    axis=1), max(a, b, ...) entrywise over tensors of one shape (scalars broadcast)."""

    def rule(tr: Translator, node):
        if not node.args:
            raise SpecError(f"`{node.func}` needs at least one argument", node.span)
        vals = [tr.value(a) for a in node.args]
        if len(vals) == 1:
            v = vals[0]
            if not node.kwargs:
                return scalar(fn(*v.flat))
            if v.ndim == 0:
                raise SpecError(f"`{node.func}` of a scalar has no axis", node.span)
            moved = np.moveaxis(v, _axis(tr, node, 0, v.ndim), -1)
            out = np.empty(moved.shape[:-1], dtype=object)
            for idx in np.ndindex(out.shape):
                out[idx] = fn(*moved[idx])
            return out
        if node.kwargs:
            raise SpecError(f"axis= is for `{node.func}` of one tensor", node.span)
        shapes = sorted({v.shape for v in vals if v.shape != ()})
        if len(shapes) > 1:
            raise SpecError(f"`{node.func}` of shapes " + " and ".join(
                _shape(np.empty(s)) for s in shapes) + " entrywise", node.span,
                fix="give tensors of one shape (scalars broadcast), or one tensor")
        shape = shapes[0] if shapes else ()
        parts = [np.broadcast_to(v, shape) for v in vals]
        out = np.empty(shape, dtype=object)
        for idx in np.ndindex(shape):
            out[idx] = fn(*(p[idx] for p in parts))
        return out

    return rule


def _grad(tr: Translator, node):
    _args(node, 2, " (expression, parameter)")
    f = tr.value(node.args[0])
    if f.shape != ():
        raise SpecError(f"grad needs a scalar, got {_shape(f)}", node.args[0].span,
                        fix="index the output, e.g. f(x)[0], or use jacobian")
    return tr.derivative(f, node.args[1])


def _jacobian(tr: Translator, node):
    _args(node, 2, " (expression, input)")
    f = tr.value(node.args[0])
    if f.ndim != 1:
        raise SpecError(f"jacobian needs a vector, got {_shape(f)}", node.args[0].span)
    return tr.derivative(f, node.args[1], flatten=True)


def _hessian(diagonal):
    def rule(tr: Translator, node):
        _args(node, 2, " (scalar expression, input)")
        return tr.hessian(tr.value(node.args[0]), node.args[1], diagonal, node.span)

    return rule


def _transpose(tr, node):
    _args(node, 1)
    return tr._Transpose(ast.Transpose(operand=node.args[0], span=node.span))


def _diag(tr, node):
    _args(node, 1)
    v = tr.value(node.args[0])
    if v.ndim != 2 or v.shape[0] != v.shape[1]:
        raise ShapeError(f"diag takes a square matrix, got {_shape(v)}", node.span,
                        fix="Diag(v) builds a diagonal matrix from a vector")
    return np.array([v[i, i] for i in range(v.shape[0])], dtype=object)


def _Diag(tr, node):
    _args(node, 1)
    v = tr.value(node.args[0])
    if v.ndim != 1:
        raise ShapeError(f"Diag takes a vector, got {_shape(v)}", node.span)
    out = np.full((v.shape[0], v.shape[0]), sp.Integer(0), dtype=object)
    for i in range(v.shape[0]):
        out[i, i] = v[i]
    return out


def _size(tr: Translator, node, what: str) -> int:
    v = tr.value(node)
    n = sp.sympify(v[()]) if v.shape == () else None
    if n is None or not n.is_Integer or not 0 < n <= 4096:
        raise SpecError(f"{what} must be a positive integer (at most 4096)", node.span,
                        fix="a size is a literal count from 1 to 4096")
    return int(n)


def _filled(value):
    def rule(tr: Translator, node):
        if len(node.args) not in (1, 2) or node.kwargs:
            raise SpecError(f"`{node.func}` takes one or two sizes", node.span)
        shape = tuple(_size(tr, a, "a size") for a in node.args)
        return np.full(shape, sp.Integer(value), dtype=object)

    return rule


def _eye(tr, node):
    _args(node, 1)
    n = _size(tr, node.args[0], "a size")
    out = np.full((n, n), sp.Integer(0), dtype=object)
    for i in range(n):
        out[i, i] = sp.Integer(1)
    return out


def _axis(tr, node, default: int, ndim: int) -> int:
    axis = default
    for k, val in node.kwargs:
        if k != "axis":
            raise SpecError(f"`{node.func}` has no option `{k}`", node.span)
        a = tr.value(val)
        if a.shape != () or not sp.sympify(a[()]).is_Integer or not 0 <= int(a[()]) < ndim:
            raise SpecError(f"axis must be 0..{ndim - 1}", val.span)
        axis = int(a[()])
    return axis


def _repeat(tr, node):
    """repeat(v, n): n copies of v as rows; axis=1: as columns."""
    if len(node.args) != 2:
        raise SpecError("`repeat` takes a vector and a count (and axis=0|1)", node.span)
    v = tr.value(node.args[0])
    if v.ndim != 1:
        raise ShapeError(f"repeat takes a vector, got {_shape(v)}", node.args[0].span)
    n = _size(tr, node.args[1], "the count")
    rows = np.array([list(v)] * n, dtype=object)
    return rows if _axis(tr, node, 0, 2) == 0 else rows.T


def _softmax(log: bool):
    def rule(tr: Translator, node):
        if len(node.args) != 1:
            raise SpecError(f"`{node.func}` takes one argument (and axis=)", node.span)
        v = tr.value(node.args[0])
        if v.ndim == 0:
            raise SpecError(f"{node.func} needs a vector or matrix", node.span)
        axis = _axis(tr, node, v.ndim - 1, v.ndim)  # rows of a matrix by default
        moved = np.moveaxis(v, axis, -1)
        out = np.empty(moved.shape, dtype=object)
        p = tr.program
        for idx in np.ndindex(moved.shape[:-1]):
            e = [p.assign(sp.exp(p.assign(x, "softmax.arg")), "exp") for x in moved[idx]]
            total = p.assign(sp.Add(*e), "softmax.sum")
            for j, ej in enumerate(e):
                if log:
                    out[idx + (j,)] = p.assign(moved[idx + (j,)] - sp.log(total), "log_softmax")
                else:
                    out[idx + (j,)] = p.assign(ej / total, "softmax")
        return np.moveaxis(out, -1, axis)

    return rule


def _vjp(tr, node):
    """vjp(Y, X, DY): the gradient of sum(DY * Y) with respect to X."""
    _args(node, 3, " (output, input, upstream gradient)")
    y, dy = tr.value(node.args[0]), tr.value(node.args[2])
    if y.shape != dy.shape:
        raise ShapeError(f"upstream gradient has shape {_shape(dy)}, the output {_shape(y)}",
                        node.args[2].span)
    return tr.derivative(scalar(sp.Add(*(y * dy).flat)), node.args[1])


def _srelu(tr, node):
    """srelu(x, al, tl, ar, tr): al-slope below tl, identity between, ar-slope above tr."""
    _args(node, 5, " (x, a_l, t_l, a_r, t_r)")
    x = tr.value(node.args[0])
    ps = [tr.value(a) for a in node.args[1:]]
    if any(p.shape != () for p in ps):
        raise SpecError("srelu's parameters are scalars", node.span)
    al, tl, ar, tr_ = (sp.sympify(p[()]) for p in ps)
    return tr.elementwise(lambda z: srelu_term(z, al, tl, ar, tr_), x, "srelu")


def srelu_term(x, al, tl, ar, tr):
    return sp.Piecewise((tl + al * (x - tl), x <= tl), (x, x < tr), (tr + ar * (x - tr), True))


def _sqrt(tr, node):
    _args(node, 1)
    return tr.elementwise(sp.sqrt, tr.value(node.args[0]), "sqrt", node.span)


def _axis_sum(axis):
    def rule(tr, node):
        _args(node, 1)
        v = tr.value(node.args[0])
        if v.ndim != 2:
            raise ShapeError(f"`{node.func}` takes a matrix, got {_shape(v)}", node.span)
        return np.sum(v, axis=axis)

    return rule


BUILTINS = {
    "ones": _filled(1),
    "zeros": _filled(0),
    "eye": _eye,
    "repeat": _repeat,
    "softmax": _softmax(False),
    "log_softmax": _softmax(True),
    "vjp": _vjp,
    "srelu": _srelu,
    "sqrt": _sqrt,
    "rowsum": _axis_sum(1),
    "colsum": _axis_sum(0),
    "tanh": _unary(sp.tanh, "tanh"),
    "sigmoid": _unary(ACTIVATIONS["sigmoid"].build, "sigmoid"),
    "softplus": _unary(ACTIVATIONS["softplus"].build, "softplus"),
    "relu": _unary(ACTIVATIONS["relu"].build, "relu"),
    "step": _unary(step, "step"),
    "exp": _unary(sp.exp, "exp"),
    "log": _unary(sp.log, "log"),
    "leaky_relu": _leaky,
    "abs": _abs,
    "sum": _sum,
    "max": _maxmin(sp.Max),
    "min": _maxmin(sp.Min),
    "grad": _grad,
    "jacobian": _jacobian,
    "hessian": _hessian(False),
    "hessian_diag": _hessian(True),
    "transpose": _transpose,
    "diag": _diag,
    "Diag": _Diag,
}
