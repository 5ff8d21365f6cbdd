"""Inline SVG plots for the HTML report: a line plot with a bound, a heat map; axes, ticks, labels.

Drawn here rather than by a plotting library so the page stays self-contained and the output
deterministic (coordinates rounded to 0.1 px). Every label is XML-escaped.
"""

from __future__ import annotations

import math
from html import escape

import numpy as np

WIDTH, HEIGHT = 640, 340
LEFT, RIGHT, TOP, BOTTOM = 78, 24, 30, 58
CURVE_COLOURS = ("#1f5fbf", "#2a9d3a", "#8c4bb8", "#c27c0e")
BOUND_COLOUR = "#d12f2f"
FAIL_COLOUR = "#d12f2f"
# a perceptually ordered ramp (viridis, sampled at 7 points)
RAMP = ((68, 1, 84), (68, 58, 131), (49, 104, 142), (33, 145, 140), (53, 183, 121),
        (144, 215, 67), (253, 231, 37))


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About n round values (1, 2 or 5 times a power of ten) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9)
    last = math.floor(hi / step + 1e-9)
    return [k * step for k in range(first, last + 1)]


def tick_label(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return f"{v:.2g}"
    return f"{v:.6g}"


def _n(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".") if math.isfinite(v) else "0"


def _text(x, y, s, *, anchor="middle", size=12, extra="") -> str:
    return (f'<text x="{_n(x)}" y="{_n(y)}" text-anchor="{anchor}" font-size="{size}"{extra}>'
            f"{escape(s)}</text>")


class _Frame:
    """Maps data coordinates to the plot area and draws the axes."""

    def __init__(self, xlo, xhi, ylo, yhi, width=WIDTH, right=RIGHT):
        if yhi <= ylo:
            ylo, yhi = ylo - 1, yhi + 1
        if xhi <= xlo:
            xlo, xhi = xlo - 1, xhi + 1
        self.xlo, self.xhi, self.ylo, self.yhi = xlo, xhi, ylo, yhi
        self.x0, self.x1 = LEFT, width - right
        self.y0, self.y1 = HEIGHT - BOTTOM, TOP
        self.width = width

    def px(self, x: float) -> float:
        return self.x0 + (x - self.xlo) / (self.xhi - self.xlo) * (self.x1 - self.x0)

    def py(self, y: float) -> float:
        return self.y0 + (y - self.ylo) / (self.yhi - self.ylo) * (self.y1 - self.y0)

    def axes(self, xlabel: str, ylabel: str, title: str, grid: bool = True) -> list[str]:
        out = [f'<rect x="{self.x0}" y="{self.y1}" width="{self.x1 - self.x0}" '
               f'height="{self.y0 - self.y1}" fill="none" stroke="#444"/>']
        for t in nice_ticks(self.xlo, self.xhi, 6):
            x = self.px(t)
            out.append(f'<line x1="{_n(x)}" y1="{self.y0}" x2="{_n(x)}" y2="{self.y0 + 5}" '
                       'stroke="#444"/>')
            out.append(_text(x, self.y0 + 18, tick_label(t)))
        for t in nice_ticks(self.ylo, self.yhi, 5):
            y = self.py(t)
            out.append(f'<line x1="{self.x0 - 5}" y1="{_n(y)}" x2="{self.x0}" y2="{_n(y)}" '
                       'stroke="#444"/>')
            if grid:
                out.append(f'<line x1="{self.x0}" y1="{_n(y)}" x2="{self.x1}" y2="{_n(y)}" '
                           'stroke="#e4e4e4"/>')
            out.append(_text(self.x0 - 8, y + 4, tick_label(t), anchor="end"))
        mid_x = (self.x0 + self.x1) / 2
        out.append(_text(mid_x, HEIGHT - 14, xlabel, size=13, extra=' class="xlabel"'))
        mid_y = (self.y0 + self.y1) / 2
        out.append(_text(18, mid_y, ylabel, size=13,
                         extra=f' class="ylabel" transform="rotate(-90 18 {_n(mid_y)})"'))
        out.append(_text(mid_x, 18, title, size=13, extra=' font-weight="bold"'))
        return out


def _svg(body: list[str], width: int = WIDTH, height: int = HEIGHT) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" role="img">'
            + "".join(body) + "</svg>")


