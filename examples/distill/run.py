"""Distil a graph network into a force law, and certify how far the law is from the network.

The pipeline of Cranmer et al. (2020), "Discovering symbolic models from deep learning with
inductive biases", with a certificate at the end instead of only R^2:

1. simulate particles in the plane under a spring law and under a 1/r^2 law (`simulate.py`);
2. train a message-passing network (`message` layer: edge MLP on (x_i - x_j, r), sum of the
   messages, linear node function) on the accelerations, with the tool's compiled gradients
   and Adam in numpy (no torch);
3. read the messages on every pair seen in the data and keep the most significant components
   (largest standard deviation);
4. fit each by sparse regression over a term library (`sindy.py`), coefficients rounded to
   exact rationals;
5. write a spec `claim close_k: abs(phi(u)[k] - law_k(u)) <= eps_k` for every cell of the
   relative positions u seen in the data (squares of side 1/2 holding at least 20 pairs, all
   pairs at least r_min apart), with phi the edge MLP alone, and decide it with the bound
   engine: eps_k starts at 1.05 times the sampled maximum of |phi - law| and grows until every
   cell is proved, so it is a certified bound; a deliberately wrong law (its leading
   coefficient negated) is refuted with a replayed point;
6. write the certificate's Coq file: each cell's claim a lemma, proved by Interval's
   `interval` tactic with bisection where coqc closes it within its time limit, else
   Admitted with the reason (the JSON and `verify`'s table list the reasons too).

    python examples/distill/run.py [--law spring|inverse_square|all] [--out DIR]

prints, per law, the recovered law, its R^2, the certified eps and its ratio to the sampled
maximum, and the time of each stage; the specs and weights stay in DIR for `verify`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from fractions import Fraction

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

import simulate
import sindy

from verifier import api, run
from verifier.cache import Cache
from verifier.emit import coq
from verifier.emit.proofs import coq_counts
from verifier.elaborate import elaborate
from verifier.layers.message import edge_network

PARTICLES = 4
EDGE_HIDDEN = (8, 8)
MESSAGES = 2
DECIMALS = 6  # trained weights are rounded: shorter exact rationals for the verifier
GROWTH = (1.05, 1.2, 1.5, 2.0)  # eps = sampled max times these, until proved
CELL = Fraction(1, 2)  # side of the domain's cells
JOBS = 2  # processes deciding the claims


def architecture(load: str | None = None) -> str:
    hidden = ", ".join(map(str, EDGE_HIDDEN))
    src = f' load "{load}"' if load else ""
    return (f"input X : real[{PARTICLES}, 2]\n"
            f"network gnn(in=[{PARTICLES}, 2]){src} {{\n"
            f"  message(messages={MESSAGES}, edge_hidden=[{hidden}], distance=true, "
            "node_input=aggregate)\n}\n")


def train(X: np.ndarray, A: np.ndarray, epochs: int, seed: int = 0, batch: int = 128,
          lr: tuple[float, float] = (1e-2, 3e-4)):
    """Adam on the mean squared error of the accelerations, cosine-decayed learning rate.

    Returns the compiled network (weights rounded to DECIMALS) and the loss per epoch.
    """
    net = api.compile_text(architecture(), seed=seed)
    Xf, Af = X.reshape(len(X), -1), A.reshape(len(A), -1)
    opt = api.Adam(net.params, lr=lr[0])
    rng = np.random.default_rng(seed)
    losses = [net.loss(Xf, Af)]
    for ep in range(epochs):
        opt.lr = lr[1] + 0.5 * (lr[0] - lr[1]) * (1 + np.cos(np.pi * ep / epochs))
        order = rng.permutation(len(Xf))
        for start in range(0, len(Xf), batch):
            idx = order[start:start + batch]
            _, grads = net.loss_and_grad(Xf[idx], Af[idx])
            opt.step(grads)
        losses.append(net.loss(Xf, Af))
    for k in net.params:
        net.params[k] = np.round(net.params[k], DECIMALS)
    losses.append(net.loss(Xf, Af))
    return net, losses


def edge_features(d: np.ndarray) -> np.ndarray:
    return np.column_stack([d, np.sqrt((d * d).sum(1))])


def export_edge(net, out: str, name: str):
    """The trained GNN's weights, and its edge MLP as a dense network (lines, weights file)."""
    gnn_path = os.path.join(out, f"{name}_gnn.npz")
    net.save(gnn_path)
    arch = os.path.join(out, f"{name}_gnn.snn")
    with open(arch, "w", encoding="utf-8") as fh:
        fh.write(architecture(os.path.basename(gnn_path)))
    spec = elaborate(arch)
    layer = spec.networks[0].layers[0]
    lines, arrays = edge_network(layer, {t.name: t for t in spec.params})
    edge_path = os.path.join(out, f"{name}_edge.npz")
    np.savez(edge_path, **arrays)
    return lines, arrays, edge_path


