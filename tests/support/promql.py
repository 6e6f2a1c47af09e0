"""PromQL as Prometheus itself reads it, through promtool: does a query parse, and which metrics it selects."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import yaml

# Grafana's interval variables stand where PromQL wants a duration; any duration parses the same.
GRAFANA_DURATIONS: Final = ("$__rate_interval", "$__interval", "$__range")
# A label matcher promtool adds to every vector selector of a query, to find them in its output.
_PROBE_LABEL: Final = "scaleml_probe"
_PROBE_VALUE: Final = "selected"
_PROBE: Final = f'{_PROBE_LABEL}="{_PROBE_VALUE}"'
_STRING: Final = r'"(?:[^"\\]|\\.)*"'
_SELECTOR: Final = re.compile(rf"([A-Za-z_:][A-Za-z0-9_:]*)?\{{((?:[^{{}}\"]|{_STRING})*)\}}")
_NAME_MATCHER: Final = re.compile(rf"__name__\s*(=~|!=|!~|=)\s*({_STRING})")
_LABEL_VALUES: Final = re.compile(r"^label_values\((.+),\s*[A-Za-z_][A-Za-z0-9_]*\)$")


@dataclass(frozen=True)
class Query:
    """A PromQL expression and where it comes from, for messages."""

    origin: str
    expr: str


def promql(expr: str) -> str:
    """`expr` with Grafana's interval variables replaced by a duration; other variables sit in strings."""
    for variable in GRAFANA_DURATIONS:
        expr = expr.replace(variable, "5m")
    return expr


def variable_selector(query: str) -> str | None:
    """The series selector of a Grafana `label_values(selector, label)` variable query."""
    match = _LABEL_VALUES.match(query.strip())
    return match.group(1) if match else None


def check_parse(promtool: Path, queries: Iterable[Query], workdir: Path) -> None:
    """Fails, naming each query Prometheus cannot parse: each becomes a recording rule for `promtool check rules`."""
    queries = list(queries)
    rules = [{"record": f"scaleml:query:{index}", "expr": promql(q.expr)} for index, q in enumerate(queries)]
    path = workdir / "queries.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}, sort_keys=False))
    result = subprocess.run([str(promtool), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        failing = [q for index, q in enumerate(queries) if f'"scaleml:query:{index}"' in result.stderr + result.stdout]
        where = "\n".join(f"  {q.origin}: {q.expr}" for q in failing)
        raise AssertionError(f"promtool check rules failed:\n{result.stdout}{result.stderr}\n{where}")


def selected_metrics(promtool: Path, expr: str) -> frozenset[str]:
    """The metric names of every vector selector in `expr`, found by Prometheus's own parser.

    promtool adds a label matcher to each selector it parses; each one's name is then read from
    promtool's output. A selector without a literal metric name (only `{__name__=~"..."}`) fails.
    """
    result = subprocess.run(
        [str(promtool), "--experimental", "promql", "label-matchers", "set", promql(expr), _PROBE_LABEL, _PROBE_VALUE],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise AssertionError(f"promtool cannot parse {expr!r}:\n{result.stderr}")
    names: set[str] = set()
    selectors = 0
    for match in _SELECTOR.finditer(result.stdout):
        name, matchers = match.group(1), match.group(2)
        if _PROBE not in matchers:
            continue
        selectors += 1
        if not name:
            equal = _NAME_MATCHER.search(matchers)
            if equal is None or equal.group(1) != "=":
                raise AssertionError(f"a selector without a literal metric name in {expr!r}: {match.group(0)}")
            name = equal.group(2).strip('"')
        names.add(name)
    if selectors != result.stdout.count(_PROBE):
        raise AssertionError(f"cannot read every selector of {expr!r} from promtool's output:\n{result.stdout}")
    return frozenset(names)
