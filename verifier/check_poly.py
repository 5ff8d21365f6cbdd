"""Re-validate a certificate of the polynomial-query engine (`verify-check`), independently.

A certificate of `nonlinear-bab` (written by `verify -o` for a spec claim with polynomial atoms
or `where` conditions on a wide ReLU network, or by `verify-vnn --certificate` for a VNN-LIB 2.0
query on one network) holds the unsafe region as a union of conjunctions of polynomial atoms
`p(x, y) <= 0` (`< 0` when strict) over the network's inputs x and outputs y, the root box of
the branch and bound, its split tree, per node the disjuncts the engine closed there with the
atom that did it, and per leaf whether bounds or z3 closed what was left.

Nothing of the engine is used. The network comes from its loader (the spec's weights or the
ONNX file), the unsafe region from the spec (z3 shows the certificate's disjuncts cover every
violation of the claim, and lie in the root box) or from the VNN-LIB file itself. Then, on
every node's box:

- the outputs are bounded by `check_relu.Net` (float64 with every rounding bounded), and an
  atom is certainly false on the box when its polynomial's lower bound in exact rational
  interval arithmetic (inputs in the box, outputs in their bounds) is positive (nonnegative
  for a strict atom), or, for an atom linear in x and y, when `check_relu.row_bound` bounds it
  so; a disjunct with a false atom is closed on the box and on all of it below. The engine's
  atom is tried first, then every other one; a closure that does not hold here is left to
  the node's children;
- a leaf must close every disjunct still open, by these bounds (bisecting the leaf, at most
  `check.MAX_BOXES_PER_LEAF` boxes) or, for a leaf the engine closed by z3, by z3 on this
  module's own exact encoding of the box (ReLUs as `If` except where the bounds here fix
  their phase, the atoms as they are), which must answer `unsat`.

The splits must lie inside their boxes and the nodes form a tree, so the leaves cover the root.
"""

from __future__ import annotations

import os
import time
from fractions import Fraction

import numpy as np

from .check_relu import Invalid, Net, row_bound, rows_block

CHUNK = 256  # boxes bounded per numpy batch
Z3_LEAF_SECONDS = 30.0


class Atom:
    """poly <= 0 (< 0 when strict); poly: [(coefficient, ((slot, power), ...))], slots the
    inputs 0..n_in-1 then the outputs."""

    def __init__(self, terms, strict: bool, n_in: int):
        self.terms, self.strict, self.n_in = terms, strict, n_in
        self.degree = max((sum(p for _, p in m) for _, m in terms), default=0)
        self.reads_y = any(s >= n_in for _, m in terms for s, _ in m)

    def constraint(self):
        """The atom as a linear constraint (degree <= 1)."""
        from .vnnlib import Constraint

        x, y, const = {}, {}, Fraction(0)
        for c, m in self.terms:
            if not m:
                const += c
                continue
            ((s, _),) = m
            side, k = (x, s) if s < self.n_in else (y, s - self.n_in)
            side[k] = side.get(k, Fraction(0)) + c
        return Constraint(x=tuple(sorted((i, c) for i, c in x.items() if c)),
                          y=tuple(sorted((j, c) for j, c in y.items() if c)),
                          const=const, strict=self.strict)


def _number(text, what: str) -> Fraction:
    if not isinstance(text, str) or len(text) > 10_000:
        raise Invalid(f"{what} is not an exact number")
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise Invalid(f"{what} is not an exact number") from None


def disjuncts_of(doc: dict, n_in: int, n_out: int) -> list[list[Atom]]:
    """The certificate's disjuncts: lists of {"strict", "poly": [[coef, [[x|y, i, p]...]]]}."""
    ds = doc.get("disjuncts")
    if not isinstance(ds, list) or not ds:
        raise Invalid("the certificate lists no disjuncts")
    out = []
    for k, d in enumerate(ds):
        if not isinstance(d, list):
            raise Invalid(f"disjunct {k} is malformed")
        atoms = []
        for a in d:
            if (not isinstance(a, dict) or not isinstance(a.get("strict"), bool)
                    or not isinstance(a.get("poly"), list)):
                raise Invalid(f"an atom of disjunct {k} is malformed")
            terms = []
            for t in a["poly"]:
                if not isinstance(t, list) or len(t) != 2 or not isinstance(t[1], list):
                    raise Invalid(f"a term of disjunct {k} is malformed")
                mono = []
                for f in t[1]:
                    size = {"x": n_in, "y": n_out}.get(f[0]) if isinstance(f, list) and len(
                        f) == 3 else None
                    if (size is None or not all(isinstance(v, int) and not isinstance(v, bool)
                                                for v in f[1:])
                            or not 0 <= f[1] < size or not 1 <= f[2] <= 64):
                        raise Invalid(f"a factor of disjunct {k} is malformed")
                    mono.append((f[1] if f[0] == "x" else n_in + f[1], f[2]))
                terms.append((_number(t[0], "a coefficient"), tuple(mono)))
            atoms.append(Atom(terms, a["strict"], n_in))
        out.append(atoms)
    return out


