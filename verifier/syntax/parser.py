"""Parse .snn text into the AST; every syntax error becomes a located `SpecError`."""

from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache
from importlib import resources

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, VisitError

from ..diagnostics import Span, SpecError
from . import ast

MAX_SOURCE_BYTES = 2_000_000
MAX_EXPONENT = 1000
MAX_DEPTH = 100  # levels of brackets or operators in one expression (later passes recurse)
MAX_NUMERAL = 400  # characters of one numeral; 10^400 is beyond any weight or bound
NESTING_FIX = "name the inner parts with `let` bindings"
_BRACKETS = re.compile(r'[(\[]|[)\]]|#[^\n]*|"[^"\n]*"')

# Common mistakes, recognised by the parser state they leave it in (lark's match_examples).
_MISTAKES = {
    "write `x ^ 2` or `x * x`; `**` is not an operator here": ["let y = x ** 2"],
    "a claim needs a name: `claim NAME: lhs <= rhs`": ["claim f(x) <= 1", "claim 3 <= 4"],
    "layers are written `dense(OUT, ACTIVATION)` inside `{ }`": ["network f(in=2) { dense 4 }"],
    "declare the input size: `network NAME(in=N) { ... }`": ["network f { dense(1) }"],
    "shapes are written `real[N]` or `real[N, M]`": ["input x : [3]", "input x : real(3)"],
}

_TOKEN_NAMES = {
    "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'", "LBRACE": "'{'",
    "RBRACE": "'}'", "COMMA": "','", "COLON": "':'", "EQUAL": "'='", "NAME": "a name",
    "NUMBER": "a number", "INT": "an integer", "STRING": "a quoted path", "CMP": "a comparison",
    "PLUS": "'+'", "MINUS": "'-'", "STAR": "'*'", "SLASH": "'/'", "AT": "'@'",
    "CIRCUMFLEX": "'^'", "TRANSPOSE": "'^T'", "DOT": "'.'", "$END": "end of file",
}


@lru_cache(maxsize=1)
def _examples() -> dict[str, list[str]]:
    # each mistake both first in a file and after another item: the LALR stack differs
    return {fix: [p + ex for ex in exs for p in ("", "input _q : real\n")]
            for fix, exs in _MISTAKES.items()}


@lru_cache(maxsize=1)
def parser() -> Lark:
    """The LALR parser, built once."""
    grammar = resources.files("verifier.syntax").joinpath("snn.lark").read_text()
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=False)


def _describe_expected(expected) -> str:
    names = sorted({_TOKEN_NAMES.get(t, f"'{t.lower()}'" if t.isupper() else t) for t in expected})
    if len(names) > 8:
        names = names[:8] + ["..."]
    return ", ".join(names)


def _syntax_error(err: UnexpectedInput, path: str, text: str) -> SpecError:
    line, col = getattr(err, "line", 1) or 1, getattr(err, "column", 1) or 1
    if isinstance(err, UnexpectedEOF) or line < 0:
        lines = text.splitlines() or [""]
        line, col = len(lines), len(lines[-1]) + 1
    span = Span(path=path, line=line, column=col, source=text)
    if isinstance(err, UnexpectedCharacters):
        ch = text[err.pos_in_stream] if err.pos_in_stream < len(text) else "?"
        msg = f"unexpected character {ch!r}"
    elif isinstance(err, UnexpectedEOF):
        msg = "unexpected end of file"
    else:
        tok = getattr(err, "token", None)
        shown = "end of file" if tok is None or tok.type == "$END" else repr(str(tok))
        msg = f"unexpected {shown}"
        if tok is not None and tok.type != "$END":
            span = Span(path=path, line=line, column=col, end_line=line,
                        end_column=col + len(str(tok)), source=text)
    expected = getattr(err, "expected", None) or getattr(err, "allowed", None)
    if expected:
        msg += f", expected {_describe_expected(expected)}"
    fix = None
    try:
        fix = err.match_examples(parser().parse, _examples(), use_accepts=True,
                                 token_type_match_fallback=True)
    except Exception:  # noqa: BLE001 - labelling is best effort, the message stands alone
        fix = None
    return SpecError(msg, span, fix)


def parse(text: str, path: str) -> ast.SpecFile:
    """Parse a spec; raises SpecError with the file, line and column of any mistake."""
    if len(text.encode("utf-8", "replace")) > MAX_SOURCE_BYTES:
        raise SpecError(f"spec file is larger than {MAX_SOURCE_BYTES} bytes",
                        Span(path=path, line=1, column=1, source=text))
    _check_brackets(text, path)
    try:
        tree = parser().parse(text)
    except UnexpectedInput as err:
        raise _syntax_error(err, path, text) from None
    _check_depth(tree, path, text)
    try:
        items = _ToAst(path, text).transform(tree)
    except VisitError as err:
        if isinstance(err.orig_exc, SpecError):
            raise err.orig_exc from None
        raise
    return ast.SpecFile(path=path, items=tuple(items), source=text)


