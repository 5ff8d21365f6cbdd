"""Compiled numeric functions of a network: output, loss gradients, Jacobians, mixed derivatives.

`CompiledNetwork` turns an IR network into Python source at the level of matrix operations
(`matrix_codegen`: one matmul per dense layer forward and its transpose backward), falling
back to scalar code from the layer's `Program` (`scalar_layer`) for layers without a matrix
rule. Sources are generated on first use of each function, `exec`-ed in a scope holding only
numpy, a workspace dict and the fallback's compiled pullbacks, and kept in `.sources` for
inspection. Batch-sized arrays live in the workspace between calls (per batch size), so a
`CompiledNetwork` is not for concurrent use from several threads; results are fresh arrays.
Parameters are plain float64 arrays in `.params`, keyed by the spec's short names (`W1`,
`b1`, ...), so `np.savez(path, **net.params)` is a weight file the spec can `load`.

BLAS threads: the generated code is a chain of small and medium matrix products, for which
a multithreaded BLAS rarely pays and, on a machine whose cores are busy, collapses (threads
spin waiting for each other: 30x slower gradients were measured on a shared 2-core machine).
So each compiled call runs with numpy's BLAS limited to `blas_threads` threads (default 1,
through threadpoolctl, restored on return); `blas_threads=None` leaves BLAS as it is.

Losses: "mse" is the mean over the batch of the squared error summed over outputs,
(1/B) sum_b |f(x_b) - y_b|^2; "relative_l2" is |F - Y| / |Y| with Frobenius norms over the
whole batch.
"""

from __future__ import annotations

from collections.abc import Callable
from math import prod, sqrt

import numpy as np

from . import matrix_codegen as mc

_CONTROLLER = None


def _blas_limit(threads: int):
    """Context manager limiting the BLAS libraries loaded in this process to `threads`."""
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=threads, user_api="blas")

# layer kinds with a matrix-level emitter; every other kind goes through the scalar fallback
MATRIX_RULES: dict[str, Callable] = {"dense": lambda layer, k, shapes: mc.DenseEmitter(layer, k)}


def _mse(F: np.ndarray, Y: np.ndarray):
    R = F - Y
    return float(np.vdot(R, R)) / len(F), (2.0 / len(F)) * R


def _relative_l2(F: np.ndarray, Y: np.ndarray):
    R = F - Y
    nr, ny = float(np.linalg.norm(R)), float(np.linalg.norm(Y))
    if ny == 0.0:
        raise ValueError("relative_l2 needs targets that are not all zero")
    return nr / ny, (R / (nr * ny) if nr > 0.0 else np.zeros_like(R))


LOSSES: dict[str, Callable] = {"mse": _mse, "relative_l2": _relative_l2}


def _loss(name: str) -> Callable:
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; one of: {', '.join(LOSSES)}") from None


