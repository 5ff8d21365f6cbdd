"""Helpers shared by the layer tests that compare our terms with torch: write a spec, add a
gradient derivation per symbolic parameter, pick a random rational point, evaluate terms."""

from __future__ import annotations

import itertools
import random
from fractions import Fraction

import numpy as np
import sympy as sp

from verifier.elaborate import elaborate
from verifier.engines.replay import evaluate
from verifier.obligations import build_model
from verifier.onnx_import import Act, Affine, OnnxNet, fractions


def write(tmp_path, text: str, name: str = "spec") -> str:
    path = tmp_path / f"{name}.snn"
    path.write_text(text)
    return str(path)


def symbolic_params(spec, net: str) -> list:
    """The network's parameter tensors with free symbols, in declaration order."""
    return [t for t in spec.params if t.name.startswith(net + ".") and not t.concrete]


def with_gradients(tmp_path, text: str, net: str, out: str, name: str = "spec"):
    """The spec plus `derive gradient OUT wrt P` for every symbolic parameter P of `net`."""
    spec = elaborate(write(tmp_path, text, name + "_probe"))
    names = [t.name for t in symbolic_params(spec, net)]
    lines = [f"derive gradient {out} wrt {n} as grad_{k}" for k, n in enumerate(names)]
    spec = elaborate(write(tmp_path, text + "\n".join(lines) + "\n", name))
    return spec, build_model(spec), names


def random_point(spec, seed: int, positive: str | tuple[str, ...] = ()):
    """A random rational per free symbol (in (0, 1] for tensors whose name ends in one of
    `positive`), and the same values as float64 arrays by tensor name."""
    rng = random.Random(seed)
    point, arrays = {}, {}
    for t in spec.inputs + spec.params:
        vals = []
        for e in t.entries:
            if isinstance(e, sp.Symbol):
                lo = 100 if positive and t.name.endswith(positive) else -1000
                point[e] = v = Fraction(rng.randint(lo, 1000), 1000)
            else:
                v = Fraction(int(e.p), int(e.q))
            vals.append(float(v))
        arrays[t.name] = np.array(vals, dtype=np.float64).reshape(t.shape)
    return point, arrays


def values(model, terms, point) -> np.ndarray:
    """Terms of the model's program at the point, as a float64 array of the terms' shape."""
    arr = np.array(terms, dtype=object)
    out, _ = evaluate(model.program, list(arr.flat), point)
    return np.array([float(v) for v in out], dtype=np.float64).reshape(arr.shape)


def derivation(model, name: str):
    return next(d for d in model.derivations if d.name == name)


def rounded(denominator: int):
    """Float draws -> the nearest fractions with this denominator, as an object array."""
    return np.vectorize(lambda v: Fraction(int(round(v * denominator)), denominator),
                        otypes=[object])


def random_relu_net(rng, sizes, act="relu", *, weights=fractions, biases=fractions,
                    bias_scale=0.1) -> OnnxNet:
    """An imported-network object with random weights (by default exact fractions of float
    draws; `weights` / `biases` map the draws to fractions otherwise): affine layers of the
    given sizes with `act` between them (leaky_relu slope 1/8)."""
    layers = []
    for k, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(Affine(W=weights(rng.normal(size=(b, a)) / np.sqrt(a)),
                             b=biases(rng.normal(size=b) * bias_scale)))
        if k < len(sizes) - 2:
            layers.append(Act(act, Fraction(1, 8) if act == "leaky_relu" else None))
    return OnnxNet.from_layers(layers, path="random", in_shape=(sizes[0],),
                               out_shape=(sizes[-1],), input_name="x", output_name="y")
