"""Grammar fuzzing: any text either loads (parse, elaborate, translate) or raises `SpecError`.

Texts come from `hypothesis.extra.lark.from_lark` over the real grammar, in two flavours:
tokens glued together as drawn (mostly lexer and parser errors) and tokens separated by
spaces (mostly well-formed, so elaboration and translation get exercised), plus random
character edits of the valid `specs/mlp.snn`. Regex terminals get small strategies so that
sizes stay small and the pipeline stays fast.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.lark import LarkStrategy, from_lark
from lark import Lark
from lark.grammar import NonTerminal

from verifier.diagnostics import SpecError
from verifier.run import load

ROOT = Path(__file__).resolve().parent.parent
GRAMMAR_TEXT = (ROOT / "verifier" / "syntax" / "snn.lark").read_text()
GRAMMAR = Lark(GRAMMAR_TEXT, parser="lalr")
# the same grammar with inner rules as start symbols, to fill holes in a valid prelude
FRAGMENTS = Lark(GRAMMAR_TEXT, parser="lalr",
                 start=["start", "claim_decl", "derive_decl", "layer", "let_decl", "expr",
                        "comparison", "layer_arg"])
MLP = (ROOT / "specs" / "mlp.snn").read_text()

NAMES = ["x", "x", "s", "A", "w", "f", "g", "h", "n", "W1", "b1", "W2", "b2", "tanh", "sigmoid", "relu",
         "softplus", "leaky_relu", "identity", "dense", "sum", "grad", "jacobian", "hessian",
         "abs", "max", "exp", "log", "diag", "Diag", "transpose", "true", "false", "axis", "W",
         "b", "bias", "act", "out", "output", "gradient", "hessian_diagonal", "d"]
SMALL = {
    "NAME": st.sampled_from(NAMES),
    "INT": st.sampled_from(["0", "1", "2", "3"]),
    "NUMBER": st.sampled_from(["0", "1", "2", "3", "0.5", "0.375", "1e2", "2.5e-1", "10"]),
    "STRING": st.sampled_from(['"lib.snn"', '"spec.snn"', '"w.json"', '"w.npz"',
                               '"missing.snn"', '""', '"."']),
    "TRANSPOSE": st.just("^T"),
    "COMMENT": st.sampled_from(["# note", "#"]),
    "WS": st.sampled_from([" ", "\n", "\t"]),
}


def _terminals(lark: Lark, start: str) -> list:
    terminals, _, _ = lark.grammar.compile([start], ())
    return terminals


def _glued_terminals(lark: Lark, start: str = "start") -> dict[str, st.SearchStrategy[str]]:
    """Small strategies for the regex terminals that `start` can reach."""
    names = {t.name for t in _terminals(lark, start)}
    return {k: v for k, v in SMALL.items() if k in names}


def _padded_terminals(lark: Lark, start: str = "start") -> dict[str, st.SearchStrategy[str]]:
    """Every terminal (keywords and punctuation too) surrounded by spaces."""
    out = {}
    terminals = _terminals(lark, start)
    for t in terminals:
        if t.name in SMALL:
            base = SMALL[t.name]
        elif t.pattern.type == "str":
            base = st.just(t.pattern.value)
        else:
            base = st.from_regex(t.pattern.to_regexp(), fullmatch=True)
        out[t.name] = base.map(lambda s: f" {s} ")
    out["WS"] = st.just(" ")
    out["COMMENT"] = st.just(" # note\n")
    return out


GLUED = from_lark(GRAMMAR, explicit=_glued_terminals(GRAMMAR))
PADDED = from_lark(GRAMMAR, explicit=_padded_terminals(GRAMMAR))

# Declarations that generated claims, derivations, lets and layers can refer to.
PRELUDE = """\
input x : real[2] in [-1, 1]
input s : real
param A : real[2, 2]
param w : real[2] in [0, 1]
network f(in=2) {
  dense(3, tanh)
  dense(1)
}
network g(in=2) {
  dense(2, relu, W=[[1, 2], [0.5, -1]])
}
let h = f(x)
"""


class _ShallowLark(LarkStrategy):
    """`from_lark`'s strategy biased towards small texts: each rule takes its shortest
    expansion three times in four, and always below `max_depth` nested rules. Unbiased,
    expression rules recurse into more than one subexpression on average, so most draws
    overrun Hypothesis' buffer and generation slows to seconds per example."""

    def __init__(self, grammar: Lark, start: str, explicit, max_depth: int = 30):
        super().__init__(grammar, start, explicit, st.characters(codec="utf-8"))
        self.max_depth = max_depth
        self.depth = 0
        self.shortest = {name: strategy.elements[0]
                         for name, strategy in self.nonterminal_strategies.items()}

    def draw_symbol(self, data, symbol, draw_state):
        if not isinstance(symbol, NonTerminal):
            return super().draw_symbol(data, symbol, draw_state)
        if self.depth >= self.max_depth or data.draw(st.integers(0, 3)) > 0:
            expansion = self.shortest[symbol.name]
        else:
            expansion = data.draw(self.nonterminal_strategies[symbol.name])
        self.depth += 1
        try:
            for e in expansion:
                self.draw_symbol(data, e, draw_state)
                self.gen_ignore(data, draw_state)
        finally:
            self.depth -= 1


