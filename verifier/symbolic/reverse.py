"""Reverse-mode differentiation of straight-line programs.

The adjoint of every program symbol is itself a program symbol, so a gradient costs a small
constant times the forward program (the cheap-gradient principle). Local partials are taken of
each small definition only, once per symbol (cached in the program: a Hessian's reverse passes
all run over the same gradient program); activation rules are written with the forward symbol
(`tanh' = 1 - a^2` where `a = tanh(z)`).
"""

from __future__ import annotations

import gc
from bisect import bisect_left
from contextlib import contextmanager
from functools import cache, lru_cache, wraps
from weakref import WeakKeyDictionary

import sympy as sp
from sympy.core.basic import _args_sortkey, ordering_of_classes

from ..layers.activations import output_rule
from .program import Program, free_symbols

_ONE, _ZERO = sp.Integer(1), sp.Integer(0)


@contextmanager
def cyclic_gc_paused():
    """Pause the cyclic garbage collector while a derivation builds its terms.

    A reverse pass allocates hundreds of thousands of sympy objects and tuples, none of them
    in reference cycles; each full collection walks every object alive, so with the
    collector on, a Hessian spent about a third of its time in it."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _real_symbol_maker():
    """A constructor of `sympy.Symbol(name, real=True)` that copies the deduced assumptions
    of one such symbol instead of deducing them again for every name (a fifth of the cost
    of binding an adjoint); sympy.Symbol itself when the copy would not be equal to it."""
    from sympy.core.assumptions import StdFactKB

    template = sp.Symbol("_", real=True)
    kb0 = template._assumptions

    def make(name: str) -> sp.Symbol:
        kb = StdFactKB.__new__(StdFactKB)
        dict.update(kb, kb0)
        kb.rules, kb._generator = kb0.rules, kb0._generator
        obj = sp.Expr.__new__(sp.Symbol)
        obj.name = name
        obj._assumptions = kb
        obj._assumptions_orig = template._assumptions_orig
        obj._assumptions0 = template._assumptions0
        return obj

    try:
        probe, ref = make("_probe"), sp.Symbol("_probe", real=True)
        same = (type(kb0) is StdFactKB and set(vars(kb0)) == {"rules", "_generator"}
                and probe == ref and hash(probe) == hash(ref)
                and dict(probe._assumptions) == dict(ref._assumptions)
                and probe.assumptions0 == ref.assumptions0)
    except Exception:  # a sympy whose symbols are laid out otherwise
        same = False
    return make if same else (lambda name: sp.Symbol(name, real=True))


_real_symbol = _real_symbol_maker()


def _paused(fn):
    @wraps(fn)
    def run(*args, **kwargs):
        with cyclic_gc_paused():
            return fn(*args, **kwargs)
    return run


# ---- canonical products and sums without sympy's general flattening
#
# A reverse pass builds one product `bar * partial` per edge and one sum per adjoint; sympy's
# Mul.flatten / Add.flatten and the `Basic.compare` sorts inside them are most of the cost of
# a Hessian. The helpers below build the *same* canonical objects (identical args, so equal
# and hash-consed alike) on the shapes that reverse mode produces, and defer to sympy for
# anything else.

_UNKNOWN = len(ordering_of_classes) + 1


@cache
def _rank(cls: type) -> tuple:
    """The class part of `Basic.compare`: position in sympy's class order, then the name."""
    name = cls.__name__
    try:
        return (ordering_of_classes.index(name), "")
    except ValueError:
        return (_UNKNOWN, name)


def sort_key(e: sp.Basic) -> tuple:
    """A tuple key that orders exactly as `Basic.compare` (class, content length, then the
    contents one by one), so sorting by it is sympy's canonical argument order."""
    if type(e) is sp.Symbol:  # the common case, kept cheap
        c = e._assumptions0
        return (_SYMBOL_RANK, 1 + len(c), (e.name, *c))
    return _compound_key(e)


def _compound_key(e: sp.Basic) -> tuple:
    if e.is_Mul:  # a product of symbols (and a coefficient): built here, not cached
        items = []
        for a in e.args:
            if type(a) is sp.Symbol:
                c = a._assumptions0
                items.append((_SYMBOL_RANK, 1 + len(c), (a.name, *c)))
            else:
                items.append(_cached_key(a))
        return (_MUL_RANK, len(items), tuple(items))
    return _cached_key(e)


