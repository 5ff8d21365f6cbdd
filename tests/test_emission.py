"""Artifacts in CSE form: every named quantity once, long definitions in named parts, lines
within the bound, size linear in the program.

Oracles: PyTorch (the emitted JSON program, read by the small evaluator below, against
torch.autograd at a random point), coqc (the Coq file's CSE functor compiles), and the
emitted text itself (line lengths, characters per program operation).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from spec_oracle import random_point, write
from tools import coqc as _coqc

from verifier import run
from verifier.elaborate import elaborate
from verifier.emit import coq, json_export, latex, lean, smtlib
from verifier.emit.templating import LINE_WIDTH
from verifier.obligations import build_model
from verifier.symbolic import program as program_module

torch = pytest.importorskip("torch")
from test_attention import TorchTransformer, transformer_spec  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# ---- a small evaluator for the JSON export's expressions (sympy's str form) ----------------

_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d+)?)|(\*\*|[-+*/(),])|"
                    r"([A-Za-z_](?:[A-Za-z0-9_.:'#]|\[[0-9, ]*\])*))")
_FUNCTIONS = {
    "tanh": math.tanh, "exp": math.exp, "log": math.log, "sqrt": math.sqrt,
    "relu": lambda x: max(x, 0.0), "step": lambda x: 1.0 if x > 0 else 0.0,
    "sigmoid": lambda x: 1 / (1 + math.exp(-x)), "Abs": abs, "Max": max, "Min": min,
}


def _tokens(text: str) -> list:
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        assert m and m.end() > pos, f"cannot read {text[pos:pos + 40]!r}"
        out.append(m.groups())
        pos = m.end()
        while pos < len(text) and text[pos] == " ":
            pos += 1
    return out


def evaluate(text: str, env: dict) -> float:
    """The value of one expression of the export: + - * / ** with sympy's precedence,
    function applications, names looked up in `env`."""
    toks, k = _tokens(text), 0

    def peek():
        return toks[k] if k < len(toks) else (None, None, None)

    def take():
        nonlocal k
        k += 1
        return toks[k - 1]

    def expr():
        v = term()
        while peek()[1] in ("+", "-"):
            v = v + term() if take()[1] == "+" else v - term()
        return v

    def term():
        v = unary()
        while peek()[1] in ("*", "/"):
            v = v * unary() if take()[1] == "*" else v / unary()
        return v

    def unary():
        if peek()[1] == "-":
            take()
            return -unary()
        return power()

    def power():
        v = atom()
        if peek()[1] == "**":
            take()
            return v ** unary()
        return v

    def atom():
        num, op, name = take()
        if num is not None:
            return float(num)
        if op == "(":
            v = expr()
            assert take()[1] == ")"
            return v
        if peek()[1] == "(" and name in _FUNCTIONS:
            take()
            args = [expr()]
            while peek()[1] == ",":
                take()
                args.append(expr())
            assert take()[1] == ")"
            return _FUNCTIONS[name](*args)
        return env[name]

    v = expr()
    assert k == len(toks), text
    return v


def _program_values(data: dict, leaves: dict) -> dict:
    env = dict(leaves)
    for name, text in data["cse"]:
        env[name] = evaluate(text, env)
    return env


def _nested(terms, env):
    if isinstance(terms, list):
        return [_nested(t, env) for t in terms]
    return evaluate(terms, env)


# ---- the emitted program evaluates like the network ----------------------------------------

CFG = {"T": 3, "d": 4, "heads": 2, "hessian": True}


@pytest.fixture
def small_transformer(tmp_path, monkeypatch):
    """The base transformer of test_attention with its Hessian, and parts forced by a narrow
    width (every definition of more than 40 characters is split)."""
    monkeypatch.setattr(program_module, "WIDTH", 40)
    spec = elaborate(write(tmp_path, transformer_spec(CFG)))
    return spec, build_model(spec)


def test_json_program_in_parts_evaluates_like_torch(small_transformer):
    spec, model = small_transformer
    (text,) = json_export.emit(model, []).values()
    data = json.loads(text)
    assert any("'part" in name for name, _ in data["cse"])  # the narrow width split some
    assert all(len(expr) < 400 for _, expr in data["cse"])
    point, arrays = random_point(spec, seed=5)
    env = _program_values(data, {s.name: float(v) for s, v in point.items()})
    ref = TorchTransformer(CFG, arrays)
    X = torch.tensor(arrays["X"], dtype=torch.float64, requires_grad=True)
    with sdpa_kernel(SDPBackend.MATH):
        out = ref(X)
        jac = torch.autograd.functional.jacobian(ref, X).reshape(len(out), -1)
        hess = torch.autograd.functional.hessian(lambda x: ref(x)[0], X).reshape(12, 12)
    terms = data["derivations"]
    for name, want in (("output", out.detach().numpy()), ("jacobian", jac.numpy()),
                       ("hessian", hess.numpy())):
        got = _nested(terms[name]["terms"], env)
        np.testing.assert_allclose(np.array(got, dtype=float), want, rtol=1e-8, atol=1e-9,
                                   err_msg=name)


def test_coq_cse_functor_compiles(tmp_path, monkeypatch):
    """Every entry in CSE form (nothing inlined), with parts: coqc compiles the file."""
    exe = _coqc()
    if exe is None:
        pytest.skip("coqc not installed")
    monkeypatch.setattr(program_module, "WIDTH", 40)
    monkeypatch.setattr(json_export, "INLINE_OPS", 0)
    cfg = {"T": 2, "d": 2, "heads": 1, "ff": 3, "ff_act": "tanh"}
    model = build_model(elaborate(write(tmp_path, transformer_spec(cfg))))
    (name, text), = coq.emit(model, [], coqc=None).items()
    assert "Module snn_cse (L : snn_leaves)." in text and "part" in text
    assert "Definition jacobian_0_0 : R :=" in text
    (tmp_path / name).write_text(text)
    res = subprocess.run([exe, name], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, check=False)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    (lean_text,) = lean.emit(model, []).values()
    assert "structure snn_leaves where" in lean_text
    assert "def jacobian_0_0 (snn_p : snn_leaves) : ℝ :=" in lean_text


# ---- sizes: lines within the bound, characters linear in the program -----------------------


def _long_lines(text: str, comment: str) -> list[str]:
    """Lines over the bound, other than comment lines (prose, kept whole for the readers
    of the files) and single tokens."""
    return [ln for ln in text.split("\n") if len(ln) > LINE_WIDTH
            and not ln.lstrip().startswith(comment) and " " in ln.strip()]


@pytest.fixture(scope="module")
def transformer_files():
    model = run.load(str(ROOT / "specs" / "transformer.snn"))
    files = {}
    for module in (coq, lean, json_export, latex):
        files.update(module.emit(model, []))
    for ob in model.obligations:
        files[ob.name + ".smt2"] = smtlib.encode(ob, model.program).text
    return files


def test_transformer_lines_within_the_bound(transformer_files):
    comments = {".v": "(*", ".lean": "--", ".tex": "%", ".json": "\0", ".smt2": ";"}
    for name, text in transformer_files.items():
        long = _long_lines(text, comments[Path(name).suffix])
        assert not long, (name, len(long), long[0][:300])
    assert max(len(t) for t in transformer_files.values()) < 64 << 20


def _dense_model(tmp_path, n: int):
    text = (f"input x : real[{n}]\nnetwork f(in={n}) {{\n  dense({n}, tanh)\n  dense({n}, tanh)"
            "\n  dense(1)\n}\nderive output f(x)\nderive jacobian f(x) wrt x\n"
            "derive hessian f(x)[0] wrt x\n")
    return build_model(elaborate(write(tmp_path, text, f"dense{n}")))


def test_emitted_characters_grow_linearly_with_the_program(tmp_path, monkeypatch):
    """Characters per program operation stay within a factor 2 from width 4 to width 16 (the
    Hessian's program grows about 20-fold): each quantity is printed once, in every format."""
    monkeypatch.setattr(json_export, "INLINE_OPS", 0)  # the CSE form for every entry
    ratios = []
    for n in (4, 8, 16):
        model = _dense_model(tmp_path, n)
        prog = model.program
        terms = [t for d in model.derivations for _, t in json_export.flatten(d.terms)]
        ops = sum(sp.count_ops(e) + 1 for _, e in prog.slice(terms))
        chars = 0
        for module in (coq, lean, json_export, latex):
            kw = {"coqc": None} if module is coq else {}
            chars += sum(len(t) for t in module.emit(model, [], **kw).values())
        ratios.append(chars / ops)
    assert max(ratios) < 2 * min(ratios), ratios


def test_inlined_size_refuses_large_terms_without_walking_them(tmp_path):
    """The estimate behind the choice inline / CSE: exact for a small term, None for a large
    one, and the large one is decided after looking at few definitions."""
    model = _dense_model(tmp_path, 16)
    prog = model.program
    hess = next(d for d in model.derivations if d.kind == "hessian")
    entry = hess.terms[0][0]
    assert prog.inlined_size(entry, 500) is None
    assert len(prog._estimate) < 200  # noqa: SLF001 - the walk stopped early
    small = next(s for s in prog.order if prog.deps(s))
    inl = prog.inline(small, None)
    assert prog.inlined_size(small, 10_000) >= sp.count_ops(inl)
