"""Forked deciders (`verifier.parallel`): spec order back from any completion order, the same
verdicts as in-process, and a worker that hangs or dies costs one `unknown`, not the run."""

from __future__ import annotations

import os
import time

import pytest

from verifier import parallel, run

SPEC = """input x : real in [0, 1]
claim one: x * 1 == x
claim two: x + x == 2 * x
claim three: x < 1
claim four: x <= 1
"""


@pytest.fixture
def model(tmp_path):
    (tmp_path / "s.snn").write_text(SPEC)
    return run.load(str(tmp_path / "s.snn"))


def summary(verdicts):
    return [(v.name, v.verdict, v.engine, v.counterexample) for v in verdicts]


def test_forked_verdicts_equal_in_process(model):
    seen = []
    forked = run.check(model, 10, jobs=2, on_verdict=lambda i, v, c: seen.append(i))
    assert summary(forked) == summary(run.check(model, 10))
    assert sorted(seen) == [0, 1, 2, 3]


def _misbehave(action):
    real = parallel.decide

    def decide(ob, program, timeout):
        if ob.name == "two":
            if action == "hang":
                time.sleep(600)
            os._exit(7)  # the worker process dies without a word
        return real(ob, program, timeout)

    return decide


@pytest.mark.parametrize("action", ["hang", "die"])
def test_a_bad_worker_costs_one_unknown(model, monkeypatch, action):
    monkeypatch.setattr(parallel, "decide", _misbehave(action))  # forked children inherit it
    monkeypatch.setattr(parallel, "GRACE_MIN", 1.0)
    start = time.monotonic()
    verdicts = run.check(model, 0.5, jobs=2)
    assert time.monotonic() - start < 30
    by_name = {v.name: v for v in verdicts}
    assert by_name["two"].verdict == "unknown" and by_name["two"].engine == parallel.LOST
    assert ("no verdict within" if action == "hang" else "died") in by_name["two"].reason
    assert [by_name[n].verdict for n in ("one", "three", "four")] == \
        ["proved", "refuted", "proved"]


def test_a_lost_verdict_is_not_cached(model, monkeypatch, tmp_path):
    from verifier.cache import Cache

    monkeypatch.setattr(parallel, "decide", _misbehave("die"))
    cache = Cache(str(tmp_path / "cache"))
    run.check(model, 5, jobs=2, cache=cache)
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 3


def test_an_engine_bug_in_a_worker_is_an_internal_error(model, monkeypatch):
    from verifier.diagnostics import InternalError

    def broken(ob, program, timeout):
        raise KeyError("boom")

    monkeypatch.setattr(parallel, "decide", broken)
    with pytest.raises(InternalError, match="KeyError"):
        run.check(model, 5, jobs=2)
