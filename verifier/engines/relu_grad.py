"""Derivative claims on ReLU networks with concrete weights, by interval Jacobians.

A claim such as `d(n(x)[0])/d(x[1]) >= 0` (monotonicity) or `abs(d(n(x)[0])/d(x[0])) <= L`
(a Lipschitz bound per input) over an input box, on a ReLU / leaky ReLU network of 64 or more
hidden neurons, is about the network's Jacobian, which is constant on each activation
pattern: J(x) = W_L D_{L-1}(x) W_{L-1} ... D_1(x) W_1 with D_k diagonal, 1 (active) or 0 (or the
leaky slope) per neuron. On a box, interval bounds of the pre-activations fix the stable
neurons; an unstable one (its bounds contain 0) contributes the hull [0, 1] (or [alpha, 1]),
whatever the convention at 0, so the backward interval product encloses every Jacobian the
network takes on the box. The claim's atoms are linear in Jacobian entries (rational
coefficients, max / min / abs of them expanded as `relu_route` does); a box is closed when the
enclosure excludes every violation, else bisected. Floats are rounded outward: every matrix
product's result is widened by gamma_n of the sum of absolute terms (plus the weights'
conversion to float), so each enclosure contains the exact rational one. Candidate points
(box centres where the float Jacobian violates the claim) count only after the claim replays
on the spec's own terms in exact arithmetic. Anything else returns None.
"""

from __future__ import annotations

import heapq
import time
from fractions import Fraction

import numpy as np
import sympy as sp

from ..obligations import Obligation
from ..symbolic.program import Program
from .verdict import PROVED, REFUTED, UNKNOWN, Verdict

U = 2.0 ** -53
TINY = 2.0 ** -1000
MAX_BOXES = 2_000_000
SEARCH_POINTS = 4096  # random points whose float Jacobians are tried before branch and bound
MAX_REPLAYS = 200  # exact replays of box centres the floats call violations
MAX_CERT_LEAVES = 20_000  # a proof with more leaves writes no certificate (the checker's
# exact intervals take about 10 ms a box)


class _Decline(Exception):
    pass


def _gamma(n: int) -> float:
    return (n * U) / (1 - n * U)


def _up(a: np.ndarray) -> np.ndarray:
    return np.nextafter(a, np.inf)


def _down(a: np.ndarray) -> np.ndarray:
    return np.nextafter(a, -np.inf)


class _Layer:
    def __init__(self, W, b, kind: str | None, alpha: float):
        self.W = np.array([[float(v) for v in row] for row in W], dtype=float)
        self.absW = np.abs(self.W)
        self.b = np.array([float(v) for v in b], dtype=float)
        self.kind, self.alpha = kind, alpha
        self.n = self.W.shape[1] + 2  # terms of one dot product, the bias and the conversion


