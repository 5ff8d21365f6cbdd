"""Shared pytest options and fixtures.

`--update-goldens` rewrites expected-output files (error messages in `tests/errors/`, artifacts
in `tests/golden/`) from the current output instead of comparing against them; review the
diff before committing.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-goldens",
        action="store_true",
        default=False,
        help="rewrite golden files (tests/errors/*.err, tests/golden/...) from current output",
    )


@pytest.fixture
def update_goldens(request: pytest.FixtureRequest) -> bool:
    """True when the run should rewrite golden files rather than compare against them."""
    return bool(request.config.getoption("--update-goldens"))
