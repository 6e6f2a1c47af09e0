"""The HTML drift report of one check: a plot per feature, the test table, and the trend of the score.

Self-contained (inline SVG and CSS, no script, nothing fetched), so it renders from a volume, a
browser, or a mail attachment alike. Every text from data is escaped.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from scaleml_workloads.drift.detector import DriftResult, FeatureResult
from scaleml_workloads.drift.output import FEATURE_COLUMNS, feature_cells
from scaleml_workloads.drift.results import number
from scaleml_workloads.monitor.accuracy import AccuracyEstimate

_WIDTH: Final = 360
_HEIGHT: Final = 150
_MARGIN: Final = 24
_REFERENCE_COLOUR: Final = "#4878a8"
_CURRENT_COLOUR: Final = "#e0823d"
_DRIFT_COLOUR: Final = "#c0392b"

_STYLE: Final = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 22px; margin-bottom: 4px; }
.summary { font-size: 15px; margin-bottom: 16px; }
.drift { color: #c0392b; font-weight: 600; }
.ok { color: #2e7d32; font-weight: 600; }
table { border-collapse: collapse; margin: 12px 0 24px; font-size: 13px; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.drifted td { background: #fdecea; }
.features { display: flex; flex-wrap: wrap; gap: 16px; }
figure { margin: 0; border: 1px solid #ddd; border-radius: 6px; padding: 8px; }
figcaption { font-size: 13px; margin-bottom: 4px; }
.legend span { display: inline-block; width: 10px; height: 10px; margin: 0 4px 0 10px; }
.messages { color: #8a6d3b; font-size: 13px; }
"""


@dataclass(frozen=True)
class TrendPoint:
    checked_at: datetime
    score: float
    drifted: bool


def _bars(feature: FeatureResult) -> str:
    """Reference and current frequencies side by side on the feature's bins."""
    count = len(feature.bins)
    if count == 0:
        return f'<p class="messages">{html.escape(feature.message or "no distribution to plot")}</p>'
    top = max([*feature.reference_frequencies, *feature.current_frequencies, 1e-12])
    plot_width = _WIDTH - 2 * _MARGIN
    slot = plot_width / count
    bar = max(slot / 2 - 1, 0.5)
    shapes = []
    for index, (label, reference, current) in enumerate(
        zip(feature.bins, feature.reference_frequencies, feature.current_frequencies, strict=True)
    ):
        x = _MARGIN + index * slot
        for offset, value, colour in ((0.0, reference, _REFERENCE_COLOUR), (bar, current, _CURRENT_COLOUR)):
            height = (_HEIGHT - 2 * _MARGIN) * value / top
            shapes.append(
                f'<rect x="{x + offset:.1f}" y="{_HEIGHT - _MARGIN - height:.1f}" width="{bar:.1f}" '
                f'height="{height:.1f}" fill="{colour}"><title>{html.escape(label)}: '
                f"{'reference' if offset == 0 else 'current'} {value:.3f}</title></rect>"
            )
    baseline = _HEIGHT - _MARGIN
    axis = f'<line x1="{_MARGIN}" y1="{baseline}" x2="{_WIDTH - _MARGIN}" y2="{baseline}" stroke="#999"/>'
    first, last = html.escape(feature.bins[0]), html.escape(feature.bins[-1])
    labels = (
        f'<text x="{_MARGIN}" y="{_HEIGHT - 6}" font-size="10">{first}</text>'
        f'<text x="{_WIDTH - _MARGIN}" y="{_HEIGHT - 6}" font-size="10" text-anchor="end">{last}</text>'
    )
    return (
        f'<svg width="{_WIDTH}" height="{_HEIGHT}" role="img" aria-label="{html.escape(feature.name)}">'
        f"{''.join(shapes)}{axis}{labels}</svg>"
    )


def _figure(feature: FeatureResult) -> str:
    state = '<span class="drift">drifted</span>' if feature.drifted else '<span class="ok">stable</span>'
    return (
        f'<figure id="feature-{html.escape(feature.name)}"><figcaption><b>{html.escape(feature.name)}</b> '
        f"({feature.kind}, {feature.test} {number(feature.statistic)}) {state}</figcaption>{_bars(feature)}</figure>"
    )


