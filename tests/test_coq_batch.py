"""Coq lemmas for the batch backprop library (specs/batch), compiled by coqc.

Every equation of the library, at every instantiated size, is emitted as Coq lemmas (one per
entry of the equation: `is_derive` of the loss `sum(DY * Y)` in that entry, or one conjunction
for a plain identity) and each must be closed by `Qed`, except the claims in OPEN, whose lemmas
are `Admitted` with a comment saying why and which engine proved the claim. Every emitted file
must compile. Wrong variants are refuted, so they get no lemma; told (falsely) that a wrong
variant was proved, the emitter still writes no proof script for it: its pre-checks reject
every one.

coqc runs once per layer file, two files at a time. The softmax files are compiled only when
SNN_COQ_SLOW=1: auto_derive alone needs about 15 s for one entry of a softmax
layer's DW at N=4, D=2, K=3 (the loss is a sum over the batch of logs of sums of exps), and
the file has over 200 such lemmas; their Qed proofs are still checked by the parse below.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from test_batch_backprop import FILES, _base, _check, _claim, _path

from verifier import run
from verifier.emit import coq
from verifier.engines.verdict import PROVED, Verdict

SLOW = frozenset({"softmax.snn", "colwise/softmax.snn"})


def _compile_slow() -> bool:
    return os.environ.get("SNN_COQ_SLOW") == "1"


# Claims whose lemmas stay Admitted: srelu_DZ differentiates a sum of N*K builtin srelu terms
# (piecewise definitions) in one entry; the scalar srelu lemmas are Qed by freezing the
# decisions near the point (is_derive_ext_loc), but with the other entries' decisions in the
# goal the case analysis exhausts coqc's memory. The claim is proved by z3; the srelu layer
# itself, written with relu, is Qed.
OPEN = frozenset({"srelu_DZ"})

# Wrong variants that differ from their equation only at a kink: a derivative lemma is always
# stated where the ReLU-style pre-activations are nonzero (where the function is
# differentiable), so its Coq statement holds and is proved; the claim as written is refuted
# at the kink by the identity engine, and a refuted claim gets no lemma.
KINK_ONLY = frozenset({"relu_DZ_nerva__no_side_condition"})

_OBLIGATION = re.compile(r"^\(\* obligation (\S+) \(", re.M)
_LEMMA = re.compile(r"^Lemma (\S+) :\n(?:.*\n)*?(Qed|Admitted)\.$", re.M)


def _coqc() -> str | None:
    path = shutil.which("coqc")
    if path is None and os.environ.get("CI") == "true":
        pytest.fail("coqc is required in CI (apt-get install coq libcoq-coquelicot "
                    "libcoq-interval)")
    return path


def _blocks(text: str) -> dict[str, list[tuple[str, str]]]:
    """obligation name -> [(lemma, "Qed" | "Admitted")] in the order written."""
    starts = [(m.start(), m.group(1)) for m in _OBLIGATION.finditer(text)]
    out = {}
    for k, (pos, name) in enumerate(starts):
        end = starts[k + 1][0] if k + 1 < len(starts) else len(text)
        out[name] = [(m.group(1), m.group(2)) for m in _LEMMA.finditer(text[pos:end])]
    return out


@pytest.fixture(scope="module")
def emitted(tmp_path_factory):
    """{layer file: (model, .v text, coqc result or None)}, every file compiled."""
    out_dir = tmp_path_factory.mktemp("coq_batch")
    files = {}
    for name in FILES:
        model = run.load(_path(name))
        verdicts = list(_check(model, model.obligations).values())
        (vname, text), = coq.emit(model, verdicts, coqc=None).items()
        folder = out_dir / name.replace("/", "_").removesuffix(".snn")
        folder.mkdir()
        (folder / vname).write_text(text, encoding="utf-8")
        files[name] = (model, text, folder, vname)
    coqc = _coqc()

    def compile_one(item):
        _, _, folder, vname = item
        return subprocess.run([coqc, vname], cwd=folder, capture_output=True, text=True,
                              check=False)

    todo = [n for n in FILES if coqc is not None and (n not in SLOW or _compile_slow())]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(todo, pool.map(compile_one, [files[n] for n in todo])))
    return {name: (files[name][0], files[name][1], results.get(name)) for name in FILES}


@pytest.mark.parametrize("name", FILES)
def test_every_emitted_file_compiles(emitted, name):
    if _coqc() is None:
        pytest.skip("coqc not installed")
    if name in SLOW and not _compile_slow():
        pytest.skip("slow to compile (about 15 s per lemma): set SNN_COQ_SLOW=1")
    _, _, res = emitted[name]
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


@pytest.mark.parametrize("name", FILES)
def test_every_equation_at_every_size_has_qed_lemmas(emitted, name):
    model, text, _ = emitted[name]
    blocks = _blocks(text)
    assert sorted(blocks) == sorted(ob.name for ob in model.obligations)
    admitted = set()
    for ob in model.obligations:
        lemmas = blocks[ob.name]
        derivative = all(coq.is_derivative(a) for a in ob.goal)
        assert len(lemmas) == (len(ob.goal) if derivative else 1), ob.name
        assert len({lemma for lemma, _ in lemmas}) == len(lemmas)
        ends = {end for _, end in lemmas}
        if _base(ob.name) in OPEN:
            assert ends == {"Admitted"}, ob.name
            admitted.add(_base(ob.name))
        else:
            assert ends == {"Qed"}, (ob.name, lemmas)
    assert admitted == OPEN & {_base(ob.name) for ob in model.obligations}
    for lemma, end in _LEMMA.findall(text):
        if end == "Admitted":
            head = text[:text.index(f"Lemma {lemma} :")]
            assert "Admitted: " in head[head.rindex("(* obligation"):], lemma
            assert "verdict: proved by " in head[head.rindex("(* obligation"):], lemma


@pytest.mark.parametrize("name", FILES)
def test_wrong_variants_get_no_lemma_and_no_proof_script(name):
    model = run.load(_path(os.path.join("wrong", name)))
    obs = tuple(ob for ob in model.obligations if "__" in ob.name)
    model = dataclasses.replace(model, obligations=obs)
    verdicts = _check(model, obs)
    assert {v.verdict for v in verdicts.values()} == {"refuted"}
    vname = coq.module_name(model.name) + ".v"
    text = coq.emit(model, list(verdicts.values()), coqc=None)[vname]
    assert _LEMMA.findall(text) == []
    assert text.count("not stated as a lemma: the claim is false") == len(obs)
    # even with a false `proved` verdict, no wrong variant gets a proof script
    lied = [Verdict(name=ob.name, kind=ob.kind, verdict=PROVED, engine="test")
            for ob in obs]
    text = coq.emit(model, lied, coqc=None)[vname]
    blocks = _blocks(text)
    proved = sorted({_base(ob.name) for ob in obs if "Qed" in [e for _, e in blocks[ob.name]]})
    assert proved == sorted(KINK_ONLY & {_base(ob.name) for ob in obs})
