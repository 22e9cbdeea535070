#!/usr/bin/env python3
"""The scrape-latency chart without matplotlib: pngplot.py RESULTS.json OUT.png

A fallback for bench/plot.py when matplotlib cannot be installed: the same two
panels (plain, gzip), the same axes (volumes on a symlog x axis, latency in ms
on a log y axis) and colours (blue kubedf, orange node_exporter; solid p50,
dashed p99), drawn with the standard library into a PNG. Tick labels are
digits only; docs/benchmarks.md's caption says what is what.
"""

import json
import math
import struct
import sys
import zlib

COLORS = {"kubedf": (31, 119, 180), "node_exporter": (255, 127, 14)}


def chart_data(path):
    """{encoding: {exporter: [(n, p50_ms, p99_ms), ...]}} from results.json."""
    with open(path) as f:
        r = json.load(f)
    out = {enc: {"kubedf": [], "node_exporter": []} for enc in ("plain", "gzip")}
    for name, step in r["steps"].items():
        if not name.startswith("scrape N=") or not step.get("ok"):
            continue
        res = step["result"]
        for enc in out:
            for kind in out[enc]:
                s = res["seq"][enc][kind]
                out[enc][kind].append((res["n"], s["p50_ms"], s["p99_ms"]))
    for enc in out:
        for kind in out[enc]:
            out[enc][kind].sort()
    return out


# 3x5 digits, scaled when drawn.
GLYPHS = {
    "0": ("111", "101", "101", "101", "111"),
    "1": ("010", "110", "010", "010", "111"),
    "2": ("111", "001", "111", "100", "111"),
    "3": ("111", "001", "111", "001", "111"),
    "4": ("101", "101", "111", "001", "001"),
    "5": ("111", "100", "111", "001", "111"),
    "6": ("111", "100", "111", "101", "111"),
    "7": ("111", "001", "001", "001", "001"),
    "8": ("111", "101", "111", "101", "111"),
    "9": ("111", "101", "111", "001", "111"),
    ".": ("000", "000", "000", "000", "010"),
    ",": ("000", "000", "000", "010", "100"),
}


class Canvas:
    def __init__(self, w, h):
        self.w, self.h = w, h
        self.pix = bytearray(b"\xff" * (w * h * 3))

    def dot(self, x, y, c):
        x, y = int(round(x)), int(round(y))
        if 0 <= x < self.w and 0 <= y < self.h:
            i = (y * self.w + x) * 3
            self.pix[i : i + 3] = bytes(c)

    def rect(self, x0, y0, x1, y1, c):
        for y in range(int(y0), int(y1) + 1):
            for x in range(int(x0), int(x1) + 1):
                self.dot(x, y, c)

    def line(self, x0, y0, x1, y1, c, width=2, dash=None):
        length = math.hypot(x1 - x0, y1 - y0)
        steps = max(1, int(length * 2))
        for i in range(steps + 1):
            t = i / steps
            if dash and int(t * length / dash) % 2:
                continue
            x, y = x0 + (x1 - x0) * t, y0 + (y1 - y0) * t
            for dx in range(width):
                for dy in range(width):
                    self.dot(x + dx - width // 2, y + dy - width // 2, c)

    def text(self, x, y, s, c=(60, 60, 60), scale=2, anchor="left"):
        width = len(s) * 4 * scale
        if anchor == "right":
            x -= width
        elif anchor == "center":
            x -= width / 2
        for ch in s:
            g = GLYPHS.get(ch)
            if g:
                for row, bits in enumerate(g):
                    for col, b in enumerate(bits):
                        if b == "1":
                            self.rect(x + col * scale, y + row * scale, x + col * scale + scale - 1, y + row * scale + scale - 1, c)
            x += 4 * scale

    def png(self, path):
        raw = b"".join(b"\x00" + bytes(self.pix[y * self.w * 3 : (y + 1) * self.w * 3]) for y in range(self.h))

        def chunk(kind, data):
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

        with open(path, "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n")
            f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", self.w, self.h, 8, 2, 0, 0, 0)))
            f.write(chunk(b"IDAT", zlib.compress(raw, 9)))
            f.write(chunk(b"IEND", b""))


def symlog(x):
    return x / 10 if x <= 10 else 1 + math.log10(x / 10)


def fmt_tick(v):
    if v >= 1:
        return f"{v:,.0f}"
    return f"{v:g}"


def main(argv):
    results, out = argv
    data = chart_data(results)
    W, H = 1100, 460
    cv = Canvas(W, H)
    values = [v for enc in data.values() for pts in enc.values() for p in pts for v in p[1:] if v > 0]
    ns = sorted({p[0] for enc in data.values() for pts in enc.values() for p in pts})
    if not values or not ns:
        cv.png(out)
        return
    ylo = 10 ** math.floor(math.log10(min(values)))
    yhi = 10 ** math.ceil(math.log10(max(values)))
    if yhi <= ylo:
        yhi = ylo * 10
    xlo, xhi = symlog(min(ns)), symlog(max(ns))
    if xhi <= xlo:
        xhi = xlo + 1
    grid = (225, 225, 225)
    axis = (90, 90, 90)
    for panel, enc in enumerate(("plain", "gzip")):
        left = 90 + panel * 530
        right, top, bottom = left + 440, 30, H - 60

        def px(x):
            return left + 15 + (symlog(x) - xlo) / (xhi - xlo) * (right - left - 30)

        def py(y):
            return bottom - (math.log10(y) - math.log10(ylo)) / (math.log10(yhi) - math.log10(ylo)) * (bottom - top)

        d = ylo
        while d <= yhi * 1.0001:
            cv.line(left, py(d), right, py(d), grid, width=1)
            cv.text(left - 8, py(d) - 5, fmt_tick(d), anchor="right")
            d *= 10
        for n in ns:
            cv.line(px(n), top, px(n), bottom, grid, width=1)
            cv.text(px(n), bottom + 10, f"{n:,}", anchor="center")
        cv.line(left, bottom, right, bottom, axis, width=1)
        cv.line(left, top, left, bottom, axis, width=1)
        for kind, pts in data[enc].items():
            c = COLORS[kind]
            for idx, dash in ((1, None), (2, 8)):
                for a, b in zip(pts, pts[1:]):
                    cv.line(px(a[0]), py(a[idx]), px(b[0]), py(b[idx]), c, width=3, dash=dash)
                for p in pts:
                    cv.rect(px(p[0]) - 3, py(p[idx]) - 3, px(p[0]) + 3, py(p[idx]) + 3, c)
    cv.png(out)


if __name__ == "__main__":
    main(sys.argv[1:])
