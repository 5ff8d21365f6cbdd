"""Fit the tanh network of `gauss.snn` to exp(-|x|^2) on [-1, 1]^2 and save its weights.

Plain numpy (Adam, full batch, fixed seed) so the shipped `gauss_weights.npz` is reproducible:

    python examples/train_gauss.py
"""

from __future__ import annotations

import os

import numpy as np

HIDDEN = 8


def forward(params, x):
    W1, b1, W2, b2 = params
    h = np.tanh(x @ W1.T + b1)
    return h, h @ W2.T + b2


def train(steps: int = 4000, seed: int = 0):
    rng = np.random.default_rng(seed)
    g = np.linspace(-1.0, 1.0, 21)
    x = np.array([[a, b] for a in g for b in g])
    y = np.exp(-(x**2).sum(axis=1, keepdims=True))
    params = [rng.normal(0, 0.8, (HIDDEN, 2)), np.zeros(HIDDEN),
              rng.normal(0, 0.5, (1, HIDDEN)), np.zeros(1)]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    for t in range(1, steps + 1):
        h, out = forward(params, x)
        r = (out - y) / len(x)  # d(mean squared error / 2) / d out
        dh = (r @ params[2]) * (1 - h**2)
        grads = [dh.T @ x, dh.sum(0), r.T @ h, r.sum(0)]
        for i, gr in enumerate(grads):
            m[i] = 0.9 * m[i] + 0.1 * gr
            v[i] = 0.999 * v[i] + 0.001 * gr**2
            mh, vh = m[i] / (1 - 0.9**t), v[i] / (1 - 0.999**t)
            params[i] -= 0.02 * mh / (np.sqrt(vh) + 1e-8)
    _, out = forward(params, x)
    return params, float(np.mean((out - y) ** 2))


if __name__ == "__main__":
    params, mse = train()
    # four decimals keep the exact rationals in the artifacts short
    params = [np.round(p, 4) for p in params]
    here = os.path.dirname(os.path.abspath(__file__))
    np.savez(os.path.join(here, "gauss_weights.npz"),
             W1=params[0], b1=params[1], W2=params[2], b2=params[3])
    print(f"mean squared error {mse:.2e}")
