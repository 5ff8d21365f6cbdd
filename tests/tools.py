"""Test dependencies and tools: where one is missing, the tests that need it skip; in CI
(`CI=true`) they fail instead, so a missing install step never passes silently."""

from __future__ import annotations

import importlib
import os
import shutil

import pytest


def require(name: str):
    """Import a test dependency (at module level or inside a test)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"{name} is not installed", allow_module_level=True)


def coqc() -> str | None:
    """The coqc binary, or None where it is missing."""
    path = shutil.which("coqc")
    if path is None and os.environ.get("CI") == "true":
        pytest.fail("coqc is required in CI (apt-get install coq libcoq-coquelicot "
                    "libcoq-interval)")
    return path
