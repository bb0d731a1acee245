"""PNG and SVG plots of a training curve: the metric against step (and training compute when known).

One line per series (evalkit.results.curves: never mixing fingerprints) with its 95 % interval as a
band. Figures are drawn on an explicit Agg canvas, never through pyplot, so plotting changes no
global backend and is safe in a training process or a thread. The SVG is made reproducible
(fixed hash salt, no date) so rebuilding from the same run.json files gives the same bytes.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from evalkit.fileio.pngio import write_atomic
from evalkit.results.curves import Curve, Series, TrainingCompute
from evalkit.stepdir import ModelDir

SVG_HASH_SALT = "evalkit-curves"
PANEL_INCHES = (6.0, 4.0)
DPI = 100


def plot_curve(curve: Curve, compute: TrainingCompute | None, folder: ModelDir) -> list[Path]:
    """Write the curve's .png and .svg into the model's curves folder; returns their paths."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with matplotlib.rc_context({"svg.hashsalt": SVG_HASH_SALT, "svg.fonttype": "path", "figure.dpi": DPI}):
        panels = 2 if compute else 1
        figure = Figure(figsize=(PANEL_INCHES[0] * panels, PANEL_INCHES[1]), dpi=DPI, layout="constrained")
        FigureCanvasAgg(figure)
        axes = figure.subplots(1, panels, squeeze=False)[0]
        _panel(axes[0], curve, lambda step: step, "training step", legend=True)
        if compute:
            _panel(axes[1], curve, compute.at, "training compute (FLOPs)", legend=False)
            if all(compute.at(p.step) > 0 for s in curve.series for p in s.points):
                axes[1].set_xscale("log")
        directions: dict[bool | None, str] = {True: "higher is better", False: "lower is better", None: ""}
        direction = directions[curve.higher_is_better]
        figure.suptitle(f"{curve.model}: {curve.display_name}" + (f" ({direction})" if direction else ""))
        paths = []
        for fmt, metadata in (("png", {"Software": None}), ("svg", {"Date": None, "Creator": None})):
            buffer = io.BytesIO()
            figure.savefig(buffer, format=fmt, metadata=metadata)
            path = folder.curve_file(curve.metric, f".{fmt}")
            write_atomic(path, buffer.getvalue())
            paths.append(path)
    return paths


def _panel(ax: Any, curve: Curve, x_of: Any, xlabel: str, legend: bool) -> None:
    for series in curve.series:
        xs, ys, lows, highs = _columns(series, x_of)
        (line,) = ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.5, label=series.describe)
        if any(not math.isnan(v) for v in lows):
            ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(curve.metric)
    ax.grid(True, alpha=0.3)
    if legend and curve.series:
        ax.legend(fontsize="small", title="series (newest first)", title_fontsize="small")


def _columns(series: Series, x_of: Any) -> tuple[list[float], list[float], list[float], list[float]]:
    def num(value: float | None) -> float:
        return math.nan if value is None else float(value)

    points = series.points
    return ([float(x_of(p.step)) for p in points], [num(p.value) for p in points],
            [num(p.ci_low) for p in points], [num(p.ci_high) for p in points])