class CompiledNetwork:
    """Fast numpy functions of one network with its parameters (see the module docstring).

    `tensors` maps parameter names (`f.W1`) to their elaborated `TensorVar`s: concrete ones
    give the initial values, symbolic (or ranged) ones are drawn at random by `init`.
    `matrix=False` forces the scalar fallback for every layer (for tests and benchmarks).
    `blas_threads` bounds numpy's BLAS threads during each call (None: leave BLAS alone).
    """

    def __init__(self, network, tensors: dict, *, matrix: bool = True, seed: int = 0,
                 blas_threads: int | None = 1):
        if blas_threads is not None and (not isinstance(blas_threads, int) or blas_threads < 1):
            raise ValueError(f"blas_threads must be a positive integer or None, got {blas_threads!r}")
        self.blas_threads = blas_threads
        self.network = network
        self.name = network.name
        self.n_in, self.n_out = prod(network.in_shape), prod(network.out_shape)
        self._tensors = {self._key(n): tensors[n] for layer in network.layers for n in layer.params}
        self._fans = {self._key(n): prod(layer.in_shape)
                      for layer in network.layers for n in layer.params}
        shapes = {n: tensors[n].shape for layer in network.layers for n in layer.params}
        self.emitters = [self._emitter(layer, k, shapes, matrix)
                         for k, layer in enumerate(network.layers, start=1)]
        self.sources: dict[str, str] = {}
        self._fns: dict[tuple, Callable] = {}
        self.params: dict[str, np.ndarray] = {}
        self.init(seed)

    def _key(self, name: str) -> str:
        return name.split(".", 1)[1] if name.startswith(self.name + ".") else name

    @staticmethod
    def _emitter(layer, k, shapes, matrix):
        rule = MATRIX_RULES.get(layer.kind) if matrix else None
        if rule is None:
            from .scalar_layer import ScalarEmitter

            return ScalarEmitter(layer, k, shapes)
        return rule(layer, k, shapes)

    # ---- parameters
    def init(self, seed: int = 0, randomize_all: bool = False) -> CompiledNetwork:
        """Set parameters: concrete spec weights as given, symbolic ones uniform at random.

        Symbolic weights are drawn like torch.nn.Linear, U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
        ranged ones (`W in [lo, hi]`) uniformly in their range. `randomize_all` draws concrete
        weights too (to train a loaded architecture from scratch).
        """
        rng = np.random.default_rng(seed)
        for key, t in self._tensors.items():
            if t.concrete and not randomize_all:
                self.params[key] = np.array([float(e) for e in t.entries]).reshape(t.shape)
                continue
            if t.lo is not None and not t.concrete:
                lo, hi = np.array(t.lo, dtype=float), np.array(t.hi, dtype=float)
                value = lo + (hi - lo) * rng.random(len(t.entries))
            else:
                bound = 1.0 / sqrt(self._fans[key])
                value = rng.uniform(-bound, bound, len(t.entries))
            self.params[key] = value.reshape(t.shape)
        return self

    def save(self, path: str) -> None:
        """Write the parameters as an .npz weight file that the spec's `load` accepts."""
        np.savez(path, **self.params)

    def _args(self) -> list[np.ndarray]:
        return [self.params[k] for k in self._tensors]

    def _grads(self, grads) -> dict[str, np.ndarray]:
        return dict(zip(self._tensors, grads))

    # ---- code generation
    def _fn(self, kind: str, *flags) -> Callable:
        key = (kind, *flags)
        fn = self._fns.get(key)
        if fn is None:
            src = self._source(kind, *flags)
            name = "_".join([kind, *map(str, flags)])
            scope = {"numpy": np, "_ws": {}}
            for em in self.emitters:
                scope.update(getattr(em, "scope", {}))
            # the source is ours: generated identifiers and numbers only, never spec text
            exec(compile(src, f"<snn-verify {self.name}:{name}>", "exec"), scope)  # noqa: S102
            fn = self._fns[key] = self._limited(scope[kind])
            self.sources[name] = src
        return fn

    def _limited(self, fn: Callable) -> Callable:
        if self.blas_threads is None:
            return fn

        def call(*args):
            with _blas_limit(self.blas_threads):
                return fn(*args)

        call.__wrapped__ = fn
        return call

    def _source(self, kind: str, *flags) -> str:
        if kind == "forward":
            return mc.forward_source(self.emitters)
        if kind == "pullback":
            return mc.pullback_source(self.emitters, *flags)
        if kind == "jacobian":
            return mc.jacobian_source(self.emitters, self.n_out)
        if kind == "mixed_input":
            return mc.mixed_source(self.emitters, *flags, inputs=True)
        return mc.mixed_source(self.emitters, *flags)

    @property
    def matrix_level(self) -> bool:
        """True when every layer has a matrix rule (no scalar fallback)."""
        return all(isinstance(em, mc.DenseEmitter) for em in self.emitters)

    def compile_all(self, mixed: bool = True) -> CompiledNetwork:
        """Generate every function now (otherwise each is generated on first use).

        `mixed=False` leaves the scalar fallback's second-order pullbacks (reverse over
        reverse of a layer program, seconds for an LSTM) to their first use.
        """
        for key in (("forward",), ("pullback", False), ("pullback", True), ("jacobian",),
                    ("mixed", False), ("mixed", True)):
            self._fn(*key)
        for em in self.emitters:
            if hasattr(em, "compile_all"):
                em.compile_all(mixed)
        return self

    # ---- numeric functions
    def _x(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        if X.ndim == 1 and self.n_in != 1 or X.ndim == 0:
            raise ValueError(f"expected a batch of shape [B, {self.n_in}], got {X.shape}")
        X = X.reshape(len(X), -1)
        if X.shape[1] != self.n_in:
            raise ValueError(f"network `{self.name}` takes {self.n_in} inputs, got {X.shape[1]}")
        return X

    def forward(self, X) -> np.ndarray:
        """Outputs [B, m] for a batch of inputs [B, n]."""
        return self._fn("forward")(self._x(X), *self._args())

    __call__ = forward

    def pullback(self, X, seed: Callable, want_dx: bool = False):
        """(loss, dX or None, grads) for seed(output) -> (loss, d loss / d output)."""
        L, dX, grads = self._fn("pullback", want_dx)(self._x(X), *self._args(), seed)
        return L, dX, self._grads(grads)

    def loss(self, X, Y, loss: str = "mse") -> float:
        return _loss(loss)(self.forward(X), np.asarray(Y, dtype=float))[0]

    def loss_and_grad(self, X, Y, loss: str = "mse"):
        """(loss, {param: gradient}) of `loss` between f(X) and targets Y [B, m]."""
        fn, Y = _loss(loss), np.asarray(Y, dtype=float).reshape(len(X), self.n_out)
        L, _, grads = self.pullback(X, lambda F: fn(F, Y))
        return L, grads

    def vjp(self, X, V):
        """(dX, {param: gradient}) of sum(V * f(X)) for cotangents V [B, m]."""
        V = np.asarray(V, dtype=float)
        _, dX, grads = self.pullback(X, lambda F: (None, V), want_dx=True)
        return dX, grads

    def input_grad(self, X) -> np.ndarray:
        """Gradient of the scalar output with respect to the inputs, [B, n]."""
        self._scalar_output()
        return self.vjp(X, np.ones((len(X), 1)))[0]

    def jacobian(self, X) -> np.ndarray:
        """d f_i / d x_j for every batch entry, [B, m, n]."""
        return self._fn("jacobian")(self._x(X), *self._args())

    def _scalar_output(self) -> None:
        if self.n_out != 1:
            raise ValueError(f"network `{self.name}` has {self.n_out} outputs; pass U to pick a "
                             "combination, or use jacobian")

    def mixed_loss_and_grad(self, X, seed: Callable, U=None, with_output: bool = False):
        """Parameter gradient of a loss on the input gradient G = d <U, f(X)> / d X.

        seed(out, G) -> (loss, d loss / d G) (and d loss / d out when `with_output`); U
        defaults to ones (the input gradient of a scalar output). Reverse over reverse at the
        matrix level: about three times the work of one gradient.
        """
        X = self._x(X)
        if U is None:
            self._scalar_output()
            U = np.ones((len(X), 1))
        L, grads = self._fn("mixed", with_output)(X, *self._args(), U, seed)
        return L, self._grads(grads)

    def mixed(self, X, V, U=None) -> dict[str, np.ndarray]:
        """{param: d/d param of sum(V * G)} with G the input gradient [B, n] (mixed d2/dθdx)."""
        V = np.asarray(V, dtype=float)
        return self.mixed_loss_and_grad(X, lambda F, G: (None, V), U)[1]

    def input_mixed(self, X, C, U=None, T=None) -> np.ndarray:
        """d/dX of <C, G> + <T, f(X)> with G = d <U, f(X)> / d X, shape [B, n].

        Hessian-vector products in the input, batched: with U = e_i this is the input
        gradient of a function of row i of the Jacobian (C its cotangent [B, n]) plus, with T
        [B, m], of a function of the output. One reverse-over-reverse pass, no parameter
        gradients.
        """
        X = self._x(X)
        if U is None:
            self._scalar_output()
            U = np.ones((len(X), 1))
        C = np.asarray(C, dtype=float)
        if T is None:
            _, dX = self._fn("mixed_input", False)(X, *self._args(), U, lambda F, G: (None, C))
        else:
            T = np.asarray(T, dtype=float)
            _, dX = self._fn("mixed_input", True)(X, *self._args(), U,
                                                  lambda F, G: (None, C, T))
        return dX

    # ---- Hamiltonian networks
    def _split(self) -> int:
        self._scalar_output()
        if self.n_in % 2:
            raise ValueError("a Hamiltonian takes (q, p) of equal sizes: an even input size")
        return self.n_in // 2

    def vector_field(self, X) -> np.ndarray:
        """Symplectic gradient (dH/dp, -dH/dq) of H = f at X = [q, p], shape [B, n]."""
        d = self._split()
        G = self.input_grad(X)
        return np.concatenate([G[:, d:], -G[:, :d]], axis=1)

    def hamiltonian_loss_and_grad(self, X, dXdt, loss: str = "mse"):
        """(loss, {param: gradient}) of `loss` between the vector field at X and dXdt."""
        d, fn = self._split(), _loss(loss)
        T = np.asarray(dXdt, dtype=float)

        def seed(out, G):
            L, dF = fn(np.concatenate([G[:, d:], -G[:, :d]], axis=1), T)
            return L, np.concatenate([-dF[:, d:], dF[:, :d]], axis=1)

        return self.mixed_loss_and_grad(X, seed)
