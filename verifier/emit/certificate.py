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
