"""The README's code blocks marked `<!-- test: run -->` run as written.

A marker is an HTML comment on the line before a fenced block, invisible when the README is
rendered: `<!-- test: run -->`, or `<!-- test: run beside DIR/ -->` for a spec that loads files
kept in DIR (it is run from a copy of DIR's files). Python blocks run in a subprocess from a
scratch folder in which `specs/` and `examples/` point at the repository's; `snn` blocks go
through the real command line (`python -m verifier`), which must prove every claim: exit 0.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^<!-- test: run(?: beside (?P<beside>[\w./-]+?)/?)? -->\s*$")
FENCE = re.compile(r"^```(?P<lang>\w*)\s*$")


def marked_blocks(text: str) -> list[dict]:
    """Every marked fenced block: its language, 1-based line, text and `beside` folder."""
    lines = text.splitlines()
    blocks = []
    for i, line in enumerate(lines):
        m = MARKER.match(line)
        if not m:
            continue
        fence = FENCE.match(lines[i + 1]) if i + 1 < len(lines) else None
        if fence is None:
            raise AssertionError(f"README.md:{i + 1}: a test marker must sit right above ```")
        end = next(j for j in range(i + 2, len(lines)) if lines[j].startswith("```"))
        blocks.append({"lang": fence["lang"], "line": i + 2, "beside": m["beside"],
                       "code": "\n".join(lines[i + 2:end]) + "\n"})
    return blocks


BLOCKS = marked_blocks((ROOT / "README.md").read_text(encoding="utf-8"))


def test_the_snippets_people_copy_are_marked():
    """The batch spec, the ONNX spec, the `verifier.api` and `verifier.run` snippets."""
    kinds = [b["lang"] for b in BLOCKS]
    assert kinds.count("python") >= 2 and kinds.count("snn") >= 2, kinds
    codes = "".join(b["code"] for b in BLOCKS)
    for needle in ("from verifier import api", "from verifier import run", "vjp(Y, X, DY)",
                   'load "wind_controller.onnx"'):
        assert needle in codes, needle


def test_marker_parsing():
    text = "x\n<!-- test: run beside examples/ -->\n```snn\ninput a : real\n```\n"
    (block,) = marked_blocks(text)
    assert block == {"lang": "snn", "line": 3, "beside": "examples", "code": "input a : real\n"}
    with pytest.raises(AssertionError, match="right above"):
        marked_blocks("<!-- test: run -->\n\nprint(1)\n")


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["MPLBACKEND"] = "Agg"
    return env


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: f"{b['lang']}-line{b['line']}")
def test_readme_block_runs(block, tmp_path):
    if block["beside"]:
        for f in (ROOT / block["beside"]).iterdir():
            if f.is_file():
                shutil.copy(f, tmp_path / f.name)
    else:
        for d in ("specs", "examples"):
            (tmp_path / d).symlink_to(ROOT / d, target_is_directory=True)
    if block["lang"] == "python":
        (tmp_path / "snippet.py").write_text(block["code"])
        cmd = [sys.executable, "snippet.py"]
    elif block["lang"] == "snn":
        (tmp_path / "snippet.snn").write_text(block["code"])
        cmd = [sys.executable, "-m", "verifier", "snippet.snn", "--timeout", "60"]
    else:
        pytest.fail(f"README.md:{block['line']}: no runner for ```{block['lang']} blocks")
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, (
        f"README.md:{block['line']}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
