"""What each page shows, computed from the leaderboard entries: plain dicts for the templates.

Kept apart from file handling and rendering so the page contents can be tested without a
browser. Values are formatted here (templates only place them); raw numbers travel separately
as JSON for the table sorter.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from evalkit.fileio.hashing import sha256_bytes
from evalkit.publishing.entry import Entry
from evalkit.publishing.site.charts import CostPoint, CurvePoint, Series, curve_chart, pareto_chart
from evalkit.results.comparability import ComparabilityKey
from evalkit.results.curves import Series as StoredSeries

FINAL_SORT = 2**53 - 1  # `final` sorts after every numbered step
DASH = "–"


def model_slug(name: str) -> str:
    """A file name for a model's page: readable part plus a hash, so distinct names never collide."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:60] or "model"
    return f"{readable}-{sha256_bytes(name.encode('utf-8'))[:8]}"


def name_parts(name: str) -> list[str]:
    """A model name cut after each separator (/ - _ . @ :), where the page may break the line
    (<wbr>), so a long name wraps between its parts and never in the middle of a word."""
    return [part for part in re.split(r"(?<=[/\-_.@:])", name) if part]


def fmt_value(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return DASH
    return f"{value:,}" if isinstance(value, int) else f"{value:.4g}"


def fmt_ci(ci: Any) -> str:
    if not (isinstance(ci, list) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci)):
        return ""
    return f"[{ci[0]:.4g}, {ci[1]:.4g}]"


def fmt_count(n: Any) -> str:
    """Parameters with an SI suffix, as docs/profile.md prints them."""
    if not isinstance(n, (int, float)):
        return DASH
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.2f} {suffix}"
    return str(n)


def fmt_seconds(value: Any) -> str:
    return f"{value:.3g} s" if isinstance(value, (int, float)) else DASH


def metric_cell(metric: dict[str, Any] | None) -> dict[str, str]:
    """A value, its interval and n as shown (a board row's cell, `EntryMetric.cell()`, a category)."""
    metric = metric or {}
    n = metric.get("n")
    return {"value": fmt_value(metric.get("value")), "ci": fmt_ci(metric.get("ci95")),
            "n": f"n={n:,}" if isinstance(n, int) else ""}


def short(fingerprint: Any) -> str:
    return str(fingerprint or "")[:12]


# -- leaderboard -----------------------------------------------------------------------------------


def board_view(board: dict[str, Any], slugs: dict[str, str]) -> dict[str, Any]:
    """A board's table: formatted cells for the page, raw sort keys as JSON for the sorter.

    The primary metric (what the board ranks by: the card's headline, TIFA) is the first column, so
    the number a reader came for is never the one scrolled off to the side."""
    columns = sorted(board["metrics"], key=lambda m: m["name"] != board["primary"])
    names = [m["name"] for m in columns]
    rows, sort_rows = [], []
    for row in board["rows"]:
        rows.append({"rank": row["rank"], "model": row["model"], "model_parts": name_parts(row["model"]),
                     "href": f"models/{slugs[row['model']]}.html",
                     "step_label": row["step_label"], "external": row.get("external", ""),
                     "cells": [metric_cell(row["metrics"].get(n)) for n in names]})
        sort = {"rank": row["rank"], "model": row["model"],
                "step": row["step"] if isinstance(row["step"], int) else FINAL_SORT}
        for name in names:
            sort[f"m:{name}"] = (row["metrics"].get(name) or {}).get("value")
        sort_rows.append(sort)
    return {**board, "columns": columns, "view_rows": rows, "sort_rows": sort_rows,
            "key_metrics": [{"name": n, "fingerprint": short(v["fingerprint"]),
                             "prompt_set_fingerprint": short(v["prompt_set_fingerprint"]),
                             "prompt_subset": next((m.get("prompt_subset", "") for m in board["metrics"]
                                                    if m["name"] == n), "")}
                            for n, v in board["key"]["metrics"].items()],
            "protocol_short": short(board["key"]["protocol_fingerprint"])}


# -- model pages -----------------------------------------------------------------------------------


def group_models(entries: Iterable[Entry]) -> dict[str, list[Entry]]:
    """model -> its entries, earliest step first."""
    models: dict[str, list[Entry]] = defaultdict(list)
    for entry in entries:
        models[entry.model].append(entry)
    return {name: sorted(found, key=lambda e: (e.step_order, e.run)) for name, found in sorted(models.items())}


def model_view(name: str, entries: list[Entry], boards: list[dict[str, Any]],
               stored: dict[str, list[StoredSeries]]) -> dict[str, Any]:
    """A model's page; `stored` holds the series of its curve files, per metric (see `curves`)."""
    names = sorted({m for e in entries for m in e.metrics})
    display = {m: next(e.metrics[m].display_name or m for e in entries if m in e.metrics) for m in names}
    steps = [{"step_label": e.step_label, "protocol": f"{e.protocol.describe()} ({short(e.protocol.fingerprint)})",
              "checkpoint": short(e.checkpoint_fingerprint), "checkpoint_fingerprint": e.checkpoint_fingerprint,
              "cells": [metric_cell(e.metrics[m].cell() if m in e.metrics else None) for m in names],
              "efficiency": efficiency_cells(e.efficiency.to_json())} for e in entries]
    placements = [{"board_id": b["id"], "title": b["title"], "rank": r["rank"], "step_label": r["step_label"],
                   "of": len(b["rows"])} for b in boards for r in b["rows"] if r["model"] == name]
    return {"name": name, "metric_names": names, "display": display, "steps": steps, "placements": placements,
            "curves": curves(entries, display, stored), "categories": categories(entries),
            "has_efficiency": any(e.efficiency for e in entries)}


