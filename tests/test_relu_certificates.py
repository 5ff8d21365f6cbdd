"""Certificates of the ReLU engine (`verify-vnn --certificate`, spec claims it proves) and their
independent checker (`verify-check`, `verifier/check_relu.py`).

Oracles: onnxruntime on a dense grid (a certificate the checker accepts, forged or not, must
be for a property no grid point violates), z3 on the checker's own encoding, and tampering:
a hole in the tree, a split outside its box, a changed property or network, negative weights,
a leaf z3 must refute. The engine's own bounds are never consulted by the checker.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from test_onnx_graphs import random_dag, run_ort, save

from verifier import check
from verifier.emit.certificate import vnn_document
from verifier.engines.relu_bab import decide
from verifier.onnx_import import load_onnx
from verifier.vnnlib import read_vnnlib, spec_text

DATA = os.path.join(os.path.dirname(__file__), "data")
ACAS = os.path.join(DATA, "vnncomp2021-acasxu")


def write_property(path, n_in: int, lo: float, hi: float, unsafe: str) -> str:
    lines = [f"(declare-const X_{i} Real)" for i in range(n_in)]
    lines += ["(declare-const Y_0 Real)"]
    for i in range(n_in):
        lines += [f"(assert (>= X_{i} {lo!r}))", f"(assert (<= X_{i} {hi!r}))"]
    lines.append(f"(assert {unsafe})")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def checked(doc: dict, path) -> check.Report:
    path.write_text(json.dumps(doc))
    try:
        return check.check_certificate(str(path), timeout=120)
    except check.Invalid as exc:
        return check.Report(path=str(path), valid=False, message=str(exc))


def forged(onnx_path: str, vnnlib_path: str, how: dict) -> dict:
    """A certificate claiming every disjunct's whole box closed in one leaf."""
    prop = read_vnnlib(vnnlib_path)
    groups = []
    for k, d in enumerate(prop.disjuncts):
        root = [[float(a).hex(), float(b).hex()] for a, b in zip(d.lo, d.hi)]
        w = {"w": [["1"] * len(d.output_constraints())]} if how["by"] == "bound" else {}
        groups.append({"disjuncts": [k], "root": root, "splits": {},
                       "closed": {"0": {**how, **w}}})

    class R:
        answer, certificate = "unsat", {"groups": groups}

    return json.loads(vnn_document(R, onnx_path, vnnlib_path))


