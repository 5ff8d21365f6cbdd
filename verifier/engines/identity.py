"""Identities `lhs == rhs`: canonical forms, exact random points, then z3.

1. Canonical form: inline both sides to leaves, replace every activation application by an
   atom keyed by its (canonical) argument, and expand the numerator of lhs - rhs. Zero means
   the identity holds for *all* values of the atoms, hence for the real functions too.
2. For claims with kinks, exp or log: the indicator canonical form and case split of
   `cases.py` (piecewise terms as 0/1 indicators of their decisions, exp of a sum as a
   product, log of positive factors as a sum; each case that could break the identity is
   excluded by z3 or its model replayed as a counterexample).
3. Random exact points inside the declared domain: a point where the sides differ (exactly,
   or by far more than the 60-digit rounding error) is a counterexample.
4. z3 on the emitted SMT-LIB, with atoms shared by canonical key and piecewise functions as
   `ite`: `unsat` proves; a `sat` model is replayed before it counts.
"""

from __future__ import annotations

import random
import time
from fractions import Fraction

import sympy as sp
from sympy.functions.elementary.piecewise import ExprCondPair

from ..diagnostics import SpecError
from ..emit.smtlib import encode
from ..layers.activations import PIECEWISE_FUNCTIONS, SMOOTH_FUNCTIONS
from ..obligations import Obligation
from ..symbolic.program import Program
from . import cases, rational
from .replay import _NotExact, replay, show_value
from .verdict import PROVED, REFUTED, UNKNOWN, Verdict
from .z3run import Z3Result, run_z3

RANDOM_POINTS = 24
QUICK_POINTS = 3  # before the inlined canonical form, where the program's form found no zero
# after a canonical proof or a replayed refutation, z3 only confirms on the emitted text;
# its answer (or its timeout) is recorded as is
CONFIRM_SECONDS = 0.25
# False: the previous route (inlined canonical form only, z3 confirms every proof), which
# bench/batch_backprop.py --before times for comparison
PROGRAM_FORM = True
CONFIRM_DEFS = 40  # program quantities of a claim beyond which z3 does not confirm a proof
CANONICAL_LIMIT = 5_000  # operations in an inlined side; beyond, skip to z3


class _Atoms:
    """Activation applications → atom symbols, keyed by their canonical argument."""

    def __init__(self):
        self.by_key: dict = {}

    def key(self, app: sp.Expr):
        return (app.func, tuple(_canon(a) for a in app.args))

    def atomize(self, expr: sp.Expr) -> sp.Expr:
        # post-order: innermost first, so outer arguments are rewritten in terms of inner atoms
        apps = list(dict.fromkeys(e for e in sp.postorder_traversal(expr)
                                  if isinstance(e, SMOOTH_FUNCTIONS + PIECEWISE_FUNCTIONS)))
        mapping: dict = {}
        for app in apps:
            if app in mapping:
                continue
            inner = app.xreplace(mapping)
            k = self.key(inner)
            if k not in self.by_key:
                self.by_key[k] = sp.Dummy(f"{app.func}{len(self.by_key)}")
            mapping[app] = self.by_key[k]
        return expr.xreplace(mapping)


def _canonical_zero(program: Program, ob: Obligation) -> bool | None:
    """True if every residue vanishes identically; None if too large to try."""
    atoms = _Atoms()
    for a in ob.goal:
        try:
            lhs = program.inline(a.lhs, CANONICAL_LIMIT)
            rhs = program.inline(a.rhs, CANONICAL_LIMIT)
        except SpecError:
            return None
        residue = atoms.atomize(lhs) - atoms.atomize(rhs)
        zero = rational_zero(residue)
        if zero is None:  # a term outside rational functions of atoms (max, a root)
            num, _ = sp.fraction(sp.together(residue))
            zero = sp.expand(num) == 0
        if not zero:
            return False
    return True


RATIONAL_TERMS = 20_000  # terms of a numerator; beyond, sympy's together (which factors)


class _TooLarge(Exception):
    pass


def rational_zero(expr: sp.Expr) -> bool | None:
    """Is `expr` (sums, products, integer powers of leaves and atoms) zero as a rational
    function? None when `expr` has anything else (then the caller uses sympy)."""
    num = rational_numerator(expr)
    return None if num is None else num == 0


