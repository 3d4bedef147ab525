"""Rationale store + dataset -> Ray Data datasets of task groups, one per training stage.

One slice loader serves batch ``train`` and streaming ``run``. The store is written in
fixed slices: shard *k* of every teacher holds the outputs for examples ``[k*S, (k+1)*S)``
of the train split (S = the manifest's ``shard_size``). The training dataset is
``ray.data.range(num_slices)`` mapped by one UDF that reads shard *k* of each configured
teacher (``RationaleStore.read_shard``) and calls the pure
:func:`~tinyllm_ray.student.tasks.build_task_groups` on that slice's records. Why slices:
every row of a question lives in one slice, so groups are built where the data is read,
with no cluster-wide groupby, and the same code reads a finished store (batch) or waits
for each slice of a store still being written (streaming, ``student/streaming.py``).

Batch checks happen before any training worker starts (``student/store_checks.py``): the
store exists, every configured teacher has rows and every slice committed, the train
split is the one generated from, no target is empty; then the slices are built, shuffled
and materialised, split per stage, and a length pre-flight tokenizes every group with the
training layout (counting truncation, or raising ``TruncationError`` when
``student.truncation: error``). Answer-only runs (no teachers) need no store.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tinyllm_ray.errors import ConfigError, DataError, TaskDataError, find_user_error
from tinyllm_ray.store.layout import num_shards
from tinyllm_ray.student.store_checks import ignored_store_rows, open_training_store, scan_store_targets
from tinyllm_ray.student.tasks import GROUP_SCHEMA, STORE_COLUMNS, TaskGroups, TaskPlan, build_task_groups

if TYPE_CHECKING:
    import pyarrow as pa
    import ray.data

    from tinyllm_ray.config import JobConfig
    from tinyllm_ray.data.schema import MCQRecord
    from tinyllm_ray.data.split_server import ServedSplit
    from tinyllm_ray.store import RationaleStore
    from tinyllm_ray.student.collate import TaskCollator

log = logging.getLogger(__name__)

__all__ = [
    "STREAM_READERS",
    "STREAM_READER_CPUS",
    "StudentData",
    "cross_teacher_summary",
    "length_preflight",
    "load_slice",
    "prepare_student_data",
    "report_ignored",
    "slice_dataset",
    "steps_per_stage",
    "validation_dataset",
]

#: Streaming slice readers: this many at a time, each reserving this many CPUs (they mostly
#: wait for the store; ``jobs/run.py`` counts them when it checks that training can start
#: while the teachers hold their resources).
STREAM_READERS = 2
STREAM_READER_CPUS = 0.05
#: Batch slice reads: at most this many Ray tasks (each reads several slices), so a large
#: store does not become thousands of tiny tasks on a small machine.
MAX_BATCH_READ_TASKS = 16


@dataclass
class StudentData:
    """The datasets a training run consumes, plus what the driver learned building them.

    ``datasets``: ``train_stage<k>`` (groups of stage k, :data:`GROUP_SCHEMA`) and
    ``validation`` (MCQ records as rows, evaluated by answer-only generation).
    ``groups[k]`` counts the groups (questions, or CoTs for self-evaluation) of stage k.
    ``stats`` includes ``ignored_teachers`` / ``ignored_kinds``: store rows left out.
    """

    plan: TaskPlan
    datasets: dict[str, ray.data.Dataset]
    groups: dict[int, int]
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def stages(self) -> list[int]:
        return sorted(self.groups)


# --------------------------------------------------------------------------- the slice loader


def load_slice(store: RationaleStore | None, plan: TaskPlan, records: Sequence[MCQRecord], shard: int) -> TaskGroups:
    """The task groups of one slice: ``records`` (examples of slice ``shard``) + shard ``shard``
    of every configured teacher, for the kinds the plan trains. ``store`` None: answers only."""
    rows: list[dict[str, Any]] = []
    if store is not None:
        for teacher in plan.teachers:
            for kind in plan.kinds_of(teacher):
                rows += store.read_shard(teacher, kind, shard, columns=STORE_COLUMNS).to_pylist()
    return build_task_groups(records, rows, plan)


def _slice_records(records: list[dict] | ServedSplit, start: int, stop: int) -> list[MCQRecord]:
    """Examples ``[start, stop)`` of the split a slice reader was given (a list, or a served split)."""
    from tinyllm_ray.data.schema import MCQRecord

    if isinstance(records, list):
        return [MCQRecord.from_dict(r) for r in records[start:stop]]
    return records[start:stop]  # one call to its SplitServer actor


def _load_slices(batch: dict[str, Any], *, plan: dict[str, Any], store_uri: str | None,
                 records: list[dict] | ServedSplit, shard_size: int, wait: dict[str, float] | None,
                 fingerprint: str | None) -> pa.Table:
    """Ray Data UDF: slice indices -> the task groups of those slices.

    ``wait`` (streaming): block until each slice is committed for every teacher, and check
    once the manifest exists that it was generated from these examples (``fingerprint``).
    """
    import pyarrow as pa

    from tinyllm_ray.store import RationaleStore
    from tinyllm_ray.student.store_checks import check_same_examples

    task_plan = TaskPlan.from_dict(plan)
    store = RationaleStore(store_uri) if store_uri else None
    tables = []
    for shard in (int(s) for s in batch["id"]):
        recs = _slice_records(records, shard * shard_size, (shard + 1) * shard_size)
        if store is not None and wait is not None:
            store.wait_for_shard(task_plan.teachers, shard, **wait)
            manifest = store.read_manifest()
            if fingerprint is not None and manifest is not None:
                check_same_examples(store.uri, manifest, fingerprint, len(records))
        tables.append(load_slice(store, task_plan, recs, shard).table())
    return pa.concat_tables(tables) if tables else GROUP_SCHEMA.empty_table()


def slice_dataset(plan: TaskPlan, train_records: Sequence[MCQRecord], shard_size: int, store_uri: str | None, *,
                  wait: dict[str, float] | None = None, fingerprint: str | None = None) -> ray.data.Dataset:
    """``ray.data.range(num_slices)`` mapped by the slice loader (lazy; nothing runs yet).

    ``train_records``: a :class:`~tinyllm_ray.data.split_server.ServedSplit` (``run``: each
    reader fetches its slice from the split's actor, nothing per example is shipped) or
    any sequence (shipped whole in the readers' arguments: fine for a split that fits).
    Batch (``wait`` None): every slice is committed, so slices are read a few per task, as
    fast as the CPUs allow. Streaming (``wait={"poll_s", "timeout_s"}``): one slice per
    task, few at a time, little CPU each: slice readers mostly wait for the store, and must
    never hold the CPUs the teachers' engines still need to start.
    """
    import ray.data

    from tinyllm_ray.data.split_server import ServedSplit

    n = num_shards(len(train_records), shard_size)
    records = train_records if isinstance(train_records, ServedSplit) else [r.to_dict() for r in train_records]
    kwargs = {"plan": plan.to_dict(), "store_uri": store_uri, "records": records,
              "shard_size": shard_size, "wait": wait, "fingerprint": fingerprint}
    if wait is None:
        return ray.data.range(n, override_num_blocks=min(n, MAX_BATCH_READ_TASKS)).map_batches(
            _load_slices, batch_size=None, batch_format="numpy", fn_kwargs=kwargs)
    return ray.data.range(n, override_num_blocks=n).map_batches(
        _load_slices, batch_size=1, batch_format="numpy", num_cpus=STREAM_READER_CPUS, concurrency=STREAM_READERS,
        fn_kwargs=kwargs)


def validation_dataset(cfg: JobConfig, records: Iterable[MCQRecord]) -> tuple[ray.data.Dataset, int]:
    """Validation records (limited by ``train.eval_limit``) as a dataset, and their count.

    ``records`` may be an iterator over the split (``run``): no more than the limit is read.
    """
    import itertools

    import ray.data

    val = list(itertools.islice(records, cfg.train.eval_limit or None))
    if not val:
        raise DataError("the validation split is empty; model selection needs it (never the test split)")
    return ray.data.from_items([r.to_dict() for r in val]), len(val)


def report_ignored(plan: TaskPlan, row_counts: dict[tuple[str, str], int], uri: str) -> dict[str, dict[str, int]]:
    """Count (and log) the store rows this run leaves out; returned for ``StudentData.stats``."""
    ignored = ignored_store_rows(plan, row_counts)
    if ignored.ignored_teachers:
        log.info("rationale store %s: %d row(s) of teacher(s) not in the config are left out: %s", uri,
                 sum(ignored.ignored_teachers.values()), dict(ignored.ignored_teachers))
    if ignored.ignored_kinds:
        log.info("rationale store %s: %s row(s) left out (self-evaluations of teachers that do not self-evaluate)", uri,
                 dict(ignored.ignored_kinds))
    return {"ignored_teachers": dict(ignored.ignored_teachers), "ignored_kinds": dict(ignored.ignored_kinds)}


def cross_teacher_summary(store: RationaleStore, plan: TaskPlan) -> dict[str, dict[str, int]]:
    """What ``filter.cross_teacher`` leaves out (``cross_teacher_dropped``, by teacher) or weights
    (``cross_teacher_weights``, CoTs by ``<teacher>@<share>``) over the store's committed rows, logged.

    The slices apply the same rule (``cross_teacher_stats`` is the builder's own); this
    reads four columns of the store on the driver, so the counts are never lost in a Ray task.
    """
    from tinyllm_ray.store.agreement import AGREEMENT_COLUMNS
    from tinyllm_ray.student.tasks import cross_teacher_stats

    if plan.cross_teacher == "off":
        return {}
    rows = (r for t in plan.teachers for b in store.iter_batches(t, "rationale", AGREEMENT_COLUMNS)
            for r in b.to_pylist())
    st = cross_teacher_stats(rows, plan)
    out = {"cross_teacher_dropped": dict(st.cross_teacher_dropped),
           "cross_teacher_weights": dict(sorted(st.cross_teacher_weights.items()))}
    log.info("filter.cross_teacher %s: CoTs left out per teacher %s%s", plan.cross_teacher,
             out["cross_teacher_dropped"] or "none",
             f"; CoTs per teacher@agreeing share {out['cross_teacher_weights']}" if plan.cross_teacher == "weight" else "")
    return out


# --------------------------------------------------------------------------- batch


def prepare_student_data(
    cfg: JobConfig,
    train_records: Sequence[MCQRecord],
    validation_records: Sequence[MCQRecord],
    *,
    store_uri: str | None = None,
    collator: TaskCollator | None = None,
) -> StudentData:
    """Check the store, then build the per-stage group datasets and the validation dataset.

    ``collator`` enables the length pre-flight (it must be the training collator: same
    tokenizer, same limits). Validation rows are limited by ``train.eval_limit``.
    """
    from tinyllm_ray.store import RationaleStore

    t0 = time.perf_counter()
    plan = TaskPlan.from_config(cfg)
    if not train_records:
        raise DataError("the train split is empty; nothing to distil")
    view = open_training_store(cfg, store_uri=store_uri, train_records=train_records)
    stats: dict[str, Any] = {"store_uri": view.uri, "shard_size": view.shard_size}
    if view.uri is not None:
        scan_store_targets(RationaleStore(view.uri), plan)
        stats["store_rows"] = {f"{t}/{k}": n for (t, k), n in view.row_counts.items() if t in plan.teachers}
        stats.update(report_ignored(plan, view.row_counts, view.uri))
        stats.update(cross_teacher_summary(RationaleStore(view.uri), plan))

    slices = slice_dataset(plan, train_records, view.shard_size, view.uri)
    try:
        grouped = slices.random_shuffle(seed=cfg.train.seed).materialize()
    except Exception as exc:  # Ray Data wraps UDF errors; surface ours as itself
        cause = find_user_error(exc)
        if cause is None:
            raise
        raise cause from exc

    datasets: dict[str, ray.data.Dataset] = {}
    groups: dict[int, int] = {}
    for stage in range(plan.num_stages):
        ds = grouped if plan.num_stages == 1 else _stage_of(grouped, stage)
        n = ds.count()
        if n == 0:
            raise TaskDataError(
                f"training stage {stage} has no rows (tasks {list(plan.tasks_of_stage(stage))}); "
                "check the rationale store and self_eval settings"
            )
        datasets[f"train_stage{stage}"] = ds
        groups[stage] = n
    stats["groups_per_stage"] = dict(groups)
    if collator is not None:
        stats.update(length_preflight(datasets, collator))
    datasets["validation"], stats["validation_rows"] = validation_dataset(cfg, validation_records)
    stats["prepare_seconds"] = round(time.perf_counter() - t0, 2)
    log.info("student data: %s groups per stage from %s slice(s) of %d examples in %.1f s",
             groups, num_shards(len(train_records), view.shard_size), view.shard_size, stats["prepare_seconds"])
    return StudentData(plan=plan, datasets=datasets, groups=groups, stats=stats)


def _stage_of(grouped: ray.data.Dataset, stage: int) -> ray.data.Dataset:
    """The groups of ``stage``, in ``grouped``'s (shuffled) order, materialised.

    Why ``preserve_order``: the filter runs as one task per block, and without it Ray Data
    may hand blocks out as their tasks finish, so the training order (and the result) of a
    seed could depend on the machine's load. Set in answer to one seed of Mind's Mirror's
    two-stage demo setting scoring 0.085 alone and 0.140 beside other trials; a test could
    not make the unset filter reorder blocks, so that difference is not explained by this.
    """
    from ray.data.expressions import col

    ds = grouped.filter(expr=col("stage") == stage)
    ds.context.execution_options.preserve_order = True
    return ds.materialize()


def length_preflight(datasets: dict[str, ray.data.Dataset], collator: TaskCollator,
                     batch_size: int = 256) -> dict[str, Any]:
    """Stream every group once through the training layout; count (or refuse) truncation."""
    from tinyllm_ray.student.collate import batch_to_groups, length_stats

    total: Counter = Counter()
    longest = {"max_input_tokens": 0, "max_decoder_tokens": 0}
    tasks: Counter = Counter()
    for ds in (d for name, d in datasets.items() if name.startswith("train_stage")):
        for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
            groups = batch_to_groups(batch)
            st = length_stats(groups, collator)
            for k in ("groups", "rows", "truncated_inputs", "truncated_targets"):
                total[k] += st[k]
            longest = {k: max(v, st[k]) for k, v in longest.items()}
            for g in groups:
                tasks.update(str(t) for t in g["tasks"])
    out = {**dict(total), **longest, "rows_per_task": dict(tasks)}
    if total["truncated_inputs"] or total["truncated_targets"]:
        log.warning("truncation: %d inputs over student.max_input_length, %d targets over "
                    "student.max_target_length (kept, cut; counted)",
                    total["truncated_inputs"], total["truncated_targets"])
    return out


def steps_per_stage(groups: int, world_size: int, micro_batch: int, grad_accum: int, epochs: int,
                    max_steps: int | None) -> tuple[int, int]:
    """(optimizer steps, micro-batches per epoch per worker) of one stage.

    Ray Train splits a stage's groups equally (``equal=True``: ``groups // world_size``
    each), so every worker runs the same number of micro-batches and the collectives stay
    in step. ``max_steps`` (when set) is the stage's step count, cycling epochs as needed
    (Hugging Face semantics); otherwise ``epochs`` full passes, rounded down to whole
    accumulation windows.
    """
    per_worker = groups // world_size
    if per_worker < 1:
        raise ConfigError(
            f"{groups} training groups cannot feed {world_size} workers; lower train.num_workers or add data"
        )
    micro = math.ceil(per_worker / micro_batch)
    if max_steps:
        return int(max_steps), micro
    steps = (epochs * micro) // grad_accum
    if steps < 1:
        raise ConfigError(
            f"{epochs} epoch(s) of {micro} micro-batches per worker is less than one optimizer step with "
            f"train.grad_accum_steps={grad_accum}; lower it or raise train.epochs"
        )
    return steps, micro
