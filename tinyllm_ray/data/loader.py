"""``load_splits(cfg.data) -> LoadedData``: any supported source -> validated records per split.

Why everything funnels through here: the teachers, the student and evaluation must see
the *same* train/validation/test records, so carving, limits, id checks and malformed-row
policy are decided once, from the config, deterministically. Where rows come from is
:mod:`tinyllm_ray.data.readers` (files or hub) and :mod:`tinyllm_ray.data.discovery`
(which file is which split); ``data.name: synthetic`` is the built-in demo task and
``data.name: arithmetic`` the built-in reasoning task (:func:`arithmetic_problems` gives its
problems with their gold step-by-step solutions, split for split the records loaded here).

Split policy:

* ``data.resplit`` (optional, first): every loaded row is pooled and re-cut into seeded
  splits of the given sizes (a paper's own split, e.g. SVAMP 800/200).
* Missing validation -> carved from train with ``data.seed`` and ``data.validation_size``
  rows or else ``data.validation_fraction`` (never from test: test stays untouched for the
  final number).
* Missing train (e.g. the shared PIQA copy ships only valid/test) -> no ``train`` split is
  returned and a warning is logged. Train is never carved from validation or test; callers
  that need it call :meth:`LoadedData.require`, which raises with the fix.
* ``data.limit`` keeps the first N rows of a split, after carving (deterministic).
* A split in which *no* row has a gold answer (hidden-label test sets: CommonsenseQA,
  RiddleSense, PIQA on the hub) is left out with a warning and counted in ``skipped``
  rather than failing under ``on_malformed: error``; one unlabelled row among labelled
  ones is still an error.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from tinyllm_ray.config import SPLITS, DataConfig
from tinyllm_ray.data.adapters import TINYLLM, DatasetAdapter, get_adapter
from tinyllm_ray.data.arithmetic import ArithmeticProblem, make_arithmetic_splits
from tinyllm_ray.data.discovery import where
from tinyllm_ray.data.readers import RawPart, read_sources
from tinyllm_ray.data.schema import (
    REASON_DUPLICATE_ID,
    REASON_INVALID_JSON,
    REASON_NO_ANSWER,
    REASON_TOO_FEW_CHOICES,
    MalformedRowError,
    MCQRecord,
    RowError,
)
from tinyllm_ray.data.synthetic import make_synthetic_splits
from tinyllm_ray.errors import DataLoadError

log = logging.getLogger(__name__)

_T = TypeVar("_T")


@dataclass
class LoadedData:
    """Validated records per canonical split, plus what was dropped and where it came from.

    ``skipped[split][reason]`` counts rows dropped under ``on_malformed: skip`` (carved
    validation rows are counted under ``train``, where they were read); ``sources[split]``
    says which file / hub split / carving produced each split, for logs and manifests.
    """

    splits: dict[str, list[MCQRecord]]
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def require(self, split: str) -> list[MCQRecord]:
        """Records of ``split`` or a :class:`DataLoadError` explaining how to provide it."""
        if split not in self.splits:
            have = ", ".join(f"{s} ({len(r)})" for s, r in self.splits.items()) or "none"
            raise DataLoadError(
                f"the dataset has no {split!r} split (loaded: {have}). Provide one with "
                f"data.files.{split}: <file>, or point data.path at a folder holding a {split} file"
                + ("; train is never carved from validation or test" if split == "train" else "")
            )
        return self.splits[split]

    def sizes(self) -> dict[str, int]:
        """``{split: number of records}`` (for manifests and logs)."""
        return {s: len(r) for s, r in self.splits.items()}

    def total_skipped(self) -> int:
        return sum(sum(c.values()) for c in self.skipped.values())



# --------------------------------------------------------------------------- public entry


def load_splits(cfg: DataConfig) -> LoadedData:
    """Load, adapt, validate, carve and limit the dataset described by ``cfg``."""
    if cfg.name == "synthetic":
        splits = make_synthetic_splits(cfg.synthetic, seed=cfg.seed)
        sources = {s: f"synthetic (seed {cfg.seed})" for s in splits}
        splits = _apply_limits(splits, cfg.limit)
        return LoadedData(splits=splits, skipped={s: {} for s in splits}, sources=sources)
    if cfg.name == "arithmetic":
        a = cfg.arithmetic
        splits = {s: [p.to_record() for p in ps] for s, ps in arithmetic_problems(cfg).items()}
        sources = {s: f"arithmetic ({a.form}, 1-{a.max_steps} steps, seed {cfg.seed})" for s in splits}
        return LoadedData(splits=splits, skipped={s: {} for s in splits}, sources=sources)

    adapter = get_adapter(cfg.name, cfg.columns)
    raw = read_sources(cfg, adapter)
    if not raw:
        raise DataLoadError(f"no train/validation/test data found for dataset {cfg.name!r} at {where(cfg)}")

    splits: dict[str, list[MCQRecord]] = {}
    skipped: dict[str, dict[str, int]] = {}
    sources: dict[str, str] = {}
    for split in SPLITS:
        if split not in raw:
            continue
        try:
            records, counts = _to_records(split, raw[split], adapter, cfg.on_malformed)
        except MalformedRowError as err:
            if err.reason != REASON_NO_ANSWER or not _all_unlabelled(split, raw[split], adapter):
                raise
            records, counts = [], {REASON_NO_ANSWER: sum(len(p.rows) for p in raw[split])}
        if records == [] and set(counts) == {REASON_NO_ANSWER}:
            # Hidden-label test sets (CommonsenseQA, RiddleSense, PIQA on the hub) are not
            # malformed, just unusable here: leave the split out instead of failing the job.
            log.warning("split %s of %r has no gold answers in any of its %d rows (hidden test labels): "
                        "leaving it out; evaluate on validation or supply data.files.%s",
                        split, cfg.name, counts[REASON_NO_ANSWER], split)
            skipped[split] = counts
            continue
        splits[split], skipped[split] = records, counts
        sources[split] = " + ".join(p.source for p in raw[split])
        if not records:
            log.warning("split %s of %r is empty (%s)", split, cfg.name, sources[split])
        if counts:
            log.warning("split %s: skipped %d malformed rows %s", split, sum(counts.values()), counts)

    if cfg.resplit is not None:
        splits, sources = resplit(splits, sources, cfg.resplit.sizes, cfg.resplit.seed)
    if "validation" not in splits and "train" in splits:
        splits["train"], splits["validation"] = carve_validation(
            splits["train"], cfg.validation_fraction, cfg.seed, size=cfg.validation_size
        )
        amount = f"{cfg.validation_size} rows" if cfg.validation_size else f"{cfg.validation_fraction:g}"
        sources["validation"] = f"{amount} of train carved with seed {cfg.seed} ({sources['train']})"
        log.info("no validation split: carved %d of %d train rows (seed %d); test is never used for this",
                 len(splits["validation"]), len(splits["train"]) + len(splits["validation"]), cfg.seed)
    if "train" not in splits:
        log.warning(
            "dataset %r at %s has no train split; teachers/student stages will ask for one "
            "(set data.files.train). Train is never carved from validation or test.",
            cfg.name, where(cfg),
        )
    splits = _apply_limits(splits, cfg.limit)
    log.info("loaded %s: %s", cfg.name, {s: len(r) for s, r in splits.items()})
    return LoadedData(splits=splits, skipped=skipped, sources=sources)


def arithmetic_problems(cfg: DataConfig) -> dict[str, list[ArithmeticProblem]]:
    """The problems of ``data.name: arithmetic``, with their gold step-by-step solutions.

    Why next to :func:`load_splits`: gold solutions (``ArithmeticProblem.solution``) are
    what a teacher is bootstrapped on, and they must be the solutions of exactly the
    records every stage loads. Both come from here, with the same sizes, seed, form and
    ``data.limit``: ``[p.to_record() for p in arithmetic_problems(cfg)[s]] ==
    load_splits(cfg).splits[s]``.
    """
    if cfg.name != "arithmetic":
        raise DataLoadError(
            f"gold step-by-step solutions exist only for the built-in arithmetic task, but data.name is "
            f"{cfg.name!r}; set data.name: arithmetic"
        )
    a = cfg.arithmetic
    sizes = {"train": a.train, "validation": a.validation, "test": a.test}
    problems = make_arithmetic_splits(sizes, max_steps=a.max_steps, seed=cfg.seed, form=a.form)
    return _apply_limits(problems, cfg.limit)


def resplit(
    splits: Mapping[str, list[MCQRecord]], sources: Mapping[str, str], sizes: Mapping[str, int], seed: int
) -> tuple[dict[str, list[MCQRecord]], dict[str, str]]:
    """Pool every split (train, validation, test order), shuffle with ``seed``, cut ``sizes``.

    Why: some papers split all of a dataset's rows their own way (Mind's Mirror: a seeded
    800/200 train/test split of SVAMP's 1,000 problems, where the hub copy ships 700/300).
    New splits are cut in train, validation, test order from one seeded shuffle of the
    pooled positions and keep the pooled order inside each split; rows beyond the sizes
    are left out (logged). Asking for more rows than the pool holds is an error.
    """
    pool = [r for split in SPLITS for r in splits.get(split, [])]
    dupes = sorted(i for i, c in Counter(r.id for r in pool).items() if c > 1)
    if dupes:
        raise DataLoadError(f"data.resplit pools every split, but ids repeat across splits: {dupes[:5]}")
    want = sum(sizes.values())
    if want > len(pool):
        raise DataLoadError(
            f"data.resplit asks for {want} rows {dict(sizes)} but the dataset has {len(pool)} "
            f"({', '.join(f'{s} {len(r)}' for s, r in splits.items())}); lower data.resplit.sizes"
        )
    order = list(range(len(pool)))
    random.Random(seed).shuffle(order)
    out: dict[str, list[MCQRecord]] = {}
    start = 0
    for split in SPLITS:
        if split in sizes:
            chosen = sorted(order[start:start + sizes[split]])
            out[split] = [pool[i] for i in chosen]
            start += sizes[split]
    pooled = " + ".join(f"{s} ({sources.get(s, '?')})" for s in SPLITS if s in splits)
    new_sources = {s: f"{len(r)} rows of the pooled {pooled}, seed {seed}" for s, r in out.items()}
    log.info("data.resplit: pooled %d rows, cut %s with seed %d%s", len(pool), {s: len(r) for s, r in out.items()},
             seed, f"; {len(pool) - want} left out" if want < len(pool) else "")
    return out, new_sources


def carve_validation(
    train: Sequence[MCQRecord], fraction: float, seed: int, *, size: int | None = None
) -> tuple[list[MCQRecord], list[MCQRecord]]:
    """Split ``train`` into (train, validation), both keeping the original row order.

    ``size`` rows, or else ``round(len * fraction)`` rows (at least 1), go to validation,
    chosen by a seeded shuffle of positions, so the same config always yields the same split.
    """
    n = len(train)
    if n < 2:
        raise DataLoadError(
            f"cannot carve a validation split from {n} train row(s); provide data.files.validation"
        )
    if size is not None and size >= n:
        raise DataLoadError(f"data.validation_size {size} leaves no training rows out of {n}; lower it")
    n_val = size if size is not None else min(n - 1, max(1, round(n * fraction)))
    order = list(range(n))
    random.Random(seed).shuffle(order)
    val_idx = set(order[:n_val])
    kept = [r for i, r in enumerate(train) if i not in val_idx]
    val = [r for i, r in enumerate(train) if i in val_idx]
    return kept, val


# --------------------------------------------------------------------------- adaptation


def _to_records(
    split: str, parts: list[RawPart], adapter: DatasetAdapter, on_malformed: str
) -> tuple[list[MCQRecord], dict[str, int]]:
    """Adapt and validate every row of a split; raise or count the bad ones."""
    records: list[MCQRecord] = []
    counts: Counter[str] = Counter()
    seen: dict[str, tuple[str, int]] = {}
    n = 0  # running index across the split's files: fallback ids stay unique
    for part in parts:
        part_adapter = _adapter_for(part, adapter)
        for row_no, row in enumerate(part.rows, start=1):
            fallback_id = f"{split}-{n}"
            n += 1
            try:
                if isinstance(row, RowError):
                    raise row
                if not isinstance(row, Mapping):  # e.g. a JSON Lines line holding `0` or `[1, 2]`
                    raise RowError(REASON_INVALID_JSON, f"a row must be a JSON object, got {type(row).__name__}")
                record = MCQRecord.from_dict(part_adapter(row, fallback_id))
                if not record.choices and not part_adapter.free_form:
                    raise RowError(REASON_TOO_FEW_CHOICES, f"{adapter.name} is multiple-choice but the row has no choices")
                if record.id in seen:
                    first_src, first_row = seen[record.id]
                    raise RowError(REASON_DUPLICATE_ID, f"id {record.id!r} already used at {first_src} row {first_row}")
            except RowError as err:
                if on_malformed != "skip":
                    raise MalformedRowError(part.source, row_no, err.reason, err.detail) from None
                counts[err.reason] += 1
                continue
            seen[record.id] = (part.source, row_no)
            records.append(record)
    return records, dict(counts)


def _all_unlabelled(split: str, parts: list[RawPart], adapter: DatasetAdapter) -> bool:
    """True when every row of the split lacks an answer (a hidden-label test set)."""
    records, counts = _to_records(split, parts, adapter, "skip")
    return not records and set(counts) == {REASON_NO_ANSWER}


def _adapter_for(part: RawPart, adapter: DatasetAdapter) -> DatasetAdapter:
    """The adapter for this source, switching to the TinyLLM layout when that is what it holds.

    Why: ``data.name: obqa`` pointed at TinyLLM's processed OpenBookQA (``{id, question,
    choices: [text], answer}``) is a reasonable config; refusing it would only make the
    user rename the dataset. Any other layout mismatch fails here, once, with the columns.
    """
    if not part.columns:  # empty source, or only unparsable lines: rows report themselves
        return adapter
    missing = adapter.missing_columns(part.columns)
    if not missing:
        return adapter
    if adapter.name != "generic" and not TINYLLM.missing_columns(part.columns):
        log.info("%s is in the TinyLLM layout (id, question, choices, answer): reading it with the "
                 "'tinyllm' adapter instead of %r", part.source, adapter.name)
        return TINYLLM
    hint = (
        "set data.columns to the file's column names" if adapter.name == "generic"
        else "use data.name: generic with data.columns, or data.name: tinyllm for TinyLLM-style files"
    )
    raise DataLoadError(
        f"{part.source}: the {adapter.name!r} adapter needs column(s) {missing} but the source has "
        f"{sorted(part.columns)}; {hint}"
    )


def _apply_limits(splits: dict[str, list[_T]], limit: Mapping[str, int]) -> dict[str, list[_T]]:
    """First N items of each limited split (after carving or generating, so neither sees limits)."""
    return {s: (recs[: limit[s]] if s in limit else recs) for s, recs in splits.items()}
