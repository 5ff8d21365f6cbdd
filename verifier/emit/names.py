"""Names and free text for every target, sanitised in one place.

Whatever reaches an emitted artifact from the user (the spec's file name, the model name taken
from it, input, parameter, network and claim names, the claim's source text, reasons that quote
it) goes through one function here, chosen by target and by position:

- identifiers (Coq, Lean): `NameMap` over `ident`, which keeps letters, digits and `_`; a
  clash with a keyword, with a name our own text refers to (the prelude's definitions and
  lemmas, the library names the printers and proof scripts use) or with an earlier name gets a
  `'k` suffix, which no sanitised name has, so mangled names never collide;
- comments: `coq_comment_text`, `lean_comment_text`, `smt_comment_text`: one line, with the
  target's comment delimiters broken up;
- LaTeX text: `tex_text` (every special character escaped);
- SMT-LIB symbols: `smt_symbol` (quoted `|...|`, with `|`, `\\` and unprintable characters
  escaped injectively).

All of them first pass the text through `printable`: newlines and other line breaks become
spaces, and control, format (bidirectional overrides), surrogate and unassigned characters
become visible escapes, so that no file name can end a comment line or hide text.
"""

from __future__ import annotations

import os
import re
import unicodedata
from functools import cache

from .templating import template_dir

# ---------------------------------------------------------------- text


def _escape_char(c: str) -> str:
    n = ord(c)
    if 0xDC80 <= n <= 0xDCFF:  # a byte of a file name that is not UTF-8 (surrogateescape)
        return f"\\x{n - 0xDC00:02x}"
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def printable(text) -> str:
    """One line of printable text: runs of whitespace (line breaks included) become one space;
    control, format, surrogate, private-use and unassigned characters become `\\xNN`-style
    escapes (bidirectional overrides cannot reorder what a reader sees)."""
    text = str(text)
    if text.isascii() and text.isprintable():  # the common case: nothing to escape
        return " ".join(text.split())
    out = []
    for c in text:
        if c.isspace():
            out.append(" ")
        elif unicodedata.category(c)[0] == "C":
            out.append(_escape_char(c))
        else:
            out.append(c)
    return " ".join("".join(out).split())


def encodable(text) -> str:
    """`text` with surrogates (bytes of a file name that is not UTF-8) as `\\xNN` escapes, so
    that it can be written as UTF-8; everything else unchanged (for JSON, which escapes the
    rest itself)."""
    return "".join(_escape_char(c) if unicodedata.category(c) == "Cs" else c for c in str(text))


def file_label(path) -> str:
    """The base name of a file for a header line, printable (the directory is never shown)."""
    return printable(os.path.basename(os.fspath(path))) if path else "(none)"


def _pad(text: str, starts: str, ends: str) -> str:
    """A space before a leading / after a trailing character that could join a delimiter
    with the text around the fragment."""
    if text[:1] and text[0] in starts:
        text = " " + text
    if text[-1:] and text[-1] in ends:
        text = text + " "
    return text


def coq_comment_text(text) -> str:
    """Text for inside `(* ... *)`: no `(*` or `*)` (nor a `*` or parenthesis at either end
    that could form one with the text around it), and no `"` (Coq lexes strings inside
    comments, so a lone quote would swallow the closing `*)`)."""
    s = printable(text).replace('"', "''")
    s = s.replace("(*", "( *").replace("*)", "* )")
    return _pad(s, "*)", "(*")


def lean_comment_text(text) -> str:
    """Text for a `--` line comment (also safe inside `/- ... -/`): one line, with `/-`, `-/`
    and `--` broken up."""
    s = re.sub(r"-(?=[-/])", "- ", printable(text))
    s = re.sub(r"/(?=-)", "/ ", s)
    return _pad(s, "-/", "-/")


def smt_comment_text(text) -> str:
    """Text for a `;` line comment in SMT-LIB: one line of printable characters."""
    return printable(text)


# ---------------------------------------------------------------- LaTeX

_TEX_ESCAPES = {
    "\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#",
    "^": r"\textasciicircum{}", "_": r"\_", "%": r"\%", "~": r"\textasciitilde{}",
    "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
}


def tex_text(text) -> str:
    """User text for LaTeX text mode (also inside a `%` comment): printable, every special
    character escaped, characters beyond Latin-1 (which pdfLaTeX's T1 fonts lack) as `U+XXXX`."""
    return "".join(_TEX_ESCAPES.get(c, c) if ord(c) < 0x100 else f"U+{ord(c):04X}"
                   for c in printable(text))


# ---------------------------------------------------------------- SMT-LIB


# z3 reads these as keywords even when quoted (`|as|`, `|true|`: found by declaring every
# symbol-like string of libz3 quoted), and SMT-LIB's reserved words; a name starting with `!`
# crashed z3 (`|!partial_eq|`)
SMT_RESERVED = frozenset("""
_ ! && as and or distinct true false BINARY DECIMAL HEXADECIMAL NUMERAL STRING exists forall
let match par
""".split())  # noqa: SIM905 - a word list reads best as text


