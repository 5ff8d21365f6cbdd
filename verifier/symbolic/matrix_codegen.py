"""Matrix-level numpy source for chains of layers: forward, pullback, Jacobian, mixed.

A chain of layers becomes Python source over generated identifiers only (`Z1`, `A1`, `W1`,
...; never a user's name), which `numeric.py` executes. A dense layer is one matmul forward
(`Z = A @ W.T + b`) and its transpose backward (`dA = dZ @ W`), with activation derivatives
written in the layer's own output where the registry has an output rule
(tanh' = 1 - A^2). Layers without a matrix rule are emitted by `scalar_layer.ScalarEmitter`
through the same five methods, so one chain may mix both.

Emitter protocol (all methods append lines to a `Code` and return generated names):

- `forward(code, x) -> y`: the layer's output; saves what `code.order` says the passes need.
- `backward(code, g, g_in, grads, jac)`: pull the output cotangent `g` back to the input
  (`g_in`, or None to skip) and, if `grads`, accumulate parameter gradients. `jac` is the
  number m of stacked cotangents `[B, m, out]` (Jacobians), or 0.
- `rr(code, c, want)`: reverse of `backward` (for mixed derivatives), given the cotangent `c`
  of `g_in`: accumulates parameter gradients, returns the cotangent of `g` (when `want`).
- `rf(code, at, want)`: reverse of `forward` with output cotangent `at` (or None) plus
  whatever `rr` left pending; returns the input cotangent (when `want`).
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ..layers.activations import (
    ACTIVATIONS,
    leaky_relu,
    leaky_step,
    output_rule,
    relu,
    sigmoid,
    softplus,
    step,
)

# ---- in-place elementwise code: no array is allocated per call --------------------------------
# Every batch-sized array lives in a workspace kept between calls (per batch size): on a
# machine where fresh pages are expensive, one new [10000, 32] array per operation cost more
# than the arithmetic. Elementwise terms are therefore written as ufunc calls with `out=`.


def _leaky(a, o, alpha):
    pick = "maximum" if alpha <= 1 else "minimum"  # x > 0: x, else alpha x
    return [f"numpy.multiply({a[0]}, {float(alpha)!r}, out={o})",
            f"numpy.{pick}({a[0]}, {o}, out={o})"]


def _leaky_step(a, o, alpha):
    return [f"numpy.greater({a[0]}, 0.0, out={o})",
            f"numpy.multiply({o}, {float(1 - alpha)!r}, out={o})",
            f"numpy.add({o}, {float(alpha)!r}, out={o})"]


# sympy function → in-place lines (args are operand texts, o the output buffer); each matches
# the registry's numpy evaluator to a few ulps (tests/test_compiled.py checks that)
# tanh as 2 / (1 + exp(-2z)) - 1 and sigmoid as 1 / (1 + exp(-z)) (the exponent clipped below
# exp's overflow): numpy's tanh is libm's, one element at a time, where numpy's exp is
# vectorised; on a [10000, 32] array these take under half of numpy.tanh's time. The tanh
# form is within a few ulps of 1 absolutely (relatively only away from 0), enough for
# gradients and searches (nothing decided relies on these floats: witnesses are replayed)
UFUNC_RULES = {
    sp.tanh: lambda a, o: [f"numpy.multiply({a[0]}, -2.0, out={o})",
                           f"numpy.minimum({o}, 709.0, out={o})", f"numpy.exp({o}, out={o})",
                           f"numpy.add({o}, 1.0, out={o})", f"numpy.divide(2.0, {o}, out={o})",
                           f"numpy.subtract({o}, 1.0, out={o})"],
    sp.exp: lambda a, o: [f"numpy.exp({a[0]}, out={o})"],
    sp.log: lambda a, o: [f"numpy.log({a[0]}, out={o})"],
    sigmoid: lambda a, o: [f"numpy.negative({a[0]}, out={o})",
                           f"numpy.minimum({o}, 709.0, out={o})", f"numpy.exp({o}, out={o})",
                           f"numpy.add({o}, 1.0, out={o})", f"numpy.divide(1.0, {o}, out={o})"],
    softplus: lambda a, o: [f"numpy.logaddexp(0.0, {a[0]}, out={o})"],
    relu: lambda a, o: [f"numpy.maximum({a[0]}, 0.0, out={o})"],
    step: lambda a, o: [f"numpy.greater({a[0]}, 0.0, out={o})"],
}


class InPlace:
    """Writes a small sympy term into a workspace buffer with ufunc calls (`out=`)."""

    def __init__(self, code: Code, names: dict, shape: str, prefix: str):
        self.code, self.names, self.shape, self.prefix = code, names, shape, prefix
        self.temps = 0

    def _temp(self) -> str:
        self.temps += 1
        return self.code.buf(f"{self.prefix}_{self.temps}", self.shape)

    def _operand(self, e, out_free: list) -> str:
        """A name or literal for e, computing it into a buffer when it is a compound term."""
        if e in self.names:
            return self.names[e]
        if e.is_Number:
            return repr(float(e))
        target = out_free.pop() if out_free else self._temp()
        return self.into(e, target)

    def into(self, e, out: str) -> str:
        """Lines that leave e's value in `out` (or the name of an array already holding it)."""
        line = self.code.line
        if e in self.names or e.is_Number:
            return self._operand(e, [])
        free = [out]
        if e.is_Add or e.is_Mul:
            terms = []
            for t in e.args:  # a - b as subtract, not a + (-1)*b
                neg = e.is_Add and t.is_Mul and t.args[0] == -1
                terms.append((neg, sp.Mul(*t.args[1:]) if neg else t))
            compound = sorted(terms, key=lambda st: st[1] in self.names or st[1].is_Number)
            ops = {id(t): self._operand(t, free) for _, t in compound}
            ordered = sorted(terms, key=lambda st: st[0])  # positive terms first
            acc = ops[id(ordered[0][1])]
            if ordered[0][0]:
                line(f"numpy.negative({acc}, out={out})")
                acc = out
            for neg, t in ordered[1:]:
                fn = "subtract" if neg else ("add" if e.is_Add else "multiply")
                line(f"numpy.{fn}({acc}, {ops[id(t)]}, out={out})")
                acc = out
            return acc
        if e.is_Pow and e.exp.is_Number:
            base = self._operand(e.base, free)
            if e.exp == 2:
                line(f"numpy.multiply({base}, {base}, out={out})")
            elif e.exp == -1:
                line(f"numpy.divide(1.0, {base}, out={out})")
            else:
                line(f"numpy.power({base}, {float(e.exp)!r}, out={out})")
            return out
        rule = UFUNC_RULES.get(type(e))
        if type(e) in (leaky_relu, leaky_step):
            alpha = e.args[1]
            rule = (lambda a, o: _leaky(a, o, alpha)) if type(e) is leaky_relu else (
                lambda a, o: _leaky_step(a, o, alpha))
        if rule is None:
            raise NotImplementedError(f"no in-place rule for {type(e).__name__}")
        args = [self._operand(a, []) for a in e.args[:1]]  # never `out`: rules reread it
        for ln in rule(args, out):
            line(ln)
        return out

    def assign(self, e, out: str) -> None:
        got = self.into(e, out)
        if got != out:
            self.code.line(f"numpy.copyto({out}, {got})")


