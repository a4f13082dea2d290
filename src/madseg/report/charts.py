"""Small inline-SVG charts (no JavaScript, no CDN): a report page renders offline from the file system."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

PALETTE = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f", "#17becf")


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for mult in (1, 2, 5, 10):
        if (hi - lo) / (step * mult) <= n:
            step *= mult
            break
    start = math.floor(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step) + 2) if start + i * step <= hi + 1e-9]


def line_chart(
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    width: int = 520,
    height: int = 300,
    y_range: tuple[float, float] | None = None,
    highlight: str | None = None,
) -> str:
    """An SVG line chart of named (x, y) series; ``highlight`` draws one series thicker (the target)."""
    points = [p for s in series.values() for p in s if p[1] == p[1]]
    if not points:
        return f'<p class="empty">{html.escape(title)}: no data yet</p>'
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = y_range or (min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1)
    left, right, top, bottom = 52, 130, 28, 40
    pw, ph = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * ph

    parts = [
        f'<svg class="chart" role="img" aria-label="{html.escape(title)}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg" '
        'font-family="sans-serif" font-size="11">',
        f'<text x="{left}" y="16" font-size="13" font-weight="bold">{html.escape(title)}</text>',
    ]
    for t in _ticks(y0, y1):
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{left - 6}" y="{sy(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
    for t in _ticks(x0, x1):
        parts.append(f'<text x="{sx(t):.1f}" y="{top + ph + 16}" text-anchor="middle">{t:g}</text>')
    parts.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
    parts.append(f'<text x="{left + pw / 2}" y="{height - 6}" text-anchor="middle">{html.escape(x_label)}</text>')
    parts.append(
        f'<text x="12" y="{top + ph / 2}" text-anchor="middle" transform="rotate(-90 12 {top + ph / 2})">'
        f"{html.escape(y_label)}</text>"
    )
    for n, (name, pts) in enumerate(series.items()):
        colour = PALETTE[n % len(PALETTE)]
        widthpx = 3 if name == highlight else 1.5
        good = [(x, y) for x, y in pts if y == y]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in good)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="{widthpx}"/>')
        for x, y in good:
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{colour}"/>')
        ly = top + 12 + 16 * n
        parts.append(f'<rect x="{left + pw + 10}" y="{ly - 8}" width="10" height="10" fill="{colour}"/>')
        weight = ' font-weight="bold"' if name == highlight else ""
        parts.append(f'<text x="{left + pw + 24}" y="{ly + 1}"{weight}>{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(values: Mapping[str, float], *, title: str, y_label: str, width: int = 360, height: int = 220) -> str:
    """An SVG bar chart of named values (e.g. a rating histogram)."""
    if not values:
        return f'<p class="empty">{html.escape(title)}: no data yet</p>'
    top_value = max(max(values.values()), 1e-9)
    left, top, bottom = 44, 28, 36
    pw, ph = width - left - 12, height - top - bottom
    bw = pw / len(values)
    parts = [
        f'<svg class="chart" role="img" aria-label="{html.escape(title)}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg" '
        'font-family="sans-serif" font-size="11">',
        f'<text x="{left}" y="16" font-size="13" font-weight="bold">{html.escape(title)}</text>',
        f'<text x="12" y="{top + ph / 2}" text-anchor="middle" transform="rotate(-90 12 {top + ph / 2})">'
        f"{html.escape(y_label)}</text>",
    ]
    for n, (name, v) in enumerate(values.items()):
        h = v / top_value * ph
        x = left + n * bw
        parts.append(
            f'<rect x="{x + 4:.1f}" y="{top + ph - h:.1f}" width="{bw - 8:.1f}" height="{h:.1f}" fill="{PALETTE[1]}"/>'
        )
        parts.append(f'<text x="{x + bw / 2:.1f}" y="{top + ph - h - 3:.1f}" text-anchor="middle">{v:g}</text>')
        parts.append(f'<text x="{x + bw / 2:.1f}" y="{top + ph + 14}" text-anchor="middle">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)
