"""`verify-check CERT`: re-validate the certificate of a proved bound claim, independently.

    verify-check CERT [CERT ...] [--spec SPEC] [--timeout S] [--json]

A certificate (`<model>.<claim>.cert.json`, written by `verify -o DIR`) holds the claim's name,
a digest of the obligation it proves, the root box over the split variables and the split tree
of the branch and bound that proved it. The checker loads the spec (the same loader as
`verify`, nothing of the engines), checks that the digest matches, that the root box contains
the claim's box, that the tree is a tree whose splits lie inside their boxes (so its leaves
cover the root exactly, boundaries included), and closes every leaf with its own interval
arithmetic: mpmath's outward-rounded intervals over the program that computes the claim, with
tanh, sigmoid and softplus through their monotonicity. Where plain intervals are too loose on a
leaf it bisects that leaf further (at most `MAX_BOXES_PER_LEAF` boxes); the engine's own bounds
are never trusted.

Exit status: 0 every certificate valid, 1 some certificate invalid (or not re-validated in the
time limit), 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from fractions import Fraction

MAX_CERT_BYTES = 256 << 20
MAX_BOXES_PER_LEAF = 4096


class Invalid(Exception):
    """The certificate does not establish the claim (the message says where it fails)."""


@dataclass
class Report:
    path: str
    valid: bool
    message: str
    leaves: int = 0
    boxes: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"certificate": self.path, "valid": self.valid, "message": self.message,
                "leaves": self.leaves, "boxes_evaluated": self.boxes,
                "seconds": round(self.seconds, 3)}


def obligation_digest(ob, program) -> str:
    """sha256 of the obligation's mathematics (`verifier.digest`): its atoms, the program
    slice computing them and the variables' ranges, exact and canonical."""
    from .digest import obligation

    return obligation(ob, program)


# ---- interval evaluation of the program (independent of the engines) ---------------------------

class _Unsupported(Exception):
    pass


class Intervals:
    """Outward-rounded intervals (mpmath.iv) of program symbols over a box."""

    def __init__(self, program, terms):
        import mpmath
        import sympy as sp

        from .layers import activations

        self.iv = mpmath.iv
        self.sp, self.act = sp, activations  # looked up once, not per evaluated node
        self.slice = program.slice(terms)
        self.terms = terms

    def const(self, q):
        iv = self.iv
        return iv.mpf(int(q.p)) / iv.mpf(int(q.q))

    def run(self, box: dict) -> list:
        """Intervals of `terms` when every leaf symbol lies in box[leaf] = (lo, hi)."""
        iv = self.iv
        env = {s: iv.mpf([_mp(lo, iv, down=True), _mp(hi, iv, down=False)])
               for s, (lo, hi) in box.items()}
        for sym, d in self.slice:
            env[sym] = self.eval(d, env)
        return [self.eval(t, env) for t in self.terms]

    def eval(self, e, env):
        sp, a_ = self.sp, self.act
        leaky_relu, leaky_step, relu = a_.leaky_relu, a_.leaky_step, a_.relu
        sigmoid, softplus, step = a_.sigmoid, a_.softplus, a_.step
        iv = self.iv
        if e.is_Symbol:
            if e not in env:
                raise _Unsupported(f"unbounded symbol {e}")
            return env[e]
        if e.is_Rational:
            return self.const(e)
        if e.is_Number:
            raise _Unsupported(f"irrational number {e}")
        args = e.args
        if isinstance(e, sp.Add):
            out = self.eval(args[0], env)
            for a in args[1:]:
                out = out + self.eval(a, env)
            return out
        if isinstance(e, sp.Mul):
            out = self.eval(args[0], env)
            for a in args[1:]:
                out = out * self.eval(a, env)
            return out
        if isinstance(e, sp.Pow):
            base, ex = args
            b = self.eval(base, env)
            if ex.is_Integer:
                n = int(ex)
                if n >= 0:
                    return _ipow(b, n, iv)
                return iv.mpf(1) / _ipow(b, -n, iv)
            if ex == sp.Rational(1, 2):
                if b.a < 0:
                    raise _Unsupported("square root of a possibly negative value")
                return iv.sqrt(b)
            raise _Unsupported(f"power {ex}")
        x = [self.eval(a, env) for a in args]
        if isinstance(e, sp.exp):
            return iv.exp(x[0])
        if isinstance(e, sp.log):
            if x[0].a <= 0:
                raise _Unsupported("log of a possibly non-positive value")
            return iv.log(x[0])
        if isinstance(e, sp.tanh):
            return _monotone(x[0], lambda t: 1 - 2 / (iv.exp(2 * t) + 1), iv, -1, 1)
        if isinstance(e, sigmoid):
            return _monotone(x[0], lambda t: 1 / (1 + iv.exp(-t)), iv, 0, 1)
        if isinstance(e, softplus):
            return _monotone(x[0], lambda t: iv.log(1 + iv.exp(t)), iv, 0, None)
        if isinstance(e, relu):
            return iv.mpf([max(x[0].a, 0), max(x[0].b, 0)])
        if isinstance(e, step):
            return iv.mpf([1 if x[0].a > 0 else 0, 0 if x[0].b <= 0 else 1])
        if isinstance(e, leaky_relu):
            z, alpha = x
            if alpha.a != alpha.b or alpha.a < 0:
                raise _Unsupported("leaky_relu with a negative or non-constant slope")

            def f(t):
                t = iv.mpf(t)
                return t if t > 0 else alpha * t

            return iv.mpf([f(z.a).a, f(z.b).b])
        if isinstance(e, leaky_step):
            z, alpha = x
            vals = ([1] if z.b > 0 else []) + ([alpha.a, alpha.b] if z.a <= 0 else [])
            return iv.mpf([min(vals), max(vals)])
        if isinstance(e, sp.Abs):
            z = x[0]
            if z.a >= 0:
                return z
            if z.b <= 0:
                return -z
            return iv.mpf([0, max(-z.a, z.b)])
        if isinstance(e, sp.Max):
            return iv.mpf([max(t.a for t in x), max(t.b for t in x)])
        if isinstance(e, sp.Min):
            return iv.mpf([min(t.a for t in x), min(t.b for t in x)])
        raise _Unsupported(f"function {type(e).__name__}")


