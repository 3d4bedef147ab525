"""Retrying the failed CoTs of committed shards: which to regenerate, and how a shard is rewritten.

Why rewrite a committed shard instead of regenerating it: a batch given up after its
engine died (``faults.py``) leaves its rows in the shard as ``failed``; the next run must
generate exactly those (example, sample) CoTs again — for a 10-million-prompt job, not the
other hundreds of the shard — and store each CoT once.

What is retried is what the shard's commit file says failed (``TeacherStats.failed_cots``
in its footer), never the ``failed`` file: that file is written before the commit point,
so after a run killed while rewriting a shard it may already list fewer rows. The merge
below removes every row of a retried CoT (rationale, self-evaluations, failed rows) from
what the shard files hold *now* and adds the new outputs, so rewriting twice gives the
same shard (exactly once), and the statistics subtract exactly what the commit counted
for those CoTs (a failure and, per example, its prompt) before adding the new counts.
Failed self-evaluations of a CoT that itself succeeded are not retried (no producer
writes them today). Pure: no Ray, no vLLM.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tinyllm_ray.store.stats import TeacherStats
from tinyllm_ray.teachers.records import ShardRecords, failure_reason

#: example id -> sample indices of its failed CoTs (one shard)
RetrySet = dict[str, set[int]]


def retry_set(stats: TeacherStats) -> RetrySet:
    """The CoTs a committed shard's statistics record as failed."""
    out: RetrySet = {}
    for example_id, sample in stats.failed_cots:
        out.setdefault(example_id, set()).add(int(sample))
    return out


def _in(row: Mapping[str, Any], retry: RetrySet) -> bool:
    return int(row["sample_idx"]) in retry.get(row["example_id"], ())


def retried_outputs(raw: Sequence[Mapping[str, Any]], retry: RetrySet) -> list[Mapping[str, Any]]:
    """The raw outputs of a retry that belong to failed CoTs (a prompt yields all ``n`` samples again)."""
    return [r for r in raw if _in(r, retry)]


def merge_retried_shard(
    retry: RetrySet,
    new: ShardRecords,
    old_stats: TeacherStats,
    old_rationale: Sequence[Mapping[str, Any]],
    old_self_eval: Sequence[Mapping[str, Any]],
    old_failed: Sequence[Mapping[str, Any]],
) -> ShardRecords:
    """The shard after a retry: its current rows minus every row of a retried CoT, plus ``new``.

    ``new`` holds the records built from :func:`retried_outputs` only; ``old_stats`` are the
    committed footer statistics the retry set came from.
    """
    stats = TeacherStats.from_dict(old_stats.to_dict())
    rs = stats.kind("rationale")
    rs.failed -= sum(len(s) for s in retry.values())
    rs.prompts -= len(retry)  # each retried example counted its prompt once; the new records count it again
    shards = stats.shards
    stats.merge(new.stats)
    stats.shards = shards
    stats.failed_cots = list(new.stats.failed_cots)
    stats.check()
    keep = lambda rows: [dict(r) for r in rows if not _in(r, retry)]
    failed = keep(old_failed) + list(new.failed)
    # Failure reasons are recounted from the shard's failed rows, which are complete after the
    # merge (also over a half-rewritten failed file), so they always match the rows stored.
    for kind in ("rationale", "self_eval"):
        stats.kind(kind).failed_reasons = {}
    for row in failed:
        k = stats.kind("rationale" if int(row["eval_idx"]) < 0 else "self_eval")
        reason = failure_reason(str(row["error"]))
        k.failed_reasons[reason] = k.failed_reasons.get(reason, 0) + 1
    return ShardRecords(
        rationale=keep(old_rationale) + list(new.rationale),
        self_eval=keep(old_self_eval) + list(new.self_eval),
        failed=failed,
        stats=stats,
    )