def edge_forward(arrays: dict, F: np.ndarray) -> np.ndarray:
    h = F
    n = len(arrays) // 2
    for k in range(1, n + 1):
        h = h @ arrays[f"W{k}"].T + arrays[f"b{k}"]
        if k < n:
            h = np.tanh(h)
    return h


def _cpu() -> float:
    """CPU seconds of this process and of its finished workers (robust to machine load)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _num(f: Fraction) -> str:
    return str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"


def _eps_text(x: float) -> Fraction:
    """x rounded up to 4 significant digits, exact."""
    e = int(np.floor(np.log10(abs(x)))) - 3
    return Fraction(int(np.ceil(x / 10.0**e)), 1) * Fraction(10) ** e


def _gap_to_origin(lo, hi) -> float:
    return float(np.hypot(max(float(lo[0]), 0.0, -float(hi[0])),
                          max(float(lo[1]), 0.0, -float(hi[1]))))


def cells(d: np.ndarray, size: Fraction = CELL, r_min: float = 0.5, min_count: int = 20,
          depth: int = 0) -> list[tuple[tuple[Fraction, Fraction], tuple[Fraction, Fraction]]]:
    """The claim's domain: squares of side `size` on a grid (exact corners) holding at least
    `min_count` of the relative positions seen; a square closer than 0.9 r_min to the origin
    (where the laws are singular) is split in four, up to three times, keeping the parts with
    data, so the domain is where the network was trained, not the box around it."""
    out = []
    key = np.floor(d / float(size)).astype(int)
    for k in sorted(set(map(tuple, key))):
        sel = np.all(key == k, axis=1)
        lo = (k[0] * size, k[1] * size)
        hi = (lo[0] + size, lo[1] + size)
        if _gap_to_origin(lo, hi) < 0.9 * r_min and depth < 3:
            out += cells(d[sel], size / 2, r_min, min_count, depth + 1)
        elif sel.sum() >= min_count:
            out.append((lo, hi))
    return out


def sample_cells(boxes, per_cell: int, seed: int) -> np.ndarray:
    """Random points in every cell, plus its corners and edge midpoints."""
    rng = np.random.default_rng(seed)
    pts = []
    for lo, hi in boxes:
        a, b = np.array(lo, dtype=float), np.array(hi, dtype=float)
        pts.append(a + (b - a) * rng.random((per_cell, 2)))
        pts.append(np.array([[x, y] for x in (a[0], (a[0] + b[0]) / 2, b[0])
                             for y in (a[1], (a[1] + b[1]) / 2, b[1])]))
    return np.concatenate(pts)


def claim_spec(lines: str, edge_file: str, boxes, claims) -> str:
    """Spec text: the edge MLP, one input per cell, and per claim (name, cell, k, law, eps)
    `abs(phi(u_c, r_c)[k] - law) <= eps` over that cell."""
    body = "\n".join("  " + ln for ln in lines.splitlines())
    out = [
        "# The edge function phi of a trained message-passing network against fitted laws.",
        "# u<c> = x_i - x_j ranges over cell c of the relative positions seen in the data,",
        "# r<c> = |u<c>|; phi's input is (u, r), as inside the network's message layer.",
        f'network phi(in=3) load "{os.path.basename(edge_file)}" {{', body, "}",
    ]
    used = sorted({c for _, c, _, _, _ in claims})
    for c in used:
        lo, hi = boxes[c]
        out += [(f"input u{c} : real[2] in box([{_num(lo[0])}, {_num(lo[1])}], "
                f"[{_num(hi[0])}, {_num(hi[1])}])"),
                f"let r{c} = sqrt(u{c}[0]^2 + u{c}[1]^2)",
                f"let m{c} = phi([u{c}[0], u{c}[1], r{c}])"]
    for name, c, k, coeffs, eps in claims:
        law = sindy.spec_text(coeffs, u=f"u{c}", r=f"r{c}")
        out.append(f"claim {name}: abs(m{c}[{k}] - ({law})) <= {_num(eps)}")
    return "\n".join(out) + "\n"


def decide(path: str, timeout: float, jobs: int = JOBS, cache_dir: str | None = None):
    """The spec's model and verdicts; with `cache_dir`, claims decided before (same terms,
    same eps) are answered from the result cache there."""
    model = run.load(path)
    store = Cache(cache_dir) if cache_dir else None
    return model, run.check(model, timeout, jobs=jobs, cache=store)


def coq_lemmas(path: str, timeout: float, jobs: int = JOBS, cache_dir: str | None = None,
               coqc: str | None = "auto") -> dict:
    """The Coq file of a certificate spec: every proved claim a lemma over its cell, closed by
    the interval tactic (bisection) where coqc confirms it, else Admitted with the reason.
    Returns the file's name and text, the verdicts and {claim: Qed/Admitted counts}."""
    model, verdicts = decide(path, timeout, jobs, cache_dir)
    ((name, text),) = coq.emit(model, verdicts, coqc=coqc).items()
    return {"name": name, "text": text, "model": model, "verdicts": verdicts,
            "counts": coq_counts(text)}