def query_disjuncts(query, n_in: int) -> list[list[Atom]]:
    """A VNN-LIB 2.0 query's disjuncts (one network) as atoms over inputs and outputs."""
    return [[Atom([(c, tuple((v.index if v.kind == "X" else n_in + v.index, p) for v, p in m))
                   for m, c in a.poly.items()], a.strict, n_in) for a in d]
            for d in query.disjuncts]


# ---- bounds on one box ----------------------------------------------------------------------

def _ipow(lo: Fraction, hi: Fraction, p: int):
    if p % 2 == 0 and lo < 0 < hi:
        return Fraction(0), max(-lo, hi) ** p
    a, b = lo ** p, hi ** p
    return min(a, b), max(a, b)


def false_by_intervals(atom: Atom, iv: list) -> bool:
    """The atom holds nowhere when each slot s lies in iv[s] = (lo, hi) (exact)."""
    total = Fraction(0)
    for c, mono in atom.terms:
        lo = hi = Fraction(1)
        for s, p in mono:
            a, b = _ipow(*iv[s], p)
            cands = (lo * a, lo * b, hi * a, hi * b)
            lo, hi = min(cands), max(cands)
        total += c * lo if c > 0 else c * hi
    return total >= 0 if atom.strict else total > 0


class _Box:
    """One box of a batch: its exact slot intervals, and the batch's bounds to slice."""

    def __init__(self, lo, hi, bounds, i: int, n_out: int, linear: bool = True):
        L, Uu, H = bounds
        K = max(L)
        self.lo, self.hi, self.i, self.bounds = lo, hi, i, bounds
        self.linear = linear  # also try backward linear bounds on linear atoms
        self.iv = [(Fraction(a), Fraction(b)) for a, b in zip(lo, hi)] + [
            (Fraction(a), Fraction(b)) for a, b in zip(L[K][i], Uu[K][i])]
        if any(a > b for a, b in self.iv[len(lo):]):
            raise Invalid("the checker's output bounds are empty on a box")

    def closes(self, net: Net, atom: Atom) -> bool:
        if false_by_intervals(atom, self.iv):
            return True
        if atom.degree > 1 or not atom.reads_y or not self.linear:
            return False
        rb = rows_block([atom.constraint()], net.n_in, net.net.n_out, len(net.blocks))
        L, Uu, H = ({k: v[self.i:self.i + 1] for k, v in d.items()} for d in self.bounds)
        for mode in ("adaptive", "chord"):
            ub = row_bound(net, rb, np.ones((1, 1)), (self.lo[None], self.hi[None]), L, Uu, H,
                           mode)
            if (ub[0] <= 0) if atom.strict else (ub[0] < 0):
                return True
        return False


def _bounds(net: Net, items: list, tier: int = 1):
    """Boxes lo, hi of the items and their bounds: tier 0 intervals only (cheap, enough for
    atoms over the inputs and on small boxes), 1 `Net.bounds` (backward linear bounds of
    every block: far tighter, and far dearer)."""
    lo = np.array([b[1] for b in items])
    hi = np.array([b[2] for b in items])
    return lo, hi, (net.bounds(lo, hi) if tier else _intervals(net, lo, hi))


def _intervals(net: Net, lo, hi):
    """`Net.bounds` without its backward passes: each block's interval from its sources'."""
    P = lo.shape[0]
    L, Uu, H = {}, {}, {0: np.maximum(np.abs(lo), np.abs(hi))}
    lows, highs = {0: lo}, {0: hi}
    for k, blk in enumerate(net.blocks, start=1):
        if blk["kind"] not in (None, "relu", "leaky_relu"):
            return net.bounds(lo, hi)
        l, u = net._interval(blk, lows, highs, P)
        L[k], Uu[k] = l, u
        if blk["kind"] is None:
            lows[k], highs[k] = l, u
        else:
            a_lo, a_hi = blk["slope"]
            lows[k] = np.where(l >= 0, l, np.nextafter(np.minimum(a_hi * l, 0.0), -np.inf))
            highs[k] = np.where(u >= 0, u, np.nextafter(a_lo * u, np.inf))
        H[k] = np.maximum(np.abs(lows[k]), np.abs(highs[k]))
    return L, Uu, H


