"""Scalar fallback for layers without a matrix rule: code from the layer's own `Program`.

The layer's forward rule (`layers.RULES`) runs once on fresh symbols for its input
entries and parameters. Reverse mode over that program gives the pullback (vector-Jacobian
product) and, reverse over reverse, the pullback of the pullback that mixed derivatives
need; each is printed as one numpy line per program assignment over generated identifiers
(vectorised over the batch) the first time a generated chain function calls it. The emitter
speaks the protocol of `matrix_codegen`, so fallback and dense layers mix in one chain.

The reverse pass here differs from `reverse.gradient` only in bookkeeping: it reads each
definition's free symbols once and seeds several outputs at once, which keeps generation
linear in the program for layers with hundreds of parameters.
"""

from __future__ import annotations

from math import prod

import numpy as np
import sympy as sp
from sympy.printing.numpy import NumPyPrinter

from ..layers import RULES
from ..layers.activations import ACTIVATIONS
from .matrix_codegen import Code
from .program import Program
from .reverse import add, local_diff, mul, partials

# numpy evaluators of the registry, by sympy function class; generated code calls them by
# these scope names
_NP_CALLS = {a.build: f"_act_{a.name}" for a in ACTIVATIONS.values()
             if a.np is not None and isinstance(a.build, type)}
ACT_SCOPE = {f"_act_{a.name}": a.np for a in ACTIVATIONS.values() if a.np is not None}


class Printer(NumPyPrinter):
    """NumPy source for the terms sums and products do not cover; symbols print as generated
    identifiers, registry activations as calls of their numpy evaluators."""

    def __init__(self, names: dict[sp.Symbol, str]):
        super().__init__({"strict": True, "fully_qualified_modules": True})
        self.names = names

    def _print_Symbol(self, s):
        return self.names[s]

    def _arg(self, e, k=0):
        return self._print(e.args[k])

    def _print_Function(self, e):
        call = _NP_CALLS.get(type(e))
        if call is not None:
            return f"{call}({', '.join(self._print(a) for a in e.args)})"
        return super()._print_Function(e)

    def _print_step(self, e):
        return f"numpy.where({self._arg(e)} > 0, 1.0, 0.0)"

    def _print_leaky_relu(self, e):
        x = self._arg(e)
        return f"numpy.where({x} > 0, {x}, ({self._arg(e, 1)})*{x})"

    def _print_leaky_step(self, e):
        return f"numpy.where({self._arg(e)} > 0, 1.0, {self._arg(e, 1)})"


for _cls in _NP_CALLS:  # registry evaluators win over sympy's own printing
    setattr(Printer, f"_print_{_cls.__name__}", Printer._print_Function)


def pullback_terms(prog: Program, seeds: list[tuple[sp.Expr, sp.Expr]], wrt: list[sp.Symbol],
                   tag: str) -> list[sp.Expr]:
    """d (sum of cotangent * term over `seeds`) / d w for w in `wrt` (leaves), as program terms."""
    targets = set(wrt)
    adj: dict[sp.Symbol, list[sp.Expr]] = {}
    for term, cot in seeds:
        term = sp.sympify(term)
        if term in prog.defs or term in targets:
            adj.setdefault(term, []).append(cot)
        elif not term.is_Number:
            for s in term.free_symbols & (targets | set(prog.defs)):
                adj.setdefault(s, []).append(cot * local_diff(term, s))
    for sym in reversed(prog.closure([t for t, _ in seeds])):
        parts = adj.pop(sym, None)
        if not parts:
            continue
        bar = prog.assign(add(parts), f"{tag}:{sym.name}")
        if bar == 0:
            continue
        for v, p in partials(prog, sym).items():
            if v in prog.defs or v in targets:
                adj.setdefault(v, []).append(mul(bar, p))
    return [prog.assign(sp.Add(*adj.get(w, [])), f"{tag}:{w.name}") for w in wrt]


def _symbols(prefix: str, n: int) -> list[sp.Symbol]:
    return [sp.Symbol(f"{prefix}[{j}]", real=True) for j in range(n)]


