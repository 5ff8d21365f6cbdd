"""Compiled symbolic gradients against PyTorch autograd and scalarised sympy.lambdify.

In one run, for the Gaussian fit (2-3-3-1 tanh, 441 points, batch 10), the Hamiltonian
network (2-4-1 tanh, 400 points, batch 10, loss on the symplectic gradient, i.e. a mixed
derivative) and a 16-32-32-1 tanh network (10,000 points, batch 100; plus the Hamiltonian
loss on it): one training epoch with Adam and one gradient on a batch of 10,000, ours
(`verifier.api`, float64 numpy; by default each compiled call limits numpy's BLAS to one
thread, and again with `blas_threads=None`, BLAS as configured) against PyTorch autograd
(float64, `torch.optim.Adam`) with one intra-op thread and with its default thread count.
Then code generation times: ours, our scalar fallback (`matrix=False`, code from the Program)
and the naive route of inlining the network, `sympy.diff` per parameter and
`sympy.lambdify(cse=True)`, under a CPU-time limit, with its evaluation time when it
finishes. Each cell is the median wall time and, in parentheses, the median CPU time of the
process (all threads): on a shared machine wall time counts other tenants, CPU time counts
spinning threads.

    python bench/compiled.py [--limit SECONDS] [--out bench/compiled.md]
"""

from __future__ import annotations

import argparse
import glob
import itertools
import multiprocessing as mp
import os
import platform
import queue
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from derivecommon import write_table

from verifier import api

CASES = {  # name: (input size, hidden widths, data points, batch, loss)
    "gauss 2-3-3-1": (2, (3, 3), 441, 10, "mse"),
    "hamiltonian 2-4-1": (2, (4,), 400, 10, "hamiltonian"),
    "16-32-32-1": (16, (32, 32), 10_000, 100, "mse"),
    "16-32-32-1 hamiltonian": (16, (32, 32), 10_000, 100, "hamiltonian"),
}
BIG = 10_000
PARAMS = 16 * 32 + 32 + 32 * 32 + 32 + 32 + 1  # of 16-32-32-1


def arch(n_in, hidden) -> str:
    layers = "".join(f"  dense({h}, tanh)\n" for h in hidden)
    return f"input x : real[{n_in}]\nnetwork f(in={n_in}) {{\n{layers}  dense(1)\n}}\n"


def data(n_in, points, loss, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, (points, n_in))
    if loss == "hamiltonian":
        d = n_in // 2
        return X, np.concatenate([X[:, d:], -X[:, :d]], axis=1)  # H = |x|^2 / 2
    return X, np.exp(-(X**2).sum(axis=1, keepdims=True))


def median_time(fn, repeat):
    """(median wall time, median CPU time of the process, all threads) per call."""
    fn()
    wall, cpu = [], []
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return float(np.median(wall)), float(np.median(cpu))


# ---- ours ---------------------------------------------------------------------------------


def ours(name, blas_threads=1):
    n_in, hidden, points, batch, loss = CASES[name]
    net = api.compile_text(arch(n_in, hidden), seed=0, blas_threads=blas_threads)
    X, T = data(n_in, points, loss)
    Xb, Tb = data(n_in, BIG, loss, seed=1)
    grad = (net.hamiltonian_loss_and_grad if loss == "hamiltonian" else net.loss_and_grad)
    opt = api.Adam(net.params, lr=1e-3)

    def epoch():
        for s in range(0, len(X), batch):
            opt.step(grad(X[s:s + batch], T[s:s + batch])[1])

    return {"epoch": median_time(epoch, 3), "grad": median_time(lambda: grad(Xb, Tb), 10)}


# ---- PyTorch ------------------------------------------------------------------------------


