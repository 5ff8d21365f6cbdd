"""Fit a 2-3-3-1 tanh network to exp(-|x|^2) with compiled symbolic gradients, then verify it.

Only `verifier.api` is used for derivatives: the network comes from spec text, its gradient
is generated numpy code (one matmul per layer each way), and Adam is a few lines of numpy.
The trained weights go to `gauss_fit_weights.npz`, which `gauss_fit.snn` loads to state
claims about the fit; the picture `gauss_fit.png` shows target | fit | 10 x |error| on
[-1, 1]^2 (colour scale 0 to 1, dark to bright).

    python examples/fit_gauss.py [--epochs 1000] [--out DIR]
    verify examples/gauss_fit.snn
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from verifier import api

HERE = os.path.dirname(os.path.abspath(__file__))
# the architecture of gauss_fit.snn, without its `load` (the weights do not exist yet)
ARCH = """input x : real[2]
network f(in=2) {
  dense(3, tanh)
  dense(3, tanh)
  dense(1)
}
"""
DECIMALS = 6  # saved weights are rounded: shorter exact rationals for the verifier


def grid(n: int) -> np.ndarray:
    g = np.linspace(-1.0, 1.0, n)
    return np.array([[a, b] for a in g for b in g])


def target(X: np.ndarray) -> np.ndarray:
    return np.exp(-(X**2).sum(axis=1, keepdims=True))


def train(epochs: int, batch: int = 10, lr: float = 0.01, seed: int = 0):
    net = api.compile_text(ARCH, seed=seed)
    X = grid(21)
    Y = target(X)
    opt = api.Adam(net.params, lr=lr)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(X))
        for start in range(0, len(X), batch):
            idx = order[start:start + batch]
            _, grads = net.loss_and_grad(X[idx], Y[idx])
            opt.step(grads)
    for k in net.params:
        net.params[k] = np.round(net.params[k], DECIMALS)
    return net, net.loss(X, Y)


# ---- a PNG without plotting libraries -------------------------------------------------------

_ANCHORS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]])


def colour(v: np.ndarray) -> np.ndarray:
    """Values in [0, 1] to RGB through five viridis anchors."""
    t = np.clip(v, 0.0, 1.0) * (len(_ANCHORS) - 1)
    i = np.minimum(t.astype(int), len(_ANCHORS) - 2)
    w = (t - i)[..., None]
    return ((1 - w) * _ANCHORS[i] + w * _ANCHORS[i + 1]).astype(np.uint8)


def write_png(path: str, rgb: np.ndarray) -> None:
    """An 8-bit RGB PNG: signature, IHDR, one zlib IDAT (filter 0 rows), IEND."""
    h, w, _ = rgb.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + rgb[r].tobytes() for r in range(h))
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                 + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


def plot(net, path: str, n: int = 161, scale: int = 2) -> None:
    X = grid(n)
    panels = [target(X), net.forward(X), 10 * np.abs(net.forward(X) - target(X))]
    gap = np.full((n * scale, 6, 3), 255, dtype=np.uint8)
    images = [np.kron(colour(p.reshape(n, n)[::-1]), np.ones((scale, scale, 1), dtype=np.uint8))
              for p in panels]
    write_png(path, np.concatenate([images[0], gap, images[1], gap, images[2]], axis=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=HERE, help="directory for the weights and the picture")
    args = ap.parse_args()
    net, loss = train(args.epochs, seed=args.seed)
    os.makedirs(args.out, exist_ok=True)
    weights = os.path.join(args.out, "gauss_fit_weights.npz")
    net.save(weights)
    plot(net, os.path.join(args.out, "gauss_fit.png"))
    spec = os.path.join(args.out, "gauss_fit.snn")
    if os.path.exists(spec):  # the spec loads exactly what was saved
        loaded = api.compile_network(spec, name="f")
        X = grid(21)
        assert np.array_equal(loaded.forward(X), net.forward(X))
    print(f"final loss (mean squared error on the 21x21 grid, weights rounded to {DECIMALS} "
          f"decimals): {loss:.3e}")
    print(f"wrote {weights} and {os.path.join(args.out, 'gauss_fit.png')}")


if __name__ == "__main__":
    main()
