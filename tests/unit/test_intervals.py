"""Interval enclosures and linear envelopes against dense sampling in mpmath (80 digits)."""

from __future__ import annotations

import random
from fractions import Fraction as F

import mpmath
import pytest
import sympy as sp

from verifier.engines.intervals import (
    INF,
    Tape,
    dyadic_out,
    envelope,
    fn_deriv,
    fn_interval,
    fn_value,
    interval_of,
    iv_abs,
    iv_leaky,
    iv_leaky_step,
    iv_mul,
    iv_pow,
    iv_recip,
    iv_relu,
    iv_rpow,
    iv_step,
)
from verifier.layers.activations import leaky_relu, relu, sigmoid, softplus, step
from verifier.symbolic.program import Program

mpmath.mp.dps = 80
SMOOTH = [sp.tanh, sigmoid, softplus, sp.exp, sp.log]
MP = {
    sp.tanh: mpmath.tanh,
    sigmoid: lambda x: 1 / (1 + mpmath.exp(-x)),
    softplus: lambda x: mpmath.log(1 + mpmath.exp(x)),
    sp.exp: mpmath.exp,
    sp.log: mpmath.log,
}
DMP = {
    sp.tanh: lambda x: 1 / mpmath.cosh(x) ** 2,
    sigmoid: lambda x: mpmath.exp(-x) / (1 + mpmath.exp(-x)) ** 2,
    softplus: lambda x: 1 / (1 + mpmath.exp(-x)),
    sp.exp: mpmath.exp,
    sp.log: lambda x: 1 / x,
}


def mq(q) -> mpmath.mpf:
    return mpmath.mpf(q.numerator) / q.denominator


def grid(lo: F, hi: F, n: int = 200) -> list[F]:
    return [lo + (hi - lo) * F(i, n) for i in range(n + 1)]


TOL80 = mpmath.mpf(10) ** -70  # reference values are computed at 80 digits


def inside(v, iv, tol=TOL80) -> bool:
    """v in iv, up to the error of the reference value itself (far below our margins)."""
    lo, hi = iv
    return (lo == -INF or mq(lo) - tol <= v) and (hi == INF or v <= mq(hi) + tol)


def rand_interval(rng: random.Random, scale: int = 4) -> tuple[F, F]:
    a = F(rng.randint(-1000 * scale, 1000 * scale), 1000)
    b = F(rng.randint(-1000 * scale, 1000 * scale), 1000)
    return min(a, b), max(a, b)


# ---- rounding and point enclosures ------------------------------------------------------------


def test_dyadic_out_rounds_outward():
    rng = random.Random(0)
    for _ in range(2000):
        t = F(rng.randint(-10**30, 10**30), rng.randint(1, 10**25))
        bits = rng.randint(2, 80)
        lo, hi = dyadic_out(t, False, bits), dyadic_out(t, True, bits)
        assert lo <= t <= hi
        assert hi - lo <= abs(t) / 2 ** (bits - 2)


POINTS = [F(0), F(1), F(-1), F(1, 3), F(-7, 3), F(10**-30), F(-(10**-30)), F(45), F(-45),
          F(700), F(-700), F(1, 10**12) + 1, F(123456789, 1000)]


@pytest.mark.parametrize("fn", SMOOTH, ids=lambda f: f.__name__)
def test_fn_value_and_derivative_enclose_mpmath(fn):
    for x in POINTS:
        if fn is sp.log and x <= 0:
            continue
        lo, hi = fn_value(fn, x)
        assert inside(MP[fn](mq(x)), (lo, hi)), (fn, x)
        if hi != INF and lo != -INF:
            assert hi - lo <= abs(lo + hi) / 2**58 + F(1, 2**150)
        assert inside(DMP[fn](mq(x)), fn_deriv(fn, x)), (fn, x)


@pytest.mark.parametrize("fn", SMOOTH, ids=lambda f: f.__name__)
def test_fn_interval_contains_samples(fn):
    rng = random.Random(1)
    for _ in range(30):
        lo, hi = rand_interval(rng, 6)
        if fn is sp.log:
            lo, hi = abs(lo) + F(1, 1000), abs(lo) + F(1, 1000) + (hi - lo)
        iv = fn_interval(fn, (lo, hi))
        assert all(inside(MP[fn](mq(x)), iv) for x in grid(lo, hi, 40))


