"""``load_splits(cfg.data) -> LoadedData``: any supported source -> validated records per split.

Why everything funnels through here: the teachers, the student and evaluation must see
the *same* train/validation/test records, so carving, limits, id checks and malformed-row
policy are decided once, from the config, deterministically. Where rows come from is
:mod:`tinyllm_ray.data.readers` (files or hub) and :mod:`tinyllm_ray.data.discovery`
(which file is which split); ``data.name: synthetic`` is the built-in demo task and
``data.name: arithmetic`` the built-in reasoning task (:func:`arithmetic_problems` gives its
problems with their gold step-by-step solutions, split for split the records loaded here).

Split policy (user-facing rules in ``docs/data.md``; cutting in :mod:`.splits`):

* Which file is which split: ``data.files`` says it; a single file given as ``data.path``
  is **train** whatever its name (as ``datasets.load_dataset("json", data_files=...)``
  does); only a *folder* is searched for split names (:mod:`.discovery`, logged).
* ``data.resplit`` (optional, first): every loaded row is pooled and re-cut into seeded
  splits of the given sizes (a paper's own split, e.g. SVAMP 800/200).
* Missing validation -> carved from train with ``data.seed`` and ``data.validation_size``
  rows or else ``data.validation_fraction``; missing test -> carved from train only when
  ``data.test_size`` / ``data.test_fraction`` asks (test is never carved silently, and
  never used to make validation). Rows sharing a question are carved together.
* Missing train (e.g. the shared PIQA copy ships only valid/test) -> no ``train`` split is
  returned and a warning is logged. Train is never carved from validation or test; callers
  that need it call :meth:`LoadedData.require`, which raises with the fix.
* ``data.limit`` keeps the first N rows of a split, after carving (deterministic).
* Then ``data.split_overlap`` is enforced on what the stages will see: an example in two
  splits is an error (default), allowed (logged), or dropped from the earlier split.
* A split in which *no* row has a gold answer (hidden-label test sets: CommonsenseQA,
  RiddleSense, PIQA on the hub) is left out with a warning and counted in ``skipped``
  rather than failing under ``on_malformed: error``; one unlabelled row among labelled
  ones is still an error.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tinyllm_ray.config import SPLITS, DataConfig
from tinyllm_ray.data.adapters import get_adapter
from tinyllm_ray.data.arithmetic import ArithmeticProblem, iter_arithmetic_split, make_arithmetic_splits
from tinyllm_ray.data.discovery import where
from tinyllm_ray.data.file_stream import iter_file_split, streams_file_split
from tinyllm_ray.data.readers import read_sources
from tinyllm_ray.data.records import read_split
from tinyllm_ray.data.schema import (
    REASON_NO_ANSWER,
    MCQRecord,
)
from tinyllm_ray.data.splits import (
    REASON_SPLIT_OVERLAP,
    apply_overlap_policy,
    carve,
    carve_size,
    resplit,
)
from tinyllm_ray.data.synthetic import iter_synthetic_split, make_synthetic_splits
from tinyllm_ray.errors import DataLoadError

log = logging.getLogger(__name__)

_T = TypeVar("_T")


@dataclass
class LoadedData:
    """Validated records per canonical split, plus what was dropped and where it came from.

    ``skipped[split][reason]`` counts rows dropped under ``on_malformed: skip`` (carved
    validation rows are counted under ``train``, where they were read) and rows removed
    by ``data.split_overlap: drop``; ``sources[split]`` says which file / hub split /
    carving produced each split, for logs and manifests; ``overlap`` is the report of
    :func:`~tinyllm_ray.data.splits.split_overlap` (empty for generated tasks).
    """

    splits: dict[str, list[MCQRecord]]
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    overlap: list[dict[str, Any]] = field(default_factory=list)

    def require(self, split: str, setting: str | None = None) -> list[MCQRecord]:
        """Records of ``split`` or a :class:`DataLoadError` naming the splits there are and the fixes.

        ``setting`` names what asked for the split (``eval.split``, ``--split``), so the
        message can offer to change it.
        """
        if split not in self.splits:
            raise DataLoadError(self.missing_split_message(split, setting))
        return self.splits[split]

    def missing_split_message(self, split: str, setting: str | None = None) -> str:
        """One line: which splits there are, why ``split`` is absent if known, and each way to get one."""
        if setting is None:  # a stage asking: the sizes say what it could use instead
            have = "loaded: " + (", ".join(f"{s} ({len(r)})" for s, r in self.splits.items()) or "none")
        else:  # a setting to change: the names it may take
            have = "available: " + (", ".join(self.splits) or "none")
        if set(self.skipped.get(split, {})) == {REASON_NO_ANSWER}:
            have += f"; the {split} rows read ({self.skipped[split][REASON_NO_ANSWER]}) have no gold answers"
        fixes = [f"data.files.{split}: <file>"]
        if split == "test":
            fixes.append("data.test_fraction: 0.1 to carve one from train (seeded by data.seed)")
        if setting is not None:
            others = [s for s in self.splits if s != "train"] or list(self.splits)
            sep = " " if setting.startswith("--") else "="
            fixes.insert(0, " or ".join(f"{setting}{sep}{s}" for s in others) if others else setting)
        tail = "; train is never carved from validation or test" if split == "train" else ""
        return f"the dataset has no {split!r} split ({have}); use " + ", or ".join(fixes) + tail

    def sizes(self) -> dict[str, int]:
        """``{split: number of records}`` (for manifests and logs)."""
        return {s: len(r) for s, r in self.splits.items()}

    def total_skipped(self) -> int:
        return sum(sum(c.values()) for c in self.skipped.values())



# --------------------------------------------------------------------------- public entry


def load_splits(cfg: DataConfig, *, enforce_overlap: bool = True) -> LoadedData:
    """Load, adapt, validate, carve and limit the dataset described by ``cfg``.

    ``enforce_overlap=False`` reports examples shared between splits in
    ``LoadedData.overlap`` instead of raising under ``data.split_overlap: error`` (for
    ``tinyllm-ray data``, which shows what the stages would refuse).
    """
    if cfg.name == "synthetic":
        splits = make_synthetic_splits(cfg.synthetic, seed=cfg.seed)
        splits = _apply_limits(splits, cfg.limit)
        return LoadedData(splits=splits, skipped={s: {} for s in splits},
                          sources={s: generated_source(cfg) for s in splits})
    if cfg.name == "arithmetic":
        splits = {s: [p.to_record() for p in ps] for s, ps in arithmetic_problems(cfg).items()}
        return LoadedData(splits=splits, skipped={s: {} for s in splits},
                          sources={s: generated_source(cfg) for s in splits})

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
        records, skipped[split] = read_split(split, raw[split], adapter, cfg.name, cfg.on_malformed)
        if records is not None:  # None: a hidden-label split, left out (warned)
            splits[split], sources[split] = records, " + ".join(p.source for p in raw[split])

    if cfg.resplit is not None:
        splits, sources = resplit(splits, sources, cfg.resplit.sizes, cfg.resplit.seed)
    _carve_missing(cfg, splits, sources)
    if "train" not in splits:
        log.warning(
            "dataset %r at %s has no train split; teachers/student stages will ask for one "
            "(set data.files.train). Train is never carved from validation or test.",
            cfg.name, where(cfg),
        )
    splits = _apply_limits(splits, cfg.limit)
    policy = cfg.split_overlap if enforce_overlap or cfg.split_overlap != "error" else "report"
    splits, dropped, overlap = apply_overlap_policy(splits, policy, sources)
    for split, n_dropped in dropped.items():
        skipped.setdefault(split, {})[REASON_SPLIT_OVERLAP] = n_dropped
    log.info("loaded %s: %s", cfg.name, {s: len(r) for s, r in splits.items()})
    return LoadedData(splits=splits, skipped=skipped, sources=sources, overlap=overlap)


def _carve_missing(cfg: DataConfig, splits: dict[str, list[MCQRecord]], sources: dict[str, str]) -> None:
    """Carve validation (always, when absent) and test (when asked) out of train, in place, logged."""
    if "train" not in splits:
        return
    carve_test = cfg.test_fraction is not None or cfg.test_size is not None
    if carve_test and "test" in splits:
        raise DataLoadError(
            f"data.test_{'size' if cfg.test_size else 'fraction'} carves a test split from train, but the dataset "
            f"already has one ({sources['test']}); drop the setting, or leave the test file out of data.files"
        )
    n = len(splits["train"])
    sizes: dict[str, int] = {}
    if "validation" not in splits:
        if n < 2:
            raise DataLoadError(f"cannot carve a validation split from {n} train row(s); provide "
                                "data.files.validation")
        sizes["validation"] = carve_size(n, cfg.validation_fraction, cfg.validation_size)
    if carve_test:
        sizes["test"] = carve_size(n, cfg.test_fraction or 0.0, cfg.test_size)
    if not sizes:
        return
    source = sources["train"]
    splits["train"], parts = carve(splits["train"], sizes, cfg.seed)
    for split, rows in parts.items():
        splits[split] = rows
        size, fraction = (cfg.validation_size, cfg.validation_fraction) if split == "validation" else (
            cfg.test_size, cfg.test_fraction)
        amount = f"{size} rows" if size else f"{fraction:g}"
        sources[split] = f"{amount} of train carved with seed {cfg.seed} ({source})"
    log.info("carved %s out of %d train rows (data.seed %d; rows sharing a question stay together)%s",
             ", ".join(f"{s} {len(r)}" for s, r in parts.items()), n, cfg.seed,
             "" if carve_test else "; no test split is carved unless data.test_fraction or data.test_size is set")


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
    problems = make_arithmetic_splits(_arithmetic_sizes(cfg), max_steps=a.max_steps, seed=cfg.seed, form=a.form)
    return _apply_limits(problems, cfg.limit)


def _arithmetic_sizes(cfg: DataConfig) -> dict[str, int]:
    a = cfg.arithmetic
    return {"train": a.train, "validation": a.validation, "test": a.test}


# --------------------------------------------------------------------------- streaming

#: Generated tasks: every split exists, counted without generating it (:func:`split_size`);
#: nothing to read, carve, resplit or cross-check between splits.
STREAMED_SOURCES = ("synthetic", "arithmetic")


def can_stream(cfg: DataConfig) -> bool:
    """Whether ``cfg`` is a generated task: every split exists and is streamed (no split need be loaded to check).

    File sources may be streamed too (:func:`streams`), but whether a split exists is only
    known by reading them.
    """
    return cfg.name in STREAMED_SOURCES


def streams(cfg: DataConfig) -> bool:
    """Whether :func:`iter_split` streams ``cfg``'s splits rather than iterating :func:`load_splits`' lists.

    Generated tasks, and local files whose splits are read as they are (:mod:`.file_stream`:
    no carving, no ``data.resplit``, not the hub).
    """
    return can_stream(cfg) or streams_file_split(cfg)


def generated_source(cfg: DataConfig) -> str:
    """Where a generated task's splits come from (``LoadedData.sources``; logs and manifests)."""
    if cfg.name == "synthetic":
        return f"synthetic (seed {cfg.seed})"
    a = cfg.arithmetic
    return f"arithmetic ({a.form}, 1-{a.max_steps} steps, seed {cfg.seed})"