class _Writer:
    """Numpy source for a program slice: fast printing of the common small terms
    (sums of products of symbols), sympy's printer for the rest."""

    def __init__(self, prog: Program, groups: list[list[sp.Symbol]]):
        self.prog, self.names, self.lines = prog, {}, []
        self.args = [f"a{g}" for g in range(len(groups))]
        for g, leaves in enumerate(groups):
            for j, s in enumerate(leaves):
                self.names[s] = f"a{g}_{j}"
                index = f"{j}" if g == 1 else f"..., {j}"
                self.lines.append(f"a{g}_{j} = a{g}[{index}]")
        batched = ", ".join(f"{a}.shape[:-1]" for g, a in enumerate(self.args) if g != 1)
        self.lines.append(f"_z = numpy.zeros(numpy.broadcast_shapes({batched}))")
        self.printer = Printer(self.names)
        self.printer._settings["order"] = "none"  # sympy's term ordering costs the most

    def text(self, e: sp.Expr) -> str:
        name = self.names.get(e)
        if name is not None:
            return name
        if e.is_Number:
            return f"({e.p}/{e.q})" if e.is_Rational and e.q != 1 else f"({e})"
        if e.is_Add or e.is_Mul:
            return "(" + (" + " if e.is_Add else "*").join(map(self.text, e.args)) + ")"
        if e.is_Pow and e.exp.is_Integer and e.exp > 0:
            return f"({self.text(e.base)}**{e.exp})"
        return self.printer._print(e)

    def forward(self, outputs: list[sp.Expr]) -> None:
        self.steps = self.prog.slice(outputs)
        for k, (s, d) in enumerate(self.steps):
            self.names[s] = f"s{k}"
            self.lines.append(f"s{k} = {self.text(d)}")

    def _partials(self, sym: sp.Symbol, tracked) -> list[tuple[sp.Symbol, str | None]]:
        """(v, text of d def / d v) for the tracked symbols of sym's definition; None is 1."""
        d = self.prog.defs[sym]
        out: list[tuple[sp.Symbol, str | None]] = []
        for t in d.args if d.is_Add else (d,):
            if t in tracked:
                out.append((t, None))
            elif t.is_Mul and all(f.is_Symbol or f.is_Number for f in t.args):
                for i, f in enumerate(t.args):  # a repeated symbol would be a Pow, not a factor
                    if f in tracked:
                        rest = [self.text(g) for j, g in enumerate(t.args) if j != i]
                        out.append((f, "*".join(rest) or None))
            else:
                for v in t.free_symbols & tracked:
                    p = partials(self.prog, sym).get(v, 0) if t is d else local_diff(t, v)
                    if p != 0:
                        out.append((v, None if p == 1 else self.text(p)))
        return out

    def pullback(self, seeds, wrt: list[sp.Symbol]) -> list[str]:
        """Adjoint lines for d (sum of cotangent * term) / d wrt; returns the adjoint texts."""
        tracked = set(self.prog.defs) | set(wrt)
        adj: dict[sp.Symbol, list[str]] = {}
        for term, cot in seeds:
            if term in tracked:
                adj.setdefault(term, []).append(self.names[cot])
        for sym, _ in reversed(self.steps):
            parts = adj.pop(sym, None)
            if not parts:
                continue
            bar = "b" + self.names[sym]
            self.lines.append(f"{bar} = {' + '.join(parts)}")
            for v, p in self._partials(sym, tracked):
                adj.setdefault(v, []).append(bar if p is None else f"{bar}*{p}")
        return [" + ".join(adj.get(w, ["0.0"])) for w in wrt]

    def build(self, outputs: list[str], name: str):
        outs = ", ".join(f"_z + ({o})" for o in outputs)
        self.lines.append(f"return numpy.stack([{outs}], axis=-1)")
        src = f"def {name}({', '.join(self.args)}):\n" + "".join(f"    {ln}\n" for ln in self.lines)
        scope = {"numpy": np, **ACT_SCOPE}
        exec(compile(src, f"<snn-verify {name}>", "exec"), scope)  # noqa: S102 - our text only
        fn = scope[name]
        fn.source = src
        return fn


def compile_terms(prog: Program, groups: list[list[sp.Symbol]], outputs: list[sp.Expr], name: str,
                  pullback=None):
    """`f(*arrays) -> [..., k]`: array g holds group g's leaves on its last axis (group 1 is
    the flat parameter vector, without batch axes; the others broadcast together).

    Returns the outputs, or with `pullback=(seeds, wrt)` the adjoints of `wrt` for the
    cotangent-weighted sum of the seed terms, by reverse mode on the printed lines.
    """
    w = _Writer(prog, groups)
    w.forward(outputs)
    texts = w.pullback(*pullback) if pullback else [w.text(sp.sympify(e)) for e in outputs]
    return w.build(texts, name)


def _lazy(build):
    """A function that compiles itself on first call (most passes need only some pullbacks);
    `call.build()` compiles it now."""
    cache: list = []

    def get():
        if not cache:
            cache.append(build())
        return cache[0]

    def call(*args):
        return get()(*args)

    call.build = get
    return call


def _flat(*arrays):
    return np.concatenate([np.ravel(a) for a in arrays]) if arrays else np.zeros(0)


def _psplit(out, shapes):
    """Per-entry parameter gradients [..., P] summed over the batch, split into shapes."""
    total = out.reshape(-1, out.shape[-1]).sum(0)
    sizes = np.cumsum([prod(s) for s in shapes])[:-1]
    return [part.reshape(s) for part, s in zip(np.split(total, sizes), shapes)]