class _Net:
    """The chain (`OnnxNet.chain` on the root box) in floats, with rounding bounds."""

    def __init__(self, pairs):
        self.layers = []
        for aff, act in pairs:
            if act is not None and act.kind not in ("relu", "leaky_relu"):
                raise _Decline(f"activation {act.kind}")
            alpha = float(act.alpha) if act is not None and act.kind == "leaky_relu" else 0.0
            self.layers.append(_Layer(aff.W, aff.b, act.kind if act else None, alpha))
        if self.layers[-1].kind is not None:
            raise _Decline("the network ends in an activation")

    def affine(self, la: _Layer, lo: np.ndarray, hi: np.ndarray):
        c, r = (lo + hi) / 2, (hi - lo) / 2
        yc = la.W @ c + la.b
        yr = la.absW @ r
        err = _gamma(la.n + 2) * (la.absW @ (np.abs(c) + r) + np.abs(la.b) + np.abs(yr)) + TINY
        return _down(yc - yr - err), _up(yc + yr + err)

    def slopes(self, lo, hi) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per hidden layer, bounds [dl, du] of the activation's derivative on the box."""
        out = []
        for la in self.layers[:-1]:
            zl, zu = self.affine(la, lo, hi)
            a = la.alpha
            dl = np.where(zl > 0, 1.0, np.where(zu < 0, a, min(a, 1.0)))
            du = np.where(zl > 0, 1.0, np.where(zu < 0, a, max(a, 1.0)))
            out.append((dl, du))
            if la.kind == "relu":
                lo, hi = np.maximum(zl, 0.0), np.maximum(zu, 0.0)
            else:  # twice outward: the product's rounding and the slope's conversion
                lo, hi = np.minimum(zl, a * zl), np.maximum(zu, a * zu)
                lo, hi = _down(_down(lo)), _up(_up(hi))
        return out

    def jacobian(self, lo, hi):
        """Bounds [Jl, Ju] (outputs x inputs) of every Jacobian the network has on the box."""
        slopes = self.slopes(lo, hi)
        last = self.layers[-1]
        Gl = Gu = last.W
        for la, (dl, du) in zip(reversed(self.layers[:-1]), reversed(slopes)):
            # G diag(d): products of intervals, exact in floats up to one rounding each
            cands = [Gl * dl, Gl * du, Gu * dl, Gu * du]  # twice outward: a leaky slope's
            Gl = _down(_down(np.minimum.reduce(cands)))  # conversion, then the product
            Gu = _up(_up(np.maximum.reduce(cands)))
            c, r = (Gl + Gu) / 2, (Gu - Gl) / 2
            yc, yr = c @ la.W, r @ la.absW
            err = _gamma(la.n + 2) * ((np.abs(c) + r) @ la.absW + np.abs(yr)) + TINY
            Gl, Gu = _down(yc - yr - err), _up(yc + yr + err)
        return Gl, Gu

    def jacobian_at(self, X) -> np.ndarray:
        """Float Jacobians at the points X (B x inputs): B x outputs x inputs."""
        H = X
        D = []
        for la in self.layers[:-1]:
            Z = H @ la.W.T + la.b
            d = np.where(Z > 0, 1.0, la.alpha)
            D.append(d)
            H = Z * d
        G = np.broadcast_to(self.layers[-1].W, (len(X),) + self.layers[-1].W.shape)
        for la, d in zip(reversed(self.layers[:-1]), reversed(D)):
            G = (G * d[:, None, :]) @ la.W
        return G


# ---- the claim ---------------------------------------------------------------------------

Lin = dict  # (j, i) -> Fraction, 1 -> Fraction


def _pieces(program: Program, jac: dict, e) -> list[list[Lin]]:
    """e over Jacobian entries as max_i min_j L_ij (affine L): the relu route's expansion,
    with the Jacobian entries (symbol -> (output, input)) as its variables."""
    from .relu_route import _Decline as _NotPwl, _Pieces

    class _Jac(_Pieces):
        def _of(self, e):
            if isinstance(e, sp.Symbol) and e in jac:
                return [[{jac[e]: Fraction(1)}]]
            if isinstance(e, sp.Abs):
                return self.of(sp.Max(e.args[0], -e.args[0], evaluate=False))
            return super()._of(e)

    try:
        return _Jac(program, {}, {}).of(e)
    except _NotPwl as err:
        raise _Decline(str(err)) from None


def _violations(ob: Obligation, program: Program, jac: dict):
    """The claim's violations as a union of conjunctions of `L > 0` / `L >= 0` over Jacobian
    entries: [(rows, strict)] per disjunct."""
    out = []
    for atom in ob.goal:
        diff = atom.lhs - atom.rhs
        if atom.op in ("<=", "<"):
            expr, strict = diff, atom.op == "<="
        elif atom.op in (">=", ">"):
            expr, strict = -diff, atom.op == ">="
        else:
            raise _Decline(f"comparison {atom.op}")
        for conj in _pieces(program, jac, expr):
            out.append((conj, strict))
    return out