# ---- z3 on one leaf -------------------------------------------------------------------------

def z3_leaf(net: Net, disjuncts: list[list[Atom]], box: _Box, seconds: float) -> str:
    """z3 on the box: does some point x of it, with y the network's output at x, meet every
    atom of some disjunct? Exact rationals; a ReLU is linear where this module's bounds fix
    its phase on the box, an `If` elsewhere."""
    import z3

    def q(v) -> z3.ArithRef:
        v = Fraction(v)
        return z3.RealVal(f"{v.numerator}/{v.denominator}")

    L, Uu, _ = box.bounds
    s = z3.Solver()
    s.set("timeout", int(seconds * 1000))
    xs = [z3.Real(f"x{i}") for i in range(net.n_in)]
    for i, x in enumerate(xs):
        s.add(q(float(box.lo[i])) <= x, x <= q(float(box.hi[i])))
    values = [xs]
    for k, blk in enumerate(net.net.blocks, start=1):
        if blk.act is not None and blk.act.kind not in ("relu", "leaky_relu"):
            raise Invalid(f"a z3 leaf on a network with {blk.act.kind} activations")
        out = []
        for j in range(blk.size):
            p = q(blk.b[j])
            for src, W in blk.terms:
                p = p + z3.Sum([q(W[j, i]) * v for i, v in enumerate(values[src])
                                if W[j, i] != 0] or [q(0)])
            if blk.act is None:
                out.append(p)
                continue
            a = q(blk.act.alpha if blk.act.kind == "leaky_relu" else 0)
            if L[k][box.i][j] >= 0:
                out.append(p)
            elif Uu[k][box.i][j] <= 0:
                out.append(a * p)
            else:
                out.append(z3.If(p > 0, p, a * p))
        values.append(out)
    slots = xs + values[-1]
    cases = []
    for d in disjuncts:
        atoms = []
        for atom in d:
            terms = [q(c) * z3.Product([slots[sl] for sl, p in m for _ in range(p)])
                     if m else q(c) for c, m in atom.terms]
            poly = z3.Sum(terms + [q(0)])
            atoms.append(poly < 0 if atom.strict else poly <= 0)
        cases.append(z3.And(atoms))
    s.add(z3.Or(cases))
    ans = s.check()
    if ans == z3.unknown and "interrupted from keyboard" in s.reason_unknown():
        raise KeyboardInterrupt
    return str(ans)


# ---- the tree --------------------------------------------------------------------------------

def _hex_box(pairs, n: int):
    if not isinstance(pairs, list) or len(pairs) != n or not all(
            isinstance(p, list) and len(p) == 2 for p in pairs):
        raise Invalid(f"the root box is not {n} [lo, hi] pairs")
    try:
        lo = np.array([float.fromhex(p[0]) for p in pairs])
        hi = np.array([float.fromhex(p[1]) for p in pairs])
    except (TypeError, ValueError):
        raise Invalid("the root box is not a list of hexadecimal floats") from None
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(lo <= hi)):
        raise Invalid("the root box is not a box")
    return lo, hi


def root_of(doc: dict, n_in: int):
    return _hex_box(doc.get("root"), n_in)


