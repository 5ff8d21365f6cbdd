"""The distilled claim `abs(phi(u)[k] - law(u)) <= eps` as a Coq lemma (examples/distill).

A small edge network (3-4-2, tanh; seeded weights) stands in for the trained one, so the test
takes seconds; the law is fitted to it by the example's sparse regression. After the batched
engine proves the claim on a cell, the Coq file states it as a lemma over the cell: with a
loose eps the interval tactic closes it (Qed), with the certified eps (within a few tenths of
the sampled maximum) it cannot (Admitted, with the reason in the file's counts and the JSON). Oracles: coqc compiles
the emitted file; numpy samples of |phi - law| stay below the stated eps.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
from tools import coqc as _coqc

from verifier import run
from verifier.emit.proofs import counts_of
from verifier.terminal import proof_text

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.join(ROOT, "examples", "distill")


def _module(name: str):
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    spec = importlib.util.spec_from_file_location(f"distill_coq_{name}",
                                                  os.path.join(HERE, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sindy = _module("sindy")
pipeline = _module("run")
CELL = ((Fraction(1), Fraction(1, 2)), (Fraction(3, 2), Fraction(1)))


def edge(folder, hidden=4, seed=0):
    """A 3-hidden-2 tanh network with 3-decimal weights, its dense lines and .npz file."""
    rng = np.random.default_rng(seed)
    widths = [3, hidden, 2]
    arrays = {}
    for k in range(1, len(widths)):
        arrays[f"W{k}"] = np.round(rng.normal(0, widths[k - 1] ** -0.5,
                                              (widths[k], widths[k - 1])), 3)
        arrays[f"b{k}"] = np.round(rng.normal(0, 0.1, widths[k]), 3)
    path = os.path.join(folder, "edge.npz")
    np.savez(path, **arrays)
    return f"dense({hidden}, tanh)\ndense(2)", arrays, path


def gap(arrays, coeffs, u):
    return np.abs(pipeline.edge_forward(arrays, pipeline.edge_features(u))[:, 0]
                  - sindy.evaluate(coeffs, u))


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    folder = tmp_path_factory.mktemp("distill_coq")
    lines, arrays, path = edge(str(folder))
    u = pipeline.sample_cells([CELL], 2000, seed=0)
    coeffs, r2 = sindy.fit(u, pipeline.edge_forward(arrays, pipeline.edge_features(u))[:, 0])
    assert r2 > 0.99
    # the example's procedure: eps from 1.05 x the sampled maximum up until the cell is proved
    cert = pipeline.certify("cell", lines, path, [CELL], 0, coeffs, arrays, str(folder), 30)
    tight, sampled = cert["eps"], cert["sampled"]
    assert tight is not None and float(tight) < 1 / 100, cert["rounds"]
    spec = pipeline.claim_spec(lines, path, [CELL], [("close_loose", 0, 0, coeffs,
                                                      Fraction(1, 100)),
                                                     ("close_tight", 0, 0, coeffs, tight)])
    spec_path = os.path.join(str(folder), "cert.snn")
    with open(spec_path, "w", encoding="utf-8") as fh:
        fh.write(spec)
    coqc = _coqc()
    if coqc is None:
        pytest.skip("coqc not installed")
    lem = pipeline.coq_lemmas(spec_path, timeout=30, jobs=1, coqc=coqc)
    return {"folder": folder, "arrays": arrays, "coeffs": coeffs, "sampled": sampled,
            "tight": tight, "spec": spec_path, "coqc": coqc, "lem": lem}


def test_the_distilled_claim_gets_an_interval_lemma_that_coqc_compiles(distilled):
    lem = distilled["lem"]
    assert [(v.name, v.verdict) for v in lem["verdicts"]] == [("close_loose", "proved"),
                                                               ("close_tight", "proved")]
    counts = lem["counts"]
    assert (counts["close_loose"]["coq_qed"], counts["close_loose"]["coq_admitted"]) == (1, 0)
    assert (counts["close_tight"]["coq_qed"], counts["close_tight"]["coq_admitted"]) == (0, 1)
    (reason,) = counts["close_tight"]["admitted_reasons"]
    assert "interval tactic" in reason and ("failed to conclude" in reason
                                            or "did not finish" in reason)
    text = lem["text"]
    # the lemma states the claim: the cell as premises, the law, sqrt for r, the claim's eps
    start = text.index("Lemma close_loose")
    block = text[start:text.index("Qed.", start)]
    assert "1 <= u0_0 <= (3 / 2)" in block and "(1 / 2) <= u0_1 <= 1" in block
    assert "sqrt (u0_0 ^ 2 + u0_1 ^ 2)" in block and "<= (1 / 100)" in block
    assert "interval with (i_bisect u0_0, i_bisect u0_1, i_depth " in block
    folder = distilled["folder"]
    (folder / lem["name"]).write_text(text, encoding="utf-8")
    res = subprocess.run([distilled["coqc"], lem["name"]], cwd=folder, capture_output=True,
                         text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    # fresh samples of the gap stay below both stated bounds
    u = pipeline.sample_cells([CELL], 20_000, seed=7)
    g = gap(distilled["arrays"], distilled["coeffs"], u).max()
    assert g <= float(distilled["tight"]) < 1 / 100


def test_the_admitted_reason_reaches_the_json_and_the_table(distilled):
    lem = distilled["lem"]
    # the same model and verdicts: the JSON counts the .v file just emitted (no coqc rerun)
    files = run.artifacts(lem["model"], lem["verdicts"], ["coq", "json"])
    (vtext,) = [t for f, t in files.items() if f.endswith(".v")]
    assert vtext == lem["text"]
    (jtext,) = [t for f, t in files.items() if f.endswith(".json")]
    assert "no Coq proof because the interval tactic (bisection to depth" in jtext
    counts = counts_of(lem["model"], vtext, "")
    assert proof_text(counts["close_loose"]).startswith("Coq 1 Qed, 0 Admitted")
    assert proof_text(counts["close_tight"]).startswith(
        "Coq 0 Qed, 1 Admitted (no Coq proof because the interval tactic")
