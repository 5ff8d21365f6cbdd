"""Bound claims with polynomial atoms or conditions on a network with concrete weights.

A claim such as `f(x)[0] * x[1] <= 2 * x[0]` (or any claim with `where` conditions, or with
`or` / `not`, whose cases carry hypotheses) over an input box, on one ReLU network of 64 or
more hidden neurons, is the question `verify-vnn` answers on a VNN-LIB 2.0 query with
arithmetic on inputs and outputs: the violations of the claim, `hypotheses and not goal`, are
a union of conjunctions of polynomial atoms over the network's inputs and outputs. `as_query`
writes that query (exactly: rational coefficients, strictness kept; `!=` as two strict
atoms); `decide_poly` runs the VNN-LIB 2.0 engines on it (the ReLU engine for linear queries,
`nonlinear_vnn` for polynomial ones: interval evaluation of the atoms, branch and bound, z3
on leaves with few unstable ReLUs) and replays every witness on the spec's own terms before
calling it a counterexample. Anything else returns None and stays with the other engines.
"""

from __future__ import annotations

import time
from fractions import Fraction

import sympy as sp

from ..obligations import Obligation
from ..symbolic.program import Program
from .verdict import PROVED, REFUTED, UNKNOWN, Verdict

NET = "f"  # the network's name in the query


class _Decline(Exception):
    """Not a polynomial question on one network's inputs and outputs."""


class _Polys:
    """Expressions over a network's inputs and outputs as polynomials (vnnlib2 `Poly`)."""

    def __init__(self, program: Program, outputs: dict, inputs: dict):
        from ..vnnlib2 import Var

        self.program = program
        self.leaf = {s: Var(NET, "Y", j) for s, j in outputs.items()}
        self.leaf.update({s: Var(NET, "X", i) for s, i in inputs.items()})
        self.memo: dict = {}

    def of(self, e) -> dict:
        e = sp.sympify(e)
        hit = self.memo.get(e)
        if hit is None:
            hit = self.memo[e] = self._of(e)
        return hit

    def _of(self, e) -> dict:
        from ..vnnlib2 import _padd, _pmul

        if e.is_Number:
            if not e.is_Rational:
                raise _Decline("irrational constant")
            v = Fraction(int(e.p), int(e.q))
            return {(): v} if v else {}
        if isinstance(e, sp.Symbol):
            var = self.leaf.get(e)
            if var is not None:
                return {((var, 1),): Fraction(1)}
            if self.program.is_defined(e):
                return self.of(self.program.defs[e])
            raise _Decline(f"free symbol {e}")
        if isinstance(e, sp.Add):
            out: dict = {}
            for a in e.args:
                out = _padd(out, self.of(a))
            return out
        if isinstance(e, sp.Mul):
            out = {(): Fraction(1)}
            for a in e.args:
                out = _pmul(out, self.of(a), None)
            return out
        if isinstance(e, sp.Pow) and e.exp.is_Integer and 0 <= int(e.exp) <= 8:
            out, base = {(): Fraction(1)}, self.of(e.base)
            for _ in range(int(e.exp)):
                out = _pmul(out, base, None)
            return out
        raise _Decline(f"function {type(e).__name__}")


def _atoms(polys: _Polys, atom) -> list[list]:
    """`atom` (an obligations.Atom) as a disjunction of conjunctions of vnnlib2 atoms."""
    from ..vnnlib2 import _compare

    kind, body = _compare(atom.op, polys.of(atom.lhs), polys.of(atom.rhs), None)
    if kind == "atom":
        return [[body]]
    parts = [b for _, b in body]
    return [parts] if kind == "and" else [[p] for p in parts]