def rational_numerator(expr: sp.Expr):
    """A numerator of `expr` as a sparse polynomial over QQ (a `PolyElement`), exact: the
    denominators are kept as products of the bases they came from (so no gcds), as `together`
    would but without building sympy terms. None when `expr` has anything but sums, products
    and integer powers of symbols and rationals."""
    syms = sorted(expr.free_symbols, key=sp.default_sort_key)
    if not syms:
        syms = [sp.Dummy("one")]
    ring, *gens = sp.ring(syms, sp.QQ)
    gen = dict(zip(syms, gens))
    bases: dict = {}  # denominator base (sympy term) -> its numerator polynomial
    memo: dict = {}
    powers: dict = {}

    def power(key, k):
        hit = powers.get((key, k))
        if hit is None:
            hit = powers[(key, k)] = bases[key] ** k
        return hit

    def lift(num, den, target):
        for key, k in target.items():
            extra = k - den.get(key, 0)
            if extra:
                num = num * power(key, extra)
        return num

    def conv(e):
        hit = memo.get(e)
        if hit is not None:
            return hit
        if e.is_Symbol:
            out = (gen[e], {})
        elif e.is_Rational:
            out = (ring(sp.QQ(int(e.p), int(e.q))), {})
        elif e.is_Add or e.is_Mul:
            parts = [conv(a) for a in e.args]
            if any(p is None for p in parts):
                return None
            if e.is_Mul:
                num, den = ring.one, {}
                for n, d in parts:
                    num = num * n
                    for key, k in d.items():
                        den[key] = den.get(key, 0) + k
            else:
                same: dict = {}  # parts over one denominator add without lifting
                for n, d in parts:
                    k = tuple(sorted(d.items(), key=lambda kv: sp.default_sort_key(kv[0])))
                    same[k] = same[k] + n if k in same else n
                den = {}
                for k in same:
                    for key, c in k:
                        den[key] = max(den.get(key, 0), c)
                num = ring.zero
                for k, n in same.items():
                    num = num + lift(n, dict(k), den)
            if len(num) > RATIONAL_TERMS:
                raise _TooLarge
            out = (num, den)
        elif e.is_Pow and e.exp.is_Integer:
            base = conv(e.base)
            if base is None:
                return None
            n, d = base
            k = int(e.exp)
            if k >= 0:
                out = (n**k, {key: c * k for key, c in d.items()})
            else:
                if n == 0:
                    return None
                bases.setdefault(e.base, n)
                num = ring.one
                for key, c in d.items():
                    num = num * power(key, c * -k)
                out = (num, {e.base: -k})
        else:
            return None
        memo[e] = out
        return out

    try:
        got = conv(expr)
    except (RecursionError, sp.polys.polyerrors.PolynomialError, _TooLarge):
        return None
    return None if got is None else got[0]


def _random_point(ob: Obligation, rng: random.Random) -> dict:
    point = {}
    for v in ob.variables:
        lo = Fraction(str(v.lo)) if v.lo is not None else Fraction(-3)
        hi = Fraction(str(v.hi)) if v.hi is not None else Fraction(3)
        if v.lo is not None and v.hi is None:
            hi = lo + 6
        if v.hi is not None and v.lo is None:
            lo = hi - 6
        den = rng.choice([1, 2, 3, 5, 7, 11, 13])
        point[v.symbol] = lo + (hi - lo) * Fraction(rng.randint(0, 97 * den), 97 * den)
    return point


def _counterexample(ob: Obligation, program: Program, point: dict, result) -> dict:
    return {
        "counterexample": {s.name: str(point[s]) for s in sorted(point, key=lambda s: s.name)},
        "violation": {"lhs": show_value(result.lhs), "rhs": show_value(result.rhs),
                      "op": result.atom.op, "exact": result.exact,
                      "entry": list(result.atom.entry),
                      "atom": f"{result.atom.lhs} {result.atom.op} {result.atom.rhs}"[:400]},
    }


def _replay(ob, program, point):
    """The replay of a candidate point, or None where it cannot be evaluated surely (a pole,
    a log of a negative number, a branch decision too close to call in floating point)."""
    try:
        return replay(ob, program, point)
    except (ZeroDivisionError, ValueError, OverflowError, _NotExact):
        return None


def _try_points(ob, program, rng, points: int = RANDOM_POINTS) -> dict | None:
    for _ in range(points):
        point = _random_point(ob, rng)
        r = _replay(ob, program, point)
        if r is not None and r.violated:
            return _counterexample(ob, program, point, r)
    return None


