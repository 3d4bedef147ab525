"""What the console shows, as plain state and text (pure: no Ray, no terminal).

Why separate from ``console.py``: the console owns file descriptors, a thread and the
terminal; what it *says* (a teacher's rows and tokens per second, a training's step,
per-task losses and ETA, the throttled one-line records of a pipe, the end-of-job
summary) is decided here and unit-tested in milliseconds.

Sources: generation progress comes from the shards the driver sees committed
(``ShardWritten``); training progress from Ray Train's ``metrics.jsonl`` (one JSON record
per optimizer step, written by ``student.metrics_log.MetricsLogCallback`` on the controller),
followed with :class:`MetricsTail`, so trainings running in Tune trials or other
processes are shown too.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tinyllm_ray.observability import BOOTSTRAP_LABEL

__all__ = ["MetricsTail", "ProgressState", "TeacherProgress", "Throttle", "TrainingProgress", "fit",
           "format_seconds", "job_summary"]

LOSS_PREFIX = "loss_"


def format_seconds(seconds: float | None) -> str:
    """``48s``, ``3m05s``, ``1h02m``: short enough for a status line."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters (with an ellipsis): a status line never wraps."""
    if width <= 0 or len(text) <= width:
        return text
    return text[: max(0, width - 1)] + "…"


