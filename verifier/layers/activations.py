"""Elementwise activations: the sympy function, its derivative rule, and its numeric forms.

Each activation is one `Activation` record in `ACTIVATIONS`; adding one means adding a sympy
function class here and one registry entry. Derivative rules are stated in terms of the
activation's *output* where possible (tanh' = 1 - tanh^2, sigmoid' = s(1 - s)), so reverse-mode
programs reuse the forward symbol instead of re-applying the function.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import mpmath
import numpy as np
import sympy as sp


class relu(sp.Function):  # lower case: sympy prints the class name
    """max(x, 0)."""

    nargs = 1

    @classmethod
    def eval(cls, x):
        if x.is_Number:
            return x if x > 0 else sp.Integer(0)
        if x.is_nonnegative:
            return x
        if x.is_nonpositive:
            return sp.Integer(0)
        return None

    def fdiff(self, argindex=1):
        return step(self.args[0])


class step(sp.Function):
    """The derivative of relu: 1 for x > 0, 0 otherwise (PyTorch's choice at 0)."""

    nargs = 1

    @classmethod
    def eval(cls, x):
        if x.is_Number:
            return sp.Integer(1) if x > 0 else sp.Integer(0)
        if x.is_positive:
            return sp.Integer(1)
        if x.is_nonpositive:
            return sp.Integer(0)
        return None

    def fdiff(self, argindex=1):
        return sp.Integer(0)  # almost everywhere; claims state x != 0 where it matters


class leaky_relu(sp.Function):
    """x for x > 0, alpha * x otherwise."""

    nargs = 2

    @classmethod
    def eval(cls, x, alpha):
        if x.is_Number and alpha.is_Number:
            return x if x > 0 else alpha * x
        return None

    def fdiff(self, argindex=1):
        if argindex == 1:
            return leaky_step(*self.args)
        x = self.args[0]
        return x - relu(x)  # d/d alpha of (relu(x) + alpha * min(x, 0))


class leaky_step(sp.Function):
    """The derivative of leaky_relu in x: 1 for x > 0, alpha otherwise."""

    nargs = 2

    @classmethod
    def eval(cls, x, alpha):
        if x.is_Number:
            return sp.Integer(1) if x > 0 else alpha
        return None

    def fdiff(self, argindex=1):
        if argindex == 1:
            return sp.Integer(0)
        return 1 - step(self.args[0])


class sigmoid(sp.Function):
    """The logistic function 1 / (1 + exp(-x))."""

    nargs = 1

    @classmethod
    def eval(cls, x):
        if x.is_zero:
            return sp.Rational(1, 2)
        return None

    def fdiff(self, argindex=1):
        return self * (1 - self)

    def _eval_evalf(self, prec):
        x = self.args[0]._eval_evalf(prec)
        if x is None or not x.is_Number:
            return None
        return (1 / (1 + sp.exp(-x))).evalf(prec)


class softplus(sp.Function):
    """log(1 + exp(x))."""

    nargs = 1

    def fdiff(self, argindex=1):
        return sigmoid(self.args[0])

    def _eval_evalf(self, prec):
        x = self.args[0]._eval_evalf(prec)
        if x is None or not x.is_Number:
            return None
        return sp.log(1 + sp.exp(x)).evalf(prec)


class normal_cdf(sp.Function):
    """Phi(x) = (1 + erf(x / sqrt 2)) / 2, the standard normal distribution function (GELU's
    gate: gelu(x) = x * Phi(x), PyTorch's exact `approximate='none'`)."""

    nargs = 1

    @classmethod
    def eval(cls, x):
        if x.is_zero:
            return sp.Rational(1, 2)
        return None

    def fdiff(self, argindex=1):
        return normal_pdf(self.args[0])

    def _eval_evalf(self, prec):
        x = self.args[0]._eval_evalf(prec)
        if x is None or not x.is_Number:
            return None
        return ((1 + sp.erf(x / sp.sqrt(2))) / 2).evalf(prec)

    def _numpycode(self, printer):  # compiled evaluation: numpy has no erf, the math module has
        x = printer._print(self.args[0])
        return f"(0.5*(1.0 + numpy.vectorize(__import__('math').erf)(({x})*0.7071067811865476)))"

    def _latex(self, printer):
        return rf"\Phi\left({printer._print(self.args[0])}\right)"


class normal_pdf(sp.Function):
    """phi(x) = exp(-x^2 / 2) / sqrt(2 pi), the derivative of `normal_cdf`."""

    nargs = 1

    def fdiff(self, argindex=1):
        return -self.args[0] * self

    def _eval_evalf(self, prec):
        x = self.args[0]._eval_evalf(prec)
        if x is None or not x.is_Number:
            return None
        return (sp.exp(-x**2 / 2) / sp.sqrt(2 * sp.pi)).evalf(prec)

    def _numpycode(self, printer):
        x = printer._print(self.args[0])
        return f"(0.3989422804014327*numpy.exp(-0.5*({x})**2))"

    def _latex(self, printer):
        return rf"\varphi\left({printer._print(self.args[0])}\right)"


# PyTorch's gelu(approximate='tanh') constant sqrt(2/pi), as the float64 it computes with
# (M_SQRT2 * M_2_SQRTPI * 0.5), kept exact: the approximation is then a rational polynomial in
# tanh, which every engine and back end handles.
GELU_TANH_BETA = sp.Rational("0.7978845608028654")
GELU_TANH_KAPPA = sp.Rational("0.044715")


def gelu_term(x):
    """x * Phi(x): the gate one program symbol, so reverse mode reuses it."""
    return x * normal_cdf(x)


def gelu_tanh_term(x):
    """PyTorch's gelu(approximate='tanh'): x/2 (1 + tanh(beta (x + kappa x^3)))."""
    return x * (1 + sp.tanh(GELU_TANH_BETA * (x + GELU_TANH_KAPPA * x**3))) / 2


def _mp_normal_cdf(x):
    return mpmath.ncdf(x)


def _mp_normal_pdf(x):
    return mpmath.npdf(x)


def _np_gelu(x):
    from scipy.special import ndtr

    return x * ndtr(x)


def _np_gelu_tanh(x):
    b, k = float(GELU_TANH_BETA), float(GELU_TANH_KAPPA)
    return 0.5 * x * (1.0 + np.tanh(b * (x + k * x**3)))


def _mp_sigmoid(x):
    return 1 / (1 + mpmath.exp(-x))


def _mp_softplus(x):
    # log1p(exp(x)) without overflow for large x
    if x > 0:
        return x + mpmath.log1p(mpmath.exp(-x))
    return mpmath.log1p(mpmath.exp(x))


def _np_sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _np_softplus(x):
    return np.logaddexp(0.0, x)


@dataclass(frozen=True, slots=True, kw_only=True)
class Activation:
    """An elementwise activation and everything the passes need to know about it."""

    name: str
    arity: int  # 1, or 2 when it takes a parameter (leaky_relu's alpha)
    build: Callable[..., sp.Expr]  # (x, *params) -> sympy expression
    smooth: bool  # smooth activations need enclosures; piecewise-linear ones are exact in z3
    monotone: bool = True
    # output range, used as a sound constraint on atoms: (lo, hi, lo_strict, hi_strict)
    range: tuple = (None, None, False, False)
    mp: Callable | None = None  # high-precision evaluation at a real (mpmath) point
    np: Callable | None = None  # vectorised float evaluation


ACTIVATIONS: dict[str, Activation] = {
    "identity": Activation(
        name="identity", arity=1, build=lambda x: x, smooth=False,
        mp=lambda x: x, np=lambda x: x,
    ),
    "relu": Activation(
        name="relu", arity=1, build=relu, smooth=False, range=(0, None, False, False),
        mp=lambda x: x if x > 0 else mpmath.mpf(0), np=lambda x: np.maximum(x, 0.0),
    ),
    "leaky_relu": Activation(
        name="leaky_relu", arity=2, build=leaky_relu, smooth=False,
        mp=None, np=None,
    ),
    "tanh": Activation(
        name="tanh", arity=1, build=sp.tanh, smooth=True, range=(-1, 1, True, True),
        mp=mpmath.tanh, np=np.tanh,
    ),
    "sigmoid": Activation(
        name="sigmoid", arity=1, build=sigmoid, smooth=True, range=(0, 1, True, True),
        mp=_mp_sigmoid, np=_np_sigmoid,
    ),
    "softplus": Activation(
        name="softplus", arity=1, build=softplus, smooth=True, range=(0, None, True, False),
        mp=_mp_softplus, np=_np_softplus,
    ),
    # GELU as PyTorch's nn.GELU(): exact (erf) by default, `gelu_tanh` its tanh approximation.
    # gelu is not monotone (minimum about -0.17 at x about -0.75).
    "gelu": Activation(
        name="gelu", arity=1, build=gelu_term, smooth=True, monotone=False,
        range=(sp.Rational(-17, 100), None, True, False),
        mp=lambda x: x * mpmath.ncdf(x), np=_np_gelu,
    ),
    "gelu_tanh": Activation(
        name="gelu_tanh", arity=1, build=gelu_tanh_term, smooth=True, monotone=False,
        range=(sp.Rational(-17, 100), None, True, False),
        mp=None, np=_np_gelu_tanh,
    ),
}

# sympy function classes of smooth activations (and exp/log) that z3 cannot interpret:
# each application is an opaque atom for the SMT encodings.
SMOOTH_FUNCTIONS = (sp.tanh, sigmoid, softplus, sp.exp, sp.log, normal_cdf, normal_pdf)
PIECEWISE_FUNCTIONS = (relu, step, leaky_relu, leaky_step, sp.Piecewise)


def output_rule(fn: sp.Expr, out: sp.Symbol) -> sp.Expr | None:
    """d fn / d arg written with `out` standing for fn itself, or None for the generic rule."""
    if isinstance(fn, sp.tanh):
        return 1 - out**2
    if isinstance(fn, sigmoid):
        return out * (1 - out)
    if isinstance(fn, sp.exp):
        return out
    if isinstance(fn, normal_pdf):
        return -fn.args[0] * out
    return None


MP_FUNCTIONS: dict[type, Callable] = {
    sp.tanh: mpmath.tanh,
    sigmoid: _mp_sigmoid,
    softplus: _mp_softplus,
    sp.exp: mpmath.exp,
    sp.log: mpmath.log,
    normal_cdf: _mp_normal_cdf,
    normal_pdf: _mp_normal_pdf,
}
