"""Hostile names and file names cannot change what an emitted artifact says.

Specs are written under file names that try to close a comment and declare an axiom in Coq
(`*)`), Lean (a newline, `--`), LaTeX (`\\immediate`, `$`, `%`) or SMT-LIB (a newline), with
control characters and bytes that are not UTF-8, and with inputs and claims named by keywords
of every target (`by`, `at`, `fun`, `Type`, `end`, `as`, `true`, ...). `verify SPEC -o DIR`
is run on each, and the artifacts are checked by the tools that read them: coqc compiles every
`.v` file, and `Print Assumptions` on every proved lemma shows only the axioms of Coq's own
libraries (never `pwn`); z3 parses every `.smt2` file and answers `unsat` where the claim was
proved; the code of the Coq, Lean, LaTeX and SMT-LIB files outside comments is the same as for
a harmless file name, and names appear in headers only in escaped form.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import z3
from tools import coqc as _coqc

from verifier.cli import main

EMIT = "smtlib,coq,lean,json,latex"

# A spec whose claims are all proved, with Coq proofs (field, auto_derive) closed by Qed.
SPEC = """\
input x : real in [-1, 1]
param w : real in [0, 1]
claim sum: relu(x) + w == w + relu(x)
claim slope: d(tanh(x * w))/d(x) == w * (1 - tanh(x * w)^2)
"""

HOSTILE_FILE_NAMES = {
    "coq_comment": "x*) Axiom pwn : False. (*.snn",
    "coq_string": 'q" *) Axiom pwn : False. (* ".snn',
    "coq_open_comment": "(* (*.snn",
    "trailing_star": "y*.snn",
    "newline": "n\nAxiom pwn : False.\naxiom pwn : False\n(assert false)\n"
               "\\immediate\\write18{pwn}\n--.snn",
    "lean_comment": "--- pwn : False --.snn",  # `/` (for `-/`) cannot be in a file name
    "tex_specials": "a$b\\c|d%e&f#g^h_i~j{k}<l>m\\def\\pwn{}.snn",
    "controls": "c\r\x0b\x0c\x1b[2K\u2028\u2029\u202e\x85\x7fx Axiom pwn : False..snn",
    "not_utf8": os.fsdecode(b"bad\xff\xfe*) Axiom pwn : False. (*.snn"),
    "odd_quote": 'q.x"y',  # the model name (the stem) has no quote, the file name one
}

# Axioms of Coq's standard library that the Reals library and the interval tactic's
# primitive floats and integers rest on; anything else in `Print Assumptions` is an intruder.
STANDARD_AXIOM_MODULES = frozenset({
    "ClassicalDedekindReals", "FunctionalExtensionality", "Classical_Prop", "PrimInt63",
    "PrimFloat", "Uint63", "FloatAxioms",
})




def _verify(spec: Path, out: Path, capsys) -> dict:
    code = main([str(spec), "-o", str(out), "--emit", EMIT, "--json", "-j", "1", "--no-cache"])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    report = json.loads(captured.out)
    assert code == report["exit"] == 0, captured.err
    return report["specs"][0]


def _artifacts(out: Path) -> dict[str, str]:
    return {p.suffix: p.read_text(encoding="utf-8") for p in out.iterdir()
            if p.suffix in (".v", ".lean", ".tex", ".json")}


def _smt2(out: Path) -> dict[str, str]:
    """.smt2 texts by obligation (the last dotted part before the suffix)."""
    return {p.name.split(".")[-2]: p.read_text(encoding="utf-8") for p in out.glob("*.smt2")}


def coq_code(text: str) -> str:
    """The text outside comments, lexed as Coq does: comments nest, and strings are lexed
    inside comments too (so `"*)"` does not close one)."""
    out, i, depth = [], 0, 0
    while i < len(text):
        two = text[i:i + 2]
        if two == "(*":
            depth, i = depth + 1, i + 2
            continue
        if depth and two == "*)":
            depth, i = depth - 1, i + 2
            continue
        if text[i] == '"':
            j = i + 1
            while True:
                j = text.index('"', j)  # ValueError: an unterminated string
                if text[j + 1:j + 2] != '"':
                    break
                j += 2
            if not depth:
                out.append(text[i:j + 1])
            i = j + 1
            continue
        if not depth:
            out.append(text[i])
        i += 1
    assert depth == 0, "a comment is not closed"
    return "".join(out)


def proved_lemmas(text: str) -> list[str]:
    """The obligation lemmas (`Lemma NAME :`) closed by Qed."""
    return [m[1] for m in re.finditer(r"^Lemma (\S+) :\n.*?^(Qed|Admitted)\.$", text,
                                      re.MULTILINE | re.DOTALL) if m[2] == "Qed"]


def assumptions(coqc: str, tmp: Path, name: str, text: str, lemmas: list[str]) -> list[str]:
    """The axioms `Print Assumptions` lists for `lemmas`, with the file compiled by coqc."""
    tmp.mkdir()
    probe = text + "".join(f"Print Assumptions {lem}.\n" for lem in lemmas)
    (tmp / name).write_text(probe, encoding="utf-8")
    res = subprocess.run([coqc, name], cwd=tmp, capture_output=True, text=True, timeout=600,
                         check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "pwn" not in res.stdout
    heads = res.stdout.count("Axioms:") + res.stdout.count("Closed under the global context")
    assert heads == len(lemmas), res.stdout
    return [line.split(" ")[0] for line in res.stdout.splitlines()
            if line and not line[0].isspace() and line != "Axioms:"
            and not line.startswith("Closed under")]


def check_coq(coqc, tmp: Path, name: str, text: str, at_least: int) -> None:
    lemmas = proved_lemmas(text)
    assert len(lemmas) >= at_least, lemmas
    for ax in assumptions(coqc, tmp, name, text, lemmas):
        assert ax.split(".")[0] in STANDARD_AXIOM_MODULES, ax


def check_z3(report: dict) -> None:
    """z3 parses every .smt2 file; a claim proved through z3 is unsat."""
    files = [ob for ob in report["obligations"] if ob.get("smt2_file")]
    assert files
    for ob in files:
        solver = z3.Solver()
        solver.set("timeout", 60_000)
        solver.from_string(Path(ob["smt2_file"]).read_text(encoding="utf-8"))
        answer = str(solver.check())
        if ob["smt_answer"] in ("sat", "unsat"):
            assert answer == ob["smt_answer"], ob["name"]
        if ob["verdict"] == "proved" and ob["engine"] in ("z3", "z3-abstraction"):
            assert answer == "unsat", ob["name"]


_TEX_ESCAPE = re.compile(r"\\(?:textbackslash|textasciicircum|textasciitilde|textless|"
                         r"textgreater|textbar)\{\}|\\[{}$&#_%]")


def assert_tex_escaped(fragment: str) -> None:
    """A LaTeX text fragment: no special character outside an escape."""
    assert not re.search(r"[\\{}$&#^_%~]", _TEX_ESCAPE.sub("", fragment)), fragment


def _lean_code(text: str, namespace: str) -> list[str]:
    """The lines outside `--` comments, with the namespace's name replaced by NS."""
    return [re.sub(rf"^(namespace|end) {re.escape(namespace)}$", r"\1 NS", ln)
            for ln in text.splitlines() if not ln.startswith("--")]