def test_verify_vnn_certificate_round_trip_on_acasxu(tmp_path):
    """ACAS Xu 1_1 with property 3 (the branch and bound splits, two workers share it): the
    certificate is re-validated; every tampering is caught."""
    net, prop = os.path.join(ACAS, "ACASXU_run2a_1_1_batch_2000.onnx"), \
        os.path.join(ACAS, "prop_3.vnnlib")
    cert = tmp_path / "p3.cert.json"
    out = subprocess.run([sys.executable, "-m", "verifier.vnn", "--onnx", net, "--vnnlib", prop,
                          "--certificate", str(cert), "--timeout", "120", "--workers", "2"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("unsat"), out.stdout + out.stderr
    got = subprocess.run([sys.executable, "-m", "verifier.check", str(cert), "--json"],
                         capture_output=True, text=True)
    assert got.returncode == 0, got.stdout + got.stderr
    (rep,) = json.loads(got.stdout)["certificates"]
    assert rep["valid"] and rep["leaves"] > 10
    doc = json.loads(cert.read_text())
    (grp,) = doc["groups"]
    assert grp["splits"], "property 3 needs splits"
    # a hole: one closed leaf dropped
    bad = json.loads(cert.read_text())
    leaf = sorted(bad["groups"][0]["closed"])[0]
    del bad["groups"][0]["closed"][leaf]
    r = checked(bad, tmp_path / "hole.json")
    assert not r.valid and "hole" in r.message
    # a split point moved outside its box
    bad = json.loads(cert.read_text())
    node, rec = next(iter(bad["groups"][0]["splits"].items()))
    rec[1] = (1e6).hex()
    r = checked(bad, tmp_path / "outside.json")
    assert not r.valid and "not inside its box" in r.message
    # negative weights
    bad = json.loads(cert.read_text())
    for how in bad["groups"][0]["closed"].values():
        how["w"] = [["-" + w for w in ws] for ws in how["w"]]
        break
    r = checked(bad, tmp_path / "weights.json")
    assert not r.valid and "nonnegative" in r.message
    # another property under the same name: its sha256 differs
    other = tmp_path / "prop_3.vnnlib"
    other.write_text(open(prop).read().replace("0.3", "0.2", 1))
    bad = json.loads(cert.read_text())
    bad["property"]["file"] = str(other)
    r = checked(bad, tmp_path / "other.json")
    assert not r.valid and "sha256" in r.message


def test_forged_certificates_are_accepted_only_for_true_properties(tmp_path, monkeypatch):
    """Random ReLU graphs (skips, branches, leaky ReLUs) and thresholds around the sampled
    minimum: the engine's certificates of `unsat` are valid, and a forged one-leaf certificate
    (closed by a bound, or by z3) is accepted only where no grid point violates."""
    monkeypatch.setattr(check, "MAX_BOXES_PER_LEAF", 512)
    grid = np.stack(np.meshgrid(np.linspace(-1, 1, 101), np.linspace(-1, 1, 101)), -1)
    accepted = rejected = certified = 0
    for seed in range(6):
        rng = np.random.default_rng(300 + seed)
        nodes, inits = random_dag(rng, 2, 1, ("Relu", "LeakyRelu"), steps=8)
        path = save(tmp_path / f"g{seed}.onnx", nodes, inits, 2, 1)
        ys = run_ort(path, grid.reshape(-1, 2))[:, 0]
        lowest, spread = float(ys.min()), float(ys.max() - ys.min()) + 1e-3
        for k, t in enumerate((lowest - 0.3 * spread, lowest - 0.01 * spread,
                               lowest + 0.02 * spread)):
            prop = write_property(tmp_path / f"p{seed}_{k}.vnnlib", 2, -1.0, 1.0,
                                  f"(<= Y_0 {t!r})")
            res = decide(load_onnx(path), read_vnnlib(prop), 20)
            if res.answer == "unsat":
                text = vnn_document(res, path, prop)
                r = checked(json.loads(text), tmp_path / "engine.json")
                assert r.valid, r.message
                certified += 1
            for how in ({"by": "bound"}, {"by": "z3"}):
                r = checked(forged(path, prop, how), tmp_path / "forged.json")
                if r.valid:
                    accepted += 1
                    assert lowest > t, f"accepted, but a grid point has Y = {lowest} <= {t}"
                else:
                    rejected += 1
                    if how["by"] == "z3":
                        assert lowest <= t or "z3 answers" not in r.message
    assert certified >= 6 and accepted >= 6 and rejected >= 6, (certified, accepted, rejected)


def test_z3_leaves_are_re_encoded_by_the_checker(tmp_path):
    """A certificate whose leaves are closed by z3: the checker encodes each box itself; a z3
    leaf over a box with a counterexample is refused."""
    rng = np.random.default_rng(7)
    nodes, inits = random_dag(rng, 2, 1, ("Relu",), steps=8)
    path = save(tmp_path / "g.onnx", nodes, inits, 2, 1)
    grid = np.stack(np.meshgrid(np.linspace(-1, 1, 101), np.linspace(-1, 1, 101)), -1)
    ys = run_ort(path, grid.reshape(-1, 2))[:, 0]
    t = float(ys.min()) + 0.05 * float(ys.max() - ys.min())  # violated somewhere
    prop = write_property(tmp_path / "p.vnnlib", 2, -1.0, 1.0, f"(<= Y_0 {t!r})")
    r = checked(forged(path, prop, {"by": "z3"}), tmp_path / "z3.json")
    assert not r.valid and "z3 answers sat" in r.message
    t = float(ys.min()) - 0.05 * float(ys.max() - ys.min()) - 1e-3  # holds
    prop = write_property(tmp_path / "q.vnnlib", 2, -1.0, 1.0, f"(<= Y_0 {t!r})")
    r = checked(forged(path, prop, {"by": "z3"}), tmp_path / "z3ok.json")
    assert r.valid, r.message


def test_spec_claim_proved_by_the_relu_engine_writes_a_certificate(tmp_path):
    """A spec claim routed to the ReLU engine: `verify -o` writes its certificate, the checker
    re-derives the claim's violations (z3) and closes the tree; a changed spec is refused."""
    shutil.copy(os.path.join(DATA, "vnncomp2021-test", "test_unsat.onnx"), tmp_path / "net.onnx")
    spec = tmp_path / "acas.snn"
    spec.write_text(spec_text(read_vnnlib(os.path.join(ACAS, "prop_1.vnnlib")), "net.onnx"))
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "verifier", str(spec), "-o", str(out),
                          "--emit", "cert", "--no-cache", "--json"], capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    (v,) = json.loads(res.stdout)["specs"][0]["obligations"]
    assert v["verdict"] == "proved" and v["engine"] == "relu-bab", v
    (cert,) = [f for f in os.listdir(out) if f.endswith(".cert.json")]
    r = check.check_certificate(str(out / cert), spec=str(spec))
    assert r.valid and "violations covered" in r.message, r.message
    # the claim made stronger: another obligation, the digest differs
    text = spec.read_text()
    spec.write_text(text.replace("3.991125645861615 > 0", "3.5 > 0"))
    with pytest.raises(check.Invalid, match="not the obligation"):
        check.check_certificate(str(out / cert), spec=str(spec))
    # the certificate's polyhedra changed: they no longer cover the violations
    spec.write_text(text)
    doc = json.loads((out / cert).read_text())
    row = doc["disjuncts"][0]["rows"][0]
    row["const"] = str(Fraction(row["const"]) + 1)  # a smaller polyhedron
    (out / cert).write_text(json.dumps(doc))
    with pytest.raises(check.Invalid, match="do not cover"):
        check.check_certificate(str(out / cert), spec=str(spec))


def smooth_mlp(rng, act: str, widths=(2, 12, 12, 1)):
    nodes, inits = [], {}
    src = "X"
    for k in range(len(widths) - 1):
        inits[f"W{k}"] = rng.normal(size=(widths[k + 1], widths[k])) * 1.5 / np.sqrt(widths[k])
        inits[f"b{k}"] = rng.normal(size=widths[k + 1]) * 0.3
        out = "Y" if k == len(widths) - 2 else f"z{k}"
        nodes.append(helper_node("Gemm", [src, f"W{k}", f"b{k}"], [out], transB=1))
        if out != "Y":
            nodes.append(helper_node(act, [out], [f"h{k}"]))
            src = f"h{k}"
    return nodes, inits


def helper_node(*args, **kw):
    from onnx import helper

    return helper.make_node(*args, **kw)


@pytest.mark.parametrize("act", ["Tanh", "Sigmoid"])
def test_smooth_network_certificates(act, tmp_path, monkeypatch):
    """tanh and sigmoid networks: the checker bounds them with lines of slope min f' (sound on
    any interval); certificates of `unsat` are valid, forged ones only where the grid agrees."""
    monkeypatch.setattr(check, "MAX_BOXES_PER_LEAF", 512)
    grid = np.stack(np.meshgrid(np.linspace(-1, 1, 101), np.linspace(-1, 1, 101)), -1)
    certified = accepted = rejected = 0
    for seed in range(3):
        rng = np.random.default_rng(50 + seed)
        nodes, inits = smooth_mlp(rng, act)
        path = save(tmp_path / f"s{seed}.onnx", nodes, inits, 2, 1)
        ys = run_ort(path, grid.reshape(-1, 2))[:, 0]
        lowest, spread = float(ys.min()), float(ys.max() - ys.min()) + 1e-3
        for k, t in enumerate((lowest - 0.5 * spread, lowest + 0.02 * spread)):
            prop = write_property(tmp_path / f"p{seed}_{k}.vnnlib", 2, -1.0, 1.0,
                                  f"(<= Y_0 {t!r})")
            res = decide(load_onnx(path), read_vnnlib(prop), 20)
            if res.answer == "unsat":
                r = checked(json.loads(vnn_document(res, path, prop)), tmp_path / "e.json")
                assert r.valid, r.message
                certified += 1
            r = checked(forged(path, prop, {"by": "bound"}), tmp_path / "f.json")
            if r.valid:
                accepted += 1
                assert lowest > t, f"accepted, but a grid point has Y = {lowest} <= {t}"
            else:
                rejected += 1
    assert certified >= 2 and accepted >= 2 and rejected >= 2, (certified, accepted, rejected)


def test_spec_claim_on_a_wide_tanh_network_goes_to_the_relu_engine(tmp_path):
    """A bound claim on a 2-40-40-1 tanh network (80 neurons) is decided by `relu-bab` and its
    certificate re-validated; a threshold above the sampled minimum is refuted."""
    rng = np.random.default_rng(11)
    nodes, inits = smooth_mlp(rng, "Tanh", widths=(2, 40, 40, 1))
    path = save(tmp_path / "net.onnx", nodes, inits, 2, 1)
    grid = np.stack(np.meshgrid(np.linspace(-1, 1, 101), np.linspace(-1, 1, 101)), -1)
    ys = run_ort(path, grid.reshape(-1, 2))[:, 0]
    lowest, spread = float(ys.min()), float(ys.max() - ys.min())
    spec = tmp_path / "t.snn"
    spec.write_text(f'input x : real[2] in [-1, 1]\nnetwork n(in=2) load "net.onnx" {{ }}\n'
                    f"claim low: n(x)[0] > {lowest - 0.3 * spread:.6f}\n"
                    f"claim high: n(x)[0] > {lowest + 0.02 * spread:.6f}\n")
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "verifier", str(spec), "-o", str(out),
                          "--emit", "cert", "--no-cache", "--json"], capture_output=True,
                         text=True)
    obs = {o["name"]: o for o in json.loads(res.stdout)["specs"][0]["obligations"]}
    assert obs["low"]["verdict"] == "proved" and obs["low"]["engine"] == "relu-bab", obs["low"]
    assert obs["high"]["verdict"] == "refuted", obs["high"]
    r = check.check_certificate(str(out / "t.low.cert.json"), spec=str(spec))
    assert r.valid, r.message


