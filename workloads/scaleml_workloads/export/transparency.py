"""The transparency report of a version: one self-contained HTML page, and the JSON behind it.

Written into the version directory beside the model card, so that what was trained, on what,
for what, how well for whom, and what it relies on travels with the model. Sections: intended use
and limits, data provenance, lineage, performance (overall and against earlier versions), fairness
per group, attributions, and the export formats. The page is static: inline CSS and SVG, no script,
nothing fetched. Every text that comes from a spec or the data is escaped.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from typing import Final

from scaleml_api.card import ModelCard
from scaleml_api.evaluation import Evaluation, FeatureAudit, GroupResult
from scaleml_api.repository import EXPLAIN_DIR

REPORT_HTML: Final = "transparency.html"
REPORT_JSON: Final = "transparency.json"
SECTIONS: Final = ("intended-use", "data", "lineage", "performance", "fairness", "attributions", "formats")
# Bars of the attributions chart.
BAR_COLOUR: Final = "#4878a8"
_BAR_WIDTH: Final = 360
_BAR_HEIGHT: Final = 18

_STYLE: Final = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1100px; }
h1 { font-size: 22px; margin-bottom: 4px; }
h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ccc; padding-bottom: 4px; }
h3 { font-size: 15px; margin-bottom: 4px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.small td { color: #888; }
.note { color: #8a6d3b; font-size: 13px; }
.use { white-space: pre-wrap; background: #f6f6f6; padding: 8px 12px; border-radius: 6px; }
dl { display: grid; grid-template-columns: max-content auto; gap: 4px 16px; font-size: 14px; }
dt { font-weight: 600; }
"""


def _text(value: object) -> str:
    return html.escape(str(value))