def _row(feature: FeatureResult) -> str:
    cells = [html.escape(cell) for cell in feature_cells(feature)]
    return f'<tr class="{"drifted" if feature.drifted else ""}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _trend(points: Sequence[TrendPoint]) -> str:
    if len(points) < 2:
        return "<p>The trend appears after the second check.</p>"
    width, height = 2 * _WIDTH, _HEIGHT
    step = (width - 2 * _MARGIN) / (len(points) - 1)
    coordinates = [
        (_MARGIN + index * step, height - _MARGIN - (height - 2 * _MARGIN) * min(max(point.score, 0.0), 1.0))
        for index, point in enumerate(points)
    ]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in coordinates)
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{_DRIFT_COLOUR if point.drifted else _REFERENCE_COLOUR}">'
        f"<title>{point.checked_at:%Y-%m-%d %H:%M:%S} score {point.score:.3f}</title></circle>"
        for (x, y), point in zip(coordinates, points, strict=True)
    )
    return (
        f'<svg width="{width}" height="{height}" role="img" aria-label="drift score trend">'
        f'<line x1="{_MARGIN}" y1="{height - _MARGIN}" x2="{width - _MARGIN}" y2="{height - _MARGIN}" stroke="#999"/>'
        f'<text x="4" y="{_MARGIN}" font-size="10">1</text><text x="4" y="{height - _MARGIN}" font-size="10">0</text>'
        f'<polyline points="{line}" fill="none" stroke="{_REFERENCE_COLOUR}" stroke-width="2"/>{dots}</svg>'
    )


def _accuracy(estimate: AccuracyEstimate | None) -> str:
    """The estimated accuracy next to the validation accuracy, or why the window has no estimate."""
    if estimate is None:
        return ""
    validation = f"validation accuracy {number(estimate.validation, 3)}"
    if estimate.estimated is None:
        return f'<p class="accuracy">Estimated accuracy: n/a ({html.escape(estimate.message)}); {validation}.</p>'
    gap = ""
    if estimate.validation is not None:
        below = estimate.validation - estimate.estimated
        gap = f", {below:.3f} below it" if below >= 0 else f", {-below:.3f} above it"
    return (
        f'<p class="accuracy">Estimated accuracy (mean calibrated confidence of {estimate.rows} answers, no labels): '
        f"<b>{estimate.estimated:.3f}</b>; {validation}{gap}. It holds while the model's confidence means on live "
        "rows what it meant on the validation rows; a drift the model never saw can leave it confidently wrong.</p>"
    )


def _verdict(result: DriftResult) -> str:
    """Why the window drifted or not; a rule that kept drifted features quiet stands out."""
    text = html.escape(result.verdict)
    return f'<span class="drift">Kept quiet by a rule:</span> {text}' if result.kept_quiet_by else text


def _top_features(result: DriftResult) -> str:
    if not result.top_features:
        return ""
    items = "".join(
        f"<li>{html.escape(top.name)}: importance {top.importance:.2f} &times; evidence {top.evidence:.2f} = "
        f"{top.contribution:.2f}</li>"
        for top in result.top_features
    )
    return f"<p>What counts most in the score (importance &times; evidence of drift):</p><ol>{items}</ol>"


def render(
    result: DriftResult,
    *,
    monitor: str,
    checked_at: datetime,
    reference_version: int | None,
    trend: Sequence[TrendPoint],
    accuracy: AccuracyEstimate | None = None,
) -> str:
    """The report of one check as an HTML document."""
    verdict = (
        '<span class="drift">drift detected</span>' if result.drift_detected else '<span class="ok">no drift</span>'
    )
    version = f", reference: model version {reference_version}" if reference_version else ""
    multivariate = ""
    if result.multivariate is not None:
        mmd = result.multivariate
        multivariate = (
            f"<p>Multivariate {mmd.test}: statistic {number(mmd.statistic)}, "
            f"p-value {html.escape(mmd.p_value_text())}, "
            f"q-value {number(mmd.q_value)} ({'drifted' if mmd.drifted else 'stable'}).</p>"
        )
    messages = "".join(f"<li>{html.escape(message)}</li>" for message in result.messages)
    header = "".join(f"<th>{html.escape(name)}</th>" for name in FEATURE_COLUMNS)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Drift report: {html.escape(monitor)}</title>
<style>{_STYLE}</style></head><body>
<h1>Drift report: {html.escape(monitor)}</h1>
<p class="summary">{checked_at:%Y-%m-%d %H:%M:%S %Z}: {verdict}; score {result.score:.3f};
{len(result.drifted_features)} of {len(result.features)} features drifted ({result.share_drifted:.0%});
{result.rows} rows in the window, {result.rows_rejected} rejected{html.escape(version)}.</p>
<p class="verdict">{_verdict(result)}</p>
{_top_features(result)}
{multivariate}
{_accuracy(accuracy)}
<ul class="messages">{messages}</ul>
<h2>Score over time</h2>
{_trend(trend)}
<h2>Tests</h2>
<table><thead><tr>{header}</tr></thead><tbody>{"".join(_row(f) for f in result.features)}</tbody></table>
<h2>Distributions</h2>
<p class="legend"><span style="background:{_REFERENCE_COLOUR}"></span>reference (training data)
<span style="background:{_CURRENT_COLOUR}"></span>current window</p>
<div class="features">{"".join(_figure(f) for f in result.features)}</div>
</body></html>
"""