@lru_cache(maxsize=1 << 16)
def _cached_key(e: sp.Basic) -> tuple:
    content = e._hashable_content()
    items = []
    for c in content:
        if isinstance(c, sp.Basic):
            items.append(sort_key(c))
        elif isinstance(c, frozenset):
            raise TypeError("unordered content")  # sympy compares these member by member
        else:
            items.append(c)
    return (_rank(type(e)), len(content), tuple(items))


_SYMBOL_RANK, _MUL_RANK = _rank(sp.Symbol), _rank(sp.Mul)


def _sorted(args) -> list:
    try:
        return sorted(args, key=sort_key)
    except TypeError:  # contents of different kinds at one position: sympy's own comparison
        return sorted(args, key=_args_sortkey)


def _commutative(*args) -> bool | None:
    """What `_from_args` would work out itself: True when every argument commutes."""
    return True if all(a.is_commutative is True for a in args) else None


def _factor_ok(f: sp.Expr, bar: sp.Symbol) -> bool:
    """A factor that Mul.flatten leaves alone when `bar` joins the product."""
    if f.is_Symbol:
        return f is not bar
    if f.is_Pow:
        return f.base != bar
    return (f.is_Function or f.is_Add) and not f.is_number


def _symbols_like(factors, bar: sp.Symbol) -> bool:
    """Whether all factors are plain symbols with bar's assumptions: then sympy's order is the
    order of names."""
    a0 = bar._assumptions0
    return all(type(f) is sp.Symbol and f._assumptions0 == a0 for f in factors)


def mul(bar: sp.Expr, p: sp.Expr) -> sp.Expr:
    """sympy.Mul(bar, p) for a symbol `bar`: inserted among p's sorted factors when no factor
    shares its base."""
    if p is _ONE:
        return bar
    if bar is _ONE:
        return p
    if type(bar) is sp.Symbol and bar.is_commutative:
        if type(p) is sp.Symbol and p._assumptions0 == bar._assumptions0:
            if p.name == bar.name:
                return sp.Mul(bar, p)
            return sp.Mul._from_args((bar, p) if bar.name < p.name else (p, bar), True)
        if p.is_Mul:
            args = p.args
            head = 1 if args[0].is_Number else 0
            rest = args[head:]
            if _symbols_like(rest, bar):
                names = [f.name for f in rest]
                k = bisect_left(names, bar.name)
                if k == len(names) or names[k] != bar.name:
                    k += head
                    return sp.Mul._from_args((*args[:k], bar, *args[k:]), True)
            elif all(_factor_ok(f, bar) for f in rest):
                return sp.Mul._from_args((*args[:head], *_sorted((*rest, bar))),
                                         _commutative(p, bar))
        elif p.is_Rational:
            if p is not _ZERO:
                return sp.Mul._from_args((p, bar), _commutative(bar))
        elif _factor_ok(p, bar) and not p.is_number:
            return sp.Mul._from_args(tuple(_sorted((bar, p))), _commutative(p, bar))
    return sp.Mul(bar, p)


def _collect_key(t: sp.Expr):
    if t.is_Mul:
        return t.args[1:] if t.args[0].is_Number else t.args
    return (t,)


def add(parts: list) -> sp.Expr:
    """sympy.Add(*parts): sorted as is when no two parts are like terms (nothing to collect)
    and none is a number or a sum."""
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return _ZERO
    if all(t.is_Mul or t.is_Symbol or (t.is_Function or t.is_Pow and not t.base.is_Number)
           and not t.is_number for t in parts):
        keys = {_collect_key(t) for t in parts}
        if len(keys) == len(parts):
            return sp.Add._from_args(tuple(_sorted(parts)), _commutative(*parts))
    return sp.Add(*parts)


def local_diff(e: sp.Expr, x: sp.Symbol) -> sp.Expr:
    """d e / d x for a small definition, skipping the terms and factors free of x.

    sympy.diff builds a Derivative for every term of a sum; a dense layer's pre-activation has
    one term per input, and only one of them depends on a given input.
    """
    if e == x:
        return _ONE
    if e.is_Add:
        return sp.Add(*[local_diff(t, x) for t in e.args if t.has(x)])
    if e.is_Mul:
        hits = [i for i, f in enumerate(e.args) if f.has(x)]
        if not hits:
            return _ZERO
        if len(hits) == 1:
            i = hits[0]
            return sp.Mul(*e.args[:i], *e.args[i + 1:]) * local_diff(e.args[i], x)
    if e.is_Atom:
        return _ZERO
    return sp.diff(kinks_as_piecewise(e, x), x)