def check_tree(net, disjuncts: list[list[Atom]], doc: dict, deadline: float, report,
               max_boxes: int) -> None:
    """Every disjunct closed on every leaf of the certificate's tree (see the module doc);
    raises Invalid where not."""
    if doc.get("tree") != 1:
        raise Invalid(f"the certificate's tree has format {doc.get('tree')!r}; this checker "
                      "reads format 1")
    fnet = Net(net)
    splits, closed, hints = doc.get("splits"), doc.get("closed"), doc.get("closes", {})
    if not all(isinstance(v, dict) for v in (splits, closed, hints)):
        raise Invalid("`splits`, `closed` and `closes` must be objects")
    lo, hi = root_of(doc, fnet.n_in)
    _shape(splits, closed, lo, hi)  # a tree whose splits lie in their boxes, before any bound
    stack = [("0", lo, hi, frozenset(range(len(disjuncts))))]
    z3_work = []
    while stack:
        if time.perf_counter() > deadline:
            raise Invalid("time limit reached before every leaf was re-validated")
        items, stack = stack[-CHUNK:], stack[:-CHUNK]
        # cheap bounds first; the boxes where they do not confirm everything the
        # certificate says of them are bounded again, tighter (`_bounds`)
        report.boxes += len(items)
        done, again = [], list(range(len(items)))
        blo = np.array([b[1] for b in items])
        bhi = np.array([b[2] for b in items])
        for tier in (0, 1):
            if not again:
                break
            _, _, bounds = _bounds(fnet, [items[i] for i in again], tier)
            left = []
            for j, i in enumerate(again):
                node, _, _, open_ = items[i]
                box = _Box(blo[i], bhi[i], bounds, j, fnet.net.n_out, linear=tier == 1)
                got = _confirm(fnet, box, node, open_, hints, closed, disjuncts)
                if got[1] or tier == 1:
                    done.append((i, box, got[0]))
                else:
                    left.append(i)
            again = left
        for i, box, open_ in sorted(done, key=lambda t: t[0]):
            node = items[i][0]
            if node in splits:
                stack += [(c, a, b, frozenset(open_))
                          for c, a, b in _split(splits[node], node, blo[i], bhi[i])]
            elif node in closed:
                how = closed[node]
                if not isinstance(how, dict) or how.get("by") not in ("bound", "z3"):
                    raise Invalid(f"leaf {node} does not say how it was closed")
                report.leaves += 1
                if not open_:
                    continue
                if how["by"] == "z3":
                    z3_work.append((node, box, sorted(open_)))
                else:
                    _bisect(fnet, disjuncts, node, box, open_, deadline, report, max_boxes)
    for node, box, open_ in z3_work:
        left = deadline - time.perf_counter()
        if left <= 0:
            raise Invalid("time limit reached before every leaf was re-validated")
        ans = z3_leaf(fnet, [disjuncts[k] for k in open_], box, min(left, Z3_LEAF_SECONDS))
        if ans != "unsat":
            raise Invalid(f"leaf {node}: z3 answers {ans} on the checker's own encoding of "
                          "the box")


def _split(rec, node: str, lo, hi):
    """The two halves of a split node's box (rec: [input, hex point, first, second])."""
    if (not isinstance(rec, list) or len(rec) != 4 or not isinstance(rec[0], int)
            or isinstance(rec[0], bool) or not 0 <= rec[0] < len(lo)):
        raise Invalid(f"split of node {node} is malformed")
    d = rec[0]
    try:
        mid = float.fromhex(rec[1])
    except (TypeError, ValueError):
        raise Invalid(f"split point of node {node} is not a float") from None
    if not lo[d] < mid < hi[d]:
        raise Invalid(f"split point of node {node} is not inside its box")
    h1, l2 = hi.copy(), lo.copy()
    h1[d] = l2[d] = mid
    return (str(rec[2]), lo, h1), (str(rec[3]), l2, hi)


def _shape(splits: dict, closed: dict, lo, hi) -> None:
    """The nodes form a tree from "0" with no hole, every split inside its box."""
    seen: set[str] = set()
    stack = [("0", lo, hi)]
    while stack:
        node, blo, bhi = stack.pop()
        if node in seen:
            raise Invalid(f"node {node} is reached twice: not a tree")
        seen.add(node)
        if node in splits:
            stack += _split(splits[node], node, blo, bhi)
        elif node not in closed:
            raise Invalid(f"node {node} is neither split nor closed: the tree has a hole")
    unused = (set(splits) | set(closed)) - seen
    if unused:
        raise Invalid(f"{len(unused)} node(s) are not in the tree, e.g. {min(unused)}")


def _confirm(fnet: Net, box: _Box, node: str, open_, hints: dict, closed: dict,
             disjuncts) -> tuple[set, bool]:
    """The disjuncts still open below the node after its own closures (at a leaf: after
    trying every atom of every open disjunct), and whether every closure the certificate
    names here held and a leaf has none open."""
    open_ = set(open_)
    ok = True
    for k, t in _hints(hints.get(node, []), node, disjuncts):
        if k in open_:
            if _closes(fnet, box, disjuncts[k], t):
                open_.discard(k)
            else:
                ok = False
    if node in closed:
        open_ = {k for k in open_ if not _closes(fnet, box, disjuncts[k], None)}
        ok = ok and not open_
    return open_, ok


