"""Rationale store + dataset -> Ray Data datasets of packed groups, one per training stage.

Why Ray Data end to end: the rationale store can be far larger than the driver's memory
(5 CoTs x 5 self-evaluations per question in Mind's Mirror), so it is read with
``ray.data.read_parquet``, mapped to task rows per block (``tasks.store_rows_to_task_rows``),
grouped by (stage, source) on the cluster and materialised in the object store, never
in the driver. Training workers stream their shard with ``get_dataset_shard``.

Checks happen before any training worker starts:

- teacher coverage from Parquet *metadata* (row counts, no data read): a configured teacher
  without rows is a :class:`~tinyllm_ray.student.tasks.MissingTeacherError`;
- empty targets raise :class:`~tinyllm_ray.student.tasks.EmptyTargetError` inside the map
  (surfaced here when the dataset is materialised);
- a streaming length pre-flight tokenizes every group with the training layout: counts
  truncated inputs/targets, or raises ``TruncationError`` when ``student.truncation: error``.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tinyllm_ray.student.tasks import (
    STORE_COLUMNS,
    TaskDataError,
    TaskPlan,
    answer_task_rows,
    check_teacher_coverage,
    group_task_rows,
    store_rows_to_task_rows,
)

if TYPE_CHECKING:
    import pyarrow as pa
    import ray.data

    from tinyllm_ray.config import JobConfig
    from tinyllm_ray.data.schema import MCQRecord
    from tinyllm_ray.student.collate import TaskCollator

log = logging.getLogger(__name__)

__all__ = [
    "StudentData",
    "length_preflight",
    "list_store_shards",
    "prepare_student_data",
    "scan_store_targets",
    "steps_per_stage",
    "store_row_counts",
]

KINDS = ("rationale", "self_eval")


def _task_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema([
        ("input", pa.string()), ("target", pa.string()), ("task", pa.string()), ("weight", pa.float64()),
        ("stage", pa.int64()), ("source", pa.string()), ("prefix", pa.string()), ("group", pa.string()),
        ("origin", pa.string()), ("example_id", pa.string()),
    ])


def _group_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema([
        ("group", pa.string()), ("stage", pa.int64()), ("source", pa.string()), ("example_id", pa.string()),
        ("tasks", pa.list_(pa.string())), ("prefixes", pa.list_(pa.string())),
        ("targets", pa.list_(pa.string())), ("weights", pa.list_(pa.float64())),
    ])


# --------------------------------------------------------------------------- store layout


def _fs_and_path(uri: str) -> tuple[Any, str]:
    import pyarrow.fs as pafs

    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    import os

    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))


def list_store_shards(store_uri: str, teacher: str, kind: str) -> list[str]:
    """Shard files of one (teacher, kind) partition, sorted; ``[]`` when absent.

    Layout (docs/internals.md): ``<root>/records/teacher=<name>/kind=<kind>/shard-*.parquet``.
    Temporary files of an interrupted write are not ``shard-*.parquet`` and are ignored.
    """
    import pyarrow.fs as pafs

    fs, root = _fs_and_path(store_uri)
    base = f"{root.rstrip('/')}/records/teacher={teacher}/kind={kind}"
    info = fs.get_file_info(base)
    if info.type != pafs.FileType.Directory:
        return []
    sel = pafs.FileSelector(base, recursive=False)
    files = [f.path for f in fs.get_file_info(sel)
             if f.type == pafs.FileType.File and f.base_name.startswith("shard-") and f.base_name.endswith(".parquet")]
    return sorted(files)


def store_row_counts(store_uri: str, teachers: Sequence[str]) -> dict[tuple[str, str], int]:
    """Rows per (teacher, kind) from Parquet footers only (no column data is read)."""
    import pyarrow.parquet as pq

    fs, _ = _fs_and_path(store_uri)
    counts: dict[tuple[str, str], int] = {}
    for t in teachers:
        for k in KINDS:
            n = 0
            for path in list_store_shards(store_uri, t, k):
                with fs.open_input_file(path) as f:
                    n += pq.ParquetFile(f).metadata.num_rows
            counts[(t, k)] = n
    return counts


# --------------------------------------------------------------------------- Ray Data UDFs


def _store_block_to_task_rows(table: pa.Table, plan: dict[str, Any]) -> pa.Table:
    """map_batches UDF: store rows -> task rows (errors name teacher/example)."""
    import pyarrow as pa

    rows = store_rows_to_task_rows(table.to_pylist(), TaskPlan.from_dict(plan))
    return pa.Table.from_pylist(rows, schema=_task_schema())


def _group_block(table: pa.Table, label_source: str) -> pa.Table:
    """map_groups UDF: the task rows of one (stage, source) -> one group row."""
    import pyarrow as pa

    return pa.Table.from_pylist(group_task_rows(table.to_pylist(), label_source), schema=_group_schema())


# --------------------------------------------------------------------------- driver API


@dataclass
class StudentData:
    """The datasets a training run consumes, plus what the driver learned building them.

    ``datasets``: ``train_stage<k>`` (materialised groups of stage k) and ``validation``
    (MCQ records as rows, evaluated by answer-only generation). ``groups[k]`` counts the
    groups (questions, or CoTs for self-evaluation) of stage k.
    """

    plan: TaskPlan
    datasets: dict[str, ray.data.Dataset]
    groups: dict[int, int]
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def stages(self) -> list[int]:
        return sorted(self.groups)


def _task_data_error(exc: BaseException) -> TaskDataError | None:
    """Our :class:`TaskDataError` inside a Ray Data failure (which keeps only its text)."""
    import re

    from tinyllm_ray.student import tasks

    m = re.search(r"(EmptyTargetError|MissingTeacherError|TaskDataError): (.+)", str(exc))
    if m is None:
        return None
    return getattr(tasks, m.group(1))(m.group(2).strip())


def _empty_target_mask(batch: Any, kind: str, present: list[str]) -> Any:
    """Boolean mask of rows whose target would be empty (see :func:`scan_store_targets`)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def blank(col: str) -> Any:
        if col not in present:
            return pa.array([True] * batch.num_rows)
        text = pc.utf8_trim_whitespace(pc.fill_null(batch.column(col), ""))
        return pc.equal(pc.utf8_length(text), 0)

    if kind == "rationale":
        return blank("rationale")
    # self-evaluation: no CoT to judge, or neither a critique nor a verdict
    return pc.or_(blank("rationale"), pc.and_(blank("critique"), blank("verdict")))


