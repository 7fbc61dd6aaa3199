"""deploy/grafana/threadline-dashboard.json cannot drift from the code: every PromQL expression
names only metrics threadline/metrics.py defines, groups and filters only by their labels, and
every metric the code defines has a panel."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from threadline import metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "threadline-dashboard.json"
PROMQL_WORDS = {
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "rate",
    "irate",
    "increase",
    "delta",
    "histogram_quantile",
    "by",
    "without",
    "and",
    "or",
    "unless",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "topk",
    "bottomk",
    "clamp_min",
    "clamp_max",
    "label_values",
    "abs",
    "time",
    "vector",
    "scalar",
}
IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(items: list[dict]) -> list[dict]:
    out = []
    for p in items:
        out.append(p)
        out += panels(p.get("panels", []))
    return out


def expressions() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in panels(dashboard()["panels"]) for t in p.get("targets", [])]


def references(expr: str) -> tuple[set[str], set[str]]:
    """The metric names and the label names an expression uses."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values and strings say nothing about names
    labels: set[str] = set()
    for group in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", text):
        labels |= {g.strip() for g in group.split(",") if g.strip()}
    text = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", " ", text)
    for matcher in re.findall(r"\{([^}]*)\}", text):
        labels |= set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", matcher))
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors: [5m], [$__rate_interval]
    text = re.sub(r"\$\w+", " ", text)
    names = {w for w in IDENT.findall(text) if w not in PROMQL_WORDS}
    return names, labels


def test_the_dashboard_reads_prometheus_from_the_ds_prometheus_variable():
    d = dashboard()
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource" and variables["DS_PROMETHEUS"]["query"] == "prometheus"
    for p in panels(d["panels"]):
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
        assert p["targets"], f"{p['title']} has no query"
        assert all(t["datasource"]["uid"] == "${DS_PROMETHEUS}" for t in p["targets"]), p["title"]


@pytest.mark.parametrize("title, expr", expressions())
def test_each_query_names_only_metrics_and_labels_the_code_defines(title, expr):
    defined = metrics.series_names()
    names, labels = references(expr)
    assert names, f"{title}: no metric in {expr!r}"
    unknown = names - defined.keys()
    assert not unknown, f"{title}: {sorted(unknown)} are not defined in threadline/metrics.py"
    allowed = {label for n in names for label in defined[n]}
    assert labels <= allowed, f"{title}: labels {sorted(labels - allowed)} are not labels of {sorted(names)}"


def test_template_variables_take_their_values_from_defined_metrics_and_labels():
    defined = metrics.series_names()
    for v in dashboard()["templating"]["list"]:
        if v["type"] != "query":
            continue
        metric, label = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", v["query"]["query"]).groups()
        assert metric in defined and label in defined[metric], v["name"]


def test_every_metric_the_code_defines_has_a_panel():
    used = set().union(*(references(e)[0] for _, e in expressions()))
    families = {m._name + suffix: m._name for m in metrics.ALL for suffix in metrics._SUFFIXES[m._type]}
    shown = {families[n] for n in used}
    assert shown == {m._name for m in metrics.ALL}


def test_the_checker_catches_a_metric_or_label_the_code_does_not_define():
    assert references('sum by (component, topic) (rate(threadline_events_consumed_total{component=~"$c"}[5m]))') == (
        {"threadline_events_consumed_total"},
        {"component", "topic"},
    )
    names, labels = references("histogram_quantile(0.99, sum by (le, pod) (rate(threadline_typo_seconds_bucket[1m])))")
    assert names == {"threadline_typo_seconds_bucket"} and "pod" in labels
    assert "threadline_typo_seconds_bucket" not in metrics.series_names()
