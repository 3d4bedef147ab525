"""tinyllm_ metrics recorded in Ray actors reach Ray's Prometheus endpoint with their tags.

Why a subprocess: the session fixture ``ray_session`` starts Ray without a metrics export
port, and a process holds one Ray session at a time. The child starts its own short-lived
Ray (token auth on, loopback dashboard, known metrics port, private temp dir), records from
two actors through :mod:`tinyllm_ray.observability`, and polls
``http://127.0.0.1:<port>/metrics`` — what Prometheus would scrape — until every expected
series is there (bounded wait). It also reads the Prometheus service-discovery file and
checks the dashboard refuses requests without the token.

Run the child by hand: ``python tests/integration/test_metrics_export.py PORT DASH_PORT TMPDIR``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRAPE_DEADLINE_S = 60.0
SD_FILE = "prom_metrics_service_discovery.json"
RESULT_MARK = "TINYLLM_RESULT="

# (exported name, labels that must match, expected value)
EXPECTED: list[tuple[str, dict[str, str], float]] = [
    ("ray_tinyllm_rationales_generated_total", {"teacher": "llama"}, 10.0),
    ("ray_tinyllm_rationales_kept_total", {"teacher": "llama"}, 7.0),
    ("ray_tinyllm_rationales_dropped_total", {"teacher": "llama", "reason": "unparsable"}, 2.0),
    ("ray_tinyllm_rationales_dropped_total", {"teacher": "llama", "reason": "empty"}, 1.0),
    ("ray_tinyllm_teacher_tokens_per_second", {"teacher": "llama"}, 250.0),
    ("ray_tinyllm_teacher_batch_seconds_count", {"teacher": "llama"}, 1.0),
    ("ray_tinyllm_train_loss", {"task": "answer", "trial": "trial_0"}, 0.5),
    ("ray_tinyllm_train_loss", {"task": "rationale:llama", "trial": "trial_0"}, 1.25),
    ("ray_tinyllm_train_samples_per_second", {"trial": "trial_0"}, 12.0),
    ("ray_tinyllm_val_accuracy", {"trial": "trial_0"}, 0.25),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _find(samples: list[dict], name: str, labels: dict[str, str]) -> dict | None:
    for s in samples:
        if s["name"] == name and all(s["labels"].get(k) == v for k, v in labels.items()):
            return s
    return None


# --------------------------------------------------------------------------- child process


def _scrape(port: int) -> list[dict]:
    """tinyllm_ samples from the metrics endpoint (no auth header: it has none)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return [
        {"name": s.name, "labels": dict(s.labels), "value": s.value}
        for fam in text_string_to_metric_families(text)
        if "tinyllm_" in fam.name
        for s in fam.samples
    ]


def _dashboard_status(url: str, token: str | None) -> int:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        return urllib.request.urlopen(req, timeout=5).status
    except urllib.error.HTTPError as err:
        return err.code