# ---- derivatives at kinks
#
# sympy differentiates max, min and abs into Heaviside and sign, whose value at 0 is a choice
# (Heaviside(0) = 1/2) that no back end shares. Before differentiating they are rewritten to
# Piecewise with the same value everywhere, so the derivative is a Piecewise of the pieces'
# derivatives with the very decisions the printers use: max and min take the first extreme
# argument (SMT-LIB's `ite (>= a b) a b` fold, Coq's Rmax), abs' is sign (0 at 0, PyTorch's).


def max_piecewise(e: sp.Expr) -> sp.Piecewise:
    """Max(a0, ..., an) (or Min) as Piecewise: the first argument that is >= (<=) every later
    one, i.e. the first extreme argument; equal in value to Max, decisions as printed."""
    ge = sp.Ge if isinstance(e, sp.Max) else sp.Le
    args = e.args
    branches = [(a, sp.And(*(ge(a, b) for b in args[k + 1:]))) for k, a in enumerate(args[:-1])]
    return sp.Piecewise(*branches, (args[-1], True), evaluate=False)


def abs_piecewise(e: sp.Expr) -> sp.Piecewise:
    """|a| as Piecewise with a zero middle piece, so its derivative is sign(a) (0 at 0)."""
    a = e.args[0]
    return sp.Piecewise((a, a > 0), (-a, a < 0), (_ZERO, True), evaluate=False)


def kinks_as_piecewise(e: sp.Expr, x: sp.Symbol) -> sp.Expr:
    """`e` with every max, min and abs that depends on x written as Piecewise."""
    if not e.has(sp.Max, sp.Min, sp.Abs):
        return e
    return e.replace(
        lambda n: isinstance(n, (sp.Max, sp.Min, sp.Abs)) and n.has(x),
        lambda n: abs_piecewise(n) if isinstance(n, sp.Abs) else max_piecewise(n))


def _term_partials(t: sp.Expr, out: dict) -> None:
    """Append d t / d v to out[v] for every symbol v of one term of a sum."""
    if t.is_Symbol:
        out.setdefault(t, []).append(_ONE)
        return
    if t.is_Mul:
        factors = t.args
        if all(f.is_Symbol or f.is_Number for f in factors) and \
                len({f for f in factors if f.is_Symbol}) == sum(f.is_Symbol for f in factors):
            for i, f in enumerate(factors):  # a product of distinct symbols (and a number)
                if f.is_Symbol:
                    out.setdefault(f, []).append(sp.Mul(*factors[:i], *factors[i + 1:]))
            return
    for v in t.free_symbols:
        out.setdefault(v, []).append(local_diff(t, v))


def partials(prog: Program, sym: sp.Symbol) -> dict[sp.Symbol, sp.Expr]:
    """{v: d def(sym) / d v} for every symbol v that sym's definition reads (zeros dropped)."""
    cached = prog.partials.get(sym)
    if cached is not None:
        return cached
    d = prog.defs[sym]
    out: dict[sp.Symbol, sp.Expr] = {}
    if isinstance(d, sp.Function) and len(d.args) >= 1 and d.args[0].is_Symbol:
        dep = d.args[0]
        rule = output_rule(d, sym)
        if rule is not None and all(dep not in a.free_symbols for a in d.args[1:]):
            out[dep] = rule
    if d.is_Add:
        parts: dict[sp.Symbol, list] = {}
        for t in d.args:
            _term_partials(t, parts)
        for v, ps in parts.items():
            out.setdefault(v, ps[0] if len(ps) == 1 else sp.Add(*ps))
    else:
        for v in d.free_symbols:
            if v not in out:
                out[v] = local_diff(d, v)
    out = {v: p for v, p in out.items() if p != 0}
    prog.partials[sym] = out
    return out


def _seed(expr: sp.Expr, prog: Program, wrt: set) -> dict[sp.Symbol, list[sp.Expr]]:
    adj: dict[sp.Symbol, list[sp.Expr]] = {}
    if expr.is_Symbol:
        if expr in prog.defs or expr in wrt:
            adj[expr] = [_ONE]
        return adj
    for s in expr.free_symbols:
        if s in prog.defs or s in wrt:
            adj.setdefault(s, []).append(local_diff(expr, s))
    return adj


