"""Every training report reaches the metrics log, TensorBoard and (opt-in) MLflow, once."""

from __future__ import annotations

import sys

import pytest

from tinyllm_ray.errors import ConfigError
from tinyllm_ray.student.metrics_log import (
    METRICS_FILE,
    MetricsLogCallback,
    MlflowSink,
    check_mlflow_available,
    numeric_metrics,
)


def test_numeric_metrics_keeps_numbers_only():
    assert numeric_metrics({"step": 3, "loss": 1.5, "val_accuracy": 1, "done": True, "stage": "cot"}) == {
        "loss": 1.5, "val_accuracy": 1.0}


def test_mlflow_requested_but_missing_is_one_line_with_the_fix(monkeypatch):
    check_mlflow_available(None)  # not asked for: nothing to check
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow -> ImportError
    with pytest.raises(ConfigError, match="pip install mlflow-skinny"):
        check_mlflow_available("http://127.0.0.1:5000")


def test_reports_reach_an_mlflow_run(tmp_path):
    pytest.importorskip("mlflow", reason="mlflow-skinny is a dev dependency (pip install -e '.[dev]')")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # a local database: no server, no network
    sink = MlflowSink(uri, "tinyllm-ray-test", run_name="demo/train")
    run_id = sink.start({"train.lr": 0.001})
    cb = MetricsLogCallback(str(tmp_path / "train" / METRICS_FILE), sink)
    from ray import cloudpickle as pickle  # what Ray uses to ship callbacks

    cb = pickle.loads(pickle.dumps(cb))  # the controller gets a copy, as under Ray Train
    for step in (1, 2):
        cb.after_report(None, [{"step": step, "loss": 1.0 / step, "loss_answer": 0.5, "stage": "cot"}], None)
    sink.finish()

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["train.lr"] == "0.001"
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "loss")] == [(1, 1.0), (2, 0.5)]
    assert "stage" not in run.data.metrics
    assert (tmp_path / "train" / METRICS_FILE).read_text().count('"event": "report"') == 2
