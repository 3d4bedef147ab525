"""Teacher fault isolation: bounded retries of a batch whose engine died, and when to give up.

Why a ledger of our own on top of Ray's actor fault tolerance: Ray restarts a dead actor
(``max_restarts``, its constructor runs again: a fresh vLLM engine) and re-sends the task
it held (``max_task_retries``: at-least-once), which is exactly what a killed or
out-of-memory teacher needs. What Ray cannot do for us (read in Ray 2.60
``ray/data/_internal/execution/operators/actor_pool_map_operator.py``):

* bound the retries *per batch* and then keep going: a task whose retries are used up
  fails the whole dataset (``DataContext.max_errored_blocks`` would drop the block
  silently instead, without its reason);
* bound the restarts of a teacher that can never work: with a finite ``max_restarts`` an
  actor that dies once more stays dead *in* Ray Data's fixed-size pool and the remaining
  batches wait forever; with ``-1`` (Ray Data's default) a crash-looping engine restarts
  forever.

So actors run with Ray's unbounded restarts and task retries, and every actor reports to
one small per-run :class:`FaultLedger` actor: when it starts (a restart has
``was_current_actor_reconstructed``), when it begins and ends a batch, and an engine
error's reason before it exits to be restarted. From that the ledger decides, purely:

* a batch begun ``max_batch_retries + 1`` times without ending (each attempt's engine
  died) is given up: the next attempt returns its rows as *failed* with the reason
  instead of generating, so the job goes on and a rerun retries exactly those rows;
* more than ``max_restarts`` engine restarts in a row without any batch finishing mean
  the teacher cannot work: the restarted actor refuses every batch with one line naming
  the teacher and the last death's reason, which ends the job (``GenerationError``).

Also here: :class:`FaultInjection`, the test-only hook (``TINYLLM_FAULT_INJECT``, read on
the driver and shipped in the engine spec) that makes a real engine actor kill itself
(``SIGKILL``) or raise an engine error in the middle of a chosen batch. Pure: no Ray.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

from tinyllm_ray.errors import ConfigError

#: Driver environment variable of the fault-injection hook (tests and ``benchmarks/chaos.py`` only).
FAULT_ENV = "TINYLLM_FAULT_INJECT"

FaultAction = Literal["kill", "raise"]


@dataclass(frozen=True)
class FaultInjection:
    """Make the engine of ``teacher`` fail in the middle of batch ``batch`` (every batch: None).

    ``action``: ``kill`` sends SIGKILL to the actor's own process (what the OOM killer or a
    lost node does); ``raise`` raises an engine error inside the batch (what a vLLM
    ``EngineDeadError`` does). Only attempts ``<= times`` of a batch fail, so ``times=1``
    is a transient fault and a large ``times`` a batch that can never be generated.
    """

    teacher: str
    batch: int | None = 0
    action: FaultAction = "kill"
    times: int = 1

    @classmethod
    def parse(cls, text: str) -> FaultInjection:
        """``teacher=qwen,batch=1,action=kill,times=1`` (``batch=*``: every batch)."""
        fields: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            if not sep or key not in ("teacher", "batch", "action", "times"):
                raise ConfigError(
                    f"{FAULT_ENV}: bad part {part!r}; use teacher=NAME,batch=N|*,action=kill|raise,times=N")
            fields[key] = value
        if "teacher" not in fields:
            raise ConfigError(f"{FAULT_ENV}: name the teacher, e.g. teacher=qwen,batch=1")
        if fields.get("action", "kill") not in ("kill", "raise"):
            raise ConfigError(f"{FAULT_ENV}: action must be kill or raise, not {fields['action']!r}")
        batch = fields.get("batch", "0")
        return cls(teacher=fields["teacher"], batch=None if batch == "*" else int(batch),
                   action=fields.get("action", "kill"), times=int(fields.get("times", 1)))

    @classmethod
    def from_env(cls, teacher: str) -> FaultInjection | None:
        """The first hook for ``teacher`` from the driver's environment, or None (see :class:`FaultSet`)."""
        found = FaultSet.from_env(teacher)
        return found.faults[0] if found else None

    def fires(self, batch: int, attempt: int) -> bool:
        """Whether attempt ``attempt`` (1-based) of batch ``batch`` must fail."""
        return (self.batch is None or self.batch == batch) and attempt <= self.times


@dataclass(frozen=True)
class FaultSet:
    """Several injected faults of one teacher (``;``-separated specs in ``TINYLLM_FAULT_INJECT``).

    Why: a chaos round injects more than one fault per run (a kill in one batch, an
    engine error in another); the first spec that fires at a batch attempt wins.
    """

    faults: tuple[FaultInjection, ...]

    @classmethod
    def from_env(cls, teacher: str) -> FaultSet | None:
        """The specs for ``teacher`` from the driver's environment, or None (the normal case)."""
        text = os.environ.get(FAULT_ENV, "").strip()
        faults = tuple(f for f in (FaultInjection.parse(p) for p in text.split(";") if p.strip())
                       if f.teacher == teacher)
        return cls(faults) if faults else None

    def firing(self, batch: int, attempt: int) -> FaultInjection | None:
        """The fault that fails attempt ``attempt`` of ``batch``, or None."""
        return next((f for f in self.faults if f.fires(batch, attempt)), None)


