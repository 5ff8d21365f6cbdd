"""Coq lemmas for the batch backprop library (specs/batch), compiled by coqc.

Every equation of the library, at every instantiated size, is emitted as Coq lemmas (one per
entry of the equation: `is_derive` of the loss `sum(DY * Y)` in that entry, or one conjunction
for a plain identity) and each must be closed by `Qed`. Every emitted file must compile.
Wrong variants are refuted, so they get no lemma; told (falsely) that a wrong variant was
proved, the emitter still writes no proof script for it: its pre-checks reject every one.

coqc runs once per layer file, two files at a time, the two slowest (softmax, about 2 minutes
of CPU each) first. The losses are sums over the whole batch; a lemma for one entry derives
them one summand at a time (the prelude's snn_sum: auto_derive on a whole softmax loss takes
17 s, on one summand a few ms) and splits off the summands without the variable before a case
analysis (snn_rest: srelu_DZ, whose loss has N*K piecewise srelu terms).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from test_batch_backprop import FILES, _base, _path, decided
from tools import coqc as _coqc

from verifier.emit import coq
from verifier.engines.verdict import PROVED, Verdict

# the files that take longest to compile, started first so that the two workers finish together
SLOWEST = ("softmax.snn", "colwise/softmax.snn")

# Wrong variants that differ from their equation only at a kink: a derivative lemma is always
# stated where the ReLU-style pre-activations are nonzero (where the function is
# differentiable), so its Coq statement holds and is proved; the claim as written is refuted
# at the kink by the identity engine, and a refuted claim gets no lemma.
KINK_ONLY = frozenset({"relu_DZ_nerva__no_side_condition"})

_OBLIGATION = re.compile(r"^\(\* obligation (\S+) \(", re.MULTILINE)
_LEMMA = re.compile(r"^Lemma (\S+) :\n(?:.*\n)*?(Qed|Admitted)\.$", re.MULTILINE)




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
    """{layer file: (model, .v text, coqc result or None)}, every file compiled (coqc starts on
    a file as soon as it is written, while the next ones are emitted)."""
    out_dir = tmp_path_factory.mktemp("coq_batch")
    coqc = _coqc()

    def compile_one(folder, vname):
        start = time.perf_counter()
        res = subprocess.run([coqc, vname], cwd=folder, capture_output=True, text=True,
                             check=False)
        print(f"coqc {folder.name}/{vname}: {time.perf_counter() - start:.1f} s")  # pytest -s
        return res

    files, running = {}, {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        for name in sorted(FILES, key=lambda n: n not in SLOWEST):
            model, verdicts = decided(_path(name))
            verdicts = list(verdicts.values())
            (vname, text), = coq.emit(model, verdicts, coqc=None).items()
            folder = out_dir / name.replace("/", "_").removesuffix(".snn")
            folder.mkdir()
            (folder / vname).write_text(text, encoding="utf-8")
            files[name] = (model, text)
            if coqc is not None:
                running[name] = pool.submit(compile_one, folder, vname)
        results = {name: job.result() for name, job in running.items()}
    return {name: (*files[name], results.get(name)) for name in FILES}


@pytest.mark.parametrize("name", FILES)
def test_every_emitted_file_compiles(emitted, name):
    if _coqc() is None:
        pytest.skip("coqc not installed")
    _, _, res = emitted[name]
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


@pytest.mark.parametrize("name", FILES)
def test_every_equation_at_every_size_has_qed_lemmas(emitted, name):
    model, text, _ = emitted[name]
    blocks = _blocks(text)
    assert sorted(blocks) == sorted(ob.name for ob in model.obligations)
    for ob in model.obligations:
        lemmas = blocks[ob.name]
        derivative = all(coq.is_derivative(a) for a in ob.goal)
        assert len(lemmas) == (len(ob.goal) if derivative else 1), ob.name
        assert len({lemma for lemma, _ in lemmas}) == len(lemmas)
        assert {end for _, end in lemmas} == {"Qed"}, (ob.name, lemmas)
    assert {end for _, end in _LEMMA.findall(text)} == {"Qed"}


@pytest.mark.parametrize("name", FILES)
def test_wrong_variants_get_no_lemma_and_no_proof_script(name):
    model, verdicts = decided(_path(os.path.join("wrong", name)))
    obs = model.obligations
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