@pytest.fixture(scope="module")
def benign(tmp_path_factory):
    """The artifacts of SPEC under a harmless file name."""
    d = tmp_path_factory.mktemp("benign")
    (d / "plain.snn").write_text(SPEC, encoding="utf-8")
    out = d / "out"
    code = main([str(d / "plain.snn"), "-o", str(out), "--emit", EMIT, "-q", "-j", "1",
                 "--no-cache"])
    assert code == 0
    return _artifacts(out), _smt2(out)


@pytest.mark.parametrize("file_name", list(HOSTILE_FILE_NAMES.values()),
                         ids=list(HOSTILE_FILE_NAMES))
def test_hostile_file_names(file_name, tmp_path, capsys, benign):
    spec = tmp_path / file_name
    try:
        spec.write_text(SPEC, encoding="utf-8")
    except (OSError, UnicodeEncodeError) as exc:  # a file system that refuses the bytes
        pytest.skip(f"cannot create the file: {exc}")
    out = tmp_path / "out"
    report = _verify(spec, out, capsys)
    produced, smt = _artifacts(out), _smt2(out)
    ok, ok_smt = benign
    assert sorted(produced) == sorted(ok)

    # Coq: the same code outside comments as under a harmless name; no extra axiom
    v_file = next(out.glob("*.v"))
    assert coq_code(produced[".v"]) == coq_code(ok[".v"])
    assert "pwn" not in coq_code(produced[".v"])
    coqc = _coqc()
    if coqc is not None:
        check_coq(coqc, tmp_path / "coq", v_file.name, produced[".v"], at_least=2)

    # Lean: the name only inside `--` lines, with no block-comment delimiter there
    namespace = next(out.glob("*.lean")).stem
    lean = produced[".lean"]
    assert _lean_code(lean, namespace) == _lean_code(ok[".lean"], "plain")
    for line in lean.splitlines():
        if line.startswith("--"):
            assert "/-" not in line and "-/" not in line, line
        assert "pwn" not in line.replace(f" {namespace}", " NS") or line.startswith("--"), line

    # LaTeX: the `%` header is one line; the title shows the name escaped
    tex, ok_tex = produced[".tex"].splitlines(), ok[".tex"].splitlines()
    assert len(tex) == len(ok_tex)
    for line, ok_line in zip(tex, ok_tex, strict=True):
        if line.startswith(r"\title{"):
            m = re.fullmatch(r"\\title\{Model \\texttt\{(.*)\}: closed forms and verdicts\}", line)
            assert m is not None, line
            assert_tex_escaped(m[1])
        elif line.startswith("%"):
            assert_tex_escaped(line[1:].split(": generated by snn-verify from ", 1)[1])
        else:
            assert line == ok_line
    assert r"\immediate" not in produced[".tex"] and r"\def\pwn" not in produced[".tex"]

    # SMT-LIB: file names never reach the queries; z3 reads every file
    assert smt == ok_smt
    check_z3(report)

    # JSON: parses, and names the spec file exactly (bytes that are not UTF-8 escaped)
    data = json.loads(produced[".json"])
    if os.fsencode(spec.name).decode("utf-8", "replace") == spec.name:
        assert data["source"] == spec.name
        assert data["model"] == os.path.splitext(file_name)[0]
    else:
        assert data["source"].encode("utf-8")
    for key in ("input_symbols", "parameter_symbols", "obligations", "cse"):
        assert data[key] == json.loads(ok[".json"])[key]


