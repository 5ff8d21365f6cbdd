"""Learn a Hamiltonian network for the harmonic oscillator from its vector field.

H = Dense(2, 4, tanh), Dense(4, 1) of x = (q, p); the model's dynamics are the symplectic
gradient (dq/dt, dp/dt) = (dH/dp, -dH/dq). Training matches that vector field to the
oscillator H_true = (q^2 + p^2) / 2, i.e. (p, -q), so the loss is a function of the *input
gradient* and its parameter gradient is a mixed derivative d/dθ d/dx H: the compiled
`hamiltonian_loss_and_grad` does reverse over reverse at the matrix level. No autograd.

    python examples/hamiltonian.py [--epochs 300]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from verifier import api

ARCH = """input x : real[2]
network H(in=2) {
  dense(4, tanh)
  dense(1)
}
"""


def data(n: int = 20, radius: float = 1.5):
    """A grid of phase-space points (q, p) and the true vector field (p, -q) there."""
    g = np.linspace(-radius, radius, n)
    X = np.array([[q, p] for q in g for p in g])
    return X, np.stack([X[:, 1], -X[:, 0]], axis=1)


def train(epochs: int, batch: int = 10, lr: float = 0.01, seed: int = 0):
    net = api.compile_text(ARCH, seed=seed)
    X, T = data()
    opt = api.Adam(net.params, lr=lr)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(X))
        for start in range(0, len(X), batch):
            idx = order[start:start + batch]
            _, grads = net.hamiltonian_loss_and_grad(X[idx], T[idx])
            opt.step(grads)
    return net, net.hamiltonian_loss_and_grad(X, T)[0]


def orbit_error(net, x0=(1.0, 0.0), steps: int = 628, dt: float = 0.01) -> float:
    """Integrate the learned field for one period (RK4) and return the distance to the start
    (0 for the true oscillator)."""
    x = np.array([x0], dtype=float)
    for _ in range(steps):
        k1 = net.vector_field(x)
        k2 = net.vector_field(x + dt / 2 * k1)
        k3 = net.vector_field(x + dt / 2 * k2)
        k4 = net.vector_field(x + dt * k3)
        x = x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return float(np.linalg.norm(x[0] - np.array(x0)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    net, loss = train(args.epochs, seed=args.seed)
    X, _ = data()
    H = net.forward(X)[:, 0]
    true = 0.5 * (X**2).sum(axis=1)
    shift = np.mean(H - true)  # H is defined up to a constant
    print(f"final loss (mean over points of |field - (p, -q)|^2): {loss:.3e}")
    print(f"max |H - H_true - c| on the training grid: {np.abs(H - true - shift).max():.3e}")
    print(f"one period from (1, 0) ends {orbit_error(net):.3e} from the start")


if __name__ == "__main__":
    main()
