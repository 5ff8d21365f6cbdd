"""`--emit html`: the report page, read back by `html.parser` and rendered by headless Chromium.

One spec with a hostile file name (it becomes the model name on the page): an identity claim,
a proved and a refuted bound on a 1-2-1 tanh network with concrete weights, and a Jacobian
derivation. The page is parsed (well nested, the name escaped, links resolving to the files
written beside it); the plotted curve is read back from the SVG through its own tick labels
and compared with the same network in PyTorch; the verdict table matches the CLI's JSON
report; Chromium renders the page and the screenshot shows the plot's colours.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = 'net<img src=x onerror=alert(1)>&"q'
SPEC = """\
input x : real[1] in [-1, 1]
input a : real

network t(in=1) {
  dense(2, tanh, W=[[2], [-1]], b=[0, 1/2])
  dense(1, W=[[1, 1/2]], b=[0])
}

claim ident: d(tanh(a))/d(a) == 1 - tanh(a)^2
claim upper: t(x)[0] <= 1.5
claim too_tight: t(x)[0] <= 0.75
derive jacobian t(x) wrt x
"""
VOID = {"meta", "br", "img", "input", "link", "hr", "col", "area", "base", "wbr", "source"}


def _verify(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "verifier", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)


class Page(HTMLParser):
    """Elements in document order with attributes, text content and enclosing tags; nesting
    errors collected."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.elements = [], [], []

    def _element(self, tag, attrs) -> dict:
        el = {"tag": tag, "attrs": dict(attrs), "text": "",
              "parents": [e["tag"] for e in self.stack]}
        self.elements.append(el)
        return el

    def handle_starttag(self, tag, attrs):
        el = self._element(tag, attrs)
        if tag not in VOID:
            self.stack.append(el)

    def handle_startendtag(self, tag, attrs):
        self._element(tag, attrs)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1]["tag"] != tag:
            self.errors.append(f"</{tag}> closes {[e['tag'] for e in self.stack[-1:]]}")
            return
        self.stack.pop()

    def handle_data(self, data):
        for el in self.stack:  # text content, as the DOM's textContent
            el["text"] += data

    def find(self, tag, **attrs):
        return [e for e in self.elements if e["tag"] == tag and
                all(e["attrs"].get(k) == v for k, v in attrs.items())]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    d = tmp_path_factory.mktemp("html")
    spec = d / f"{HOSTILE}.snn"
    spec.write_text(SPEC)
    out = d / "out"
    proc = _verify(str(spec), "-o", str(out), "--json")  # the default: every kind
    assert proc.returncode == 1, proc.stderr  # too_tight is refuted
    data = json.loads(proc.stdout)
    pages = list(out.glob("*.html"))
    assert len(pages) == 1, sorted(p.name for p in out.iterdir())
    text = pages[0].read_text(encoding="utf-8")
    page = Page()
    page.feed(text)
    page.close()
    return {"dir": out, "path": pages[0], "text": text, "page": page,
            "json": data["specs"][0], "spec": spec}


def test_page_parses_and_escapes_the_hostile_name(report):
    page, text = report["page"], report["text"]
    assert text.startswith("<!DOCTYPE html>")
    assert page.errors == [] and page.stack == []
    assert not page.find("img") and not page.find("script")
    assert not any(k.startswith("on") for e in page.elements for k in e["attrs"])
    assert "<img" not in text
    (h1,) = page.find("h1")
    assert h1["text"] == HOSTILE  # shown as text, exactly
    assert "&lt;img src=x onerror=alert(1)&gt;&amp;&#34;q" in text
    # self-contained: nothing is fetched
    assert not re.search(r'(src|href)="(https?:)?//', text)
    assert not page.find("script") and not page.find("link")


def test_verdict_table_matches_the_cli_report(report):
    page = report["page"]
    rows = [e for e in page.elements if e["tag"] == "tr" and "tbody" in e["parents"]]
    cells = [e for e in page.elements if e["tag"] == "td"]
    assert len(rows) == 3 and len(cells) == 3 * 7
    table = {cells[7 * k]["text"]: [c["text"].strip() for c in cells[7 * k:7 * k + 7]]
             for k in range(3)}
    for ob in report["json"]["obligations"]:
        name, kind, claim, verdict, engine, time, detail = table[ob["name"]]
        assert (kind, verdict, engine) == (ob["kind"], ob["verdict"], ob["engine"])
        assert re.fullmatch(r"\d+\.\d\d s", time)
        assert claim.startswith(f"claim {name}:")
    assert table["too_tight"][3] == "refuted"
    assert "x[0] = " in table["too_tight"][6]  # the counterexample
    assert {r[3] for r in table.values()} == {"proved", "refuted"}