def _check_brackets(text: str, path: str) -> None:
    """Refuse brackets nested more than MAX_DEPTH deep, at the first one too many (before the
    parser builds a tree that deep)."""
    depth = 0
    for m in _BRACKETS.finditer(text):
        ch = m.group()[0]
        if ch in "([":
            depth += 1
            if depth > MAX_DEPTH:
                line = text.count("\n", 0, m.start()) + 1
                col = m.start() - (text.rfind("\n", 0, m.start()) + 1) + 1
                raise SpecError(f"brackets nested too deeply (more than {MAX_DEPTH} levels)",
                                Span(path=path, line=line, column=col, end_line=line,
                                     end_column=col + 1, source=text), fix=NESTING_FIX)
        elif ch in ")]":
            depth = max(depth - 1, 0)


def _check_depth(tree: Tree, path: str, text: str) -> None:
    """Refuse a tree deeper than MAX_DEPTH levels below its item (`- - - x`, a 10^4-term sum),
    walked without recursion; the error points at the first node past the limit."""
    stack = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH + 2:  # start and item levels are not expression levels
            meta = node.meta
            where = Span(path=path, line=meta.line, column=meta.column, end_line=meta.line,
                         end_column=meta.column + 1, source=text) if not meta.empty else None
            raise SpecError(f"expression nested too deeply (more than {MAX_DEPTH} levels of "
                            f"operators, calls or indexing)", where,
                            fix=NESTING_FIX + "; a long sum can be written `sum([a, b, ...])`")
        stack.extend((c, depth + 1) for c in node.children if isinstance(c, Tree))


def _numeral(tok: Token, span: Span | None) -> str:
    text = str(tok)
    if len(text) > MAX_NUMERAL:
        raise SpecError(f"numeral of {len(text)} characters is too long (at most "
                        f"{MAX_NUMERAL})", span,
                        fix="numerals are exact; write a large or precise constant as a "
                            "quotient of shorter ones, e.g. `(12345/1000)`")
    return text


