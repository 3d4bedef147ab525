"""Where every training report goes besides Ray: a JSON-lines log, TensorBoard, MLflow (opt-in).

Why a Ray Train ``UserCallback`` on the controller: in Ray Train v2 ``Result.metrics``
keeps only metrics reported with a checkpoint, and the controller sees every rank-0 report
once, so the per-step loss curves are written here exactly once per step whatever the
number of workers. Ray Train v2 has no TensorBoard or MLflow logger of its own (Tune's
``TBXLoggerCallback`` / ``MLflowLoggerCallback`` see only what a *trial* reports to Tune),
so this callback also feeds a TensorBoard event file (always, local runs) and, when
``train.mlflow_tracking_uri`` is set, an MLflow run through ``MlflowClient`` (one run per
Ray Train run, named after it; nothing is logged from the workers).
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any

from tinyllm_ray.errors import ConfigError
from tinyllm_ray.store import is_uri

METRICS_FILE = "metrics.jsonl"
#: TensorBoard event files, beside ``METRICS_FILE`` in the Ray Train run folder.
TENSORBOARD_DIR = "tensorboard"


def numeric_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The scalar metrics of one report (numbers, not bools), without ``step``."""
    return {k: float(v) for k, v in metrics.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


def check_mlflow_available(uri: str | None) -> None:
    """Fail before training starts when MLflow logging is asked for but not installed."""
    if uri is None:
        return
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"train.mlflow_tracking_uri is set ({uri}) but mlflow is not installed: "
            "pip install mlflow-skinny (or mlflow), or remove train.mlflow_tracking_uri"
        ) from None


class MlflowSink:
    """One MLflow run per Ray Train run: started on the driver, fed by the controller, ended by the driver.

    Why started on the driver: the controller holds a pickled copy of the callback, so
    only a run id created before ``fit`` lets the driver close the run (finished or
    failed) afterwards. Only strings cross the process boundary (the client is rebuilt).
    """

    def __init__(self, uri: str, experiment: str, run_name: str) -> None:
        self.uri, self.experiment, self.run_name = uri, experiment, run_name
        self.run_id: str | None = None
        self._client: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None}

    def _get_client(self) -> Any:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def start(self, params: dict[str, Any] | None = None) -> str:
        """Create the run (and the experiment if new); log ``params`` once. Returns the run id."""
        client = self._get_client()
        exp = client.get_experiment_by_name(self.experiment)
        exp_id = exp.experiment_id if exp is not None else client.create_experiment(self.experiment)
        self.run_id = client.create_run(exp_id, run_name=self.run_name).info.run_id
        if params:
            from mlflow.entities import Param

            client.log_batch(self.run_id, params=[Param(k, str(v)[:500]) for k, v in params.items()])
        return self.run_id

    def log(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        if self.run_id is None:
            self.start()
        now = int(time.time() * 1000)
        self._get_client().log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def finish(self, status: str = "FINISHED") -> None:
        if self.run_id is not None:
            self._get_client().set_terminated(self.run_id, status=status)


@functools.lru_cache(maxsize=1)
def _metrics_callback_cls() -> type:
    """Defined on first use: ``ray.train`` is imported only when a trainer is built."""
    from ray.train import UserCallback

    class MetricsLogCallback(UserCallback):
        """Append every report (rank-0 metrics) and every worker failure to a JSON-lines file.

        Runs on the Ray Train controller, which writes to a local ``storage_path``; ``path``
        None (a URI storage path) skips the file and TensorBoard, and MLflow still gets the reports.
        """

        def __init__(self, path: str | None, mlflow: MlflowSink | None = None) -> None:
            self.path = path
            self.mlflow = mlflow
            self._tb = None

        def _tensorboard(self, step: int, scalars: dict[str, float]) -> None:
            """The same scalars as TensorBoard events in ``<train run>/tensorboard`` (``tensorboard --logdir``)."""
            if self.path is None or is_uri(self.path):
                return
            from tensorboardX.event_file_writer import EventsWriter
            from tensorboardX.proto.event_pb2 import Event
            from tensorboardX.summary import scalar

            if self._tb is None:  # synchronous writer: every report is on disk when this returns
                logdir = os.path.join(os.path.dirname(self.path), TENSORBOARD_DIR)
                os.makedirs(logdir, exist_ok=True)
                self._tb = EventsWriter(os.path.join(logdir, "events"))
            now = time.time()
            for key, value in scalars.items():
                self._tb.write_event(Event(wall_time=now, step=step, summary=scalar(key, value)))
            self._tb.flush()

        def _write(self, record: dict[str, Any]) -> None:
            if self.path is None or is_uri(self.path):
                return
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with open(self.path, "a") as f:
                f.write(json.dumps(record, default=str) + "\n")

        def after_report(self, run_context, metrics, checkpoint) -> None:
            m = dict(metrics[0]) if metrics else {}
            self._write({"event": "report", "time": time.time(), **m,
                         "checkpoint": checkpoint.path if checkpoint is not None else None})
            if m.get("step") is None:
                return
            scalars = numeric_metrics(m)
            self._tensorboard(int(m["step"]), scalars)
            if self.mlflow is not None:
                self.mlflow.log(int(m["step"]), scalars)

        def after_exception(self, run_context, worker_exceptions) -> None:
            self._write({"event": "worker_failure", "time": time.time(),
                         "ranks": sorted(worker_exceptions),
                         "errors": {str(k): repr(v)[:500] for k, v in worker_exceptions.items()}})

    return MetricsLogCallback


def MetricsLogCallback(path: str | None, mlflow: MlflowSink | None = None):
    """A :class:`ray.train.UserCallback` logging every report to ``path`` (and MLflow; see above)."""
    return _metrics_callback_cls()(path, mlflow)