def _fragment(start: str) -> st.SearchStrategy[str]:
    return _ShallowLark(FRAGMENTS, start, _padded_terminals(FRAGMENTS, start))


LAYER, LET, CLAIM, DERIVE, EXPR, COMPARISON, LAYER_ARG = map(
    _fragment, ["layer", "let_decl", "claim_decl", "derive_decl", "expr", "comparison",
                "layer_arg"])
KINDS = ["output", "jacobian", "hessian", "hessian_diagonal", "gradient"]


@st.composite
def _layer(draw) -> str:
    """Mostly `dense(N, ACT, ...)` with generated extra arguments; sometimes a wholly
    generated layer."""
    if draw(st.integers(0, 5)) == 0:
        return draw(LAYER)
    args = [draw(st.sampled_from(["1", "2", "3"]))]
    if draw(st.booleans()):
        args.append(draw(st.sampled_from(["tanh", "relu", "sigmoid", "softplus", "identity",
                                          "leaky_relu(0.1)", "leaky_relu"])))
    args += draw(st.lists(st.one_of(st.sampled_from(["bias=false", "W in [-1, 1]"]),
                                    LAYER_ARG), max_size=1))
    return "dense(" + ", ".join(args) + ")"


@st.composite
def _item(draw, k: int) -> str:
    """A let, claim or derivation with a fresh name around generated expressions."""
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return draw(st.one_of(LET, CLAIM, DERIVE))
    if kind == 1:
        return f"let v{k} = " + draw(EXPR)
    if kind in (2, 3):
        where = draw(st.lists(COMPARISON, max_size=2))
        return (f"claim c{k}: " + draw(COMPARISON)
                + (" where " + ", ".join(where) if where else ""))
    wrt = draw(st.one_of(st.none(), st.sampled_from(["x", "x[0]", "f.W1", "f.b2", "w", "A"]),
                         EXPR))
    return (f"derive {draw(st.sampled_from(KINDS))} " + draw(EXPR)
            + (f" wrt {wrt}" if wrt is not None else ""))


@st.composite
def completed_prelude(draw) -> str:
    """The prelude plus generated lets, claims and derivations, and a generated network."""
    parts = [PRELUDE]
    layers = draw(st.lists(_layer(), min_size=0, max_size=3))
    if layers and draw(st.integers(0, 2)) == 0:
        parts.append("network n(in=2) {\n" + "\n".join(layers) + "\n}\n")
    n = draw(st.integers(1, 3))
    parts.extend(draw(_item(k)) for k in range(n))
    return "\n".join(parts) + "\n"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A directory with a spec to import and weight files for `load` to find."""
    d = tmp_path_factory.mktemp("fuzz")
    (d / "lib.snn").write_text("input x : real[2]\nparam p : real in [0, 1]\n")
    (d / "w.json").write_text('{"W1": [[0.5, 0.25]], "b1": [0.0]}\n')
    (d / "w.npz").write_bytes(b"not a zip archive")
    return d


def load_or_spec_error(workdir: Path, text: str) -> None:
    """The whole front end on `text`: only SpecError may escape, and it must render."""
    path = workdir / "spec.snn"
    path.write_text(text, encoding="utf-8")
    try:
        load(str(path))
    except SpecError as err:
        assert err.render().strip()


FUZZ = settings(max_examples=200, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                       HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])


@FUZZ
@given(text=GLUED)
def test_glued_grammar_texts(workdir, text):
    load_or_spec_error(workdir, text)


@FUZZ
@given(text=PADDED)
def test_spaced_grammar_texts(workdir, text):
    load_or_spec_error(workdir, text)


@settings(FUZZ, max_examples=300)
@given(text=completed_prelude())
def test_generated_claims_and_layers_over_a_valid_prelude(workdir, text):
    load_or_spec_error(workdir, text)


@st.composite
def mutated_mlp(draw) -> str:
    text = MLP
    alphabet = st.sampled_from(list("()[]{},:=+-*/@^.<>!#\"\n 0123456789xfWbdT_") + ["^T"])
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["delete", "insert", "replace"]))
        if op == "delete":
            n = draw(st.integers(1, 3))
            text = text[:pos] + text[pos + n:]
        elif op == "insert":
            text = text[:pos] + draw(alphabet) + text[pos:]
        else:
            text = text[:pos] + draw(alphabet) + text[pos + 1:]
    return text


@settings(FUZZ, max_examples=200)
@given(text=mutated_mlp())
def test_mutated_mlp(workdir, text):
    load_or_spec_error(workdir, text)


@settings(FUZZ, max_examples=100)
@given(text=st.text(alphabet=st.characters(codec="utf-8"), max_size=40))
def test_arbitrary_text(workdir, text):
    load_or_spec_error(workdir, text)


def test_the_unmutated_spec_loads(workdir):
    (workdir / "spec.snn").write_text(MLP)
    model = load(str(workdir / "spec.snn"))
    assert len(model.obligations) == 3