@v_args(meta=True, inline=True)
class _ToAst(Transformer):
    """lark tree → AST nodes, each carrying its span."""

    def __init__(self, path: str, text: str):
        super().__init__()
        self.path, self.text = path, text

    def _span(self, meta) -> Span | None:
        if getattr(meta, "empty", True):
            return None
        return Span(path=self.path, line=meta.line, column=meta.column, end_line=meta.end_line,
                    end_column=meta.end_column, source=self.text)

    def _tok_span(self, tok: Token) -> Span:
        return Span(path=self.path, line=tok.line, column=tok.column, end_line=tok.end_line,
                    end_column=tok.end_column, source=self.text)

    def _int(self, tok: Token) -> int:
        return int(_numeral(tok, self._tok_span(tok)))

    def _text(self, meta) -> str:
        return self.text[meta.start_pos:meta.end_pos]

    # ---- top level
    def start(self, meta, *items):
        return list(items)

    def import_decl(self, meta, path):
        return ast.Import(path=str(path)[1:-1], span=self._span(meta))

    def shape(self, meta, *dims):
        return ast.Shape(dims=tuple(self._int(d) if d.type == "INT" else str(d) for d in dims),
                         span=self._span(meta))

    def size_tuple(self, meta, *sizes):
        return tuple(self._int(n) for n in sizes)

    def dim_decl(self, meta, *parts):
        names = tuple(str(p) for p in parts if isinstance(p, Token))
        sizes = tuple(p for p in parts if isinstance(p, tuple))
        return ast.DimDecl(names=names, sizes=sizes, span=self._span(meta))

    def domain_interval(self, meta, lo, hi):
        return ast.Domain(kind="interval", first=lo, second=hi, span=self._span(meta))

    def domain_box(self, meta, lo, hi):
        return ast.Domain(kind="box", first=lo, second=hi, span=self._span(meta))

    def domain_ball(self, meta, center, radius):
        return ast.Domain(kind="ball", first=center, second=radius, span=self._span(meta))

    def input_decl(self, meta, name, shape, domain=None):
        return ast.InputDecl(name=str(name), shape=shape, domain=domain, span=self._span(meta))

    def param_range(self, meta, lo, hi):
        return ("range", lo, hi)

    def param_value(self, meta, value):
        return ("value", value)

    def param_decl(self, meta, name, shape, extra=None):
        kw = {}
        if extra is not None and extra[0] == "range":
            kw = {"lo": extra[1], "hi": extra[2]}
        elif extra is not None:
            kw = {"value": extra[1]}
        return ast.ParamDecl(name=str(name), shape=shape, span=self._span(meta), **kw)

    def load(self, meta, path):
        return (str(path)[1:-1], self._tok_span(path))

    def in_shape(self, meta, *dims):
        return tuple(self._int(d) for d in dims)

    def network_decl(self, meta, name, size, *rest):
        load = None
        load_span = None
        if rest and isinstance(rest[0], tuple):
            load, load_span = rest[0]
            rest = rest[1:]
        return ast.NetworkDecl(name=str(name), in_shape=size, load=load, layers=tuple(rest),
                               span=self._span(meta), load_span=load_span)

    def layer(self, meta, kind, *args):
        return ast.LayerDecl(kind=str(kind), args=tuple(a for a in args if a is not None),
                             span=self._span(meta))

    def layer_pos(self, meta, value):
        return ast.LayerArg(name=None, value=value, span=self._span(meta))

    def layer_kw(self, meta, name, value):
        return ast.LayerArg(name=str(name), value=value, span=self._span(meta))

    def layer_range(self, meta, name, lo, hi):
        return ast.LayerArg(name=str(name), lo=lo, hi=hi, span=self._span(meta))

    def let_decl(self, meta, name, expr):
        return ast.LetDecl(name=str(name), expr=expr, span=self._span(meta))

    def comparison(self, meta, *parts):
        operands = tuple(parts[0::2])
        ops = tuple(str(p) for p in parts[1::2])
        return ast.Comparison(operands=operands, ops=ops, span=self._span(meta))

    def where(self, meta, *comparisons):
        return tuple(comparisons)

    def f_or(self, meta, a, b):
        return self._bool("or", a, b, meta)

    def f_and(self, meta, a, b):
        return self._bool("and", a, b, meta)

    def _bool(self, op, a, b, meta):
        args = (a.args if isinstance(a, ast.BoolOp) and a.op == op else (a,)) + (b,)
        return ast.BoolOp(op=op, args=args, span=self._span(meta))

    def f_not(self, meta, a):
        return ast.Not(arg=a, span=self._span(meta))

    def claim_decl(self, meta, name, comparison, where=()):
        return ast.ClaimDecl(name=str(name), comparison=comparison, where=where,
                             text=" ".join(self._text(meta).split()), span=self._span(meta))

    def derive_decl(self, meta, kind, expr, *rest):
        wrt = alias = None
        for r in rest:
            if isinstance(r, Token) and r.type == "NAME":
                alias = str(r)
            else:
                wrt = r
        return ast.DeriveDecl(kind=str(kind), expr=expr, wrt=wrt, alias=alias,
                              span=self._span(meta), kind_span=self._tok_span(kind))

    # ---- expressions
    def number(self, meta, tok):
        text = _numeral(tok, self._span(meta))
        _, _, exponent = text.lower().partition("e")
        if exponent and abs(int(exponent)) > MAX_EXPONENT:
            raise SpecError(f"numeral exponent {exponent} is out of range (at most "
                            f"{MAX_EXPONENT})", self._span(meta),
                            fix=f"exponents run from -{MAX_EXPONENT} to {MAX_EXPONENT}")
        return ast.Num(value=Fraction(text), span=self._span(meta))

    def qualname(self, meta, *names):
        return (tuple(str(n) for n in names), self._span(meta))

    def ref(self, meta, qn):
        return ast.Ref(parts=qn[0], span=self._span(meta))

    def kwarg(self, meta, name, value):
        return ("kw", str(name), value)

    def call(self, meta, qn, *args):
        pos = tuple(a for a in args if a is not None and not (isinstance(a, tuple) and a[0] == "kw"))
        kws = tuple((a[1], a[2]) for a in args if isinstance(a, tuple) and a[0] == "kw")
        return ast.Call(func=".".join(qn[0]), args=pos, kwargs=kws, span=self._span(meta))

    def list_lit(self, meta, *items):
        return ast.ListLit(items=tuple(items), span=self._span(meta))

    def deriv(self, meta, expr, wrt):
        return ast.Deriv(expr=expr, wrt=wrt, span=self._span(meta))

    def _bin(op):
        def rule(self, meta, left, right):
            return ast.BinOp(op=op, left=left, right=right, span=self._span(meta))

        return rule

    add, sub, mul = _bin("+"), _bin("-"), _bin("*")
    div, matmul, pow = _bin("/"), _bin("@"), _bin("^")

    def neg(self, meta, operand):
        return ast.Neg(operand=operand, span=self._span(meta))

    def index(self, meta, base, *indices):
        return ast.Index(base=base, indices=tuple(indices), span=self._span(meta))

    def slice_all(self, meta):
        return None

    def transpose(self, meta, operand, _tok):
        return ast.Transpose(operand=operand, span=self._span(meta))
