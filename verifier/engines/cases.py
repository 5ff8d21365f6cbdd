"""Identities with kinks, exp and log: indicator canonical forms and case splits.

The identity engine's first canonical form keeps every activation application an opaque atom,
so it cannot see that `step(-z) = 1 - step(z)` off z = 0, that `leaky_relu(z, a)` is
`relu(z) - a relu(-z)`, that `exp(a - c) = exp(a) / exp(c)` or that `log(exp(x) / s)` is
`x - log(s)`. This second form does:

- every piecewise term (relu, step, leaky_relu, leaky_step, abs, max, min, Piecewise) becomes
  a polynomial in 0/1 *indicators* of its decisions: for a decision polynomial d (expanded,
  scaled to a primitive polynomial with a fixed sign) P_d = [d > 0] and Q_d = [d = 0], so
  [d < 0] = 1 - P_d - Q_d. Max and min take the first extreme argument, as every printer does;
- exp of a sum is the product of the exps of its terms, log of a product of positive factors
  (exp, sigmoid, softplus, positive numbers, sums and powers of those) the sum of their logs,
  log(exp(t)) = t;
- the numerator of lhs - rhs is reduced with P^2 = P, Q^2 = Q, P Q = 0, Q_d f = Q_d f|_{d=0}
  and the claim's side conditions (`z != 0`: Q_z = 0, `z > 0`: P_z = 1, ...).

What is left is split into clusters of monomials that share decisions. A cluster must take one
value in every case of its decisions that can occur: each case (> 0, = 0, < 0 per decision)
whose value differs from that is shown impossible under the side conditions by z3, one small
query per case. Every case is covered: enumerated or excluded by an `unsat`. Then the values
of all clusters and the indicator-free part must sum to zero.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from dataclasses import dataclass, field

import sympy as sp

from ..layers.activations import leaky_relu, leaky_step, relu, sigmoid, softplus, step
from ..symbolic.reverse import max_piecewise
from .z3run import run_z3

MAX_CASES = 3**8  # cases of one cluster that are enumerated; beyond, no proof here
CASE_SECONDS = 1.0  # z3's limit for one case
_ONE, _ZERO = sp.Integer(1), sp.Integer(0)
_STATES = ("+", "0", "-")
_POSITIVE_FUNCTIONS = (sigmoid, softplus)


@dataclass
class Outcome:
    """proved, or why not; the z3 texts that excluded cases."""

    proved: bool
    reason: str = ""
    cases: int = 0  # cases enumerated
    excluded: list[str] = field(default_factory=list)  # SMT-LIB of every excluded case
    witnesses: list[dict] = field(default_factory=list)  # points of cases where sides differ


class Canon:
    """Program terms → indicator canonical forms (memoised per program symbol)."""

    def __init__(self, program):
        self.program = program
        self.memo: dict = {}
        self.atoms: dict = {}  # key -> Dummy
        self.exp_arg: dict = {}  # exp atom -> its argument
        self.positive: set = set()
        self.decisions: dict = {}  # primitive decision polynomial -> (P, Q)
        self.indicator: dict = {}  # P or Q -> (decision, "P" | "Q")
        self.selectors: dict = {}  # tuple of canonical conditions -> branch selectors
        self.branch: dict = {}  # selector -> (conditions, branch index)
        self._values: dict = {}  # selector -> its indicator polynomial

    # ---- terms
    def of(self, expr: sp.Expr) -> sp.Expr:
        expr = sp.sympify(expr)
        for sym, d in self.program.slice([expr]):
            if sym not in self.memo:
                self.memo[sym] = self._walk(d)
        return self._walk(expr)

    def _walk(self, e):
        hit = self.memo.get(e)
        if hit is not None:
            return hit
        if e.is_Symbol or e.is_Number or e is sp.true or e is sp.false:
            return e
        if isinstance(e, sp.Piecewise) and e.args[-1].cond is not sp.true:
            out = self._partial(e)
        elif isinstance(e, sp.Piecewise):
            out = self._piecewise([(self._walk(x), c) for x, c in e.args])
        elif isinstance(e, (sp.Max, sp.Min)):
            args = [self._walk(a) for a in e.args]
            out = self._walk_pw(max_piecewise(e.func(*args, evaluate=False)))
        else:
            args = [self._walk(a) for a in e.args]
            out = self._apply(e, args)
        self.memo[e] = out
        return out

    def _partial(self, e):
        """A Piecewise without a default branch (undefined somewhere): an opaque atom keyed by
        its branches and their conditions."""
        key = ("partial", tuple((sp.expand(self._walk(x)), self._cond_key(c)) for x, c in e.args))
        d = self.atoms.get(key)
        if d is None:
            d = self.atoms[key] = sp.Dummy(f"partial{len(self.atoms)}", real=True)
        return d

    def _walk_pw(self, pw):
        return self._piecewise(list(pw.args))

    def _apply(self, e, args):
        if e.is_Add:
            return sp.Add(*args)
        if e.is_Mul:
            return sp.Mul(*args)
        if e.is_Pow:
            return sp.Pow(*args)
        if e.is_Relational or isinstance(e, sp.logic.boolalg.Boolean):
            return e.func(*args)
        f = type(e)
        if f is sp.exp:
            return self._exp(args[0])
        if f is sp.log:
            return self._log(args[0])
        if f is relu:
            return args[0] * self.gt(args[0])
        if f is step:
            return self.gt(args[0])
        if f is leaky_relu:
            x, a = args
            p = self.gt(x)
            return x * p + a * x * (1 - p)
        if f is leaky_step:
            x, a = args
            p = self.gt(x)
            return p + a * (1 - p)
        if f is sp.Abs:
            return args[0] * (self.gt(args[0]) - self.gt(-args[0]))
        if f is sp.sign:
            return self.gt(args[0]) - self.gt(-args[0])
        if f is sp.Heaviside:
            h0 = args[1] if len(args) > 1 else sp.S.Half
            return self.gt(args[0]) + h0 * self.eq(args[0])
        return self._atom(f, args)

    def _atom(self, f, args):
        key = (f, tuple(sp.expand(a) for a in args))
        d = self.atoms.get(key)
        if d is None:
            d = self.atoms[key] = sp.Dummy(f"{f.__name__}{len(self.atoms)}", real=True)
            if f is sp.exp or f in _POSITIVE_FUNCTIONS:
                self.positive.add(d)
            if f is sp.exp:
                self.exp_arg[d] = key[1][0]
        return d

    def _exp(self, a):
        """exp of a sum as a product of exps of its terms (integer multiples as powers)."""
        out, kinked = [], []
        for t in sp.Add.make_args(sp.expand(a)):
            if t.free_symbols & (self.indicator.keys() | self.branch.keys()):
                kinked.append(t)  # a max or relu inside: kept whole, exp(-m) = 1 / exp(m)
                continue
            c, r = t.as_coeff_Mul()
            if r == 1:
                out.append(sp.exp(c))
            elif c.is_Integer:
                out.append(self._atom(sp.exp, [r]) ** c)
            else:
                out.append(self._atom(sp.exp, [t]))
        if kinked:
            k = sp.Add(*kinked)
            neg = sp.expand(-k)
            r, sign = min((k, 1), (neg, -1), key=lambda t: sp.default_sort_key(t[0]))
            out.append(self._atom(sp.exp, [r]) ** sign)
        return sp.Mul(*out)

    def is_positive(self, e) -> bool:
        if not e.free_symbols:
            return e.is_positive is True
        if e in self.positive:
            return True
        if e.is_Add or e.is_Mul:
            return all(self.is_positive(a) for a in e.args)
        if e.is_Pow:
            return self.is_positive(e.base) and e.exp.is_real is True
        return False

    def _log(self, a):
        """log of a product: the logs of its positive factors split off (their sum), the rest
        one log atom; log(exp(t)) = t. Valid wherever the log is defined."""
        terms, rest = [], []
        for f in sp.Mul.make_args(sp.factor_terms(sp.together(a))):
            base, k = f.as_base_exp()
            if not self.is_positive(base):
                rest.append(f)
            elif base in self.exp_arg:
                terms.append(k * self.exp_arg[base])
            elif base.is_Number or isinstance(base, sp.exp):
                terms.append(k * sp.expand_log(sp.log(base), force=True))
            else:
                terms.append(k * self._atom(sp.log, [base]))
        if rest:
            terms.append(self._atom(sp.log, [sp.Mul(*rest)]))
        return sp.Add(*terms)

    # ---- decisions
    def _decision(self, d):
        """(P, Q, sign) of the decision d: [d > 0] is P if sign is 1, else 1 - P - Q."""
        d = sp.expand(d)
        content, prim = d.as_content_primitive()
        if not (content.is_Rational and content > 0):
            prim = d
        neg = sp.expand(-prim)
        key, sign = min((prim, 1), (neg, -1), key=lambda t: sp.default_sort_key(t[0]))
        pq = self.decisions.get(key)
        if pq is None:
            k = len(self.decisions)
            pq = self.decisions[key] = (sp.Dummy(f"P{k}"), sp.Dummy(f"Q{k}"))
            self.indicator[pq[0]] = (key, "P")
            self.indicator[pq[1]] = (key, "Q")
        return pq[0], pq[1], sign

    def gt(self, d):
        """[d > 0]"""
        d = sp.expand(d)
        if d.is_Number:
            return _ONE if d > 0 else _ZERO
        p, q, sign = self._decision(d)
        return p if sign == 1 else 1 - p - q

    def eq(self, d):
        """[d = 0]"""
        d = sp.expand(d)
        if d.is_Number:
            return _ONE if d == 0 else _ZERO
        return self._decision(d)[1]

    def cond(self, c):
        """The 0/1 value of a condition over canonical terms."""
        if c is sp.true:
            return _ONE
        if c is sp.false:
            return _ZERO
        if isinstance(c, sp.And):
            return sp.Mul(*(self.cond(a) for a in c.args))
        if isinstance(c, sp.Or):
            return 1 - sp.Mul(*(1 - self.cond(a) for a in c.args))
        if isinstance(c, sp.Not):
            return 1 - self.cond(c.args[0])
        d = self._walk(c.lhs) - self._walk(c.rhs)
        op = c.rel_op
        if op == ">":
            return self.gt(d)
        if op == ">=":
            return self.gt(d) + self.eq(d)
        if op == "<":
            return self.gt(-d)
        if op == "<=":
            return self.gt(-d) + self.eq(d)
        if op == "==":
            return self.eq(d)
        if op == "!=":
            return 1 - self.eq(d)
        raise ValueError(f"condition {c}")

    def _piecewise(self, pairs):
        """sum value_i B_i with B_i the selector of branch i: one 0/1 symbol per branch of
        each distinct tuple of conditions, so a Piecewise (a max) stays one term per branch
        until `expand_selectors` writes B_i as a polynomial in the decisions' indicators."""
        key = tuple(self._cond_key(c) for _, c in pairs)
        sel = self.selectors.get(key)
        if sel is None:
            sel = self.selectors[key] = [sp.Dummy(f"B{len(self.selectors)}_{k}")
                                         for k in range(len(pairs))]
            for k, b in enumerate(sel):
                self.branch[b] = (tuple(c for _, c in pairs), k)
        return sp.Add(*(value * b for (value, _), b in zip(pairs, sel)))

    def _cond_key(self, c):
        if c is sp.true or c is sp.false:
            return c
        if isinstance(c, (sp.And, sp.Or, sp.Not)):
            return (type(c).__name__, tuple(self._cond_key(a) for a in c.args))
        return (c.rel_op, sp.expand(self._walk(c.lhs) - self._walk(c.rhs)))

    def selector_values(self) -> dict:
        """B_i -> [c_i] prod_{j < i} (1 - [c_j]) over the decisions' indicators."""
        out = self._values
        for b, (conds, k) in self.branch.items():
            if b in out:
                continue
            v = self.cond(conds[k])
            for c in conds[:k]:
                v = v * (1 - self.cond(c))
            out[b] = v
        return out

    # ---- side conditions
    def allowed(self, hypotheses) -> dict:
        """decision -> the states ('+', '0', '-') the side conditions leave it."""
        out: dict = {}
        for h in hypotheses:
            d = sp.expand(self.of(h.lhs) - self.of(h.rhs))
            if d.is_Number:
                continue
            p, _, sign = self._decision(d)
            key = self.indicator[p][0]
            ok = {"==": {"0"}, "!=": {"+", "-"}, ">": {"+"}, ">=": {"+", "0"},
                  "<": {"-"}, "<=": {"-", "0"}}[h.op]
            if sign == -1:
                ok = {{"+": "-", "-": "+"}.get(s, s) for s in ok}
            out[key] = out.get(key, set(_STATES)) & ok
        return out


