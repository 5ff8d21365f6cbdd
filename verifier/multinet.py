"""Several networks in one query: one combined network whose inputs are shared columns.

A VNN-LIB 2.0 query over networks f, g, ... becomes one `OnnxNet` for the ReLU engine: its
input is a vector of *columns*, one per class of input variables that the query ties with a
top-level equality `(== X_f[i] X_g[i])` (those are the same number, so they are one column and
the equality is dropped); its output is every network's output, concatenated in declaration
order. Networks with the same number of layers and the same activation per layer are stacked
side by side (block-diagonal weights: still a chain); otherwise the networks' blocks are put one
after the other in a graph, which the engine lowers on the input box.

A linear query then becomes a 1.0 `Property` over the columns and the concatenated outputs,
decided by `relu_bab` unchanged; a witness counts only when it replays exactly on every
original network and satisfies the query's own atoms (`Query.holds`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from .diagnostics import SpecError
from .onnx_import import Block, OnnxNet
from .vnnlib import Constraint, Disjunct, Property, _input_range
from .vnnlib2 import Atom, Query, Var


@dataclass
class Combined:
    query: Query
    nets: dict[str, OnnxNet]  # by declared name
    column: dict[Var, int]  # every input variable → its column
    out_offset: dict[str, int]  # a network's first output in the concatenated output
    net: OnnxNet  # the combined network
    n_cols: int

    def env(self, x, y=None) -> dict:
        """Var → value from column values x, outputs from y (combined) or computed exactly."""
        env = {v: x[c] for v, c in self.column.items()}
        for d in self.query.networks:
            xs = [x[self.column[Var(d.name, "X", i)]] for i in range(d.inputs.size)]
            ys = (self.nets[d.name].evaluate_exact(xs) if y is None else
                  y[self.out_offset[d.name]:self.out_offset[d.name] + d.outputs.size])
            for j, v in enumerate(ys):
                env[Var(d.name, "Y", j)] = v
        return env

    def replays(self, x) -> dict | None:
        """The exact assignment at columns x (outputs computed on each original network) if
        it is in the query's unsafe region, else None."""
        env = self.env([Fraction(v) for v in x])
        return env if self.query.holds(env) else None


def _ties(query: Query) -> dict[Var, Var]:
    """Union-find parents from top-level equalities between two input variables."""
    parent: dict[Var, Var] = {}

    def find(v):
        while parent.get(v, v) != v:
            v = parent[v]
        return v

    pairs = {}
    for a in query.conjuncts:
        if a.strict or len(a.poly) != 2 or () in a.poly:
            continue
        (m1, c1), (m2, c2) = a.poly.items()
        if len(m1) != 1 or len(m2) != 1 or m1[0][1] != 1 or m2[0][1] != 1:
            continue
        v1, v2 = m1[0][0], m2[0][0]
        if v1.kind != "X" or v2.kind != "X" or c1 != -c2 or abs(c1) != 1:
            continue
        key = frozenset((v1, v2))
        pairs.setdefault(key, set()).add(c1)
    for key, signs in pairs.items():
        if signs == {1, -1}:  # v1 - v2 <= 0 and v2 - v1 <= 0
            v1, v2 = sorted(key, key=lambda v: (v.net, v.index))
            r1, r2 = find(v1), find(v2)
            if r1 != r2:
                parent[r2] = r1
    return {v: find(v) for v in parent}


def networks_for(query: Query, files: dict[str, OnnxNet]) -> dict[str, OnnxNet]:
    """Each declared network's ONNX net: its own file, or for `equal-to`, the other's."""
    out = {}
    for d in query.networks:
        net = files.get(d.name)
        if net is None and d.equal_to is not None:
            net = out.get(d.equal_to)
        if net is None:
            raise SpecError(f"no ONNX file for network `{d.name}`", d.span,
                            fix=f"pass --onnx {d.name}=FILE")
        if net.n_in != d.inputs.size or net.n_out != d.outputs.size:
            raise SpecError(f"network `{d.name}` is declared with {d.inputs.size} inputs and "
                            f"{d.outputs.size} outputs; {net.path} has {net.n_in} and "
                            f"{net.n_out}", d.span)
        out[d.name] = net
    extra = set(files) - {d.name for d in query.networks}
    if extra:
        raise SpecError(f"--onnx names {', '.join(sorted(extra))}, which the query does not "
                        "declare", fix="name each file after a declare-network of the query")
    return out


