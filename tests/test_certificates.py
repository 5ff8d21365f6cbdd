"""Certificates of proved bound claims, re-validated by `verify-check`.

`verify -o DIR` writes `<model>.<claim>.cert.json` for every claim proved by interval bounds or
branch and bound; the checker re-derives every leaf with its own interval arithmetic. A
certificate with a hole in its tree, a split outside its box, a digest of another obligation or
a claim that is false must be rejected.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from verifier import run
from verifier.check import Invalid, check_certificate, main, obligation_digest

ROOT = os.path.join(os.path.dirname(__file__), "..")
EXAMPLES = ["gauss.snn", "gauss_fit.snn"]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The examples and their artifacts, as `verify -o` writes them."""
    out = tmp_path_factory.mktemp("certs")
    for name in os.listdir(os.path.join(ROOT, "examples")):
        if name.startswith(tuple(n[:-4] for n in EXAMPLES)):
            shutil.copy(os.path.join(ROOT, "examples", name), out / name)
    res = subprocess.run([sys.executable, "-m", "verifier", *[str(out / n) for n in EXAMPLES],
                          "-o", str(out), "--emit", "cert,json", "--no-cache"],
                         capture_output=True, text=True, timeout=900, check=False)
    assert res.returncode in (0, 1), res.stderr
    return out


def proved_bound_claims(out, name: str) -> set[str]:
    report = json.loads((out / f"{name[:-4]}.json").read_text())
    return {o["name"] for o in report["obligations"]
            if o["verdict"] == "proved" and o["obligation_kind"] == "bound"
            and o["engine"] in ("interval", "batched-branch-and-bound", "branch-and-bound")}


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_certificate_is_valid(written, name):
    claims = proved_bound_claims(written, name)
    assert claims
    for claim in claims:
        cert = written / f"{name[:-4]}.{claim}.cert.json"
        assert cert.exists(), claim
        report = check_certificate(str(cert))
        assert report.valid and report.leaves >= 1, report.message


def test_command_line_exit_status(written, tmp_path):
    cert = str(written / "gauss.upper.cert.json")
    assert main([cert]) == 0
    bad = tmp_path / "bad.cert.json"
    with open(cert) as fh:
        doc = json.load(fh)
    del doc["closed"][max(doc["closed"])]
    bad.write_text(json.dumps(doc))
    assert main([str(bad), "--spec", str(written / "gauss.snn")]) == 1
    assert main([str(tmp_path / "missing.cert.json")]) == 2


def corrupt(written, tmp_path, change) -> str:
    doc = json.loads((written / "gauss.upper.cert.json").read_text())
    change(doc)
    path = tmp_path / "c.cert.json"
    path.write_text(json.dumps(doc))
    return str(path)


def first_split(doc):
    return doc["splits"][min(doc["splits"], key=int)]


@pytest.mark.parametrize("change,message", [
    (lambda d: d["closed"].pop(max(d["closed"], key=int)), "neither split nor closed"),
    (lambda d: first_split(d).__setitem__(1, "7"), "not inside its box"),
    (lambda d: d.__setitem__("obligation_digest", "0" * 64), "not the obligation"),
    (lambda d: d["root"][0].__setitem__(0, "-1/2"), "does not contain"),
    (lambda d: d["splits"].__setitem__("0", [0, first_split(d)[1], 0, 0]), "twice"),
    (lambda d: d.__setitem__("format", "other"), "not a certificate"),
])
def test_corrupted_certificates_are_rejected(written, tmp_path, change, message):
    path = corrupt(written, tmp_path, change)
    with pytest.raises(Invalid, match=message):
        check_certificate(path, spec=str(written / "gauss.snn"))


def test_a_false_claim_is_never_certified(written, tmp_path):
    """The certificate of `upper` (g <= 1.1) made to match a tighter, false claim: the digest
    agrees, the leaves do not close."""
    text = (written / "gauss.snn").read_text()
    assert "<= 1.1" in text
    spec = tmp_path / "gauss.snn"
    spec.write_text(text.replace("<= 1.1", "<= 0.9"))
    shutil.copy(written / "gauss_weights.npz", tmp_path / "gauss_weights.npz")
    model = run.load(str(spec))
    ob = next(o for o in model.obligations if o.name == "upper")
    doc = json.loads((written / "gauss.upper.cert.json").read_text())
    doc["obligation_digest"] = obligation_digest(ob, model.program)
    path = tmp_path / "gauss.upper.cert.json"
    path.write_text(json.dumps(doc))
    verdicts = {v.name: v.verdict for v in run.check(model, 20)}
    assert verdicts["upper"] == "refuted"  # it is false indeed
    with pytest.raises(Invalid, match="is not closed"):
        check_certificate(str(path))


def test_where_claims_of_the_exact_branch_and_bound_are_certified(written, tmp_path):
    """`decreasing` (d g / d x0 <= 0 where x[0] >= 1/2) is proved by branch and bound (the
    batched one, which honours `where`, or the exact one): its tree is re-validated, boxes
    outside the `where` region closed by their conditions. The same tree for the condition
    x[0] >= -1/2, where the claim is false, is refused."""
    report = json.loads((written / "gauss.json").read_text())
    (ob,) = [o for o in report["obligations"] if o["name"] == "decreasing"]
    assert ob["verdict"] == "proved"
    assert ob["engine"] in ("branch-and-bound", "batched-branch-and-bound")
    assert check_certificate(str(written / "gauss.decreasing.cert.json")).valid
    text = (written / "gauss.snn").read_text()
    assert "where x[0] >= 1/2" in text
    spec = tmp_path / "gauss.snn"
    spec.write_text(text.replace("where x[0] >= 1/2", "where x[0] >= -1/2", 1))
    shutil.copy(written / "gauss_weights.npz", tmp_path / "gauss_weights.npz")
    model = run.load(str(spec))
    false = next(o for o in model.obligations if o.name == "decreasing")
    doc = json.loads((written / "gauss.decreasing.cert.json").read_text())
    doc["obligation_digest"] = obligation_digest(false, model.program)
    # a condition on an input narrows its range: the root box must widen with it
    doc["root"][doc["variables"].index("x[0]")][0] = "-1/2"
    path = tmp_path / "gauss.decreasing.cert.json"
    path.write_text(json.dumps(doc))
    assert {v.name: v.verdict for v in run.check(model, 20)}["decreasing"] == "refuted"
    with pytest.raises(Invalid, match="is not closed"):
        check_certificate(str(path))
