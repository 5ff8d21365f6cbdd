"""Shared by the benchmarks: a killable subprocess under a time limit and table output; for
bench/derive.py and bench/families.py also: derive a spec's output, input Jacobian and
input Hessian with snn-verify and count the operations of each program slice; the naive
baseline (inline the network into one sympy expression, `sympy.diff` per input and per pair
of inputs) in a subprocess under a time limit, so that it can be killed."""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time

import sympy as sp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from verifier import run


def load(text: str):
    """The model of a spec given as text, and the wall and CPU seconds it took to derive."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "net.snn")
        with open(path, "w") as fh:
            fh.write(text)
        t0, c0 = time.perf_counter(), time.process_time()
        model = run.load(path)
        return model, time.perf_counter() - t0, time.process_time() - c0


def emit_seconds(model) -> float:
    """Wall seconds to render the JSON and LaTeX artifacts of a model (in memory)."""
    t0 = time.perf_counter()
    run.artifacts(model, [], ["json", "latex"])
    return time.perf_counter() - t0


def flat(terms) -> list:
    """The terms of a derivation (nested tuples) as a flat list, row-major."""
    if isinstance(terms, (tuple, list)):
        return [e for t in terms for e in flat(t)]
    return [terms]


def op_counts(model, entry: int = 0) -> tuple[int, int, int]:
    """Operations of the forward, gradient and Hessian program slices (after hash-consing),
    for output entry `entry`: its value, its row of the Jacobian, and the Hessian."""
    out, jac, hess = (next(d for d in model.derivations if d.kind == k)
                      for k in ("output", "jacobian", "hessian"))
    prog = model.program
    fwd = prog.count_ops([flat(out.terms)[entry]])
    rows = jac.terms if isinstance(jac.terms[0], tuple) else (jac.terms,)
    grad = prog.count_ops(flat(rows[entry]))
    return fwd, grad, prog.count_ops(flat(hess.terms))


def _naive(text: str, entry: int, q) -> None:
    model, _, _ = load(text)
    t0 = time.perf_counter()
    out = next(d for d in model.derivations if d.kind == "output")
    expr = model.program.inline(flat(out.terms)[entry], limit=None)
    xs = [v.symbol for v in model.inputs]
    grads = [sp.diff(expr, x) for x in xs]
    hess = [[sp.diff(g, y) for y in xs] for g in grads]
    q.put((time.perf_counter() - t0, sp.count_ops(expr), sum(sp.count_ops(g) for g in grads),
           sum(sp.count_ops(h) for row in hess for h in row)))


def run_with_limit(target, args: tuple, limit: float):
    """target(*args, queue) in a forked child (which inherits unpicklable state); what it put
    on the queue, or None when it put nothing or still ran after `limit` seconds (killed)."""
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    p.join(limit)
    if p.is_alive():
        p.kill()
        p.join()
        return None
    return q.get() if not q.empty() else None


def naive(text: str, limit: float, entry: int = 0):
    """(seconds, ops of output, gradient, Hessian) of the naive approach, or None on timeout.

    `text` must derive only what the naive run needs (`derive output ...`)."""
    return run_with_limit(_naive, (text, entry), limit)


def write_table(rows: list[str], out: str | None) -> None:
    """Print the markdown lines, and write them to `out` when given."""
    text = "\n".join(rows) + "\n"
    if out:
        with open(out, "w") as fh:
            fh.write(text)
    print(text)


def machine_line(limit: float) -> str:
    return (f"Machine: {os.cpu_count()} cores, {platform.machine()}, Python "
            f"{platform.python_version()}, sympy {sp.__version__}; naive time limit {limit:.0f} s"
            " per case.")