def _path(frame: _Frame, xs, ys) -> str:
    """Polyline segments, broken where a value is missing (NaN)."""
    d, pen = [], False
    for x, y in zip(xs, ys):
        if not math.isfinite(y):
            pen = False
            continue
        d.append(("L" if pen else "M") + f"{_n(frame.px(x))} {_n(frame.py(y))}")
        pen = True
    return " ".join(d)


def line_plot(xs, curves, bounds, *, xlabel: str, ylabel: str, title: str,
              marks=()) -> str:
    """curves: [(label, ys)]; bounds: [(label, y)] drawn as dashed lines; marks: [(label, x, y)]
    drawn as points (counterexamples)."""
    xs = np.asarray(xs, dtype=float)
    values = [v for _, ys in curves for v in np.asarray(ys, dtype=float) if math.isfinite(v)]
    values += [y for _, y in bounds] + [y for _, _, y in marks]
    ylo, yhi = min(values), max(values)
    pad = (yhi - ylo) * 0.08 or 1.0
    frame = _Frame(float(xs[0]), float(xs[-1]), ylo - pad, yhi + pad)
    body = frame.axes(xlabel, ylabel, title)
    legend = []
    for k, (label, ys) in enumerate(curves):
        colour = CURVE_COLOURS[k % len(CURVE_COLOURS)]
        body.append(f'<path class="curve" d="{_path(frame, xs, ys)}" fill="none" '
                    f'stroke="{colour}" stroke-width="2.2"/>')
        legend.append((label, colour, ""))
    for label, y in bounds:
        py = _n(frame.py(y))
        body.append(f'<line class="bound" x1="{frame.x0}" y1="{py}" x2="{frame.x1}" y2="{py}" '
                    f'stroke="{BOUND_COLOUR}" stroke-width="1.8" stroke-dasharray="7 4"/>')
        legend.append((label, BOUND_COLOUR, ' stroke-dasharray="7 4"'))
    for label, x, y in marks:
        body.append(f'<circle class="counterexample" cx="{_n(frame.px(x))}" '
                    f'cy="{_n(frame.py(y))}" r="5" fill="{FAIL_COLOUR}" stroke="#fff"/>')
        legend.append((label, FAIL_COLOUR, " marker"))
    body += _legend(frame, legend)
    return _svg(body, height=HEIGHT + 18 * len(legend) + 6)


def _legend(frame: _Frame, entries) -> list[str]:
    """One line per entry, below the x axis label."""
    out = []
    for k, (label, colour, style) in enumerate(entries):
        y = HEIGHT + 8 + 18 * k
        x = frame.x0
        if style == " marker":
            out.append(f'<circle cx="{x + 11}" cy="{y - 4}" r="4.5" fill="{colour}"/>')
        else:
            out.append(f'<line x1="{x}" y1="{y - 4}" x2="{x + 22}" y2="{y - 4}" '
                       f'stroke="{colour}" stroke-width="2"{style}/>')
        out.append(f'<text x="{x + 28}" y="{y}" font-size="12" paint-order="stroke" '
                   f'stroke="#fff" stroke-width="3">{escape(label)}</text>')
    return out


def _ramp(t: float) -> str:
    t = min(max(t, 0.0), 1.0) * (len(RAMP) - 1)
    k = min(int(t), len(RAMP) - 2)
    f = t - k
    rgb = [round(a + (b - a) * f) for a, b in zip(RAMP[k], RAMP[k + 1])]
    return "#%02x%02x%02x" % tuple(rgb)