def torch_case(name, threads):
    import torch

    torch.set_num_threads(threads)
    n_in, hidden, points, batch, loss = CASES[name]
    widths = (n_in, *hidden)
    layers = []
    for a, b in itertools.pairwise(widths):
        layers += [torch.nn.Linear(a, b), torch.nn.Tanh()]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(widths[-1], 1)).double()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    d = n_in // 2

    def loss_of(X, T):
        if loss != "hamiltonian":
            return ((model(X) - T) ** 2).sum() / len(X)
        X = X.detach().requires_grad_(True)
        (G,) = torch.autograd.grad(model(X).sum(), X, create_graph=True)
        return ((torch.cat([G[:, d:], -G[:, :d]], dim=1) - T) ** 2).sum() / len(X)

    X, T = (torch.tensor(a) for a in data(n_in, points, loss))
    Xb, Tb = (torch.tensor(a) for a in data(n_in, BIG, loss, seed=1))

    def epoch():
        for s in range(0, len(X), batch):
            opt.zero_grad()
            loss_of(X[s:s + batch], T[s:s + batch]).backward()
            opt.step()

    def grad():
        model.zero_grad()
        loss_of(Xb, Tb).backward()

    return {"epoch": median_time(epoch, 3), "grad": median_time(grad, 10)}


# ---- code generation ------------------------------------------------------------------------


def generation(name, matrix=True):
    n_in, hidden, *_ = CASES[name]
    t0 = time.process_time()
    net = api.compile_text(arch(n_in, hidden), matrix=matrix)
    t1 = time.process_time()
    net.compile_all(mixed=matrix)  # the fallback's mixed pullbacks: see the README
    out = {"elaborate": t1 - t0, "generate": time.process_time() - t1}
    if not matrix:
        Xb, Tb = data(n_in, BIG, "mse", seed=1)
        out["grad"] = median_time(lambda: net.loss_and_grad(Xb, Tb), 3)[0]
    return out


