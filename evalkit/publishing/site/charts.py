"""Inline SVG charts drawn in Python: training curves and quality-versus-cost Pareto plots.

Generated server-side so the site needs no chart library and renders without JavaScript.
Every piece of text that comes from data (model names, metric names) goes through
`markupsafe.escape`; everything else in the markup is numbers this module formats itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from markupsafe import Markup, escape

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4d7c0f", "#be185d")
WIDTH, HEIGHT = 560, 300
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 64, 24, 28, 48


@dataclass
class CurvePoint:
    x: float
    y: float
    low: float | None = None
    high: float | None = None
    label: str = ""


@dataclass
class Series:
    name: str
    points: list[CurvePoint] = field(default_factory=list)


@dataclass
class CostPoint:
    cost: float
    quality: float
    label: str


@dataclass
class Scale:
    """Maps data values onto pixels, linear or log10."""

    low: float
    high: float
    start: float
    end: float
    log: bool = False

    def __call__(self, value: float) -> float:
        lo, hi, v = (math.log10(self.low), math.log10(self.high), math.log10(value)) if self.log else (
            self.low, self.high, value)
        span = hi - lo or 1.0
        return self.start + (v - lo) / span * (self.end - self.start)

    def ticks(self, count: int = 5) -> list[float]:
        if self.log:
            first, last = math.floor(math.log10(self.low)), math.ceil(math.log10(self.high))
            return [10.0 ** e for e in range(first, last + 1) if self.low <= 10.0 ** e <= self.high] or [self.low]
        return nice_ticks(self.low, self.high, count)


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 5 × 10^k steps) covering [low, high]."""
    if high <= low:
        return [low]
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks, value = [], first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def fmt(value: float) -> str:
    """Short tick/tooltip text: 4 significant digits, thousands grouped for big numbers."""
    if value == 0:
        return "0"
    if abs(value) >= 10000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _padded(values: Sequence[float], share: float = 0.06) -> tuple[float, float]:
    low, high = min(values), max(values)
    if high == low:
        pad = abs(low) * 0.05 or 1.0
        return low - pad, high + pad
    pad = (high - low) * share
    return low - pad, high + pad


def _frame(title: str, x_label: str, y_label: str, x: Scale, y: Scale) -> list[str]:
    """The axes, grid, tick labels and titles shared by both chart kinds."""
    parts = [f'<text class="chart-title" x="{MARGIN_LEFT}" y="18">{escape(title)}</text>']
    bottom, right = HEIGHT - MARGIN_BOTTOM, WIDTH - MARGIN_RIGHT
    for tick in y.ticks():
        py = y(tick)
        parts.append(f'<line class="grid" x1="{MARGIN_LEFT}" x2="{right}" y1="{py:.1f}" y2="{py:.1f}"/>')
        parts.append(f'<text class="tick" x="{MARGIN_LEFT - 6}" y="{py + 4:.1f}" text-anchor="end">{fmt(tick)}</text>')
    for tick in x.ticks(6):
        px = x(tick)
        parts.append(f'<line class="grid" x1="{px:.1f}" x2="{px:.1f}" y1="{MARGIN_TOP}" y2="{bottom}"/>')
        parts.append(f'<text class="tick" x="{px:.1f}" y="{bottom + 16}" text-anchor="middle">{fmt(tick)}</text>')
    parts.append(f'<line class="axis" x1="{MARGIN_LEFT}" x2="{right}" y1="{bottom}" y2="{bottom}"/>')
    parts.append(f'<line class="axis" x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT}" y1="{MARGIN_TOP}" y2="{bottom}"/>')
    parts.append(f'<text class="axis-label" x="{(MARGIN_LEFT + right) / 2:.1f}" y="{HEIGHT - 10}" '
                 f'text-anchor="middle">{escape(x_label)}</text>')
    parts.append(f'<text class="axis-label" transform="translate(16 {(MARGIN_TOP + bottom) / 2:.1f}) rotate(-90)" '
                 f'text-anchor="middle">{escape(y_label)}</text>')
    return parts


def _svg(parts: list[str], label: str) -> Markup:
    body = "\n".join(parts)
    return Markup(f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
                  f'role="img" aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">\n{body}\n</svg>')


