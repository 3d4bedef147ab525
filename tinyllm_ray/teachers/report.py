"""What a generation run hands back: each persisted shard, the final report, the error.

Kept apart from the pipeline so that consumers (the CLI, a trainer streaming shards)
import these plain types without the machinery that produces them. Pure: no Ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tinyllm_ray.errors import GenerationError  # noqa: F401 (re-exported)
from tinyllm_ray.store.agreement import format_agreement
from tinyllm_ray.store.record_cache import format_cache_counts
from tinyllm_ray.store.stats import TeacherStats, format_table

# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ShardWritten:
    """One shard persisted in the store (what the streaming iterator yields)."""

    teacher: str
    shard: int
    path: str
    rationales: int
    self_evals: int
    stats: TeacherStats  # the shard as committed
    retried: bool = False  # an earlier run's shard whose failed CoTs this run generated again
    run_stats: TeacherStats | None = None  # what this run generated for it (None: the whole shard)
    cached_output_tokens: int = 0  # of those, output tokens served from the record cache (not generated)

    @property
    def run_output_tokens(self) -> int:
        """Tokens the engines generated for this shard in this run (record-cache hits excluded)."""
        return (self.run_stats or self.stats).output_tokens - self.cached_output_tokens


@dataclass
class GenerationReport:
    """Outcome of :func:`run_generation`.

    ``teachers`` are totals over the whole store (this run and earlier ones);
    ``run_*`` fields describe this run only.
    """

    store_uri: str
    split: str
    shard_size: int
    num_shards: int
    teachers: dict[str, TeacherStats]
    shards_written: dict[str, int]
    shards_skipped: dict[str, int]
    run_output_tokens: dict[str, int]
    wall_seconds: float
    accelerator: str = "cpu"
    notes: list[str] = field(default_factory=list)
    cancelled: bool = False  # GenerationRun.cancel() was called: shards may be missing (rerun to finish)
    shards_retried: dict[str, int] = field(default_factory=dict)  # committed shards whose failed CoTs were retried
    #: per teacher with a fault this run: engine restarts, batches retried / given up (faults.FaultLedger.summary)
    faults: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: cross-teacher agreement of the whole store (``store.agreement.agreement_stats``); None with one teacher
    agreement: dict[str, Any] | None = None
    #: per teacher that served prompts: batches, the feed's window, the most batches ever unanswered, rounds
    #: and batches_per_round (``EnginePool.feed``: what bounds the prompts held by driver and object store)
    feed: dict[str, dict[str, int]] = field(default_factory=dict)
    #: per teacher: prompts served from the record cache (``hits``) and generated (``misses``); None: cache off
    record_cache: dict[str, dict[str, int]] | None = None

    @property
    def run_tokens_per_s(self) -> float:
        """Generated tokens of this run per wall-clock second (all teachers)."""
        tok = sum(self.run_output_tokens.values())
        return tok / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def summary(self) -> str:
        head = (
            f"rationale store: {self.store_uri}\n"
            f"split {self.split}: {self.num_shards} shards of <= {self.shard_size} examples per teacher; "
            f"this run wrote {sum(self.shards_written.values())} shards, skipped "
            f"{sum(self.shards_skipped.values())} finished ones, {sum(self.run_output_tokens.values())} tokens "
            f"in {self.wall_seconds:.1f}s ({self.run_tokens_per_s:.0f} tok/s wall)"
            + ("; cancelled before the end (rerun to finish)" if self.cancelled else "")
        )
        lines = [head, format_table(self.teachers.values()), *format_agreement(self.agreement)]
        lines += format_cache_counts(self.record_cache)
        for name, f in self.feed.items():
            if f.get("rounds", 0) > 1:  # each round a Ray Data execution with its own engines
                lines.append(f"teacher {name}: {f['batches']} batches served in {f['rounds']} rounds of <= "
                             f"{f['batches_per_round']} (teachers.<i>.batches_per_round)")
        for name, n in self.shards_retried.items():
            if n:
                lines.append(f"teacher {name}: failed CoTs of {n} earlier shard(s) generated again")
        for name, f in self.faults.items():
            if f.get("restarts") or f.get("failed_batches"):
                lines.append(
                    f"WARNING teacher {name}: engine restarted {f['restarts']} time(s) by Ray; "
                    f"{f['retried_batches']} batch(es) retried, {f['failed_batches']} given up "
                    f"({f['failed_rows']} CoTs stored as failed; the next run retries them); last: {f['last_reason']}")
        failed = {n: st.failed for n, st in self.teachers.items() if st.failed}
        if failed:
            lines.append(f"failed generations in the store (rerun to retry): {failed}")
        for name, st in self.teachers.items():
            dropped = sum(st.dropped.values())
            if st.outputs and (st.kept == 0 or dropped * 2 >= st.outputs):
                top = max(st.dropped, key=lambda r: st.dropped[r])
                lines.append(
                    f"WARNING teacher {name}: {dropped}/{st.outputs} outputs dropped (mostly {top}); "
                    f"examples in stats/{name}.json under drop_examples"
                )
            lines += [f"WARNING {w}" for w in st.health_warnings()]
            if st.api is not None:
                a = st.api
                lines.append(f"teacher {name} (API): {a['requests']} requests, {a['retries']} retries, "
                             f"{a['prompt_tokens']} prompt + {a['output_tokens']} output tokens, cost {a['cost']:.4f}"
                             + (f", failed: {a['failed_reasons']}" if a["failed_reasons"] else ""))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "store_uri": self.store_uri, "split": self.split, "shard_size": self.shard_size,
            "num_shards": self.num_shards, "accelerator": self.accelerator,
            "teachers": {k: v.to_dict() for k, v in self.teachers.items()},
            "shards_written": self.shards_written, "shards_skipped": self.shards_skipped,
            "run_output_tokens": self.run_output_tokens, "wall_seconds": round(self.wall_seconds, 3),
            "run_tokens_per_s": round(self.run_tokens_per_s, 3), "notes": list(self.notes),
            "cancelled": self.cancelled, "shards_retried": self.shards_retried, "faults": self.faults,
            "agreement": self.agreement, "feed": self.feed, "record_cache": self.record_cache,
        }