def test_bound_plot_has_axes_labels_and_the_network_curve(report):
    page = report["page"]
    figure = next(e for e in page.elements if e["tag"] == "figure"
                  and e["attrs"].get("id") == "plot-upper")
    start = page.elements.index(figure)
    svg_at = next(k for k in range(start, len(page.elements)) if page.elements[k]["tag"] == "svg")
    end = next(k for k in range(svg_at, len(page.elements))
               if page.elements[k]["tag"] == "figcaption")
    inside = page.elements[svg_at:end]
    texts = [e for e in inside if e["tag"] == "text"]
    assert [e["text"] for e in texts if e["attrs"].get("class") == "xlabel"] == ["x[0]"]
    assert [e["text"] for e in texts if e["attrs"].get("class") == "ylabel"] == ["t.z2[0]"]
    xt = [(float(e["attrs"]["x"]), float(e["text"])) for e in texts
          if e["attrs"].get("text-anchor") == "middle" and "class" not in e["attrs"]
          and "font-weight" not in e["attrs"]]
    yt = [(float(e["attrs"]["y"]) - 4, float(e["text"])) for e in texts
          if e["attrs"].get("text-anchor") == "end"]
    assert len(xt) >= 3 and len(yt) >= 3
    to_x = _linear(xt)
    to_y = _linear(yt)
    (curve,) = [e for e in inside if e["tag"] == "path" and e["attrs"].get("class") == "curve"]
    pts = [(to_x(float(a)), to_y(float(b)))
           for a, b in re.findall(r"[ML]([-\d.]+) ([-\d.]+)", curve["attrs"]["d"])]
    assert len(pts) > 100
    assert pts[0][0] == pytest.approx(-1, abs=0.01) and pts[-1][0] == pytest.approx(1, abs=0.01)
    net = torch.nn.Sequential(torch.nn.Linear(1, 2), torch.nn.Tanh(), torch.nn.Linear(1 * 2, 1))
    with torch.no_grad():
        net[0].weight[:] = torch.tensor([[2.0], [-1.0]])
        net[0].bias[:] = torch.tensor([0.0, 0.5])
        net[2].weight[:] = torch.tensor([[1.0, 0.5]])
        net[2].bias[:] = 0.0
        xs = torch.tensor([[p[0]] for p in pts], dtype=torch.float64)
        ys = net.double()(xs)[:, 0]
    span = max(v for _, v in yt) - min(v for _, v in yt)
    for (_, y), ref in zip(pts, ys.tolist()):
        assert y == pytest.approx(ref, abs=0.01 * span)  # a pixel's worth
    (bound,) = [e for e in inside if e["tag"] == "line" and e["attrs"].get("class") == "bound"]
    assert to_y(float(bound["attrs"]["y1"])) == pytest.approx(1.5, abs=0.01 * span)
    # the refuted claim's plot marks its counterexample above its bound
    fig2 = next(e for e in page.elements if e["tag"] == "figure"
                and e["attrs"].get("id") == "plot-too_tight")
    after = page.elements[page.elements.index(fig2):]
    assert any(e["tag"] == "circle" and e["attrs"].get("class") == "counterexample"
               for e in after)
    # the identity claim has no plot
    assert not [e for e in page.elements if e["attrs"].get("id") == "plot-ident"]


def _linear(pairs):
    (p0, v0), (p1, v1) = pairs[0], pairs[-1]
    return lambda p: v0 + (p - p0) * (v1 - v0) / (p1 - p0)


def test_formulas_are_mathml_with_their_latex(report):
    page = report["page"]
    maths = page.find("math")
    assert len(maths) >= 3  # intermediate definitions and the Jacobian entry
    assert any("tanh" in e["text"] for e in page.elements if "math" in e["parents"])
    (pre,) = [e for e in page.find("pre") if "details" in e["parents"]]
    assert pre["text"].startswith("\\begin{align*}") and "\\tanh" in pre["text"]
    assert "\\mathrm{jacobian}_{0,0}" in pre["text"]


def test_links_resolve_to_the_artifacts_beside_the_page(report):
    out, page = report["dir"], report["page"]
    hrefs = {e["attrs"]["href"] for e in page.find("a")}
    from urllib.parse import unquote

    for h in hrefs:
        assert "/" not in h and (out / unquote(h)).is_file(), h
    others = {p.name for p in out.iterdir() if p.suffix != ".html"}
    assert {unquote(h) for h in hrefs} == others
    assert {p.suffix for p in out.iterdir()} == {".smt2", ".v", ".lean", ".json", ".tex", ".html"}


