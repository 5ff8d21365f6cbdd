"""The coqc binary for the tests that compile Coq: None where it is missing (those tests then
skip), a failure in CI (`CI=true`), where a missing tool must never pass silently."""

from __future__ import annotations

import os
import shutil

import pytest


def coqc() -> str | None:
    path = shutil.which("coqc")
    if path is None and os.environ.get("CI") == "true":
        pytest.fail("coqc is required in CI (apt-get install coq libcoq-coquelicot "
                    "libcoq-interval)")
    return path