def _monomials(canon: Canon, num) -> dict:
    """numerator → {frozenset of indicators: coefficient}, with P^2 = P, Q^2 = Q, P Q = 0."""
    out: dict = {}
    for t in sp.Add.make_args(num):
        inds, rest = set(), []
        for f in sp.Mul.make_args(t):
            b, k = f.as_base_exp()
            if b in canon.indicator and k.is_Integer and k > 0:
                inds.add(b)
            elif b in canon.indicator:
                return None  # an indicator in a denominator: not a polynomial
            else:
                rest.append(f)
        decided = {}
        zero = False
        for i in inds:
            key, kind = canon.indicator[i]
            if decided.setdefault(key, kind) != kind:
                zero = True  # P_d Q_d = 0
        if not zero:
            mon = frozenset(inds)
            out.setdefault(mon, []).append(sp.Mul(*rest))
    return {m: sp.Add(*cs) for m, cs in out.items()}


def _on_zero(canon: Canon, mons: dict) -> dict:
    """Q_d c = Q_d c|_{d = 0}: a coefficient of Q_d with d solved for one of its symbols."""
    out: dict = {}
    for mon, c in mons.items():
        for i in sorted(mon, key=lambda s: s.name):
            key, kind = canon.indicator[i]
            if kind != "Q":
                continue
            for s in sorted(key.free_symbols - set(canon.indicator), key=lambda s: s.name):
                a = sp.diff(key, s)
                if a.is_Number and a != 0 and s in c.free_symbols:
                    c = c.xreplace({s: sp.expand(s - key / a)})
                    break
        c = sp.expand(c)
        if c != 0:
            out[mon] = out.get(mon, _ZERO) + c
    return {m: c for m, c in out.items() if c != 0}


