"""Public Python API for numeric work with a spec's networks: compiled functions and training.

    from verifier import api

    net = api.compile_network("examples/gauss_fit.snn", name="f")
    Y = net.forward(X)                                # [B, m]
    loss, grads = net.loss_and_grad(X, Y_true)        # mse; grads: {"W1": ..., "b1": ...}
    J = net.jacobian(X)                               # [B, m, n]

See `symbolic.numeric.CompiledNetwork` for every function.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from .elaborate import elaborate
from .symbolic.numeric import LOSSES, CompiledNetwork

__all__ = ["LOSSES", "Adam", "CompiledNetwork", "compile_network", "compile_text"]


def _pick(spec, name: str | None):
    nets = {n.name: n for n in spec.networks}
    if not nets:
        raise ValueError(f"{spec.path} declares no network")
    if name is None:
        if len(nets) > 1:
            raise ValueError(f"{spec.path} declares several networks ({', '.join(nets)}); "
                             "pass name=")
        return next(iter(nets.values()))
    if name not in nets:
        raise ValueError(f"{spec.path} has no network `{name}`; it has {', '.join(nets)}")
    return nets[name]


def compile_network(source, name: str | None = None, *, seed: int = 0,
                    matrix: bool = True, blas_threads: int | None = 1) -> CompiledNetwork:
    """Compiled functions of a network declared in a spec.

    `source` is a spec path, a `Model` from `run.load` or an elaborated `ir.Spec`; `name`
    picks the network (optional when there is one). Concrete weights (inline or loaded)
    become the initial parameters; symbolic ones are drawn with `seed`. Each compiled call
    runs with numpy's BLAS limited to `blas_threads` threads (None: as configured; see
    `symbolic.numeric`). Raises `SpecError`
    for a bad spec, ValueError for a missing network.
    """
    if isinstance(source, (str, os.PathLike)):
        spec = elaborate(os.fspath(source))
    elif hasattr(source, "networks") and hasattr(source, "params") and hasattr(source, "path"):
        spec = source  # an ir.Spec
    elif hasattr(source, "source_path"):
        spec = elaborate(source.source_path)  # a Model keeps IR networks, not weight values
    else:
        raise TypeError("compile_network takes a spec path, a Model or an ir.Spec")
    net = _pick(spec, name)
    tensors = {t.name: t for t in spec.params}
    return CompiledNetwork(net, tensors, matrix=matrix, seed=seed, blas_threads=blas_threads)


def compile_text(text: str, name: str | None = None, *, seed: int = 0,
                 matrix: bool = True, blas_threads: int | None = 1) -> CompiledNetwork:
    """Like `compile_network` for spec text (an architecture, typically): `load` and
    `import` paths would be relative to a temporary directory, so use files for those."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "network.snn")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        return compile_network(path, name, seed=seed, matrix=matrix, blas_threads=blas_threads)


class Adam:
    """Adam (Kingma and Ba) on a dict of numpy arrays, updated in place; torch's defaults."""

    def __init__(self, params: dict[str, np.ndarray], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params, self.lr, self.eps = params, lr, eps
        self.b1, self.b2 = betas
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, grads: dict[str, np.ndarray]) -> None:
        self.t += 1
        c1, c2 = 1.0 - self.b1**self.t, 1.0 - self.b2**self.t
        step, root = self.lr / c1, np.sqrt(c2)
        for k, g in grads.items():
            m, v = self.m[k], self.v[k]
            m *= self.b1
            m += (1.0 - self.b1) * g
            v *= self.b2
            v += (1.0 - self.b2) * (g * g)
            # torch: p -= lr/c1 * m / (sqrt(v)/sqrt(c2) + eps)
            self.params[k] -= step * m / (np.sqrt(v) / root + self.eps)
