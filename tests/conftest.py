"""Shared pytest options and fixtures.

`--update-goldens` rewrites expected-output files (error messages in `tests/errors/`, artifacts
in `tests/golden/`) from the current output instead of comparing against them; review the
diff before committing.

The tests run on two processes (pytest-xdist, `-n 2 --dist loadgroup` in pyproject.toml). Each
test module is one unit of work, so its module fixtures are built once; modules that share
state run on one process (the batch library's verdicts, decided once for the equations' tests
and the Coq lemmas); the longest units are handed out first, so the two processes finish
together.
"""

from __future__ import annotations

import os

import pytest

# modules that share a process: test_coq_batch emits from test_batch_backprop's verdicts
GROUPS = {"test_batch_backprop.py": "batch_library", "test_coq_batch.py": "batch_library"}
# the longest units of work (minutes of CPU; coqc on every file of the batch library and of the
# bundled specs), started first
FIRST = ("batch_library", "test_coq_bundled.py", "test_emission.py", "test_bundled_specs.py",
         "test_cli_stream.py", "test_onnx_ops.py", "test_nerva.py", "test_injection.py")


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


def _unit(item: pytest.Item) -> str:
    name = os.path.basename(str(item.path))
    return GROUPS.get(name, name if item.path.parent.name == "tests" else f"unit/{name}")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """One xdist group per test module (or shared group), the longest ones first."""
    rank = {unit: k for k, unit in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(_unit(item), len(FIRST)))  # stable: file order kept
    for item in items:
        item.add_marker(pytest.mark.xdist_group(_unit(item)))