_z, _a, _s = sp.symbols("z a s", real=True)


@dataclass(frozen=True, slots=True)
class ActivationCode:
    """An activation's value, first and second derivative as sympy terms in z (input),
    a (output) and s (first derivative). `d1` is None when it is the constant 1 (identity),
    `d2` None when it is 0."""

    value: sp.Expr
    d1: sp.Expr | None
    d2: sp.Expr | None

    @property
    def identity(self) -> bool:
        return self.d1 is None


def activation_code(name: str, params: tuple) -> ActivationCode:
    """Derivatives of a registry activation, in its output where the registry has a rule."""
    act = ACTIVATIONS[name]
    fn = act.build(_z, *params)
    if fn == _z:
        return ActivationCode(value=_z, d1=None, d2=None)
    rule = output_rule(fn, _a)
    if rule is not None:
        d1 = rule
        d2 = sp.diff(rule, _a) * _s  # d/dz of rule(a(z)) = rule'(a) * a'
    else:
        d1 = sp.diff(fn, _z)
        d2 = sp.diff(d1, _z)
        if d1.is_Function:
            d2 = d2.xreplace({d1: _s})  # reuse s = a' (softplus'' = s (1 - s))
    return ActivationCode(value=fn, d1=d1, d2=None if d2 == 0 else d2)


