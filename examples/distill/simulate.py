"""Particles in the plane under a pairwise central force, integrated with velocity Verlet.

Two laws, as in Cranmer et al. (2020), for equal unit masses; the force on particle i from
particle j, with d = x_i - x_j and r = |d|:

    spring:          F = -k (r - L) d / r        (k = 2, rest length L = 1)
    inverse_square:  F =  q d / r^3              (q = 1/2: repulsion of strength q / r^2)

`simulate` returns snapshots (positions [S, N, 2], accelerations [S, N, 2]) of short
trajectories from random starts, seeded; snapshots where two particles come closer than
`r_min` are dropped, so every pair seen in the data is at least `r_min` apart.
"""

from __future__ import annotations

import numpy as np

R_MIN = 0.5  # closest approach kept in the data

LAWS = {
    "spring": {"k": 2.0, "L": 1.0},
    "inverse_square": {"q": 0.5},
}


def pair_force(law: str, d: np.ndarray) -> np.ndarray:
    """Force on i from j for relative positions d = x_i - x_j [..., 2]."""
    r = np.sqrt((d * d).sum(-1, keepdims=True))
    if law == "spring":
        p = LAWS[law]
        return -p["k"] * (r - p["L"]) * d / r
    if law == "inverse_square":
        return LAWS[law]["q"] * d / r**3
    raise ValueError(f"unknown law {law!r}; one of: {', '.join(LAWS)}")


def accelerations(law: str, x: np.ndarray) -> np.ndarray:
    """Sum of pair forces on each particle (unit masses), x [..., N, 2]."""
    d = x[..., :, None, :] - x[..., None, :, :]  # d[i, j] = x_i - x_j
    n = x.shape[-2]
    off = ~np.eye(n, dtype=bool)
    f = np.zeros_like(d)
    f[..., off, :] = pair_force(law, d[..., off, :])
    return f.sum(-2)


def _start(rng, n: int, spread: float, r_min: float) -> np.ndarray:
    while True:
        x = rng.uniform(-spread, spread, (n, 2))
        d = np.linalg.norm(x[:, None] - x[None], axis=-1) + np.eye(n) * 1e9
        if d.min() >= 1.5 * r_min:
            return x


def simulate(law: str, *, particles: int = 4, trajectories: int = 80, steps: int = 60,
             every: int = 6, dt: float = 0.01, spread: float = 1.0, r_min: float = R_MIN,
             seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Snapshots (X [S, N, 2], A [S, N, 2]) of `trajectories` runs of `steps` Verlet steps,
    one every `every` steps; starts uniform in [-spread, spread]^2, velocities N(0, 0.3^2)."""
    rng = np.random.default_rng(seed)
    xs, accs = [], []
    for _ in range(trajectories):
        x = _start(rng, particles, spread, r_min)
        v = rng.normal(0.0, 0.3, (particles, 2))
        v -= v.mean(0)  # no drift of the centre of mass
        a = accelerations(law, x)
        for t in range(steps + 1):
            if t % every == 0:
                d = np.linalg.norm(x[:, None] - x[None], axis=-1) + np.eye(particles) * 1e9
                if d.min() >= r_min:
                    xs.append(x.copy())
                    accs.append(a.copy())
            v_half = v + 0.5 * dt * a
            x = x + dt * v_half
            a = accelerations(law, x)
            v = v_half + 0.5 * dt * a
    return np.array(xs), np.array(accs)


def relative(X: np.ndarray) -> np.ndarray:
    """d = x_i - x_j for every ordered pair i != j of every snapshot, [S * N (N - 1), 2]."""
    n = X.shape[1]
    d = X[:, :, None, :] - X[:, None, :, :]
    return d[:, ~np.eye(n, dtype=bool), :].reshape(-1, 2)