def _hints(rec, node: str, disjuncts) -> list:
    if not isinstance(rec, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(
                isinstance(v, int) and not isinstance(v, bool) for v in p) for p in rec):
        raise Invalid(f"`closes` of node {node} is malformed")
    return [(k, t if 0 <= t < len(disjuncts[k]) else None) for k, t in rec
            if 0 <= k < len(disjuncts)]


def _closes(fnet: Net, box: _Box, atoms: list[Atom], first: int | None) -> bool:
    """Some atom of the disjunct is false on the box (atom `first` tried first)."""
    order = ([atoms[first]] if first is not None else []) + [
        a for t, a in enumerate(atoms) if t != first]
    return any(box.closes(fnet, a) for a in order)


def _bisect(fnet, disjuncts, node: str, box: _Box, open_: set, deadline, report,
            max_boxes: int) -> None:
    """The leaf's still-open disjuncts closed on halves of it, at most max_boxes boxes."""
    pending = [(box.lo, box.hi, open_)]
    count = 1
    while pending:
        if time.perf_counter() > deadline:
            raise Invalid("time limit reached before every leaf was re-validated")
        blo, bhi, still = pending.pop()
        d = int(np.argmax(bhi - blo))
        mid = 0.5 * (blo[d] + bhi[d])
        if not blo[d] < mid < bhi[d]:
            raise Invalid(f"leaf {node} is not closed by the checker's bounds and cannot be "
                          "split further")
        h1, l2 = bhi.copy(), blo.copy()
        h1[d] = l2[d] = mid
        halves = [(blo, h1), (l2, bhi)]
        count += 2
        if count > max_boxes:
            raise Invalid(f"leaf {node} is not closed by the checker's bounds in {max_boxes} "
                          "boxes")
        report.boxes += 2
        for a, b in halves:
            left = still
            for tier in (0, 1):
                _, _, bounds = _bounds(fnet, [(None, a, b)], tier)
                box = _Box(a, b, bounds, 0, fnet.net.n_out, linear=tier == 1)
                left = {k for k in left if not _closes(fnet, box, disjuncts[k], None)}
                if not left:
                    break
            if left:
                pending.append((a, b, left))


# ---- the two sources --------------------------------------------------------------------------

def _q(v):
    import z3

    v = Fraction(v) if not hasattr(v, "p") else Fraction(int(v.p), int(v.q))
    return z3.RealVal(f"{v.numerator}/{v.denominator}")


def _z3_atom(atom: Atom, slots):
    import z3

    poly = z3.Sum([_q(c) * z3.Product([slots[s] for s, p in m for _ in range(p)])
                   if m else _q(c) for c, m in atom.terms] + [_q(0)])
    return poly < 0 if atom.strict else poly <= 0


def _in_root(xs, lo, hi):
    import z3

    return z3.And([z3.And(_q(float(a)) <= x, x <= _q(float(b))) for x, a, b in zip(xs, lo, hi)])


