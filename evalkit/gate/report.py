"""`evalkit check`'s outputs: a Markdown summary for a pull-request comment, and JUnit XML for CI.

The Markdown leads with the verdict, so a reviewer sees it in the comment preview; the table
holds what the verdict rests on (values, the paired difference and its interval, the margin,
the confidence of a worsening beyond it). JUnit has one testcase per compared metric so CI test
views list metrics like tests: a failure element for a regression, a skipped one for a metric
without a threshold.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

from evalkit.gate.check import IMPROVED, INCONCLUSIVE, NOT_GATED, PASS, REGRESSION, CheckReport, MetricComparison

VERDICTS = {REGRESSION: "❌ regression", INCONCLUSIVE: "⚠️ inconclusive", PASS: "✅ pass", IMPROVED: "✅ improved",
            NOT_GATED: "➖ not gated"}


def markdown(report: CheckReport) -> str:
    c = report.confidence
    regressions = report.regressions
    gated = [m for m in report.comparisons if m.verdict != NOT_GATED]
    if regressions:
        head = f"❌ regression in {', '.join(f'`{m.name}`' for m in regressions)}"
    elif report.fails_on_nonfinite:
        head = "❌ NaN/inf output (" + "; ".join(f"{role}: {what}" for role, what in report.nonfinite.items()) + ")"
    elif not gated:
        head = "➖ nothing gated (no threshold covers the compared metrics)"
    else:
        head = f"✅ no regression ({len(gated)} gated metric{'s' if len(gated) != 1 else ''})"
    base, new = report.base, report.new
    level = _percent(2 * c - 1)
    lines = [
        f"### evalkit check: {head}",
        "",
        f"**New** `{new.label}` vs **baseline** `{base.label}` · protocol "
        f"`{new.run.protocol.fingerprint[:12]}` · seed {report.seed}",
        "",
        f"| Metric | Baseline | New | Δ new − base ({level} CI) | Allowed | P(worse than allowed) | Verdict |",
        "|---|---:|---:|---|---|---:|---|",
    ]
    for m in report.comparisons:
        arrow = "↑" if m.higher_is_better else "↓"
        allowed = m.threshold.describe() if m.threshold is not None else "—"
        p_worse = f"{m.p_worse:.3f}" if m.threshold is not None else "—"
        lines.append(f"| `{m.name}` {arrow} ({m.prompt_set}, n={m.n}) | {_value(m.base_value)} | "
                     f"{_value(m.new_value)} | {_signed(m.difference)} [{_signed(m.ci[0])}, {_signed(m.ci[1])}] | "
                     f"{allowed} | {p_worse} | {VERDICTS[m.verdict]} |")
    lines += [
        "",
        f"A metric regresses when the paired bootstrap (same prompt resamples for both runs) is at least "
        f"{_percent(c)} confident that it got worse by more than its allowed margin (↑: higher is better, "
        f"↓: lower is better). The interval shown is the two-sided {level} interval, whose ends are the "
        f"one-sided {_percent(c)} bounds; when it straddles the margin the result is inconclusive and does not "
        "fail. Thresholds: " + (f"`{report.thresholds_source}`" if report.thresholds_source else "flags") + ".",
    ]
    inconclusive = [m.name for m in report.comparisons if m.verdict == INCONCLUSIVE]
    if inconclusive:
        lines += ["", f"⚠️ Inconclusive: {', '.join(f'`{n}`' for n in inconclusive)} — the smoke subset cannot tell; "
                      "a full evaluation can."]
    if report.nonfinite:
        verdict = "reported, not failing (--allow-nonfinite)" if report.allow_nonfinite else \
            "fails the check (pass --allow-nonfinite to accept it)"
        labels = {"new": report.new.label, "baseline": report.base.label}
        lines += ["", "❌ Not finite — " + "; ".join(f"{role} `{labels[role]}`: {what}"
                                                    for role, what in report.nonfinite.items()) + f". This {verdict}."]
    if report.not_compared:
        lines += ["", "Not compared: " + "; ".join(f"`{name}` ({why})" for name, why in report.not_compared.items())
                  + "."]
    details = "; ".join(f"`{m.name}`: {m.method}, {m.resamples} resamples" for m in report.comparisons)
    lines += ["", f"<sub>{details}. Baseline: `{base.path}`. New: `{new.path}`.</sub>", ""]
    return "\n".join(lines)


def junit_xml(report: CheckReport) -> str:
    """JUnit XML (one testsuite, one testcase per compared metric), built with xml.etree so it is well-formed."""
    failures = len(report.regressions) + (1 if report.fails_on_nonfinite else 0)
    skipped = sum(m.verdict == NOT_GATED for m in report.comparisons)
    total_time = sum(m.seconds for m in report.comparisons)
    tests = len(report.comparisons) + (1 if report.nonfinite else 0)
    counts = {"tests": str(tests), "failures": str(failures), "errors": "0",
              "skipped": str(skipped), "time": f"{total_time:.3f}"}
    suites = ET.Element("testsuites", {"name": "evalkit check", **counts})
    suite = ET.SubElement(suites, "testsuite", {"name": f"evalkit check {report.new.label}", **counts})
    properties = ET.SubElement(suite, "properties")
    for key, value in (("baseline", str(report.base.path)), ("new", str(report.new.path)),
                       ("confidence", f"{report.confidence:g}"), ("thresholds", report.thresholds_source),
                       ("protocol", report.new.run.protocol.fingerprint)):
        ET.SubElement(properties, "property", {"name": key, "value": value})
    for m in report.comparisons:
        case = ET.SubElement(suite, "testcase", {"classname": "evalkit.gate.check", "name": m.name,
                                                 "time": f"{m.seconds:.3f}"})
        summary = _summary(m, report.confidence)
        if m.verdict == REGRESSION:
            failure = ET.SubElement(case, "failure", {"type": "regression", "message": summary})
            failure.text = _detail(m)
        elif m.verdict == NOT_GATED:
            ET.SubElement(case, "skipped", {"message": f"{m.name} has no threshold: {summary}"})
        else:
            ET.SubElement(case, "system-out").text = f"{m.verdict}: {summary}\n{_detail(m)}"
    if report.nonfinite:
        case = ET.SubElement(suite, "testcase", {"classname": "evalkit.gate.check", "name": "finite output",
                                                 "time": "0.000"})
        what = "; ".join(f"{role}: {text}" for role, text in report.nonfinite.items())
        if report.fails_on_nonfinite:
            ET.SubElement(case, "failure", {"type": "nonfinite", "message": what})
        else:
            ET.SubElement(case, "system-out").text = f"allowed (--allow-nonfinite): {what}"
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def _summary(m: MetricComparison, confidence: float) -> str:
    text = (f"{m.name} changed by {_signed(m.difference)} ({_percent(m.ci_level)} CI {_signed(m.ci[0])} to "
            f"{_signed(m.ci[1])})")
    if m.threshold is not None:
        text += (f"; allowed {m.threshold.describe()}; P(worse than allowed) = {m.p_worse:.3f} "
                 f"{'>=' if m.verdict == REGRESSION else '<'} {confidence:g}")
    return text


def _detail(m: MetricComparison) -> str:
    return (f"baseline {_value(m.base_value)}, new {_value(m.new_value)}, {m.n} prompts of {m.prompt_set}, "
            f"{'higher' if m.higher_is_better else 'lower'} is better; {m.method}, {m.resamples} resamples")


def _value(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"


def _signed(value: float) -> str:
    return "—" if not math.isfinite(value) else f"{value:+.4f}"


def _percent(level: float) -> str:
    return f"{level * 100:.4g}%"