# Keywords of Coq, Lean 4 and SMT-LIB / z3 and names our files use, as inputs and claims.
HOSTILE_NAMES = """
by at fun Type end Prop Set match with let in as if then else return struct fix cofix exists
Definition Lemma forall have show from do namespace theorem def Axiom Qed Proof using where mod
true and or distinct exp Rlt_dec R relu sigmoid is_derive snn_side Real sorry this i_bisect
""".split()  # noqa: SIM905 - a word list reads best as text

LEAN_KEYWORDS = frozenset("""
by at fun Type end Prop Set match with let in as if then else return have show from do
namespace theorem def forall exists sorry this where
""".split())  # noqa: SIM905 - a word list reads best as text


def _keyword_spec() -> str:
    lines = [f"input {w} : real in [-1, 1]" for w in HOSTILE_NAMES]
    total = " + ".join(HOSTILE_NAMES)
    lines += [
        f"claim Lemma: {total} == {' + '.join(reversed(HOSTILE_NAMES))}",
        "claim theorem: d(tanh(by * at))/d(by) == at * (1 - tanh(by * at)^2)",
        "claim end: d(tanh(fun))/d(fun) == 1 - tanh(fun)^2",
        "claim def: by * by + at <= 3",
        "claim as: tanh(Type) * tanh(true) > -1",
    ]
    return "\n".join(lines) + "\n"


def test_keywords_as_names(tmp_path, capsys):
    spec = tmp_path / "keywords.snn"
    spec.write_text(_keyword_spec(), encoding="utf-8")
    out = tmp_path / "out"
    report = _verify(spec, out, capsys)
    assert {ob["verdict"] for ob in report["obligations"]} == {"proved"}
    check_z3(report)
    coqc = _coqc()
    if coqc is not None:
        v = out / "keywords.v"
        check_coq(coqc, tmp_path / "coq", v.name, v.read_text(encoding="utf-8"), at_least=3)
    lean = (out / "keywords.lean").read_text(encoding="utf-8")
    binders = re.findall(r"^theorem (\S+)(?: \(([^:)]*) : ℝ\))?", lean, re.MULTILINE)
    binders += [("", b) for b in re.findall(r"fun (\S+) : ℝ =>", lean)]
    binders += [("", b) for b in re.findall(r"∀ (\S+) ∈", lean)]
    assert len(binders) >= 5
    for name, params in binders:
        for tok in [name, *params.split()]:
            assert tok not in LEAN_KEYWORDS, tok
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_']*", tok or "x"), tok


def test_a_name_outside_the_grammar_is_a_spec_error(tmp_path):
    """`λ` is no identifier of the spec language: exit status 2 with a located message."""
    spec = tmp_path / "lam.snn"
    spec.write_text("input λ : real in [0, 1]\nclaim c: λ >= 0\n", encoding="utf-8")
    res = subprocess.run([sys.executable, "-m", "verifier", str(spec), "-q"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr and "lam.snn:1:" in res.stderr
