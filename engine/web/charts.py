"""Small inline SVG charts, drawn on the server (no JavaScript, nothing to download).

Pure functions: numbers in, an SVG string (markupsafe.Markup) out. Labels are escaped. Colours are
presentation attributes, so the page's Content-Security-Policy (no inline style) still holds.
"""
from __future__ import annotations

from markupsafe import Markup, escape

COLOURS = ("#2563eb", "#16a34a", "#d97706", "#7c3aed", "#dc2626")
W, H, LEFT, BOTTOM, TOP = 720, 240, 44, 28, 24


def _axis(top: float) -> tuple[list[str], float]:
    """Grid lines and the scale's top (a round number >= the data's maximum)."""
    top = max(top, 1)
    step = next(s for s in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000,
                            100_000, 10**9) if top / s <= 5)
    scale = step * -(-top // step)
    parts = []
    for i in range(int(scale // step) + 1):
        y = H - BOTTOM - (H - BOTTOM - TOP) * (i * step / scale)
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{W - 8}" y2="{y:.1f}" stroke="#e5e7eb"/>'
                     f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="#6b7280">'
                     f'{int(i * step)}</text>')
    return parts, scale


def line_chart(labels: list[str], series: dict[str, list[float]], title: str = "") -> Markup:
    values = [v for vs in series.values() for v in vs]
    grid, scale = _axis(max(values, default=0))
    n = max(len(labels), 1)
    x = lambda i: LEFT + (W - LEFT - 16) * (i / (n - 1) if n > 1 else 0.5)   # noqa: E731
    y = lambda v: H - BOTTOM - (H - BOTTOM - TOP) * (v / scale)              # noqa: E731
    parts = [f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {W} {H}" '
             f'xmlns="http://www.w3.org/2000/svg" data-kind="line" data-points="{len(labels)}">',
             f'<title>{escape(title)}</title>', *grid]
    for k, (name, vs) in enumerate(series.items()):
        colour = COLOURS[k % len(COLOURS)]
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(vs))
        parts.append(f'<polyline class="series" data-series="{escape(name)}" fill="none" stroke="{colour}" '
                     f'stroke-width="2" points="{points}"/>')
        parts.append(f'<rect x="{LEFT + 10 + k * 110}" y="6" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{LEFT + 24 + k * 110}" y="15" font-size="12">{escape(name)}</text>')
    for i in sorted({0, n // 2, n - 1}) if labels else []:
        anchor = "start" if i == 0 else "end" if i == n - 1 else "middle"
        parts.append(f'<text x="{x(i):.1f}" y="{H - 8}" text-anchor="{anchor}" font-size="11" fill="#6b7280">'
                     f'{escape(labels[i])}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def bar_chart(labels: list[str], values: list[float], dark: list[float] | None = None, title: str = "") -> Markup:
    """One bar per label; `dark` draws a darker part at the bar's foot (e.g. the late share)."""
    grid, scale = _axis(max(values, default=0))
    n = max(len(labels), 1)
    slot = (W - LEFT - 16) / n
    width = min(56.0, max(4.0, slot * 0.7))
    y = lambda v: H - BOTTOM - (H - BOTTOM - TOP) * (v / scale)              # noqa: E731
    parts = [f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {W} {H}" '
             f'xmlns="http://www.w3.org/2000/svg" data-kind="bar" data-points="{len(labels)}">',
             f'<title>{escape(title)}</title>', *grid]
    for i, (label, v) in enumerate(zip(labels, values)):
        x0 = LEFT + slot * i + (slot - width) / 2
        parts.append(f'<rect class="bar" x="{x0:.1f}" y="{y(v):.1f}" width="{width:.1f}" '
                     f'height="{H - BOTTOM - y(v):.1f}" fill="#93c5fd"><title>{escape(label)}: {v}</title></rect>')
        if dark and dark[i]:
            parts.append(f'<rect x="{x0:.1f}" y="{y(dark[i]):.1f}" width="{width:.1f}" '
                         f'height="{H - BOTTOM - y(dark[i]):.1f}" fill="#1d4ed8"/>')
        parts.append(f'<text x="{x0 + width / 2:.1f}" y="{H - 8}" text-anchor="middle" font-size="10" '
                     f'fill="#374151">{escape(label[:12])}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