def smt_symbol(name: str) -> str:
    """A quoted SMT-LIB symbol `|...|` for any name, injectively: `|` and `\\` (which a quoted
    symbol cannot hold), `%`, line breaks and unprintable characters become `%<hex>;`, and so
    does the first character of a reserved word or a leading `!`."""
    def keep(c: str) -> bool:
        return c == " " or (c not in "|\\%" and not c.isspace()
                            and unicodedata.category(c)[0] != "C")
    out = "".join(c if keep(c) else f"%{ord(c):x};" for c in name)
    if name in SMT_RESERVED or name.startswith("!"):
        out = f"%{ord(name[0]):x};{out[1:]}"
    return "|" + out + "|"


# ---------------------------------------------------------------- identifiers


def ident(name: str) -> str:
    """`f.W1[2,3]` -> `f_W1_2_3`: letters, digits and `_`, starting with a letter (valid in Coq
    and Lean 4; not injective, so `NameMap` resolves clashes)."""
    s = re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_]+", "_", name)).strip("_")
    return s if s[:1].isalpha() else ("v_" + s).rstrip("_")


class NameMap:
    """Deterministic, collision-free identifiers: `ident`; on a clash with an earlier name, a
    reserved word or our `snn_` prefix, append `'2`, `'3`, ... (`ident` never yields a `'`)."""

    def __init__(self, reserved: frozenset):
        self.reserved, self.taken, self.used = reserved, {}, set()

    def name(self, key, text: str) -> str:
        hit = self.taken.get(key)
        if hit is not None:
            return hit
        base = cand = ident(text)
        k = 1
        while cand in self.used or cand in self.reserved or (k == 1 and cand.startswith("snn_")):
            k += 1
            cand = f"{base}'{k}"
        self.taken[key] = cand
        self.used.add(cand)
        return cand


@cache
def defined_in_template(name: str) -> frozenset:
    """The names a template defines (Definition, Lemma, Ltac, Instance, def, theorem, ...),
    so that a user name never shadows the prelude."""
    text = (template_dir() / name).read_text(encoding="utf-8")
    return frozenset(re.findall(
        r"^\s*(?:Global\s+)?(?:Definition|Lemma|Theorem|Ltac|Instance|Fixpoint|def|theorem|"
        r"lemma|abbrev|instance)\s+([A-Za-z_][A-Za-z0-9_']*)", text, flags=re.MULTILINE))


# Coq 8.16's lexer refuses these as identifiers once Reals, Coquelicot and Interval are loaded
# (found by defining each identifier-like string of coqc, its plugins and these libraries).
COQ_KEYWORDS = frozenset("""
_ Axiom CoFixpoint Definition Fixpoint Hypothesis Parameter Prop SProp Set Theorem Type
Variable as at by cofix else end exists exists2 fix for forall fun if in let match mod return
then using where with
""".split())  # noqa: SIM905 - a word list reads best as text

# Names the printed terms, statements and proof scripts refer to (a binder of that name would
# capture them), vernacular words, and the libraries the file loads.
COQ_GLOBALS = frozenset("""
IF Lemma Proof Qed Admitted Defined Require Import Export Open Scope Section End Let Ltac Goal
Instance Global Local Module Notation Print Assumptions Check
R I O S nat bool True False and or not eq exp ln tanh sinh cosh sqrt Rabs Rmax Rmin Rpower PI
IZR INR Rplus Rmult Rminus Rdiv Ropp Rinv pow is_derive ex_derive Derive locally mkposreal
Rle_dec Rlt_dec Rge_dec Rgt_dec Req_EM_T Rinv_mult is_derive_ext is_derive_ext_loc
is_derive_plus is_derive_minus is_derive_const filter_and filter_imp not_eq_sym Rtotal_order
Rdichotomy Rabs_lt_between exp_pos exp_Ropp exp_plus ln_1 ln_increasing sqrt_lt_R0
Rgt_not_eq Rplus_lt_0_compat Rmult_lt_0_compat Rinv_0_lt_compat pow_lt Rabs_right Rabs_left1
Rmax_left Rmax_right Rcase_abs UnaryDiff UnaryDiff' i_bisect
Reals Lra Coquelicot Interval Tactic Coq
""".split())  # noqa: SIM905

LEAN_KEYWORDS = frozenset("""
fun let in have show from at by do then else if match with where open import theorem lemma def
example instance structure class inductive axiom abbrev opaque extends end namespace section
variable universe Type Prop Sort deriving mutual for unless return try catch finally break
continue mut calc suffices obtain nomatch nofun this sorry local private protected scoped
noncomputable partial unsafe macro macro_rules syntax notation infix infixl infixr prefix
postfix attribute set_option omit include export using termination_by decreasing_by forall
exists fun_prop as
""".split())  # noqa: SIM905

LEAN_GLOBALS = frozenset("""
true false True False Nat Int Real Set HasDerivAt max min abs exp log tanh sqrt pi Icc
""".split())  # noqa: SIM905


@cache
def coq_reserved() -> frozenset:
    """Every name a user identifier must not take in the Coq file."""
    return COQ_KEYWORDS | COQ_GLOBALS | defined_in_template("coq.v.j2")


@cache
def lean_reserved() -> frozenset:
    """Every name a user identifier must not take in the Lean file."""
    return LEAN_KEYWORDS | LEAN_GLOBALS | defined_in_template("lean.lean.j2")