def heat_map(xs, ys, Z, fails, *, xlabel: str, ylabel: str, zlabel: str, title: str,
             marks=(), levels=()) -> str:
    """Z[i, j] is the value at (xs[j], ys[i]); cells where `fails` is true are shaded red and
    the region outlined; NaN cells (a side condition fails) are grey; marks: [(label, x, y)];
    levels (the claimed bounds) are drawn as red lines on the colour bar when in its range."""
    xs, ys, Z = (np.asarray(a, dtype=float) for a in (xs, ys, Z))
    bar = 70
    width = WIDTH + bar
    dx = (xs[-1] - xs[0]) / max(len(xs) - 1, 1)
    dy = (ys[-1] - ys[0]) / max(len(ys) - 1, 1)
    frame = _Frame(xs[0] - dx / 2, xs[-1] + dx / 2, ys[0] - dy / 2, ys[-1] + dy / 2,
                   width=width, right=RIGHT + bar)
    finite = Z[np.isfinite(Z)]
    zlo, zhi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    span = (zhi - zlo) or 1.0
    body = ['<g shape-rendering="crispEdges">']
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            z = Z[i, j]
            fill = _ramp((z - zlo) / span) if math.isfinite(z) else "#bbbbbb"
            x0, x1 = frame.px(x - dx / 2), frame.px(x + dx / 2)
            y0, y1 = frame.py(y + dy / 2), frame.py(y - dy / 2)
            body.append(f'<rect x="{_n(x0)}" y="{_n(y0)}" width="{_n(x1 - x0 + 0.4)}" '
                        f'height="{_n(y1 - y0 + 0.4)}" fill="{fill}"/>')
    body.append("</g>")
    body += _failing_region(frame, xs, ys, dx, dy, np.asarray(fails, dtype=bool))
    for label, x, y in marks:
        body.append(f'<circle class="counterexample" cx="{_n(frame.px(x))}" '
                    f'cy="{_n(frame.py(y))}" r="5" fill="{FAIL_COLOUR}" stroke="#fff" '
                    f'stroke-width="1.5"><title>{escape(label)}</title></circle>')
    body += frame.axes(xlabel, ylabel, title, grid=False)
    body += _colour_bar(frame, zlo, zhi, zlabel, levels)
    return _svg(body, width)


def _failing_region(frame: _Frame, xs, ys, dx, dy, fails) -> list[str]:
    """A translucent red over the failing cells and a red line around the region."""
    out, edges = [], []
    rows, cols = fails.shape
    for i in range(rows):
        for j in range(cols):
            if not fails[i, j]:
                continue
            xa, xb = frame.px(xs[j] - dx / 2), frame.px(xs[j] + dx / 2)
            ya, yb = frame.py(ys[i] + dy / 2), frame.py(ys[i] - dy / 2)
            out.append(f'<rect class="fails" x="{_n(xa)}" y="{_n(ya)}" '
                       f'width="{_n(xb - xa + 0.4)}" height="{_n(yb - ya + 0.4)}"/>')
            if i + 1 >= rows or not fails[i + 1, j]:
                edges.append(f"M{_n(xa)} {_n(ya)}H{_n(xb)}")
            if i == 0 or not fails[i - 1, j]:
                edges.append(f"M{_n(xa)} {_n(yb)}H{_n(xb)}")
            if j == 0 or not fails[i, j - 1]:
                edges.append(f"M{_n(xa)} {_n(ya)}V{_n(yb)}")
            if j + 1 >= cols or not fails[i, j + 1]:
                edges.append(f"M{_n(xb)} {_n(ya)}V{_n(yb)}")
    if not out:
        return []
    return [f'<g fill="{FAIL_COLOUR}" fill-opacity="0.35" shape-rendering="crispEdges">', *out,
            "</g>",
            f'<path class="fails-outline" d="{" ".join(edges)}" fill="none" '
            f'stroke="{FAIL_COLOUR}" stroke-width="2"/>']


def _colour_bar(frame: _Frame, zlo: float, zhi: float, zlabel: str, levels=()) -> list[str]:
    x = frame.x1 + 18
    top, bottom, steps = frame.y1, frame.y0, 40
    h = (bottom - top) / steps
    out = [f'<rect x="{x}" y="{_n(bottom - (k + 1) * h)}" width="14" height="{_n(h + 0.4)}" '
           f'fill="{_ramp(k / (steps - 1))}"/>' for k in range(steps)]
    out.append(f'<rect x="{x}" y="{top}" width="14" height="{bottom - top}" fill="none" '
               'stroke="#444"/>')
    span = (zhi - zlo) or 1.0
    for t in nice_ticks(zlo, zhi, 6):
        y = bottom - (t - zlo) / span * (bottom - top)
        out.append(f'<line x1="{x + 14}" y1="{_n(y)}" x2="{x + 18}" y2="{_n(y)}" stroke="#444"/>')
        out.append(_text(x + 20, y + 4, tick_label(t), anchor="start", size=11))
    for v in levels:
        if zlo <= v <= zhi:
            y = bottom - (v - zlo) / span * (bottom - top)
            out.append(f'<line class="bound" x1="{x - 4}" y1="{_n(y)}" x2="{x + 18}" '
                       f'y2="{_n(y)}" stroke="{BOUND_COLOUR}" stroke-width="2.5"/>')
    mid = (top + bottom) / 2
    out.append(_text(x + 66, mid, zlabel, size=12,
                     extra=f' class="zlabel" transform="rotate(-90 {x + 66} {_n(mid)})"'))
    return out