def bundled_generation():
    """(spec, network, times) for every network of specs/ and examples/, each in a fresh
    process so that sympy's cache from one does not speed up the next."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = sorted(glob.glob(os.path.join(root, "specs", "*.snn"))
                   + glob.glob(os.path.join(root, "examples", "*.snn")))
    out = []
    for path in paths:
        with mp.Pool(1) as pool:
            names = pool.apply(_network_names, (path,))
        for name in names:
            with mp.Pool(1) as pool:
                out.append((os.path.relpath(path, root), name,
                            pool.apply(_generate_bundled, (path, name))))
    return out


def _network_names(path):
    from verifier.elaborate import elaborate

    return [n.name for n in elaborate(path).networks]


def _generate_bundled(path, name):
    from verifier.elaborate import elaborate

    t0 = time.process_time()
    net = api.compile_network(elaborate(path), name)
    t1 = time.process_time()
    net.compile_all(mixed=False)
    t2 = time.process_time()
    net.compile_all(mixed=True)
    return {"elaborate": t1 - t0, "generate": t2 - t1, "mixed": time.process_time() - t2,
            "code": "matrix" if net.matrix_level else "scalar fallback"}


def _lambdify_child(n_in, hidden, limit, q):
    """Inline the output, sympy.diff per parameter, lambdify(cse=True); then evaluate.

    Runs under a CPU-time limit (RLIMIT_CPU): the kernel stops it when the limit is spent.
    """
    import resource
    import tempfile

    import sympy as sp

    from verifier import run

    resource.setrlimit(resource.RLIMIT_CPU, (int(limit), int(limit) + 1))
    t0 = time.process_time()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "net.snn")
        with open(path, "w") as fh:
            fh.write(arch(n_in, hidden) + "derive output f(x)\n")
        model = run.load(path)
    f = model.program.inline(model.derivations[0].terms[0], limit=None)
    q.put(("inline", time.process_time() - t0))
    xs = [v.symbol for v in model.inputs]
    ws = [v.symbol for v in model.params]
    grads = []
    for w in ws:
        grads.append(sp.diff(f, w))
        q.put(("diffs", len(grads)))
    q.put(("diff", time.process_time() - t0))
    fn = sp.lambdify(xs + ws, [f] + grads, modules="numpy", cse=True)
    q.put(("gen", time.process_time() - t0))
    X, Y = data(n_in, BIG, "mse", seed=1)
    W = np.random.default_rng(1).uniform(-0.2, 0.2, len(ws))

    def grad():
        vals = fn(*X.T, *W)
        r = 2.0 * (vals[0] - Y[:, 0]) / len(X)
        return [float(np.dot(r, np.broadcast_to(g, r.shape))) for g in vals[1:]]

    q.put(("eval", median_time(grad, 3)[0]))


def lambdify_baseline(name, limit):
    n_in, hidden, *_ = CASES[name]
    q = mp.Queue()
    p = mp.Process(target=_lambdify_child, args=(n_in, hidden, limit, q))
    p.start()
    got = {}
    while p.is_alive() or not q.empty():
        try:
            k, v = q.get(timeout=1.0)
            got[k] = v
        except queue.Empty:
            pass
    p.join()
    return got


# ---- report -----------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=float, default=300.0,
                    help="CPU-time limit for the lambdify baseline (s)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import torch

    default_threads = torch.get_num_threads()
    mine = {n: ours(n) for n in CASES}
    as_is = {n: ours(n, blas_threads=None) for n in CASES}
    one = {n: torch_case(n, 1) for n in CASES}
    default = {n: torch_case(n, default_threads) for n in CASES}

    def ms(t) -> str:
        return f"{1e3 * t[0]:.1f} ({1e3 * t[1]:.1f})" if isinstance(t, tuple) else f"{1e3 * t:.1f}"

    machine = (f"Machine: {os.cpu_count()} cores, {platform.machine()}, Python "
               f"{platform.python_version()}, numpy {np.__version__}, torch {torch.__version__} "
               f"(default {default_threads} threads). float64 everywhere. Cells: median wall ms "
               "(median CPU ms of the process, all threads); ratios of wall times.")
    rows = [
        machine,
        "",
        ("| network | what | ours | ours, BLAS as is | torch, 1 thread | torch, default threads "
         "| ours / torch 1 thread | ours / torch default |"),
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, (_, _, points, batch, _) in CASES.items():
        for what, label in (("epoch", f"epoch ({points} points, batch {batch}, Adam)"),
                            ("grad", f"gradient, batch {BIG}")):
            a, b, t1, td = (d[name][what] for d in (mine, as_is, one, default))
            rows.append(f"| {name} | {label} | {ms(a)} | {ms(b)} | {ms(t1)} | {ms(td)} | "
                        f"{a[0] / t1[0]:.2f} | {a[0] / td[0]:.2f} |")
    rows += ["", ("| network | route | elaborate (CPU s) | generate (CPU s) | gradient, batch "
                  "10,000 (wall ms) |"),
             "|---|---|---|---|---|"]
    for name in ("gauss 2-3-3-1", "hamiltonian 2-4-1", "16-32-32-1"):
        g = generation(name)
        rows.append(f"| {name} | ours, matrix level | {g['elaborate']:.3f} | {g['generate']:.3f} "
                    f"| {ms(mine[name]['grad'][0])} |")
    g = generation("16-32-32-1", matrix=False)
    rows.append(f"| 16-32-32-1 | ours, scalar fallback (Program) | {g['elaborate']:.3f} | "
                f"{g['generate']:.3f} | {ms(g['grad'])} |")
    rows += ["", ("Every network of the bundled specs (CPU s; generate: every function but the "
                  "scalar fallback's pullbacks of pullbacks, which are generated on first use of "
                  "a mixed derivative):"), "",
             "| spec | network | code | elaborate | generate | fallback second order |",
             "|---|---|---|---|---|---|"]
    for path, name, g in bundled_generation():
        rows.append(f"| {path} | {name} | {g['code']} | {g['elaborate']:.2f} | "
                    f"{g['generate']:.2f} | {g['mixed']:.2f} |")
    lb = lambdify_baseline("16-32-32-1", args.limit)
    gen = f"{lb['gen']:.1f}" if "gen" in lb else (
        f"> {args.limit:.0f} (CPU time limit; inline {lb.get('inline', float('nan')):.1f} s, "
        f"then sympy.diff for {lb.get('diffs', 0)} of {PARAMS} parameters)")
    ev = ms(lb["eval"]) if "eval" in lb else "-"
    rows.append(f"| 16-32-32-1 | inline + sympy.diff + lambdify(cse=True) | - | {gen} | {ev} |")
    write_table(rows, args.out)


if __name__ == "__main__":
    main()