def test_emit_html_alone(report, tmp_path):
    out = tmp_path / "only"
    proc = _verify(str(report["spec"]), "-o", str(out), "--emit", "html")
    assert proc.returncode == 1, proc.stderr
    (path,) = out.iterdir()
    assert path.suffix == ".html"
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    assert page.errors == [] and not page.find("a")  # nothing else was written to link
    assert [e["text"] for e in page.find("p") if "No other artifacts" in e["text"]]
    assert len(page.find("svg")) == len(report["page"].find("svg")) == 2
    verdicts = [e["text"] for e in page.find("span") if "verdict" in e["attrs"].get("class", "")]
    assert verdicts == ["proved", "proved", "refuted"]


# ---------------------------------------------------------------- the screenshot

def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is required in CI (Debian package `chromium`)")
    pytest.skip("chromium not installed")


def read_png(data: bytes, max_rows: int | None = None):
    """(width, height, pixels) of an 8-bit truecolour PNG without interlace: pixels is a numpy
    array (rows, width, 3) of the first `max_rows` rows (filters undone; Sub and Up with numpy,
    Average and Paeth byte by byte)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, []
    while pos < len(data):
        (n,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour)
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + n
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    assert len(raw) == height * (stride + 1)
    rows = min(height, max_rows or height)
    out = np.zeros((rows, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int64)
    for y in range(rows):
        f = raw[y * (stride + 1)]
        line = np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int64)
        if f == 1:
            line = np.cumsum(line.reshape(width, bpp), axis=0).ravel() & 255
        elif f == 2:
            line = (line + prev) & 255
        elif f in (3, 4):
            cur, up = line.tolist(), prev.tolist()
            for i in range(stride):
                left = cur[i - bpp] if i >= bpp else 0
                if f == 3:
                    cur[i] = (cur[i] + (left + up[i]) // 2) & 255
                    continue
                ul = up[i - bpp] if i >= bpp else 0
                p = left + up[i] - ul
                pa, pb, pc = abs(p - left), abs(p - up[i]), abs(p - ul)
                cur[i] = (cur[i] + (left if pa <= pb and pa <= pc else up[i] if pb <= pc
                                    else ul)) & 255
            line = np.array(cur, dtype=np.int64)
        else:
            assert f == 0, f
        out[y] = line
        prev = line
    return width, height, out.reshape(rows, width, bpp)[:, :, :3]


def test_png_reader_against_zlib_made_images():
    """The reader on images whose every filter type is known (written here with zlib)."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(5, 4, 3), dtype=np.int64)
    raw = b""
    for y in range(5):  # filter y % 5: none, Sub, Up, Average, Paeth
        f, row, up = y % 5, img[y].ravel(), img[y - 1].ravel() if y else np.zeros(12, np.int64)
        enc = []
        for i in range(12):
            a, b, c = (row[i - 3] if i >= 3 else 0), up[i], (up[i - 3] if i >= 3 else 0)
            p = a + b - c
            pred = [0, a, b, (a + b) // 2,
                    a if abs(p - a) <= abs(p - b) and abs(p - a) <= abs(p - c)
                    else b if abs(p - b) <= abs(p - c) else c][f]
            enc.append((row[i] - pred) & 255)
        raw += bytes([f, *enc])

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 5, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    width, height, pixels = read_png(png)
    assert (width, height) == (4, 5)
    assert (pixels == img).all()


def test_chromium_renders_the_page(report, tmp_path):
    exe = _chromium()
    shot = tmp_path / "page.png"
    proc = subprocess.run(
        [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
         "--window-size=1200,1600", report["path"].resolve().as_uri()],
        capture_output=True, text=True, timeout=180, check=False)
    assert shot.is_file(), proc.stderr[-2000:]
    width, height, pixels = read_png(shot.read_bytes(), max_rows=1300)
    assert (width, height) == (1200, 1600)
    # the plots sit below the table: count colours there, and the curve's and bound's pixels
    region = pixels[400:1300].reshape(-1, 3).astype(np.int64)
    colours = {tuple(c) for c in np.unique(region, axis=0)}
    assert len(colours) > 50, len(colours)
    blue = int((np.abs(region - [0x1F, 0x5F, 0xBF]).sum(axis=1) < 60).sum())
    red = int((np.abs(region - [0xD1, 0x2F, 0x2F]).sum(axis=1) < 60).sum())
    assert blue > 500 and red > 200, (blue, red)  # the curves (2 px wide) and dashed bounds
    white = int((region == 255).all(axis=1).sum())
    assert 0.3 < white / len(region) < 0.98  # a page, not a blank or a solid colour
