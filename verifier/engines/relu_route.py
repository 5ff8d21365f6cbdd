"""Bound claims on networks with concrete weights, by the ReLU engine.

A claim such as `max(n(x)[1], n(x)[2]) > n(x)[0]` over an input box, where `n` has concrete
weights and relu / leaky_relu / identity layers, or sigmoid / tanh ones (a chain of `dense`
layers or an imported ONNX graph), is the question `verify-vnn` answers: its negation is a union of polyhedra over the
network's outputs and inputs. `as_property` builds that network (`OnnxNet`) and that
VNN-LIB-style `Property`; `decide_relu` runs `relu_bab` on it (search, CROWN / alpha-CROWN,
ReLU and input splits, z3 on small leaves) and replays every witness on the spec's own program
before calling it a counterexample. Anything else returns None and stays with `bounds`.

The negation is exact: every expression made of +, scalar *, max, min and relu over affine
terms is max_i min_j L_ij for affine L_ij, so `E > 0` is the union over i of the polyhedra
{L_ij > 0 for all j}; a strict claim `<` becomes a closed violation `>=`, never weakened.
"""

from __future__ import annotations

import multiprocessing
import os
from fractions import Fraction

import numpy as np
import sympy as sp

from ..layers.activations import leaky_relu, relu
from ..obligations import Obligation
from ..onnx_import import Act, Affine, Block, OnnxNet
from ..symbolic.program import Program
from ..vnnlib import Constraint, Disjunct, Property

MAX_PIECES = 4096  # linear pieces of the negated claim before the route declines
MIN_NEURONS = 64  # smaller networks: z3 on the exact whole-box encoding is faster (and its
# .smt2 file is the whole proof)
PWL_ACTS = ("relu", "leaky_relu", "identity")
SMOOTH_ACTS = ("sigmoid", "tanh")  # CROWN bounds them too (no z3 leaves, no alpha slopes)


class _Decline(Exception):
    """The claim is not a piecewise-linear question on one network (the other path takes it)."""


# ---- the network -----------------------------------------------------------------------------

def _fractions(t, shape) -> np.ndarray:
    out = np.empty(shape, dtype=object)
    out.flat[:] = [Fraction(int(e.p), int(e.q)) for e in t.entries] if t.entries else []
    return out


def _act(kind: str, params) -> Act | None:
    if kind not in PWL_ACTS + SMOOTH_ACTS:
        raise _Decline(f"activation {kind}")
    if kind == "identity":
        return None
    alpha = Fraction(int(params[0].p), int(params[0].q)) if kind == "leaky_relu" else None
    return Act(kind, alpha)


def network_of(app) -> OnnxNet:
    """The `OnnxNet` of a network application with concrete weights (dense or onnx_graph)."""
    net = app.network
    tensors = {t.name: t for t in app.tensors}
    kw = {"path": net.name, "in_shape": (len(app.inputs),),
          "out_shape": (len(app.outputs),), "input_name": "x", "output_name": "y"}
    if [la.kind for la in net.layers] == ["onnx_graph"]:
        layer = net.layers[0]
        names = iter(layer.params)
        blocks = []
        for act, params, sources, size in layer.option("blocks"):
            terms = []
            for s in sources:
                t = tensors[next(names)]
                terms.append((s, _fractions(t, t.shape)))
            t = tensors[next(names)]
            a = _act(act, params)
            blocks.append(Block(terms=tuple(terms), b=_fractions(t, t.shape), act=a))
        if blocks[-1].act is not None:
            raise _Decline("graph ends in an activation")
        return OnnxNet(blocks=blocks, **kw)
    layers: list = []
    for la in net.layers:
        if la.kind != "dense":
            raise _Decline(f"layer {la.kind}")
        W = tensors[la.params[0]]
        n_out = W.shape[0]
        b = (_fractions(tensors[la.params[1]], (n_out,)) if la.option("bias")
             else np.full((n_out,), Fraction(0), dtype=object))
        layers.append(Affine(W=_fractions(W, W.shape), b=b))
        a = _act(la.option("act"), la.option("act_params"))
        if a is not None:
            layers.append(a)
    return OnnxNet.from_layers(layers, **kw)


# ---- the claim's negation as polyhedra -------------------------------------------------------

Lin = dict  # ("x", i) | ("y", j) | 1 -> Fraction


def _add(a: Lin, b: Lin) -> Lin:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, Fraction(0)) + v
    return out


def _scale(a: Lin, c: Fraction) -> Lin:
    return {k: c * v for k, v in a.items()}