def as_problem(ob: Obligation, program: Program):
    """(application, OnnxNet, violations, box) for a Jacobian claim this route takes, or None."""
    from .relu_route import MIN_NEURONS, _Decline as _NotRelu, application, network_of

    if ob.kind != "bound" or ob.hypotheses or not ob.goal:
        return None
    app = application(ob, program, kinds=("jacobian",))
    if app is None:
        return None
    used = set(program.closure([t for a in ob.goal for t in (a.lhs, a.rhs)]))
    jac_syms = {s: (o[2], o[3]) for s in used if (o := program.network_terms.get(s))
                and o[1] == "jacobian" and o[0] is app}
    box = {v.symbol: (v.lo, v.hi) for v in ob.variables}
    try:
        violations = _violations(ob, program, jac_syms)
        net = network_of(app)
    except (_Decline, _NotRelu):
        return None
    if sum(blk.size for blk in net.blocks[:-1]) < MIN_NEURONS:
        return None
    if any(blk.act is not None and blk.act.kind not in ("relu", "leaky_relu")
           for blk in net.blocks):
        return None
    lo = [Fraction(int(box[s][0].p), int(box[s][0].q)) for s in app.inputs]
    hi = [Fraction(int(box[s][1].p), int(box[s][1].q)) for s in app.inputs]
    return app, net, violations, (lo, hi)


def _rows(violations, n_out: int, n_in: int):
    """Per disjunct: coefficient matrices (rows x outputs x inputs), constants, strictness."""
    out = []
    for conj, strict in violations:
        C = np.zeros((len(conj), n_out, n_in))
        k = np.zeros(len(conj))
        for r, L in enumerate(conj):
            for key, v in L.items():
                if key == 1:
                    k[r] = float(v)
                else:
                    C[r, key[0], key[1]] = float(v)
        out.append((C, k, strict))
    return out


def _row_bound(C, k, Jl, Ju) -> np.ndarray:
    """Upper bounds of sum C * J + k over J in [Jl, Ju], rounded up (one per row)."""
    Cp, Cn = np.maximum(C, 0.0), np.minimum(C, 0.0)
    s = (Cp * Ju + Cn * Jl).reshape(len(C), -1).sum(axis=1) + k
    mag = (np.abs(C) * np.maximum(np.abs(Jl), np.abs(Ju))).reshape(len(C), -1).sum(axis=1)
    n = C[0].size + 2
    return _up(s + _gamma(n + 2) * (mag + np.abs(k)) + TINY)


