"""The metrics facade: argument validation, no-op without Ray, and what reaches Ray.

No Ray session is started here. To check what *would* be recorded, the real
``ray.util.metrics`` objects are built (their tag validation is the contract) and only
their native backend is swapped for a recorder.
"""

from __future__ import annotations

import math

import pytest

from tinyllm_ray import observability as obs
from tinyllm_ray.observability import METRICS, TeacherMetrics, TrainMetrics, exported_name


class _Backend:
    """Stands in for Ray's Cython metric: collects (value, tags) of every record."""

    def __init__(self) -> None:
        self.records: list[tuple[float, dict[str, str]]] = []

    def record(self, value, tags=None):
        self.records.append((value, dict(tags or {})))


@pytest.fixture
def no_ray(monkeypatch):
    """Behave as a process without a Ray session, whatever the test session did."""
    monkeypatch.setattr(obs, "_ray_session_key", lambda: None)
    monkeypatch.setattr(obs, "_registry", {})


@pytest.fixture
def recorded(monkeypatch) -> dict[str, _Backend]:
    """Pretend Ray is live; return spec_key -> recorder behind real Ray metric objects."""
    backends: dict[str, _Backend] = {}
    real_create = obs._create

    def create(spec):
        metric = real_create(spec)  # real ray.util.metrics object: real tag validation
        key = next(k for k, s in METRICS.items() if s is spec)
        metric._metric = backends.setdefault(key, _Backend())
        return metric

    monkeypatch.setattr(obs, "_ray_session_key", lambda: (1, "01000000"))
    monkeypatch.setattr(obs, "_registry", {})
    monkeypatch.setattr(obs, "_create", create)
    return backends


# --------------------------------------------------------------------------- declarations


def test_every_metric_is_prefixed_and_declares_its_tags():
    for key, spec in METRICS.items():
        assert spec.name.startswith(obs.METRIC_PREFIX), key
        assert spec.tag_keys, key
        assert (spec.boundaries is not None) == (spec.kind == "histogram"), key
    assert METRICS["dropped"].tag_keys == ("teacher", "reason")
    assert METRICS["train_loss"].tag_keys == ("task", "trial")
    assert METRICS["samples_per_s"].tag_keys == ("trial",)
    assert METRICS["val_accuracy"].tag_keys == ("trial",)
    assert METRICS["tokens_per_s"].kind == "gauge"


def test_exported_names_follow_ray_prometheus_naming():
    assert exported_name("dropped") == "ray_tinyllm_rationales_dropped_total"
    assert exported_name("val_accuracy") == "ray_tinyllm_val_accuracy"


def test_real_ray_metric_objects_accept_every_spec():
    """Ray's constructors validate names/tag keys/boundaries; none of ours is discarded."""
    for spec in METRICS.values():
        metric = obs._create(spec)
        assert metric.info["tag_keys"] == spec.tag_keys
        assert not metric._discard_metric


# --------------------------------------------------------------------------- no Ray


def test_no_ray_is_a_noop_that_still_returns_the_rate(no_ray):
    assert not obs.metrics_enabled()
    rate = TeacherMetrics("llama").record_batch(
        outputs=10, kept=7, dropped={"unparsable": 3}, tokens=500, seconds=2.0
    )
    assert rate == 250.0
    TrainMetrics("t0").record_step({"answer": 0.5}, samples_per_s=12.0)
    TrainMetrics("t0").record_eval(0.25)
    assert obs._registry == {}


def test_arguments_are_validated_without_ray(no_ray):
    t = TeacherMetrics("llama")
    with pytest.raises(ValueError, match="exceeds outputs"):
        t.record_batch(outputs=2, kept=2, dropped={"empty": 1}, tokens=1, seconds=1.0)
    with pytest.raises(ValueError, match="kept must be >= 0"):
        t.record_batch(outputs=2, kept=-1, dropped={}, tokens=1, seconds=1.0)
    with pytest.raises(TypeError, match="outputs must be an int"):
        t.record_batch(outputs=2.0, kept=1, dropped={}, tokens=1, seconds=1.0)
    with pytest.raises(ValueError, match="reason"):
        t.record_batch(outputs=2, kept=1, dropped={"": 1}, tokens=1, seconds=1.0)
    with pytest.raises(ValueError, match="teacher"):
        TeacherMetrics("")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        TrainMetrics("t0").record_eval(64.0)
    with pytest.raises(TypeError, match="losses"):
        TrainMetrics("t0").record_step({"answer": "0.5"}, samples_per_s=1.0)
    with pytest.raises(ValueError, match="samples_per_s"):
        TrainMetrics("t0").record_step({}, samples_per_s=-1.0)


