"""The canonical form of identity residues, built on the program rather than inlined terms.

Every program symbol's value becomes a sparse rational function over QQ (a `PolyElement`
numerator and a product of denominator bases), converted once per obligation and shared by
all entries of a matrix claim, so a batch equation costs one walk of its program instead of
one inlined sympy term per entry. The generators are

- the leaves (inputs and parameters);
- one atom per activation application, keyed by its function and the canonical form of its
  argument (equal keys are equal values, so sharing an atom is sound);
- one *normaliser* per denominator of more than one term (a softmax sum, a variance), standing
  for that numerator polynomial, with the defining relation `g = n` kept aside;
- one *root* u per base b raised to a power p/q (1/sqrt(Sigma) is u^-1 with u^2 = Sigma).

A residue is decided in two steps: first with normalisers and roots as free generators (a
polynomial that vanishes for free values vanishes at the true ones: the usual case, since both
sides of a backprop identity divide by the same softmax sum); then, only if that is not zero,
with every normaliser replaced by its polynomial and every root power reduced by u^q = b.
Zero there is a proof that lhs - rhs vanishes wherever both sides are defined, exactly as the
inlined canonical form's; a non-zero result only means this form cannot show it.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp
from sympy.functions.elementary.piecewise import ExprCondPair

from ..layers.activations import PIECEWISE_FUNCTIONS, SMOOTH_FUNCTIONS
from ..obligations import Obligation
from ..symbolic.program import Program

MAX_TERMS = 20_000  # terms of one numerator; beyond, this form gives up (None)
_APPS = SMOOTH_FUNCTIONS + PIECEWISE_FUNCTIONS
_APP_TYPES = frozenset(_APPS)


_SLOTS: list = []  # generator symbols for atoms, normalisers and roots, shared by all forms


def _slots(k: int) -> list:
    while len(_SLOTS) < k:
        _SLOTS.append(sp.Dummy(f"g{len(_SLOTS)}"))
    return _SLOTS[:k]


class _Outside(Exception):
    """A term outside rational functions of leaves, atoms and roots (a symbolic power)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """`zero`: every residue vanishes (True), some does not in this form (False), or the
    form does not apply (None); `step`: which step showed it (free / relations)."""

    zero: bool | None
    step: str = ""
    normalisers: int = 0  # sums the form divided by
    roots: int = 0  # bases the form took roots of
    solved: int = 0  # equality side conditions the proof used (each solved for a leaf)