def _fix(canon: Canon, allowed: dict) -> dict:
    """Indicator substitutions that the side conditions force."""
    sub = {}
    for key, ok in allowed.items():
        p, q = canon.decisions[key]
        if ok == {"+"}:
            sub.update({p: _ONE, q: _ZERO})
        elif ok == {"0"}:
            sub.update({p: _ZERO, q: _ONE})
        elif ok == {"-"}:
            sub.update({p: _ZERO, q: _ZERO})
        elif ok == {"+", "0"}:
            sub[p] = 1 - q
        elif ok == {"+", "-"}:
            sub[q] = _ZERO
        elif ok == {"0", "-"}:
            sub[p] = _ZERO
    return sub


def _clusters(canon: Canon, mons: dict) -> list[list]:
    """Monomials grouped by shared decisions (union-find over decisions)."""
    parent: dict = {}

    def find(x):
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for mon in mons:
        keys = [canon.indicator[i][0] for i in mon]
        for k in keys[1:]:
            parent[find(k)] = find(keys[0])
    # a decision whose polynomial divides another's (z and (1 - alpha) z) decides with it
    keys = sorted({canon.indicator[i][0] for mon in mons for i in mon}, key=sp.default_sort_key)
    for a, b in _dividing(keys):
        parent[find(a)] = find(b)
    groups: dict = {}
    for mon in mons:
        if mon:
            groups.setdefault(find(canon.indicator[next(iter(mon))][0]), []).append(mon)
    return [groups[k] for k in sorted(groups, key=sp.default_sort_key)]