# --------------------------------------------------------------------------- what Ray gets


def test_teacher_batch_records_counts_by_reason_and_skips_zeros(recorded):
    rate = TeacherMetrics("llama").record_batch(
        outputs=10,
        kept=6,
        dropped={"unparsable": 3, "empty": 1, "answer_mismatch": 0},
        tokens=900,
        seconds=3.0,
    )
    assert rate == pytest.approx(300.0)
    assert recorded["generated"].records == [(10, {"teacher": "llama"})]
    assert recorded["kept"].records == [(6, {"teacher": "llama"})]
    # Counter.inc(0) raises in Ray: a zero count must not be sent.
    assert sorted(recorded["dropped"].records, key=lambda r: r[1]["reason"]) == [
        (1, {"teacher": "llama", "reason": "empty"}),
        (3, {"teacher": "llama", "reason": "unparsable"}),
    ]
    assert recorded["tokens_per_s"].records == [(pytest.approx(300.0), {"teacher": "llama"})]
    assert recorded["batch_seconds"].records == [(3.0, {"teacher": "llama"})]


def test_teacher_batch_without_duration_sets_no_rate(recorded):
    assert TeacherMetrics("qwen").record_batch(outputs=0, kept=0, dropped={}, tokens=0, seconds=0.0) is None
    assert "tokens_per_s" not in recorded and "generated" not in recorded


def test_train_metrics_tag_task_and_trial(recorded):
    m = TrainMetrics("trial_1")
    m.record_step({"answer": 0.7, "rationale:llama": float("nan")}, samples_per_s=100)
    m.record_eval(0.5)
    losses = {tags["task"]: (value, tags["trial"]) for value, tags in recorded["train_loss"].records}
    assert losses["answer"] == (0.7, "trial_1")
    assert math.isnan(losses["rationale:llama"][0])  # divergence stays visible
    assert recorded["samples_per_s"].records == [(100.0, {"trial": "trial_1"})]
    assert recorded["val_accuracy"].records == [(0.5, {"trial": "trial_1"})]


def test_metric_objects_are_created_once_per_session(recorded, monkeypatch):
    for _ in range(3):
        TeacherMetrics("llama").record_batch(outputs=1, kept=1, dropped={}, tokens=1, seconds=1.0)
    first = obs._registry[(1, "01000000")]["generated"]
    assert len(recorded["generated"].records) == 3
    # A new Ray session in the same process (tests re-init) gets fresh objects.
    monkeypatch.setattr(obs, "_ray_session_key", lambda: (1, "02000000"))
    TeacherMetrics("llama").record_batch(outputs=1, kept=1, dropped={}, tokens=1, seconds=1.0)
    assert list(obs._registry) == [(1, "02000000")]
    assert obs._registry[(1, "02000000")]["generated"] is not first


def test_backend_failure_is_logged_once_not_raised(recorded, monkeypatch, caplog):
    class Broken(_Backend):
        def record(self, value, tags=None):
            raise RuntimeError("core worker gone")

    TrainMetrics("t").record_eval(0.1)  # creates the metric
    obs._registry[(1, "01000000")]["val_accuracy"]._metric = Broken()
    monkeypatch.setattr(obs, "_warned", set())
    with caplog.at_level("WARNING", logger="tinyllm_ray.observability"):
        TrainMetrics("t").record_eval(0.2)
        TrainMetrics("t").record_eval(0.3)
    assert sum("core worker gone" in r.getMessage() for r in caplog.records) == 1