@pytest.mark.parametrize("seed", range(4))
def test_checker_bounds_contain_the_exact_network(seed, tmp_path):
    """The checker's own pre-activation and row bounds on random boxes contain the network's
    exact values (rational arithmetic) at random points and corners of each box, for ReLU,
    leaky ReLU, tanh and sigmoid graphs."""
    from fractions import Fraction as F

    import mpmath

    from verifier.check_relu import Net, row_bound, rows_block
    from verifier.vnnlib import Constraint

    rng = np.random.default_rng(900 + seed)
    acts = (("Relu", "LeakyRelu"), ("Relu",), ("Tanh",), ("Sigmoid",))[seed]
    if seed < 2:
        nodes, inits = random_dag(rng, 3, 2, acts, steps=9)
        n_in, n_out = 3, 2
    else:
        nodes, inits = smooth_mlp(rng, acts[0], widths=(3, 6, 5, 2))
        n_in, n_out = 3, 2
    path = save(tmp_path / "g.onnx", nodes, inits, n_in, n_out)
    onnx_net = load_onnx(path)
    net = Net(onnx_net)
    P = 6
    c = rng.uniform(-1, 1, size=(P, n_in))
    r = rng.uniform(0.01, 0.6, size=(P, n_in))
    lo, hi = c - r, c + r
    L, Uu, H = net.bounds(lo, hi)
    rows = [Constraint(x=((0, F(1, 3)),), y=((0, F(-2)), (1, F(1, 7))), const=F(1, 5),
                       strict=False)]
    rb = rows_block(rows, n_in, n_out, len(net.blocks))
    ub = row_bound(net, rb, np.ones((P, 1)), (lo, hi), L, Uu, H)
    for p in range(P):
        pts = rng.uniform(lo[p], hi[p], size=(6, n_in))
        pts = np.vstack([pts, lo[p], hi[p]])
        for x in pts:
            xs = [F(float(v)) for v in x]
            y = onnx_net.evaluate_exact(xs)
            if all(isinstance(v, F) for v in y):  # the row r = -(lhs) at x, exactly
                rv = -(F(1, 3) * xs[0] - 2 * y[0] + F(1, 7) * y[1] + F(1, 5))
                assert rv <= F(float(ub[p]))
            else:  # smooth networks: at 60 digits
                with mpmath.workdps(60):
                    def m(q):
                        return mpmath.mpf(q.numerator) / q.denominator
                    rv = -(m(F(1, 3)) * m(xs[0]) - 2 * y[0] + m(F(1, 7)) * y[1] + m(F(1, 5)))
                    assert rv <= mpmath.mpf(float(ub[p]))
        # pre-activations of every block at the box's centre
        zc = [F(float(v)) for v in 0.5 * (lo[p] + hi[p])]
        vals = [np.array(zc, dtype=object)]
        for k, blk in enumerate(onnx_net.blocks, start=1):
            z = blk.b.copy()
            for s_, W in blk.terms:
                z = z + W.dot(vals[s_])
            for j, zj in enumerate(z):
                assert F(float(L[k][p, j])) <= zj <= F(float(Uu[k][p, j])) or blk.act is not \
                    None and blk.act.kind in ("tanh", "sigmoid")
            if blk.act is None or blk.act.kind in ("relu", "leaky_relu"):
                a = blk.act.alpha if blk.act is not None and blk.act.kind == "leaky_relu" \
                    else F(0)
                vals.append(np.array([v if blk.act is None or v > 0 else a * v for v in z],
                                     dtype=object))
            else:
                break  # smooth values are not rational: the row check above covers them
