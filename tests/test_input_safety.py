"""Hostile or surprising input files: weight files matched to the wrong layers, imports that
reach outside the spec's folder or into special files, error echoes of raw bytes, and result
files whose path names a device.

Oracles: PyTorch (the modules that wrote the state_dicts), the real `verify` and `verify-vnn`
commands in subprocesses, and the file system itself (what is left on disk).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from verifier import vnn  # noqa: E402
from verifier.diagnostics import MAX_ECHO, SpecError  # noqa: E402
from verifier.elaborate import IMPORT_PATH_VAR, elaborate  # noqa: E402
from verifier.fileio import check_writable_target, write_text_atomically  # noqa: E402
from verifier.syntax.parser import MAX_SOURCE_BYTES  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VNN_DATA = ROOT / "tests" / "data" / "vnncomp2021-test"
TRAP_CLAIM = "claim c: f(x)[0] >= -1.5\n"


def command(module: str) -> list[str]:
    return [sys.executable, "-m", module]


def run(args: list[str], cwd: Path, module: str = "verifier", env=None, timeout=120):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(command(module) + args, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False, env=full_env)


def clean_failure(proc) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert proc.stdout == ""


# ---- weight files: matched by name, numeric order or shape; never by key order -----------------


class OutFirst(nn.Module):
    """Registers `out` before `hidden`: the state_dict's key order is not the order of use."""

    def __init__(self, n_in: int, n_hidden: int, n_out: int):
        super().__init__()
        self.out = nn.Linear(n_hidden, n_out)
        self.hidden = nn.Linear(n_in, n_hidden)

    def forward(self, x):
        return self.out(torch.tanh(self.hidden(x)))


def square_trap() -> OutFirst:
    """In the module's order f0 = 2 tanh(x0) reaches -1.52 on [-1, 1]^2; in key order
    f0 = tanh(2 x0) >= -1, so reading the keys in order proves `f0 >= -1.5`."""
    m = OutFirst(2, 2, 2).double()
    with torch.no_grad():
        m.hidden.weight.copy_(torch.eye(2, dtype=torch.float64))
        m.hidden.bias.zero_()
        m.out.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
        m.out.bias.zero_()
    return m


def spec_text(load: str, layers: str, n_in: int = 2, claim: str = TRAP_CLAIM) -> str:
    return (f"input x : real[{n_in}] in [-1, 1]\n"
            f"network f(in={n_in}) load \"{load}\" {{\n  {layers}\n}}\n" + claim)


def loaded(spec, net: str = "f") -> dict[str, np.ndarray]:
    return {t.name[len(net) + 1:]: np.array([float(e) for e in t.entries]).reshape(t.shape)
            for t in spec.params if t.name.startswith(net + ".")}


def tanh_mlp(weights: dict[str, np.ndarray], x: np.ndarray, n_layers: int) -> np.ndarray:
    """Forward pass from the loaded arrays, written out here (not the tool's translator)."""
    h = x
    for k in range(1, n_layers + 1):
        h = weights[f"W{k}"] @ h + weights.get(f"b{k}", 0.0)
        if k < n_layers:
            h = np.tanh(h)
    return h


def test_square_layers_registered_out_first_are_refused_with_a_located_error(tmp_path):
    module = square_trap()
    assert module(torch.tensor([-1.0, -1.0], dtype=torch.float64))[0] < -1.5  # the oracle
    torch.save(module.state_dict(), tmp_path / "trap.pt")
    (tmp_path / "s.snn").write_text(spec_text("trap.pt", "dense(2, tanh)\n  dense(2)"))
    with pytest.raises(SpecError, match="does not determine which array is layer 1") as info:
        elaborate(str(tmp_path / "s.snn"))
    err = info.value
    assert err.span is not None and err.span.line == 3  # the first dense layer
    assert "W1" in err.fix and ".npz" in err.fix
    proc = run(["s.snn"], tmp_path)
    clean_failure(proc)
    assert proc.stderr.startswith("s.snn:3:3: error: weight file trap.pt does not determine")


def test_the_same_weights_by_explicit_names_refute_the_claim(tmp_path):
    sd = square_trap().state_dict()
    np.savez(tmp_path / "named.npz", W2=sd["out.weight"].numpy(), b2=sd["out.bias"].numpy(),
             W1=sd["hidden.weight"].numpy(), b1=sd["hidden.bias"].numpy())
    (tmp_path / "s.snn").write_text(spec_text("named.npz", "dense(2, tanh)\n  dense(2)"))
    proc = run(["s.snn"], tmp_path, timeout=300)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)  # exit 1: something refuted
    assert "refuted" in proc.stdout