@dataclass
class FaultLedger:
    """Per-run record of one teacher's engine starts, batch attempts and deaths (the policy above).

    Run as a Ray actor (``num_cpus=0``) by ``serving.EnginePool``; every method is cheap
    and deterministic, so the policy is unit-tested without Ray.
    """

    teacher: str
    max_restarts: int
    max_batch_retries: int
    starts: int = 0
    restarts: int = 0
    consecutive: int = 0  # restarts since a batch last finished
    retried_batches: int = 0  # batches that finished after at least one death
    failed_batches: int = 0  # batches given up (their rows stored as failed)
    failed_rows: int = 0
    engine_errors: int = 0
    last_reason: str | None = None
    _attempts: dict[int, int] = field(default_factory=dict)
    _deaths: dict[int, int] = field(default_factory=dict)
    _open: dict[int, int] = field(default_factory=dict)  # batch -> pid of the attempt still running
    _errors: dict[int, str] = field(default_factory=dict)  # batch -> engine error of its last attempt
    _actors: dict[str, Any] = field(default_factory=dict)  # actor id -> handle, killed when the run ends

    def engine_started(self, reconstructed: bool, pid: int, actor: Any = None, actor_id: str = "") -> str | None:
        """An actor's constructor ran; returns why it must refuse all work, or None.

        A restarted actor (``reconstructed``) is one more death in a row; beyond
        ``max_restarts`` the teacher is given up. ``actor`` (its handle) is kept so the
        pool can kill it when the run ends: Ray Data only drops its references, and a
        restartable actor whose results are still referenced would keep its engine.
        """
        if actor is not None:
            self._actors[actor_id] = actor
        self.starts += 1
        if not reconstructed:
            return None
        self.restarts += 1
        self.consecutive += 1
        if self.consecutive > self.max_restarts:
            return (f"teacher {self.teacher!r}: its engine died {self.consecutive} times in a row without finishing a "
                    f"batch (teachers.<i>.max_restarts={self.max_restarts}); last: {self._death_reason()}. "
                    "Finished shards are kept; fix the cause and rerun to resume")
        return None

    def begin(self, batch: int, pid: int) -> tuple[int, str | None]:
        """Attempt number of ``batch`` (1-based), and the reason to give it up (None: generate it)."""
        if batch in self._open:  # the previous attempt never ended: its engine died
            self._deaths[batch] = self._deaths.get(batch, 0) + 1
            pid_then = self._open.pop(batch)
            self.last_reason = self._errors.pop(batch, None) or self._process_death(batch, pid_then)
        attempt = self._attempts[batch] = self._attempts.get(batch, 0) + 1
        deaths = self._deaths.get(batch, 0)
        if deaths > self.max_batch_retries:
            self.failed_batches += 1
            return attempt, (f"teacher engine died on {deaths} attempt(s) at this batch (max_batch_retries="
                             f"{self.max_batch_retries}): {self.last_reason}")
        self._open[batch] = pid
        return attempt, None

    def engine_error(self, batch: int, reason: str) -> None:
        """The engine raised while generating ``batch``; its actor exits next, to be restarted."""
        self.engine_errors += 1
        self._errors[batch] = reason
        self.last_reason = reason

    def end(self, batch: int) -> None:
        """``batch`` was generated: the teacher works, the run of deaths is over."""
        self._open.pop(batch, None)
        self.consecutive = 0
        if self._deaths.get(batch):
            self.retried_batches += 1

    def actors(self) -> list[Any]:
        """Handles of every engine actor of the run (restarted ones once)."""
        return list(self._actors.values())

    def gave_up_rows(self, rows: int) -> None:
        self.failed_rows += rows

    def summary(self) -> dict[str, Any]:
        """What the run report shows for this teacher (``GenerationReport.faults``)."""
        return {"restarts": self.restarts, "retried_batches": self.retried_batches,
                "failed_batches": self.failed_batches, "failed_rows": self.failed_rows,
                "engine_errors": self.engine_errors, "last_reason": self.last_reason}

    def _process_death(self, batch: int, pid: int) -> str:
        return (f"the engine's process (pid {pid}) died during batch {batch} (killed, crashed or out of memory: "
                "the Ray worker log of that pid says which)")

    def _death_reason(self) -> str:
        if self._open:
            batch, pid = max(self._open.items())
            return self._errors.get(batch) or self._process_death(batch, pid)
        return self.last_reason or "the engine's process died while idle"


def merge_fault_summaries(a: dict[str, Any] | None, b: dict[str, Any]) -> dict[str, Any]:
    """Add ledger summaries of two runs of one teacher's pool (counts add, the later reason wins)."""
    if not a:
        return dict(b)
    out = {k: a.get(k, 0) + b.get(k, 0) for k in ("restarts", "retried_batches", "failed_batches", "failed_rows",
                                                   "engine_errors")}
    out["last_reason"] = b.get("last_reason") or a.get("last_reason")
    return out