def wrong_law(coeffs: dict) -> dict:
    """The law with its largest coefficient negated: a plausible-looking mistake."""
    lead = max(coeffs, key=lambda n: abs(coeffs[n]))
    return {n: (-c if n == lead else c) for n, c in coeffs.items()}


def certify(name: str, lines: str, edge_file: str, boxes, k: int, coeffs: dict,
            arrays: dict, out: str, timeout: float, seed: int = 0) -> dict:
    """The smallest eps among sampled max * GROWTH that the bound engine proves on every cell.

    A claim proved for some eps holds for every larger one, so each round decides only the
    cells not proved yet. A refuted cell (a point the sampling missed) is decided again at
    the next eps: the replayed point is a lower bound on the true maximum.
    """
    u = sample_cells(boxes, 2000, seed)
    gap = np.abs(edge_forward(arrays, edge_features(u))[:, k] - sindy.evaluate(coeffs, u))
    sampled = float(gap.max())
    path = os.path.join(out, f"{name}_m{k}.snn")
    todo, verdicts, rounds = list(range(len(boxes))), {}, []
    eps = None
    for g in GROWTH:
        eps = _eps_text(sampled * g)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(claim_spec(lines, edge_file, boxes,
                                [(f"close_{k}_cell{c}", c, k, coeffs, eps) for c in todo]))
        t0 = time.perf_counter()
        _, vs = decide(path, timeout, cache_dir=os.path.join(out, "cache"))
        for c, v in zip(todo, vs):
            verdicts[c] = v
        todo = [c for c, v in zip(todo, vs) if v.verdict != "proved"]
        rounds.append((float(eps), len(vs) - len(todo), len(vs), time.perf_counter() - t0))
        if not todo:
            break
    return {"eps": eps if not todo else None, "sampled": sampled, "verdicts": verdicts,
            "rounds": rounds, "open": todo, "path": path}


def compose(node_W: np.ndarray, laws: list[dict]) -> list[dict]:
    """Force law implied by the message laws: F_o = sum_k node_W[o, k] law_k (the node
    function is linear in the aggregate; its bias spreads over the N - 1 messages)."""
    out = []
    for o in range(node_W.shape[0]):
        terms: dict[str, float] = {}
        for k, law in enumerate(laws):
            for n, c in law.items():
                terms[n] = terms.get(n, 0.0) + float(node_W[o, k]) * float(c)
        out.append(terms)
    return out


