"""Train on rationales while the teachers are still writing them.

Streaming uses the batch path's slice loader (``student/data.py``) in its waiting mode:
generation writes shard *k* of every teacher for the same examples (the train split cut
into fixed slices), and a shard is visible only once committed. The training dataset is
one Ray Data row per slice, mapped by a task that **waits** until slice *k* is committed
for every teacher (``RationaleStore.wait_for_shard``: a deadline, and an immediate stop
with the generation's own error when it failed), then builds that slice's task groups.
Ray Data's streaming executor runs those tasks as the trainer pulls, so the first
optimizer step happens as soon as the first slice is complete for all teachers, not
after the last.

Limits (documented, checked): joint schedule only (two-stage training needs every
self-evaluation before the CoT stage starts), and group counts are computed up front
from the dataset, which is what lets the trainer size its schedule before any rationale
exists.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from tinyllm_ray.errors import DataError, StreamingError
from tinyllm_ray.store.layout import num_shards

if TYPE_CHECKING:
    from tinyllm_ray.config import JobConfig
    from tinyllm_ray.data.schema import MCQRecord
    from tinyllm_ray.student.data import StudentData
    from tinyllm_ray.student.tasks import TaskPlan

__all__ = ["slice_group_counts", "streaming_student_data"]


def slice_group_counts(records: Sequence[MCQRecord], shard_size: int, plan: TaskPlan) -> int:
    """Groups the streaming dataset will yield, known before any rationale exists.

    Groups are built per slice by the one builder, so a question repeated in two slices
    is two groups, exactly as the trainer will see them. Rationale rows join their
    question's group; self-evaluation groups (one per judged CoT) cannot be known up
    front and are not counted.
    """
    from tinyllm_ray.student.tasks import build_task_groups

    return sum(len(build_task_groups(records[start:start + shard_size], [], plan).groups)
               for start in range(0, len(records), shard_size))


def streaming_student_data(
    cfg: JobConfig,
    train_records: Sequence[MCQRecord],
    validation_records: Iterable[MCQRecord],
    shard_size: int,
    *,
    fingerprint: str | None,
    poll_s: float = 0.25,
    timeout_s: float = 3600.0,
) -> StudentData:
    """A :class:`StudentData` whose training stage streams from a store being written.

    ``fingerprint``: the store manifest's ``data_hash`` of ``train_records`` (``run`` has just
    written it; None without teachers), which readers check the store against: not computed
    again here, since a served split is read through an actor.

    ``poll_s``: how often a waiting slice reader looks for its shard (one existence check
    per teacher, plus the failure marker). A quarter second keeps the first step close behind the first committed slice
    (at 1 s the wait alone averaged half a second of a demo's ~4 s of shard commits) and
    costs a dozen cheap requests a second per waiting reader on an object store.
    """
    from tinyllm_ray.store import RationaleStore
    from tinyllm_ray.student.data import StudentData, report_ignored, slice_dataset, validation_dataset
    from tinyllm_ray.student.tasks import TaskPlan

    plan = TaskPlan.from_config(cfg)
    if plan.num_stages != 1:
        raise StreamingError("streaming needs loss.schedule: joint (two_stage needs every self-evaluation "
                             "before the CoT stage); run `generate` then `train` instead")
    if not train_records:
        raise DataError("the train split is empty; nothing to distil")
    uri = cfg.runtime.resolved_store_uri if plan.teachers else None
    train = slice_dataset(plan, train_records, shard_size, uri, wait={"poll_s": poll_s, "timeout_s": timeout_s},
                          fingerprint=fingerprint)
    val, n_val = validation_dataset(cfg, validation_records)
    groups = slice_group_counts(train_records, shard_size, plan)
    stats = {"streaming": True, "slices": num_shards(len(train_records), shard_size), "shard_size": shard_size,
             "groups_per_stage": {0: groups}, "validation_rows": n_val, "store_uri": uri}
    if uri is not None:  # rows already in the store that this run leaves out (e.g. a dropped teacher)
        stats.update(report_ignored(plan, RationaleStore(uri).row_counts(None), uri))
    return StudentData(plan=plan, datasets={"train_stage0": train, "validation": val}, groups={0: groups},
                       stats=stats)
