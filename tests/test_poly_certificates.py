"""Certificates of claims proved by the polynomial route (`nonlinear-bab`) and `verify-check`.

Oracles: onnxruntime on dense samples (the product claim's bound sits above everything
sampled; the false claim's below a sampled value, and its forged certificate must be refused),
z3 and the checker's own bounds on what `verify -o` wrote; every tampering (a leaf removed, a
split moved out of its box, an atom's bound changed, the root box shrunk, the spec changed) is
refused.
"""

from __future__ import annotations

import json
import os
import shutil
from fractions import Fraction

import numpy as np
import pytest
from test_multinet import write_mlp
from tools import require

require("onnx")
ort = require("onnxruntime")

from verifier import check, cli, run
from verifier.check import Invalid, check_certificate

D = os.path.join(os.path.dirname(__file__), "data", "vnncomp2026")
ACC = "acc-2000000-64-64-64-64-retrain-100000-200000-0.9.onnx"


def _verify(spec, out) -> int:
    return cli.main([str(spec), "-o", str(out), "--emit", "cert", "--timeout", "100", "-q",
                     "--no-cache"])


def _edit(path, tmp_path, change) -> str:
    doc = json.loads(open(path).read())
    change(doc)
    bad = tmp_path / os.path.basename(path)
    bad.write_text(json.dumps(doc))
    return str(bad)


# ---- the adaptive cruise control property as a spec ---------------------------------------------

@pytest.fixture(scope="module")
def acc(tmp_path_factory):
    d = tmp_path_factory.mktemp("acc")
    shutil.copy(os.path.join(D, "acc_box_2_5.snn"), d / "acc.snn")
    shutil.copy(os.path.join(D, ACC), d / ACC)
    assert _verify(d / "acc.snn", d / "out") == 0
    return d


def test_every_case_of_the_acc_claim_has_a_certificate_and_one_is_valid(acc):
    model = run.load(str(acc / "acc.snn"))
    names = sorted(f"acc.{ob.name.replace('.', '_')}.cert.json" for ob in model.obligations)
    assert sorted(os.listdir(acc / "out")) == names
    doc = json.loads((acc / "out" / names[0]).read_text())
    assert doc["kind"] == "poly" and doc["closed"]
    r = check_certificate(str(acc / "out" / names[0]), spec=str(acc / "acc.snn"))
    assert r.valid and r.leaves == len(doc["closed"]), r.message


def test_acc_certificate_with_a_leaf_removed_is_refused(acc, tmp_path):
    path = str(acc / "out" / sorted(os.listdir(acc / "out"))[0])
    bad = _edit(path, tmp_path, lambda d: d["closed"].pop(max(d["closed"], key=int)))
    with pytest.raises(Invalid, match="hole"):
        check_certificate(bad, spec=str(acc / "acc.snn"))


def test_acc_certificate_of_a_changed_spec_is_refused(acc, tmp_path):
    text = (acc / "acc.snn").read_text()
    assert text.count("100.001") == 2
    (tmp_path / "acc.snn").write_text(text.replace("100.001", "100.01"))
    shutil.copy(acc / ACC, tmp_path / ACC)
    path = str(acc / "out" / sorted(os.listdir(acc / "out"))[0])
    with pytest.raises(Invalid, match="not the obligation"):
        check_certificate(path, spec=str(tmp_path / "acc.snn"))


# ---- a product of two outputs on a small ReLU network ---------------------------------------------

SPEC = """input u : real[2] in box([-1, -1], [1, 1])
network n(in=2) load "f.onnx" {{ }}
claim prod: n(u)[0] * n(u)[1] <= {bound}
"""


@pytest.fixture(scope="module")
def prod(tmp_path_factory):
    d = tmp_path_factory.mktemp("prod")
    path = write_mlp(d / "f.onnx", np.random.default_rng(5), [2, 32, 32, 2])
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    g = np.linspace(-1, 1, 81, dtype=np.float32)
    X = np.array([[a, b] for a in g for b in g], dtype=np.float32)
    Y = np.concatenate([sess.run(None, {sess.get_inputs()[0].name: x[None]})[0] for x in X])
    top = float(np.max(Y[:, 0] * Y[:, 1]))
    bound = round(top + 0.2 * abs(top) + 0.1, 3)
    (d / "p.snn").write_text(SPEC.format(bound=bound))
    assert _verify(d / "p.snn", d / "out") == 0
    return d, top, bound


def test_product_of_outputs_is_proved_and_its_certificate_valid(prod):
    d, _, _ = prod
    doc = json.loads((d / "out" / "p.prod.cert.json").read_text())
    assert doc["kind"] == "poly" and any(
        len(t[1]) == 2 and {f[0] for f in t[1]} == {"y"} for a in doc["disjuncts"][0]
        for t in a["poly"])  # the product y0 * y1 is in the certificate's atoms
    cert = str(d / "out" / "p.prod.cert.json")
    r = check_certificate(cert, spec=str(d / "p.snn"))
    assert r.valid, r.message
    assert check.main([cert, "--spec", str(d / "p.snn")]) == 0