def decide_identity(ob: Obligation, program: Program, timeout: float) -> Verdict:
    """Prove, refute or give up on an identity obligation."""
    start = time.perf_counter()
    rng = random.Random(_seed(ob.name))
    canonical, cex, fast = _canonical(ob, program, rng)
    query = _Query(ob, program)
    if cex is not None:
        return _refuted_by_points(ob, query.get(), cex, start, timeout)
    if canonical:
        z3res = _confirm(query, min(timeout, CONFIRM_SECONDS), _worth_confirming(program, ob, fast))
        engine = "canonical-form" + ("+z3" if z3res.answer == "unsat" else "")
        what = "residue lhs - rhs expands to 0 with activations as atoms"
        if fast.zero and fast.solved:
            what += (f", where the equality side conditions hold ({fast.solved} solved for one "
                     "leaf each)")
        return Verdict(name=ob.name, kind=ob.kind, verdict=PROVED, engine=engine,
                       seconds=time.perf_counter() - start, artifact=what,
                       **_confirmed(query, z3res))
    split = None
    # before random points (a true claim skips them); not on sides too large to inline
    if canonical is False and cases.relevant(program, ob):
        split = cases.prove(program, ob, start + max(1.0, timeout - 0.5))
        if split.proved:
            worth = _worth_confirming(program, ob, fast)
            return _proved_by_cases(ob, query, split, start, timeout, worth)
        refuted = _refuted_by_case(ob, program, split, query.get(), start)
        if refuted is not None:
            return refuted
    cex = _try_points(ob, program, rng)
    query = query.get()
    if cex is not None:
        return _refuted_by_points(ob, query, cex, start, timeout)
    if isinstance(query, _NoQuery):
        return Verdict(name=ob.name, kind=ob.kind, verdict=UNKNOWN, engine="z3",
                       seconds=time.perf_counter() - start,
                       reason=f"no SMT-LIB encoding: {query.why}"
                              + (f"; case analysis: {split.reason}" if split else ""))
    left = max(0.5, timeout - (time.perf_counter() - start))
    z3res = run_z3(query.text, left)
    seconds = time.perf_counter() - start
    base = {"name": ob.name, "kind": ob.kind, "smt": query.text, "smt_answer": z3res.answer}
    if z3res.answer == "unsat":
        return Verdict(verdict=PROVED, engine="z3", seconds=seconds, artifact="smt2", **base)
    if z3res.answer == "sat":
        point = {query.variables[k]: v for k, v in z3res.model.items() if k in query.variables}
        for v in ob.variables:
            point.setdefault(v.symbol, Fraction(0))
        r = _replay(ob, program, point)
        if r is not None and r.violated:
            return Verdict(verdict=REFUTED, engine="z3", seconds=seconds, artifact="smt2",
                           **_counterexample(ob, program, point, r), **base)
        return Verdict(verdict=UNKNOWN, engine="z3", seconds=seconds,
                       reason="z3 found a model of the abstraction (activations as free atoms) "
                              "that does not replay on the network", **base)
    why = f"z3 {z3res.answer}" + (f" ({z3res.reason})" if z3res.reason else "")
    if split is not None and split.reason:
        why += f"; case analysis: {split.reason}"
    return Verdict(verdict=UNKNOWN, engine="z3", seconds=seconds, reason=why, **base)


def _refuted_by_points(ob, query, cex, start, timeout) -> Verdict:
    z3res = _confirm(query, min(timeout, CONFIRM_SECONDS / 2))
    return Verdict(name=ob.name, kind=ob.kind, verdict=REFUTED, engine="exact-points",
                   seconds=time.perf_counter() - start, smt=query.text,
                   smt_answer=z3res.answer, artifact="counterexample replayed", **cex)


class _Query:
    """The claim's SMT-LIB query, encoded on first use (a canonical proof of a large claim
    needs none)."""

    def __init__(self, ob, program):
        self.ob, self.program, self.query = ob, program, None

    def get(self):
        if self.query is None:
            try:
                self.query = encode(self.ob, self.program, atom_key=_canonical_key(self.program))
            except NotImplementedError as err:  # a term z3 has no form for: this claim only
                self.query = _NoQuery(str(err))
        return self.query


def _worth_confirming(program, ob, fast) -> bool:
    """Whether z3 is asked to confirm a canonical proof: not for claims of more than
    CONFIRM_DEFS program quantities, nor where the program's rational form divided by a sum
    or took a root (softmax, batchnorm: z3 never confirmed those within its budget). The
    proof does not rest on z3; what is lost is the .smt2 file next to it."""
    if not PROGRAM_FORM:
        return True
    if fast.normalisers or fast.roots:
        return False
    return len(program.closure([e for a in ob.goal for e in (a.lhs, a.rhs)])) <= CONFIRM_DEFS