def child_main(port: int, dash_port: int, temp_dir: str) -> dict:
    import ray

    from tinyllm_ray.config import RuntimeConfig
    from tinyllm_ray.observability import TeacherMetrics, TrainMetrics
    from tinyllm_ray.runtime import init_ray

    t0 = time.monotonic()
    # its own Ray beside the session one on purpose (own temp dir; no Ray Train in it)
    runtime = RuntimeConfig(num_cpus=2, metrics_export_port=port, dashboard_host="127.0.0.1", allow_second_ray=True)
    init_ray(
        runtime,
        include_dashboard=True,
        dashboard_port=dash_port,
        _temp_dir=temp_dir,
        # Workers push metrics to the node's agent every 10 s by default; 2 s keeps this short.
        _system_config={"metrics_report_interval_ms": 2000},
    )
    out: dict = {"init_s": round(time.monotonic() - t0, 1)}
    try:

        @ray.remote(num_cpus=0)
        class FakeTeacher:
            def batch(self) -> float | None:
                return TeacherMetrics("llama").record_batch(
                    outputs=10, kept=7, dropped={"unparsable": 2, "empty": 1}, tokens=500, seconds=2.0
                )

        @ray.remote(num_cpus=0)
        class FakeTrainer:
            def step(self) -> None:
                m = TrainMetrics("trial_0")
                m.record_step({"answer": 0.5, "rationale:llama": 1.25}, samples_per_s=12.0)
                m.record_eval(0.25)

        # Keep the actors alive until scraped: their worker processes own the series.
        teacher, trainer = FakeTeacher.remote(), FakeTrainer.remote()
        out["rate"] = ray.get(teacher.batch.remote())
        ray.get(trainer.step.remote())

        deadline = time.monotonic() + SCRAPE_DEADLINE_S
        samples: list[dict] = []
        while time.monotonic() < deadline:
            try:
                samples = _scrape(port)
            except OSError:
                samples = []
            if all(_find(samples, n, lab) for n, lab, _ in EXPECTED):
                break
            time.sleep(1.0)
        out["scrape_s"] = round(time.monotonic() - t0, 1)
        out["samples"] = samples

        # Ray's writer rewrites the file every 5 s; its first write can precede the node's
        # registration (then only the autoscaler and dashboard ports are listed), so wait
        # for a write that lists this node's metrics port.
        sd_path = Path(temp_dir) / "session_latest" / SD_FILE
        out["sd"] = None
        sd_deadline = time.monotonic() + 30.0
        while time.monotonic() < sd_deadline:
            try:
                out["sd"] = json.loads(sd_path.read_text())
            except (OSError, ValueError):
                pass
            if out["sd"] and any(t.endswith(f":{port}") for g in out["sd"] for t in g["targets"]):
                break
            time.sleep(0.5)
        out["sd_legacy_link"] = (Path(temp_dir) / SD_FILE).exists()
        out["grafana_dashboards"] = sorted(
            p.name for p in (Path(temp_dir) / "session_latest/metrics/grafana/dashboards").glob("*.json")
        )
        url = f"http://127.0.0.1:{dash_port}/api/version"
        out["dashboard_no_token"] = _dashboard_status(url, None)
        out["dashboard_with_token"] = _dashboard_status(url, os.environ["RAY_AUTH_TOKEN"])
    finally:
        ray.shutdown()
    return out


# --------------------------------------------------------------------------- the test


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_tinyllm_metrics_reach_the_prometheus_endpoint():
    port, dash_port = _free_port(), _free_port()
    temp_dir = tempfile.mkdtemp(prefix="tlr-", dir="/tmp")  # short: Ray puts sockets here
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
    # Token auth as on a real cluster; the token lives only in the child's environment.
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), RAY_DEDUP_LOGS="0")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, __file__, str(port), str(dash_port), temp_dir],
            env=env,
            check=False,
            capture_output=True,
            text=True,
            timeout=200,
            cwd=REPO,
        )
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert proc.returncode == 0, f"child failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_MARK)]
    assert lines, f"child printed no result:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    result = json.loads(lines[-1].removeprefix(RESULT_MARK))
    print(
        f"metrics export: init {result['init_s']}s, all series after {result['scrape_s']}s, "
        f"total {time.monotonic() - t0:.1f}s"
    )

    assert result["rate"] == 250.0
    samples = result["samples"]
    missing = [(n, lab) for n, lab, _ in EXPECTED if _find(samples, n, lab) is None]
    assert not missing, f"not exported within {SCRAPE_DEADLINE_S}s: {missing}\ngot: {samples}"
    for name, labels, value in EXPECTED:
        assert _find(samples, name, labels)["value"] == pytest.approx(value), (name, labels)
    # Ray adds its own labels; users filter dashboards by SessionName / NodeAddress.
    assert {"SessionName", "NodeAddress"} <= set(_find(samples, *EXPECTED[0][:2])["labels"])

    # Prometheus file-based service discovery lists this node's metrics export port.
    assert result["sd"] is not None, "prom_metrics_service_discovery.json was not written"
    targets = [t for group in result["sd"] for t in group["targets"]]
    assert any(t.endswith(f":{port}") for t in targets), targets
    assert result["sd_legacy_link"], "<temp_dir>/prom_metrics_service_discovery.json missing"
    assert "default_grafana_dashboard.json" in result["grafana_dashboards"]

    # Token auth (RAY_AUTH_MODE=token): the dashboard/Jobs API refuses anonymous requests.
    assert result["dashboard_no_token"] == 401
    assert result["dashboard_with_token"] == 200


if __name__ == "__main__":
    _port, _dash_port, _temp = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    print(RESULT_MARK + json.dumps(child_main(_port, _dash_port, _temp)), flush=True)