def check_spec(doc: dict, cert_path: str, spec: str | None, report, deadline: float,
               max_boxes: int) -> str:
    """A spec claim's certificate: the obligation (by its digest), its network (the spec's
    weights), z3's proof that every violation of the claim lies in some disjunct and in the
    root box, and the tree closed."""
    import z3

    from . import run
    from .check import obligation_digest
    from .check_relu import _z3_of
    from .engines.relu_route import network_of

    spec_path = spec or os.path.join(os.path.dirname(cert_path) or ".", str(doc.get("spec")))
    model = run.load(spec_path)
    obs = [ob for ob in model.obligations if ob.name == doc.get("claim")]
    if not obs or obs[0].kind != "bound":
        raise Invalid(f"the spec has no bound claim `{doc.get('claim')}`")
    ob, program = obs[0], model.program
    if obligation_digest(ob, program) != doc.get("obligation_digest"):
        raise Invalid(f"claim `{ob.name}` of {os.path.basename(spec_path)} is not the "
                      "obligation this certificate was made for (the spec, an import or a "
                      "weight file changed)")
    atoms = ob.goal + ob.hypotheses
    used = set(program.closure([t for a in atoms for t in (a.lhs, a.rhs)]))
    apps = {id(o[0]): o[0] for s, o in program.network_terms.items()
            if o[1] == "output" and s in used}
    if len(apps) != 1:
        raise Invalid("the claim does not read exactly one network application")
    app = next(iter(apps.values()))
    net = network_of(app)
    disjuncts = disjuncts_of(doc, net.n_in, net.n_out)
    lo, hi = root_of(doc, net.n_in)
    box = {v.symbol: (v.lo, v.hi) for v in ob.variables}
    inputs = {s: i for i, s in enumerate(app.inputs)}
    outputs = {s: j for j, s in enumerate(app.outputs) if hasattr(s, "name")}
    if any(s not in inputs for s in box) or any(
            s not in box or None in box[s] for s in inputs):
        raise Invalid("the claim's variables are not the network's inputs, each in a range")
    xs = [z3.Real(f"x{i}") for i in range(net.n_in)]
    ys = [z3.Real(f"y{j}") for j in range(net.n_out)]
    term = _z3_of(program, outputs, inputs, xs, ys)
    ops = {"<=": lambda a, b: a <= b, "<": lambda a, b: a < b, ">=": lambda a, b: a >= b,
           ">": lambda a, b: a > b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b}
    if any(a.op not in ops for a in atoms):
        raise Invalid("the claim is not made of comparisons")
    solver = z3.Solver()
    solver.set("timeout", int(max(deadline - time.perf_counter(), 1.0) * 1000))
    for s, i in inputs.items():
        solver.add(_q(box[s][0]) <= xs[i], xs[i] <= _q(box[s][1]))
    solver.add(*[ops[a.op](term(a.lhs), term(a.rhs)) for a in ob.hypotheses])
    solver.add(z3.Or([z3.Not(ops[a.op](term(a.lhs), term(a.rhs))) for a in ob.goal]))
    slots = xs + ys
    cases = z3.Or([z3.And([_z3_atom(a, slots) for a in d]) for d in disjuncts])
    solver.add(z3.Not(z3.And(cases, _in_root(xs, lo, hi))))
    ans = solver.check()
    if ans != z3.unsat:
        raise Invalid("the certificate's disjuncts and root box do not cover every violation "
                      f"of the claim (z3: {ans})")
    check_tree(net, disjuncts, doc, deadline, report, max_boxes)
    return (f"valid: claim `{ob.name}` of {os.path.basename(spec_path)}, violations covered "
            f"by {len(disjuncts)} disjuncts of polynomial atoms (z3), {report.leaves} leaves "
            f"re-validated ({report.boxes} boxes bounded)")


def check_vnn(doc: dict, cert_path: str, report, deadline: float, max_boxes: int,
              onnx: str | None = None, vnnlib: str | None = None) -> str:
    """A `verify-vnn` certificate of a VNN-LIB 2.0 query on one network: the files it names
    (by sha256), read by their loaders, every disjunct inside the root box (z3) and the tree
    closed."""
    import z3

    from .check_relu import _resolve
    from .onnx_import import load_onnx
    from .vnnlib2 import Query, read_property

    net_path = _resolve(doc.get("network"), onnx, cert_path, "onnx")
    prop_path = _resolve(doc.get("property"), vnnlib, cert_path, "vnnlib")
    net = load_onnx(net_path)
    query = read_property(prop_path)
    if not isinstance(query, Query) or len(query.networks) != 1:
        raise Invalid("a polynomial certificate is for a VNN-LIB 2.0 query on one network")
    decl = query.networks[0]
    if decl.inputs.size != net.n_in or decl.outputs.size != net.n_out:
        raise Invalid("the query does not fit the network")
    disjuncts = query_disjuncts(query, net.n_in)
    lo, hi = root_of(doc, net.n_in)
    xs = [z3.Real(f"x{i}") for i in range(net.n_in)]
    slots = xs + [z3.Real(f"y{j}") for j in range(net.n_out)]
    solver = z3.Solver()
    solver.set("timeout", int(max(deadline - time.perf_counter(), 1.0) * 1000))
    solver.add(z3.Or([z3.And([_z3_atom(a, slots) for a in d]) for d in disjuncts]))
    solver.add(z3.Not(_in_root(xs, lo, hi)))
    ans = solver.check()
    if ans != z3.unsat:
        raise Invalid(f"some disjunct of the query reaches outside the root box (z3: {ans})")
    check_tree(net, disjuncts, doc, deadline, report, max_boxes)
    return (f"valid: {os.path.basename(prop_path)} holds on {os.path.basename(net_path)} "
            f"(unsat), {report.leaves} leaves re-validated ({report.boxes} boxes bounded)")