def _dividing(keys) -> list[tuple]:
    """Pairs (a, b) of decision polynomials where a divides b (exact division in QQ[x])."""
    syms = sorted(set().union(*(k.free_symbols for k in keys)), key=sp.default_sort_key)
    if not syms:
        return []
    try:
        ring, *_ = sp.ring(syms, sp.QQ)
        polys = {k: ring(k) for k in keys}
    except (sp.PolynomialError, ValueError, TypeError):
        return []
    out = []
    for a, b in itertools.permutations(keys, 2):
        if a.free_symbols <= b.free_symbols and polys[a].degree() <= polys[b].degree():
            try:
                _, r = polys[b].div(polys[a])
            except (ZeroDivisionError, sp.PolynomialError):
                continue
            if r == 0:
                out.append((a, b))
    return out


class _Cases:
    """Consistency of cases under the side conditions, by z3, cached per case."""

    def __init__(self, canon: Canon, hyps: list, deadline: float):
        self.canon = canon
        self.hyps = hyps  # (canonical difference, op)
        self.deadline = deadline
        self.cache: dict = {}
        self.texts: list[str] = []
        self.witnesses: list[dict] = []  # leaf values of possible cases (z3 models)

    def impossible(self, case: tuple) -> bool | None:
        """True if z3 shows that no point is in the case; None when out of time."""
        if case in self.cache:
            return self.cache[case]
        left = self.deadline - time.perf_counter()
        if left <= 0.05:
            return None
        text, back = self._query(case)
        res = run_z3(text, min(CASE_SECONDS, left)) if text is not None else None
        ok = res is not None and res.answer == "unsat"
        if ok:
            self.texts.append(text)
        elif res is not None and res.answer == "sat":  # a candidate counterexample
            self.witnesses.append({back[k]: v for k, v in res.model.items() if k in back})
        self.cache[case] = ok
        return ok

    def _query(self, case) -> str | None:
        from ..emit.smtlib import SmtPrinter, smt_name

        conds = [(key, {"+": ">", "0": "=", "-": "<"}[s]) for key, s in case]
        syms = set().union(*(k.free_symbols for k, _ in conds))
        hyps = [(d, op) for d, op in self.hyps if d.free_symbols & syms]
        names, back = {}, {}
        for s in sorted(syms.union(*(d.free_symbols for d, _ in hyps)), key=sp.default_sort_key):
            names[s] = smt_name(f"{s.name}#{len(names)}" if isinstance(s, sp.Dummy) else s.name)
            if not isinstance(s, sp.Dummy):
                back[names[s].strip("|")] = s
        printer = SmtPrinter(names)
        lines = ["; one case of a piecewise identity: unsat means it cannot occur",
                 "(set-logic QF_NRA)"]
        lines += [f"(declare-const {n} Real)" for n in names.values()]
        try:
            for d, op in hyps + conds:
                rel = {"!=": None, "==": "="}.get(op, op)
                body = f"({rel or '='} {printer._print(d)} 0.0)"
                lines.append(f"(assert {body if rel else f'(not {body})'})")
        except NotImplementedError:
            return None, back
        lines.append("(check-sat)")
        return "\n".join(lines) + "\n", back