# ---- the reverse pass
#
# A Hessian is one reverse pass per input over the same gradient program, so what a pass
# needs of a definition (its partials, and how a product `bar * partial` is laid out in
# canonical order) is worked out once per definition, and every pass only inserts its
# adjoint symbol. A pending term of an adjoint is (sort key, key without the coefficient,
# expression); the sum is then sorted on keys (tuples, compared in C) instead of by
# `Basic.compare`. Whatever does not fit the common shapes goes through `mul` and `add`.

_EDGES: WeakKeyDictionary = WeakKeyDictionary()  # program -> {sym: ((v, program index, plan), ...)}
_PLAIN, _GENERIC = 1, 2


def _plan(p: sp.Expr) -> tuple | None:
    """How `bar * p` is built in canonical order for a symbol `bar` that p does not contain:
    None when p is 1; (_PLAIN, p, head, head keys, factors, factor keys, free symbols) when
    bar only joins p's sorted factors (after a numeric coefficient, the head); (_GENERIC, p)
    when sympy.Mul must decide."""
    if p is _ONE:
        return None
    if p.is_commutative is not True:
        return (_GENERIC, p)
    if p.is_Mul:
        args = p.args
        n = 1 if args[0].is_Number else 0
        head, rest = args[:n], args[n:]
        if not all(f.is_Symbol or f.is_Pow or ((f.is_Function or f.is_Add) and not f.is_number)
                   for f in rest):
            return (_GENERIC, p)
    elif p.is_Rational:
        head, rest = (p,), ()
    elif p.is_Symbol or ((p.is_Function or p.is_Add or p.is_Pow) and not p.is_number):
        head, rest = (), (p,)
    else:
        return (_GENERIC, p)
    try:
        keys = tuple(sort_key(f) for f in rest)
        head_keys = tuple(sort_key(f) for f in head)
        if list(keys) != sorted(keys):
            return (_GENERIC, p)
    except TypeError:
        return (_GENERIC, p)
    return (_PLAIN, p, head, head_keys, rest, keys, frozenset(free_symbols(p)))


def _edges(prog: Program, sym: sp.Symbol) -> tuple:
    """((v, program index of v or None, plan of d def(sym) / d v), ...) for sym's partials,
    built once per program symbol; a plain plan gains what its partial reads: the program
    indices, the leaves and the last index."""
    table = _EDGES.get(prog)
    if table is None:
        table = _EDGES[prog] = {}
    hit = table.get(sym)
    if hit is None:
        index = prog.index
        out = []
        for v, p in partials(prog, sym).items():
            plan = _plan(p)
            if plan is not None and plan[0] == _PLAIN:
                reads = tuple(index[s] for s in plan[6] if s in index)
                leaves = frozenset(s for s in plan[6] if s not in index)
                plan = (*plan, max(reads, default=-1), reads, leaves)
            out.append((v, index.get(v), plan))
        hit = table[sym] = tuple(out)
    return hit


_NO_LEAVES: frozenset = frozenset()


def _generic_part(e: sp.Expr) -> tuple:
    return (None, None, e, None, None, None)


def _product(bar: sp.Symbol, bk: tuple, bar_index: int, plan: tuple) -> tuple:
    """The pending term bar * p of a plain plan: bar inserted among p's sorted factors
    (unless p reads bar: a symbol that already existed can be a factor of p)."""
    _, p, head, head_keys, rest, keys, free, last, reads, leaves = plan
    if bar_index <= last and bar in free:  # -1 (a leaf) is at most any last
        return _generic_part(mul(bar, p))
    k = bisect_left(keys, bk)
    args = (*head, *rest[:k], bar, *rest[k:])
    ck = (*keys[:k], bk, *keys[k:])
    return ((_MUL_RANK, len(args), (*head_keys, *ck) if head else ck), ck,
            sp.Mul._from_args(args, True), bar_index, reads, leaves)