def _number(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], classes: Iterable[str] = ()) -> str:
    """A table whose cells are already HTML."""
    head = "".join(f"<th>{_text(cell)}</th>" for cell in header)
    kinds = list(classes)
    body = "".join(
        f'<tr class="{kinds[index] if index < len(kinds) else ""}">'
        + "".join(f"<td>{cell}</td>" for cell in row)
        + "</tr>"
        for index, row in enumerate(rows)
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _facts(items: Sequence[tuple[str, str]]) -> str:
    return "<dl>" + "".join(f"<dt>{_text(name)}</dt><dd>{value}</dd>" for name, value in items) + "</dl>"


def _intended_use(card: ModelCard) -> str:
    use = card.intended_use.strip()
    stated = f'<p class="use">{_text(use)}</p>' if use else "<p>Not stated (spec.evaluation.intendedUse).</p>"
    data = card.training.data
    limits = [
        f"It learned from {data.training_rows} rows of {_text(data.source)}; it knows nothing of data unlike them, "
        "which the DriftMonitor watches for.",
        "The fairness measures describe the model on the groups the data records; they prove nothing about groups "
        "it does not record, nor about how the labels were made.",
    ]
    evaluation = card.evaluation
    if evaluation is None:
        limits.append("It was not evaluated: the job held out no validation rows.")
    else:
        for audit in evaluation.fairness:
            if audit.small_groups:
                names = ", ".join(audit.small_groups)
                limits.append(
                    f"Groups of {_text(audit.feature)} too small to judge (under {evaluation.min_group_size} "
                    f"validation rows): {_text(names)}."
                )
    if card.output_kind == "logits":
        limits.append("Its outputs are logits: the largest is the answer; softmax gives (calibrated) confidences.")
    return stated + "<h3>Limits</h3><ul>" + "".join(f"<li>{limit}</li>" for limit in limits) + "</ul>"


def _data(card: ModelCard) -> str:
    data = card.training.data
    return _facts(
        [
            ("Source", f"<code>{_text(data.source)}</code> ({_text(data.format)})"),
            ("SHA-256", f"<code>{_text(data.sha256)}</code>"),
            ("Rows", f"{data.rows} ({data.training_rows} for training, {data.validation_rows} for validation)"),
            ("Target", _text(data.target)),
            ("Features", _text(", ".join(data.features))),
            ("Trained", f"{card.training.started:%Y-%m-%d %H:%M:%S} to {card.training.finished:%H:%M:%S} UTC"),
        ]
    )


def _lineage(card: ModelCard, version: int) -> str:
    training = card.training
    items = [
        ("TrainingJob", _text(training.job)),
        ("Version", f"{_text(card.model_name)}/{version}, exported {card.created:%Y-%m-%d %H:%M:%S} UTC"),
        ("Warm start", _text(training.parent) if training.parent else "none (trained from scratch)"),
        ("Replaces", f"version {card.previous_version}" if card.previous_version else "none (the first version)"),
    ]
    lineage = card.lineage
    if lineage is not None:
        trigger = f"DriftMonitor {_text(lineage.retrained_by)} retrained {_text(lineage.retrain_of)}"
        if lineage.rule:
            trigger += f": {_text(lineage.rule)} persisted since {_text(lineage.since)}"
        items.append(("Triggered by", trigger))
    else:
        items.append(("Triggered by", "a TrainingJob created by hand (no drift episode)"))
    return _facts(items)


def _performance(card: ModelCard) -> str:
    evaluation = card.evaluation
    metrics = card.training.metrics
    parts = [
        f"<p>Final training loss {_number(metrics.loss)} after {card.training.steps} steps "
        f"({card.training.world_size} process(es) on {_text(card.training.device)}).</p>"
    ]
    if evaluation is None:
        return "".join(parts)
    names = list(evaluation.metrics)
    parts.append(
        _table(["", *names], [["this version", *(_number(evaluation.metrics[name]) for name in names)]])
        + f"<p>On {evaluation.rows} validation rows.</p>"
    )
    if evaluation.baselines:
        parts.append("<h3>Earlier versions on the same rows</h3>")
        parts.append(
            _table(
                ["version", *names, "note"],
                [
                    [str(entry.version), *(_number(entry.metrics.get(name)) for name in names), _text(entry.note)]
                    for entry in evaluation.baselines
                ],
            )
        )
    return "".join(parts)


def _group_row(group: GroupResult, metric: str) -> list[str]:
    interval = group.intervals.get(metric)
    spread = f" [{_number(interval.low, 3)}, {_number(interval.high, 3)}]" if interval else ""
    return [
        _text(group.group),
        str(group.rows),
        "yes" if group.judged else "too small",
        f"{_number(group.metrics.get(metric))}{spread}",
        _number(group.selection_rate),
        _number(group.true_positive_rate),
    ]


def _audit(audit: FeatureAudit, evaluation: Evaluation) -> str:
    metric = evaluation.metric
    rows = [_group_row(group, metric) for group in audit.groups]
    table = _table(
        ["group", "rows", "judged", f"{metric} [95% interval]", "selection rate", "true-positive rate"],
        rows,
        ["" if group.judged else "small" for group in audit.groups],
    )
    gaps = _facts(
        [
            ("Worst group", f"{_text(audit.worst_group or 'n/a')} ({metric} {_number(audit.worst_value)})"),
            (f"{metric} gap", _number(audit.metric_gap)),
            ("Demographic parity difference", _number(audit.demographic_parity_difference)),
            ("Equal opportunity difference", _number(audit.equal_opportunity_difference)),
            ("Disparate impact ratio", f"{_number(audit.disparate_impact_ratio)} (four-fifths rule: at least 0.8)"),
        ]
    )
    note = f'<p class="note">{_text(audit.note)}</p>' if audit.note else ""
    return f"<h3>{_text(audit.feature)}</h3>{table}{gaps}{note}"


def _fairness(card: ModelCard) -> str:
    evaluation = card.evaluation
    if evaluation is None or not evaluation.fairness:
        return "<p>No sensitive feature was audited (spec.evaluation.sensitiveFeatures).</p>"
    positive = f" The favourable outcome is {_text(evaluation.positive_label)}." if evaluation.positive_label else ""
    intro = (
        f"<p>Gaps are between groups of at least {evaluation.min_group_size} validation rows.{positive} A "
        "ModelDeployment's promotion gates (spec.promotion.gates) judge these numbers before the version is "
        "served; its Promoted condition says what they decided.</p>"
    )
    return intro + "".join(_audit(audit, evaluation) for audit in evaluation.fairness)


def _attributions(card: ModelCard) -> str:
    importance = sorted(card.training.metrics.feature_importance.items(), key=lambda item: -item[1])
    if not importance:
        return "<p>No permutation importance: no validation rows, or a model over token ids.</p>"
    top = max(max(value for _, value in importance), 1e-12)
    height = _BAR_HEIGHT * len(importance) + 8
    bars = "".join(
        f'<text x="0" y="{index * _BAR_HEIGHT + 13}" font-size="12">{_text(name)}</text>'
        f'<rect x="160" y="{index * _BAR_HEIGHT + 2}" width="{max(value, 0.0) / top * _BAR_WIDTH:.1f}" '
        f'height="{_BAR_HEIGHT - 4}" fill="{BAR_COLOUR}"><title>{_text(name)}: {_number(value)}</title></rect>'
        f'<text x="{165 + max(value, 0.0) / top * _BAR_WIDTH:.1f}" y="{index * _BAR_HEIGHT + 13}" '
        f'font-size="11">{_number(value, 3)}</text>'
        for index, (name, value) in enumerate(importance)
    )
    unit = "accuracy lost" if card.training.task == "classification" else "RMSE gained"
    explained = any(name.startswith(f"{EXPLAIN_DIR}/") for name in card.files)
    served = (
        " Explanations of single predictions (integrated gradients) are exported with the version and served as "
        f"<code>{_text(card.model_name)}-explain</code> when the ModelDeployment enables them."
        if explained
        else ""
    )
    return (
        f"<p>Permutation importance on the validation rows: the {unit} when a feature's values are shuffled.{served}"
        f'</p><svg width="{180 + _BAR_WIDTH + 60}" height="{height}" role="img" aria-label="feature importance">'
        f"{bars}</svg>"
    )


def _formats(card: ModelCard) -> str:
    tensors = [
        [_text(kind), _text(tensor.name), _text(tensor.data_type), _text(tensor.dims)]
        for kind, group in (("input", card.inputs), ("output", card.outputs))
        for tensor in group
    ]
    files = "".join(f"<li><code>{_text(name)}</code></li>" for name in card.files)
    return (
        _table(["", "tensor", "type", "dims (per row)"], tensors)
        + f"<p>PyTorch {_text(card.torch_version)}, Python {_text(card.python_version)}.</p><ul>{files}</ul>"
    )


def render(card: ModelCard, version: int) -> str:
    """The report of `card`, exported as `version`, as one HTML page."""
    title = f"{card.model_name} version {version}"
    sections = {
        "intended-use": ("Intended use and limits", _intended_use(card)),
        "data": ("Data provenance", _data(card)),
        "lineage": ("Lineage", _lineage(card, version)),
        "performance": ("Performance", _performance(card)),
        "fairness": ("Fairness", _fairness(card)),
        "attributions": ("Attributions", _attributions(card)),
        "formats": ("Export formats", _formats(card)),
    }
    body = "".join(
        f'<section id="{key}"><h2>{name}</h2>{content}</section>' for key, (name, content) in sections.items()
    )
    task = f"{card.training.task} ({card.training.architecture})"
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_text(title)}</title>'
        f"<style>{_STYLE}</style></head><body><h1>{_text(title)}</h1><p>A {_text(task)} model, "
        f"trained by TrainingJob {_text(card.training.job)}.</p>{body}</body></html>\n"
    )


def report_json(card: ModelCard, version: int) -> str:
    """The data behind the page: the version and its whole model card."""
    return json.dumps({"version": version, "modelCard": card.to_wire()}, indent=2) + "\n"