class Throttle:
    """Say yes at most once per ``interval`` seconds, and only for a text not said before.

    Why: where there is no terminal (``ray job logs``, a pipe, CI) the live status becomes
    a line record; one every few seconds, skipped when nothing changed, keeps a long job's
    log readable.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last_time: float | None = None
        self._last_text: str | None = None

    def due(self, now: float, text: str) -> bool:
        if not text or text == self._last_text:
            return False
        if self._last_time is not None and now - self._last_time < self.interval:
            return False
        self._last_time, self._last_text = now, text
        return True


class MetricsTail:
    """New complete JSON records of a growing JSON-lines file, from ``offset`` on.

    A line still being written (no newline yet) waits for the next read; a line that is
    not JSON is skipped (the file is someone else's); a file shorter than ``offset`` was
    replaced and is read from its start.
    """

    def __init__(self, path: str, offset: int = 0) -> None:
        self.path = path
        self.offset = offset
        self._partial = b""

    def read(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                if os.fstat(f.fileno()).st_size < self.offset:  # replaced (a rerun removed the old one)
                    self.offset, self._partial = 0, b""
                f.seek(self.offset)
                chunk = f.read()
        except OSError:
            return []
        self.offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        out = []
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out


@dataclass
class TeacherProgress:
    """One teacher's generation: examples done of the split (resumed ones included), this run's outputs."""

    name: str
    examples_total: int
    shard_size: int
    examples_done: int = 0
    resumed: int = 0
    outputs: int = 0
    kept: int = 0
    dropped: int = 0
    tokens: int = 0
    started: float = 0.0
    ended: float | None = None

    def shard_examples(self, shard: int) -> int:
        return max(0, min(self.shard_size, self.examples_total - shard * self.shard_size))

    def add_shard(self, shard: int, outputs: int, kept: int, dropped: int, tokens: int, now: float) -> None:
        self.examples_done = min(self.examples_total, self.examples_done + self.shard_examples(shard))
        self.outputs += outputs
        self.kept += kept
        self.dropped += dropped
        self.tokens += tokens
        if self.done:
            self.ended = now

    @property
    def done(self) -> bool:
        return self.examples_done >= self.examples_total

    def tokens_per_s(self, now: float) -> float:
        elapsed = (self.ended or now) - self.started
        return self.tokens / elapsed if elapsed > 0 else 0.0

    def status(self, now: float, waiting: str = "engine starting") -> str:
        if not self.outputs:
            return f"{self.name} {self.examples_done}/{self.examples_total} rows ({waiting})"
        return (f"{self.name} {self.examples_done}/{self.examples_total} rows, {self.tokens_per_s(now):.0f} tok/s, "
                f"kept {self.kept} dropped {self.dropped}")

    def done_line(self, now: float) -> str:
        resumed = f" ({self.resumed} already in the store)" if self.resumed else ""
        took = format_seconds((self.ended or now) - self.started)
        return (f"generation {self.name}: {self.examples_done}/{self.examples_total} rows{resumed}, kept "
                f"{self.kept} dropped {self.dropped} of {self.outputs} outputs, {self.tokens_per_s(now):.0f} tok/s, "
                f"{took}")


def _short_task(key: str) -> str:
    """``loss_rationale_llama`` -> ``llama``, ``loss_answer`` -> ``answer`` (status lines are narrow)."""
    name = key[len(LOSS_PREFIX):]
    for prefix in ("rationale_", "rationale:"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


@dataclass
class TrainingProgress:
    """One Ray Train run followed through its metrics log: step, per-task losses, validation, ETA."""

    label: str
    total: int | None = None
    step: int = 0
    loss: float | None = None
    losses: dict[str, float] = field(default_factory=dict)
    val_accuracy: float | None = None
    best_val: float | None = None
    best_step: int | None = None
    t_start: float | None = None  # when the console began following it (the run's start-up included)
    t_first: float | None = None
    step_first: int = 0
    t_last: float | None = None
    reported_done: bool = False

    def update(self, rec: Mapping[str, Any]) -> None:
        """Fold one ``metrics.jsonl`` record in (``event: report`` records only)."""
        if rec.get("event", "report") != "report" or rec.get("step") is None:
            return
        step, now = int(rec["step"]), float(rec.get("time") or 0.0)
        if rec.get("total_steps"):
            self.total = int(rec["total_steps"])
        if self.t_first is None:
            self.t_first, self.step_first = now, step
        self.step, self.t_last = step, now
        if isinstance(rec.get("loss"), (int, float)):
            self.loss = float(rec["loss"])
        for k, v in rec.items():
            if k.startswith(LOSS_PREFIX) and isinstance(v, (int, float)):
                self.losses[_short_task(k)] = float(v)
        val = rec.get("val_accuracy")
        if isinstance(val, (int, float)):
            self.val_accuracy = float(val)
            if self.best_val is None or val >= self.best_val:
                self.best_val, self.best_step = float(val), int(rec.get("val_step") or step)

    @property
    def started(self) -> bool:
        return self.t_last is not None

    @property
    def done(self) -> bool:
        return self.total is not None and self.step >= self.total

    def eta(self) -> float | None:
        if self.total is None or self.t_first is None or self.t_last is None or self.step <= self.step_first:
            return None
        rate = (self.step - self.step_first) / max(self.t_last - self.t_first, 1e-9)
        return (self.total - self.step) / rate

    def _losses(self) -> str:
        if self.loss is None:
            return ""
        # a teacher's one task is its whole completion: "loss 0.10 (answer 0.10)" said it twice
        parts = " ".join(f"{k} {v:.2f}" for k, v in self.losses.items()) if self.scores_answers else ""
        return f" loss {self.loss:.3f}" + (f" ({parts})" if parts else "")

    @property
    def scores_answers(self) -> bool:
        """False for a bootstrapped teacher: its loop's validation scores the student's answer
        task (one token on two problems), which says nothing of a CoT teacher; not shown."""
        return not self.label.startswith(BOOTSTRAP_LABEL)

    def status(self) -> str:
        if not self.started:
            return f"{self.label} starting"
        total = self.total if self.total is not None else "?"
        val = f" val {self.val_accuracy:.3f}" if self.val_accuracy is not None and self.scores_answers else ""
        eta = self.eta()
        return f"{self.label} step {self.step}/{total}{self._losses()}{val}" + (
            f" ETA {format_seconds(eta)}" if eta is not None else "")

    def done_line(self) -> str:
        start = self.t_start or self.t_first
        took = format_seconds(self.t_last - start) if start and self.t_last else "?"
        total = self.total if self.total is not None else "?"
        best = (f"; best validation accuracy {self.best_val:.3f} at step {self.best_step}"
                if self.best_val is not None and self.scores_answers else "")
        return f"training {self.label}: step {self.step}/{total} in {took};{self._losses()}{best}"


@dataclass
class ProgressState:
    """Everything the console shows right now: generation per teacher and trainings."""

    teachers: dict[str, TeacherProgress] = field(default_factory=dict)
    trainings: dict[str, TrainingProgress] = field(default_factory=dict)

    def status(self, now: float) -> str:
        """One line: every training started and not finished, then every teacher still generating."""
        running = [t for t in self.trainings.values() if not t.reported_done]
        finished = sum(t.reported_done for t in self.trainings.values())
        parts = [t.status() for t in running if t.started]
        # engines start once the teachers they serve are trained: say so while bootstraps run
        booting = any(t.label.startswith(BOOTSTRAP_LABEL) for t in running)
        waiting = "waiting for bootstrapped teachers" if booting else "engine starting"
        parts += [t.status(now, waiting) for t in self.teachers.values() if not t.done]
        starting = sum(not t.started for t in running)
        if starting and not any(t.started for t in running):
            parts.append(f"{starting} training(s) starting")
        if parts and len(self.trainings) > 1 and finished:
            parts.append(f"{finished}/{len(self.trainings)} trainings done")
        return " | ".join(parts)


# ----------------------------------------------------------------------------- end-of-job summary


def _fmt_acc(d: Mapping[str, Any]) -> str:
    return f"{float(d['accuracy']):.3f} ({d.get('correct')}/{d.get('total')})"


def _run_summary(report: Mapping[str, Any]) -> list[str]:
    from tinyllm_ray.store.agreement import format_agreement
    from tinyllm_ray.store.record_cache import format_cache_counts
    from tinyllm_ray.store.stats import TeacherStats, format_table

    lines = []
    if report.get("teachers"):
        stats = [TeacherStats.from_dict(d) for d in report["teachers"].values()]
        lines.append(format_table(stats))
        lines += format_agreement((report.get("generation") or {}).get("agreement"))
        lines += format_cache_counts((report.get("generation") or {}).get("record_cache"))
        lines += [f"warning: {w}" for st in stats for w in st.health_warnings()]
    tr = report.get("training") or {}
    if tr:
        best = tr.get("best_val_accuracy")
        losses = ", ".join(f"{k[len(LOSS_PREFIX):] if k != 'loss' else 'total'} {v['first']:.3f} -> {v['last']:.3f}"
                           for k, v in (tr.get("task_losses") or {}).items())
        lines.append(f"training: {tr.get('final_step')}/{tr.get('total_steps')} steps"
                     + (f", best validation accuracy {best:.3f} at step {tr.get('best_step')}" if best is not None
                        else "") + (f"; loss {losses}" if losses else ""))
    ev = report.get("evaluation") or {}
    if ev:
        lines.append("evaluation: " + ", ".join(f"{k} {_fmt_acc(v)}" for k, v in ev.items()))
    sec = report.get("seconds") or {}
    if sec:
        ov = report.get("overlap") or {}
        lines.append("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in sec.items())
                     + (f"; training started {ov['overlap_s']:.0f} s before generation ended (overlap)"
                        if ov.get("train_started_before_generation_ended") else ""))
    return lines


def _file_text(path: str | None) -> list[str]:
    if path and os.path.exists(path):
        with open(path) as f:
            return [f.read().rstrip("\n")]
    return []


def job_summary(command: str, report: Mapping[str, Any]) -> list[str]:
    """The short result a person reads after a job (tables, accuracies, seconds); paths come after it."""
    if command == "run":
        return _run_summary(report)
    if command == "generate":
        from tinyllm_ray.store.agreement import format_agreement
        from tinyllm_ray.store.record_cache import format_cache_counts
        from tinyllm_ray.store.stats import TeacherStats, format_table

        teachers = report.get("teachers") or {}
        head = (f"wrote {sum((report.get('shards_written') or {}).values())} shard(s), reused "
                f"{sum((report.get('shards_skipped') or {}).values())}, {report.get('run_tokens_per_s', 0):.0f} "
                f"tok/s in {report.get('wall_seconds', 0):.0f} s")
        return [head, format_table([TeacherStats.from_dict(d) for d in teachers.values()]),
                *format_agreement(report.get("agreement")), *format_cache_counts(report.get("record_cache"))]
    if command == "train":
        best = report.get("best_val_accuracy")
        return [f"training: {report.get('final_step')}/{report.get('total_steps')} steps in "
                f"{report.get('seconds', 0):.0f} s" + (f", best validation accuracy {best:.3f} at step "
                                                       f"{report.get('best_step')}" if best is not None else "")]
    if command == "tune":
        errors = [f"trial error: {e}" for e in report.get("errors") or []]
        return _file_text(report.get("results_md")) + errors
    if command in ("compare", "demo"):
        failed = [f"{k} failed: {v}" for k, v in (report.get("failed") or {}).items()]
        return _file_text((report.get("paths") or {}).get("table")) + failed
    if command == "eval" and "accuracy" in report:
        return [f"accuracy {_fmt_acc(report)}" + (f" on {report['split']}" if report.get("split") else "")]
    return []
