"""VNN-LIB 1.0 properties: the *unsafe* region over inputs `X_i` and outputs `Y_j`.

A file declares `(declare-const X_0 Real) ...` and asserts formulas built from `and`, `or`
and comparisons `<= >= < >` between linear terms (numbers, variables, `+`, `-`, and `*` by a
number). The conjunction of all asserts is put in disjunctive normal form: the property is a
list of `Disjunct`s, each a conjunction of linear constraints with a closed input box: from its
single-variable input bounds, or, for an input without one, the exact range that its linear
constraints over inputs allow (z3 optimisation; the constraints stay rows, so the region is
exact). A disjunct whose input constraints have no solution (`X_0 > 1` and `X_0 < 1`) is
empty and dropped. The network is safe (VNN-LIB answer `unsat`) when no disjunct is
satisfiable. Numerals are exact (`Fraction`, exponent notation included, at most
MAX_NUMERAL characters and exponents up to MAX_EXPONENT). Files are read up to
MAX_VNNLIB_BYTES (unpacked), nesting up to MAX_DEPTH, normal forms up to MAX_DISJUNCTS
disjuncts and MAX_ROWS constraints. Anything else is a `SpecError` at the offending token's
file:line:col.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from fractions import Fraction

from .diagnostics import Span, SpecError
from .fileio import read_regular_file

MAX_DISJUNCTS = 2_000  # the engine keeps per-box arrays over all disjuncts: ~1 GB at 3000
MAX_ROWS = 1_000_000  # constraints summed over all disjuncts of the normal form
MAX_DEPTH = 100  # nesting of parentheses
MAX_NUMERAL = 1000  # characters of one number
MAX_EXPONENT = 1000
MAX_VNNLIB_BYTES = 128 * 2**20
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_VAR = re.compile(r"([XY])_(\d+)")
_TOKEN = re.compile(r"\s+|;[^\n]*|\(|\)|[^\s();]+")
OPS = ("<=", ">=", "<", ">")


@dataclass(frozen=True)
class Constraint:
    """sum_i x[i] X_i + sum_j y[j] Y_j + const  OP  0, with OP in `<=`, `<` (normalised)."""

    x: tuple[tuple[int, Fraction], ...]
    y: tuple[tuple[int, Fraction], ...]
    const: Fraction
    strict: bool
    span: Span | None = field(default=None, compare=False, hash=False, repr=False)

    def value(self, xs, ys) -> object:
        """lhs at a point (exact when the point is)."""
        return (sum((c * xs[i] for i, c in self.x), Fraction(0))
                + sum((c * ys[j] for j, c in self.y), Fraction(0)) + self.const)

    def holds(self, xs, ys) -> bool:
        v = self.value(xs, ys)
        return v < 0 if self.strict else v <= 0


@dataclass
class Disjunct:
    """A conjunction of constraints; `lo`/`hi` bound every input (closed box)."""

    constraints: list[Constraint]
    lo: list[Fraction]
    hi: list[Fraction]

    def output_constraints(self) -> list[Constraint]:
        """Constraints that are not plain closed bounds of one input (those are the box)."""
        return [c for c in self.constraints if c.y or len(c.x) != 1 or c.strict]


@dataclass
class Property:
    path: str
    n_inputs: int
    n_outputs: int
    disjuncts: list[Disjunct]


@dataclass
class _Tok:
    text: str
    span: Span


def _tokens(text: str, path: str, pattern: re.Pattern = _TOKEN) -> list[_Tok]:
    """The tokens of `text` (whitespace and comments dropped), each with its span; `pattern`
    must match every character (the 2.0 reader passes its own)."""
    out = []
    line, col, pos = 1, 1, 0
    for m in pattern.finditer(text):
        if m.start() != pos:  # cannot happen: the pattern matches every character
            raise SpecError("unreadable text", Span(path=path, line=line, column=col))
        s = m.group()
        if not s.isspace() and not s.startswith(";"):
            out.append(_Tok(s, Span(path=path, line=line, column=col, end_line=line,
                                    end_column=col + len(s), source=text)))
        nl = s.count("\n")
        if nl:
            line += nl
            col = len(s) - s.rfind("\n")
        else:
            col += len(s)
        pos = m.end()
    return out


def _sexprs(toks: list[_Tok], path: str, text: str):
    """Nested lists of tokens; each list carries the span of its `(`."""
    stack: list[list] = [[]]
    opens: list[_Tok] = []
    for t in toks:
        if t.text == "(":
            stack.append([])
            opens.append(t)
            if len(opens) > MAX_DEPTH:
                raise SpecError(f"parentheses nested too deeply (more than {MAX_DEPTH} "
                                "levels)", t.span,
                                fix="VNN-LIB properties are flat: assert the conjuncts one "
                                    "by one, and write sums as (+ a b c ...)")
        elif t.text == ")":
            if not opens:
                raise SpecError("unexpected `)`", t.span)
            lst = stack.pop()
            stack[-1].append(_List(lst, opens.pop().span))
        else:
            stack[-1].append(t)
    if opens:
        raise SpecError("unclosed `(`", opens[-1].span, fix="add the missing `)`")
    return stack[0]


@dataclass
class _List:
    items: list
    span: Span


class _Reader:
    def __init__(self, path: str, text: str):
        self.path = path
        self.text = text
        self.declared: dict[str, Span] = {}
        self._last_span: Span | None = None
        self._rows = 0

    def read(self) -> Property:
        conj = []
        for top in _sexprs(_tokens(self.text, self.path), self.path, self.text):
            if not isinstance(top, _List) or not top.items:
                raise SpecError("expected a command such as (declare-const X_0 Real)",
                                top.span)
            head = self._head(top)
            if head == "declare-const":
                self._declare(top)
            elif head == "assert":
                if len(top.items) != 2:
                    raise SpecError("assert takes one formula", top.span)
                conj.append(self._formula(top.items[1]))
                self._last_span = top.span
            elif head in ("set-logic", "set-info", "check-sat", "exit", "get-model"):
                continue
            else:
                raise SpecError(f"unsupported command `{head}`", top.items[0].span,
                                fix="VNN-LIB 1.0 uses declare-const and assert")
        n_in = self._count("X")
        n_out = self._count("Y")
        disjuncts = self._dnf(("and", conj), self._last_span)
        kept = [self._disjunct(d, n_in) for d in disjuncts]
        return Property(self.path, n_in, n_out, [d for d in kept if d is not None])

    def _head(self, lst: _List) -> str:
        h = lst.items[0]
        if not isinstance(h, _Tok):
            raise SpecError("expected an operator name", h.span)
        return h.text

    def _declare(self, top: _List) -> None:
        items = top.items
        if len(items) != 3 or not all(isinstance(t, _Tok) for t in items):
            raise SpecError("expected (declare-const NAME Real)", top.span)
        name, sort = items[1], items[2]
        if not _VAR.fullmatch(name.text):
            raise SpecError(f"unsupported variable name `{name.text}`", name.span,
                            fix="VNN-LIB names inputs X_0, X_1, ... and outputs Y_0, Y_1, ...")
        if sort.text != "Real":
            raise SpecError(f"unsupported sort `{sort.text}`", sort.span, fix="use Real")
        if name.text in self.declared:
            raise SpecError(f"`{name.text}` is declared twice", name.span)
        self.declared[name.text] = name.span

    def _count(self, kind: str) -> int:
        idx = sorted(int(n[2:]) for n in self.declared if n[0] == kind)
        for k, i in enumerate(idx):
            if i != k:
                raise SpecError(f"{kind}_{k} is not declared but {kind}_{i} is",
                                self.declared[f"{kind}_{i}"])
        return len(idx)

    # formulas: ("and"|"or", [sub]) or ("atom", Constraint)
    def _formula(self, node):
        if isinstance(node, _Tok):
            raise SpecError(f"expected a formula, got `{node.text}`", node.span)
        if not node.items:
            raise SpecError("empty formula", node.span)
        head = self._head(node)
        if head in ("and", "or"):
            return (head, [self._formula(s) for s in node.items[1:]])
        if head in OPS:
            if len(node.items) != 3:
                raise SpecError(f"`{head}` takes two terms", node.span,
                                fix="chain comparisons with (and ...)")
            a = self._term(node.items[1])
            b = self._term(node.items[2])
            return ("atom", self._atom(head, a, b, node.span))
        raise SpecError(f"unsupported operator `{head}` in a formula", node.items[0].span,
                        fix="VNN-LIB 1.0 formulas use and, or, <=, >=, <, >")

    def _atom(self, op, a, b, span) -> Constraint:
        # a OP b  ->  (a - b) <= 0 / < 0, or (b - a) for >= / >
        lhs, rhs = (a, b) if op in ("<=", "<") else (b, a)
        diff = dict(lhs)
        for k, v in rhs.items():
            diff[k] = diff.get(k, Fraction(0)) - v
        xs = tuple(sorted((int(k[2:]), v) for k, v in diff.items() if k and k[0] == "X" and v))
        ys = tuple(sorted((int(k[2:]), v) for k, v in diff.items() if k and k[0] == "Y" and v))
        return Constraint(x=xs, y=ys, const=diff.get("", Fraction(0)), strict=op in ("<", ">"),
                          span=span)

    def _term(self, node) -> dict[str, Fraction]:
        """A linear term as {variable name or "" for the constant: coefficient}."""
        if isinstance(node, _Tok):
            if _NUMBER.fullmatch(node.text):
                return {"": _fraction(node.text, node.span)}
            if node.text in self.declared:
                return {node.text: Fraction(1)}
            if _VAR.fullmatch(node.text):
                raise SpecError(f"`{node.text}` is used before it is declared", node.span,
                                fix=f"add (declare-const {node.text} Real)")
            raise SpecError(f"unknown name or malformed number `{node.text}`", node.span)
        if not node.items:
            raise SpecError("empty term", node.span)
        head = self._head(node)
        args = [self._term(t) for t in node.items[1:]]
        if head == "+" and args:
            return _sum(args)
        if head == "-" and len(args) == 1:
            return {k: -v for k, v in args[0].items()}
        if head == "-" and args:
            return _sum([args[0]] + [{k: -v for k, v in a.items()} for a in args[1:]])
        if head == "*" and args:
            out = {"": Fraction(1)}
            for a, t in zip(args, node.items[1:]):
                if set(out) - {""} and set(a) - {""}:
                    raise SpecError("product of two variables is not linear", t.span)
                if set(a) - {""}:
                    out, a = a, out
                out = {k: v * a.get("", Fraction(0)) for k, v in out.items()}
            return out
        raise SpecError(f"unsupported operator `{head}` in a term", node.items[0].span,
                        fix="terms are numbers, X_i, Y_j, +, -, and * by a number")

    def _dnf(self, f, span) -> list[list[Constraint]]:
        kind, body = f
        if kind == "atom":
            return [[body]]
        if kind == "or":
            out = []
            for s in body:
                out += self._dnf(s, span)
                if len(out) > MAX_DISJUNCTS:
                    self._too_many(len(out), span)
            self._check_size(out, span)
            return out
        out = [[]]
        for s in body:
            sub = self._dnf(s, span)
            if len(out) * len(sub) > MAX_DISJUNCTS:
                self._too_many(len(out) * len(sub), span)
            out = [a + b for a in out for b in sub]
            self._check_size(out, span)
        return out

    @staticmethod
    def _too_many(n: int, span) -> None:
        raise SpecError(f"too large: the property has at least {n} disjuncts in normal form "
                        f"(limit {MAX_DISJUNCTS})", span,
                        fix="split the property into several files, one per group of "
                            "disjuncts, and check each")

    def _check_size(self, out: list, span) -> None:
        if len(out) > MAX_DISJUNCTS:
            self._too_many(len(out), span)
        rows = sum(len(d) for d in out)
        if rows > MAX_ROWS:
            raise SpecError(f"too large: the normal form has ~{rows} constraints (limit "
                            f"{MAX_ROWS})", span,
                            fix="split the property into several files and check each")

    def _disjunct(self, cons: list[Constraint], n_in: int) -> Disjunct | None:
        """The disjunct with its input box, or None when its input constraints have no
        solution (an empty region holds no counterexample)."""
        lo: list[Fraction | None] = [None] * n_in
        hi: list[Fraction | None] = [None] * n_in
        open_lo: set[int] = set()
        open_hi: set[int] = set()
        for c in cons:
            if c.y or len(c.x) != 1:
                continue
            (i, a), = c.x
            bound = -c.const / a  # a X_i + const <= 0
            if a > 0:
                if hi[i] is None or bound < hi[i] or (bound == hi[i] and c.strict):
                    hi[i] = bound
                    open_hi.discard(i) if not c.strict else open_hi.add(i)
            elif lo[i] is None or bound > lo[i] or (bound == lo[i] and c.strict):
                lo[i] = bound
                open_lo.discard(i) if not c.strict else open_lo.add(i)
        for i in range(n_in):
            if lo[i] is not None and hi[i] is not None and (
                    lo[i] > hi[i] or (lo[i] == hi[i] and (i in open_lo or i in open_hi))):
                return None  # e.g. X_0 > 1 and X_0 < 1: no input at all
        missing = [i for i in range(n_in) if lo[i] is None or hi[i] is None]
        if missing:
            box = _input_range(cons, n_in, missing)
            if box is None:
                return None
            for i, (a, b) in box.items():
                if a is None or b is None:
                    raise SpecError(
                        f"input X_{i} is unbounded {'below' if a is None else 'above'} in some "
                        "disjunct: its bounds and the linear constraints over inputs leave it "
                        "free", self.declared.get(f"X_{i}"),
                        fix="VNN-LIB inputs range over a bounded region: assert "
                            f"(>= X_{i} LO) and (<= X_{i} HI)")
                lo[i] = a if lo[i] is None else max(lo[i], a)
                hi[i] = b if hi[i] is None else min(hi[i], b)
        return Disjunct(constraints=cons, lo=lo, hi=hi)


def _input_range(cons: list[Constraint], n_in: int, which: list[int]):
    """{i: (min, max)} of X_i over the inputs' constraints (closed: strict ones relaxed, so the
    range holds the region; None for an unbounded side), or None if the constraints over
    inputs, strictness included, have no solution. Exact: z3 over the rationals."""
    import z3

    xs = [z3.Real(f"X_{i}") for i in range(n_in)]

    def lhs(c):
        return z3.Sum([z3.RealVal(str(a)) * xs[i] for i, a in c.x] + [z3.RealVal(str(c.const))])

    inputs_only = [c for c in cons if not c.y and c.x]
    solver = z3.Solver()
    solver.add([lhs(c) < 0 if c.strict else lhs(c) <= 0 for c in inputs_only])
    if solver.check() == z3.unsat:
        return None
    out = {}
    for i in which:
        ends = []
        for sense in ("min", "max"):
            opt = z3.Optimize()
            opt.add([lhs(c) <= 0 for c in inputs_only])
            goal = opt.minimize(xs[i]) if sense == "min" else opt.maximize(xs[i])
            if opt.check() != z3.sat:
                raise SpecError(f"cannot bound input X_{i} from the linear constraints")
            ends.append(_exact(goal.value()))
        out[i] = tuple(ends)
    return out


def _exact(value):
    """A z3 optimum as a Fraction, or None when it is infinite (unbounded)."""
    import z3

    if z3.is_int_value(value):
        return Fraction(value.as_long())
    if not z3.is_rational_value(value):
        return None  # oo, or an expression in epsilon / oo
    return Fraction(value.numerator_as_long(), value.denominator_as_long())


def _sum(terms) -> dict[str, Fraction]:
    out: dict[str, Fraction] = {}
    for t in terms:
        for k, v in t.items():
            out[k] = out.get(k, Fraction(0)) + v
    return out


def _fraction(s: str, span: Span | None = None) -> Fraction:
    if len(s) > MAX_NUMERAL:
        raise SpecError(f"number of {len(s)} characters is too long (at most {MAX_NUMERAL})",
                        span, fix="write the number with at most 1000 characters")
    m = _NUMBER.fullmatch(s)
    if m and m.group(2) and abs(int(m.group(2)[1:])) > MAX_EXPONENT:
        raise SpecError(f"exponent {m.group(2)[1:]} is out of range (at most {MAX_EXPONENT} "
                        "either way)", span,
                        fix="a VNN-LIB bound is a number a network can compute with; check "
                            "the exponent")
    return Fraction(s if not s.startswith("+") else s[1:])


def parse_vnnlib(text: str, path: str = "<vnnlib>") -> Property:
    """Parse VNN-LIB text (see the module doc); raises SpecError with a location."""
    return _Reader(path, text).read()


def read_vnnlib(path: str) -> Property:
    """Read and parse a `.vnnlib` file (optionally gzip-compressed)."""
    return parse_vnnlib(read_text(path), path)


def read_text(path: str) -> str:
    """A property file's text (gzip unpacked): a regular file of at most MAX_VNNLIB_BYTES,
    UTF-8; any other is a SpecError naming the file (and the place of a bad byte)."""
    try:
        raw = read_regular_file(path, MAX_VNNLIB_BYTES, "VNN-LIB file")
    except FileNotFoundError:
        raise SpecError(f"no such VNN-LIB file: {path}") from None
    except OSError as exc:
        raise SpecError(f"cannot read VNN-LIB file {path}: {exc.strerror or exc}") from None
    if path.endswith(".gz") or raw[:2] == b"\x1f\x8b":
        raw = _gunzip(raw, path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SpecError(f"VNN-LIB file is not UTF-8 text (byte {exc.start})",
                        Span(path=path, line=line, column=col),
                        fix="VNN-LIB files are plain text; a compressed one needs the "
                            "suffix .gz") from None
    return text


def _gunzip(raw: bytes, path: str) -> bytes:
    """The unpacked bytes of a gzip file, at most MAX_VNNLIB_BYTES of them."""
    import gzip
    import zlib

    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as fh:
            data = fh.read(MAX_VNNLIB_BYTES + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise SpecError(f"VNN-LIB file {path} is not a readable gzip file: {exc}",
                        fix="check the download, or unpack it with gunzip to see the "
                            "problem") from None
    if len(data) > MAX_VNNLIB_BYTES:
        raise SpecError(f"VNN-LIB file {path} unpacks to more than {MAX_VNNLIB_BYTES} bytes",
                        fix="split the property into several smaller files")
    return data


# ---- the same question as a .snn spec ----------------------------------------------------------

def exact_numeral(q: Fraction) -> str:
    """q as a .snn numeral: a finite decimal when there is one (exact, as .snn reads it), else
    the quotient `(p/q)`."""
    d, twos, fives = q.denominator, 0, 0
    while d % 2 == 0:
        d, twos = d // 2, twos + 1
    while d % 5 == 0:
        d, fives = d // 5, fives + 1
    if d != 1:
        return f"({q.numerator}/{q.denominator})"
    k = max(twos, fives)
    digits = str(abs(q.numerator) * 10**k // q.denominator).rjust(k + 1, "0")
    text = digits[:-k] + "." + digits[-k:] if k else digits
    return ("-" if q < 0 else "") + text


def _linear_text(terms: list[tuple[Fraction, str]], const: Fraction) -> str:
    out = ""
    for c, t in terms:
        if c == 0:
            continue
        sign = "-" if c < 0 else "+"
        mag = "" if abs(c) == 1 else f"{exact_numeral(abs(c))} * "
        out += f" {sign} {mag}{t}" if out else ("-" if c < 0 else "") + f"{mag}{t}"
    if const or not out:
        out += (f" {'-' if const < 0 else '+'} {exact_numeral(abs(const))}" if out
                else exact_numeral(const))
    return out


def spec_text(prop: Property, onnx_file: str, network: str = "n") -> str:
    """A .snn spec whose claims hold exactly when the property is `unsat` on the network.

    Disjunct k (unsafe where every constraint `lhs <= 0` holds, `< 0` if strict) becomes an input
    `x_k` over its box and `claim safe_k: max(lhs_1, ..., lhs_m) > 0` (`>= 0` when every
    constraint is strict). A disjunct that mixes strict and non-strict constraints has no such
    form and raises ValueError.
    """
    n_in = prop.n_inputs
    lines = [f'network {network}(in={n_in}) load "{onnx_file}" {{ }}']
    for k, d in enumerate(prop.disjuncts):
        x = f"x_{k}"
        lo = ", ".join(exact_numeral(v) for v in d.lo)
        hi = ", ".join(exact_numeral(v) for v in d.hi)
        lines.insert(k, f"input {x} : real[{n_in}] in box([{lo}], [{hi}])")
        cons = d.output_constraints()
        if not cons:
            raise ValueError(f"disjunct {k} is the whole box: the property is sat")
        if len({c.strict for c in cons}) > 1:
            raise ValueError(f"disjunct {k} mixes strict and non-strict constraints")
        exprs = [_linear_text([(a, f"{network}({x})[{j}]") for j, a in c.y]
                              + [(a, f"{x}[{i}]") for i, a in c.x], c.const) for c in cons]
        op = ">=" if cons[0].strict else ">"
        safe = exprs[0] if len(exprs) == 1 else f"max({', '.join(exprs)})"
        lines.append(f"claim safe_{k}: {safe} {op} 0")
    return "\n".join(lines) + "\n"