class _Pieces:
    """Expressions over network outputs and inputs as max_i min_j L_ij (lists of lists)."""

    def __init__(self, program: Program, outputs: dict, inputs: dict):
        self.program, self.outputs, self.inputs = program, outputs, inputs
        self.memo: dict = {}

    def of(self, e) -> list[list[Lin]]:
        e = sp.sympify(e)
        hit = self.memo.get(e)
        if hit is None:
            hit = self.memo[e] = self._of(e)
            self._check(hit)
        return hit

    def _of(self, e) -> list[list[Lin]]:
        if e.is_Number:
            if not e.is_Rational:
                raise _Decline("irrational constant")
            return [[{1: Fraction(int(e.p), int(e.q))}]]
        if isinstance(e, sp.Symbol):
            if e in self.outputs:
                return [[{("y", self.outputs[e]): Fraction(1)}]]
            if e in self.inputs:
                return [[{("x", self.inputs[e]): Fraction(1)}]]
            if self.program.is_defined(e):
                return self.of(self.program.defs[e])
            raise _Decline(f"free symbol {e}")
        if isinstance(e, sp.Add):
            acc = [[{}]]
            for arg in e.args:
                p = self.of(arg)
                acc = [[_add(a, b) for a in ai for b in bk] for ai in acc for bk in p]
                self._check(acc)
            return acc
        if isinstance(e, sp.Mul):
            consts = [a for a in e.args if a.is_Number]
            rest = [a for a in e.args if not a.is_Number]
            if len(rest) != 1 or not all(c.is_Rational for c in consts):
                raise _Decline("a product of two variable terms")
            c = Fraction(1)
            for k in consts:
                c *= Fraction(int(k.p), int(k.q))
            return self._times(self.of(rest[0]), c)
        if isinstance(e, sp.Max):
            return [p for a in e.args for p in self.of(a)]
        if isinstance(e, sp.Min):
            acc = [[]]
            for a in e.args:
                acc = [ai + bk for ai in acc for bk in self.of(a)]
                self._check(acc)
            return acc
        if isinstance(e, relu):
            return self.of(sp.Max(e.args[0], 0, evaluate=False))
        if isinstance(e, leaky_relu):
            x, alpha = e.args
            if not alpha.is_Rational or not 0 <= alpha <= 1:
                raise _Decline("leaky_relu slope")
            return self.of(sp.Max(x, alpha * x, evaluate=False))
        raise _Decline(f"function {type(e).__name__}")

    def _times(self, p: list[list[Lin]], c: Fraction) -> list[list[Lin]]:
        if c >= 0:
            return [[_scale(a, c) for a in pi] for pi in p]
        # -max_i min_j a_ij = min_i max_j (-a_ij) = max over choices f of min_i -a_{i f(i)}
        acc = [[]]
        for pi in p:
            acc = [ai + [_scale(a, c)] for ai in acc for a in pi]
            self._check(acc)
        return acc

    @staticmethod
    def _check(p) -> None:
        if sum(len(q) for q in p) > MAX_PIECES:
            raise _Decline("too many linear pieces")


def _constraint(L: Lin, strict: bool) -> Constraint:
    """`L > 0` (strict) or `L >= 0`, as the normal form `-L < 0` / `-L <= 0`."""
    xs = tuple(sorted((k[1], -v) for k, v in L.items() if k != 1 and k[0] == "x" and v))
    ys = tuple(sorted((k[1], -v) for k, v in L.items() if k != 1 and k[0] == "y" and v))
    return Constraint(x=xs, y=ys, const=-L.get(1, Fraction(0)), strict=strict)


def application(ob: Obligation, program: Program, kinds=("output",)):
    """The one network application whose terms (of the given kinds: "output", "jacobian")
    the claim reads, when its variables are exactly that application's inputs, each in a
    closed range; else None."""
    used = set(program.closure([t for a in ob.goal + ob.hypotheses for t in (a.lhs, a.rhs)]))
    apps = {id(origin[0]): origin[0] for s, origin in program.network_terms.items()
            if origin[1] in kinds and s in used}
    if len(apps) != 1:
        return None
    app = next(iter(apps.values()))
    box = {v.symbol: (v.lo, v.hi) for v in ob.variables}
    if set(box) - set(app.inputs) or any(
            s not in box or box[s][0] is None or box[s][1] is None for s in app.inputs):
        return None
    return app


def as_property(ob: Obligation, program: Program):
    """(OnnxNet, Property, input symbols) for a piecewise-linear claim on one network, or None.

    The property's disjuncts are the claim's violations: the claim holds iff it is `unsat`.
    """
    if ob.kind != "bound" or ob.hypotheses or not ob.goal:
        return None
    try:
        app = application(ob, program)
        if app is None:
            return None
        box = {v.symbol: (v.lo, v.hi) for v in ob.variables}
        net = network_of(app)
        if sum(blk.size for blk in net.blocks[:-1]) < MIN_NEURONS:
            return None
        outputs = {s: j for j, s in enumerate(app.outputs) if isinstance(s, sp.Symbol)}
        inputs = {s: i for i, s in enumerate(app.inputs)}
        pieces = _Pieces(program, outputs, inputs)
        disjuncts = []
        lo = [Fraction(int(box[s][0].p), int(box[s][0].q)) for s in app.inputs]
        hi = [Fraction(int(box[s][1].p), int(box[s][1].q)) for s in app.inputs]
        for atom in ob.goal:
            diff = atom.lhs - atom.rhs
            if atom.op in ("<=", "<"):  # violated where diff > 0 (diff >= 0 for `<`)
                expr, strict = diff, atom.op == "<="
            elif atom.op in (">=", ">"):
                expr, strict = -diff, atom.op == ">="
            else:
                return None
            for conj in pieces.of(expr):
                disjuncts.append(Disjunct(constraints=[_constraint(L, strict) for L in conj],
                                          lo=list(lo), hi=list(hi)))
    except _Decline:
        return None
    prop = Property(path=ob.name, n_inputs=len(app.inputs), n_outputs=len(app.outputs),
                    disjuncts=disjuncts)
    return net, prop, app.inputs


def workers() -> int:
    """Branch-and-bound processes: 2 where we may fork (not inside a daemonic pool worker)."""
    if multiprocessing.current_process().daemon:
        return 1
    return max(1, min(2, os.cpu_count() or 1))