def _total(parts: list) -> tuple:
    """(the sum of pending terms as sympy.Add builds it, the program indices and the leaves
    it reads, or None, None when they are not known without a walk)."""
    if len(parts) == 1:
        t = parts[0]
        if t[3] is None or t[3] < 0:
            return t[2], None, None
        return t[2], {t[3], *t[4]}, t[5]
    if all(t[0] is not None for t in parts):
        if len({t[1] for t in parts}) == len(parts):  # no like terms: nothing to collect
            try:
                parts.sort(key=_first)
            except TypeError:
                pass
            else:
                expr = sp.Add._from_args(tuple(t[2] for t in parts), True)
                reads: set = set()
                leaves = set()
                for t in parts:
                    if t[3] < 0:
                        return expr, None, None
                    reads.add(t[3])
                    reads.update(t[4])
                    if t[5]:
                        leaves |= t[5]
                return expr, reads, leaves
        return sp.Add(*[t[2] for t in parts]), None, None
    return add([t[2] for t in parts]), None, None


def _first(t: tuple) -> tuple:
    return t[0]


def _bind(prog: Program, total: tuple, hint: str) -> sp.Expr:
    """`prog.assign(expr, hint)` for (expr, reads, leaves) from `_total`, telling it what the
    expression reads so that it skips its walk over the expression."""
    expr, reads, leaves = total
    if reads is None:
        return prog.assign(expr, hint)
    return prog.assign(expr, hint, reads=reads, leaves=leaves, new_symbol=_real_symbol)


@_paused
def gradient(prog: Program, expr: sp.Expr, wrt: list[sp.Symbol], tag: str = "g") -> list[sp.Expr]:
    """d expr / d w for each w in `wrt` (leaves or program symbols), as program terms."""
    expr = sp.sympify(expr)
    targets = set(wrt)
    leaf_targets = {w for w in wrt if w not in prog.defs}
    seeded = _seed(expr, prog, targets)
    index = prog.index
    adj: dict = {index[s]: [_generic_part(e) for e in es] for s, es in seeded.items()
                 if s in index}  # program symbols by index, leaves by symbol
    leaf_adj: dict = {s: [_generic_part(e) for e in es] for s, es in seeded.items()
                      if s not in index}
    for sym in reversed(prog.closure([expr])):
        parts = adj.pop(index[sym], None)
        if not parts:
            continue
        bar = _bind(prog, _total(parts), f"{tag}:{sym.name}")
        if sym in targets:
            adj[index[sym]] = [_generic_part(bar)]  # the finished adjoint of a target symbol
        plain = type(bar) is sp.Symbol and bar.is_commutative
        if not plain and bar == 0:
            continue
        if plain:
            bk = sort_key(bar)
            bar_index = index.get(bar, -1)
            bar_part = (bk, (bk,), bar, bar_index, (), _NO_LEAVES)
        for v, vi, plan in _edges(prog, sym):
            if vi is not None:
                lst = adj.get(vi)
                if lst is None:
                    lst = adj[vi] = []
            elif v in leaf_targets:
                lst = leaf_adj.setdefault(v, [])
            else:
                continue
            if plan is None:
                lst.append(bar_part if plain else _generic_part(bar))
            elif plain and plan[0] == _PLAIN:
                lst.append(_product(bar, bk, bar_index, plan))
            else:
                lst.append(_generic_part(mul(bar, plan[1])))
    out = []
    for w in wrt:
        parts = adj.get(index[w]) if w in index else leaf_adj.get(w)
        out.append(_bind(prog, _total(parts), f"{tag}:{w.name}") if parts else
                   prog.assign(_ZERO, f"{tag}:{w.name}"))
    return out


@_paused
def jacobian(prog: Program, outs: list[sp.Expr], wrt: list[sp.Symbol], tag: str = "J") -> list:
    """Rows of d outs / d wrt, one reverse pass per output."""
    return [gradient(prog, o, wrt, f"{tag}{i}") for i, o in enumerate(outs)]


@_paused
def hessian(prog: Program, expr: sp.Expr, wrt: list[sp.Symbol], diagonal: bool = False,
            tag: str = "H") -> list:
    """Second derivatives by reverse over reverse: one extra pass per gradient entry."""
    grad = gradient(prog, expr, wrt, f"{tag}g")
    if diagonal:
        return [gradient(prog, g, [w], f"{tag}{i}")[0] for i, (g, w) in enumerate(zip(grad, wrt))]
    return [gradient(prog, g, wrt, f"{tag}{i}") for i, g in enumerate(grad)]