def _cluster_value(canon: Canon, group: list, mons: dict, allowed: dict, cases: _Cases):
    """The one value the cluster takes in every possible case, or (None, why)."""
    keys = sorted({canon.indicator[i][0] for m in group for i in m}, key=sp.default_sort_key)
    states = [[s for s in _STATES if s in allowed.get(k, _STATES)] for k in keys]
    total = 1
    for s in states:
        total *= len(s)
    if total > MAX_CASES:
        return None, (f"{len(keys)} decisions in one cluster of the residue ({total} cases, "
                      f"above {MAX_CASES})"), 0
    where = {k: j for j, k in enumerate(keys)}
    need = [[(where[canon.indicator[i][0]], "+" if canon.indicator[i][1] == "P" else "0")
             for i in m] for m in group]
    by_on: dict = {}
    for combo in itertools.product(*states):
        on = tuple(k for k, req in enumerate(need) if all(combo[j] == s for j, s in req))
        by_on.setdefault(on, []).append(combo)
    values = {on: sp.expand(sp.Add(*(mons[group[k]] for k in on))) for on in by_on}
    counts = Counter()
    for on, combos in by_on.items():
        counts[values[on]] += len(combos)
    best = max(counts, key=lambda v: (counts[v], v == 0))
    for on, combos in by_on.items():
        if values[on] == best:
            continue
        for combo in combos:
            got = cases.impossible(tuple(zip(keys, combo)))
            if got is None:
                return None, "out of time in the case analysis", total
            if not got:
                return None, "a case of the decisions where the sides differ is possible", total
    return best, "", total


