"""Train on rationales while the teachers are still writing them.

The batch path (``student/data.py``) reads a finished store, groups globally and
shuffles. Streaming cannot wait for "finished", so it leans on the store's shard layout
instead: generation writes shard *k* of every teacher for the same examples (the train
split cut into fixed slices), and a shard is visible only once committed. The training
dataset is therefore one Ray Data row per shard index, mapped by a task that **waits**
until shard *k* is committed for every teacher, then builds that slice's task groups
(answer rows from the dataset + rationale rows from the store). Ray Data's streaming
executor runs those tasks as the trainer pulls, so the first optimizer step happens as
soon as the first slice is complete for all teachers, not after the last.

Limits (documented, checked): joint schedule only (two-stage training needs every
self-evaluation before the CoT stage starts), and group counts are computed up front
from the dataset, which is what lets the trainer size its schedule before any rationale
exists.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tinyllm_ray.errors import StreamingError

if TYPE_CHECKING:
    import ray.data

    from tinyllm_ray.config import JobConfig
    from tinyllm_ray.data.schema import MCQRecord
    from tinyllm_ray.student.data import StudentData

FAILED_MARKER = "GENERATION_FAILED"


def slice_group_counts(records: Sequence[MCQRecord], shard_size: int) -> int:
    """Groups the streaming dataset will yield: distinct question sources per slice.

    Groups are built per slice, so a question repeated in two slices is two groups,
    exactly as the trainer will see them.
    """
    from tinyllm_ray.student.tasks import format_source

    total = 0
    for start in range(0, len(records), shard_size):
        total += len({format_source(r.question, r.choices, r.context) for r in records[start:start + shard_size]})
    return total


def _wait_for_shard(store_uri: str, teachers: Sequence[str], shard: int, poll_s: float, timeout_s: float) -> dict:
    from tinyllm_ray.store.store import RationaleStore

    store = RationaleStore(store_uri)
    deadline = time.monotonic() + timeout_s
    while True:
        paths = {t: store.shard_path(t, "rationale", shard) for t in teachers}
        paths = {t: (p if store.has_file(p) else None) for t, p in paths.items()}
        if all(paths.values()):
            return paths
        if store.has_marker(FAILED_MARKER):
            raise StreamingError(f"generation failed before shard {shard} was written; see the job log")
        if time.monotonic() > deadline:
            missing = [t for t, p in paths.items() if not p]
            raise StreamingError(f"shard {shard} of teacher(s) {missing} not written after {timeout_s:.0f} s")
        time.sleep(poll_s)


def _load_slice(batch: dict[str, Any], *, cfg_json: dict, records: list[dict], shard_size: int,
                poll_s: float, timeout_s: float) -> Any:
    """Ray Data UDF: shard indices -> the task groups of those slices (waits for the store)."""
    import pyarrow as pa

    from tinyllm_ray.config import JobConfig
    from tinyllm_ray.data.schema import MCQRecord
    from tinyllm_ray.store.store import RationaleStore
    from tinyllm_ray.student.data import _group_schema
    from tinyllm_ray.student.tasks import TaskPlan, answer_task_rows, group_task_rows, store_rows_to_task_rows

    cfg = JobConfig.model_validate(cfg_json)
    plan = TaskPlan.from_config(cfg)
    store_uri = cfg.runtime.resolved_store_uri
    store = RationaleStore(store_uri)
    out: list[dict[str, Any]] = []
    for shard in batch["id"]:
        shard = int(shard)
        recs = [MCQRecord.from_dict(r) for r in records[shard * shard_size:(shard + 1) * shard_size]]
        rows = answer_task_rows(recs, plan)
        if plan.teachers:
            paths = _wait_for_shard(store_uri, plan.teachers, shard, poll_s, timeout_s)
            import pyarrow.parquet as pq

            for path in paths.values():
                rows += store_rows_to_task_rows(pq.read_table(path, filesystem=store.fs).to_pylist(), plan)
        out += group_task_rows(rows, plan.label_source)
    return pa.Table.from_pylist(out, schema=_group_schema())


def streaming_student_data(
    cfg: JobConfig,
    train_records: Sequence[MCQRecord],
    validation_records: Sequence[MCQRecord],
    shard_size: int,
    *,
    poll_s: float = 1.0,
    timeout_s: float = 3600.0,
) -> StudentData:
    """A :class:`StudentData` whose training stage streams from a store being written."""
    import ray.data

    from tinyllm_ray.student.data import StudentData
    from tinyllm_ray.student.tasks import TaskPlan

    plan = TaskPlan.from_config(cfg)
    if plan.num_stages != 1:
        raise StreamingError("streaming needs loss.schedule: joint (two_stage needs every self-evaluation "
                             "before the CoT stage); run `generate` then `train` instead")
    if not train_records:
        raise StreamingError("the train split is empty; nothing to distil")
    n_shards = -(-len(train_records) // shard_size)
    train: ray.data.Dataset = ray.data.range(n_shards, override_num_blocks=n_shards).map_batches(
        # Slice readers mostly wait for the store: few at a time, little CPU each, so they
        # never hold the CPUs the teachers' engines still need to start.
        _load_slice, batch_size=1, batch_format="numpy", num_cpus=0.05, concurrency=2,
        fn_kwargs={"cfg_json": cfg.model_dump(mode="json"), "records": [r.to_dict() for r in train_records],
                   "shard_size": shard_size, "poll_s": poll_s, "timeout_s": timeout_s},
    )
    val = list(validation_records)
    if cfg.train.eval_limit:
        val = val[: cfg.train.eval_limit]
    if not val:
        raise StreamingError("the validation split is empty; model selection needs it (never the test split)")
    groups = slice_group_counts(train_records, shard_size)
    return StudentData(
        plan=plan,
        datasets={"train_stage0": train, "validation": ray.data.from_items([r.to_dict() for r in val])},
        groups={0: groups},
        stats={"streaming": True, "slices": n_shards, "shard_size": shard_size, "groups_per_stage": {0: groups},
               "validation_rows": len(val), "store_uri": cfg.runtime.resolved_store_uri},
    )


def mark_generation_failed(store_uri: str, message: str) -> None:
    """Tell waiting slice readers to stop waiting (they raise instead of timing out)."""
    from tinyllm_ray.store.store import RationaleStore

    RationaleStore(store_uri).write_marker(FAILED_MARKER, message)


def clear_generation_failed(store_uri: str) -> None:
    from tinyllm_ray.store.store import RationaleStore

    RationaleStore(store_uri).remove_marker(FAILED_MARKER)