def _violations(ob: Obligation, program: Program, linear_ok: bool, nets: dict | None = None):
    """(network application, OnnxNet, the violation's disjuncts) of one obligation, or None.

    `linear_ok`: take linear claims without hypotheses too (else they are the ReLU route's);
    `nets`: OnnxNets already built, by network application."""
    from ..vnnlib2 import Atom
    from .relu_route import MIN_NEURONS, _Decline as _NotRelu, application, network_of

    if ob.kind != "bound" or not ob.goal:
        return None
    try:
        app = application(ob, program)
        if app is None:
            return None
        box = {v.symbol: (v.lo, v.hi) for v in ob.variables}
        net = (nets or {}).get(id(app))
        if net is None:
            net = network_of(app)
            if nets is not None:
                nets[id(app)] = net
        if sum(blk.size for blk in net.blocks[:-1]) < MIN_NEURONS:
            return None
        if any(blk.act is not None and blk.act.kind not in ("relu", "leaky_relu")
               for blk in net.blocks):
            return None
        outputs = {s: j for j, s in enumerate(app.outputs) if isinstance(s, sp.Symbol)}
        inputs = {s: i for i, s in enumerate(app.inputs)}
        polys = _Polys(program, outputs, inputs)
        hyps = [[]]
        for h in ob.hypotheses:
            hyps = [m + d for m in hyps for d in _atoms(polys, h)]
        violations = [d for a in ob.goal for d in _atoms(polys, a.negated())]
        if not linear_ok and not ob.hypotheses and all(
                a.degree <= 1 for d in violations for a in d):
            return None  # linear, no conditions: the ReLU route's
    except (_Decline, _NotRelu):
        return None
    bounds = []
    for s, i in inputs.items():
        lo, hi = (Fraction(int(q.p), int(q.q)) for q in box[s])
        x = ((_var(NET, "X", i), 1),)
        bounds += [Atom({x: Fraction(-1), (): lo} if lo else {x: Fraction(-1)}, False),
                   Atom({x: Fraction(1), (): -hi} if hi else {x: Fraction(1)}, False)]
    return app, net, [bounds + m + d for m in hyps for d in violations]


def _query(name: str, app, disjuncts):
    from ..vnnlib2 import MAX_DISJUNCTS, NetDecl, Query, Tensor

    if len(disjuncts) > MAX_DISJUNCTS:
        return None
    decl = NetDecl(NET, Tensor(f"X_{NET}", (len(app.inputs),)),
                   Tensor(f"Y_{NET}", (len(app.outputs),)))
    return Query(path=name, networks=[decl], disjuncts=disjuncts)


def as_query(ob: Obligation, program: Program):
    """(Query, OnnxNet, input symbols) for a claim the VNN-LIB 2.0 engines take, or None.

    The query's disjuncts are the claim's violations: the claim holds iff it is `unsat`.
    Linear claims without hypotheses are the ReLU route's (`relu_route`), and networks under
    64 hidden neurons stay with z3 on the exact whole-box encoding."""
    got = _violations(ob, program, linear_ok=False)
    if got is None:
        return None
    app, net, disjuncts = got
    query = _query(ob.name, app, disjuncts)
    return None if query is None else (query, net, app.inputs)


def _decide(obs: list[Obligation], program: Program, query, net, inputs, timeout: float):
    """(Verdict or None per obligation, seconds) for the query of their violations' union:
    `unsat` proves them all; a witness refutes those whose violation it replays on."""
    from ..multinet import decide_query
    from .bounds import _refutation
    from .relu_route import workers
    from .replay import replay

    t0 = time.perf_counter()
    res, env = decide_query(query, {NET: net}, timeout, workers=workers())
    engine = "relu-bab" if query.linear else "nonlinear-bab"
    together = f" (the claim's {len(obs)} cases as one query)" if len(obs) > 1 else ""

    def verdict(ob, kind: str, **kw) -> Verdict:
        details = {"boxes": res.stats.get("boxes", 0),
                   "z3_leaves": res.stats.get("z3_leaves", 0)}
        if kind != UNKNOWN:
            details["no_whole_box_smt"] = True
        if "notes" in kw:
            details["notes"] = kw.pop("notes")
        return Verdict(name=ob.name, kind=ob.kind, verdict=kind, engine=engine,
                       seconds=time.perf_counter() - t0, details=details, **kw)

    if res.answer == "unsat":
        tree = res.certificate if engine == "nonlinear-bab" else None
        note = ("no SMT-LIB file: branch and bound over the input box with interval "
                "evaluation of the polynomial atoms and z3 on boxes with few unstable ReLUs "
                "(exact rationals)" + together
                + ("; the closed tree is the certificate (`verify-check`)" if tree else
                   "; no certificate" + (" (the tree was too large to keep)"
                                         if engine == "nonlinear-bab" else
                                         " (linear queries go to the ReLU engine, whose "
                                         "trees are not kept on this route yet)")))
        out = []
        for ob in obs:
            v = verdict(ob, PROVED, notes=[note], artifact="branch and bound over the input "
                        "box, every box closed by interval bounds or by z3 on its exact "
                        "encoding" + together)
            if tree:
                v.details["certificate"] = certificate(ob.name, query, tree)
            out.append(v)
        return out
    if res.answer == "sat" and env is not None:
        point = {s: Fraction(env[_var(NET, "X", i)]) for i, s in enumerate(inputs)}
        out = []
        for ob in obs:
            r = replay(ob, program, point)
            if r.violated:
                cex, violation = _refutation(point, r)
                out.append(verdict(ob, REFUTED, counterexample=cex, violation=violation,
                                   notes=["no SMT-LIB file: the counterexample replays "
                                          "exactly on the spec's terms"]))
            else:
                out.append(None)
        return out
    if len(obs) > 1:
        return None  # one by one, each with its own time limit
    return [verdict(obs[0], UNKNOWN, reason=f"{engine}: {res.answer}"
                    + (f" ({res.reason})" if res.reason else ""))]