@pytest.mark.parametrize("suffix", [".pt", ".npz"])
def test_distinct_shapes_out_first_load_in_the_modules_order(suffix, tmp_path):
    torch.manual_seed(4)
    module = OutFirst(2, 3, 1).double()
    state = module.state_dict()
    assert list(state)[0] == "out.weight"
    if suffix == ".pt":
        torch.save(state, tmp_path / f"w{suffix}")
    else:
        np.savez(tmp_path / f"w{suffix}", **{k: v.numpy() for k, v in state.items()})
    (tmp_path / "s.snn").write_text(spec_text(f"w{suffix}", "dense(3, tanh)\n  dense(1)"))
    weights = loaded(elaborate(str(tmp_path / "s.snn")))
    for x in np.random.default_rng(0).uniform(-1, 1, (20, 2)):
        theirs = module(torch.tensor(x)).detach().numpy()
        np.testing.assert_allclose(tanh_mlp(weights, x, 2), theirs, rtol=0, atol=1e-9)


def test_sequential_loads_by_numeric_index_whatever_the_key_order(tmp_path):
    """Six square layers (keys 0..10): only the indices say the order, and `10` comes after
    `2` although it sorts before it as text; the saved key order is reversed on purpose."""
    torch.manual_seed(5)
    mods = []
    for k in range(6):
        mods += [nn.Linear(2, 2)] + ([nn.Tanh()] if k < 5 else [])
    module = nn.Sequential(*mods).double()
    state = OrderedDict(reversed(list(module.state_dict().items())))
    torch.save(state, tmp_path / "seq.pt")
    layers = "\n  ".join(["dense(2, tanh)"] * 5 + ["dense(2)"])
    (tmp_path / "s.snn").write_text(spec_text("seq.pt", layers, claim=""))
    weights = loaded(elaborate(str(tmp_path / "s.snn")))
    for x in np.random.default_rng(1).uniform(-1, 1, (20, 2)):
        theirs = module(torch.tensor(x)).detach().numpy()
        np.testing.assert_allclose(tanh_mlp(weights, x, 6), theirs, rtol=0, atol=1e-9)


def test_a_sequential_with_an_activation_module_between_keeps_loading(tmp_path):
    torch.manual_seed(6)
    module = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 4), nn.Tanh(),
                           nn.Linear(4, 1)).double()
    torch.save(module.state_dict(), tmp_path / "seq.pt")
    (tmp_path / "s.snn").write_text(
        spec_text("seq.pt", "dense(4, tanh)\n  dense(4, tanh)\n  dense(1)", claim=""))
    weights = loaded(elaborate(str(tmp_path / "s.snn")))
    x = np.array([0.3, -0.7])
    np.testing.assert_allclose(tanh_mlp(weights, x, 3), module(torch.tensor(x)).detach().numpy(),
                               rtol=0, atol=1e-9)


def test_a_layer_without_bias_does_not_borrow_the_next_modules_bias(tmp_path):
    module = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Tanh(), nn.Linear(2, 2)).double()
    torch.save(module.state_dict(), tmp_path / "w.pt")
    (tmp_path / "s.snn").write_text(spec_text("w.pt", "dense(2, tanh)\n  dense(2)", claim=""))
    with pytest.raises(SpecError, match="has no `bias`") as info:
        elaborate(str(tmp_path / "s.snn"))
    assert "bias=false" in info.value.fix and info.value.span.line == 3
    (tmp_path / "s.snn").write_text(
        spec_text("w.pt", "dense(2, tanh, bias=false)\n  dense(2)", claim=""))
    weights = loaded(elaborate(str(tmp_path / "s.snn")))
    x = np.array([0.5, -0.25])
    np.testing.assert_allclose(tanh_mlp(weights, x, 2), module(torch.tensor(x)).detach().numpy(),
                               rtol=0, atol=1e-9)


