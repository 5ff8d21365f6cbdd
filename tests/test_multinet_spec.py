"""A network applied twice in one claim: the `.snn` spec and the VNN-LIB 2.0 query agree.

The claim `n(u)[0] - n(v)[0] < t` over two independent input boxes is the 2.0 query with
`g` equal to `f` and the unsafe region `Y_f[0] - Y_g[0] >= t`; both must give z3's exact
answer on the small network (proved / unsat when it holds, refuted / sat otherwise).
"""

from __future__ import annotations

import numpy as np
import pytest
from test_multinet import write_mlp, z3_answer
from tools import require

require("onnx")
require("onnxruntime")

from verifier import run
from verifier.multinet import decide_query
from verifier.onnx_import import load_onnx
from verifier.vnnlib2 import parse_vnnlib2

QUERY = """(vnnlib-version 2.0)
(declare-network f (declare-input X_f real [2]) (declare-output Y_f real [2]))
(declare-network g (equal-to f) (declare-input X_g real [2]) (declare-output Y_g real [2]))
(assert (and (>= X_f[0] -1) (<= X_f[0] 1) (>= X_f[1] -1) (<= X_f[1] 1)))
(assert (and (>= X_g[0] 0) (<= X_g[0] 0.5) (>= X_g[1] -0.5) (<= X_g[1] 0)))
(assert (>= (- Y_f[0] Y_g[0]) {t}))
"""

SPEC = """input u : real[2] in box([-1, -1], [1, 1])
input v : real[2] in box([0, -0.5], [0.5, 0])
network n(in=2) load "f.onnx" {{ }}
claim apart: n(u)[0] - n(v)[0] < {t}
"""


@pytest.mark.parametrize("scale", [0.5, 1.5])
def test_two_applications_in_a_claim(tmp_path, scale):
    rng = np.random.default_rng(7)
    path = write_mlp(tmp_path / "f.onnx", rng, [2, 6, 2])
    net = load_onnx(path)
    U = rng.uniform([-1, -1], [1, 1], size=(2000, 2))
    V = rng.uniform([0, -0.5], [0.5, 0], size=(2000, 2))
    gap = float(np.max(net.evaluate_float(U)[:, 0]) - np.min(net.evaluate_float(V)[:, 0]))
    t = round(gap * scale, 3)
    q = parse_vnnlib2(QUERY.format(t=t))
    truth = z3_answer(q, {"f": net, "g": net})
    res, _ = decide_query(q, {"f": net}, 30.0)
    assert res.answer == truth
    (tmp_path / "two.snn").write_text(SPEC.format(t=t))
    (v,) = run.check(run.load(str(tmp_path / "two.snn")), 60)
    assert v.verdict == {"unsat": "proved", "sat": "refuted"}[truth], v.reason
