"""Sparse regression of a message component on a library of candidate terms (SINDy).

SINDy (Brunton, Proctor and Kutz 2016) fits y ~ Theta xi with few non-zero coefficients. Its
default optimiser, sequentially thresholded least squares (pysindy's STLSQ), prunes terms by
the size of their coefficients; on this library that fails, because d r^p for neighbouring p
are nearly collinear over the distances seen, so the dense fit has large cancelling
coefficients and thresholding keeps the wrong terms. So here the l0-constrained problem is
solved exactly, by enumeration (what pysindy's MIOSR optimiser solves as a mixed-integer
program): for each support size up to 5, the least-squares fit of smallest residual over all
supports (462 of size 5 for 11 terms); the sparsest that explains the data about as well as
the whole library is the law. numpy only, so the example needs nothing beyond the tool's
dependencies.

The terms are functions of the relative position d = (dx, dy) and r = |d|: a constant and the
central-force shapes d * r^p. Each comes with its numpy evaluation and its text in the spec
language (over a vector and its norm, bound by the spec's `let`s), so a fitted law is written into a spec
as exact rationals, never evaluated from text.
"""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np

# (name, spec text over a vector {u} and its norm {r}, numpy function of (dx, dy, r))
LIBRARY = [
    ("1", "1", lambda dx, dy, r: np.ones_like(dx)),
    ("dx", "{u}[0]", lambda dx, dy, r: dx),
    ("dy", "{u}[1]", lambda dx, dy, r: dy),
    ("dx*r", "{u}[0]*{r}", lambda dx, dy, r: dx * r),
    ("dy*r", "{u}[1]*{r}", lambda dx, dy, r: dy * r),
    ("dx/r", "{u}[0]/{r}", lambda dx, dy, r: dx / r),
    ("dy/r", "{u}[1]/{r}", lambda dx, dy, r: dy / r),
    ("dx/r^2", "{u}[0]/{r}^2", lambda dx, dy, r: dx / r**2),
    ("dy/r^2", "{u}[1]/{r}^2", lambda dx, dy, r: dy / r**2),
    ("dx/r^3", "{u}[0]/{r}^3", lambda dx, dy, r: dx / r**3),
    ("dy/r^3", "{u}[1]/{r}^3", lambda dx, dy, r: dy / r**3),
]


def features(d: np.ndarray) -> np.ndarray:
    """The library evaluated at relative positions d [P, 2]: [P, len(LIBRARY)]."""
    dx, dy = d[:, 0], d[:, 1]
    r = np.sqrt(dx * dx + dy * dy)
    return np.column_stack([f(dx, dy, r) for _, _, f in LIBRARY])


def r_squared(y: np.ndarray, pred: np.ndarray) -> float:
    return 1.0 - float(np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2))


def best_subsets(theta: np.ndarray, y: np.ndarray, max_terms: int = 5) -> dict:
    """{size: (residual fraction 1 - R^2, term indices, coefficients)}: for each support size
    up to `max_terms`, the least-squares fit of smallest residual over all supports."""
    tot = float(np.sum((y - y.mean()) ** 2))
    best: dict[int, tuple] = {}
    for size in range(1, max_terms + 1):
        for support in itertools.combinations(range(theta.shape[1]), size):
            cols = theta[:, support]
            c = np.linalg.lstsq(cols, y, rcond=None)[0]
            err = float(np.sum((y - cols @ c) ** 2)) / tot
            if size not in best or err < best[size][0]:
                best[size] = (err, support, c)
    return best


def fit(d: np.ndarray, y: np.ndarray, max_terms: int = 5, slack: float = 2.0,
        digits: int = 4):
    """(exact coefficients {term name: Fraction}, R^2 of the rounded law on the data).

    The sparsest law whose unexplained fraction 1 - R^2 is at most `slack` times that of the
    least-squares fit on the whole library.
    """
    theta = features(d)
    full = np.linalg.lstsq(theta, y, rcond=None)[0]
    floor = 1.0 - r_squared(y, theta @ full)
    best = best_subsets(theta, y, max_terms)
    size = next((s for s in sorted(best) if best[s][0] <= slack * floor), max(best))
    _, support, c = best[size]
    coeffs = {LIBRARY[k][0]: rational(float(ck), digits) for k, ck in zip(support, c)}
    return coeffs, r_squared(y, evaluate(coeffs, d))


def rational(c: float, digits: int = 4) -> Fraction:
    """c rounded to `digits` significant decimal digits, as an exact fraction."""
    if c == 0:
        return Fraction(0)
    return Fraction(f"{c:.{digits - 1}e}")


def evaluate(coeffs: dict, d: np.ndarray) -> np.ndarray:
    theta = features(d)
    names = [name for name, _, _ in LIBRARY]
    return sum(float(c) * theta[:, names.index(n)] for n, c in coeffs.items())


def spec_text(coeffs: dict, u: str = "u", r: str = "r") -> str:
    """The law in the spec language over the vector named `u` and its norm `r` (names the
    caller declares): exact rationals times library terms."""
    text = {name: t.format(u=u, r=r) for name, t, _ in LIBRARY}
    parts = []
    for name in sorted(coeffs, key=[n for n, _, _ in LIBRARY].index):
        c = coeffs[name]
        num = f"{abs(c.numerator)}" if c.denominator == 1 else \
            f"{abs(c.numerator)}/{c.denominator}"
        term = num if name == "1" else f"{num}*{text[name]}"
        parts.append(("- " if c < 0 else "+ ") + term)
    if not parts:
        return "0"
    out = " ".join(parts)
    return out[2:] if out.startswith("+ ") else "-" + out[2:]


def pretty(coeffs: dict, digits: int = 4) -> str:
    """The law for people: 0.5 dx/r^3 - 1.2 dy."""
    parts = [f"{float(c):+.{digits}g}" + ("" if n == "1" else f" {n}") for n, c in coeffs.items()]
    return " ".join(parts).lstrip("+") or "0"