def _expanded(e):
    """expand(e) of a polynomial, by sparse polynomial arithmetic where possible."""
    from .identity import rational_numerator

    fast = rational_numerator(e) if not _has_inverse(e) else None
    return sp.expand(e) if fast is None else fast.as_expr()


def _has_inverse(e) -> bool:
    return any(n.is_Pow and n.exp.is_negative for n in sp.preorder_traversal(e))


def prove(program, ob, deadline: float) -> Outcome:
    """Does lhs - rhs vanish in every possible case of its decisions (see the module text)?"""
    canon = Canon(program)
    residues = []
    from .identity import rational_numerator

    for a in ob.goal:
        residue = canon.of(a.lhs) - canon.of(a.rhs)
        fast = rational_numerator(residue)
        if fast is not None:
            num = fast.as_expr() if fast != 0 else _ZERO
        else:
            num = sp.expand(sp.fraction(sp.together(residue))[0])
        if num != 0 and canon.branch:
            num = _expanded(num.xreplace(canon.selector_values()))
        if num != 0:
            residues.append(num)
        if time.perf_counter() > deadline:
            return Outcome(False, "out of time building the canonical forms")
    if not residues:
        return Outcome(True)
    allowed = canon.allowed(ob.hypotheses)
    if any(not ok for ok in allowed.values()):
        return Outcome(True, "the side conditions contradict each other")
    fix = _fix(canon, allowed)
    hyps = [(sp.expand(canon.of(h.lhs) - canon.of(h.rhs)), h.op) for h in ob.hypotheses]
    cases = _Cases(canon, hyps, deadline)
    enumerated = 0
    for num in residues:
        mons = _monomials(canon, _expanded(num.xreplace(fix)) if fix else num)
        if mons is None:
            return Outcome(False, "a piecewise term in a denominator")
        mons = _on_zero(canon, mons)
        if not mons:
            continue
        if frozenset() in mons and len(mons) == 1:
            return Outcome(False, "not an identity with piecewise terms as indicators")
        rest = mons.get(frozenset(), _ZERO)
        for group in _clusters(canon, mons):
            value, why, n = _cluster_value(canon, group, mons, allowed, cases)
            enumerated += n
            if value is None:
                return Outcome(False, why, enumerated, cases.texts, cases.witnesses)
            rest += value
        if sp.expand(rest) != 0:
            return Outcome(False, "the cases' values do not cancel", enumerated, cases.texts)
    return Outcome(True, "", enumerated, cases.texts)


def relevant(program, ob) -> bool:
    """Whether the claim has the terms this form knows more about than the first one."""
    kinds = (relu, step, leaky_relu, leaky_step, sp.Piecewise, sp.Max, sp.Min, sp.Abs,
             sp.exp, sp.log)
    terms = [t for a in ob.goal for t in (a.lhs, a.rhs)]
    for _, d in program.slice(terms):
        if d.has(*kinds):
            return True
    return any(sp.sympify(t).has(*kinds) for t in terms)
