"""coqc on the `.v` file of every bundled spec and example, bounded in time and memory, and
the JSON export's per-obligation proof counts checked against that file.

Every claim is emitted as if it had been proved (the strictest case: every claim gets a proof
attempt, a false one included), so every `Qed` the emitter can write for these models is
compiled; what the emitter cannot prove within the bound must be `Admitted` with a reason
(coq.CASE_DECISIONS, PROOF_OPS). specs/batch is compiled by test_coq_batch.py. coqc starts on
a file as soon as it is written, while the next ones are emitted, two at a time.
"""

from __future__ import annotations

import json
import re
import resource
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from tools import coqc as _coqc

from verifier import run
from verifier.emit import coq, json_export, lean
from verifier.engines.verdict import PROVED, Verdict

ROOT = Path(__file__).resolve().parent.parent
FILES = sorted(str(p.relative_to(ROOT)) for d in ("specs", "examples")
               for p in (ROOT / d).glob("*.snn"))
COMPILE_SECONDS = 120  # CPU seconds of one coqc run (a loaded machine does not shorten it)
COMPILE_WALL = 900  # wall-clock backstop
COMPILE_BYTES = 4 * 2**30  # address space of one coqc run

_OBLIGATION = re.compile(r"^\(\* obligation (\S+) \(", re.MULTILINE)
_LEAN_OBLIGATION = re.compile(r"^-- obligation (\S+) \(", re.MULTILINE)




def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (COMPILE_BYTES, COMPILE_BYTES))
    resource.setrlimit(resource.RLIMIT_CPU, (COMPILE_SECONDS, COMPILE_SECONDS + 1))


def _compile(coqc: str, folder: Path, vname: str):
    start = time.perf_counter()
    try:
        res = subprocess.run([coqc, vname], cwd=folder, capture_output=True, text=True,
                             timeout=COMPILE_WALL, preexec_fn=_limit_memory, check=False)
    except subprocess.TimeoutExpired:
        res = None
    if res is not None and res.returncode < 0 and -res.returncode in (signal.SIGXCPU,
                                                                       signal.SIGKILL):
        res = None  # out of CPU time
    print(f"coqc {folder.name}/{vname}: {time.perf_counter() - start:.1f} s")  # pytest -s
    return res


def _blocks(pattern: re.Pattern, text: str) -> dict[str, str]:
    starts = [(m.start(), m.group(1)) for m in pattern.finditer(text)]
    ends = [pos for pos, _ in starts[1:]] + [len(text)] * bool(starts)
    return {name: text[pos:end] for (pos, name), end in zip(starts, ends, strict=True)}


@pytest.fixture(scope="module")
def emitted(tmp_path_factory):
    """{spec: (model, .v text, .lean text, JSON data, coqc result)}; the result is None on a
    timeout, absent without coqc."""
    out_dir = tmp_path_factory.mktemp("coq_bundled")
    coqc = _coqc()
    files, running = {}, {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        for name in FILES:
            model = run.load(str(ROOT / name))
            verdicts = [Verdict(name=ob.name, kind=ob.kind, verdict=PROVED, engine="test")
                        for ob in model.obligations]
            (vname, text), = coq.emit(model, verdicts).items()
            data = json.loads(next(iter(json_export.emit(model, verdicts).values())))
            (lean_text,) = lean.emit(model, verdicts).values()
            folder = out_dir / Path(name).stem
            folder.mkdir()
            (folder / vname).write_text(text, encoding="utf-8")
            files[name] = (model, text, lean_text, data)
            if coqc is not None:
                running[name] = pool.submit(_compile, coqc, folder, vname)
        results = {name: job.result() for name, job in running.items()}
    return {name: (*files[name], results.get(name, "no coqc")) for name in FILES}


@pytest.mark.parametrize("name", FILES)
def test_every_emitted_file_compiles_in_bounded_time_and_memory(emitted, name):
    if _coqc() is None:
        pytest.skip("coqc not installed")
    res = emitted[name][-1]
    assert res is not None, (f"coqc did not finish within {COMPILE_SECONDS} CPU seconds "
                             f"({COMPILE_WALL} s wall)")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


@pytest.mark.parametrize("name", FILES)
def test_json_counts_are_those_of_the_files(emitted, name):
    model, text, lean_text, data, _ = emitted[name]
    coq_blocks, lean_blocks = _blocks(_OBLIGATION, text), _blocks(_LEAN_OBLIGATION, lean_text)
    entries = {e["name"]: e for e in data["obligations"]}
    assert sorted(coq_blocks) == sorted(entries) == sorted(ob.name for ob in model.obligations)
    for ob_name, entry in entries.items():
        block, proofs = coq_blocks[ob_name], entry["proofs"]
        assert proofs["coq_qed"] == block.count("\nQed."), ob_name
        assert proofs["coq_admitted"] == block.count("\nAdmitted."), ob_name
        assert proofs["lean_sorry"] == lean_blocks[ob_name].count("\n  sorry\n"), ob_name
        if not proofs["coq_qed"] + proofs["coq_admitted"]:
            assert proofs["not_stated"], ob_name  # a claim without a lemma says why
        if proofs["coq_admitted"]:
            assert proofs["admitted_reasons"], ob_name
            for reason in proofs["admitted_reasons"]:
                assert f"(* Admitted: {reason} *)" in block
    obligations_part = text[text.index("(** * Obligations *)"):]
    assert sum(e["proofs"]["coq_qed"] for e in entries.values()) == \
        obligations_part.count("\nQed.")
    assert sum(e["proofs"]["coq_admitted"] for e in entries.values()) == \
        obligations_part.count("\nAdmitted.")