def scan_store_targets(store_uri: str, plan: TaskPlan, batch_size: int = 8192) -> dict[str, int]:
    """Count store rows whose target would be empty; raise :class:`EmptyTargetError` if any.

    Streams only the target columns, one record batch at a time (never the whole store),
    so every bad row is counted and named in one error instead of failing on the first.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from tinyllm_ray.student.tasks import EmptyTargetError

    fs, _ = _fs_and_path(store_uri)
    empty: dict[str, int] = {}
    examples: dict[str, list[str]] = {}
    kinds = [("rationale", ["rationale"])] + ([("self_eval", ["rationale", "critique", "verdict"])]
                                              if plan.self_eval else [])
    for t in plan.teachers:
        for kind, cols in kinds:
            for path in list_store_shards(store_uri, t, kind):
                with fs.open_input_file(path) as f:
                    pf = pq.ParquetFile(f)
                    have = set(pf.schema_arrow.names)
                    use = [c for c in cols if c in have]
                    for b in pf.iter_batches(batch_size=batch_size, columns=["example_id", *use]):
                        bad = _empty_target_mask(b, kind, use)
                        n = int(pc.sum(bad).as_py() or 0)
                        if n:
                            key = f"teacher {t!r} kind={kind}"
                            empty[key] = empty.get(key, 0) + n
                            ids = pc.filter(b.column("example_id"), bad).to_pylist()[:3]
                            examples.setdefault(key, []).extend(ids)
    if empty:
        detail = "; ".join(f"{k}: {n} row(s), e.g. examples {examples[k][:3]}" for k, n in sorted(empty.items()))
        raise EmptyTargetError(
            f"rationale store {store_uri}: empty targets for {detail}. Empty targets would teach the student "
            "to say nothing; regenerate with filter.drop_empty: true (empty outputs are then dropped and counted "
            "in stats/<teacher>.json)"
        )
    return empty


def _num_partitions(n_rows: int, rows_per_partition: int = 20_000, cap: int = 64) -> int:
    """Shuffle partitions for ``n_rows`` task rows.

    Why not Ray Data's default (200): each partition is a task, and on a small machine
    200 tasks for a few thousand rows cost a minute of scheduling for nothing.
    """
    return max(1, min(cap, -(-n_rows // rows_per_partition)))


def _shard_paths(cfg: JobConfig, plan: TaskPlan, store_uri: str) -> list[str]:
    kinds = ["rationale"] + (["self_eval"] if plan.self_eval else [])
    return [p for t in plan.teachers for k in kinds for p in list_store_shards(store_uri, t, k)]


def prepare_student_data(
    cfg: JobConfig,
    train_records: Sequence[MCQRecord],
    validation_records: Sequence[MCQRecord],
    *,
    store_uri: str | None = None,
    collator: TaskCollator | None = None,
) -> StudentData:
    """Build (and check) the per-stage group datasets and the validation dataset.

    ``collator`` enables the length pre-flight (it must be the training collator: same
    tokenizer, same limits). Validation rows are limited by ``train.eval_limit``.
    """
    import ray.data
    from ray.data.expressions import col

    plan = TaskPlan.from_config(cfg)
    store_uri = store_uri or cfg.runtime.resolved_store_uri
    stats: dict[str, Any] = {"store_uri": store_uri}
    if plan.teachers:
        counts = store_row_counts(store_uri, plan.teachers)
        check_teacher_coverage(plan, counts, store=f"rationale store {store_uri}")
        scan_store_targets(store_uri, plan)
        stats["store_rows"] = {f"{t}/{k}": n for (t, k), n in counts.items()}
    if not train_records:
        raise ValueError("the train split is empty; nothing to distil")

    import pyarrow as pa

    answers = answer_task_rows(train_records, plan)
    parts = [ray.data.from_arrow(pa.Table.from_pylist(answers, schema=_task_schema()))]
    paths = _shard_paths(cfg, plan, store_uri) if plan.teachers else []
    if paths:
        fs, _ = _fs_and_path(store_uri)
        store = ray.data.read_parquet(paths, filesystem=fs, partitioning=None,
                                      override_num_blocks=max(1, len(paths)))
        present = set(store.schema().names)
        store = store.select_columns([c for c in STORE_COLUMNS if c in present])
        parts.append(store.map_batches(_store_block_to_task_rows, batch_format="pyarrow",
                                       fn_kwargs={"plan": plan.to_dict()}))
    rows = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    n_rows = len(answers) + sum(stats.get("store_rows", {}).values())
    partitions = _num_partitions(n_rows)
    grouped = rows.groupby("group", num_partitions=partitions).map_groups(
        _group_block, batch_format="pyarrow", fn_kwargs={"label_source": plan.label_source}
    )
    try:
        grouped = grouped.random_shuffle(seed=cfg.train.seed).materialize()
    except Exception as exc:  # Ray Data wraps UDF errors twice; surface ours as itself
        cause = _task_data_error(exc)
        if cause is None:
            raise
        raise cause from exc

    datasets: dict[str, ray.data.Dataset] = {}
    groups: dict[int, int] = {}
    for stage in range(plan.num_stages):
        ds = grouped if plan.num_stages == 1 else grouped.filter(expr=col("stage") == stage).materialize()
        n = ds.count()
        if n == 0:
            raise ValueError(
                f"training stage {stage} has no rows (tasks {list(plan.tasks_of_stage(stage))}); "
                "check the rationale store and self_eval settings"
            )
        datasets[f"train_stage{stage}"] = ds
        groups[stage] = n
    stats["groups_per_stage"] = dict(groups)

    if collator is not None:
        stats.update(length_preflight(datasets, collator))

    val = list(validation_records)
    if cfg.train.eval_limit:
        val = val[: cfg.train.eval_limit]
    if not val:
        raise ValueError("the validation split is empty; model selection needs it (never the test split)")
    datasets["validation"] = ray.data.from_items([r.to_dict() for r in val])
    stats["validation_rows"] = len(val)
    return StudentData(plan=plan, datasets=datasets, groups=groups, stats=stats)


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
        raise ValueError(
            f"{groups} training groups cannot feed {world_size} workers; lower train.num_workers or add data"
        )
    micro = math.ceil(per_worker / micro_batch)
    if max_steps:
        return int(max_steps), micro
    steps = (epochs * micro) // grad_accum
    if steps < 1:
        raise ValueError(
            f"{epochs} epoch(s) of {micro} micro-batches per worker is less than one optimizer step with "
            f"train.grad_accum_steps={grad_accum}; lower it or raise train.epochs"
        )
    return steps, micro