def test_log_of_nonpositive_and_unbounded_ends():
    assert fn_interval(sp.log, (F(-1), F(2)))[0] == -INF
    assert fn_interval(sp.tanh, (-INF, INF)) == (-1, 1)
    assert fn_interval(sp.exp, (F(0), INF)) == (1, INF)
    lo, hi = fn_interval(sp.exp, (F(5000), F(6000)))
    assert hi == INF and lo > 10**800


# ---- interval operations ----------------------------------------------------------------------


def _check_binary(op, exact, rng, n=300):
    for _ in range(n):
        a, b = rand_interval(rng), rand_interval(rng)
        iv = op(a, b)
        vals = [exact(x, y) for x in grid(*a, 12) for y in grid(*b, 12)]
        assert iv[0] <= min(vals) and max(vals) <= iv[1]
        # products of intervals are exact at the corners
        assert iv[0] == min(vals) and iv[1] == max(vals)


def test_product_of_mixed_sign_intervals_is_exact_hull():
    _check_binary(iv_mul, lambda x, y: x * y, random.Random(2))


def test_product_with_infinite_and_zero_ends():
    assert iv_mul((F(0), F(0)), (-INF, INF)) == (0, 0)
    assert iv_mul((F(0), F(1)), (F(1), INF)) == (0, INF)
    assert iv_mul((F(-2), F(1)), (F(1), INF)) == (-INF, INF)


@pytest.mark.parametrize("n", [-3, -2, -1, 0, 1, 2, 3, 4, 5])
def test_integer_powers_including_even_powers_across_zero(n):
    rng = random.Random(3 + n)
    for _ in range(200):
        a = rand_interval(rng)
        pts = [x for x in grid(*a, 50) + ([F(0)] if a[0] <= 0 <= a[1] else [])
               if n >= 0 or x != 0]
        iv = iv_pow(a, n)
        if n < 0 and a[0] <= 0 <= a[1]:
            assert iv == (-INF, INF)
            continue
        vals = [x**n for x in pts]
        assert iv[0] <= min(vals) and max(vals) <= iv[1]
        if n >= 0:
            assert iv[0] == min(vals) and iv[1] == max(vals)  # corners or 0: exact


def test_even_power_straddling_zero_is_nonnegative():
    assert iv_pow((F(-3), F(2)), 2) == (0, 9)
    assert iv_pow((F(-3), F(2)), 3) == (-27, 8)
    assert iv_pow((F(-3), F(-2)), 2) == (4, 9)
    assert iv_pow((-INF, F(1)), 2) == (0, INF)


def test_piecewise_and_abs():
    rng = random.Random(4)
    alpha = (F(1, 10), F(1, 10))
    for _ in range(200):
        a = rand_interval(rng)
        pts = grid(*a, 40)
        for op, f in [
            (iv_abs, abs),
            (iv_relu, lambda x: max(x, 0)),
            (iv_step, lambda x: F(1) if x > 0 else F(0)),
            (lambda iv: iv_leaky(iv, alpha), lambda x: x if x > 0 else x / 10),
            (lambda iv: iv_leaky_step(iv, alpha), lambda x: F(1) if x > 0 else F(1, 10)),
        ]:
            iv = op(a)
            assert all(iv[0] <= f(x) <= iv[1] for x in pts)
        if a[0] > 0 or a[1] < 0:
            r = iv_recip(a)
            assert all(r[0] <= 1 / x <= r[1] for x in pts)


def test_rational_powers():
    for lo, hi in [(F(0), F(4)), (F(1, 9), F(5)), (F(-1), F(2))]:
        iv = iv_rpow((lo, hi), F(1, 2))
        assert all(inside(mpmath.sqrt(mq(x)), iv) for x in grid(max(lo, F(0)), hi, 50))
        iv = iv_rpow((lo, hi), F(-3, 2))
        if lo > 0:
            assert all(inside(mq(x) ** mpmath.mpf(-1.5), iv) for x in grid(lo, hi, 50))


# ---- envelopes --------------------------------------------------------------------------------


def _check_envelope(fn, lo, hi, samples=300):
    lowers, uppers = envelope(fn, lo, hi)
    assert lowers and uppers
    closest = []
    for ln, upper in [(x, False) for x in lowers] + [(x, True) for x in uppers]:
        gaps = []
        for z in grid(lo, hi, samples):
            v, at = MP[fn](mq(z)), mq(ln.at(z))
            gap = at - v if upper else v - at
            assert gap >= 0, (fn, lo, hi, z, ln, upper)
            gaps.append(gap)
        closest.append(min(gaps))
    return closest