def decide_grad(ob: Obligation, program: Program, timeout: float) -> Verdict | None:
    from .bounds import _refutation
    from .replay import replay

    t0 = time.perf_counter()
    got = as_problem(ob, program)
    if got is None:
        return None
    app, onnx_net, violations, (lo0, hi0) = got
    try:
        net = _Net(onnx_net.chain(lo0, hi0))
    except _Decline:
        return None
    n_out, n_in = onnx_net.n_out, onnx_net.n_in
    rows = _rows(violations, n_out, n_in)
    deadline = t0 + timeout
    flo, fhi = np.array([float(v) for v in lo0]), np.array([float(v) for v in hi0])
    width0 = np.maximum(fhi - flo, 1e-300)
    boxes = tried = 0

    def verdict(kind: str, **kw) -> Verdict:
        details = {"boxes": boxes}
        if kind != UNKNOWN:
            details["no_whole_box_smt"] = True
        if "notes" in kw:
            details["notes"] = kw.pop("notes")
        return Verdict(name=ob.name, kind=ob.kind, verdict=kind, engine="relu-jacobian",
                       seconds=time.perf_counter() - t0, details=details, **kw)

    def worst(J) -> tuple[float, int]:
        """The largest violation margin at float Jacobians J (B x out x in), and where."""
        best, at = -np.inf, -1
        for C, k, strict in rows:
            m = (np.einsum("rij,bij->br", C, J) + k).min(axis=1)  # all rows: min > (=) 0
            j = int(np.argmax(m))
            if m[j] > best:
                best, at = float(m[j]), j
        return best, at

    def candidate(x) -> Verdict | None:
        nonlocal tried
        tried += 1
        point = {s: Fraction(float(v)) for s, v in zip(app.inputs, x)}
        if any(not (a <= point[s] <= b) for s, a, b in zip(app.inputs, lo0, hi0)):
            return None
        r = replay(ob, program, point)
        if r.violated:
            cex, violation = _refutation(point, r)
            return verdict(REFUTED, counterexample=cex, violation=violation,
                           notes=["no SMT-LIB file: the counterexample replays exactly on "
                                  "the spec's terms"])
        return None

    # a search first: the float Jacobian at random points and the box's corners and centre
    rng = np.random.default_rng(0)
    pts = np.vstack([rng.uniform(flo, fhi, size=(SEARCH_POINTS, len(flo))), (flo + fhi) / 2])
    margin, j = worst(net.jacobian_at(pts))
    if margin >= 0:
        v = candidate(pts[j])
        if v is not None:
            return v
    root = (_down(flo), _up(fhi))  # float boxes contain the exact one: outward
    heap = [(0.0, 0, root[0], root[1])]  # (priority, node id, lo, hi)
    order = 1
    splits: dict[int, tuple] = {}
    closed: list[int] = []
    while heap:
        if time.perf_counter() > deadline or boxes >= MAX_BOXES:
            return verdict(UNKNOWN, reason=f"timeout after {time.perf_counter() - t0:.1f} s "
                           f"({boxes} boxes, {len(heap)} open)")
        _, node, lo, hi = heapq.heappop(heap)
        boxes += 1
        Jl, Ju = net.jacobian(lo, hi)
        score = -np.inf  # the box's worst certified violation margin (open disjuncts only)
        for C, k, strict in rows:
            ub = _row_bound(C, k, Jl, Ju)
            shut = np.any(ub <= 0) if strict else np.any(ub < 0)  # some row can't hold
            if not shut:
                score = max(score, float(ub.min()))
        if score == -np.inf:
            closed.append(node)
            continue
        mid = (lo + hi) / 2
        m, _ = worst(net.jacobian_at(mid[None]))
        if m >= 0 and tried < MAX_REPLAYS:
            v = candidate(mid)
            if v is not None:
                return v
        width = hi - lo
        d = int(np.argmax(width / width0))
        c = (lo[d] + hi[d]) / 2
        if not lo[d] < c < hi[d]:
            return verdict(UNKNOWN, reason="a box shrank to a point without closing")
        a_hi, b_lo = hi.copy(), lo.copy()
        a_hi[d], b_lo[d] = c, c
        splits[node] = (d, c, order, order + 1)
        for blo, bhi in ((lo, a_hi), (b_lo, hi)):
            heapq.heappush(heap, (-score, order, blo, bhi))
            order += 1
    v = verdict(PROVED, artifact=f"interval Jacobians over {boxes} boxes of the input box "
                "(outward rounded; unstable ReLUs as [0, 1])",
                notes=["no SMT-LIB file: every box's interval Jacobian excludes the "
                       "violations; the split tree is the certificate"])
    if len(closed) <= MAX_CERT_LEAVES:
        from ..emit.certificate import FORMAT

        # the exact branch and bound's format: `verify-check` re-bounds each leaf with its own
        # interval evaluation of the claim's derivative terms (bisecting where looser)
        v.details["certificate"] = {
            "format": FORMAT, "engine": "relu-jacobian", "claim": ob.name, "text": ob.text,
            "variables": [s.name for s in app.inputs],
            "root": [[str(Fraction(float(a))), str(Fraction(float(b)))]
                     for a, b in zip(*root)],
            "splits": {str(n): [d, str(Fraction(float(m))), a, b]
                       for n, (d, m, a, b) in sorted(splits.items())},
            "closed": {str(n): None for n in sorted(closed)}}
    return v