def combine(query: Query, files: dict[str, OnnxNet]) -> Combined:
    """The combined network and column map of a query (see the module doc)."""
    nets = networks_for(query, files)
    root = _ties(query)
    column: dict[Var, int] = {}
    rep_col: dict[Var, int] = {}
    for d in query.networks:
        for i in range(d.inputs.size):
            v = Var(d.name, "X", i)
            r = root.get(v, v)
            if r not in rep_col:
                rep_col[r] = len(rep_col)
            column[v] = rep_col[r]
    n_cols = len(rep_col)
    sel = {}
    for d in query.networks:
        S = np.full((d.inputs.size, n_cols), Fraction(0), dtype=object)
        for i in range(d.inputs.size):
            S[i, column[Var(d.name, "X", i)]] = Fraction(1)
        sel[d.name] = S
    order = [d.name for d in query.networks]
    offs, k = {}, 0
    for name in order:
        offs[name] = k
        k += nets[name].n_out
    parts = [(nets[n], sel[n]) for n in order]
    blocks = _parallel(parts) or _serial(parts)
    net = OnnxNet(path=" + ".join(nets[n].path for n in order), in_shape=(n_cols,),
                  out_shape=(k,), input_name="columns", output_name="outputs", blocks=blocks)
    return Combined(query, nets, column, offs, net, n_cols)


def _same_act(a, b) -> bool:
    return (a is None) == (b is None) and (a is None or (a.kind == b.kind
                                                        and a.alpha == b.alpha))


def _parallel(parts) -> list[Block] | None:
    """Block-diagonal layers when every network is a chain of the same depth and activations."""
    nets = [n for n, _ in parts]
    if not all(n.is_chain for n in nets) or len({len(n.blocks) for n in nets}) != 1:
        return None
    depth = len(nets[0].blocks)
    if not all(_same_act(n.blocks[k].act, nets[0].blocks[k].act) for n in nets
               for k in range(depth)):
        return None
    blocks = []
    for k in range(depth):
        mats = []
        for net, S in parts:
            blk = net.blocks[k]
            W = blk.terms[0][1] if blk.terms else np.full(
                (blk.size, net.sizes()[k]), Fraction(0), dtype=object)
            mats.append(W.dot(S) if k == 0 else W)
        rows = sum(m.shape[0] for m in mats)
        cols = mats[0].shape[1] if k == 0 else sum(m.shape[1] for m in mats)
        W = np.full((rows, cols), Fraction(0), dtype=object)
        r = c = 0
        for m in mats:
            W[r:r + m.shape[0], (0 if k == 0 else c):(0 if k == 0 else c) + m.shape[1]] = m
            r += m.shape[0]
            c += m.shape[1]
        b = np.concatenate([net.blocks[k].b for net, _ in parts])
        blocks.append(Block(terms=((k, W),), b=b, act=nets[0].blocks[k].act,
                            node=nets[0].blocks[k].node))
    return blocks


def _serial(parts) -> list[Block]:
    """Every network's hidden blocks one after the other; one output block reads them all."""
    blocks: list[Block] = []
    out_terms: dict[int, list] = {}
    out_rows = sum(net.n_out for net, _ in parts)
    r = 0
    for net, S in parts:
        base = len(blocks)

        def remap(terms, S=S, base=base):
            return [(0, W.dot(S)) if s == 0 else (base + s, W) for s, W in terms]

        for blk in net.blocks[:-1]:
            blocks.append(Block(terms=tuple(remap(blk.terms)), b=blk.b, act=blk.act,
                                node=blk.node))
        last = net.blocks[-1]
        for s, W in remap(last.terms):
            out_terms.setdefault(s, []).append((r, W))
        r += net.n_out
    sizes = [parts[0][1].shape[1]] + [blk.size for blk in blocks]
    terms = []
    for s, pieces in sorted(out_terms.items()):
        W = np.full((out_rows, sizes[s]), Fraction(0), dtype=object)
        for row, m in pieces:
            W[row:row + m.shape[0], :] += m
        terms.append((s, W))
    b = np.concatenate([net.blocks[-1].b for net, _ in parts])
    blocks.append(Block(terms=tuple(terms), b=b, act=None, node="outputs"))
    return blocks


