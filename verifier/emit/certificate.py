"""Certificates of proved bound claims: `<model>.<claim>.cert.json`, re-validated by
`verify-check` (verifier/check.py).

A certificate names the spec (file name and the digest of the obligation it proves, so a
changed spec or network is noticed), the root box and the split tree of the branch and bound
whose every leaf was closed. The checker trusts none of the engine's bounds: it re-derives
each leaf with its own interval arithmetic.
"""

from __future__ import annotations

import json
import os

from .smtlib import safe_file_part

FORMAT = "snn-verify-certificate/1"  # every kind of certificate, written and checked


def vnn_document(result, onnx_path: str, vnnlib_path: str) -> str | None:
    """The certificate of a `verify-vnn` answer `unsat` (None for other answers, or where the
    engine kept no tree): the ONNX and VNN-LIB files by path and sha256, and the closed
    split trees (`relu_bab.SplitTree`; `tree` 2: input splits and ReLU phase splits),
    re-validated by `verify-check` (`check_relu`)."""
    import hashlib

    from ..fileio import read_regular_file

    if result.answer != "unsat" or not result.certificate:
        return None

    def named(path: str, what: str) -> dict:
        data = read_regular_file(path, 1 << 30, what)
        return {"file": path, "sha256": hashlib.sha256(data).hexdigest()}

    doc = {"format": FORMAT, "kind": "relu", "source": "vnnlib",
           "network": named(onnx_path, "ONNX file"),
           "property": named(vnnlib_path, "VNN-LIB file"), **result.certificate}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n"


def spec_certificate(result, claim: str, prop) -> dict | None:
    """The certificate of a spec claim the ReLU engine proved: its violations as polyhedra
    (the property's disjuncts, exact) and the closed split trees; `emit` adds the spec and the
    obligation's digest."""
    if result.answer != "unsat" or not result.certificate:
        return None

    def row(c) -> dict:
        return {"x": [[i, str(a)] for i, a in c.x], "y": [[j, str(a)] for j, a in c.y],
                "const": str(c.const), "strict": c.strict}

    disjuncts = [{"rows": [row(c) for c in d.output_constraints()],
                  "lo": [str(v) for v in d.lo], "hi": [str(v) for v in d.hi]}
                 for d in prop.disjuncts]
    return {"format": FORMAT, "kind": "relu", "source": "spec", "claim": claim,
            "disjuncts": disjuncts, **result.certificate}


def file_name(model_name: str, obligation: str) -> str:
    return f"{safe_file_part(model_name)}.{safe_file_part(obligation)}.cert.json"


def emit(model, verdicts) -> dict[str, str]:
    from ..check import obligation_digest

    obligations = {ob.name: ob for ob in model.obligations}
    files = {}
    for v in verdicts:
        cert = v.details.get("certificate")
        if v.verdict != "proved" or not cert or v.name not in obligations:
            continue
        doc = dict(cert)
        doc["spec"] = os.path.basename(model.source_path)
        doc["obligation_digest"] = obligation_digest(obligations[v.name], model.program)
        files[file_name(model.name, v.name)] = json.dumps(doc, indent=1, sort_keys=True) + "\n"
    return files