def _canonical(ob, program, rng) -> tuple[bool | None, dict | None, rational.Decision]:
    """Whether the residues are zero in canonical form, a counterexample found on the way,
    and the program's rational form's decision.

    The program's rational form (`rational.py`) decides first. Where it cannot show zero,
    claims with kinks go on to the case split as before; the others get a few exact random
    points (a false claim is refuted here, without the slower inlined form) and then the
    inlined canonical form, which sees what sympy's own rewriting makes equal."""
    if not PROGRAM_FORM:
        return _canonical_zero(program, ob), None, rational.Decision(None)
    fast = rational.decide(program, ob)
    if fast.zero:
        return True, None, fast
    if fast.zero is False and cases.relevant(program, ob):
        return False, None, fast
    if fast.zero is False:
        cex = _try_points(ob, program, rng, QUICK_POINTS)
        if cex is not None:
            return False, cex, fast
    return _canonical_zero(program, ob), None, fast


def _confirmed(query: _Query, z3res) -> dict:
    """The SMT-LIB file of a proof that does not rest on z3: kept only when z3 answers
    `unsat` on it (a file next to a `proved` is never one z3 answers otherwise; the whole
    encoding sees activations as free atoms and is coarser than the canonical form)."""
    if z3res.answer == "unsat":
        return {"smt": query.get().text, "smt_answer": "unsat", "details": {}}
    if z3res.answer == "skipped":
        note = ("no SMT-LIB file: the claim is too large (or divides by sums of atoms) for z3 "
                "to confirm the canonical proof in its short budget; it was not asked")
    else:
        note = (f"no SMT-LIB file: z3 answers `{z3res.answer}` on the encoding with "
                "activations as free atoms, which is coarser than the canonical form")
    return {"details": {"no_whole_box_smt": True, "notes": [note]}}


def _confirm(query, seconds: float, worth: bool = True):
    """z3's answer on the claim's SMT-LIB text, briefly; none where the claim has no text."""
    if not worth:
        return Z3Result("skipped", None, "not asked")
    if isinstance(query, _Query):
        query = query.get()
    if query.text is None:
        return Z3Result("none", None, query.why)
    return run_z3(query.text, seconds)


class _NoQuery:
    """Stands for the SMT-LIB query of a claim that has none; z3 is then not run."""

    text = None

    def __init__(self, why: str):
        self.why = why


def _refuted_by_case(ob, program, split, query, start) -> Verdict | None:
    """A counterexample from z3's model of a case where the sides may differ, if it replays
    (leaves the case does not mention are 1)."""
    for found in split.witnesses:
        point = {v.symbol: Fraction(found.get(v.symbol, 1)) for v in ob.variables}
        r = _replay(ob, program, point)
        if r is not None and r.violated:
            return Verdict(name=ob.name, kind=ob.kind, verdict=REFUTED, engine="cases",
                           seconds=time.perf_counter() - start, smt=query.text,
                           artifact="a case of the decisions where the sides differ, found "
                                    "by z3 and replayed",
                           **_counterexample(ob, program, point, r))
    return None


def _proved_by_cases(ob, query, split, start, timeout, worth) -> Verdict:
    """A proof by the indicator form; z3 only confirms on the whole encoding, briefly."""
    z3res = _confirm(query, min(timeout, CONFIRM_SECONDS), worth)
    engine = "canonical-form+cases" + ("+z3" if z3res.answer == "unsat" else "")
    what = ("residue lhs - rhs expands to 0 with activations as atoms and piecewise terms as "
            "indicators of their decisions")
    if split.cases:
        what += (f", in every possible case ({split.cases} enumerated, "
                 f"{len(split.excluded)} excluded by z3: unsat)")
    elif split.reason:
        what += f" ({split.reason})"
    kw = _confirmed(query, z3res)
    kw["details"]["smt_cases"] = split.excluded
    return Verdict(name=ob.name, kind=ob.kind, verdict=PROVED, engine=engine,
                   seconds=time.perf_counter() - start, artifact=what, **kw)


def _canon(arg):
    """Expanded form of a function argument (Piecewise branches: expression and condition)."""
    if isinstance(arg, ExprCondPair):
        return (sp.expand(arg.expr), arg.cond)
    return sp.expand(arg)


def _seed(name: str) -> int:
    return sum((i + 1) * ord(c) for i, c in enumerate(name)) & 0xFFFFFFFF


def _canonical_key(program: Program):
    """Atoms in SMT share a constant when their inlined arguments agree after expansion."""
    cache: dict = {}

    def key(app):
        if app in cache:
            return cache[app]
        try:
            args = tuple(_canon(program.inline(a, CANONICAL_LIMIT)) for a in app.args)
        except SpecError:
            args = app.args
        cache[app] = (app.func, args)
        return cache[app]

    return key
