"""Compile a program slice to vectorised numpy code, with an optional reverse-mode gradient.

Each program assignment becomes one numpy line over generated identifiers `v0, v1, ...`
(never a user's name), so the source we `exec` is entirely ours and its size is linear in the
slice. Inputs are 1-D arrays (a batch of points); every output is an array of the batch's
shape. The gradient variant emits the adjoint lines of the same slice in reverse order,
with local partials of each small definition (activation rules use the forward value:
tanh' = 1 - a^2), so it costs a small constant times the forward code.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import sympy as sp
from sympy.printing.numpy import NumPyPrinter

from ..layers.activations import output_rule
from .program import Program


class _Printer(NumPyPrinter):
    """NumPy source for our terms; every symbol is printed as its generated identifier."""

    def __init__(self, names: dict[sp.Symbol, str]):
        super().__init__({"strict": True, "fully_qualified_modules": True})
        self.names = names

    def _print_Symbol(self, s):
        try:
            return self.names[s]
        except KeyError:
            raise ValueError(f"symbol {s} is neither an input nor a program symbol") from None

    _print_Dummy = _print_Symbol

    def _arg(self, e, k=0):
        return self._print(e.args[k])

    def _print_relu(self, e):
        return f"numpy.maximum({self._arg(e)}, 0.0)"

    def _print_step(self, e):
        return f"numpy.where({self._arg(e)} > 0, 1.0, 0.0)"

    def _print_leaky_relu(self, e):
        x = self._arg(e)
        return f"numpy.where({x} > 0, {x}, ({self._arg(e, 1)})*({x}))"

    def _print_leaky_step(self, e):
        return f"numpy.where({self._arg(e)} > 0, 1.0, {self._arg(e, 1)})"

    def _print_sigmoid(self, e):
        return f"(0.5*(1.0 + numpy.tanh(0.5*({self._arg(e)}))))"

    def _print_softplus(self, e):
        return f"numpy.logaddexp(0.0, {self._arg(e)})"

    def _print_Max(self, e):
        out = self._print(e.args[0])
        for a in e.args[1:]:
            out = f"numpy.maximum({out}, {self._print(a)})"
        return out

    def _print_Min(self, e):
        out = self._print(e.args[0])
        for a in e.args[1:]:
            out = f"numpy.minimum({out}, {self._print(a)})"
        return out

    def _print_Heaviside(self, e):  # from d/dx of Max and Abs; 1/2 at 0 as sympy defines it
        return f"numpy.heaviside({self._arg(e)}, 0.5)"


def _names(program: Program, inputs, steps) -> dict[sp.Symbol, str]:
    names: dict[sp.Symbol, str] = {}
    for k, s in enumerate(list(inputs) + [s for s, _ in steps]):
        names[s] = f"v{k}"
    return names


def _build(lines: list[str], nargs: int, name: str) -> Callable:
    args = ", ".join(f"v{k}" for k in range(nargs))
    src = f"def {name}({args}):\n" + "\n".join("    " + ln for ln in lines) + "\n"
    scope: dict = {"numpy": np}
    exec(compile(src, f"<snn-verify {name}>", "exec"), scope)  # noqa: S102 - generated code only
    fn = scope[name]
    fn.source = src
    return fn


def _slice(program: Program, inputs, outputs) -> list[tuple[sp.Symbol, sp.Expr]]:
    """The assignments computing the outputs, treating program symbols among `inputs` as
    given (the walk stops there): a slice over values computed elsewhere, e.g. by the
    matrix-level network code."""
    cut = {s for s in inputs if program.is_defined(s)}
    if not cut:
        return program.slice(outputs)
    seen: set[sp.Symbol] = set()
    stack = _roots(program, outputs)
    while stack:
        s = stack.pop()
        if s in seen or s in cut:
            continue
        seen.add(s)
        stack.extend(d for d in program.deps(s) if d not in seen)
    return [(s, program.defs[s]) for s in sorted(seen, key=program.index.__getitem__)]


def _roots(program: Program, outputs) -> list[sp.Symbol]:
    return [s for e in outputs for s in sp.sympify(e).free_symbols if program.is_defined(s)]


def _batch_line(nargs: int) -> str:
    if nargs == 0:
        return "_z = 0.0"
    return f"_z = numpy.zeros(numpy.broadcast({', '.join(f'v{k}' for k in range(nargs))}).shape)"


def compile_numpy(program: Program, inputs: list[sp.Symbol], outputs: list[sp.Expr]) -> Callable:
    """A function `f(*input_arrays) -> list of arrays`, one per output, vectorised over a batch.

    Every leaf of the outputs must be in `inputs`; raises ValueError otherwise. Program
    symbols among `inputs` are inputs too: their definitions are not compiled.
    """
    outputs = [sp.sympify(e) for e in outputs]
    steps = _slice(program, inputs, outputs)
    names = _names(program, inputs, steps)
    printer = _Printer(names)
    lines = [_batch_line(len(inputs))]
    lines += [f"{names[s]} = {printer.doprint(d)}" for s, d in steps]
    lines.append("return [" + ", ".join(f"_z + ({printer.doprint(e)})" for e in outputs) + "]")
    return _build(lines, len(inputs), "compiled")


def _partial(program: Program, sym: sp.Symbol, d: sp.Expr, dep: sp.Symbol) -> sp.Expr:
    if isinstance(d, sp.Function) and d.args and d.args[0] == dep:
        rule = output_rule(d, sym)
        if rule is not None and all(dep not in a.free_symbols for a in d.args[1:]):
            return rule
    return sp.diff(d, dep)


def compile_value_and_grad(program: Program, inputs: list[sp.Symbol], output: sp.Expr) -> Callable:
    """A function `f(*input_arrays) -> (value, [d value / d input_k ...])`, vectorised.

    Reverse mode over the slice: one adjoint accumulation per (definition, dependency) pair.
    Program symbols among `inputs` are inputs, as in `compile_numpy`.
    """
    output = sp.sympify(output)
    out_sym = sp.Dummy("out", real=True)
    steps = _slice(program, inputs, [output]) + [(out_sym, output)]
    names = _names(program, inputs, steps)
    printer = _Printer(names)
    lines = [_batch_line(len(inputs))]
    lines += [f"{names[s]} = {printer.doprint(d)}" for s, d in steps]
    adj: set[str] = set()
    lines.append(f"b{names[out_sym]} = _z + 1.0")
    adj.add(names[out_sym])
    tracked = set(names)
    for sym, d in reversed(steps):
        if names[sym] not in adj:
            continue
        deps = sorted((s for s in d.free_symbols if s in tracked), key=lambda s: names[s])
        for dep in deps:
            part = printer.doprint(_partial(program, sym, d, dep))
            term = f"b{names[sym]} * ({part})"
            target = f"b{names[dep]}"
            lines.append(f"{target} = {target} + {term}" if names[dep] in adj else f"{target} = _z + {term}")
            adj.add(names[dep])
    grads = [f"b{names[s]}" if names[s] in adj else "_z" for s in inputs]
    lines.append(f"return _z + ({names[out_sym]}), [{', '.join(grads)}]")
    return _build(lines, len(inputs), "compiled_grad")
