"""The Grafana dashboard in the repository is valid JSON whose PromQL asks only for metric
names that the collector's /metrics serves (rendered here from a populated live view)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from gpuwarden.collector.accounting import AuditKey
from gpuwarden.collector.outputs.exporter import LiveView
from gpuwarden.collector.outputs.prometheus import (
    GPUWARDEN_METRICS,
    JOBSTATS_METRICS,
    PrometheusExporter,
)
from gpuwarden.collector.outputs.running import SinkStats
from gpuwarden.collector.state import ClusterState
from gpuwarden.common.types import GpuWindow, JobInfo, NodeReport

DASHBOARD = Path(__file__).resolve().parents[2] / "dashboards" / "gpuwarden-grafana.json"

PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "and", "or", "unless", "inf", "nan",
}  # fmt: skip


def served_names() -> set[str]:
    """Sample names of one scrape of a collector with a GPU, a job, a sink and decisions."""
    state = ClusterState()
    job = JobInfo(job_id="42", user="alice", account="phys")
    gpu = GpuWindow(
        uuid="GPU-1",
        index=0,
        name="A100",
        samples=5,
        util_mean=50.0,
        util_max=60.0,
        mem_used_max_bytes=1,
        mem_total_bytes=2,
        power_mean_w=100.0,
        temperature_c=50.0,
        job=job,
        allocated=True,
    )
    state.apply(NodeReport("n1", 1, 95.0, 100.0, (gpu,)))
    view = LiveView(
        now=101.0,
        state=state,
        windows_stored=1,
        sinks=(SinkStats("tsdb", 1, 0, 0, 0, 0, 0, True, ""),),
        idle_gpu_seconds={("alice", "phys"): 5.0},
        audit_counts={AuditKey("idle", "warn", "warned", False): 1},
    )
    text = PrometheusExporter().render(view).decode()
    return {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}


def expressions(node: Any) -> list[str]:
    """Every PromQL expression in the dashboard (panel targets and variable queries)."""
    out: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                out.append(value)
            elif key == "query" and isinstance(value, dict) and "query" in value:
                out.append(str(value["query"]))
            else:
                out.extend(expressions(value))
    elif isinstance(node, list):
        for item in node:
            out.extend(expressions(item))
    return out


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords,
    label names or Grafana variables."""
    expr = re.sub(r'"[^"]*"|\'[^\']*\'', "", expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping labels
    expr = re.sub(r"\$\w+", "", expr)  # variables
    expr = re.sub(r"label_values\(([a-zA-Z_:][\w:]*),[^)]*\)", r"\1", expr)  # Grafana helper
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][\w:]*", expr):
        rest = expr[m.end() :].lstrip()
        if rest.startswith("(") or m.group() in PROMQL_WORDS:
            continue
        names.add(m.group())
    return names


def test_the_dashboard_is_valid_json_using_only_served_metrics() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["title"] and dash["uid"]
    exprs = expressions(dash)
    assert len(exprs) >= 10
    used = set().union(*(metric_names(e) for e in exprs))
    served = served_names()
    assert used, "no metric names found"
    assert used <= served, f"not served by /metrics: {sorted(used - served)}"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    for topic in ("utilisation", "allocated vs active", "idle gpu-hours by user", "account"):
        assert topic in titles
    assert "findings" in titles and "actions" in titles
    assert any('jobid="$jobid"' in e for e in exprs)  # the per-job panels
    assert {v["name"] for v in dash["templating"]["list"]} == {"cluster", "jobid"}


def test_the_name_checker_catches_an_unknown_metric() -> None:
    assert metric_names('sum by (user) (increase(gpuwarden_nope_total{a="b"}[5m])) / 3600') == {
        "gpuwarden_nope_total"
    }


def test_every_listed_family_is_served() -> None:
    served = served_names()
    for family in (*JOBSTATS_METRICS, *GPUWARDEN_METRICS):
        assert family in served or f"{family}_total" in served, family
