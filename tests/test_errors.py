"""Bad input gives one located message on stderr, exit status 2, and never a traceback.

Each `tests/errors/<case>.snn` has a `<case>.err` with the exact stderr of
`verify <case>.snn` run from `tests/errors/` (so paths in messages are relative).
`pytest tests/test_errors.py --update-goldens` rewrites the `.err` files from the current
output; review the diff before committing.

Fixtures next to the specs: `corrupt.npz` is 64 random bytes (not a zip archive),
`weights_wrong_shape.json` and `weights_nonfinite.json` are small JSON weight files.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from verifier import cli
from verifier.diagnostics import SpecError
from verifier.elaborate import MAX_ENTRIES, Elaborator
from verifier.emit import EMITTERS
from verifier.run import load

ERRORS = Path(__file__).parent / "errors"
CASES = sorted(p.stem for p in ERRORS.glob("*.snn"))
EXIT_BAD_INPUT = 2


def run_in_process(argv: list[str], capsys) -> tuple[int, str, str]:
    """`verify ARGV` in this process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def verify_command() -> list[str]:
    exe = shutil.which("verify")
    return [exe] if exe else [sys.executable, "-m", "verifier"]


def assert_clean_failure(code: int, out: str, err: str) -> None:
    assert code == EXIT_BAD_INPUT, (code, err)
    assert "Traceback" not in err and "Traceback" not in out
    assert "internal error" not in err
    assert out == ""
    assert sum(line.startswith(("error:", "usage:")) or ": error: " in line
               for line in err.splitlines()) >= 1


def test_there_are_enough_cases():
    assert len(CASES) >= 20


@pytest.mark.parametrize("case", CASES)
def test_error_message(case, capsys, monkeypatch, update_goldens):
    monkeypatch.chdir(ERRORS)
    code, out, err = run_in_process([f"{case}.snn"], capsys)
    golden = ERRORS / f"{case}.err"
    if update_goldens:
        golden.write_text(err, encoding="utf-8")
    assert golden.exists(), f"no {golden.name}; run pytest {__file__} --update-goldens"
    assert_clean_failure(code, out, err)
    # the first line names the file, line and column (or, for files, just the error)
    first = err.splitlines()[0]
    assert ": error: " in first or first.startswith("error: ")
    assert err == golden.read_text(encoding="utf-8")


@pytest.mark.parametrize("case", ["syntax_double_star", "import_cycle_a", "weights_corrupt",
                                  "hessian_of_vector"])
