"""Sound interval enclosures and affine bounds over a `Program` slice.

Endpoints are exact `Fraction`s, or `-math.inf` / `math.inf` for unbounded sides (use
`bounds_of` to read them with `None` for infinity). A `Tape` compiles the slice once (one
instruction per sub-term, in program order) and re-runs it on many boxes, which is what
branch and bound needs; each run also carries affine lower/upper bounds in the box's inputs
through the slice (forward DeepPoly / CROWN, in rigorous floats: `linforms`, `relax`) and
intersects them with the intervals. Smooth functions and their certified envelopes live in
`envelopes` (re-exported here); `Tape.enclosures` hands the envelopes to the SMT-LIB encoder.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

import mpmath
import numpy as np
import sympy as sp

from ..layers.activations import SMOOTH_FUNCTIONS, leaky_relu, leaky_step, relu, sigmoid, step
from ..symbolic.program import Program
from .envelopes import (  # noqa: F401 - re-exported: the rest of the code imports them here
    _INFLECTION,
    BITS,
    INF,
    LINE_BITS,
    PREC,
    SMOOTH,
    TOP,
    Line,
    Sech2,
    SmoothFn,
    _enclose,
    _mpf,
    _short,
    _tidy,
    bell_envelope,
    bell_interval,
    bounds_of,
    certified_line,
    dyadic_out,
    envelope,
    fn_deriv,
    fn_interval,
    fn_value,
    half_bell_envelope,
    half_bell_interval,
    min_gap,
)
from .linforms import FloatForms, convertible
from .relax import (
    _abs_forms,
    _bell_forms,
    _best,
    _line_forms,
    _mul_forms,
    _reads,
    _relu_forms,
    _square_forms,
)

# ---- interval operations ---------------------------------------------------------------------


def _emul(x, y):
    if x == 0 or y == 0:
        return Fraction(0)  # 0 * inf = 0: the values themselves are finite
    return x * y


def iv_mul(a, b):
    """Product of two intervals (any signs)."""
    ps = [_emul(x, y) for x in a for y in b]
    return _tidy(min(ps), False), _tidy(max(ps), True)


def iv_recip(a):
    lo, hi = a
    if lo > 0 or hi < 0:
        return (Fraction(0) if hi == INF else _tidy(1 / Fraction(hi), False),
                Fraction(0) if lo == -INF else _tidy(1 / Fraction(lo), True))
    return TOP


def iv_pow(a, n: int):
    """a ** n for an integer n; even powers are non-negative and exact at 0."""
    if n == 0:
        return Fraction(1), Fraction(1)
    if n < 0:
        return iv_recip(iv_pow(a, -n))
    lo, hi = a
    if n % 2 == 1 or lo >= 0:
        return lo**n, hi**n
    if hi <= 0:
        return hi**n, lo**n
    return Fraction(0), max(-lo, hi) ** n


def iv_rpow(a, r: Fraction):
    """a ** r for a non-integer rational r, by monotonicity. The real power is defined for
    a >= 0 (a > 0 when r < 0); an interval reaching outside that gets no bound, so a box where
    the claim is not defined everywhere is never closed (clipping a at 0 would close it)."""
    lo, hi = a
    if lo < 0 or (r < 0 and lo == 0):
        return TOP
    with mpmath.workprec(PREC):
        ends = [(_enclose(mpmath.power(_mpf(x), _mpf(r))) if x != INF else (INF, INF))
                if x != 0 else (Fraction(0), Fraction(0)) for x in (lo, hi)]
    if r > 0:
        return ends[0][0], ends[1][1]
    return (Fraction(0) if hi == INF else ends[1][0]), ends[0][1]


def iv_abs(a):
    lo, hi = a
    if lo >= 0:
        return a
    if hi <= 0:
        return -hi, -lo
    return Fraction(0), max(-lo, hi)


def iv_relu(a):
    return max(a[0], Fraction(0)), max(a[1], Fraction(0))


def iv_step(a):
    if a[0] > 0:
        return Fraction(1), Fraction(1)
    if a[1] <= 0:
        return Fraction(0), Fraction(0)
    return Fraction(0), Fraction(1)


def hull(*ivs):
    return min(i[0] for i in ivs), max(i[1] for i in ivs)


def iv_leaky(a, alpha):
    parts = []
    if a[1] > 0:
        parts.append((max(a[0], Fraction(0)), a[1]))
    if a[0] <= 0:
        parts.append(iv_mul(alpha, (a[0], min(a[1], Fraction(0)))))
    return hull(*parts)


def iv_leaky_step(a, alpha):
    if a[0] > 0:
        return Fraction(1), Fraction(1)
    if a[1] <= 0:
        return alpha
    return hull((Fraction(1), Fraction(1)), alpha)


def const_interval(e: sp.Expr):
    """A rational enclosure of a sympy number."""
    if e.is_Rational:
        q = Fraction(int(e.p), int(e.q))
        return q, q
    if e.is_Float:  # its binary value and its decimal text may differ; take both
        a, b = Fraction(str(sp.Rational(e))), Fraction(str(sp.Rational(str(e))))
        return min(a, b), max(a, b)
    if e.is_number and e.is_real:
        with mpmath.workprec(PREC):
            return _enclose(mpmath.mpf(str(e.evalf(70))))
    return TOP


# ---- tapes: a program slice compiled for repeated runs ---------------------------------------


def _op_affine(v, args):
    c0, terms = args
    lo, hi = c0, c0
    for c, s in terms:
        a = v[s]
        if c > 0:
            lo, hi = lo + c * a[0], hi + c * a[1]
        else:
            lo, hi = lo + c * a[1], hi + c * a[0]
    return _tidy(lo, False), _tidy(hi, True)


def _op_mul(v, args):
    out = v[args[0]]
    for s in args[1:]:
        out = iv_mul(out, v[s])
    return out


_OPS: dict[str, Callable] = {
    "affine": _op_affine,
    "mul": _op_mul,
    "pow": lambda v, a: iv_pow(v[a[0]], a[1]),
    "rpow": lambda v, a: iv_rpow(v[a[0]], a[1]),
    "fn": lambda v, a: fn_interval(a[0], v[a[1]]),
    "abs": lambda v, a: iv_abs(v[a]),
    "relu": lambda v, a: iv_relu(v[a]),
    "step": lambda v, a: iv_step(v[a]),
    "leaky": lambda v, a: iv_leaky(v[a[0]], v[a[1]]),
    "leaky_step": lambda v, a: iv_leaky_step(v[a[0]], v[a[1]]),
    "max": lambda v, a: (max(v[s][0] for s in a), max(v[s][1] for s in a)),
    "min": lambda v, a: (min(v[s][0] for s in a), min(v[s][1] for s in a)),
    "hull": lambda v, a: hull(*(v[s] for s in a)),
    "top": lambda v, a: TOP,
}
_FLOAT_OPS: dict[str, Callable] = {
    "affine": lambda x, a: float(a[0]) + sum(float(c) * x[s] for c, s in a[1]),
    "mul": lambda x, a: math.prod(x[s] for s in a),
    "pow": lambda x, a: x[a[0]] ** a[1],
    "rpow": lambda x, a: math.pow(x[a[0]], float(a[1])),  # ValueError below 0: no hint
    "fn": lambda x, a: SMOOTH[a[0]].fl(x[a[1]]),
    "abs": lambda x, a: abs(x[a]),
    "relu": lambda x, a: max(x[a], 0.0),
}
_UNARY = {sp.Abs: "abs", relu: "relu", step: "step"}
_BINARY = {leaky_relu: "leaky", leaky_step: "leaky_step"}
_NARY = {sp.Max: "max", sp.Min: "min"}
EXACT_TERMS = 8  # affine steps with more terms get their interval in rigorous floats
LINEAR_DIMS = 64  # linear forms only for boxes with at most this many bounded leaves


@dataclass(slots=True)
class Evaluation:
    """One run of a tape on a box: the interval of every slot, the envelope lines used."""

    values: list
    lines: dict  # slot of a smooth application -> (lower lines, upper lines)
    dims: list = field(default_factory=list)  # leaves the linear forms range over
    forms: FloatForms | None = None  # affine lower/upper bounds of every slot in those leaves


class Tape:
    """The slice of `program` computing `exprs`, compiled once into interval instructions.

    `run(box)` encloses every slot; `outputs[k]` is the slot of `exprs[k]`; `apps` lists each
    smooth application with its slot and its argument's slot.
    """

    def __init__(self, program: Program, exprs) -> None:
        self.slots: dict[sp.Basic, int] = {}
        self.base: list = []
        self.code: list[tuple] = []
        self.leaves: dict[sp.Symbol, int] = {}
        self.apps: list[tuple[sp.Expr, int, int]] = []
        self._affine_prep: dict[int, tuple] = {}
        self._defs: dict[int, tuple] = {}  # slot -> (kind, args) of its instruction
        for sym, d in program.slice(exprs):
            self.slots[sym] = self._compile(d)
        self.outputs = [self._compile(sp.sympify(e)) for e in exprs]
        self.bells = self._find_bells()
        self.sigmoid_bells = self._find_sigmoid_bells()
        self.formless = self._formless()

    def _formless(self) -> set[int]:
        """Slots of tanh(z) and tanh(z)^2 read only on the way to bells: their envelopes and
        forms would be computed for nothing (the bell takes its forms from z)."""
        readers: dict[int, list[int]] = {}
        for _, kind, out, args in self.code:
            for s in _reads(kind, args):
                readers.setdefault(s, []).append(out)
        outputs = set(self.outputs)
        squares = {self.bells[b][1]: b for b in self.bells}  # a -> a bell reading a^2
        drop = set()
        for _, a in self.bells.values():
            sq = next(s for _, k, s, args in self.code if k == "pow" and args == (a, 2))
            if sq not in outputs and all(r in self.bells for r in readers.get(sq, [])):
                drop.add(sq)
        for a in squares:
            if a not in outputs and all(r in drop for r in readers.get(a, [])):
                drop.add(a)
        return drop  # s and 1 - s of sigmoid bells keep theirs: McCormick competes with the bell

    def _find_bells(self) -> dict[int, tuple[int, int]]:
        """Affine slots `1 - a^2` with a = tanh(z): slot -> (slot of z, slot of a)."""
        defs = {out: (kind, args) for _, kind, out, args in self.code}
        out = {}
        for slot, (kind, args) in defs.items():
            if kind != "affine" or args[0] != 1 or len(args[1]) != 1 or args[1][0][0] != -1:
                continue
            sq = defs.get(args[1][0][1])
            if sq is None or sq[0] != "pow" or sq[1][1] != 2:
                continue
            a = defs.get(sq[1][0])
            if a is not None and a[0] == "fn" and a[1][0] is sp.tanh:
                out[slot] = (a[1][1], sq[1][0])
        return out

    def _find_sigmoid_bells(self) -> dict[int, tuple[int, int, int]]:
        """Products `s * (1 - s)` with s = sigmoid(z), which reverse mode writes for sigmoid'(z)
        and which equal sech^2(z/2)/4: slot -> (slot of z, slot of s, slot of 1 - s)."""
        out = {}
        for _, kind, slot, args in self.code:
            if kind == "mul" and len(args) == 2:
                pair = self._sigmoid_pair(args)
                if pair is not None:
                    s, t = args[pair[0]], args[pair[1]]
                    out[slot] = (self._defs[s][1][1], s, t)
        return out

    def _sigmoid_pair(self, factors) -> tuple[int, int] | None:
        """Positions (i, j) of factors s = sigmoid(z) and 1 - s among product slots."""
        for j, t in enumerate(factors):
            dt = self._defs.get(t)
            if dt is None or dt[0] != "affine" or dt[1][0] != 1 or len(dt[1][1]) != 1:
                continue
            c, s = dt[1][1][0]
            ds = self._defs.get(s)
            if c == -1 and s in factors and ds is not None and ds[0] == "fn" \
                    and ds[1][0] is sigmoid:
                return factors.index(s), j
        return None

    def _new(self, e, op: str | None, args, init=TOP) -> int:
        slot = len(self.base)
        self.base.append(init)
        if op is not None:
            self.code.append((_OPS[op], op, slot, args))
            self._defs[slot] = (op, args)
        self.slots[e] = slot
        return slot

    def _compile(self, e: sp.Expr) -> int:
        """Slot of one (small) expression; recursion depth is that of a single definition."""
        hit = self.slots.get(e)
        if hit is not None:
            return hit
        if e.is_Symbol:
            slot = self._new(e, None, None)
            self.leaves[e] = slot
            return slot
        if e.is_number:
            return self._new(e, None, None, const_interval(e))
        if e.is_Add:
            c0, terms = Fraction(0), []
            for a in e.args:
                coeff, rest = a.as_coeff_Mul()
                if a.is_Rational:
                    c0 += Fraction(int(a.p), int(a.q))
                elif coeff.is_Rational:
                    terms.append((Fraction(int(coeff.p), int(coeff.q)), self._compile(rest)))
                else:
                    terms.append((Fraction(1), self._compile(a)))
            return self._new(e, "affine", (c0, terms))
        if e.is_Mul:
            coeff, rest = e.as_coeff_Mul()
            if coeff.is_Rational and coeff != 1:
                c = Fraction(int(coeff.p), int(coeff.q))
                return self._new(e, "affine", (Fraction(0), [(c, self._compile(rest))]))
            factors = [self._compile(a) for a in e.args]
            pair = self._sigmoid_pair(factors) if len(factors) > 2 else None
            if pair is not None:  # g s (1 - s): the bell s (1 - s) gets a slot of its own
                i, j = pair
                bell = self._compile(e.args[i] * e.args[j])
                factors = [f for k, f in enumerate(factors) if k not in pair] + [bell]
            return self._new(e, "mul", factors)
        if e.is_Pow:
            base, ex = e.args
            if ex.is_Integer:
                return self._new(e, "pow", (self._compile(base), int(ex)))
            if ex.is_Rational:
                return self._new(e, "rpow", (self._compile(base), Fraction(int(ex.p), int(ex.q))))
            return self._new(e, "top", None)
        return self._compile_function(e)

    def _compile_function(self, e: sp.Expr) -> int:
        f = type(e)
        if isinstance(e, SMOOTH_FUNCTIONS) and f in SMOOTH:
            arg = self._compile(e.args[0])
            slot = self._new(e, "fn", (f, arg))
            self.apps.append((e, slot, arg))
            return slot
        if f in _UNARY:
            return self._new(e, _UNARY[f], self._compile(e.args[0]))
        if f in _BINARY:
            return self._new(e, _BINARY[f], (self._compile(e.args[0]), self._compile(e.args[1])))
        if f in _NARY:
            return self._new(e, _NARY[f], [self._compile(a) for a in e.args])
        if f is sp.Piecewise:  # one of the branches is taken: their hull, conditions ignored
            return self._new(e, "hull", [self._compile(expr) for expr, _ in e.args])
        return self._new(e, "top", None)  # unknown: unbounded, which is always sound

    def run(self, box: dict, linear: bool = True, parent: Evaluation | None = None,
            at: dict | None = None) -> Evaluation:
        """Enclosures of all slots for leaf intervals `box` (missing leaves are unbounded).

        With `linear`, each slot also gets affine lower/upper bounds in the bounded leaves
        (`linforms`), propagated through affine steps, through activations by their envelope
        (DeepPoly's choice), through products by McCormick planes and through squares and
        `abs` by chords and tangents; the interval is intersected with their range over the
        box. With `parent` (a run on a box containing this one) every interval is also
        intersected with the parent's, so splitting never loosens a bound. `at` maps slots of
        smooth applications to points of their argument where the envelope should be tight
        (`point_values` of a point where the bound is attained).
        """
        v = list(self.base)
        for sym, slot in self.leaves.items():
            iv = box.get(sym)
            if iv is not None:
                v[slot] = (-INF if iv[0] is None else Fraction(iv[0]),
                           INF if iv[1] is None else Fraction(iv[1]))
        dims = [slot for slot in self.leaves.values() if v[slot][0] != -INF and v[slot][1] != INF]
        forms = None
        if linear and 0 < len(dims) <= LINEAR_DIMS:
            forms = FloatForms([v[s] for s in dims], len(v))
            for i, slot in enumerate(dims):
                forms.set_unit(slot, i)
            for slot, iv in enumerate(v):
                forms.set_const(slot, iv)  # constants and unbounded leaves
        names = {slot: sym for sym, slot in self.leaves.items()}
        ev = Evaluation(v, {}, [(names[s], *v[s]) for s in dims], forms)
        pv = parent.values if parent is not None else None
        for op, kind, out, args in self.code:
            fast = self._fast_affine(forms, out, args) if kind == "affine" and forms else None
            lo, hi = fast if fast is not None else op(v, args)
            if out in self.bells or out in self.sigmoid_bells:
                blo, bhi = (bell_interval(v[self.bells[out][0]]) if out in self.bells
                            else half_bell_interval(v[self.sigmoid_bells[out][0]]))
                if max(lo, blo) <= min(hi, bhi):
                    lo, hi = max(lo, blo), min(hi, bhi)
            if pv is not None:
                plo, phi = pv[out]
                if max(lo, plo) <= min(hi, phi):
                    lo, hi = max(lo, plo), min(hi, phi)
            v[out] = (lo, hi)
            if out in self.formless:
                if kind == "fn":
                    ev.lines[out] = ([], [])  # bounded argument; no line is needed here
                if forms is not None:
                    forms.set_const(out, v[out])
                continue
            if kind == "fn":
                self._envelope(ev, out, *args, at=None if at is None else at.get(out))
            if forms is not None:
                self._linear(forms, ev, kind, out, args, at)
        return ev

    @staticmethod
    def _envelope(ev: Evaluation, out: int, fn: type, arg: int, at=None) -> None:
        zlo, zhi = ev.values[arg]
        if zlo != -INF and zhi != INF and zlo < zhi:
            ev.lines[out] = envelope(fn, zlo, zhi, full=False, at=at)

    def point_values(self, point: dict) -> dict:
        """Float values of every smooth application's argument at a point of the leaves
        (slot of the application -> value); a heuristic input for `run(at=...)`."""
        x = [math.nan] * len(self.base)
        for i, iv in enumerate(self.base):
            if iv[0] == iv[1] and iv[0] not in (-INF, INF):
                x[i] = float(iv[0])
        for sym, slot in self.leaves.items():
            x[slot] = float(point.get(sym, math.nan))
        out = {}
        with np.errstate(all="ignore"):
            for _, kind, slot, args in self.code:
                try:
                    x[slot] = _FLOAT_OPS[kind](x, args) if kind in _FLOAT_OPS else math.nan
                except (OverflowError, ValueError, ZeroDivisionError):
                    x[slot] = math.nan
                if kind == "fn":
                    out[slot] = x[args[1]]
        return out

    def corner(self, ev: Evaluation, slot: int, upper: bool) -> dict:
        """The corner of the box where the slot's upper (lower) affine form is extreme."""
        forms = ev.forms
        if forms is None or not (forms.has_u if upper else forms.has_l)[slot]:
            return {}
        c = (forms.U if upper else forms.L)[slot][1:]
        return {sym: (hi if (ci > 0) == upper else lo) for (sym, lo, hi), ci in zip(ev.dims, c)}

    def _linear(self, forms: FloatForms, ev: Evaluation, kind, out, args, at=None) -> None:
        try:
            self._store(forms, ev, out, *self._relax(forms, ev, kind, out, args, at))
        except (ArithmeticError, ValueError):  # overflow in floats: the slot keeps its interval
            forms.set_const(out, ev.values[out])

    def _relax(self, forms: FloatForms, ev: Evaluation, kind, out, args, at):
        v = ev.values
        lo_f = up_f = None
        if kind == "affine":
            lo_f, up_f = self._affine_forms(forms, out, args)
            if out in self.bells:
                z, a = self.bells[out]
                b_lo, b_up = _bell_forms(forms, v[z], z, None if at is None else at.get(a))
                # the bell's own lines, even where a constant concretizes as well: the
                # interval is kept anyway, and the lines carry the dependence on the inputs
                lo_f, up_f = (b_lo if b_lo is not None else lo_f), (b_up if b_up is not None else up_f)
        elif kind == "fn" and out in ev.lines:
            lo_f, up_f = _line_forms(forms, ev, out, args[1])
        elif kind == "relu":
            lo_f, up_f = _relu_forms(forms, v[args], args)
        elif kind == "mul" and len(args) == 2:
            lo_f, up_f = _mul_forms(forms, v, args[0], args[1])
            if out in self.sigmoid_bells:  # the bell's lines or McCormick's, per side the tighter
                z, s, _ = self.sigmoid_bells[out]
                b_lo, b_up = _bell_forms(forms, v[z], z, None if at is None else at.get(s),
                                         half_bell_envelope)
                lo_f, up_f = _best(forms, [lo_f, b_lo], True), _best(forms, [up_f, b_up], False)
        elif kind == "pow" and args[1] == 2:
            lo_f, up_f = _square_forms(forms, v[args[0]], args[0])
        elif kind == "abs":
            lo_f, up_f = _abs_forms(forms, v[args], args)
        return lo_f, up_f

    @staticmethod
    def _store(forms: FloatForms, ev: Evaluation, out: int, lo_f, up_f) -> None:
        v = ev.values
        lo, hi = v[out]
        if lo_f is not None:
            forms.L[out], forms.has_l[out] = lo_f, True
            lo = max(lo, forms.low(lo_f))
        if up_f is not None:
            forms.U[out], forms.has_u[out] = up_f, True
            hi = min(hi, forms.high(up_f))
        if lo > hi:  # both are sound, so this is a rounding bug: keep the interval
            lo, hi = v[out]
        v[out] = (lo, hi)
        forms.set_const(out, v[out])

    def _fast_affine(self, forms: FloatForms, out: int, args):
        """The interval of a wide affine step in rigorous floats; exact rationals were most of
        the cost of a run on dense layers. Short sums stay exact, so ties at an exactly
        attained bound (x/2 + 1/2 <= 1) still prove."""
        if len(args[1]) <= EXACT_TERMS:
            return None
        slots, cf, pos, ok = self._prep(out, args)
        if not ok:
            return None
        return forms.affine_interval(args[0], cf, slots, pos)

    def _prep(self, out: int, args):
        prep = self._affine_prep.get(out)
        if prep is None:
            terms = args[1]
            ok = all(convertible(c) for c, _ in terms)
            prep = (np.array([s for _, s in terms], dtype=np.intp),
                    np.array([float(c) for c, _ in terms]),
                    np.array([c > 0 for c, _ in terms], dtype=bool), ok)
            self._affine_prep[out] = prep
        return prep

    def _affine_forms(self, forms: FloatForms, out: int, args):
        slots, cf, pos, ok = self._prep(out, args)
        if not ok:
            return None, None
        c0 = args[0]
        res = []
        for lower in (True, False):
            want_l = pos if lower else ~pos
            if not (forms.has_l[slots[want_l]].all() and forms.has_u[slots[~want_l]].all()):
                res.append(None)
                continue
            rows = np.where(want_l[:, None], forms.L[slots], forms.U[slots])
            res.append(forms.combine(c0, cf, rows, lower))
        return res[0], res[1]

    def enclosures(self, ev: Evaluation) -> dict[sp.Expr, list[tuple[str, sp.Expr]]]:
        """Per smooth application: interval bounds and all certified lines in its argument,
        in the `(op, bound_term)` form `emit.smtlib.encode` takes."""
        out: dict[sp.Expr, list[tuple[str, sp.Expr]]] = {}
        for app, slot, arg in self.apps:
            lo, hi = ev.values[slot]
            cons = [(">=", _rat(dyadic_out(lo, False, LINE_BITS)))] if lo != -INF else []
            cons += [("<=", _rat(dyadic_out(hi, True, LINE_BITS)))] if hi != INF else []
            zlo, zhi = ev.values[arg]
            lowers, uppers = envelope(type(app), zlo, zhi) if slot in ev.lines else ([], [])
            z = app.args[0]
            cons += [(">=", _rat(ln.slope) * z + _rat(ln.offset)) for ln in lowers]
            cons += [("<=", _rat(ln.slope) * z + _rat(ln.offset)) for ln in uppers]
            out[app] = cons
        return out


def _rat(q: Fraction) -> sp.Rational:
    return sp.Rational(q.numerator, q.denominator)


def interval_of(program: Program, expr: sp.Expr, box: dict, linear: bool = True) -> tuple:
    """The enclosure of one term over a box of leaf intervals (a one-off `Tape` run)."""
    tape = Tape(program, [expr])
    return tape.run(box, linear).values[tape.outputs[0]]