@pytest.mark.parametrize("fn", SMOOTH, ids=lambda f: f.__name__)
def test_envelopes_are_sound_and_touch(fn):
    rng = random.Random(5)
    for _ in range(12):
        lo, hi = rand_interval(rng, 5)
        if lo == hi:
            continue
        if fn is sp.log:
            lo, hi = abs(lo) + F(1, 100), abs(lo) + F(1, 100) + (hi - lo)
        closest = _check_envelope(fn, lo, hi, 150)
        assert max(closest) < 1e-6  # each line touches the function (up to sampling)


@pytest.mark.parametrize("fn", [sp.tanh, sigmoid], ids=lambda f: f.__name__)
@pytest.mark.parametrize("lo,hi", [(F(-1), F(2)), (F(-3), F(1, 4)), (F(-1, 1000), F(1, 1000)),
                                   (F(-30), F(40)), (F(-6), F(-5)), (F(5), F(6)),
                                   (F(0), F(3)), (F(-3), F(0))])
def test_s_shaped_envelopes_straddling_zero(fn, lo, hi):
    _check_envelope(fn, lo, hi, 400)


def test_envelope_refuses_unusable_ranges():
    assert envelope(sp.log, F(-1), F(1)) == ([], [])
    assert envelope(sp.tanh, F(1), F(1)) == ([], [])
    assert envelope(sp.exp, F(0), F(10**7)) == ([], [])


# ---- tapes over programs ----------------------------------------------------------------------


def _program():
    x, y = sp.symbols("x y", real=True)
    p = Program()
    z = p.assign(sp.Rational(3, 2) * x - y / 3 + sp.Rational(1, 4), "z")
    a = p.assign(sp.tanh(z), "a")
    s = p.assign(sigmoid(2 * x + y), "s")
    r = p.assign(relu(x * y - sp.Rational(1, 5)), "r")
    q = p.assign(a**2 - s * r + sp.Abs(x - y) + sp.Max(x, y) ** 3, "q")
    g = p.assign(q * (1 - a**2) + leaky_relu(y - x, sp.Rational(1, 10)) + step(x) / (2 + y), "g")
    h = p.assign(softplus(g) - sp.exp(x / 3) + sp.log(s) + sp.Min(x, 2 * y), "h")
    return p, (x, y), [z, a, s, r, q, g, h]


TOL60 = mpmath.mpf(10) ** -45  # reference values below are computed at 60 digits


def _mp_eval(p, env):
    from verifier.engines.replay import _mp

    with mpmath.workdps(60):
        vals = dict(env)
        for sym, d in p.slice(list(p.order)):
            vals[sym] = _mp(d, vals)
    return vals


@pytest.mark.parametrize("linear", [False, True])
def test_tape_encloses_every_program_symbol(linear):
    p, (x, y), syms = _program()
    tape = Tape(p, syms)
    rng = random.Random(6)
    for _ in range(25):
        bx, by = rand_interval(rng, 2), rand_interval(rng, 2)
        ev = tape.run({x: bx, y: by}, linear=linear)
        for px in grid(*bx, 6):
            for py in grid(*by, 6):
                vals = _mp_eval(p, {x: mq(px), y: mq(py)})
                for k, s in enumerate(syms):
                    iv = ev.values[tape.outputs[k]]
                    assert inside(vals[s], iv, TOL60), (s, bx, by, px, py)


def test_linear_forms_only_tighten():
    p, (x, y), syms = _program()
    tape = Tape(p, syms)
    rng = random.Random(7)
    for _ in range(25):
        box = {x: rand_interval(rng, 2), y: rand_interval(rng, 2)}
        a, b = tape.run(box, linear=False), tape.run(box, linear=True)
        for slot in tape.outputs:
            assert a.values[slot][0] <= b.values[slot][0] <= b.values[slot][1] <= a.values[slot][1]


def test_linear_forms_beat_plain_intervals_on_cancellation():
    x = sp.Symbol("x", real=True)
    p = Program()
    a = p.assign(sp.tanh(x), "a")
    d = p.assign(x - a, "d")  # x - tanh(x): plain intervals lose the correlation
    plain = interval_of(p, d, {x: (F(-1), F(1))}, linear=False)
    tape = Tape(p, [d])
    tight = tape.run({x: (F(-1), F(1))}).values[tape.outputs[0]]
    assert plain[1] - plain[0] > 3
    assert tight[1] - tight[0] < 1
    assert mq(tight[0]) <= -1 - mpmath.tanh(-1) and 1 - mpmath.tanh(1) <= mq(tight[1])


