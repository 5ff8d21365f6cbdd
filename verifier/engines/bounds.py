"""Bound obligations: `forall x in box. hypotheses -> goal`, decided soundly.

Order of work: interval enclosures (with linear bounds) of every goal atom's `lhs - rhs`; a
cheap counterexample search (replayed before it counts); then z3 on SMT-LIB. Without smooth
functions the SMT-LIB encoding is exact (ReLU as `ite`), so `unsat` proves and `sat` gives a
model to replay.
With smooth functions each application is an opaque atom constrained by its interval and by
certified linear envelopes (`intervals.Tape.enclosures`), so `unsat` proves and `sat` only
suggests where to look. What neither settles goes to branch and bound over the input box,
best-first by the interval bound, every leaf closed by intervals or by z3; running out of time
is `unknown`, with the tightest certified bound and the worst point seen. With smooth
functions, before that exact branch and bound, `batched` evaluates many boxes per numpy call
(outward-rounded float intervals, forward affine forms and CROWN back-substitution) and
splits the worst boxes a batch at a time; it only proves (every box closed), and gets most of
the time, leaving the rest to the exact path (z3 leaves, exact short sums) for what it cannot
close, such as a bound attained exactly. Each box's
envelopes are tangent where its worst affine bound is attained (children inherit that point),
and are intersected with the parent's enclosures; `certified_bound` runs the same branch and
bound only to report the tightest bound it reaches in a time limit (for benchmarks).
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, replace
from fractions import Fraction

import numpy as np
import sympy as sp

from ..emit.smtlib import encode
from ..layers.activations import SMOOTH_FUNCTIONS
from ..obligations import Obligation
from ..symbolic.program import Program
from .batched import OPS, BatchedBab, BatchTape, Unsupported
from .intervals import INF, Evaluation, Tape, bounds_of
from .linforms import down, sub_box, up
from .replay import replay, show_value
from .search import Searcher
from .verdict import PROVED, REFUTED, UNKNOWN, Verdict
from .z3run import run_z3

SEARCH_SHARE = 0.1  # of the time limit, for the first counterexample search (at most 2 s)
ROOT_Z3_SHARE = 0.02  # of the time limit for z3 on the whole box (at least 0.5 s)
LEAF_Z3_SECONDS = 0.25  # z3 on a smaller box: short calls, then split instead
Z3_EVERY = 8  # z3 on one box in this many (plus one more per box it closes): splitting is
# often cheaper than z3 on small input dimensions; counting, not timing, keeps runs repeatable
Z3_FRUITLESS = 6  # after this many z3 calls that closed nothing, z3 only on one box in 64
NEAR_ZERO = 1e-9
WHERE = "interval-where"  # a box closed because a `where` condition is false on all of it
ARTIFACT_Z3_SECONDS = 1.0  # z3 re-checking an interval proof, for a file users can re-run
LEAF_FILES_SECONDS = 8.0  # z3 on the boxes of a batched proof, for per-box files
LEAF_FILES_MAX = 64  # a batched proof with more closed boxes writes no per-box files
BATCHED_SHARE = 0.75  # of the remaining time for batched branch and bound; the rest goes to
# the exact path (z3 leaves, exact short sums), which settles ties at an attained bound
SEARCH_EVERY = 25  # boxes before the first local search in the current worst box; the gaps
# then grow by half each time, so long proofs spend little on searching (most violations are
# found early, and the root search already ran)


@dataclass
class _Box:
    bounds: dict  # leaf -> (lo, hi) Fractions, None for an infinite side
    atoms: tuple[int, ...]  # goal atoms still open here
    ev: Evaluation  # interval of every tape slot on this box, and the envelopes used
    depth: int = 0
    hints: dict | None = None  # leaf -> float: where the worst atom's affine bound is attained
    node: int = 0  # in the split tree (heap numbering: the halves of n are 2n+1, 2n+2)


@dataclass
class _Closed:
    engine: str
    seconds: float = 0.0
    smt: str | None = None


def _proves(op: str, iv) -> bool:
    lo, hi = iv
    return {"<=": hi <= 0, "<": hi < 0, ">=": lo >= 0, ">": lo > 0,
            "==": lo == 0 and hi == 0, "!=": lo > 0 or hi < 0}[op]


def _refutes(op: str, iv) -> bool:
    """The atom `lhs op rhs` is false everywhere, iv enclosing lhs - rhs."""
    lo, hi = iv
    return {"<=": lo > 0, "<": lo >= 0, ">=": hi < 0, ">": hi <= 0,
            "==": lo > 0 or hi < 0, "!=": lo == 0 and hi == 0}[op]


def _badness(op: str, iv) -> float:
    """How far the interval is from proving the atom (for the best-first order)."""
    lo, hi = iv
    if op in ("<=", "<"):
        return float(hi)
    if op in (">=", ">"):
        return float(-lo)
    return float(max(hi, -lo))


def _clip(op: str, iv):
    """The interval of lhs - rhs on a box where the atom was proved (by z3)."""
    lo, hi = iv
    if op in ("<=", "<", "=="):
        hi = min(hi, Fraction(0))
    if op in (">=", ">", "=="):
        lo = max(lo, Fraction(0))
    return lo, hi


def _text(atom) -> str:
    return f"{atom.lhs} {atom.op} {atom.rhs}"


def _has_smooth(program: Program, terms) -> bool:
    exprs = [d for _, d in program.slice(terms)] + [sp.sympify(t) for t in terms]
    return any(e.has(*SMOOTH_FUNCTIONS) for e in exprs)


def decide_bound(ob: Obligation, program: Program, timeout: float = 10.0) -> Verdict:
    """Prove, refute (with a replayed counterexample) or give up on a bound obligation.

    Never proves by sampling, never weakens `<`; `timeout` (seconds) bounds the whole run.
    A piecewise-linear claim on one network with concrete weights (ReLU, or at least 64
    sigmoid / tanh neurons) goes to the ReLU engine (`relu_route`); everything else, and what
    that engine leaves open on a smooth network (in half the time), to `_Decider`.
    """
    t0 = time.perf_counter()
    v = _decide_relu(ob, program, timeout)
    if v is None:
        from .poly_route import decide_poly

        v = decide_poly(ob, program, timeout)  # polynomial atoms or conditions, wide ReLU nets
    if v is None:
        from .relu_grad import decide_grad

        v = decide_grad(ob, program, timeout)  # Jacobian claims on wide ReLU nets
    if v is not None:
        return v
    return _Decider(ob, program, max(timeout - (time.perf_counter() - t0), 0.1)).decide()


def _decide_relu(ob: Obligation, program: Program, timeout: float) -> Verdict | None:
    from . import relu_bab
    from .relu_route import as_property, workers

    t0 = time.perf_counter()
    got = as_property(ob, program)
    if got is None:
        return None
    net, prop, inputs = got
    smooth = any(blk.act is not None and blk.act.kind not in ("relu", "leaky_relu")
                 for blk in net.blocks)
    share = 0.5 if smooth else 1.0  # smooth: what it leaves open goes to the batched engine
    res = relu_bab.decide(net, prop, max(share * timeout - (time.perf_counter() - t0), 0.1),
                          workers=workers())
    details = {"boxes": res.stats.get("boxes", 0), "z3_leaves": res.stats.get("z3_leaves", 0)}
    smt = [text for _, text in res.smt]

    def verdict(kind: str, **kw) -> Verdict:
        return Verdict(name=ob.name, kind=ob.kind, verdict=kind, engine="relu-bab",
                       seconds=time.perf_counter() - t0, details=details, **kw)

    if res.answer == "unsat":
        from ..emit.certificate import spec_certificate

        cert = spec_certificate(res, ob.name, prop)
        if cert is not None:
            details["certificate"] = cert
        if smt:
            details["smt_leaves"] = smt
        else:  # z3 does not decide the whole box of a network this wide in seconds
            details["no_whole_box_smt"] = True
            details["notes"] = [("no SMT-LIB file: every box was closed by CROWN bounds, and "
                                 "z3 does not decide the whole-box encoding of a network "
                                 "this wide in seconds")]
        return verdict(PROVED, artifact="branch and bound over the input box, every box closed "
                       "by CROWN bounds or by z3", smt=smt[0] if smt else None,
                       smt_answer="unsat" if smt else None)
    if res.answer == "sat":
        point = {s: Fraction(x) for s, x in zip(inputs, res.witness_x)}
        r = replay(ob, program, point)
        if r.violated:
            cex, violation = _refutation(point, r)
            # no SMT-LIB file: printing the whole network's terms costs more than the search
            # (3 s of 8 on ACAS Xu); the counterexample is exact and replays on the spec
            details["notes"] = [("no SMT-LIB file: the counterexample replays exactly on the "
                                 "spec's terms")]
            details["no_whole_box_smt"] = True  # nor the whole-box encoding (2 s more of z3)
            return verdict(REFUTED, counterexample=cex, violation=violation)
        return None  # a witness of the network that the spec's terms do not confirm
    if smooth:
        return None  # the batched engine may still close it
    return verdict(UNKNOWN, reason=f"ReLU engine: {res.answer}"
                   + (f" ({res.reason})" if res.reason else ""))


class _Decider:
    def __init__(self, ob: Obligation, program: Program, timeout: float) -> None:
        self.ob, self.program, self.timeout = ob, program, timeout
        self.t0 = time.perf_counter()
        self.deadline = self.t0 + timeout
        diffs = [a.lhs - a.rhs for a in ob.goal]
        terms = [t for a in ob.goal + ob.hypotheses for t in (a.lhs, a.rhs)]
        self.smooth = _has_smooth(program, terms)
        hyps = [a.lhs - a.rhs for a in ob.hypotheses]  # their atoms get enclosures too
        self.tape = Tape(program, diffs + hyps)
        # powers beyond squares (sqrt, division): no exact z3 encoding, but batched rules
        self.powers = any(k == "rpow" or (k == "pow" and a[1] not in (1, 2))
                          for _, k, _, a in self.tape.code)
        self.root = {v.symbol: (_frac(v.lo), _frac(v.hi)) for v in ob.variables}
        self.hull: dict[int, tuple] = {}
        self.closed: list[_Closed] = []
        self.notes: list[str] = []
        self.best: tuple[float, dict | None] = (float("inf"), None)
        self.z3_calls = self.z3_unsat = self.processed = 0
        self.next_search = SEARCH_EVERY
        self.no_smt = False
        self._searcher: Searcher | None | bool = None  # compiled on first use; False: cannot
        self.tree: dict = {"splits": {}, "closed": {}}  # of the exact branch and bound

    @property
    def searcher(self) -> Searcher | None:
        if self._searcher is None:
            try:
                self._searcher = Searcher(self.ob, self.program)
            except (ValueError, NotImplementedError, TypeError) as exc:
                self._searcher = False
                self.notes.append(f"no counterexample search: {exc}")
        return self._searcher or None

    def remaining(self) -> float:
        return self.deadline - time.perf_counter()

    # ---- verdicts ------------------------------------------------------------------------------

    def _verdict(self, verdict: str, engine: str, **kw) -> Verdict:
        details = kw.pop("details", {})
        if self.notes:
            details.setdefault("notes", list(self.notes))
        return Verdict(name=self.ob.name, kind=self.ob.kind, verdict=verdict, engine=engine,
                       seconds=time.perf_counter() - self.t0, details=details, **kw)

    def _try_points(self, points, engine: str, **kw) -> Verdict | None:
        """The first point that replays as a violation, as a `refuted` verdict."""
        for p in points:
            pt = self._complete(p)
            r = replay(self.ob, self.program, pt)
            if r.violated:
                cex, violation = _refutation(pt, r)
                return self._verdict(REFUTED, engine, counterexample=cex, violation=violation,
                                     **kw)
        return None

    def _complete(self, point: dict) -> dict:
        """Every quantified variable gets a value: missing ones the point of its range nearest 0."""
        out = {s: Fraction(v) for s, v in point.items()}
        for v in self.ob.variables:
            if v.symbol not in out:
                lo, hi = self.root[v.symbol]
                x = Fraction(0)
                x = max(x, lo) if lo is not None else x
                out[v.symbol] = min(x, hi) if hi is not None else x
        return out

    # ---- the pipeline --------------------------------------------------------------------------

    def decide(self) -> Verdict:
        root = self._box(self.root, tuple(range(len(self.ob.goal))))
        if self.smooth and self._proved_by_intervals(root):
            return self._interval_verdict(root)
        v = self._search(None, budget=min(2.0, SEARCH_SHARE * self.timeout), samples=4000)
        if v is not None:
            return v
        if not self.smooth:  # exact SMT-LIB: z3 decides it, unless it runs out of time
            v = self._exact_root()
            if v is not None:
                return v
            if self._proved_by_intervals(root):
                return self._interval_verdict(root)
        batched = self._batched() if self.smooth or self.powers else None
        if batched is not None and batched.verdict != UNKNOWN:
            return batched
        v = self._branch_and_bound(root)
        if v.verdict == UNKNOWN and batched is not None:
            return _tighter(v, batched)
        return v

    # ---- batched branch and bound ----------------------------------------------------------------

    def batched_setup(self, tol: float = 0.0):
        """A `BatchedBab` on the whole box, or None (with the reason as a note) when the
        obligation is outside the batched path: `==`/`!=` goals, unbounded inputs, or an
        operation without a batched rule. `where` atoms close the boxes they are false on."""
        try:
            if any(a.op not in OPS for a in self.ob.goal):
                raise Unsupported("== and != atoms")
            leaves = [v.symbol for v in self.ob.variables if v.symbol in self.tape.leaves]
            if any(None in self.root[s] for s in leaves):
                raise Unsupported("an unbounded input")
            bt = BatchTape(self.tape, leaves)
        except Unsupported as exc:
            self.notes.append(f"no batched branch and bound: {exc}")
            return None
        lo = [down(self.root[s][0]) for s in leaves]
        hi = [up(self.root[s][1]) for s in leaves]
        ops = [a.op for a in self.ob.goal]
        hyps = list(zip([a.op for a in self.ob.hypotheses], self.tape.outputs[len(ops):]))
        return BatchedBab(bt, ops, self.tape.outputs[:len(ops)], lo, hi, tol=tol, hyps=hyps)

    def _batched(self) -> Verdict | None:
        """Batched branch and bound (`batched`) with most of the remaining time: `proved`
        when every box closes, a replayed counterexample from searches in the worst box, or
        `unknown` with the tightest certified bound; None when it does not apply."""
        bab = self.batched_setup()
        if bab is None:
            return None
        leaves = bab.bt.leaves
        state = {"next": time.perf_counter() + 1.0}

        def search(b, rounds):
            now = time.perf_counter()
            if now < state["next"]:
                return None
            state["next"] = now + max(1.0, 0.1 * (now - self.t0))
            lo, hi = b.worst_box()
            box = {s: (max(Fraction(lo[i]), self.root[s][0]), min(Fraction(hi[i]), self.root[s][1]))
                   for i, s in enumerate(leaves)}
            return self._search(box, budget=min(0.3, self.remaining()), samples=300, seed=rounds)

        res = bab.run(time.perf_counter() + BATCHED_SHARE * self.remaining(), search)
        if res.status == "stopped":
            return res.stopped
        engine = "batched-branch-and-bound"
        if res.status == "proved":
            art = (f"batched branch and bound: {res.closed} boxes, each closed by float interval "
                   f"and affine bounds rounded outward ({res.evaluated} evaluated)")
            if res.where_closed:
                art += f"; {res.where_closed} of them by refuting a `where` condition on the box"
            details = {"boxes": res.closed, "boxes_evaluated": res.evaluated,
                       "leaves_by_engine": {"batched-bounds": res.closed}}
            tree = bab.certificate_tree()
            if tree is not None:
                details["certificate"] = self._certificate(
                    "batched-branch-and-bound", bab.bt.leaves,
                    [(Fraction(float(a)), Fraction(float(b))) for a, b in
                     zip(bab.root_lo, bab.root_hi)], tree)
            files, kw = self._leaf_files(bab), {}
            if files:
                art += f"; z3 answers unsat on the SMT-LIB file of each box ({len(files)})"
                details["smt_leaves"] = files
                kw = {"smt": files[0], "smt_answer": "unsat"}
            return self._verdict(PROVED, engine, artifact=art, details=details, **kw)
        open_boxes = res.evaluated - res.closed  # upper bound on open boxes (split ones too)
        details = {"boxes": res.closed, "boxes_evaluated": res.evaluated}
        details.update(self._batched_bound(bab, res.bound))
        if self.best[1] is not None:
            details["best_seen"] = self.best[0]
            details["best_point"] = {s.name: x for s, x in self.best[1].items()}
        why = "a box too small to split" if res.status == "stalled" else "timeout"
        domain = ""
        if res.domain_boxes:
            details["domain_boxes"] = res.domain_boxes
            domain = (f"; on {res.domain_boxes} boxes the argument of a square root, fractional "
                      "power or division was not certified inside its domain (>= 0, > 0 or "
                      "!= 0)")
        return self._verdict(UNKNOWN, engine, reason=(
            f"{why} after {res.evaluated} boxes in batched branch and bound "
            f"({res.closed} closed, {open_boxes} split or open){domain}"), details=details)

    def _leaf_files(self, bab: BatchedBab) -> list[str] | None:
        """One SMT-LIB file per box the batched proof closed (the encoding with that box's
        enclosures), when z3 answers `unsat` on every one within `LEAF_FILES_SECONDS`; else
        None (and no file backs the proof: never one that z3 answers `sat`)."""
        boxes = bab.closed_boxes(LEAF_FILES_MAX)
        if not boxes:
            return None
        end = time.perf_counter() + min(LEAF_FILES_SECONDS, max(self.remaining(), 0.0))
        texts = []
        for lo, hi in boxes:
            bounds = dict(self.root)
            for i, s in enumerate(bab.bt.leaves):
                rlo, rhi = self.root[s]
                bounds[s] = (max(Fraction(float(lo[i])), rlo), min(Fraction(float(hi[i])), rhi))
            box = self._box(bounds, tuple(range(len(self.ob.goal))))
            extra = {s: b for s, b in bounds.items() if b != self.root.get(s)}
            q = self._encode(self.ob, enclosures=self.tape.enclosures(box.ev),
                             extra_bounds=extra, note=_box_note(extra))
            left = end - time.perf_counter()
            if q is None or left <= 0.02 or run_z3(q.text, min(left, 1.0)).answer != "unsat":
                return None
            texts.append(q.text)
        return texts

    def _batched_bound(self, bab: BatchedBab, bound: float) -> dict:
        """The certified bound of the worst atom, in the report's form."""
        k = 0
        if len(self.ob.goal) > 1:  # the atom attaining the bound
            k = int(bab.pool.ab.max(0).argmax()) if len(bab.pool) else 0
        upper = self.ob.goal[k].op in ("<=", "<")
        if not np.isfinite(bound):
            return {}
        q = Fraction(up(bound))
        lo, hi = (None, q) if upper else (-q, None)
        return {"certified_bound": {
            "atom": _text(self.ob.goal[k]),
            "lhs_minus_rhs": [None if lo is None else str(lo), None if hi is None else str(hi)],
            "approx": [None if lo is None else float(lo), None if hi is None else float(hi)]}}

    def _proved_by_intervals(self, box: _Box) -> bool:
        return all(_proves(self.ob.goal[k].op, self._iv(box, k)) for k in box.atoms)

    def _interval_verdict(self, root: _Box) -> Verdict:
        """Proved by the enclosures alone; z3 on the abstraction, if quick, gives a file that
        re-checks it (the abstraction contains every interval the proof used)."""
        self._close(root, root.atoms, "interval")
        art = "; ".join(f"{_text(self.ob.goal[k])}: lhs - rhs in "
                        f"[{_show(self._iv(root, k)[0])}, {_show(self._iv(root, k)[1])}]"
                        for k in root.atoms)
        kw = {}
        q = self._encode(self.ob, enclosures=self.tape.enclosures(root.ev) if self.smooth else None,
                         note="interval enclosures and linear envelopes on the whole box")
        if q is not None and self.remaining() > 0.1:
            r = run_z3(q.text, min(self.remaining(), ARTIFACT_Z3_SECONDS))
            if r.answer == "unsat":
                kw = {"smt": q.text, "smt_answer": "unsat"}
        leaves = [v.symbol for v in self.ob.variables if None not in self.root[v.symbol]]
        cert = self._certificate("interval", leaves, [self.root[x] for x in leaves],
                                 {"splits": {}, "closed": {0: None}})
        return self._verdict(PROVED, "interval", artifact=f"interval enclosure: {art}",
                             details={"boxes": 1, "certificate": cert}, **kw)

    def _certificate(self, engine: str, leaves, root, tree: dict) -> dict:
        """What `verifier.check` re-validates: the claim, the root box over the split
        variables (exact rationals, containing the claim's box) and the split tree whose
        leaves were closed. Every other variable keeps its declared range."""
        from ..emit.certificate import FORMAT

        return {"format": FORMAT, "engine": engine, "claim": self.ob.name,
                "text": self.ob.text, "variables": [s.name for s in leaves],
                "root": [[str(lo), str(hi)] for lo, hi in root],
                "splits": {str(n): [d, str(Fraction(m)), a, b]
                           for n, (d, m, a, b) in sorted(tree["splits"].items())},
                "closed": {str(n): bad for n, bad in sorted(tree["closed"].items())}}

    def _search(self, box, *, budget: float, samples: int, starts=(), seed: int = 0):
        if self.searcher is None or budget <= 0:
            return None
        res = self.searcher.run(box, budget=budget, samples=samples, starts=starts, seed=seed,
                                steps=40 if samples > 1000 else 15)
        if res.slack < self.best[0]:
            self.best = (res.slack, res.point)
        if res.slack <= NEAR_ZERO:  # float may miss an exact tie (a strict `<` at equality)
            return self._try_points(res.candidates, "search")
        return None

    def _encode(self, ob: Obligation, **kw):
        """The SMT-LIB query, or None (with a note) when a term has no SMT-LIB form."""
        try:
            return encode(ob, self.program, **kw)
        except NotImplementedError as exc:
            if not self.no_smt:
                self.notes.append(f"no SMT-LIB encoding: {exc}")
            self.no_smt = True
            return None

    def _exact_root(self) -> Verdict | None:
        """z3 on the exact encoding of the whole box (no smooth functions)."""
        q = self._encode(self.ob, note="exact encoding (piecewise-linear functions as ite)")
        if q is None:
            return None
        r = run_z3(q.text, max(0.1, 0.5 * self.remaining()))
        if r.answer == "unsat":
            self.closed.append(_Closed("z3", smt=q.text))
            return self._verdict(PROVED, "z3", smt=q.text, smt_answer="unsat",
                                 details={"boxes": 1})
        if r.answer == "sat":
            return self._exact_sat(q, r, smt=q.text)
        self.notes.append(f"z3 on the whole box: {r.answer} {r.reason}".strip())
        return None

    def _exact_sat(self, q, r, smt=None) -> Verdict:
        """z3 found a model of the exact negation: the claim fails; report a replayed point."""
        pt = self._model_point(q, r.model)
        v = self._try_points([pt], "z3", smt=smt, smt_answer="sat" if smt else None)
        v = v or self._search(None, budget=min(1.0, self.remaining()), samples=500, starts=[pt])
        return v or self._verdict(
            UNKNOWN, "z3", smt=smt, smt_answer="sat" if smt else None,
            reason="z3 reports a violation, but its model (irrational?) did not replay",
            details={"z3_model": {s.name: str(x) for s, x in pt.items()}})

    def _model_point(self, q, model) -> dict:
        pt = {}
        for name, sym in q.variables.items():
            if name in model:
                lo, hi = self.root.get(sym, (None, None))
                x = model[name]
                x = max(x, lo) if lo is not None else x
                pt[sym] = min(x, hi) if hi is not None else x
        return pt

    # ---- branch and bound ----------------------------------------------------------------------

    def _iv(self, box: _Box, k: int):
        return box.ev.values[self.tape.outputs[k]]

    def _box(self, bounds: dict, atoms: tuple, depth: int = 0, parent: _Box | None = None) -> _Box:
        """Enclosures on a box, each envelope tangent (where a tangent can bound that side)
        at the point where the worst atom's affine bound is attained: the optimised slopes of
        alpha-CROWN by a closed-form choice. Any slope is certified, so this only tightens.
        A child box takes the point from its parent's bound (clamped into the box), so it
        costs one run; the root runs twice."""
        if parent is None:
            box = _Box(bounds, atoms, self.tape.run(bounds), depth)
            at = self._hints(box, bounds)
            if at:
                box.ev = self.tape.run(bounds, parent=box.ev, at=at)
            return box
        quick = self._by_parent_forms(parent, bounds, atoms, depth)
        if quick is not None:
            return quick
        at = parent.hints
        if at is not None:
            at = self.tape.point_values({s: min(max(x, float(bounds[s][0])), float(bounds[s][1]))
                                         for s, x in at.items()})
        box = _Box(bounds, atoms, self.tape.run(bounds, parent=parent.ev, at=at), depth)
        return box

    def _by_parent_forms(self, parent: _Box, bounds: dict, atoms: tuple, depth: int):
        """The child box, closed without a run of the tape, when the parent's affine bounds
        (valid on the parent box, so on the child) prove every atom over the child box."""
        forms = parent.ev.forms
        if forms is None or not atoms:
            return None
        sub = sub_box([bounds[s] for s, _, _ in parent.ev.dims])
        values = list(parent.ev.values)
        for k in atoms:
            o = self.tape.outputs[k]
            lo, hi = values[o]
            if forms.has_l[o]:
                lo = max(lo, forms.low(forms.L[o], sub))
            if forms.has_u[o]:
                hi = min(hi, forms.high(forms.U[o], sub))
            if not _proves(self.ob.goal[k].op, (lo, hi)):
                return None
            values[o] = (lo, hi)
        return _Box(bounds, atoms, Evaluation(values, parent.ev.lines), depth)

    def _hints(self, box: _Box, bounds: dict) -> dict | None:
        """Envelope points for `run(at=...)` from the box's own bound (and remember the
        corner for its children)."""
        if not self.smooth or not self.tape.apps:
            return None
        open_atoms = [k for k in box.atoms if not _proves(self.ob.goal[k].op, self._iv(box, k))]
        if not open_atoms:
            return None
        k = max(open_atoms, key=lambda j: _badness(self.ob.goal[j].op, self._iv(box, j)))
        upper = self.ob.goal[k].op in ("<=", "<", "==")
        corner = self.tape.corner(box.ev, self.tape.outputs[k], upper)
        box.hints = {s: float(x) for s, x in corner.items()} or None
        return self.tape.point_values(corner) if corner else None

    def _priority(self, box: _Box) -> float:
        return -max(_badness(self.ob.goal[k].op, self._iv(box, k)) for k in box.atoms)

    def _where_refuted(self, box: _Box) -> bool:
        """Some `where` atom is false at every point of the box (by its interval)."""
        n = len(self.ob.goal)
        return any(_refutes(h.op, box.ev.values[self.tape.outputs[n + j]])
                   for j, h in enumerate(self.ob.hypotheses))

    def _close(self, box: _Box, atoms, engine: str, seconds: float = 0.0, smt=None) -> None:
        for k in atoms if engine != WHERE else ():  # a refuted `where`: no value to bound
            iv = self._iv(box, k)
            if engine != "interval":
                iv = _clip(self.ob.goal[k].op, iv)
            old = self.hull.get(k)
            self.hull[k] = iv if old is None else (min(old[0], iv[0]), max(old[1], iv[1]))
        if len(atoms) == len(box.atoms) or engine != "interval":
            self.closed.append(_Closed(engine, seconds, smt))
            self.tree["closed"][box.node] = engine

    def _branch_and_bound(self, root: _Box) -> Verdict:
        heap = [(self._priority(root), 0, root)]
        count = 1
        while heap:
            if self.remaining() <= 0:
                return self._timeout([b for _, _, b in heap])
            _, _, box = heapq.heappop(heap)
            v = self._process(box, count)
            if isinstance(v, Verdict):
                return v
            for child in v:
                heapq.heappush(heap, (self._priority(child), count, child))
                count += 1
        return self._proved()

    def _process(self, box: _Box, count: int):
        """Close the box (intervals, then z3), or return its halves, or a final Verdict."""
        if self._where_refuted(box):  # no point of the box meets the `where` conditions
            self._close(box, box.atoms, WHERE)
            return []
        done = [k for k in box.atoms if _proves(self.ob.goal[k].op, self._iv(box, k))]
        self._close(box, done, "interval")
        box.atoms = tuple(k for k in box.atoms if k not in done)
        if not box.atoms:
            return []
        self.processed += 1
        root_done = box.depth == 0 and not self.smooth  # the exact root query was already run
        every = Z3_EVERY if self.z3_unsat or self.z3_calls < Z3_FRUITLESS else 64
        allowance = 1 + self.processed // every + self.z3_unsat
        v = self._leaf_z3(box) if not root_done and self.z3_calls < allowance else False
        if isinstance(v, Verdict):
            return v
        if v:
            return []
        if count >= self.next_search:  # now and then, look for a violation in the worst box
            self.next_search += max(SEARCH_EVERY, self.next_search // 2)
            v = self._search(box.bounds, budget=min(0.2, self.remaining()), samples=300,
                             seed=count)
            if v is not None:
                return v
        children = self._split(box)
        if not children:
            return self._verdict(UNKNOWN, "branch-and-bound", reason=(
                "abstraction too coarse and no bounded input dimension left to split"),
                details=self._details([box]))
        return children

    def _leaf_z3(self, box: _Box):
        """True when z3 closes the box, a Verdict when it exposes a violation, else False."""
        share = max(0.5, ROOT_Z3_SHARE * self.timeout) if box.depth == 0 else LEAF_Z3_SECONDS
        budget = min(self.remaining(), share)
        if budget <= 0.05 or self.no_smt:
            return False
        sub = replace(self.ob, goal=tuple(self.ob.goal[k] for k in box.atoms))
        extra = {s: b for s, b in box.bounds.items() if b != self.root.get(s)}
        enclosures = self.tape.enclosures(box.ev) if self.smooth else None
        note = _box_note(extra) + ("" if self.smooth else "\nexact encoding")
        q = self._encode(sub, enclosures=enclosures, extra_bounds=extra, note=note)
        if q is None:
            return False
        start = time.perf_counter()
        r = run_z3(q.text, budget)
        seconds = time.perf_counter() - start
        self.z3_calls += 1
        if r.answer == "unsat":
            self.z3_unsat += 1
            self._close(box, box.atoms, "z3" if not self.smooth else "z3-abstraction",
                        seconds, q.text)
            return True
        if r.answer == "sat":
            if not self.smooth:
                return self._exact_sat(q, r, smt=q.text)
            pt = self._model_point(q, r.model)
            v = self._try_points([pt], "z3-abstraction+replay")
            if v is None and self.remaining() > 0:
                v = self._search(box.bounds, budget=min(0.3, self.remaining()), samples=200,
                                 starts=[pt], seed=box.depth)
            return v or False
        return False

    def _split(self, box: _Box) -> list[_Box]:
        """Two halves along the widest input dimension, relative to the root box (on the
        networks we measured this beat choosing by linear-bound influence)."""
        dims = [s for s, (lo, hi) in box.bounds.items()
                if lo is not None and hi is not None and lo < hi and s in self.tape.leaves]
        if not dims:
            return []
        rel = {s: (box.bounds[s][1] - box.bounds[s][0]) /
               (self.root[s][1] - self.root[s][0]) for s in dims}
        return self._halves(box, max(dims, key=lambda s: (rel[s], s.name)))

    def _halves(self, box: _Box, s) -> list[_Box]:
        if box.hints is None:
            self._hints(box, box.bounds)
        lo, hi = box.bounds[s]
        mid = (lo + hi) / 2
        out = []
        for k, part in enumerate(((lo, mid), (mid, hi))):
            bounds = dict(box.bounds)
            bounds[s] = part
            out.append(self._box(bounds, box.atoms, box.depth + 1, box))
            out[-1].node = 2 * box.node + 1 + k
        names = [v.symbol for v in self.ob.variables]
        self.tree["splits"][box.node] = (names.index(s), mid, out[0].node, out[1].node)
        return out

    def _proved(self) -> Verdict:
        engines = {c.engine for c in self.closed}
        leaves = [c for c in self.closed if c.smt is not None]
        hardest = max(leaves, key=lambda c: c.seconds, default=None)
        details = {"boxes": len(self.closed),
                   "leaves_by_engine": {e: sum(c.engine == e for c in self.closed)
                                        for e in sorted(engines)}}
        if leaves:
            details["smt_leaves"] = [c.smt for c in leaves]
        engine = self.closed[0].engine if len(self.closed) == 1 else "branch-and-bound"
        if all(None not in self.root[v.symbol] for v in self.ob.variables):
            # every variable bounded: the tree covers the claim's whole box
            syms = [v.symbol for v in self.ob.variables]
            details["certificate"] = self._certificate(
                engine, syms, [self.root[x] for x in syms], self.tree)
        return self._verdict(PROVED, engine, smt=hardest.smt if hardest else None,
                             smt_answer="unsat" if hardest else None, details=details)

    def _timeout(self, open_boxes: list[_Box]) -> Verdict:
        return self._verdict(UNKNOWN, "branch-and-bound",
                             reason=f"timeout after {len(self.closed) + len(open_boxes)} boxes "
                             f"({len(self.closed)} proved, {len(open_boxes)} open)",
                             details=self._details(open_boxes))

    def _details(self, open_boxes: list[_Box]) -> dict:
        hull = dict(self.hull)
        for box in open_boxes:
            for k in box.atoms:
                iv, old = self._iv(box, k), hull.get(k)
                hull[k] = iv if old is None else (min(old[0], iv[0]), max(old[1], iv[1]))
        out: dict = {"boxes": len(self.closed), "open_boxes": len(open_boxes)}
        if hull:
            k = max(hull, key=lambda j: _badness(self.ob.goal[j].op, hull[j]))
            lo, hi = bounds_of(hull[k])
            out["certified_bound"] = {
                "atom": _text(self.ob.goal[k]),
                "lhs_minus_rhs": [None if lo is None else str(lo), None if hi is None else str(hi)],
                "approx": [None if lo is None else float(lo), None if hi is None else float(hi)]}
        if self.best[1] is not None:
            out["best_seen"] = self.best[0]
            out["best_point"] = {s.name: x for s, x in self.best[1].items()}
        return out


def _tighter(old: Verdict, batched: Verdict) -> Verdict:
    """Two `unknown` verdicts on the same claim: the exact path's, with its certified bound
    intersected with the batched path's (both are sound, so each side takes the tighter)."""
    new, prev = batched.details.get("certified_bound"), old.details.get("certified_bound")
    if new is None:
        return old
    if prev is not None and prev["atom"] == new["atom"]:
        (plo, phi), (nlo, nhi) = prev["lhs_minus_rhs"], new["lhs_minus_rhs"]
        lo = max((Fraction(x) for x in (plo, nlo) if x is not None), default=None)
        hi = min((Fraction(x) for x in (phi, nhi) if x is not None), default=None)
        new = dict(new, lhs_minus_rhs=[None if lo is None else str(lo),
                                       None if hi is None else str(hi)],
                   approx=[None if lo is None else float(lo), None if hi is None else float(hi)])
    elif prev is not None:
        return old  # the bounds are on different atoms: keep the exact path's report
    old.details["certified_bound"] = new
    old.details["batched_boxes"] = batched.details.get("boxes_evaluated")
    old.reason = f"{old.reason}; before that, {batched.reason}"
    return old


def _refutation(point: dict, r) -> tuple[dict, dict]:
    """A replayed violation in the report's form: the point by variable name, exact, and the
    failing atom with both sides' values."""
    cex = {s.name: str(v) for s, v in sorted(point.items(), key=lambda kv: kv[0].name)}
    return cex, {"atom": _text(r.atom), "lhs": show_value(r.lhs), "rhs": show_value(r.rhs),
                 "exact": r.exact}


def _frac(q) -> Fraction | None:
    return None if q is None else Fraction(str(q))


def _show(x) -> str:
    return "-oo" if x == -INF else "oo" if x == INF else str(x)


def _box_note(extra: dict) -> str:
    if not extra:
        return "whole input box"
    parts = [f"{s.name} in [{lo}, {hi}]" for s, (lo, hi) in sorted(extra.items(),
                                                                  key=lambda kv: kv[0].name)]
    return "branch-and-bound box: " + ", ".join(parts)


def certified_bound(ob: Obligation, program: Program, timeout: float,
                    tolerance: float = 0.0) -> dict:
    """The tightest upper bound on `lhs - rhs` of the first goal atom over the points of the
    obligation's box that meet its `where` conditions, as branch and bound certifies it within
    `timeout` seconds (enclosures only: no z3, no search); a box where a condition is false
    everywhere drops out, one where it is undecided counts whole. Refines the worst box until
    time runs out or the bound is <= `tolerance`.
    Returns the bound (exact and float), the boxes evaluated and the seconds spent.
    """
    d = _Decider(ob, program, timeout)
    batchable = (d.smooth or d.powers) and len(ob.goal) == 1 and ob.goal[0].op in ("<=", "<")
    bab = d.batched_setup(tol=tolerance) if batchable else None
    if bab is not None:
        res = bab.run(d.deadline)
        bound = Fraction(up(res.bound)) if np.isfinite(res.bound) else res.bound
        return {"bound": bound, "approx": float(bound), "boxes": res.evaluated,
                "seconds": time.perf_counter() - d.t0, "where_closed": res.where_closed}
    root = d._box(d.root, (0,))
    heap = [] if d._where_refuted(root) else [(-d._iv(root, 0)[1], 0, root)]
    count = evaluated = 1
    where_closed = 1 - len(heap)
    while heap and d.remaining() > 0 and -heap[0][0] > tolerance:
        _, _, box = heapq.heappop(heap)
        children = d._split(box)
        if not children:
            heapq.heappush(heap, (-d._iv(box, 0)[1], count, box))
            break
        for child in children:
            evaluated += 1
            count += 1
            if d._where_refuted(child):  # holds no point of the claim: no bound needed
                where_closed += 1
                continue
            heapq.heappush(heap, (-d._iv(child, 0)[1], count, child))
    bound = -heap[0][0] if heap else -INF  # -inf: no point meets the `where` conditions
    return {"bound": bound, "approx": float(bound), "boxes": evaluated,
            "seconds": time.perf_counter() - d.t0, "where_closed": where_closed}
