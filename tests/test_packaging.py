"""A non-editable install ships the grammar and the templates inside the package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_non_editable_install_finds_templates_and_grammar(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("verifier", "templates"):
        shutil.copytree(ROOT / name, src / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    target = tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                            "--target", str(target), str(src)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    probe = ("from verifier.emit.templating import template_dir;"
             "from verifier.syntax.parser import parser; parser();"
             "d = template_dir(); print(d); assert (d / 'coq.v.j2').exists()")
    env = dict(os.environ, PYTHONPATH=str(target))
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert str(target) in out.stdout