def _mp(q: Fraction, iv, down: bool):
    v = iv.mpf(q.numerator) / iv.mpf(q.denominator)
    return v.a if down else v.b


def _ipow(b, n: int, iv):
    if n == 0:
        return iv.mpf(1)
    if n % 2 == 0 and b.a < 0 < b.b:  # even power of an interval around 0
        m = max(-b.a, b.b)
        return iv.mpf([0, (iv.mpf(m) ** n).b])
    return b ** n


def _monotone(z, f, iv, lo_lim, hi_lim):
    """An increasing function on [z.a, z.b], each end evaluated with outward rounding."""
    import mpmath

    a = lo_lim if z.a == -mpmath.inf else f(iv.mpf(z.a)).a
    b = hi_lim if z.b == mpmath.inf else f(iv.mpf(z.b)).b
    if a is None or b is None:
        raise _Unsupported("unbounded argument")
    if lo_lim is not None:
        a = max(a, lo_lim)
    if hi_lim is not None:
        b = min(b, hi_lim)
    return iv.mpf([a, b])


def _refutes(op: str, d) -> bool:
    """The atom `lhs op rhs` is false everywhere, d enclosing lhs - rhs."""
    return {"<=": d.a > 0, "<": d.a >= 0, ">=": d.b < 0, ">": d.b <= 0,
            "==": d.a > 0 or d.b < 0, "!=": d.a == 0 and d.b == 0}[op]


def _proves(op: str, d) -> bool:
    return {"<=": d.b <= 0, "<": d.b < 0, ">=": d.a >= 0, ">": d.a > 0,
            "!=": d.a > 0 or d.b < 0, "==": d.a == 0 and d.b == 0}[op]


# ---- the certificate ------------------------------------------------------------------------

def _load(path: str) -> dict:
    from .fileio import read_regular_file

    try:
        data = read_regular_file(path, MAX_CERT_BYTES, "certificate")
    except FileNotFoundError:
        raise ValueError(f"certificate not found: {path}") from None
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Invalid(f"not a certificate (JSON: {exc})") from None
    from .emit.certificate import FORMAT

    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise Invalid(f"not a certificate of format {FORMAT}")
    if doc.get("kind") in ("relu", "poly"):  # checked by check_relu, check_poly
        return doc
    for key, kind in (("claim", str), ("spec", str), ("obligation_digest", str),
                      ("variables", list), ("root", list), ("splits", dict), ("closed", dict)):
        if not isinstance(doc.get(key), kind):
            raise Invalid(f"field `{key}` is missing or not a {kind.__name__}")
    return doc


def _fraction(text, what: str) -> Fraction:
    if not isinstance(text, str) or len(text) > 10_000:
        raise Invalid(f"{what} is not an exact number")
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise Invalid(f"{what} is not an exact number: {text[:40]!r}") from None