# ---- linear queries ------------------------------------------------------------------------

def linear_property(comb: Combined) -> Property:
    """The query as a 1.0 Property over the columns and the concatenated outputs."""
    q = comb.query
    disjuncts = []
    for atoms in q.disjuncts:
        cons = []
        empty = False
        for a in atoms:
            c = _constraint(comb, a)
            if c is None:
                continue
            if not c.x and not c.y:
                if not c.holds([], []):
                    empty = True
                    break
                continue
            cons.append(c)
        if empty:
            continue
        d = _disjunct(cons, comb.n_cols, comb)
        if d is not None:
            disjuncts.append(d)
    return Property(q.path, comb.n_cols, comb.net.n_out, disjuncts)


def _constraint(comb: Combined, a: Atom) -> Constraint | None:
    if a.degree > 1:
        raise SpecError("the query is not linear", a.span)
    x: dict[int, Fraction] = {}
    y: dict[int, Fraction] = {}
    const = Fraction(0)
    for m, c in a.poly.items():
        if not m:
            const += c
            continue
        v = m[0][0]
        if v.kind == "X":
            col = comb.column[v]
            x[col] = x.get(col, Fraction(0)) + c
        else:
            j = comb.out_offset[v.net] + v.index
            y[j] = y.get(j, Fraction(0)) + c
    return Constraint(x=tuple(sorted((i, c) for i, c in x.items() if c)),
                      y=tuple(sorted((j, c) for j, c in y.items() if c)),
                      const=const, strict=a.strict, span=a.span)


def column_names(comb: Combined) -> list[str]:
    names = [""] * comb.n_cols
    for d in reversed(comb.query.networks):
        for i in range(d.inputs.size):
            names[comb.column[Var(d.name, "X", i)]] = d.inputs.label(i)
    return names


def _disjunct(cons: list[Constraint], n: int, comb: Combined) -> Disjunct | None:
    """The disjunct with its column box, or None when its input constraints are infeasible."""
    lo: list = [None] * n
    hi: list = [None] * n
    strict_lo, strict_hi = set(), set()
    for c in cons:
        if c.y or len(c.x) != 1:
            continue
        (i, a), = c.x
        bound = -c.const / a
        if a > 0:
            if hi[i] is None or bound < hi[i] or (bound == hi[i] and c.strict):
                hi[i] = bound
                (strict_hi.add if c.strict else strict_hi.discard)(i)
        elif lo[i] is None or bound > lo[i] or (bound == lo[i] and c.strict):
            lo[i] = bound
            (strict_lo.add if c.strict else strict_lo.discard)(i)
    for i in range(n):
        if lo[i] is not None and hi[i] is not None and (
                lo[i] > hi[i] or (lo[i] == hi[i] and (i in strict_lo or i in strict_hi))):
            return None
    missing = [i for i in range(n) if lo[i] is None or hi[i] is None]
    if missing:
        box = _input_range(cons, n, missing)
        if box is None:
            return None
        names = column_names(comb)
        for i, (a, b) in box.items():
            if a is None or b is None:
                raise SpecError(f"input {names[i]} is unbounded "
                                f"{'below' if a is None else 'above'} in some disjunct",
                                fix=f"assert bounds on {names[i]}, or tie it to a bounded "
                                    "input with (== ...)")
            lo[i] = a if lo[i] is None else max(lo[i], a)
            hi[i] = b if hi[i] is None else min(hi[i], b)
    return Disjunct(constraints=cons, lo=lo, hi=hi)


