"""Hostile and huge inputs: every one ends in a located error (exit 2), never in our bug (exit 4)
or a memory kill.

Each case builds its files in a fresh folder and runs `verify` or `verify-vnn` in a forked
child (the imports are paid once, in this process) under an address-space limit; the parent
reads the child's exit status and peak resident memory (`os.wait4`). A case passes when the
exit status is 2, stderr starts with `FILE:LINE:COL: error:` where the input is a file we wrote
(`error:` for command-line mistakes), carries a `fix:` hint where the issue asks for one,
shows no traceback, and the child's peak RSS stays under `MAX_RSS`.

`python tests/test_hostile.py` runs every case at the issue's sizes (50,000-term sums, 50,000
disjuncts) and prints one line per case and the count.
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import os
import pickle
import re
import resource
import signal
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

MAX_RSS = 1536 * 2**20  # bytes: the bound on a child's peak resident memory
AS_HEADROOM = 3 * 2**30  # address space a child may add to what it inherits
CASE_SECONDS = 60
LOCATED = re.compile(r"^(?P<file>[^\n]+?):(?P<line>\d+):(?P<col>\d+): error: ", re.M)


@dataclass
class Case:
    name: str
    tool: str  # "verify" or "verify-vnn"
    files: dict  # relative path -> bytes, text ("@link:TARGET": a symlink) or a function of ()
    args: list[str]  # relative paths are resolved in the case folder
    located: str | None  # file the error must point into; None: a plain `error:` line
    fix: bool = True  # the message must carry a `fix:` hint
    words: tuple[str, ...] = ()  # words the message must contain
    extra: dict = field(default_factory=dict)


# ---- spec texts ------------------------------------------------------------------------------

DEEP = 10_000
# the sizes; the test suite runs the same classes at sizes still far past every limit
FULL = os.environ.get("HOSTILE_FULL") == "1" or __name__ == "__main__"
TERMS = 50_000 if FULL else 5_000
DISJUNCTS = 50_000 if FULL else 5_000
HEAD = "input x : real[2] in [-1, 1]\n"


def _spec(name: str, body: str, *, words=(), fix=True, head=HEAD) -> Case:
    return Case(name, "verify", {"s.snn": head + body}, ["s.snn"], "s.snn", fix, words)


def spec_cases() -> list[Case]:
    out = [
        _spec("deep_parentheses", "claim c: " + "(" * DEEP + "x[0]" + ")" * DEEP + " <= 1\n",
              words=("nested",)),
        _spec("deep_lists", "param w : real = " + "[" * DEEP + "1" + "]" * DEEP + "\n",
              words=("nested",)),
        _spec("deep_calls", "claim c: " + "tanh(" * DEEP + "x[0]" + ")" * DEEP + " <= 1\n",
              words=("nested",)),
        _spec("deep_negations", "claim c: " + "- " * DEEP + "x[0] <= 1\n", words=("nested",)),
        _spec("deep_powers", "claim c: x[0]" + " ^ 1" * DEEP + " <= 1\n", words=("nested",)),
        _spec("deep_indexing", "claim c: x" + "[0]" * DEEP + " <= 1\n", words=("nested",)),
        _spec(f"sum_{TERMS}_terms", "claim c: " + " + ".join(["x[0]"] * TERMS) + " <= 1\n"),
        _spec(f"product_{TERMS}_factors", "claim c: " + " * ".join(["x[0]"] * TERMS)
              + " <= 1\n"),
        _spec("million_char_line", "claim c: x[0] + " + "1" * 1_000_000 + " <= 1\n"),
        _spec("million_char_name", "claim c: " + "a" * 1_000_000 + " <= 1\n"),
        _spec("huge_integer", "claim c: x[0] <= " + "9" * 100_000 + "\n"),
        _spec("huge_integer_power", "claim c: x[0] <= 10 ^ 1000000\n", fix=False),
        _spec("huge_exponent_numeral", "claim c: x[0] <= 1e1000000\n"),
        _spec("huge_variable_power", "claim c: x[0] ^ 100000000 <= 1\n", fix=False),
        _spec("dense_million_inputs", "network f(in=1000000) { dense(1) }\n"
              "input z : real[1000000] in [0, 1]\nclaim c: f(z)[0] <= 1\n", head=""),
        _spec("million_entry_input", "input z : real[1000, 1000] in [0, 1]\n"
              "claim c: sum(z) <= 1000000\n", head=""),
        _spec("lstm_hidden_500", "input z : real[4, 2]\nnetwork f(in=[4, 2]) "
              "{ lstm(hidden=500) }\nclaim c: grad(f(z)[0], f.bias_ih_l0) == "
              "grad(f(z)[0], f.bias_hh_l0)\n", head=""),
        _spec("long_sequence", "input z : real[5000, 2]\nnetwork f(in=[5000, 2]) "
              "{ lstm(hidden=8) }\nderive output f(z)\n", head=""),
        _spec("huge_repeat", "let r = repeat(x, 1000000)\nclaim c: sum(r) <= 1\n", fix=False),
        _spec("deep_hessian", "input z : real[120]\nnetwork f(in=120) { dense(120, tanh) "
              "dense(120, tanh) dense(120, tanh) dense(1) }\n"
              "derive hessian f(z)[0] wrt z\n", head="", words=("too large",)),
        _spec("hessian_in_claim", "input z : real[150]\nnetwork f(in=150) { dense(150, tanh) "
              "dense(1) }\nclaim c: sum(hessian(f(z)[0], z)) <= 1\n", head="",
              words=("too large",)),
        _spec("deep_let_chain", "let a0 = x[0]\n" + "".join(
            f"let a{k} = tanh(a{k - 1})\n" for k in range(1, 1000)) + "claim c: a999 <= 1\n",
            words=("let",)),
        _spec("wide_matmul", "input z : real[1000, 1000]\nclaim c: sum(z @ z) <= 1\n",
              head=""),
    ]
    out += [
        Case("spec_is_dev_zero", "verify", {"s.snn": "@link:/dev/zero"}, ["s.snn"], None,
             fix=True, words=("character device",)),
        Case("import_dev_zero", "verify", {"s.snn": 'import "/dev/zero"\n'}, ["s.snn"],
             "s.snn"),
        Case("import_link_to_dev_zero", "verify",
             {"s.snn": 'import "z.snn"\n', "z.snn": "@link:/dev/zero"}, ["s.snn"], "s.snn"),
        Case("huge_spec_file", "verify", {"s.snn": "#" * 3_000_000 + "\n"}, ["s.snn"], None,
             words=("s.snn", "larger than")),
        Case("onnx_in_spec_too_large", "verify",
             {"s.snn": 'input z : real[1500] in [0, 1]\nnetwork f(in=1500) load "big.onnx" { }\n'
                       "claim c: f(z)[0] <= 1\n",
              "big.onnx": relu_onnx(np.zeros((1000, 1500)), np.zeros(1000), np.zeros((1, 1000)),
                                    np.zeros(1))}, ["s.snn"], "s.snn", words=("too large",)),
        Case("max_terms_lowered", "verify", {"s.snn": "input z : real[4]\nnetwork f(in=4) "
                                             "{ dense(8, tanh) dense(1) }\nderive output f(z)\n"},
             ["s.snn", "--max-terms", "50"], "s.snn", words=("too large", "limit 50")),
        Case("max_terms_env_malformed", "verify", {"s.snn": "input z : real\n"}, ["s.snn"], None,
             words=("SNN_VERIFY_MAX_TERMS",), extra={"env": {"SNN_VERIFY_MAX_TERMS": "lots"}}),
        Case("binary_spec", "verify", {"s.snn": b"\xff\xfe\x00garbage"}, ["s.snn"], None,
             fix=False, words=("UTF-8",)),
    ]
    return out


# ---- weight files ----------------------------------------------------------------------------

def _load(weights: str) -> str:
    return (f'input x : real[2] in [-1, 1]\nnetwork f(in=2) load "{weights}" '
            "{ dense(1) }\nclaim c: f(x)[0] <= 100\n")


def _weights(name: str, file: str, content, words=(), fix=False) -> Case:
    return Case(name, "verify", {"s.snn": _load(file), file: content}, ["s.snn"], "s.snn",
                fix, words)


def _torch_bytes(obj, legacy: bool = False) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


def _npy_header(shape) -> bytes:
    header = {"descr": "<f8", "fortran_order": False, "shape": shape}
    text = repr(header).encode("latin1")
    text += b" " * (63 - (len(text) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text


def _npz(arrays: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for k, v in arrays.items():
            z.writestr(k + ".npy", v)
    return buf.getvalue()


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def weight_cases() -> list[Case]:
    import torch

    lin = torch.nn.Linear(2, 1)
    return [
        _weights("weights_dev_zero_json", "w.json", "@link:/dev/zero",
                 words=("character device",), fix=True),
        _weights("weights_dev_zero_npz", "w.npz", "@link:/dev/zero",
                 words=("character device",), fix=True),
        _weights("weights_dev_zero_pt", "w.pt", "@link:/dev/zero",
                 words=("character device",), fix=True),
        _weights("pt_raw_pickle", "w.pt", pickle.dumps({"0.weight": [[1.0, 2.0]]}),
                 words=("torch.save",), fix=True),
        _weights("pt_code_pickle", "w.pt", pickle.dumps(_Evil())),
        _weights("pt_code_pickle_in_zip", "w.pt", _torch_bytes({"a": _Evil()})),
        _weights("pt_legacy_format", "w.pt", _torch_bytes(lin, legacy=True), fix=True),
        _weights("pt_zip_bomb", "w.pt", _zip_bomb),
        _weights("pt_module", "w.pt", _torch_bytes(lin), fix=True),
        _weights("pt_nested_lists", "w.pt", _torch_bytes([[1.0, 2.0], [3.0]]),
                 words=("list",), fix=True),
        _weights("pt_plain_tensor", "w.pt", _torch_bytes(torch.zeros(1, 2)),
                 words=("Tensor",), fix=True),
        _weights("pt_non_tensor_values", "w.pt", _torch_bytes({"weight": 3, "bias": "b"}),
                 words=("int",), fix=True),
        _weights("pt_truncated", "w.pt", _torch_bytes(lin.state_dict())[:200]),
        _weights("npz_huge_declared_shape", "w.npz",
                 _npz({"W1": _npy_header((10**6, 10**6)), "b1": _npy_header((1,))})),
        _weights("npz_shape_overflows", "w.npz",
                 _npz({"W1": _npy_header((2**62, 2**62))})),
        _weights("npz_zip_bomb_entry", "w.npz", _zip_bomb),
        _weights("json_deep_lists", "w.json", "[" * DEEP + "]" * DEEP),
        _weights("json_deep_object", "w.json", '{"W1": ' + "[" * DEEP + "]" * DEEP + "}"),
        _weights("json_huge_number", "w.json", '{"W1": [[1e999999, 1]], "b1": [0]}'),
        _weights("json_ragged", "w.json", '{"W1": [[1, 2], [3]], "b1": [0]}'),
        _weights("json_strings", "w.json", '{"W1": [["a", "b"]], "b1": [0]}'),
        _weights("json_huge_int", "w.json", '{"W1": [[' + "9" * 5000 + ', 1]], "b1": [0]}'),
    ]


@functools.lru_cache(maxsize=1)
def _zip_bomb() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        with z.open("W1.npy", "w") as fh:
            fh.write(_npy_header((1, 300 * 2**17)))
            block = b"\0" * 2**20
            for _ in range(300):  # 300 MiB of zeros (the limit is 256 MiB), 300 KB compressed
                fh.write(block)
    return buf.getvalue()


# ---- VNN-LIB and ONNX ------------------------------------------------------------------------

def relu_onnx(w1, b1, w2, b2) -> bytes:
    """A 1-hidden-layer ReLU network as ONNX bytes (Gemm, Relu, Gemm)."""
    from onnx import TensorProto, helper, numpy_helper

    w1, b1, w2, b2 = (np.asarray(a, dtype=np.float32) for a in (w1, b1, w2, b2))
    n_in, n_out = w1.shape[1], w2.shape[0]
    inits = [numpy_helper.from_array(a, n) for a, n in
             ((w1, "W1"), (b1, "B1"), (w2, "W2"), (b2, "B2"))]
    nodes = [helper.make_node("Gemm", ["X", "W1", "B1"], ["H"], transB=1),
             helper.make_node("Relu", ["H"], ["R"]),
             helper.make_node("Gemm", ["R", "W2", "B2"], ["Y"], transB=1)]
    graph = helper.make_graph(
        nodes, "relu", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, n_in])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, n_out])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def small_onnx() -> bytes:
    return relu_onnx([[1, -1], [0.5, 1]], [0, 0.1], [[1, 1]], [0])


def huge_dims_onnx() -> bytes:
    from onnx import TensorProto, helper

    weight = TensorProto(name="W1", data_type=TensorProto.FLOAT, dims=[2**40, 2],
                         raw_data=b"\0" * 8)  # declares 2^41 floats, holds 2
    nodes = [helper.make_node("MatMul", ["X", "W1"], ["Y"])]
    graph = helper.make_graph(
        nodes, "huge", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 2])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


VHEAD = "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n"
VBOX = ("(assert (>= X_0 -1))\n(assert (<= X_0 1))\n(assert (>= X_1 -1))\n"
        "(assert (<= X_1 1))\n")


def _vnn(name: str, text, words=(), fix=False, onnx=None, extra_args=()) -> Case:
    return Case(name, "verify-vnn", {"n.onnx": onnx or small_onnx(), "p.vnnlib": text},
                ["--onnx", "n.onnx", "--vnnlib", "p.vnnlib", "--timeout", "20",
                 *extra_args], "p.vnnlib", fix, words)


def vnn_cases() -> list[Case]:
    long_digits = "1" * 200_000
    gz = gzip.compress((VHEAD + VBOX + "(assert (>= Y_0 100))\n").encode())
    out = [
        _vnn("vnn_exponent_1e1000000", VHEAD + VBOX + "(assert (>= Y_0 1e1000000))\n",
             fix=True),
        _vnn("vnn_negative_huge_exponent", VHEAD + VBOX + "(assert (>= Y_0 1e-1000000))\n",
             fix=True),
        _vnn("vnn_long_number", VHEAD + VBOX + f"(assert (>= Y_0 {long_digits}))\n", fix=True),
        _vnn("vnn_long_fraction", VHEAD + VBOX + f"(assert (>= Y_0 0.{long_digits}))\n",
             fix=True),
        _vnn("vnn_deep_and", VHEAD + VBOX + "(assert " + "(and " * DEEP + "(>= Y_0 100)"
             + ")" * DEEP + ")\n", fix=True),
        _vnn("vnn_deep_plus", VHEAD + VBOX + "(assert (>= " + "(+ 1 " * DEEP + "Y_0"
             + ")" * DEEP + " 100))\n", fix=True),
        _vnn("vnn_deep_parentheses", VHEAD + VBOX + "(" * DEEP + ")" * DEEP + "\n", fix=True),
        _vnn(f"vnn_{DISJUNCTS}_disjuncts", VHEAD + VBOX + "(assert (or "
             + " ".join(f"(>= Y_0 {k + 100})" for k in range(DISJUNCTS)) + "))\n", fix=True),
        _vnn("vnn_dnf_product", VHEAD + VBOX + "".join(
            f"(assert (or (>= Y_0 {k}) (<= Y_0 -{k + 100})))\n" for k in range(20)), fix=True),
        _vnn("vnn_unbounded_linear_inputs", VHEAD + "(assert (>= X_0 -1))\n(assert (<= X_0 1))\n"
             "(assert (>= (+ X_0 X_1) 0))\n(assert (>= Y_0 100))\n", fix=True,
             words=("unbounded",)),
        _vnn("vnn_truncated_gz", gz[: len(gz) // 2]),
        _vnn("vnn_corrupt_gz", b"\x1f\x8b\x08\x00" + b"garbage" * 10),
        _vnn("vnn_gz_bomb", lambda: gzip.compress(b" " * (129 * 2**20), compresslevel=1)),
        _vnn("vnn_huge_file", lambda: b" " * (129 * 2**20)),
        _vnn("vnn_binary", b"\xff\xfe\x00\x01"),
        _vnn("vnn_onnx_huge_dims", VHEAD + VBOX + "(assert (>= Y_0 100))\n",
             onnx=huge_dims_onnx()),
    ]
    for case in out:
        if case.name.endswith("_gz") or case.name == "vnn_gz_bomb":
            case.files["p.vnnlib.gz"] = case.files.pop("p.vnnlib")
            case.args[3] = "p.vnnlib.gz"
            case.located = None
        if case.name in ("vnn_onnx_huge_dims", "vnn_huge_file"):
            case.located = None
    good = VHEAD + VBOX + "(assert (>= Y_0 100))\n"
    out += [
        _vnn("vnn_answer_is_dir", good, extra_args=("--answer", "adir")),
        _vnn("vnn_artifacts_is_file", good, extra_args=("--artifacts", "afile")),
        _vnn("vnn_onnx_dev_zero", good),
        _vnn("vnn_vnnlib_dev_zero", "@link:/dev/zero"),
    ]
    out[-4].files["adir/keep"] = ""
    out[-3].files["afile"] = "x"
    out[-2].files["n.onnx"] = "@link:/dev/zero"
    for case in out[-4:]:
        case.located = None
    return out


def all_cases() -> list[Case]:
    return spec_cases() + weight_cases() + vnn_cases()


# ---- running a case in a forked child ------------------------------------------------------

def _vm_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _materialise(case: Case, folder: Path) -> None:
    for rel, content in case.files.items():
        if callable(content):  # built when the case runs: large contents
            content = content()
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str) and content.startswith("@link:"):
            os.symlink(content[len("@link:"):], p)
        elif isinstance(content, str):
            p.write_text(content, encoding="utf-8")
        else:
            p.write_bytes(content)


def _child(case: Case, folder: Path, err_path: Path) -> None:
    """In the forked child: limits, redirected output, the command, exit with its status."""
    try:
        limit = _vm_bytes() + AS_HEADROOM
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        signal.alarm(CASE_SECONDS)
        os.chdir(folder)
        os.environ.update(case.extra.get("env", {}))
        out = os.open(os.devnull, os.O_WRONLY)
        err = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(out, 1)
        os.dup2(err, 2)
        sys.stdout = open(1, "w", closefd=False)
        sys.stderr = open(2, "w", closefd=False)
        if case.tool == "verify":
            from verifier.cli import main

            rc = main([*case.args, "-j", "1", "--no-cache", "--timeout", "10"])
        else:
            from verifier.vnn import main

            rc = main([*case.args, "--workers", "1"])
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    except SystemExit as exc:
        sys.stderr.flush()
        os._exit(exc.code if isinstance(exc.code, int) else 2)
    except BaseException:  # noqa: BLE001 - a traceback here is a failure the parent reports
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        os._exit(99)


@dataclass
class Outcome:
    status: int  # exit status, or -signal
    rss: int  # peak resident bytes of the child
    stderr: str
    seconds: float


@functools.lru_cache(maxsize=1)
def _warm() -> None:
    """Import in the parent what every child needs, so each fork starts warm."""
    import importlib

    for name in ("torch", "onnx", "z3", "sympy", "verifier.cli", "verifier.vnn", "verifier.run",
                 "verifier.terminal", "verifier.cache", "verifier.emit", "verifier.obligations",
                 "verifier.onnx_import", "verifier.engines.relu_bab", "verifier.symbolic.translate"):
        importlib.import_module(name)


def run_case(case: Case, folder: Path) -> Outcome:
    _warm()
    _materialise(case, folder)
    err_path = folder / ".stderr"
    sys.stdout.flush()
    sys.stderr.flush()
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        _child(case, folder, err_path)
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    text = err_path.read_text(errors="replace") if err_path.exists() else ""
    return Outcome(code, usage.ru_maxrss * 1024, text, seconds)


def problems(case: Case, out: Outcome) -> list[str]:
    """What is wrong with the outcome of a case (empty: a clean, located error)."""
    bad = []
    if out.status != 2:
        bad.append(f"exit {out.status}")
    if out.rss > MAX_RSS:
        bad.append(f"peak RSS {out.rss >> 20} MiB")
    if "Traceback" in out.stderr or "internal error" in out.stderr:
        bad.append("traceback or internal error")
    first = out.stderr.lstrip().splitlines()[0] if out.stderr.strip() else ""
    if case.located is not None:
        m = LOCATED.match(out.stderr.lstrip())
        if not m or not m.group("file").endswith(case.located):
            bad.append(f"not located in {case.located}")
    elif "error:" not in out.stderr:
        bad.append("no `error:` line")
    if case.fix and "fix:" not in out.stderr:
        bad.append("no fix hint")
    for w in case.words:
        if w.lower() not in out.stderr.lower():
            bad.append(f"message lacks {w!r}")
    if bad:
        bad.append(f"stderr: {first[:300]!r}")
    return bad


CASES = all_cases()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_hostile_input_is_a_clean_located_error(case, tmp_path):
    out = run_case(case, tmp_path)
    assert not (tmp_path / "pwned.txt").exists()
    assert not problems(case, out), (problems(case, out), out.stderr[-2000:])


def main(pattern: str = "") -> int:
    clean, cases = 0, [c for c in CASES if re.search(pattern, c.name)]
    for case in cases:
        with tempfile.TemporaryDirectory() as d:
            out = run_case(case, Path(d))
            bad = problems(case, out)
            if (Path(d) / "pwned.txt").exists():
                bad.append("a pickle ran code")
        clean += not bad
        print(f"{'ok ' if not bad else 'BAD'} {case.name:32} exit {out.status:>4} "
              f"{out.rss >> 20:>5} MiB {out.seconds:6.2f}s {'; '.join(bad)}", flush=True)
    print(f"{len(cases)} hostile inputs: {clean} clean errors")
    return 0 if clean == len(cases) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main(*sys.argv[1:]))