def _check_relu(doc: dict, path: str, spec, start: float, timeout: float, onnx, vnnlib):
    from . import check_relu

    report = Report(path=path, valid=False, message="")
    try:
        if doc.get("kind") == "poly":
            msg = _check_poly(doc, path, spec, report, start + timeout, onnx, vnnlib)
        elif doc.get("source") == "vnnlib":
            msg = check_relu.check_vnn(doc, path, report, start + timeout, MAX_BOXES_PER_LEAF,
                                       onnx, vnnlib)
        elif doc.get("source") == "spec":
            msg = check_relu.check_spec(doc, path, spec, report, start + timeout,
                                        MAX_BOXES_PER_LEAF)
        else:
            raise Invalid("a ReLU certificate must come from a VNN-LIB property or a spec")
    except check_relu.Invalid as exc:
        raise Invalid(str(exc)) from None
    report.valid = True
    report.seconds = time.perf_counter() - start
    report.message = msg
    return report


def _check_poly(doc: dict, path: str, spec, report, deadline: float, onnx, vnnlib) -> str:
    from . import check_poly

    if doc.get("source") == "vnnlib":
        return check_poly.check_vnn(doc, path, report, deadline, MAX_BOXES_PER_LEAF, onnx,
                                    vnnlib)
    if doc.get("source") == "spec":
        return check_poly.check_spec(doc, path, spec, report, deadline, MAX_BOXES_PER_LEAF)
    raise Invalid("a polynomial certificate must come from a VNN-LIB query or a spec")


def check_certificate(path: str, spec: str | None = None, timeout: float = 600.0,
                      onnx: str | None = None, vnnlib: str | None = None) -> Report:
    """Re-validate one certificate; raises ValueError / SpecError on unusable input."""
    from . import run

    start = time.perf_counter()
    doc = _load(path)
    if doc.get("kind") in ("relu", "poly"):
        return _check_relu(doc, path, spec, start, timeout, onnx, vnnlib)
    spec_path = spec or os.path.join(os.path.dirname(path) or ".", doc["spec"])
    model = run.load(spec_path)
    obs = [ob for ob in model.obligations if ob.name == doc["claim"]]
    if not obs:
        raise Invalid(f"the spec has no claim `{doc['claim']}`")
    ob = obs[0]
    if ob.kind != "bound":
        raise Invalid(f"claim `{ob.name}` is not a bound claim")
    if obligation_digest(ob, model.program) != doc["obligation_digest"]:
        raise Invalid(f"claim `{ob.name}` of {os.path.basename(spec_path)} is not the "
                      "obligation this certificate was made for (the spec, an import or a "
                      "weight file changed)")
    by_name = {v.symbol.name: v for v in ob.variables}
    names = doc["variables"]
    if len(names) != len(doc["root"]) or len(set(names)) != len(names) or any(
            not isinstance(n, str) or n not in by_name for n in names):
        raise Invalid("the split variables are not variables of the claim")
    box: dict = {}
    for v in ob.variables:
        if v.lo is None or v.hi is None:
            continue
        box[v.symbol] = (Fraction(int(v.lo.p), int(v.lo.q)), Fraction(int(v.hi.p), int(v.hi.q)))
    root = []
    for name, pair in zip(names, doc["root"]):
        if not isinstance(pair, list) or len(pair) != 2:
            raise Invalid(f"root range of {name} is not a pair")
        lo, hi = (_fraction(t, f"root bound of {name}") for t in pair)
        have = box.get(by_name[name].symbol)
        if have is None or lo > have[0] or hi < have[1]:
            raise Invalid(f"the root box does not contain the range of {name}")
        root.append((lo, hi))
    terms = [t for a in ob.goal + ob.hypotheses for t in (a.lhs, a.rhs)]
    intervals = Intervals(model.program, terms)
    n_goal = len(ob.goal)
    syms = [by_name[n].symbol for n in names]
    deadline = start + timeout
    report = Report(path=path, valid=False, message="")

    def leaf_closes(lo: list, hi: list) -> bool:
        pending = [(lo, hi)]
        count = 0
        while pending:
            if time.perf_counter() > deadline:
                raise Invalid("time limit reached before every leaf was re-validated")
            blo, bhi = pending.pop()
            count += 1
            report.boxes += 1
            b = dict(box)
            b.update({s: (blo[i], bhi[i]) for i, s in enumerate(syms)})
            try:
                vals = intervals.run(b)
            except _Unsupported as exc:
                raise Invalid(f"the checker cannot evaluate the claim: {exc}") from None
            if all(_proves(a.op, vals[2 * k] - vals[2 * k + 1]) for k, a in enumerate(ob.goal)):
                continue
            if any(_refutes(a.op, vals[2 * (n_goal + k)] - vals[2 * (n_goal + k) + 1])
                   for k, a in enumerate(ob.hypotheses)):
                continue  # no point of the box meets the `where` conditions
            if count + len(pending) >= MAX_BOXES_PER_LEAF or not syms:
                # intervals are too loose here; an exact claim (no tanh, exp, ...) goes to
                # z3 on this module's own encoding of the box
                from .check_relu import z3_box_closes

                if z3_box_closes(ob, model.program, b, deadline):
                    report.extra["z3_boxes"] = report.extra.get("z3_boxes", 0) + 1
                    continue
                return False
            widths = [(bhi[i] - blo[i]) / max(r[1] - r[0], Fraction(1, 10**30))
                      for i, r in enumerate(root)]
            d = max(range(len(syms)), key=widths.__getitem__)
            mid = (blo[d] + bhi[d]) / 2
            if not blo[d] < mid < bhi[d]:
                return False
            pending.append((blo, bhi[:d] + [mid] + bhi[d + 1:]))
            pending.append((blo[:d] + [mid] + blo[d + 1:], bhi))
        return True

    splits, closed = doc["splits"], doc["closed"]
    seen: set[str] = set()
    stack = [("0", [r[0] for r in root], [r[1] for r in root])]
    while stack:
        node, lo, hi = stack.pop()
        if node in seen:
            raise Invalid(f"node {node} is reached twice: not a tree")
        seen.add(node)
        if node in splits:
            rec = splits[node]
            if (not isinstance(rec, list) or len(rec) != 4 or not isinstance(rec[0], int)
                    or not 0 <= rec[0] < len(names)):
                raise Invalid(f"split of node {node} is malformed")
            d, mid = rec[0], _fraction(rec[1], f"split point of node {node}")
            if not lo[d] < mid < hi[d]:
                raise Invalid(f"split point of node {node} is not inside its box")
            stack.append((str(rec[2]), lo, hi[:d] + [mid] + hi[d + 1:]))
            stack.append((str(rec[3]), lo[:d] + [mid] + lo[d + 1:], hi))
        elif node in closed:
            report.leaves += 1
            if not leaf_closes(lo, hi):
                raise Invalid(f"leaf {node} ({_show_box(names, lo, hi)}) is not closed by "
                              f"interval bounds in {MAX_BOXES_PER_LEAF} boxes")
        else:
            raise Invalid(f"node {node} is neither split nor closed: the tree has a hole")
    unused = (set(splits) | set(closed)) - seen
    if unused:
        raise Invalid(f"{len(unused)} node(s) are not in the tree, e.g. {min(unused)}")
    report.valid = True
    report.seconds = time.perf_counter() - start
    report.message = (f"valid: claim `{ob.name}` of {os.path.basename(spec_path)}, "
                      f"{report.leaves} leaves re-validated ({report.boxes} boxes evaluated)")
    return report