class Code:
    """Lines of one generated function, its workspace buffers and gradient accumulators."""

    def __init__(self, name: str, args: list[str], order: int):
        self.name, self.args, self.order = name, args, order
        self.lines: list[str] = []
        self.defined: set[str] = set()
        self.buffers: dict[str, str] = {}  # name -> shape text in B (the batch size)
        self.params = True  # False: dense layers skip parameter gradients (input-only passes)

    def line(self, text: str) -> None:
        self.lines.append(text)

    def buf(self, name: str, shape: str) -> str:
        self.buffers[name] = shape
        return name

    def acc(self, target: str, expr: str) -> None:
        if target in self.defined:
            self.line(f"{target} += {expr}")
        else:
            self.defined.add(target)
            self.line(f"{target} = {expr}")

    def grad_or_zero(self, target: str, param: str) -> str:
        return target if target in self.defined else f"numpy.zeros_like({param})"

    def source(self) -> str:
        """The function, preceded by the allocator of its workspace (one per batch size)."""
        names = list(self.buffers)
        alloc = "".join(f"numpy.empty({self.buffers[n]}), " for n in names)
        head = [f"def _alloc_{self.name}(B):", f"    return [{alloc}]", "",
                f"def {self.name}({', '.join(self.args)}):"]
        body = []
        if names:  # `_ws` (a dict in the function's scope) keeps a few batch sizes
            body = ["_w = _ws.get(X.shape[0])", "if _w is None:",
                    "    if len(_ws) > 4:", "        _ws.clear()",
                    f"    _w = _ws[X.shape[0]] = _alloc_{self.name}(X.shape[0])",
                    f"{', '.join(names)}, = _w"]
        return "\n".join(head + ["    " + ln for ln in body + self.lines]) + "\n"


class DenseEmitter:
    """dense(OUT, ACT): Z = X @ W.T + b, A = act(Z); one matmul each way, all in place."""

    def __init__(self, layer, k: int):
        self.k, self.n_in, self.n_out = k, layer.in_shape[0], layer.out_shape[0]
        self.W = f"W{k}"
        self.b = f"b{k}" if layer.option("bias") else None
        self.params = [self.W] + ([self.b] if self.b else [])
        self.grads = ["g" + p for p in self.params]
        self.act = activation_code(layer.option("act"), tuple(layer.option("act_params")))

    def _shape(self, n: int, jac: int = 0) -> str:
        return f"(B, {jac}, {n})" if jac else f"(B, {n})"

    def _write(self, code: Code, which: str, out: str) -> None:
        k = self.k
        names = {_z: f"Z{k}", _a: f"A{k}", _s: f"S{k}"}
        writer = InPlace(code, names, self._shape(self.n_out), f"T{k}{which}")
        writer.assign(getattr(self.act, which), code.buf(out, self._shape(self.n_out)))

    def forward(self, code: Code, x: str) -> str:
        k, self.x = self.k, x
        code.buf(f"Z{k}", self._shape(self.n_out))
        code.line(f"numpy.matmul({x}, {self.W}.T, out=Z{k})")
        if self.b:
            code.line(f"numpy.add(Z{k}, {self.b}, out=Z{k})")
        if self.act.identity:
            self.y = f"Z{k}"
            return self.y
        self.y = f"A{k}"
        self._write(code, "value", f"A{k}")
        if code.order >= 1:
            self._write(code, "d1", f"S{k}")
        if code.order >= 2 and self.act.d2 is not None:
            self._write(code, "d2", f"Q{k}")
        return self.y

    def backward(self, code: Code, g: str, g_in: str | None, grads: bool, jac: int) -> None:
        k = self.k
        self.g, self.d = g, g
        if not self.act.identity:
            self.d = code.buf(f"D{k}", self._shape(self.n_out, jac))
            code.line(f"numpy.multiply({g}, S{k}{'[:, None, :]' if jac else ''}, out=D{k})")
        if grads:
            code.acc(self.grads[0], f"{self.d}.T @ {self.x}")
            if self.b:
                code.acc(self.grads[1], f"{self.d}.sum(0)")
        if g_in is not None:
            code.buf(g_in, self._shape(self.n_in, jac))
            code.line(f"numpy.matmul({self.d}, {self.W}, out={g_in})")

    def rr(self, code: Code, c: str, want: bool) -> str | None:
        k, shape = self.k, self._shape(self.n_out)
        if code.params:
            code.acc(self.grads[0], f"{self.d}.T @ {c}")
        self.pending = None
        if not want and self.act.d2 is None:
            return None
        code.line(f"numpy.matmul({c}, {self.W}.T, out={code.buf(f'E{k}', shape)})")
        if self.act.d2 is not None:
            self.pending = code.buf(f"R{k}", shape)
            code.line(f"numpy.multiply(E{k}, {self.g}, out=R{k})")
            code.line(f"numpy.multiply(R{k}, Q{k}, out=R{k})")
        if not want:
            return None
        if self.act.identity:
            return f"E{k}"
        code.line(f"numpy.multiply(E{k}, S{k}, out={code.buf(f'C{k}', shape)})")
        return f"C{k}"

    def rf(self, code: Code, at: str | None, want: bool) -> str | None:
        k = self.k
        pending, self.pending = getattr(self, "pending", None), None
        if at is not None and not self.act.identity:
            code.buf(f"U{k}", self._shape(self.n_out))
            code.line(f"numpy.multiply({at}, S{k}, out=U{k})")
            at = f"U{k}"
        if at is not None and pending is not None:
            code.line(f"numpy.add({pending}, {at}, out={pending})")
        u = pending or at
        if u is None:
            return None
        if code.params:
            code.acc(self.grads[0], f"{u}.T @ {self.x}")
            if self.b:
                code.acc(self.grads[1], f"{u}.sum(0)")
        if not want:
            return None
        code.buf(f"V{k - 1}", self._shape(self.n_in))
        code.line(f"numpy.matmul({u}, {self.W}, out=V{k - 1})")
        return f"V{k - 1}"


