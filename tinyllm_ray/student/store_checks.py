"""What the student checks about a rationale store before any training worker starts.

Why a module: ``train`` must fail in seconds, before Ray starts, with a message that says
what to do, when the store cannot feed it: no store yet (``train`` before ``generate``),
a configured teacher without rows, slices not yet committed (an interrupted
``generate``), a dataset that changed since generation, or empty targets. Everything here
reads the store through :class:`~tinyllm_ray.store.RationaleStore` (file listings,
Parquet footers, the manifest, a few columns), never through Ray.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tinyllm_ray.errors import EmptyTargetError, StoreMismatchError, StoreNotFoundError
from tinyllm_ray.store import DEFAULT_SHARD_SIZE, RationaleStore
from tinyllm_ray.store.layout import num_shards
from tinyllm_ray.student.tasks import TaskPlan, TaskStats, check_teacher_coverage

if TYPE_CHECKING:
    from tinyllm_ray.config import JobConfig
    from tinyllm_ray.data.schema import MCQRecord

log = logging.getLogger(__name__)

__all__ = ["StoreView", "check_same_examples", "check_store_ready", "ignored_store_rows", "open_training_store", "scan_store_targets"]


@dataclass(frozen=True)
class StoreView:
    """What the student knows about the store it trains from.

    ``shard_size``: examples per slice (shard *k* of every teacher holds examples
    ``[k*S, (k+1)*S)`` of the train split); ``num_slices`` slices cover the split;
    ``row_counts``: committed rows per (teacher, kind) of every teacher in the store.
    ``uri`` is None for answer-only runs (no teachers, no store needed).
    """

    uri: str | None
    shard_size: int
    num_slices: int
    row_counts: dict[tuple[str, str], int]
    manifest: dict[str, Any] | None = None


def check_store_ready(cfg: JobConfig, *, store_uri: str | None = None) -> None:
    """Cheap pre-flight for ``train`` (no Ray, no dataset load): raise a ``UserError`` when
    the store cannot feed this config (see :func:`open_training_store`)."""
    open_training_store(cfg, store_uri=store_uri)


def open_training_store(cfg: JobConfig, *, store_uri: str | None = None,
                        train_records: Sequence[MCQRecord] | None = None) -> StoreView:
    """Check the store against ``cfg`` (and the train split, when given) and describe it.

    Raises :class:`~tinyllm_ray.errors.StoreNotFoundError` when there is no store or a
    slice is not committed for some teacher, :class:`~tinyllm_ray.errors.MissingTeacherError`
    when a configured teacher has no rows (of a needed kind), and
    :class:`~tinyllm_ray.errors.StoreMismatchError` when ``train_records`` are not the
    examples the store was generated from.
    """
    plan = TaskPlan.from_config(cfg)
    if not plan.teachers:
        size = cfg.runtime.store_shard_size or DEFAULT_SHARD_SIZE
        n = len(train_records) if train_records is not None else 0
        return StoreView(uri=None, shard_size=size, num_slices=num_shards(n, size), row_counts={})
    uri = store_uri or cfg.runtime.resolved_store_uri
    store = RationaleStore(uri)
    manifest = store.read_manifest()
    if manifest is None:
        raise StoreNotFoundError(
            f"no rationale store at {uri}; run `tinyllm-ray generate` (same config) first, or set runtime.store_uri"
        )
    size = int(manifest["shard_size"])
    num_slices = num_shards(int(manifest["num_examples"]), size)
    counts = store.row_counts(None)
    check_teacher_coverage(plan, counts, store=f"rationale store {uri}")
    missing = {t: num_slices - len(store.finished_shards(t) & set(range(num_slices)))
               for t in plan.teachers}
    missing = {t: n for t, n in missing.items() if n}
    if missing:
        detail = ", ".join(f"teacher {t!r} is missing {n} of {num_slices} shards" for t, n in missing.items())
        raise StoreNotFoundError(
            f"rationale store {uri} is not finished: {detail}; run `tinyllm-ray generate` (same config) to finish "
            "it (committed shards are skipped)"
        )
    if train_records is not None:
        from tinyllm_ray.store.manifest import data_fingerprint

        check_same_examples(uri, manifest, data_fingerprint(train_records), len(train_records))
    return StoreView(uri=uri, shard_size=size, num_slices=num_slices, row_counts=counts, manifest=manifest)


def check_same_examples(uri: str, manifest: dict[str, Any], fingerprint: str, num_examples: int) -> None:
    """Raise :class:`StoreMismatchError` unless the store was generated from these train examples.

    ``fingerprint`` is ``tinyllm_ray.store.manifest.data_fingerprint`` of the train split:
    shard *k* means the same questions only if the split is the one generated from.
    """
    have = manifest.get("data_hash")
    split = manifest.get("split", "train")
    if split != "train" or have != fingerprint:
        raise StoreMismatchError(
            f"rationale store {uri} was generated from other examples than this config's train split "
            f"(store: split {split!r}, {manifest.get('num_examples')} examples, fingerprint {have}; now: "
            f"{num_examples} examples, fingerprint {fingerprint}): the dataset changed since `generate`. Restore "
            "the dataset settings, or generate a new store (change runtime.run_name or runtime.store_uri)"
        )


def ignored_store_rows(plan: TaskPlan, row_counts: dict[tuple[str, str], int]) -> TaskStats:
    """Store rows this plan leaves out, counted from footers: unconfigured teachers' rows and,
    with self-evaluation disabled, the configured teachers' self-evaluations."""
    stats = TaskStats()
    for (teacher, kind), n in row_counts.items():
        if not n:
            continue
        if teacher not in plan.teachers:
            stats.ignored_teachers[teacher] += n
        elif kind not in plan.kinds_of(teacher):
            stats.ignored_kinds[kind] += n
    return stats