class Boom:
    """Unpickling this would create `marker`: torch.load must refuse it (weights_only)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("payload, found", [
    (lambda sd, tmp: torch.zeros(2), "holds a Tensor, not a state_dict"),
    (lambda sd, tmp: [sd["0.weight"]], "holds a list, not a state_dict"),
    (lambda sd, tmp: {"model": sd, "epoch": 3}, "entry `model` of weight file w.pt is an"),
    (lambda sd, tmp: {**sd, "step": 7}, "entry `step` of weight file w.pt is an int"),
])
def test_a_pt_file_that_is_not_a_state_dict_is_a_located_error(payload, found, tmp_path):
    sd = nn.Sequential(nn.Linear(2, 1)).double().state_dict()
    torch.save(payload(sd, tmp_path), tmp_path / "w.pt")
    (tmp_path / "s.snn").write_text(spec_text("w.pt", "dense(1)", claim=""))
    with pytest.raises(SpecError, match=found) as info:
        elaborate(str(tmp_path / "s.snn"))
    assert info.value.span is not None and info.value.span.line == 2
    assert "state_dict()" in info.value.fix


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"0.weight": Boom(str(marker))}, tmp_path / "w.pt")
    (tmp_path / "s.snn").write_text(spec_text("w.pt", "dense(1)", claim=""))
    proc = run(["s.snn"], tmp_path)
    clean_failure(proc)
    assert "s.snn:2:" in proc.stderr and "pickled objects besides tensors" in proc.stderr
    assert "fix: save `model.state_dict()`" in proc.stderr
    assert not marker.exists()


def test_a_weight_file_that_is_a_fifo_is_refused(tmp_path):
    os.mkfifo(tmp_path / "w.npz")
    (tmp_path / "s.snn").write_text(spec_text("w.npz", "dense(1)", claim=""))
    with pytest.raises(SpecError, match="weight file .*w.npz is a FIFO"):
        elaborate(str(tmp_path / "s.snn"))


# ---- imports ----------------------------------------------------------------------------------


def lib_text() -> str:
    return "input y : real\n"


def test_import_of_proc_environ_is_refused_without_echoing_it(tmp_path):
    secret = "snn-secret-value-4711"
    (tmp_path / "s.snn").write_text('import "/proc/self/environ"\ninput x : real\n')
    proc = run(["s.snn"], tmp_path, env={"SNN_TEST_SECRET": secret})
    clean_failure(proc)
    assert secret not in proc.stderr
    assert proc.stderr.startswith("s.snn:1:1: error: import of /proc/self/environ reaches "
                                  "outside the spec's folder")
    assert "--allow-import" in proc.stderr and IMPORT_PATH_VAR in proc.stderr


def test_imports_stay_under_the_specs_folder_unless_allowed(tmp_path, monkeypatch):
    monkeypatch.delenv(IMPORT_PATH_VAR, raising=False)
    (tmp_path / "lib.snn").write_text(lib_text())
    proj = tmp_path / "proj"
    (proj / "sub").mkdir(parents=True)
    (proj / "sub" / "inner.snn").write_text('import "../outside_is_fine_here.snn"\n')
    (proj / "outside_is_fine_here.snn").write_text("input z : real\n")
    (proj / "s.snn").write_text('import "sub/inner.snn"\nimport "../lib.snn"\n')
    with pytest.raises(SpecError, match=r"import of .*lib.snn reaches outside") as info:
        elaborate(str(proj / "s.snn"))
    assert info.value.span.line == 2
    spec = elaborate(str(proj / "s.snn"), import_roots=[str(tmp_path)])
    assert sorted(t.name for t in spec.inputs) == ["y", "z"]
    monkeypatch.setenv(IMPORT_PATH_VAR, os.pathsep.join(["", str(tmp_path / "nowhere"),
                                                         str(tmp_path)]))
    assert len(elaborate(str(proj / "s.snn")).inputs) == 2


def test_a_symlink_out_of_the_folder_is_resolved_and_refused(tmp_path):
    (tmp_path / "lib.snn").write_text(lib_text())
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "link.snn").symlink_to(tmp_path / "lib.snn")
    (proj / "s.snn").write_text('import "link.snn"\n')
    with pytest.raises(SpecError, match="reaches outside"):
        elaborate(str(proj / "s.snn"))


@pytest.mark.parametrize("make, kind", [
    (lambda p: os.mkfifo(p), "a FIFO"),
    (lambda p: p.mkdir(), "a directory"),
    (lambda p: p.symlink_to("/dev/zero"), "a character device"),
])
def test_special_files_are_refused_as_imports(make, kind, tmp_path):
    make(tmp_path / "lib.snn")
    (tmp_path / "s.snn").write_text('input x : real\nimport "lib.snn"\n')
    start = time.monotonic()
    with pytest.raises(SpecError, match=f"imported file .*lib.snn is {kind}") as info:
        elaborate(str(tmp_path / "s.snn"), import_roots=["/dev"])
    assert time.monotonic() - start < 5
    assert info.value.span.line == 2


def test_special_files_are_refused_as_the_spec(tmp_path):
    os.mkfifo(tmp_path / "fifo.snn")
    for path, kind in (("/dev/zero", "a character device"), ("fifo.snn", "a FIFO"),
                       (".", "a directory")):
        proc = run([path], tmp_path, timeout=60)
        clean_failure(proc)
        assert proc.stderr.startswith(f"error: spec file {path} is {kind}"), proc.stderr


def test_reads_are_bounded(tmp_path):
    (tmp_path / "big.snn").write_bytes(b"#" * (MAX_SOURCE_BYTES + 10))
    (tmp_path / "s.snn").write_text('import "big.snn"\n')
    with pytest.raises(SpecError, match=f"larger than {MAX_SOURCE_BYTES} bytes") as info:
        elaborate(str(tmp_path / "s.snn"))
    assert info.value.span.line == 1


def test_error_echoes_are_truncated_and_free_of_control_characters(tmp_path):
    line = "let a = " + "x + " * 300 + "\x1b[2J\x07 ** \u202e 2"
    (tmp_path / "s.snn").write_text("input x : real\n" + line + "\n")
    proc = run(["s.snn"], tmp_path)
    clean_failure(proc)
    assert "\x1b" not in proc.stderr and "\x07" not in proc.stderr
    assert "\u202e" not in proc.stderr
    quoted = proc.stderr.splitlines()[1]
    assert quoted.startswith("   2 | ...") and len(quoted) <= len("   2 | ") + MAX_ECHO + 6
    assert "unexpected character '\\x1b'" in proc.stderr.splitlines()[0]
    caret = proc.stderr.splitlines()[2]
    assert quoted[caret.index("^"):].startswith("?[2J?")  # still under the escape character


# ---- result files of verify-vnn ---------------------------------------------------------------


def vnn_args(*extra: str) -> list[str]:
    return ["--onnx", str(VNN_DATA / "test_nano.onnx"),
            "--vnnlib", str(VNN_DATA / "test_nano.vnnlib"), "--timeout", "60", *extra]


def refuse_work(monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("verify-vnn started deciding before checking its output paths")
    monkeypatch.setattr(vnn, "check", no_work)


@pytest.mark.parametrize("target", ["fifo", "dir", "link_to_dev_null", "/dev/full"])
def test_answer_path_naming_a_special_file_is_refused_before_work(target, tmp_path, capsys,
                                                                  monkeypatch):
    refuse_work(monkeypatch)
    path = tmp_path / target
    if target == "fifo":
        os.mkfifo(path)
    elif target == "dir":
        path.mkdir()
    elif target == "link_to_dev_null":
        path.symlink_to("/dev/null")
    else:
        path = Path(target)
    before = os.stat(path).st_mode
    code = vnn.main(vnn_args("--answer", str(path)))
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"error: answer file {path} is a")
    assert "refusing to replace it" in err and "Traceback" not in err
    assert os.stat(path).st_mode == before and os.path.lexists(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if target.startswith("/")
                                                         else [target])


def test_artifacts_path_that_is_a_file_is_refused(tmp_path, capsys, monkeypatch):
    refuse_work(monkeypatch)
    (tmp_path / "art").write_text("keep me")
    assert vnn.main(vnn_args("--artifacts", str(tmp_path / "art"))) == 2
    assert "not a directory" in capsys.readouterr().err
    assert (tmp_path / "art").read_text() == "keep me"


def test_answer_and_artifacts_are_written_whole(tmp_path):
    (tmp_path / "answer.txt").write_text("stale\n")
    proc = run(vnn_args("--answer", "answer.txt", "--artifacts", "art"), tmp_path,
               module="verifier.vnn")
    assert proc.returncode in (0, 1, 3), proc.stderr
    answer = (tmp_path / "answer.txt").read_text()
    assert answer.splitlines()[0] == proc.stdout.splitlines()[0]
    assert (tmp_path / "art" / "summary.json").exists()
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_write_text_atomically(tmp_path):
    old = os.umask(0o027)
    try:
        target = tmp_path / "sub" / "out.txt"
        write_text_atomically(str(target), "one\n")
        write_text_atomically(str(target), "two\n")
        assert target.read_text() == "two\n"
        assert stat.S_IMODE(target.stat().st_mode) == 0o640
        link = tmp_path / "link.txt"
        link.symlink_to(target)
        write_text_atomically(str(link), "three\n")
        assert link.is_symlink() and target.read_text() == "three\n"
        assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["out.txt"]
    finally:
        os.umask(old)
    (tmp_path / "dangling").symlink_to(tmp_path / "missing")
    with pytest.raises(SpecError, match="symbolic link to nothing"):
        check_writable_target(str(tmp_path / "dangling"))
    (tmp_path / "file").write_text("")
    with pytest.raises(SpecError, match="(?i)not a directory"):
        check_writable_target(str(tmp_path / "file" / "x.txt"))


def test_installed_verify_vnn_refuses_dev_full():
    exe = shutil.which("verify-vnn")
    args = [exe] if exe else command("verifier.vnn")
    proc = subprocess.run(args + vnn_args("--answer", "/dev/full"), capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: answer file /dev/full is a character device")
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


@pytest.mark.parametrize("text", ['import "a\x00b.snn"\n',
                                  'network f(in=2) load "w\x00.npz" {\n  dense(1)\n}\n'])
def test_a_nul_character_in_a_path_is_a_located_error(text, tmp_path):
    (tmp_path / "s.snn").write_text(text)
    proc = run(["s.snn"], tmp_path)
    clean_failure(proc)
    assert proc.stderr.startswith("s.snn:1:") and "NUL character" in proc.stderr
