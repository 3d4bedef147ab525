"""The shipped Grafana dashboard is generated from the metrics table and never drifts."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tinyllm_ray.grafana import PANELS, build_dashboard, dashboard_json
from tinyllm_ray.observability import METRICS, exported_name

SHIPPED = Path(__file__).resolve().parents[2] / "cluster" / "grafana" / "tinyllm_dashboard.json"


def test_shipped_file_is_what_the_code_builds():
    assert SHIPPED.read_text() == dashboard_json(), (
        "cluster/grafana/tinyllm_dashboard.json is stale: python -m tinyllm_ray.grafana > that file")


def test_every_metric_has_a_panel_and_every_query_names_an_exported_metric():
    assert {p.metric for p in PANELS} == set(METRICS)
    exported = {exported_name(k) for k in METRICS}
    dash = json.loads(SHIPPED.read_text())
    for panel in dash["panels"]:
        assert panel["description"].strip()
        for t in panel["targets"]:
            names = set(re.findall(r"ray_tinyllm_\w+", t["expr"]))
            assert names and all(n.removesuffix("_bucket") in exported for n in names), t["expr"]
            assert t["expr"].count("(") == t["expr"].count(")")
            assert 'SessionName=~"$SessionName"' in t["expr"]


def test_layout_has_no_overlapping_panels():
    seen = set()
    for p in build_dashboard()["panels"]:
        g = p["gridPos"]
        cell = (g["x"], g["y"])
        assert cell not in seen
        seen.add(cell)
