"""An input named like a function is not the program symbol of that function's terms.

A sympy symbol is its name: before program symbols avoided the spec's leaf names, `input exp`
and the symbol bound to `exp(x)` were one symbol, and `claim b: exp >= 0` (false at exp = -1)
was proved from `exp(x) > 0`.
"""

from __future__ import annotations

import pytest

from verifier import run


@pytest.mark.parametrize("fn", ["exp", "tanh", "sigmoid", "relu", "softplus", "abs"])
def test_input_named_like_a_function(fn, tmp_path):
    spec = tmp_path / "c.snn"
    spec.write_text(f"input {fn} : real in [-1, 1]\ninput x : real in [-1, 1]\n"
                    f"claim a: {fn}(x) >= -1\nclaim b: {fn} >= 0\n")
    try:
        model = run.load(str(spec))
    except Exception as exc:  # a reserved name is a located error, which is fine too
        assert type(exc).__name__ == "SpecError"
        return
    verdicts = {v.name: v for v in run.check(model, 20)}
    assert verdicts["a"].verdict == "proved"
    assert verdicts["b"].verdict == "refuted"
    assert verdicts["b"].counterexample[fn] == "-1"