def test_piecewise_is_the_hull_of_its_branches():
    x = sp.Symbol("x", real=True)
    p = Program()
    s = p.assign(sp.Piecewise((x / 4 - 1, x <= -1), (x, x < 2), (3 * x - 4, True)), "s")
    tape = Tape(p, [s])
    lo, hi = tape.run({x: (F(-3), F(3))}).values[tape.outputs[0]]
    assert (lo, hi) == (-13, 5)  # sound (contains [-7/4, 5]); conditions are not used


def test_unbounded_leaves_and_unknown_functions():
    x, y = sp.symbols("x y", real=True)
    p = Program()
    a = p.assign(sp.tanh(x) + y**2, "a")
    b = p.assign(sp.sin(x), "b")
    tape = Tape(p, [a, b])
    ev = tape.run({x: (None, None)})
    assert ev.values[tape.outputs[0]] == (-1, INF)
    assert ev.values[tape.outputs[1]] == (-INF, INF)


def test_enclosures_hold_at_sampled_points():
    p, (x, y), syms = _program()
    tape = Tape(p, syms)
    rng = random.Random(8)
    for _ in range(10):
        bx, by = rand_interval(rng, 2), rand_interval(rng, 2)
        enc = tape.enclosures(tape.run({x: bx, y: by}))
        assert any(len(c) > 2 for c in enc.values())
        for px in grid(*bx, 5):
            for py in grid(*by, 5):
                vals = _mp_eval(p, {x: mq(px), y: mq(py)})
                from verifier.engines.replay import _mp

                for app, cons in enc.items():
                    with mpmath.workdps(60):
                        v = _mp(app, vals)
                        for op, term in cons:
                            t = _mp(sp.sympify(term), vals)
                            ok = (v >= t - TOL60) if op == ">=" else (v <= t + TOL60)
                            assert ok, (app, op, term)


# ---- float affine forms, the sech^2 bell, tangents at a point ---------------------------------


def test_float_forms_bound_the_exact_combination():
    """combine() with awkward rationals (1/3, tiny and huge magnitudes): the float form
    bounds the exact rational combination everywhere on the box (checked at the corners,
    where an affine function is extreme, in exact arithmetic)."""
    from itertools import product

    import numpy as np

    from verifier.engines.linforms import FloatForms

    rng = random.Random(3)
    for _ in range(200):
        n = rng.randint(1, 4)
        box = [rand_interval(rng, 3) for _ in range(n)]
        forms = FloatForms(box, 1)
        T = rng.randint(1, 6)
        rows = np.array([[rng.uniform(-1, 1) * 10 ** rng.randint(-8, 8) for _ in range(n + 1)]
                         for _ in range(T)])
        coeffs = [F(rng.randint(-10**6, 10**6), rng.choice([3, 7, 10**6 + 3])) for _ in range(T)]
        c0 = F(rng.randint(-100, 100), 3)
        cf = np.array([float(c) for c in coeffs])
        for lower in (True, False):
            f = forms.combine(c0, cf, rows, lower)
            for corner in product(*box):
                exact = c0 + sum(c * (F(r[0]) + sum(F(ri) * xi for ri, xi in zip(r[1:], corner)))
                                 for c, r in zip(coeffs, rows))
                got = F(f[0]) + sum(F(fi) * xi for fi, xi in zip(f[1:], corner))
                assert got <= exact if lower else got >= exact
            lo_hi = forms.low(f) if lower else forms.high(f)
            vals = [F(f[0]) + sum(F(fi) * xi for fi, xi in zip(f[1:], c)) for c in product(*box)]
            assert lo_hi <= min(vals) if lower else lo_hi >= max(vals)


def _mp(q):
    return mpmath.mpf(q.numerator) / q.denominator