def split_size(cfg: DataConfig, split: str) -> int:
    """``len(load_splits(cfg).require(split))``, computed without the records for a streamed source.

    Why: the console and preflight checks ask for a split's size or existence; loading the
    split for that would make their memory peak grow with the split. A streamed file split
    is counted by reading it (:func:`iter_split`: memory flat, time one pass over the file).
    """
    if not can_stream(cfg):
        if streams_file_split(cfg):
            return sum(1 for _ in iter_file_split(cfg, split, load_splits))
        return len(load_splits(cfg).require(split))
    if split not in SPLITS:
        raise DataLoadError(f"the dataset has no {split!r} split (available: {', '.join(SPLITS)})")
    n = int(getattr(cfg.synthetic if cfg.name == "synthetic" else cfg.arithmetic, split))
    return min(n, cfg.limit.get(split, n))


def iter_split(cfg: DataConfig, split: str) -> Iterator[MCQRecord]:
    """The records of ``split``, in order: ``load_splits(cfg).splits[split]`` without holding them.

    Why: the generation split goes from its source to a local file (``data/split_file.py``)
    in bounded chunks, so the driver's load-time peak does not grow with the split. Same
    records, same order, ``data.limit`` applied, so stores' ``data_hash`` stays valid.
    Streamed: :data:`STREAMED_SOURCES` (generated), and local JSON Lines, CSV and Parquet
    files read row by row (:func:`.file_stream.iter_file_split`: same per-row rules; the
    *other* splits are loaded whole, they are what ``data.split_overlap`` and the error
    order check against). Not streamed, this iterates the list of :func:`load_splits`
    (memory as the whole split): hub datasets, carving (a missing validation split,
    ``data.test_fraction``/``test_size``) and ``data.resplit``, which need whole splits; a
    JSON file that is one array or object is read whole but still adapted row by row.
    Raises :class:`DataLoadError` for a split that does not exist.
    """
    if not can_stream(cfg):
        if streams_file_split(cfg):
            return iter_file_split(cfg, split, load_splits)
        return iter(load_splits(cfg).require(split))
    if split not in SPLITS:
        raise DataLoadError(f"the dataset has no {split!r} split (available: {', '.join(SPLITS)})")
    if cfg.name == "synthetic":
        records: Iterator[MCQRecord] = iter_synthetic_split(cfg.synthetic, split, seed=cfg.seed)
    else:
        a = cfg.arithmetic
        records = (p.to_record() for p in iter_arithmetic_split(
            _arithmetic_sizes(cfg), split, max_steps=a.max_steps, seed=cfg.seed, form=a.form))
    return itertools.islice(records, cfg.limit[split]) if split in cfg.limit else records


def _apply_limits(splits: dict[str, list[_T]], limit: Mapping[str, int]) -> dict[str, list[_T]]:
    """First N items of each limited split (after carving or generating, so neither sees limits)."""
    return {s: (recs[: limit[s]] if s in limit else recs) for s, recs in splits.items()}