def efficiency_cells(efficiency: dict[str, Any] | None) -> dict[str, str]:
    efficiency = efficiency or {}
    gmacs = efficiency.get("gmacs_per_image")
    ips = efficiency.get("images_per_second")
    return {"parameters": fmt_count(efficiency.get("parameters")),
            "gmacs": f"{gmacs:,.1f}" if isinstance(gmacs, (int, float)) else DASH,
            "seconds": fmt_seconds(efficiency.get("seconds_per_image")),
            "ips": f"{ips:.3g}" if isinstance(ips, (int, float)) else DASH}


def curves(entries: list[Entry], display: dict[str, str], stored: dict[str, list[StoredSeries]]
           ) -> list[dict[str, Any]]:
    """One chart per metric over the numbered steps; only comparable points share a line.

    A metric's lines are its curve files' series (`stored`: what `evalkit run` wrote into
    OUT/<model>/curves/) when the model has them; otherwise (runs merged without curves) they are
    drawn from the leaderboard entries, grouped by the same comparability key.
    """
    charts = []
    for name in sorted(display):
        groups = _stored_points(stored[name]) if name in stored else _entry_points(entries, name)
        if not any(len(points) >= 2 for points in groups.values()):
            continue
        series = [Series(display[name] if len(groups) == 1
                         else f"protocol {key.protocol_fingerprint[:8]} / metric {key.metric_fingerprint[:8]}", points)
                  for key, points in sorted(groups.items())]
        charts.append({"metric": name, "svg": curve_chart(series, f"{display[name]} by training step",
                                                          y_label=display[name])})
    return charts


def _stored_points(series: list[StoredSeries]) -> dict[ComparabilityKey, list[CurvePoint]]:
    groups: dict[ComparabilityKey, list[CurvePoint]] = defaultdict(list)
    for one in series:
        for p in one.points:
            if isinstance(p.value, (int, float)):
                groups[one.key].append(CurvePoint(p.step, p.value, p.ci_low, p.ci_high, str(p.step)))
    return groups


def _entry_points(entries: list[Entry], name: str) -> dict[ComparabilityKey, list[CurvePoint]]:
    groups: dict[ComparabilityKey, list[CurvePoint]] = defaultdict(list)
    for entry in entries:
        metric = entry.metrics.get(name)
        if entry.step is None or metric is None or metric.value is None:
            continue
        point = CurvePoint(entry.step, metric.value, metric.ci95[0], metric.ci95[1], entry.step_label)
        groups[entry.metric_key(name)].append(point)
    return groups


def categories(entries: list[Entry]) -> list[dict[str, Any]]:
    """Per step (latest first): each metric's by_category groups as small tables."""
    out = []
    for entry in reversed(entries):
        tables = []
        for name, metric in sorted(entry.metrics.items()):
            for kind, groups in sorted(metric.by_category.items()):
                if not isinstance(groups, dict):
                    continue
                rows = [{"category": category, **metric_cell(value if isinstance(value, dict) else {})}
                        for category, value in sorted(groups.items())]
                tables.append({"metric": metric.display_name or name, "kind": kind, "rows": rows})
        if tables:
            out.append({"step_label": entry.step_label, "tables": tables})
    return out


# -- efficiency ------------------------------------------------------------------------------------


def efficiency_view(board: dict[str, Any], slugs: dict[str, str]) -> dict[str, Any] | None:
    """A board's cost table and quality-vs-cost plots, or None when no row has a profile."""
    rows = [r for r in board["rows"] if r.get("efficiency")]
    if not rows:
        return None
    primary = board["primary"]
    info = next(m for m in board["metrics"] if m["name"] == primary)
    higher = info["higher_is_better"] is not False
    table, sort_rows = [], []
    for row in rows:
        eff = row["efficiency"]
        value = (row["metrics"].get(primary) or {}).get("value")
        table.append({"model": row["model"], "href": f"models/{slugs[row['model']]}.html",
                      "step_label": row["step_label"], "quality": metric_cell(row["metrics"].get(primary)),
                      **efficiency_cells(eff)})
        sort_rows.append({"model": row["model"], "step": row["step"] if isinstance(row["step"], int) else FINAL_SORT,
                          "parameters": eff.get("parameters"), "gmacs": eff.get("gmacs_per_image"),
                          "seconds": eff.get("seconds_per_image"), "ips": eff.get("images_per_second"),
                          "quality": value})
    charts = []
    for key, label in (("gmacs_per_image", "GMACs per image"), ("seconds_per_image", "seconds per image"),
                       ("parameters", "parameters")):
        points = [CostPoint(float(r["efficiency"][key]), float(r["metrics"][primary]["value"]),
                            f"{r['model']}@{r['step_label']}") for r in rows
                  if isinstance(r["efficiency"].get(key), (int, float))
                  and isinstance((r["metrics"].get(primary) or {}).get("value"), (int, float))]
        if points:
            charts.append(pareto_chart(points, f"{info['display_name']} vs {label}", label, info["display_name"],
                                       higher))
    return {"board": board, "primary": info, "rows": table, "sort_rows": sort_rows, "charts": charts}
