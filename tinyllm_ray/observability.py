"""Custom Ray metrics (``ray.util.metrics``) for the dashboard's Metrics tab and Prometheus.

Why a facade instead of calling ``ray.util.metrics`` at each call site:

* Ray metric objects belong *inside* a Ray process (driver after ``ray.init``, or a
  task/actor/Train worker): one made at import time, before ``ray.init``, is attached to
  no metrics agent and its records go nowhere. So they are created lazily, once per
  process and Ray session, on first use.
* Ray validates tags strictly (every declared tag key must be given, values must be
  ``str``) and ``Counter.inc`` rejects values ``<= 0``. One place converts and filters,
  so a teacher batch with zero drops or an integer trial id never crashes an actor.
* Unit tests and offline tools run without Ray: every ``record_*`` is then a no-op
  that still validates its arguments, so misuse is caught in milliseconds.

What a user sees. Ray exports every custom metric with a ``ray_`` prefix and counters
with a ``_total`` suffix (OpenTelemetry exporter in Ray 2.60), so
``tinyllm_rationales_dropped`` is scraped as ``ray_tinyllm_rationales_dropped_total``
with labels ``teacher``, ``reason`` plus Ray's own ``SessionName``, ``NodeAddress``,
``WorkerId``, ``Component``. :func:`exported_name` gives the scraped name.
See ``docs/cluster.md`` ("Metrics") for where to look.

Usage (teacher actor, after each persisted batch; Train worker of world rank 0)::

    TeacherMetrics("llama").record_batch(outputs=64, kept=60, dropped={"unparsable": 4},
                                         tokens=8123, seconds=3.2)
    m = TrainMetrics(trial="trial_0001")
    m.record_step({"answer": 0.71, "rationale:llama": 1.32}, samples_per_s=410.0)
    m.record_eval(val_accuracy=0.64)

Also here, as every layer may call them: :func:`progress` (the stages' announcements to the
CLI's console, ``jobs/console.py``) and :func:`quiet_train_reports` (Ray Train workers).
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

log = logging.getLogger(__name__)

METRIC_PREFIX = "tinyllm_"
# Ray prepends this namespace to every metric it exports to Prometheus.
RAY_EXPORT_PREFIX = "ray_"

MetricKind = Literal["counter", "gauge", "histogram"]

# Teacher batch wall time buckets (seconds): one vLLM batch takes from well under a
# second (tiny CPU demo) to minutes (8B model, long CoTs, many samples per prompt).
BATCH_SECONDS_BUCKETS: tuple[float, ...] = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


@dataclass(frozen=True)
class MetricSpec:
    """Declaration of one metric: what Ray needs to create it, fixed in one table."""

    name: str
    kind: MetricKind
    description: str
    tag_keys: tuple[str, ...]
    boundaries: tuple[float, ...] | None = None


# Short keys (used in code) -> declarations. Names all carry METRIC_PREFIX.
METRICS: dict[str, MetricSpec] = {
    "generated": MetricSpec(
        "tinyllm_rationales_generated",
        "counter",
        "Teacher outputs (CoTs or self-evaluations) returned by vLLM.",
        ("teacher",),
    ),
    "kept": MetricSpec(
        "tinyllm_rationales_kept",
        "counter",
        "Teacher outputs that passed the filters and were written to the rationale store.",
        ("teacher",),
    ),
    "dropped": MetricSpec(
        "tinyllm_rationales_dropped",
        "counter",
        "Teacher outputs dropped by a filter, by reason (empty, unparsable, answer_mismatch, ...).",
        ("teacher", "reason"),
    ),
    "tokens_per_s": MetricSpec(
        "tinyllm_teacher_tokens_per_second",
        "gauge",
        "Generated tokens per second of the last batch of one teacher actor.",
        ("teacher",),
    ),
    "batch_seconds": MetricSpec(
        "tinyllm_teacher_batch_seconds",
        "histogram",
        "Wall time of one teacher batch (generation + parsing), seconds.",
        ("teacher",),
        BATCH_SECONDS_BUCKETS,
    ),
    "train_loss": MetricSpec(
        "tinyllm_train_loss",
        "gauge",
        "Unweighted training loss of one task (answer, rationale:<teacher>, self_eval) at the last step.",
        ("task", "trial"),
    ),
    "samples_per_s": MetricSpec(
        "tinyllm_train_samples_per_second",
        "gauge",
        "Training throughput (examples per second, all workers) at the last step.",
        ("trial",),
    ),
    "val_accuracy": MetricSpec(
        "tinyllm_val_accuracy",
        "gauge",
        "Validation exact-match accuracy at the last evaluation.",
        ("trial",),
    ),
}


def exported_name(spec_key: str) -> str:
    """The name Prometheus scrapes for ``METRICS[spec_key]`` (``ray_`` prefix, ``_total``)."""
    spec = METRICS[spec_key]
    suffix = "_total" if spec.kind == "counter" else ""
    return f"{RAY_EXPORT_PREFIX}{spec.name}{suffix}"


# --------------------------------------------------------------------------- registry

_lock = threading.Lock()
# Keyed by (pid, job id): a forked process or a new ray.init session gets fresh objects
# bound to its own core worker instead of objects from a shut-down session.
_registry: dict[tuple[int, str], dict[str, Any]] = {}
_warned: set[str] = set()


def _ray_session_key() -> tuple[int, str] | None:
    """(pid, job id) of the live Ray session in this process, or None without Ray."""
    try:
        import ray
    except ImportError:  # pragma: no cover - ray is a hard dependency; kept for tooling
        return None
    if not ray.is_initialized():
        return None
    try:
        job = ray.get_runtime_context().get_job_id()
    except Exception:  # noqa: BLE001 - a half-initialised worker must not break callers
        return None
    return (os.getpid(), str(job))


def _create(spec: MetricSpec) -> Any:
    from ray.util import metrics as rm

    if spec.kind == "counter":
        return rm.Counter(spec.name, description=spec.description, tag_keys=spec.tag_keys)
    if spec.kind == "gauge":
        return rm.Gauge(spec.name, description=spec.description, tag_keys=spec.tag_keys)
    return rm.Histogram(
        spec.name,
        description=spec.description,
        boundaries=list(spec.boundaries or BATCH_SECONDS_BUCKETS),
        tag_keys=spec.tag_keys,
    )


def _metric(spec_key: str) -> Any | None:
    """The process-wide metric object for ``spec_key``; None when Ray is not running."""
    key = _ray_session_key()
    if key is None:
        return None
    with _lock:
        per_session = _registry.get(key)
        if per_session is None:
            # Drop objects of earlier sessions in this process (tests re-init Ray).
            _registry.clear()
            per_session = _registry[key] = {}
        metric = per_session.get(spec_key)
        if metric is None:
            metric = per_session[spec_key] = _create(METRICS[spec_key])
        return metric


def metrics_enabled() -> bool:
    """True when ``record_*`` calls reach Ray (a Ray session is live in this process)."""
    return _ray_session_key() is not None


def _warn_once(what: str, exc: BaseException) -> None:
    if what not in _warned:
        _warned.add(what)
        log.warning(
            "metric %s not recorded (%s: %s); further failures are silent", what, type(exc).__name__, exc
        )


def _record(spec_key: str, method: str, value: float, tags: dict[str, str]) -> None:
    """Call ``metric.<method>(value, tags=tags)``; a failure is logged once, never raised.

    Why never raised: observability must never kill a teacher or a trainer.
    """
    metric = _metric(spec_key)
    if metric is None:
        return
    try:
        getattr(metric, method)(float(value), tags=tags)
    except Exception as exc:  # noqa: BLE001 - see docstring
        _warn_once(spec_key, exc)


def _inc(spec_key: str, value: float, tags: dict[str, str]) -> None:
    """Counter.inc rejects 0, so a zero count (nothing happened) is simply skipped."""
    if value > 0:
        _record(spec_key, "inc", value, tags)


def _set(spec_key: str, value: float, tags: dict[str, str]) -> None:
    _record(spec_key, "set", value, tags)


def _observe(spec_key: str, value: float, tags: dict[str, str]) -> None:
    _record(spec_key, "observe", value, tags)


# --------------------------------------------------------------------------- validation


def _tag(name: str, value: object) -> str:
    """Tag values must be non-empty strings for Ray; say which tag when one is not."""
    text = str(value)
    if not text:
        raise ValueError(f"metric tag {name!r} must be a non-empty string")
    return text


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int count, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    return float(value)


# --------------------------------------------------------------------------- facades


class TeacherMetrics:
    """Metrics of one teacher, recorded from its vLLM actors after each persisted batch.

    Counters are per actor process; Prometheus/the dashboard sum them over actors
    (``sum by (teacher) (rate(ray_tinyllm_rationales_kept_total[5m]))``).
    """

    def __init__(self, teacher: str) -> None:
        self.teacher = _tag("teacher", teacher)
        self._tags = {"teacher": self.teacher}

    def record_batch(
        self,
        outputs: int,
        kept: int,
        dropped: Mapping[str, int],
        tokens: int,
        seconds: float,
    ) -> float | None:
        """Count one batch and return its tokens/s (None when ``seconds`` is not > 0).

        ``outputs`` are all generated outputs of the batch, ``kept`` those written to the
        store, ``dropped`` the rest by filter reason. ``tokens`` are generated tokens.
        Arguments are validated even without Ray so misuse fails in unit tests.
        """
        outputs = _count("outputs", outputs)
        kept = _count("kept", kept)
        tokens = _count("tokens", tokens)
        seconds = _number("seconds", seconds)
        drops = {_tag("reason", r): _count(f"dropped[{r!r}]", n) for r, n in dropped.items()}
        if kept + sum(drops.values()) > outputs:
            raise ValueError(
                f"teacher {self.teacher!r}: kept ({kept}) + dropped ({sum(drops.values())}) "
                f"exceeds outputs ({outputs})"
            )
        _inc("generated", outputs, self._tags)
        _inc("kept", kept, self._tags)
        for reason, n in drops.items():
            _inc("dropped", n, {**self._tags, "reason": reason})
        if not (seconds > 0 and math.isfinite(seconds)):
            return None
        rate = tokens / seconds
        _set("tokens_per_s", rate, self._tags)
        _observe("batch_seconds", seconds, self._tags)
        return rate


class TrainMetrics:
    """Training metrics of one trial (the Tune trial name, or the run name without Tune).

    Record from the world-rank-0 worker only: gauges from every worker would show one
    series per worker with the same trial tag. ``samples_per_s`` should already be the
    global rate (per-worker rate x world size).
    """

    def __init__(self, trial: str) -> None:
        self.trial = _tag("trial", trial)
        self._tags = {"trial": self.trial}

    def record_step(self, losses: Mapping[str, float], samples_per_s: float) -> None:
        """Set the per-task loss gauges and the throughput gauge for the last step.

        Non-finite losses are recorded as they are: a NaN on the dashboard is the
        earliest visible sign of a diverging trial.
        """
        values = {_tag("task", task): _number(f"losses[{task!r}]", v) for task, v in losses.items()}
        rate = _number("samples_per_s", samples_per_s)
        if rate < 0:
            raise ValueError(f"samples_per_s must be >= 0, got {rate}")
        for task, value in values.items():
            _set("train_loss", value, {"task": task, **self._tags})
        _set("samples_per_s", rate, self._tags)

    def record_eval(self, val_accuracy: float) -> None:
        """Set the validation accuracy gauge (the metric ASHA selects trials on)."""
        acc = _number("val_accuracy", val_accuracy)
        if not 0.0 <= acc <= 1.0:
            raise ValueError(f"val_accuracy must be a fraction in [0, 1], got {acc}")
        _set("val_accuracy", acc, self._tags)


# --------------------------------------------------------------------------- console progress

ProgressListener = Callable[[str, dict[str, Any]], None]
_listeners: list[ProgressListener] = []


def add_progress_listener(listener: ProgressListener) -> Callable[[], None]:
    """Register ``listener`` for :func:`progress` events of this process; returns its remover.

    Why here: the stages sit below ``jobs/`` (the console's home) and must not import it;
    they announce, the CLI's console (if any) listens.
    """
    with _lock:
        _listeners.append(listener)
    return lambda: _listeners.remove(listener) if listener in _listeners else None


#: Label prefix of a teacher's bootstrap training in ``progress("training", label=...)``
#: ("teacher <name>"): the console tells it apart from the student's trainings.
BOOTSTRAP_LABEL = "teacher "


def progress(event: str, **fields: Any) -> None:
    """Tell this process's console what just happened; never raises, a no-op without a listener.

    Events (fields): ``ray`` (address: about to start/join Ray), ``stage`` (name, detail),
    ``generation`` (cfg, shard_size), ``shard`` (shard: a ``ShardWritten``), ``training`` (label,
    pattern: a glob of Ray Train ``metrics.jsonl`` files, total: steps or None). Only the
    driver listens: calls in Ray workers go nowhere.
    """
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(event, fields)
        except Exception:
            log.debug("progress listener failed on %s", event, exc_info=True)


#: Ray Train v2 logs every report of every worker at INFO ("Reporting training result ...") under a
#: logger named after its source FILE; it propagates to the worker's root logger, then the driver.
_TRAIN_REPORT_LOGGER_MODULE = "ray.train.v2._internal.execution.context"


def quiet_train_reports() -> None:
    """Stop Ray Train's per-report INFO line in this (Train worker) process; warnings stay.

    Why: with a report per optimizer step it made most of the demo's 165,456 console lines;
    ``metrics.jsonl`` already has every report. Call it in the worker before the first report.
    """
    import importlib.util

    spec = importlib.util.find_spec(_TRAIN_REPORT_LOGGER_MODULE)
    if spec is not None and spec.origin:
        logging.getLogger(spec.origin).setLevel(logging.WARNING)


__all__ = [
    "METRICS",
    "METRIC_PREFIX",
    "MetricSpec",
    "ProgressListener",
    "TeacherMetrics",
    "TrainMetrics",
    "add_progress_listener",
    "exported_name",
    "metrics_enabled",
    "progress",
    "quiet_train_reports",
]
