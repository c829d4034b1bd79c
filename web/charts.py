"""Plain SVG charts for the managers' metrics (no script, no external file): axes, values, full width."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH = 960
HEIGHT = 240
LEFT = 56  # room for the value axis' labels
RIGHT = 16
TOP = 20
BOTTOM = 36  # room for the category labels
TICKS = 4
MAX_LABELS = 14  # category labels shown at most (every n-th beyond that)
MAX_VALUES = 20  # values written over the bars or points at most


@dataclass
class Bar:
    label: str
    value: float
    text: str


def _open(title: str, kind: str) -> list[str]:
    return [f'<svg class="chart {kind}" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" preserveAspectRatio="xMidYMid meet" '
            f'xmlns="http://www.w3.org/2000/svg" aria-label="{escape(title)}">', f"<title>{escape(title)}</title>"]


def _text(x: float, y: float, text: str, cls: str = "", anchor: str = "middle") -> str:
    klass = f' class="{cls}"' if cls else ""
    return f'<text{klass} x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}">{escape(text)}</text>'


def _axes(top: float, tick_text: Callable[[float], str], y_title: str) -> list[str]:
    """The value axis with its ticks and grid lines, and the base line."""
    inner = HEIGHT - TOP - BOTTOM
    parts = []
    for i in range(TICKS + 1):
        v = top * i / TICKS
        y = HEIGHT - BOTTOM - inner * i / TICKS
        parts.append(f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}"/>')
        parts.append(_text(LEFT - 6, y + 3, tick_text(v), "tick", anchor="end"))
    parts.append(f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}"/>')
    parts.append(f'<line class="axis" x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" y2="{HEIGHT - BOTTOM}"/>')
    if y_title:
        parts.append(f'<text class="axis-title" x="4" y="{TOP - 6}">{escape(y_title)}</text>')
    return parts


def _label_every(n: int) -> int:
    return max(1, -(-n // MAX_LABELS))


def _y(value: float, top: float) -> float:
    return HEIGHT - BOTTOM - (HEIGHT - TOP - BOTTOM) * max(0.0, min(value, top)) / top


def _top(values: list[float], max_value: float | None) -> float:
    top = max_value if max_value is not None else max(values, default=0.0)
    return top or 1.0


def _number(v: float) -> str:
    return f"{v:.0f}" if v >= 10 or v == int(v) else f"{v:.1f}"


def bar_chart(bars: list[Bar], title: str, max_value: float | None = None,
              tick_text: Callable[[float], str] = _number, y_title: str = "") -> Markup:
    """One <rect> per bar with its label below and its value above; a value axis with ticks."""
    top = _top([b.value for b in bars], max_value)
    slot = (WIDTH - LEFT - RIGHT) / max(len(bars), 1)
    every = _label_every(len(bars))
    parts = _open(title, "bars") + _axes(top, tick_text, y_title)
    for i, b in enumerate(bars):
        x = LEFT + i * slot + slot * 0.15
        y = _y(b.value, top)
        parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" height="{HEIGHT - BOTTOM - y:.1f}" '
                     f'fill="#0b5cad"><title>{escape(b.label)}: {escape(b.text)}</title></rect>')
        cx = x + slot * 0.35
        if i % every == 0:
            parts.append(_text(cx, HEIGHT - BOTTOM + 16, b.label))
        if b.text and len(bars) <= MAX_VALUES:
            parts.append(_text(cx, y - 4, b.text, "value"))
    parts.append("</svg>")
    return Markup("".join(parts))


def line_chart(points: list[Bar | None], title: str, max_value: float | None = None,
               tick_text: Callable[[float], str] = _number, y_title: str = "") -> Markup:
    """A trend line over the categories (a gap where a point is None), each point with its value."""
    values = [p.value for p in points if p is not None]
    top = _top(values, max_value)
    step = (WIDTH - LEFT - RIGHT) / max(len(points), 1)
    every = _label_every(len(points))
    parts = _open(title, "trend") + _axes(top, tick_text, y_title)
    runs: list[list[str]] = [[]]
    for i, p in enumerate(points):
        cx = LEFT + step * (i + 0.5)
        if p is None:
            runs.append([])
            continue
        cy = _y(p.value, top)
        runs[-1].append(f"{cx:.1f},{cy:.1f}")
        parts.append(f'<circle class="dot" cx="{cx:.1f}" cy="{cy:.1f}" r="3.5"><title>{escape(p.label)}: '
                     f'{escape(p.text)}</title></circle>')
        if len(points) <= MAX_VALUES or i == len(points) - 1:
            parts.append(_text(cx, cy - 8, p.text, "value"))
    for i, p in enumerate(points):
        if i % every == 0 and p is not None:
            parts.append(_text(LEFT + step * (i + 0.5), HEIGHT - BOTTOM + 16, p.label))
    parts[2:2] = [f'<polyline class="line" points="{" ".join(run)}"/>' for run in runs if len(run) > 1]
    parts.append("</svg>")
    return Markup("".join(parts))