def test_installed_command_prints_the_same(case):
    """The real `verify` executable (a separate process) prints exactly the golden text."""
    proc = subprocess.run(verify_command() + [f"{case}.snn"], cwd=ERRORS, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == EXIT_BAD_INPUT
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert proc.stderr == (ERRORS / f"{case}.err").read_text(encoding="utf-8")


def test_every_golden_has_a_spec():
    orphans = sorted(p.name for p in ERRORS.glob("*.err") if p.stem not in CASES)
    assert orphans == []


# ---- command-line usage errors ----------------------------------------------------------------


def test_unknown_emit_kind(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ERRORS)
    out_dir = tmp_path / "out"
    code, out, err = run_in_process(["--emit", "smtlib,pdf", "-o", str(out_dir),
                                     "unknown_name.snn"], capsys)
    assert_clean_failure(code, out, err)
    assert err == ("error: unknown artifact kind(s) for --emit: pdf\n"
                   f"   fix: choose from {','.join(EMITTERS)}\n")
    assert not out_dir.exists()  # refused before any work


def test_emit_without_output_directory(capsys, monkeypatch):
    monkeypatch.chdir(ERRORS)
    code, out, err = run_in_process(["--emit", "smtlib", "unknown_name.snn"], capsys)
    assert_clean_failure(code, out, err)
    assert err == "error: --emit needs an output directory\n   fix: add -o DIR\n"


def test_missing_spec_file(capsys, monkeypatch):
    monkeypatch.chdir(ERRORS)
    code, out, err = run_in_process(["no_such_spec.snn"], capsys)
    assert_clean_failure(code, out, err)
    assert err == "error: no such spec file: no_such_spec.snn\n"


@pytest.mark.parametrize("value", ["0", "-1"])
def test_nonpositive_timeout(value, capsys, monkeypatch):
    monkeypatch.chdir(ERRORS)
    code, out, err = run_in_process(["--timeout", value, "unknown_name.snn"], capsys)
    assert_clean_failure(code, out, err)
    assert err == "error: --timeout must be positive\n"


def test_timeout_not_a_number(capsys):
    code, out, err = run_in_process(["--timeout", "soon", "x.snn"], capsys)
    assert_clean_failure(code, out, err)
    assert err.splitlines()[-1] == "error: argument --timeout: invalid float value: 'soon'"


def test_no_spec_given(capsys):
    code, out, err = run_in_process([], capsys)
    assert_clean_failure(code, out, err)
    assert err.splitlines()[-1] == "error: the following arguments are required: SPEC"


def test_usage_error_in_a_separate_process():
    proc = subprocess.run(verify_command() + ["--timeout", "0", "x.snn"], cwd=ERRORS,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == EXIT_BAD_INPUT
    assert proc.stderr == "error: --timeout must be positive\n"


# ---- bugs found while writing these tests (fixed; kept as regression tests) --------------------------------


def test_timeout_nan(capsys, monkeypatch):
    monkeypatch.chdir(ERRORS)
    code, out, err = run_in_process(["--timeout", "nan", "../../specs/mlp.snn"], capsys)
    assert_clean_failure(code, out, err)


def _refuse_huge_symbol_tables(monkeypatch):
    """Make the bug visible without exhausting memory: creating more than MAX_ENTRIES leaf
    symbols for one tensor means a size check was skipped."""
    original = Elaborator.symbols

    def guarded(name, dims):
        if math.prod(dims) > MAX_ENTRIES:
            raise AssertionError(f"asked for {math.prod(dims)} symbols for {name}")
        return original(name, dims)

    monkeypatch.setattr(Elaborator, "symbols", staticmethod(guarded))


def test_shape_product_overflow_is_refused(tmp_path, monkeypatch):
    _refuse_huge_symbol_tables(monkeypatch)
    spec = tmp_path / "s.snn"
    spec.write_text("input x : real[4294967296, 4294967296]\n")
    with pytest.raises(SpecError, match="entries"):
        load(str(spec))


def test_dense_weight_matrix_size_is_limited(tmp_path, monkeypatch):
    _refuse_huge_symbol_tables(monkeypatch)
    spec = tmp_path / "s.snn"
    spec.write_text("network f(in=1000000) {\n  dense(1000000)\n}\n")
    with pytest.raises(SpecError):
        load(str(spec))


def test_huge_numeral_exponent_is_refused_quickly(tmp_path):
    spec = tmp_path / "s.snn"
    spec.write_text("input x : real\nclaim c: x <= 1e99999999\n")
    try:
        proc = subprocess.run(verify_command() + [spec.name], cwd=tmp_path, capture_output=True,
                              text=True, timeout=8, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("verify did not answer within 8 s")
    assert proc.returncode == EXIT_BAD_INPUT
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr


@pytest.mark.parametrize("claim", ["x * 1e5000 == 1e5000 * x", "x * (1e100 ^ 64) == 0"])
def test_numbers_with_many_digits(claim, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.snn").write_text(f"input x : real\nclaim c: {claim}\n")
    code, _out, err = run_in_process(["s.snn"], capsys)
    assert "internal error" not in err and "Traceback" not in err
    assert code in (0, 1, EXIT_BAD_INPUT)


def test_corrupt_weight_file_message_does_not_suggest_unpickling(capsys, monkeypatch):
    monkeypatch.chdir(ERRORS)
    code, _out, err = run_in_process(["weights_corrupt.snn"], capsys)
    assert code == EXIT_BAD_INPUT
    assert "pickle" not in err.lower()


def test_reserved_name_d(tmp_path):
    spec = tmp_path / "s.snn"
    spec.write_text("input d : real\nclaim c: d * 2 == 2 * d\n")
    try:
        load(str(spec))
    except SpecError as err:
        assert err.span is not None and err.span.line == 1, err.render()


@pytest.mark.parametrize("expr", ["x * 0 ^ -1", "x * log(0)", "x * log(-1)", "tanh(log(0))",
                                  "x * sqrt(-1)", "max()", "min()"])
def test_undefined_constants_are_located_errors(expr, tmp_path):
    spec = tmp_path / "s.snn"
    spec.write_text(f"input x : real in [-1, 1]\nclaim c: {expr} <= 1\n")
    with pytest.raises(SpecError) as info:
        load(str(spec))
    assert info.value.span is not None and info.value.span.line == 2