def test_sech2_inflection_bracket_and_bell_envelope_are_sound():
    from verifier.engines.intervals import _INFLECTION, bell_envelope, bell_interval

    r1, r2 = _INFLECTION
    with mpmath.workprec(200):
        assert _mp(r1) < mpmath.atanh(1 / mpmath.sqrt(3)) < _mp(r2)
    rng = random.Random(11)
    with mpmath.workprec(120):
        for _ in range(60):
            lo, hi = rand_interval(rng, 4)
            if lo == hi:
                continue
            at = rng.uniform(float(lo), float(hi)) if rng.random() < 0.7 else None
            lowers, uppers = bell_envelope(lo, hi, at)
            assert lowers and uppers
            blo, bhi = bell_interval((lo, hi))
            for i in range(101):
                z = _mp(lo + (hi - lo) * F(i, 100))
                v = mpmath.sech(z) ** 2
                assert _mp(blo) <= v <= _mp(bhi)
                assert all(_mp(ln.slope) * z + _mp(ln.offset) <= v for ln in lowers)
                assert all(_mp(ln.slope) * z + _mp(ln.offset) >= v for ln in uppers)


def test_tangent_at_a_point_is_certified_and_tight_there():
    """envelope(..., at=t): the primary line of the side where tangents are valid touches the
    function at t, and every line is still a bound at 10^4 points."""
    import numpy as np

    rng = random.Random(5)
    for fn, npf in ((sp.tanh, np.tanh), (sigmoid, lambda z: 0.5 * (1 + np.tanh(0.5 * z)))):
        for _ in range(40):
            lo, hi = rand_interval(rng, 4)
            if lo == hi:
                continue
            t = rng.uniform(float(lo), float(hi))
            lowers, uppers = envelope(fn, lo, hi, full=False, at=t)
            zs = np.linspace(float(lo), float(hi), 10_000)
            vals = npf(zs)
            for ln in lowers:
                assert np.all(float(ln.slope) * zs + float(ln.offset) <= vals + 1e-12)
            for ln in uppers:
                assert np.all(float(ln.slope) * zs + float(ln.offset) >= vals - 1e-12)
            side = uppers if t > 0 else lowers
            if (fn is sp.tanh and side and abs(float(side[0].slope) - (1 - np.tanh(t) ** 2)) < 1e-9):
                assert abs(float(side[0].slope) * t + float(side[0].offset) - np.tanh(t)) < 1e-9


def test_one_minus_tanh_squared_is_bounded_as_a_bell():
    """1 - tanh(z)^2 gets forms from sech^2's own lines: sound at sampled points and tighter
    in the middle of the box than the square of tanh's forms."""
    import numpy as np

    x, y = sp.symbols("x y", real=True)
    p = Program()
    z = p.assign(3 * x - y / 2, "z")
    a = p.assign(sp.tanh(z), "a")
    s = p.assign(1 - a**2, "s")
    tape = Tape(p, [s])
    assert list(tape.bells.values()) == [(tape.slots[z], tape.slots[a])]
    box = {x: (F(-1, 4), F(1, 2)), y: (F(-1), F(1))}
    ev, o = tape.run(box), tape.outputs[0]
    X = np.random.default_rng(0).uniform([-0.25, -1], [0.5, 1], (10_000, 2)).T
    vals = 1 - np.tanh(3 * X[0] - X[1] / 2) ** 2
    X = X[[(x, y).index(d[0]) for d in ev.dims]]  # rows in the order of the forms' leaves
    fL, fU = ev.forms.L[o], ev.forms.U[o]
    assert np.all(fL[0] + fL[1:] @ X <= vals + 1e-12) and np.all(vals <= fU[0] + fU[1:] @ X + 1e-12)
    tape.bells, tape.formless = {}, set()
    plain = tape.run(box)
    mid = [1.0] + [0.125 if d[0] == x else 0.0 for d in ev.dims]
    assert (fU - fL) @ mid < (plain.forms.U[o] - plain.forms.L[o]) @ mid - 0.05


def test_huge_values_keep_their_intervals_without_float_overflow():
    """Rationals beyond the float range: float forms step aside, the exact intervals stay."""
    x = sp.Symbol("x", real=True)
    p = Program()
    big = sp.Integer(10) ** 400
    y = p.assign(big * x + sp.tanh(x), "y")
    z = p.assign(y * y, "z")
    tape = Tape(p, [y, z])
    ev = tape.run({x: (F(1), F(2))})
    lo, hi = ev.values[tape.outputs[0]]
    assert lo <= 10**400 + F(7616, 10**4) and hi >= 2 * 10**400 + F(964, 1000)  # tanh 1, tanh 2
    zlo, zhi = ev.values[tape.outputs[1]]
    assert zlo <= (10**400 + F(7616, 10**4)) ** 2 and zhi >= (2 * 10**400 + F(964, 1000)) ** 2