def atom_json(atom) -> dict:
    """A query atom `p <= 0` (`< 0` when strict) for a certificate: p's monomials as exact
    coefficients and (x | y, index, power) factors, in a fixed order."""
    terms = [[str(c), [["x" if v.kind == "X" else "y", v.index, p] for v, p in m]]
             for m, c in atom.poly.items() if c]
    return {"strict": atom.strict, "poly": sorted(terms, key=lambda t: (t[1], t[0]))}


def certificate(claim: str, query, tree: dict) -> dict:
    """The certificate of a claim that `nonlinear-bab` proved: the violations as the
    query's disjuncts (exact atoms over the network's inputs x and outputs y) and the closed
    tree; `emit.certificate` adds the spec and the obligation's digest."""
    from ..emit.certificate import FORMAT

    return {"format": FORMAT, "kind": "poly", "source": "spec", "claim": claim,
            "disjuncts": [[atom_json(a) for a in d] for d in query.disjuncts], **tree}


def decide_poly(ob: Obligation, program: Program, timeout: float) -> Verdict | None:
    """The claim decided by the VNN-LIB 2.0 engines, or None where `as_query` declines (or
    the engines' witness does not replay on the spec's terms)."""
    got = as_query(ob, program)
    if got is None:
        return None
    query, net, inputs = got
    return _decide([ob], program, query, net, inputs, timeout)[0]


def decide_cases(obs: list[Obligation], program: Program, timeout: float):
    """The cases of one claim (`Obligation.case_of`) decided as one query, the union of their
    violations: a Verdict or None (decide it alone) per case, or None where the VNN-LIB 2.0
    engines do not take them all."""
    nets: dict = {}
    parts = [_violations(ob, program, linear_ok=True, nets=nets) for ob in obs]
    if any(p is None for p in parts) or len({id(p[0]) for p in parts}) != 1:
        return None
    app, net = parts[0][0], parts[0][1]
    out: list = [None] * len(obs)
    open_ = list(range(len(obs)))
    deadline = time.perf_counter() + timeout
    while open_:  # each witness refutes some cases; the union of the rest is asked again
        query = _query(obs[0].case_of or obs[0].name, app,
                       [d for i in open_ for d in parts[i][2]])
        left = deadline - time.perf_counter()
        if query is None or left < 0.5:
            break
        got = _decide([obs[i] for i in open_], program, query, net, app.inputs, left)
        if got is None:
            break
        for i, v in zip(open_, got):
            out[i] = v
        if all(v is None for v in got):
            break  # a witness that replays on no case: decide them one by one
        open_ = [i for i, v in zip(open_, got) if v is None]
    return out


def _var(net: str, kind: str, index: int):
    from ..vnnlib2 import Var

    return Var(net, kind, index)