class ScalarEmitter:
    """Any layer kind, through its scalar program (exact in structure, slower at width)."""

    def __init__(self, layer, k: int, shapes: dict[str, tuple[int, ...]]):
        self.k = k
        self.params = [f"P{k}_{i}" for i in range(len(layer.params))]
        self.grads = ["g" + p for p in self.params]
        self.shapes = [tuple(shapes[name]) for name in layer.params]
        prog = Program()
        self.xs = _symbols("x", prod(layer.in_shape))
        self.ps, arrays = [], {}
        for i, (name, shape) in enumerate(zip(layer.params, self.shapes)):
            syms = _symbols(f"p{i}", prod(shape))
            self.ps += syms
            arrays[name] = np.array(syms, dtype=object).reshape(shape)
        x = np.array(self.xs, dtype=object).reshape(layer.in_shape)
        y = RULES[layer.kind].forward(layer, x, arrays, prog, f"L{k}")
        self.prog, self.ys = prog, [sp.sympify(e) for e in y.flat]
        self.us = _symbols("u", len(self.ys))
        self.cs = _symbols("c", len(self.xs))
        self.scope = {"_flat": _flat, "_psplit": _psplit,
                      f"_F{k}": _lazy(self._fwd), f"_B{k}": _lazy(self._pullback),
                      f"_Bx{k}": _lazy(lambda: self._pullback(x_only=True)),
                      f"_R{k}": _lazy(self._pullback2)}

    def compile_all(self, mixed: bool = True) -> None:
        for name, fn in self.scope.items():
            if hasattr(fn, "build") and (mixed or not name.startswith("_R")):
                fn.build()

    # ---- scalar programs, compiled on demand
    def _bar(self) -> list[sp.Expr]:
        """Pullback terms d <u, y> / d (x, p), built once."""
        if not hasattr(self, "_bar_terms"):
            seeds = list(zip(self.ys, self.us))
            self._bar_terms = pullback_terms(self.prog, seeds, self.xs + self.ps, f"b{self.k}")
        return self._bar_terms

    def _fwd(self):
        return compile_terms(self.prog, [self.xs, self.ps], self.ys, f"F{self.k}")

    def _pullback(self, x_only: bool = False):
        wrt = self.xs if x_only else self.xs + self.ps
        return compile_terms(self.prog, [self.xs, self.ps, self.us], self.ys, f"B{self.k}",
                             pullback=(list(zip(self.ys, self.us)), wrt))

    def _pullback2(self):
        seeds = list(zip(self._bar()[:len(self.xs)], self.cs))
        terms = pullback_terms(self.prog, seeds, self.xs + self.ps + self.us, f"r{self.k}")
        return compile_terms(self.prog, [self.xs, self.ps, self.us, self.cs], terms,
                             f"R{self.k}")

    # ---- the emitter protocol of matrix_codegen
    def _call(self, code: Code, fn: str, *arrays: str) -> None:
        code.line(f"_o = {fn}{self.k}({arrays[0]}, _P{self.k}, {', '.join(arrays[1:])})"
                  if len(arrays) > 1 else f"_o = {fn}{self.k}({arrays[0]}, _P{self.k})")

    def _acc_params(self, code: Code, offset: int) -> None:
        if not self.ps:
            return
        code.line(f"_g = _psplit(_o[..., {offset}:{offset + len(self.ps)}], {self.shapes})")
        for i, g in enumerate(self.grads):
            code.acc(g, f"_g[{i}]")

    def forward(self, code: Code, x: str) -> str:
        k, self.x = self.k, x
        code.line(f"_P{k} = _flat({', '.join(self.params)})")
        self._call(code, "_F", x)
        code.line(f"Y{k} = _o")
        return f"Y{k}"

    def backward(self, code: Code, g: str, g_in: str | None, grads: bool, jac: int) -> None:
        n = len(self.xs)
        self.g = g
        if g_in is None and not grads:
            return
        self._call(code, "_B" if grads else "_Bx", f"{self.x}[:, None, :]" if jac else self.x, g)
        if g_in is not None:
            code.line(f"{g_in} = _o[..., :{n}]")
        if grads:
            self._acc_params(code, n)

    def rr(self, code: Code, c: str, want: bool) -> str | None:
        k, n = self.k, len(self.xs)
        self._call(code, "_R", self.x, self.g, c)
        code.line(f"R{k} = _o[..., :{n}]")
        self.pending = f"R{k}"
        self._acc_params(code, n)
        if not want:
            return None
        code.line(f"C{k} = _o[..., {n + len(self.ps)}:]")
        return f"C{k}"

    def rf(self, code: Code, at: str | None, want: bool) -> str | None:
        k, n = self.k, len(self.xs)
        parts = [p for p in (getattr(self, "pending", None),) if p]
        self.pending = None
        if at is not None:
            self._call(code, "_B", self.x, at)
            self._acc_params(code, n)
            parts.append(f"_o[..., :{n}]")
        if not want or not parts:
            return None
        code.line(f"V{k - 1} = {' + '.join(parts)}")
        return f"V{k - 1}"