def pipeline(law: str, out: str, epochs: int, timeout: float, seed: int = 0,
             trajectories: int = 80, log=print) -> dict:
    """Every stage for one law; returns the figures (and prints them through `log`)."""
    times, cpu, res = {}, {}, {"law": law}
    t, cpu0 = time.perf_counter(), _cpu()
    X, A = simulate.simulate(law, particles=PARTICLES, trajectories=trajectories, seed=seed)
    d = simulate.relative(X)
    times["simulate"] = time.perf_counter() - t
    cpu["simulate"] = _cpu() - cpu0
    log(f"[{law}] simulated {len(X)} snapshots of {PARTICLES} particles "
        f"({len(d)} pairs) in {times['simulate']:.1f} s")

    t, cpu0 = time.perf_counter(), _cpu()
    net, losses = train(X, A, epochs, seed=seed)
    times["train"] = time.perf_counter() - t
    cpu["train"] = _cpu() - cpu0
    res["losses"] = losses
    log(f"[{law}] trained {epochs} epochs with compiled gradients: loss {losses[0]:.3g} -> "
        f"{losses[-1]:.3g} (mean square acceleration {np.mean((A ** 2).sum((1, 2))):.3g}) in "
        f"{times['train']:.1f} s")

    t, cpu0 = time.perf_counter(), _cpu()
    lines, arrays, edge_file = export_edge(net, out, law)
    m = edge_forward(arrays, edge_features(d))
    # the layer's own messages (compiled GNN) and the exported edge MLP agree
    Xf = X.reshape(len(X), -1)
    direct = net.forward(Xf[:8])
    via = (m.reshape(len(X), PARTICLES, PARTICLES - 1, MESSAGES).sum(2)[:8]
           @ net.params["node1.W"].T + net.params["node1.b"]).reshape(8, -1)
    assert np.allclose(direct, via, atol=1e-9), "edge network does not reproduce the messages"
    std = m.std(0)
    keep = [int(k) for k in np.argsort(-std) if std[k] >= 0.1 * std.max()]
    laws, fits = {}, []
    for k in keep:
        coeffs, r2 = sindy.fit(d, m[:, k])
        laws[k] = coeffs
        fits.append((k, coeffs, r2))
        log(f"[{law}] message {k} (std {std[k]:.3f}): {sindy.pretty(coeffs)}   R^2 = {r2:.5f}")
    times["fit"] = time.perf_counter() - t
    cpu["fit"] = _cpu() - cpu0
    res["fits"] = fits
    res["std"] = std
    force = compose(net.params["node1.W"][:, keep], [laws[k] for k in keep])
    res["force"] = force
    for o, terms in enumerate(force):
        shown = {n: c for n, c in terms.items() if n != "1" and abs(c) > 1e-3}
        log(f"[{law}] implied force F_{'xy'[o]} = {sindy.pretty(shown, 3)}")

    t, cpu0 = time.perf_counter(), _cpu()
    boxes = cells(d, r_min=simulate.R_MIN)
    res["cells"] = boxes
    inside = sum(int(np.all((d >= np.array(lo, float)) & (d <= np.array(hi, float)), 1).sum())
                 for lo, hi in boxes)
    log(f"[{law}] domain: {len(boxes)} cells of side <= {CELL} holding {inside} of the "
        f"{len(d)} pairs (r >= {min(_gap_to_origin(lo, hi) for lo, hi in boxes):.3f})")
    certs = []
    for k in keep:
        c = certify(law, lines, edge_file, boxes, k, laws[k], arrays, out, timeout, seed)
        certs.append(c)
        engines = Counter(v.engine for v in c["verdicts"].values() if v.verdict == "proved")
        steps = "; ".join(f"eps {e:.4g}: {p}/{n} proved in {s:.0f} s" for e, p, n, s in c["rounds"])
        if c["eps"] is None:
            log(f"[{law}] message {k}: {len(c['open'])} cells open at {GROWTH[-1]} x the sampled "
                f"max {c['sampled']:.4g} ({steps})")
            continue
        log(f"[{law}] message {k}: certified eps = {float(c['eps']):.4g} on every cell, sampled "
            f"max {c['sampled']:.4g}, ratio {float(c['eps']) / c['sampled']:.3f} ({steps}; "
            + ", ".join(f"{n} {e}" for e, n in sorted(engines.items())) + ")")
    times["certify"] = time.perf_counter() - t
    cpu["certify"] = _cpu() - cpu0
    res["certs"] = certs

    # a deliberately wrong law on the cell with most data: refuted with a replayed point
    t, cpu0 = time.perf_counter(), _cpu()
    key = np.floor(d / float(CELL)).astype(int)
    dense = max(range(len(boxes)), key=lambda c: int(np.all(
        key == np.floor(np.array(boxes[c][0], float) / float(CELL)).astype(int), 1).sum()))
    k0, c0 = keep[0], certs[0]
    eps0 = c0["eps"] if c0["eps"] is not None else _eps_text(c0["sampled"] * GROWTH[-1])
    wrong = os.path.join(out, f"{law}_wrong.snn")
    with open(wrong, "w", encoding="utf-8") as fh:
        fh.write(claim_spec(lines, edge_file, boxes,
                            [(f"wrong_{k0}", dense, k0, wrong_law(laws[k0]), eps0)]))
    _, (vw,) = decide(wrong, timeout, jobs=1)
    res["wrong"] = vw
    log(f"[{law}] wrong law {sindy.pretty(wrong_law(laws[k0]))} for message {k0}: {vw.verdict} "
        f"({vw.engine}, {vw.seconds:.1f} s)"
        + (f" at u = {vw.counterexample}" if vw.verdict == "refuted" else f": {vw.reason}"))
    # the whole certificate as one spec, for `verify` to re-check
    final = os.path.join(out, f"{law}.snn")
    with open(final, "w", encoding="utf-8") as fh:
        fh.write(claim_spec(lines, edge_file, boxes,
                            [(f"close_{k}_cell{c}", c, k, laws[k], cert["eps"])
                             for k, cert in zip(keep, certs) if cert["eps"] is not None
                             for c in range(len(boxes))]))
    res["final_path"] = final
    times["refute"] = time.perf_counter() - t
    cpu["refute"] = _cpu() - cpu0
    # the certificate's Coq lemmas (verdicts of the rounds above come from the cache)
    t, cpu0 = time.perf_counter(), _cpu()
    lem = coq_lemmas(final, timeout, cache_dir=os.path.join(out, "cache"))
    with open(os.path.join(out, lem["name"]), "w", encoding="utf-8") as fh:
        fh.write(lem["text"])
    qed = sum(c["coq_qed"] for c in lem["counts"].values())
    admitted = sum(c["coq_admitted"] for c in lem["counts"].values())
    reasons = Counter(r for c in lem["counts"].values() for r in c["admitted_reasons"])
    res["coq"] = {"file": os.path.join(out, lem["name"]), "qed": qed, "admitted": admitted,
                  "reasons": dict(reasons)}
    log(f"[{law}] Coq lemmas in {lem['name']}: {qed} Qed by the interval tactic, {admitted} "
        "Admitted" + "".join(f"; {n} because {r.removeprefix('no Coq proof because ')}"
                             for r, n in sorted(reasons.items())))
    times["coq"] = time.perf_counter() - t
    cpu["coq"] = _cpu() - cpu0
    res["times"], res["cpu"] = times, cpu
    log(f"[{law}] seconds per stage (wall / CPU of this process and its workers): "
        + ", ".join(f"{k} {s:.1f} / {cpu[k]:.1f}" for k, s in times.items()))
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--law", choices=[*simulate.LAWS, "all"], default="all")
    ap.add_argument("--out", default=os.path.join(HERE, "out"),
                    help="directory for the specs and weights (default: examples/distill/out)")
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--timeout", type=float, default=30.0,
                    help="time limit per claim for the bound engine (seconds)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    laws = list(simulate.LAWS) if args.law == "all" else [args.law]
    ok = True
    for law in laws:
        res = pipeline(law, args.out, args.epochs, args.timeout, args.seed)
        ok &= all(c["eps"] is not None for c in res["certs"])
        ok &= res["wrong"].verdict == "refuted"
        print(f"[{law}] re-check the certificate with: verify {res['final_path']}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
