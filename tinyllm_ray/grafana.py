"""A Grafana dashboard for the ``tinyllm_*`` metrics, generated from the metrics table.

Why generated: the panel queries must name exactly what Ray exports
(``ray_tinyllm_rationales_kept_total`` ...); building them from
:data:`tinyllm_ray.observability.METRICS` and :func:`~tinyllm_ray.observability.exported_name`
keeps one owner for metric names, and a unit test checks that the shipped
``cluster/grafana/tinyllm_dashboard.json`` equals what this module builds, so the file
cannot drift from the code.

Import it into the Grafana that Ray's dashboard embeds (Dashboards -> New -> Import, or
drop it into Ray's ``/tmp/ray/session_latest/metrics/grafana/dashboards/`` before
starting Grafana); it asks for a Prometheus data source. Each panel's description is the
metric's own description; docs/cluster.md lists the panels.

Regenerate after changing the metrics table::

    python -m tinyllm_ray.grafana > cluster/grafana/tinyllm_dashboard.json
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tinyllm_ray.observability import METRICS, exported_name

__all__ = ["PANELS", "Panel", "build_dashboard"]

DASHBOARD_UID = "tinyllm-ray"


@dataclass(frozen=True)
class Panel:
    """One time-series panel: a title, the metric it shows, its PromQL and legend."""

    title: str
    metric: str  # key of observability.METRICS
    expr: str  # PromQL with {name} for the exported metric name and {sel} for the session filter
    legend: str
    unit: str = "short"


#: The dashboard, top to bottom: teachers first (generation), then the student.
PANELS: tuple[Panel, ...] = (
    Panel("Rationales kept per second, by teacher", "kept",
          "sum by (teacher) (rate({name}{{{sel}}}[1m]))", "{{teacher}}", "ops"),
    Panel("Teacher outputs per second, by teacher", "generated",
          "sum by (teacher) (rate({name}{{{sel}}}[1m]))", "{{teacher}}", "ops"),
    Panel("Dropped outputs per second, by teacher and reason", "dropped",
          "sum by (teacher, reason) (rate({name}{{{sel}}}[1m]))", "{{teacher}} {{reason}}", "ops"),
    Panel("Generated tokens per second (all replicas), by teacher", "tokens_per_s",
          "sum by (teacher) ({name}{{{sel}}})", "{{teacher}}"),
    Panel("Teacher batch time, p50 and p95", "batch_seconds",
          "histogram_quantile(0.95, sum by (le, teacher) (rate({name}_bucket{{{sel}}}[5m])))",
          "{{teacher}} p95", "s"),
    Panel("Training loss per task", "train_loss", "max by (task, trial) ({name}{{{sel}}})",
          "{{task}} {{trial}}"),
    Panel("Training samples per second", "samples_per_s", "max by (trial) ({name}{{{sel}}})", "{{trial}}"),
    Panel("Validation accuracy", "val_accuracy", "max by (trial) ({name}{{{sel}}})", "{{trial}}", "percentunit"),
)

_SESSION = 'SessionName=~"$SessionName"'


def _panel(i: int, p: Panel) -> dict[str, Any]:
    spec = METRICS[p.metric]
    name = exported_name(p.metric)
    targets = [{"refId": "A", "expr": p.expr.format(name=name, sel=_SESSION), "legendFormat": p.legend,
                "datasource": {"type": "prometheus", "uid": "${datasource}"}}]
    if p.metric == "batch_seconds":
        targets.append({"refId": "B", "legendFormat": "{{teacher}} p50",
                        "expr": p.expr.replace("0.95", "0.5").format(name=name, sel=_SESSION),
                        "datasource": {"type": "prometheus", "uid": "${datasource}"}})
    return {
        "id": i + 1,
        "type": "timeseries",
        "title": p.title,
        "description": f"{spec.description} Metric: {name}.",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
        "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": targets,
    }


def build_dashboard() -> dict[str, Any]:
    """The dashboard JSON model (Grafana 9+ import format)."""
    return {
        "uid": DASHBOARD_UID,
        "title": "tinyllm-ray: teachers and student",
        "description": "Rationale generation (per teacher) and student training (per task and Tune trial), "
                       "from the tinyllm_* metrics Ray exports. See docs/cluster.md.",
        "tags": ["tinyllm-ray", "ray"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0},
            {"name": "SessionName", "label": "Ray session", "type": "query",
             "datasource": {"type": "prometheus", "uid": "${datasource}"},
             "query": {"query": f"label_values({exported_name('generated')}, SessionName)", "refId": "S"},
             "definition": f"label_values({exported_name('generated')}, SessionName)",
             "includeAll": True, "allValue": ".*", "multi": False, "refresh": 2, "current": {}, "hide": 0},
        ]},
        "panels": [_panel(i, p) for i, p in enumerate(PANELS)],
    }


def dashboard_json() -> str:
    """The shipped file's exact text."""
    return json.dumps(build_dashboard(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(dashboard_json(), end="")