def _show_box(names, lo, hi) -> str:
    parts = [f"{n} in [{a}, {b}]" for n, a, b in zip(names, lo, hi)]
    text = ", ".join(parts)
    return text if len(text) < 200 else text[:200] + " ..."


# ---- command line -----------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    from .diagnostics import SpecError, run_guarded

    p = _Parser(prog="verify-check", description="Re-validate certificates of proved claims.")
    p.add_argument("certs", nargs="+", metavar="CERT", help=".cert.json files")
    p.add_argument("--spec", metavar="SPEC", help="the spec (default: the file the certificate "
                   "names, next to it)")
    p.add_argument("--onnx", metavar="NET", help="the network of a verify-vnn certificate "
                   "(default: the file it names)")
    p.add_argument("--vnnlib", metavar="PROP", help="the property of a verify-vnn "
                   "certificate (default: the file it names)")
    p.add_argument("--timeout", type=float, default=600.0, metavar="S",
                   help="time limit per certificate (default 600 s)")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    args = p.parse_args(argv)

    def work() -> int:
        reports, status = [], 0
        for path in args.certs:
            t0 = time.perf_counter()
            try:
                r = check_certificate(path, args.spec, args.timeout, args.onnx, args.vnnlib)
            except Invalid as exc:
                r = Report(path=path, valid=False, message=f"invalid: {exc}",
                           seconds=time.perf_counter() - t0)
            except ValueError as exc:
                raise SpecError(str(exc)) from None
            status = max(status, 0 if r.valid else 1)
            reports.append(r)
            if not args.json:
                print(f"{path}: {r.message} in {r.seconds:.2f} s")
        if args.json:
            print(json.dumps({"certificates": [r.to_json() for r in reports], "exit": status},
                             indent=2, sort_keys=True))
        return status

    return run_guarded(work)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
