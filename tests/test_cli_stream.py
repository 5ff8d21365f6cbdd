"""The `verify` command as a tool: streaming rows, summary, --version, --quiet, --json errors,
going on after a bad spec, the empty-spec warning, the result cache, --jobs and Dask.

Every run is the real command in a subprocess on small specs written into tmp_path. The
result cache is off under pytest unless SNN_VERIFY_CACHE names a folder, which only the cache
tests do (a folder in tmp_path), so no test touches the user's cache.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROW = re.compile(r"^  (\S+)\s+(identity|bound)\s+(proved|refuted|unknown)\s+(\S+)\s+"
                 r"(\d+\.\d\d)s( \[cached\])?(.*)$")
SUMMARY = re.compile(r"^(\d+) proved, (\d+) refuted, (\d+) unknown in (\d+\.\d\d) s$")

FAST = """input x : real in [0, 1]
input y : real in [-1, 1]
claim one: x * 1 == x
claim square: (x + y) ^ 2 == x ^ 2 + 2 * x * y + y ^ 2
claim wrong: (x + y) ^ 2 == x ^ 2 + y ^ 2
claim box: x + y <= 2
claim tight: x + y < 2
claim neg: x * y >= -1
"""
FAST_VERDICTS = {"one": "proved", "square": "proved", "wrong": "refuted", "box": "proved",
                 "tight": "refuted", "neg": "proved"}
# tanh(x) <= x is true on [0, 1] but tight at 0: branch and bound cannot close it, so the
# claim runs until its timeout and ends unknown
SLOW = """input x : real in [0, 1]
claim quick: x * 1 == x
claim slow: tanh(x) <= x
"""
BAD = "input x : real in [0, 1]\nclaim c: x == y\n"


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "verifier", *args]


def env_with(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SNN_VERIFY_CACHE", None)
    env.update(extra)
    return env


def verify(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), cwd=cwd, capture_output=True, text=True,
                          timeout=300, check=False, env=env or env_with())


def write(tmp_path: Path, **specs: str) -> None:
    for name, text in specs.items():
        (tmp_path / f"{name}.snn").write_text(text)


def rows(stdout: str) -> dict[str, str]:
    found = [ROW.match(line) for line in stdout.splitlines()]
    return {m.group(1): m.group(3) for m in found if m}


def verdicts_of(report: dict) -> list[list[tuple]]:
    return [[(o["name"], o["verdict"], o["engine"], json.dumps(o["counterexample"],
                                                               sort_keys=True))
             for o in spec["obligations"]] for spec in report["specs"]]


# ---- streaming and the summary ----------------------------------------------------------------


def test_rows_stream_before_the_run_ends(tmp_path):
    write(tmp_path, slow=SLOW)
    proc = subprocess.Popen(command("--jobs", "1", "--timeout", "3", "slow.snn"), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env_with())
    try:
        lines = []
        while not lines or not ROW.match(lines[-1]):
            line = proc.stdout.readline()
            assert line, (lines, proc.stderr.read())
            lines.append(line.rstrip("\n"))
        # the quick claim's row is out while the slow claim is still being decided
        assert ROW.match(lines[-1]).group(1) == "quick"
        assert proc.poll() is None
        rest = proc.stdout.read().splitlines()
    finally:
        proc.wait(timeout=120)
    assert proc.returncode == 3, proc.stderr.read()
    assert lines[0] == "slow.snn: 2 obligation(s), 0 derivation(s)"
    assert ROW.match(rest[0]).group(1, 3) == ("slow", "unknown")
    assert "timeout" in rest[0]
    summary = SUMMARY.match(rest[-1])
    assert summary and summary.group(1, 2, 3) == ("1", "0", "1"), rest
    assert float(summary.group(4)) >= 3.0  # the slow claim's whole time limit is in it


def test_summary_counts_every_spec(tmp_path):
    write(tmp_path, fast=FAST)
    proc = verify("--jobs", "1", "fast.snn", "fast.snn", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    assert sum(1 for line in lines if ROW.match(line)) == 12
    assert rows(proc.stdout) == FAST_VERDICTS
    summary = SUMMARY.match(lines[-1])
    assert summary and summary.group(1, 2, 3) == ("8", "4", "0"), lines[-1]


def test_version():
    proc = subprocess.run(command("--version"), capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"verify (snn-verify) {metadata.version('snn-verify')}"


def test_quiet_prints_only_the_summary(tmp_path):
    write(tmp_path, fast=FAST, bad=BAD)
    proc = verify("--quiet", "-o", "out", "--emit", "smtlib", "fast.snn", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert SUMMARY.match(proc.stdout.strip()) and len(proc.stdout.splitlines()) == 1
    assert proc.stderr == ""
    assert any((tmp_path / "out").iterdir())  # artifacts are still written
    # errors still show
    proc = verify("-q", "bad.snn", "fast.snn", cwd=tmp_path)
    assert proc.returncode == 2
    assert "bad.snn:2:15: error: unknown name `y`" in proc.stderr
    assert len(proc.stdout.splitlines()) == 1


# ---- bad specs, exit status, JSON ---------------------------------------------------------------


def test_a_bad_spec_does_not_stop_the_others(tmp_path):
    write(tmp_path, bad=BAD, fast=FAST)
    proc = verify("--jobs", "1", "bad.snn", "fast.snn", "missing.snn", cwd=tmp_path)
    assert proc.returncode == 2  # worse than the refutation in fast.snn
    assert "Traceback" not in proc.stderr
    assert "bad.snn:2:15: error: unknown name `y`" in proc.stderr
    assert "no such spec file: missing.snn" in proc.stderr
    assert rows(proc.stdout) == FAST_VERDICTS
    assert SUMMARY.match(proc.stdout.splitlines()[-1])


@pytest.mark.parametrize("specs, status", [
    (("unknown", "refuted"), 1), (("proved", "unknown"), 3), (("unknown", "bad"), 2),
    (("proved", "proved"), 0),
])
def test_exit_status_is_the_worst(tmp_path, specs, status):
    write(tmp_path, proved="input x : real in [0, 1]\nclaim c: x <= 1\n",
          refuted="input x : real in [0, 1]\nclaim c: x < 1\n",
          unknown="input x : real in [0, 1]\nclaim c: tanh(x) <= x\n", bad=BAD)
    proc = verify("--timeout", "1", *(f"{s}.snn" for s in specs), cwd=tmp_path)
    assert proc.returncode == status, (proc.stdout, proc.stderr)


def test_json_reports_errors_as_json(tmp_path):
    write(tmp_path, bad=BAD, fast=FAST)
    proc = verify("--json", "--jobs", "1", "bad.snn", "fast.snn", "missing.snn", cwd=tmp_path)
    assert proc.returncode == 2
    report = json.loads(proc.stdout)  # valid JSON, errors included
    assert report["exit"] == 2
    bad, fast, missing = report["specs"]
    assert bad == {"spec": "bad.snn", "error": {
        "file": "bad.snn", "line": 2, "col": 15, "message": "unknown name `y`",
        "fix": "declare it with input, param or let before use"}}
    assert [o["verdict"] for o in fast["obligations"]] == list(FAST_VERDICTS.values())
    assert missing["error"]["file"] == "missing.snn"
    assert missing["error"]["line"] is None and "no such spec file" in \
        missing["error"]["message"]
    assert report["summary"]["proved"] == 4 and report["summary"]["refuted"] == 2


@pytest.mark.parametrize("args, message", [
    (("--jobs", "0"), "argument -j/--jobs: must be at least 1"),
    (("--timeout", "-1"), "--timeout must be positive"),
    (("--emit", "nonsense", "-o", "out"), "unknown artifact kind(s) for --emit: nonsense"),
    (("--frobnicate",), "unrecognized arguments: --frobnicate"),
])
def test_json_usage_errors_are_json(tmp_path, args, message):
    write(tmp_path, fast=FAST)
    proc = verify("--json", *args, "fast.snn", cwd=tmp_path)
    assert proc.returncode == 2
    report = json.loads(proc.stdout)
    assert report["exit"] == 2
    assert report["error"]["message"] == message
    assert set(report["error"]) == {"file", "line", "col", "message", "fix"}


def test_spec_with_nothing_to_prove_is_a_warning(tmp_path):
    write(tmp_path, empty="input x : real in [0, 1]\nlet y = x + 1\n")
    proc = verify("empty.snn", cwd=tmp_path)
    assert proc.returncode == 3
    assert proc.stderr.startswith("empty.snn: warning: the spec has no claim and no "
                                  "derivation, so nothing is proved\n")
    assert "fix:" in proc.stderr
    proc = verify("--json", "empty.snn", cwd=tmp_path)
    report = json.loads(proc.stdout)
    assert proc.returncode == 3 and report["exit"] == 3
    assert "no claim and no derivation" in report["specs"][0]["warning"]


# ---- output paths that are not directories ------------------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "link-to-fifo", "link-to-device", "file"])
def test_special_output_paths_are_refused_before_deciding(tmp_path, kind):
    write(tmp_path, slow=SLOW)
    target = tmp_path / "out"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "link-to-fifo":
        os.mkfifo(tmp_path / "pipe")
        target.symlink_to(tmp_path / "pipe")
    elif kind == "link-to-device":
        target.symlink_to("/dev/null")
    else:
        target.write_text("not a folder")
    start = time.perf_counter()
    proc = verify("--timeout", "20", "-o", "out", "slow.snn", cwd=tmp_path)
    assert proc.returncode == 2
    assert time.perf_counter() - start < 20  # refused before the slow claim was decided
    assert proc.stdout == ""
    expected = {"fifo": "a FIFO", "link-to-fifo": "a FIFO", "link-to-device":
                "a character device", "file": "an ordinary file"}[kind]
    assert proc.stderr.startswith(f"error: output directory out is {expected}, not a directory")


def test_special_artifact_target_is_refused(tmp_path):
    write(tmp_path, fast=FAST)
    (tmp_path / "out").mkdir()
    proc = verify("-o", "out", "--emit", "json", "fast.snn", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    (written,) = [p for p in (tmp_path / "out").iterdir()]
    written.unlink()
    os.mkfifo(written)
    proc = verify("-o", "out", "--emit", "json", "fast.snn", cwd=tmp_path)
    assert proc.returncode == 2
    assert f"artifact out/{written.name} is a FIFO" in proc.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == [written.name]  # nothing staged


# ---- the result cache ---------------------------------------------------------------------------


def cache_files(folder: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*.json")}


def test_cache_hit_is_fast_and_marked(tmp_path):
    write(tmp_path, slow=SLOW)
    env = env_with(SNN_VERIFY_CACHE=str(tmp_path / "cache"))
    first = verify("--json", "--timeout", "3", "slow.snn", cwd=tmp_path, env=env)
    second = verify("--json", "--timeout", "3", "slow.snn", cwd=tmp_path, env=env)
    one, two = json.loads(first.stdout), json.loads(second.stdout)
    assert first.returncode == second.returncode == 3
    assert verdicts_of(one) == verdicts_of(two)
    assert [o["cached"] for o in one["specs"][0]["obligations"]] == [False, False]
    assert [o["cached"] for o in two["specs"][0]["obligations"]] == [True, True]
    assert one["summary"]["seconds"] >= 3.0
    assert two["summary"]["seconds"] < 1.0
    assert len(cache_files(tmp_path / "cache")) == 2

    text = verify("--timeout", "3", "slow.snn", cwd=tmp_path, env=env)
    assert text.stdout.count(" [cached]") == 2
    # the timeout is in the key: another time limit decides again
    other = verify("--json", "--timeout", "2", "slow.snn", cwd=tmp_path, env=env)
    assert not any(o["cached"] for o in json.loads(other.stdout)["specs"][0]["obligations"])


def test_no_cache_neither_reads_nor_writes(tmp_path):
    write(tmp_path, fast=FAST)
    env = env_with(SNN_VERIFY_CACHE=str(tmp_path / "cache"))
    assert verify("fast.snn", cwd=tmp_path, env=env).returncode == 1
    before = cache_files(tmp_path / "cache")
    assert len(before) == len(FAST_VERDICTS)
    proc = verify("--no-cache", "fast.snn", cwd=tmp_path, env=env)
    assert proc.returncode == 1
    assert "[cached]" not in proc.stdout and rows(proc.stdout) == FAST_VERDICTS
    assert cache_files(tmp_path / "cache") == before
    # and an edit to another claim keeps the entries of the unchanged ones
    write(tmp_path, fast=FAST + "claim extra: x >= 0\n")
    proc = verify("fast.snn", cwd=tmp_path, env=env)
    assert proc.stdout.count("[cached]") == len(FAST_VERDICTS)
    assert "[cached]" not in next(line for line in proc.stdout.splitlines() if "extra" in line)


DAMAGES = ("garbage", "truncated", "wrong-verdict", "missing-field", "other-key",
           "bad-counterexample")


def _damage(text: str, damage: str) -> str:
    if damage == "garbage":
        return "\x00not json"
    if damage == "truncated":
        return text[: len(text) // 2]
    entry = json.loads(text)
    if damage == "wrong-verdict":
        entry["verdict"]["verdict"] = "maybe"
    elif damage == "missing-field":
        del entry["verdict"]["engine"]
    elif damage == "other-key":
        entry["key"] = "0" * 64
    else:
        entry["verdict"]["counterexample"] = {"x": [1, 2]}
        entry["verdict"]["verdict"] = "refuted"
    return json.dumps(entry)


def test_corrupt_cache_entries_are_ignored(tmp_path):
    write(tmp_path, fast=FAST)
    env = env_with(SNN_VERIFY_CACHE=str(tmp_path / "cache"))
    clean = verify("--json", "--jobs", "1", "fast.snn", cwd=tmp_path, env=env)
    entries = sorted((tmp_path / "cache").rglob("*.json"))
    assert len(entries) == len(DAMAGES)
    for path, damage in zip(entries, DAMAGES):  # one kind of damage per entry
        path.write_text(_damage(path.read_text(), damage))
    again = verify("--json", "--jobs", "1", "fast.snn", cwd=tmp_path, env=env)
    assert again.returncode == 1
    report = json.loads(again.stdout)
    assert not any(o["cached"] for o in report["specs"][0]["obligations"])
    assert verdicts_of(report) == verdicts_of(json.loads(clean.stdout))
    # the damaged entries were replaced by good ones
    third = json.loads(verify("--json", "fast.snn", cwd=tmp_path, env=env).stdout)
    assert all(o["cached"] for o in third["specs"][0]["obligations"])


# ---- parallel and distributed ---------------------------------------------------------------------


def test_jobs_give_the_same_report_as_one_job(tmp_path):
    write(tmp_path, fast=FAST, slow=SLOW)
    one = verify("--json", "--jobs", "1", "--timeout", "2", "fast.snn", "slow.snn",
                 cwd=tmp_path)
    two = verify("--json", "--jobs", "2", "--timeout", "2", "fast.snn", "slow.snn",
                 cwd=tmp_path)
    assert one.returncode == two.returncode == 1, (one.stderr, two.stderr)
    r1, r2 = json.loads(one.stdout), json.loads(two.stdout)
    assert verdicts_of(r1) == verdicts_of(r2)  # same verdicts, in spec order
    assert [o["name"] for o in r2["specs"][0]["obligations"]] == list(FAST_VERDICTS)


def test_dask_cluster_gives_the_same_verdicts(tmp_path):
    distributed = pytest.importorskip("distributed")
    write(tmp_path, fast=FAST)
    local = verify("--json", "--jobs", "1", "fast.snn", cwd=tmp_path)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        remote = verify("--json", "--scheduler", cluster.scheduler_address, "fast.snn",
                        cwd=tmp_path)
    assert remote.returncode == local.returncode == 1, remote.stderr
    assert verdicts_of(json.loads(remote.stdout)) == verdicts_of(json.loads(local.stdout))


def test_unreachable_scheduler_is_a_user_error():
    pytest.importorskip("distributed")
    from verifier.diagnostics import SpecError
    from verifier.parallel import Cluster

    with pytest.raises(SpecError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        Cluster("tcp://127.0.0.1:9", connect_timeout=1)


def test_missing_dask_is_a_user_error(monkeypatch):
    from verifier.diagnostics import SpecError
    from verifier.parallel import Cluster

    monkeypatch.setitem(sys.modules, "distributed", None)  # import fails as if not installed
    with pytest.raises(SpecError, match="needs the Dask distributed package") as info:
        Cluster("tcp://127.0.0.1:8786")
    assert "pip install" in info.value.fix


def test_allow_import_admits_another_folder(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "defs.snn").write_text("input x : real in [0, 1]\n")
    (tmp_path / "main").mkdir()
    (tmp_path / "main" / "spec.snn").write_text('import "../lib/defs.snn"\nclaim c: x <= 1\n')
    refused = verify("spec.snn", cwd=tmp_path / "main")
    assert refused.returncode == 2
    assert "reaches outside the spec's folder" in refused.stderr
    allowed = verify("--allow-import", "../lib", "spec.snn", cwd=tmp_path / "main")
    assert allowed.returncode == 0, allowed.stderr
    assert rows(allowed.stdout) == {"c": "proved"}
    missing = verify("--allow-import", "nowhere", "spec.snn", cwd=tmp_path / "main")
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: --allow-import nowhere is not a directory")


def test_terminal_gets_rows_progress_and_summary(tmp_path):
    """stdout on a pseudo-terminal: the rich progress display, the same rows, the summary;
    errors still go to stderr when stderr is not the terminal."""
    import pty

    write(tmp_path, fast=FAST, bad=BAD)
    leader, follower = pty.openpty()
    proc = subprocess.Popen(command("--jobs", "1", "fast.snn", "bad.snn"), cwd=tmp_path,
                            stdout=follower, stderr=subprocess.PIPE, env=env_with())
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO once the child has closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 2
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.decode()).replace("\r", "\n")
    lines = [line.rstrip() for line in text.split("\n")]
    assert rows("\n".join(lines)) == FAST_VERDICTS
    assert any("━" in line and "fast.snn" in line for line in lines)  # the progress bar
    assert SUMMARY.match(next(line for line in reversed(lines) if line))
    assert err.startswith("bad.snn:2:15: error: unknown name `y`")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _workers(pid: int) -> list[int]:
    """Forked workers of the run (its command line), not helpers such as a resource tracker."""
    out = []
    for c in _children(pid):
        try:
            cmd = Path(f"/proc/{c}/cmdline").read_bytes()
        except OSError:
            continue
        if b"verifier" in cmd and b"resource_tracker" not in cmd:
            out.append(c)
    return out


def test_interrupted_json_run_still_prints_json(tmp_path):
    import signal

    write(tmp_path, slow=SLOW)
    # Ctrl-C as a terminal delivers it, to a run that does not ignore it: a process started
    # with SIGINT ignored (as `cmd &` in a script is, or as this one may be after an earlier
    # test's library changed the test process's handler) keeps ignoring it, as it should
    proc = subprocess.Popen(command("--json", "--jobs", "2", "--timeout", "30", "slow.snn"),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env_with(), start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not _workers(proc.pid) and time.monotonic() < deadline:  # deciding has begun
        time.sleep(0.2)
    time.sleep(0.5)
    for _ in range(5):  # Ctrl-C reaches the whole process group (again, should one be lost)
        os.killpg(proc.pid, signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=2)
            break
        except subprocess.TimeoutExpired:
            continue
    else:
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out[-2000:], err[-2000:])
    assert json.loads(out) == {"exit": 130, "error": {
        "file": None, "line": None, "col": None, "message": "interrupted", "fix": None}}
    assert err == "interrupted\n"


ARTIFACTS = """input x : real in [0, 1]
input y : real in [-1, 1]
claim one: x * 1 == x
claim wrong: (x + y) ^ 2 == x ^ 2 + y ^ 2
claim t: tanh(x) * y <= 0.8
claim tight: x + y < 2
derive output tanh(x + y)
"""


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_artifacts_do_not_depend_on_jobs_or_the_cache(tmp_path):
    """Every artifact kind, byte for byte: decided in one process, answered from the cache,
    decided on two processes."""
    write(tmp_path, art=ARTIFACTS)
    env = env_with(SNN_VERIFY_CACHE=str(tmp_path / "cache"))
    first = verify("--jobs", "1", "-o", "one", "art.snn", cwd=tmp_path, env=env)
    cached = verify("--jobs", "1", "-o", "cached", "art.snn", cwd=tmp_path, env=env)
    forked = verify("--jobs", "2", "--no-cache", "-o", "forked", "art.snn", cwd=tmp_path)
    assert first.returncode == cached.returncode == forked.returncode == 1, first.stderr
    assert cached.stdout.count("[cached]") == 4
    files = snapshot(tmp_path / "one")
    assert any(name.endswith(".smt2") for name in files) and "art.json" in files
    assert snapshot(tmp_path / "cached") == files  # with the seconds of the first run

    def timeless(snap):  # the HTML page shows each verdict's seconds, which vary per run
        return {k: re.sub(rb"\d+\.\d\d s", b"T s", v) for k, v in snap.items()}

    assert timeless(snapshot(tmp_path / "forked")) == timeless(files)