def _empty_target_mask(batch: Any, kind: str) -> Any:
    """Boolean mask of rows whose target would be empty (see :func:`scan_store_targets`)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def blank(col: str) -> Any:
        if col not in batch.schema.names:
            return pa.array([True] * batch.num_rows)
        text = pc.utf8_trim_whitespace(pc.fill_null(batch.column(col), ""))
        return pc.equal(pc.utf8_length(text), 0)

    if kind == "rationale":
        return blank("rationale")
    # self-evaluation: no CoT to judge, or neither a critique nor a verdict
    return pc.or_(blank("rationale"), pc.and_(blank("critique"), blank("verdict")))


def scan_store_targets(store: RationaleStore, plan: TaskPlan, batch_size: int = 8192) -> dict[str, int]:
    """Count store rows whose target would be empty; raise :class:`EmptyTargetError` if any.

    Streams only the target columns, one record batch at a time (never the whole store),
    so every bad row is counted and named in one error instead of failing on the first.
    """
    import pyarrow.compute as pc

    empty: dict[str, int] = {}
    examples: dict[str, list[str]] = {}
    columns = {"rationale": ["rationale"], "self_eval": ["rationale", "critique", "verdict"]}
    for t in plan.teachers:
        for kind in plan.kinds_of(t):
            for b in store.iter_batches(t, kind, ["example_id", *columns[kind]], batch_size=batch_size):
                bad = _empty_target_mask(b, kind)
                n = int(pc.sum(bad).as_py() or 0)
                if n:
                    key = f"teacher {t!r} kind={kind}"
                    empty[key] = empty.get(key, 0) + n
                    examples.setdefault(key, []).extend(pc.filter(b.column("example_id"), bad).to_pylist()[:3])
    if empty:
        detail = "; ".join(f"{k}: {n} row(s), e.g. examples {examples[k][:3]}" for k, n in sorted(empty.items()))
        raise EmptyTargetError(
            f"rationale store {store.uri}: empty targets for {detail}. Empty targets would teach the student "
            "to say nothing; regenerate with filter.drop_empty: true (empty outputs are then dropped and counted "
            "in stats/<teacher>.json)"
        )
    return empty