def _search(comb: Combined, seconds: float, seed: int) -> dict | None:
    """The polynomial engine's counterexample search (it replays points with inputs pinned to
    numbers that are no float, which the 1.0 engine's float replay cannot); None if it finds
    nothing or cannot run (an input without constant bounds)."""
    from .engines.crown import Unsupported
    from .engines.nonlinear_vnn import Engine

    try:
        eng = Engine(comb, seconds + 1.0, seed=seed)
    except (SpecError, Unsupported):
        return None
    return eng.search(seconds) if len(eng.ds) else None


def decide_linear(comb: Combined, timeout: float, **kw):
    """relu_bab on the combined network; a `sat` witness is replayed on every original
    network. Returns (Result, env or None)."""
    from .engines.relu_bab import Result, decide

    prop = linear_property(comb)
    if not prop.disjuncts:
        return Result("unsat", reason="every disjunct's input region is empty"), None
    start = time.perf_counter()
    env = _search(comb, min(0.1 * timeout, 5.0), kw.get("seed", 0))
    if env is not None:
        x = [Fraction(0)] * comb.n_cols
        for v, c in comb.column.items():
            x[c] = env[v]
        return Result("sat", witness_x=x, stats={"found_by": "search"}), env
    res = decide(comb.net, prop, max(timeout - (time.perf_counter() - start), 0.01), **kw)
    if res.answer != "sat":
        return res, None
    env = comb.replays(res.witness_x)
    if env is None:  # the combined network agreed; the originals must too, or it is our bug
        return Result("unknown", reason="a witness on the combined network did not replay on "
                      "the original networks", stats=res.stats), None
    return res, env


__all__ = ["Combined", "combine", "decide_linear", "linear_property", "networks_for"]


# ---- the whole question --------------------------------------------------------------------

def decide_query(query: Query, files: dict[str, OnnxNet], timeout: float, use_z3: bool = True,
                 seed: int = 0, workers: int = 1, cluster=None):
    """Decide a 2.0 query: linear ones by relu_bab on the combined network, polynomial ones
    by `engines.nonlinear_vnn`. Returns (Result, env): env the replayed assignment of `sat`."""
    comb = combine(query, files)
    if query.linear:
        return decide_linear(comb, timeout, use_z3=use_z3, seed=seed, workers=workers,
                             cluster=cluster)
    from .engines.nonlinear_vnn import decide

    res, env = decide(comb, timeout, seed=seed, use_z3=use_z3)
    if res.certificate:
        res.certificate = {"kind": "poly", **res.certificate}  # checked by check_poly
    return res, env


def certificate_refusal(query: Query) -> str | None:
    """Why `verify-vnn --certificate` cannot have a certificate of this 2.0 query, or None:
    the polynomial engine writes them for queries on one network whose inputs are not tied."""
    if len(query.networks) != 1:
        return "it declares several networks"
    if query.linear:
        return ("its constraints are linear, and the ReLU engine's certificates are written "
                "for VNN-LIB 1.0 files")
    if _ties(query):
        return "it ties inputs together with equalities"
    return None


def witness_text(query: Query, env: dict) -> str:
    """VNN-LIB 2.0's textual assignment: per declared tensor `NAME real [shape]`, then its
    values one a line (floats that round-trip; the exact values are in the JSON report)."""
    lines = []
    for d in query.networks:
        for t, kind in ((d.inputs, "X"), (d.outputs, "Y")):
            lines.append(f"{t.name} real [{','.join(str(s) for s in t.shape)}]")
            lines += [repr(float(env[Var(d.name, kind, i)])) for i in range(t.size)]
    return "\n".join(lines)


def onnx_arguments(values: list[str]) -> dict[str, str]:
    """`--onnx` values: `NAME=FILE` pairs, or one bare FILE (key "")."""
    import re

    out: dict[str, str] = {}
    for v in values:
        m = re.fullmatch(r"([A-Za-z][A-Za-z0-9_]*)=(.+)", v)
        name, path = (m.group(1), m.group(2)) if m else ("", v)
        if name in out:
            raise SpecError(f"--onnx {name or 'FILE'} is given twice",
                            fix="give one --onnx NAME=FILE per declared network")
        out[name] = path
    if "" in out and len(out) > 1:
        raise SpecError("with several --onnx networks, name each one: --onnx NAME=FILE")
    return out