class _Form:
    """Program symbols → (numerator, {denominator key: exponent}) in one polynomial ring."""

    def __init__(self, program: Program, exprs: list):
        self.program = program
        closure = program.closure(exprs)
        found: set = set()
        for sym in closure:
            found |= program.def_leaves(sym)
        for e in exprs:
            found |= {x for x in sp.sympify(e).free_symbols if not program.is_defined(x)}
        leaves = sorted(found, key=sp.default_sort_key)
        # an upper bound on the atoms, normalisers and roots the terms can create: one per
        # distinct power, two per distinct application (an atom, and a root where
        # exp(c log b) becomes b^c)
        apps, pows = set(), set()
        for e in [program.defs[s] for s in closure] + list(exprs):
            for node in sp.preorder_traversal(e):
                if node.is_Pow:
                    if not (node.exp.is_Integer and node.exp > 0):
                        pows.add(node)
                elif type(node) in _APP_TYPES or (node.is_Function and isinstance(node, _APPS)):
                    apps.add(node)
        # rounded up, so that claims on the same leaves share one ring (sympy caches rings)
        slots = -(-(2 * len(apps) + len(pows)) // 8) * 8
        names = leaves + _slots(slots) or [sp.Dummy("one")]
        self.ring, *gens = sp.ring(names, sp.QQ)
        self.gen = dict(zip(leaves, gens))
        self.free = gens[len(leaves):]
        self.closure = closure
        self.values: dict = {}  # program symbol -> rational form
        self.atoms: dict = {}  # atom key -> generator
        self.log_args: dict = {}  # generator of a log atom -> its argument's form
        self.exp_args: dict = {}  # generator of an exp atom -> its argument's form
        self.den_ids: dict = {}  # ("den", primitive numerator) or ("root", u) -> id
        self.dens: dict = {}  # id -> the generator (or monomial) standing for that base
        self.normalisers: list = []  # (generator, numerator polynomial), in creation order
        self.roots: list = []  # (generator, q, base form), in creation order
        self.root_of: dict = {}
        self._powers: dict = {}

    # ---- generators ---------------------------------------------------------------------
    def _fresh(self):
        if not self.free:
            raise _Outside("out of generators")
        return self.free.pop(0)

    def _den_id(self, key, poly) -> int:
        i = self.den_ids.get(key)
        if i is None:
            i = self.den_ids[key] = len(self.dens)
            self.dens[i] = poly
        return i

    def _power(self, key, k):
        hit = self._powers.get((key, k))
        if hit is None:
            hit = self._powers[(key, k)] = self.dens[key] ** k
        return hit

    # ---- arithmetic on (num, den) ---------------------------------------------------------
    def _lift(self, num, den, target):
        for key, k in target.items():
            extra = k - den.get(key, 0)
            if extra:
                num = num * self._power(key, extra)
        return num

    def add(self, parts):
        same: dict = {}  # parts over one denominator add without lifting
        for n, d in parts:
            k = tuple(sorted(d.items(), key=lambda kv: kv[0]))
            same[k] = same[k] + n if k in same else n
        den: dict = {}
        for k in same:
            for key, c in k:
                den[key] = max(den.get(key, 0), c)
        num = self.ring.zero
        for k, n in same.items():
            num = num + self._lift(n, dict(k), den)
        self._check(num)
        return num, den

    def mul(self, parts):
        num, den = self.ring.one, {}
        for n, d in parts:
            num = num * n
            for key, c in d.items():
                den[key] = den.get(key, 0) + c
        self._check(num)
        return num, den

    @staticmethod
    def _check(num):
        if len(num) > MAX_TERMS:
            raise _Outside("too many terms")

    def inverse(self, form, k: int):
        """form^-k: the numerator's base becomes a denominator key (a normaliser when it has
        more than one term), the old denominator bases move up."""
        n, d = form
        if not n:
            raise _Outside("division by zero")
        lc = n.LC
        n = n.quo_ground(lc)  # keys up to a constant factor: 2 s and s share one normaliser
        key = self.den_ids.get(("den", n))
        if key is None:
            if len(n) == 1:
                key = self._den_id(("den", n), n)
            else:
                g = self._fresh()
                key = self._den_id(("den", n), g)
                self.normalisers.append((g, n))
        num = self.ring(sp.QQ(1) / lc) ** k
        for dk, c in d.items():
            num = num * self._power(dk, c * k)
        return num, {key: k}

    def root_power(self, form, p: int, q: int):
        """form^(p/q) with q > 1: u^p for the root u of the base (u^q = base)."""
        n, d = form
        key = (n, tuple(sorted(d.items(), key=lambda kv: kv[0])), q)
        u = self.root_of.get(key)
        if u is None:
            u = self.root_of[key] = self._fresh()
            self.roots.append((u, q, form))
        if p >= 0:
            return u**p, {}
        return self.ring.one, {self._den_id(("root", u), u): -p}

    # ---- terms --------------------------------------------------------------------------
    def value(self, sym):
        """The form of a program symbol (its dependencies first, iteratively)."""
        if sym in self.values:
            return self.values[sym]
        stack = [sym]
        while stack:
            s = stack[-1]
            if s in self.values:
                stack.pop()
                continue
            todo = [d for d in self.program.deps(s) if d not in self.values]
            if todo:
                stack.extend(todo)
                continue
            stack.pop()
            self.values[s] = self.term(self.program.defs[s])
        return self.values[sym]

    def term(self, expr):
        memo: dict = {}
        order = list(sp.postorder_traversal(expr))
        for e in order:
            if e in memo:
                continue
            memo[e] = self._node(e, memo)
        return memo[expr]

    def _node(self, e, memo):
        if e.is_Symbol:
            if self.program.is_defined(e):
                return self.value(e)
            return self.gen[e], {}
        if e.is_Rational:
            return self.ring(sp.QQ(int(e.p), int(e.q))), {}
        if isinstance(e, ExprCondPair) or e.is_Boolean or e.is_Relational:
            return None  # only inside an atom's arguments
        if isinstance(e, _APPS):
            return self._atom(e, [memo[a] for a in e.args])
        args = [memo[a] for a in e.args]
        if any(a is None for a in args):
            raise _Outside(f"a term this form has no rule for: {type(e).__name__}")
        if e.is_Add:
            return self.add(args)
        if e.is_Mul:
            return self.mul(args)
        if e.is_Pow and e.exp.is_Rational:
            return self._pow(args[0], e.exp)
        raise _Outside(f"a term this form has no rule for: {type(e).__name__}")

    def _pow(self, base, exp: sp.Rational):
        p, q = int(exp.p), int(exp.q)
        if q == 1:
            if p >= 0:
                n, d = base
                return n**p, {key: c * p for key, c in d.items()}
            return self.inverse(base, -p)
        return self.root_power(base, p, q)

    def _atom(self, app, args):
        if app.func == sp.exp and args[0] is not None:
            rewritten = self._exp_of_log(args[0])
            if rewritten is not None:
                return rewritten
        if app.func == sp.log and args[0] is not None:
            n, d = args[0]
            if not d and n in self.exp_args:  # log(exp(t)) = t
                return self.exp_args[n]
        if any(a is None for a in args):
            key = (app.func, app)  # structural: the same program symbols, the same value
        else:
            key = (app.func,) + tuple(
                (n, tuple(sorted(d.items(), key=lambda kv: kv[0]))) for n, d in args)
        g = self.atoms.get(key)
        if g is None:
            g = self.atoms[key] = self._fresh()
            if app.func == sp.log and args[0] is not None:
                self.log_args[g] = args[0]
            if app.func == sp.exp and args[0] is not None:
                self.exp_args[g] = args[0]
        return g, {}

    def _exp_of_log(self, arg):
        """exp(c log b) = b^c for a rational c (sympy writes 1/sqrt(s) this way too)."""
        n, d = arg
        if d or len(n) != 1:
            return None
        (mon, c), = n.terms()
        if sum(mon) != 1:
            return None
        g = self.ring.gens[mon.index(1)]
        base = self.log_args.get(g)
        if base is None:
            return None
        return self._pow(base, sp.Rational(c.numerator, c.denominator))

    # ---- deciding -----------------------------------------------------------------------
    def residue(self, lhs, rhs):
        left = self.term(sp.sympify(lhs))
        right = self.term(sp.sympify(rhs))
        num, _ = self.add([left, self._neg(right)])
        return num

    def reduce_roots(self, num, expand: bool):
        """Root powers reduced by u^q = b, latest root first (a base may mention earlier
        roots). With `expand`, every normaliser is first replaced by its polynomial (latest
        first: a normaliser's polynomial may mention earlier ones); without, a base that is a
        normaliser's polynomial is written as that normaliser."""
        if expand:
            for g, poly in reversed(self.normalisers):
                num = self._subst(num, g, poly)
        for u, q, (bn, bd) in reversed(self.roots):
            if expand:
                for g, poly in reversed(self.normalisers):
                    bn = self._subst(bn, g, poly)
            elif bn and len(bn) > 1:
                i = self.den_ids.get(("den", bn.quo_ground(bn.LC)))
                if i is not None:
                    bn = self.dens[i] * bn.LC
            den = self.ring.one
            for key, c in bd.items():
                base = self.dens[key]
                if expand:
                    for g, poly in reversed(self.normalisers):
                        base = self._subst(base, g, poly)
                den = den * base**c
            num = self._reduce_root(num, u, q, bn, den)
            if not num:
                break
        return num

    def solved(self, equalities) -> list:
        """Side conditions `l == r` solved for a leaf each: [(leaf, polynomial)], in order.
        A condition linear in some leaf with a constant coefficient, after the earlier ones
        are substituted, gives leaf = polynomial; the points where all hold are exactly the
        images of the substitution, so a residue that vanishes after it vanishes there.
        Conditions with no such leaf are not used (a weaker claim is still sound)."""
        subs: list = []
        leaves = set(self.gen.values())
        for h in equalities:
            n, _ = self.add([self.term(sp.sympify(h.lhs)),
                             self._neg(self.term(sp.sympify(h.rhs)))])
            n = self.substitute(n, subs)
            for v in sorted(leaves, key=lambda g: self.ring.gens.index(g)):
                if n.degree(v) != 1:
                    continue
                coeff = n.coeff_wrt(v, 1)
                if coeff.is_ground and coeff:
                    rest = n - coeff * v
                    subs.append((v, rest.quo_ground(-coeff.LC)))
                    leaves.discard(v)
                    break
        return subs

    def substitute(self, num, subs):
        for v, poly in subs:
            num = self._subst(num, v, poly)
        return num

    @staticmethod
    def _neg(form):
        return -form[0], form[1]

    def _subst(self, num, g, poly):
        if num.degree(g) <= 0:
            return num
        num = num.compose(g, poly)
        self._check(num)
        return num

    def _reduce_root(self, num, u, q, bn, den):
        """num with u^(q m + r) = (bn / den)^m u^r, times den^M (M the largest m)."""
        i = self.ring.gens.index(u)
        top = max((mon[i] // q for mon in num.itermonoms()), default=0)
        if top == 0:
            return num
        groups: dict = {}  # m -> the terms with u^(q m + r), written with u^r
        for mon, coeff in num.terms():
            m, r = divmod(mon[i], q)
            groups.setdefault(m, []).append((mon[:i] + (r,) + mon[i + 1:], coeff))
        out = self.ring.zero
        for m, terms in groups.items():
            out = out + self.ring(dict(terms)) * bn**m * den ** (top - m)
            self._check(out)
        return out


def decide(program: Program, ob: Obligation) -> Decision:
    """Is every residue lhs - rhs of the identity zero in this canonical form (on the points
    where the claim's equality side conditions hold)?"""
    equalities = [h for h in ob.hypotheses if h.op == "=="]
    exprs = [e for a in ob.goal + tuple(equalities) for e in (a.lhs, a.rhs)]
    try:
        form = _Form(program, exprs)
        residues = [form.residue(a.lhs, a.rhs) for a in ob.goal]
        made = {"normalisers": len(form.normalisers), "roots": len(form.roots)}
        if all(not r for r in residues):
            return Decision(True, "free", **made)
        subs = form.solved(equalities)
        residues = [form.substitute(r, subs) for r in residues]
        made["solved"] = len(subs)
        if all(not r for r in residues):
            return Decision(True, "side conditions", **made)
        if not form.normalisers and not form.roots:
            return Decision(False, "free", **made)
        step = "roots"
        if form.roots:  # first without expanding the normalisers
            residues = [form.substitute(form.reduce_roots(r, expand=False), subs)
                        for r in residues]
        if any(residues):
            step = "relations"
            if any(form.substitute(form.reduce_roots(r, expand=True), subs)
                   for r in residues if r):
                return Decision(False, step, **made)
    except (_Outside, RecursionError, sp.polys.polyerrors.PolynomialError):
        return Decision(None)
    return Decision(True, step, **made)