def curve_chart(series: Sequence[Series], title: str, x_label: str = "training step",
                y_label: str = "value") -> Markup:
    """Metric against step, one line per series, with the 95% CI as a shaded band."""
    points = [p for s in series for p in s.points]
    if not points:
        return Markup("")
    ys = [v for p in points for v in (p.y, p.low, p.high) if v is not None]
    x = Scale(*_padded([p.x for p in points], 0.03), MARGIN_LEFT, WIDTH - MARGIN_RIGHT)
    y = Scale(*_padded(ys), HEIGHT - MARGIN_BOTTOM, MARGIN_TOP)
    parts = _frame(title, x_label, y_label, x, y)
    for index, one in enumerate(series):
        color = PALETTE[index % len(PALETTE)]
        ordered = sorted(one.points, key=lambda p: p.x)
        banded = [p for p in ordered if p.low is not None and p.high is not None]
        if len(banded) >= 2:
            upper = [f"{x(p.x):.1f},{y(p.high):.1f}" for p in banded]  # type: ignore[arg-type]
            lower = [f"{x(p.x):.1f},{y(p.low):.1f}" for p in reversed(banded)]  # type: ignore[arg-type]
            parts.append(f'<polygon class="band" fill="{color}" points="{" ".join(upper + lower)}"/>')
        line = " ".join(f"{x(p.x):.1f},{y(p.y):.1f}" for p in ordered)
        parts.append(f'<polyline class="line" stroke="{color}" points="{line}"/>')
        for p in ordered:
            ci = f" [{fmt(p.low)}, {fmt(p.high)}]" if p.low is not None and p.high is not None else ""
            tip = f"{one.name}: step {p.label or fmt(p.x)} = {fmt(p.y)}{ci}"
            parts.append(f'<circle class="dot" fill="{color}" cx="{x(p.x):.1f}" cy="{y(p.y):.1f}" r="4">'
                         f"<title>{escape(tip)}</title></circle>")
    if len(series) > 1:
        parts += _legend([s.name for s in series])
    return _svg(parts, title)


def _legend(names: list[str]) -> list[str]:
    parts = []
    for index, name in enumerate(names):
        py = MARGIN_TOP + 6 + index * 16
        color = PALETTE[index % len(PALETTE)]
        parts.append(f'<rect x="{WIDTH - MARGIN_RIGHT - 150}" y="{py - 9}" width="10" height="10" fill="{color}"/>')
        parts.append(f'<text class="legend" x="{WIDTH - MARGIN_RIGHT - 135}" y="{py}">{escape(name)}</text>')
    return parts


def pareto_front(points: Sequence[CostPoint], higher_is_better: bool = True) -> list[CostPoint]:
    """Points no other point beats on both cost (lower) and quality, cheapest first."""
    sign = 1 if higher_is_better else -1
    front: list[CostPoint] = []
    best = -math.inf
    for p in sorted(points, key=lambda p: (p.cost, -sign * p.quality)):
        if sign * p.quality > best:
            front.append(p)
            best = sign * p.quality
    return front


def pareto_chart(points: Sequence[CostPoint], title: str, cost_label: str, quality_label: str,
                 higher_is_better: bool = True) -> Markup:
    """Quality against cost; the Pareto front is joined and its points filled."""
    points = [p for p in points if p.cost > 0 and math.isfinite(p.cost) and math.isfinite(p.quality)]
    if not points:
        return Markup("")
    costs = [p.cost for p in points]
    log = max(costs) / min(costs) > 20
    low, high = (min(costs) / 1.5, max(costs) * 1.5) if log else _padded(costs)
    x = Scale(max(low, 1e-12), high, MARGIN_LEFT, WIDTH - MARGIN_RIGHT, log=log)
    y = Scale(*_padded([p.quality for p in points], 0.1), HEIGHT - MARGIN_BOTTOM, MARGIN_TOP)
    parts = _frame(title, cost_label + (" (log scale)" if log else ""), quality_label, x, y)
    front = pareto_front(points, higher_is_better)
    if len(front) > 1:
        line = " ".join(f"{x(p.cost):.1f},{y(p.quality):.1f}" for p in front)
        parts.append(f'<polyline class="front" points="{line}"/>')
    on_front = {id(p) for p in front}
    for p in points:
        kind = "point front-point" if id(p) in on_front else "point"
        tip = f"{p.label}: {quality_label} {fmt(p.quality)}, {cost_label} {fmt(p.cost)}"
        parts.append(f'<circle class="{kind}" cx="{x(p.cost):.1f}" cy="{y(p.quality):.1f}" r="5">'
                     f"<title>{escape(tip)}</title></circle>")
        px = x(p.cost)
        right_half = px > (MARGIN_LEFT + WIDTH - MARGIN_RIGHT) / 2  # labels run inwards, never off the plot
        anchor, dx = ("end", -7) if right_half else ("start", 7)
        parts.append(f'<text class="point-label" x="{px + dx:.1f}" y="{y(p.quality) - 7:.1f}" '
                     f'text-anchor="{anchor}">{escape(p.label)}</text>')
    return _svg(parts, title)