# ---- whole chains ------------------------------------------------------------------------


def _params(emitters) -> list[str]:
    return [p for em in emitters for p in em.params]


def _grads_tuple(code: Code, emitters) -> str:
    items = [code.grad_or_zero(g, p) for em in emitters for g, p in zip(em.grads, em.params)]
    return "(" + "".join(f"{i}, " for i in items) + ")"


def _forward(code: Code, emitters) -> str:
    x = "X"
    for em in emitters:
        x = em.forward(code, x)
    return x


def forward_source(emitters) -> str:
    """`forward(X, *params) -> output` (a fresh array; the workspace is reused)."""
    code = Code("forward", ["X", *_params(emitters)], order=0)
    code.line(f"return {_forward(code, emitters)}.copy()")
    return code.source()


def pullback_source(emitters, want_dx: bool) -> str:
    """`pullback(X, *params, seed) -> (loss, dX or None, grads)`; seed(out) -> (loss, dout).

    `out` is a workspace array: seed must not keep it.
    """
    code = Code("pullback", ["X", *_params(emitters), "seed"], order=1)
    x = _forward(code, emitters)
    n = len(emitters)
    code.line(f"L, G{n} = seed({x})")
    for k in range(n, 0, -1):
        g_in = f"G{k - 1}" if k > 1 or want_dx else None
        emitters[k - 1].backward(code, f"G{k}", g_in, grads=True, jac=0)
    code.line(f"return L, {'G0.copy()' if want_dx else 'None'}, {_grads_tuple(code, emitters)}")
    return code.source()


def jacobian_source(emitters, n_out: int) -> str:
    """`jacobian(X, *params) -> [B, m, n]`: all m output cotangents pulled back at once."""
    code = Code("jacobian", ["X", *_params(emitters)], order=1)
    _forward(code, emitters)
    n = len(emitters)
    code.line(f"G{n} = numpy.broadcast_to(numpy.eye({n_out}), (X.shape[0], {n_out}, {n_out}))")
    for k in range(n, 0, -1):
        emitters[k - 1].backward(code, f"G{k}", f"G{k - 1}", grads=False, jac=n_out)
    code.line("return G0.copy()")
    return code.source()


def mixed_source(emitters, with_output: bool, inputs: bool = False) -> str:
    """`mixed(X, *params, U, seed) -> (loss, grads)`: reverse over the input-gradient pass.

    G0 is the input gradient of <U, f(X)>; seed(out, G0) -> (loss, cotangent of G0) or, when
    `with_output`, (loss, cotangent of G0, cotangent of out). Arguments of seed are
    workspace arrays: seed must not keep them. `inputs`: the function is
    `mixed_input(...) -> (loss, d loss / d X)` instead (Hessian-vector products in the
    input; dense layers then skip their parameter gradients).
    """
    name = "mixed_input" if inputs else "mixed"
    code = Code(name, ["X", *_params(emitters), "U", "seed"], order=2)
    code.params = not inputs
    x = _forward(code, emitters)
    n = len(emitters)
    code.line(f"G{n} = U")
    for k in range(n, 0, -1):
        emitters[k - 1].backward(code, f"G{k}", f"G{k - 1}", grads=False, jac=0)
    code.line(f"L, C0, T{n} = seed({x}, G0)" if with_output else "L, C0 = seed(" + x + ", G0)")
    c = "C0"
    for k in range(1, n + 1):
        c = emitters[k - 1].rr(code, c, want=k < n)
    at = f"T{n}" if with_output else None
    for k in range(n, 0, -1):
        at = emitters[k - 1].rf(code, at, want=k > 1 or inputs)
    if inputs:
        code.line(f"return L, {'numpy.zeros_like(X)' if at is None else at + '.copy()'}")
    else:
        code.line(f"return L, {_grads_tuple(code, emitters)}")
    return code.source()