def _first_split(d):
    return next(k for k, v in sorted(d["splits"].items(), key=lambda kv: int(kv[0])))


def _tamper_split(d):
    node = _first_split(d)
    d["splits"][node][1] = float(5.0).hex()  # the root box is [-1, 1]^2


def _set_bound(d, new) -> None:
    """The constant B of the violation atom `B - y0 y1 < 0` (the claim's bound) set to
    new(B)."""
    (atom,) = [a for a in d["disjuncts"][0] if any(len(t[1]) == 2 for t in a["poly"])]
    (const,) = [t for t in atom["poly"] if not t[1]]
    const[0] = str(new(Fraction(const[0])))


def _tamper_bound(d):
    # a larger bound in the violation atom: the disjunct no longer covers every violation
    _set_bound(d, lambda b: b + 1)


def _tamper_root(d):
    d["root"][0][1] = float(0.5).hex()


@pytest.mark.parametrize("change, message", [
    (_tamper_split, "not inside its box"),
    (_tamper_bound, "do not cover"),
    (_tamper_root, "do not cover"),
    (lambda d: d["closed"].pop(next(iter(d["closed"]))), "hole"),
])
def test_tampered_product_certificates_are_refused(prod, tmp_path, change, message):
    d, _, _ = prod
    if change is _tamper_split and not json.loads(
            (d / "out" / "p.prod.cert.json").read_text())["splits"]:
        pytest.skip("the proof needed no split")
    shutil.copy(d / "p.snn", tmp_path / "p.snn")
    shutil.copy(d / "f.onnx", tmp_path / "f.onnx")
    bad = _edit(str(d / "out" / "p.prod.cert.json"), tmp_path, change)
    with pytest.raises(Invalid, match=message):
        check_certificate(bad, spec=str(tmp_path / "p.snn"))


def test_a_forged_certificate_of_a_false_product_claim_is_refused(prod, tmp_path,
                                                                   monkeypatch):
    """The claim made false (its bound below a sampled value of y0 y1), the certificate
    forged to match it (its atoms and the new obligation's digest): the tree the engine
    closed for the true claim cannot close the false one."""
    d, top, bound = prod
    false = round(top - 0.05 * abs(top) - 0.01, 3)
    (tmp_path / "p.snn").write_text(SPEC.format(bound=false))
    shutil.copy(d / "f.onnx", tmp_path / "f.onnx")
    model = run.load(str(tmp_path / "p.snn"))
    (ob,) = model.obligations

    def forge(doc):
        _set_bound(doc, lambda _: Fraction(str(false)))
        doc["obligation_digest"] = check.obligation_digest(ob, model.program)

    monkeypatch.setattr(check, "MAX_BOXES_PER_LEAF", 64)
    bad = _edit(str(d / "out" / "p.prod.cert.json"), tmp_path, forge)
    with pytest.raises(Invalid, match="not closed|z3 answers"):
        check_certificate(bad, spec=str(tmp_path / "p.snn"))


def test_the_checkers_z3_encoding_of_a_leaf_agrees_with_onnxruntime(prod):
    """z3 on the checker's own encoding of a small box: `sat` for y0 * y1 at least its value
    at the box's centre (less 1e-3), `unsat` for y0 at least 1 above its largest sampled
    value on the box (the network moves far less than 1 across a box 0.02 wide)."""
    from verifier.check_poly import Atom, Net, _bounds, _Box, z3_leaf
    from verifier.onnx_import import load_onnx

    d, _, _ = prod
    sess = ort.InferenceSession(str(d / "f.onnx"), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    lo, hi = np.array([0.3, -0.2]), np.array([0.32, -0.18])
    net = Net(load_onnx(str(d / "f.onnx")))
    _, _, bounds = _bounds(net, [(None, lo, hi)])
    box = _Box(lo, hi, bounds, 0, 2)
    centre = sess.run(None, {name: ((lo + hi) / 2).astype(np.float32)[None]})[0].ravel()
    c = Fraction(float(centre[0]) * float(centre[1]) - 1e-3)
    at_least = Atom([(c, ()), (Fraction(-1), ((2, 1), (3, 1)))], False, 2)
    assert z3_leaf(net, [[at_least]], box, 30.0) == "sat"
    g = np.array([[a, b] for a in np.linspace(lo[0], hi[0], 9)
                  for b in np.linspace(lo[1], hi[1], 9)], dtype=np.float32)
    top = max(float(sess.run(None, {name: x[None]})[0].ravel()[0]) for x in g)
    above = Atom([(Fraction(top + 1.0), ()), (Fraction(-1), ((2, 1),))], False, 2)
    assert z3_leaf(net, [[above]], box, 30.0) == "unsat"
