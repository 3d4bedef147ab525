"""A file split streamed row by row: ``load_splits(cfg).splits[split]`` without holding the split.

Why: ``tinyllm-ray generate`` on a 10M-row JSON Lines file would otherwise hold every row
(raw dicts, then records) in driver memory at load time. :func:`iter_file_split` reads the
split's own file(s) row by row (``readers.open_part``: JSON Lines line by line, CSV and
Parquet through the ``datasets`` builders in streaming mode) through the same per-row code
as ``load_splits`` (:func:`.records.iter_records`): same records, same order, same fallback
ids, line numbers, adapters and malformed-row rules, so stores' ``data_hash`` is unchanged.

When (:func:`streams_file_split`): a local file source whose splits are its files as they
are. Carving (no validation file next to a train file, ``data.test_fraction`` /
``data.test_size``) and ``data.resplit`` need whole splits: ``iter_split`` keeps the list
path for them, and for hub datasets and for a JSON file that is one value (an array, an
object holding the row list: read whole, still streamed into the records).

What is still held whole: the *other* splits' records (they are checked in order for
malformed rows as ``load_splits`` checks them, and their example keys are what
``data.split_overlap`` compares the streamed split against; validation and test are
small next to a generation split). So streaming ``test`` while ``train`` is huge does not
bound memory; streaming ``train`` does. Error paths that depend on whole splits (an example
shared between splits under ``data.split_overlap: error``, a streamed split with no gold
answer at all, which ``load_splits`` leaves out or replaces by a carved one) call
``load_splits`` itself, so the error or the records are its own.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from tinyllm_ray.config import GENERATED_DATASETS, SPLITS, DataConfig
from tinyllm_ray.data.adapters import DatasetAdapter, get_adapter
from tinyllm_ray.data.discovery import where
from tinyllm_ray.data.readers import open_part, read_file, source_files
from tinyllm_ray.data.records import all_unlabelled, iter_records, read_split, warn_skipped
from tinyllm_ray.data.schema import REASON_NO_ANSWER, MalformedRowError, MCQRecord
from tinyllm_ray.data.splits import StreamedOverlap, split_overlap
from tinyllm_ray.errors import DataLoadError, InternalError

log = logging.getLogger(__name__)


def streams_file_split(cfg: DataConfig) -> bool:
    """Whether ``iter_split`` streams ``cfg``'s file splits: local files, none carved or re-split.

    Only names files (no file is read). A missing path raises the error ``load_splits`` raises.
    """
    carving = cfg.resplit is not None or cfg.test_fraction is not None or cfg.test_size is not None
    if cfg.name in GENERATED_DATASETS or carving:
        return False
    files = source_files(cfg, get_adapter(cfg.name, cfg.columns))
    return bool(files) and ("validation" in files or "train" not in files)


def iter_file_split(cfg: DataConfig, split: str, load_splits: Callable[[DataConfig], Any]) -> Iterator[MCQRecord]:
    """The records of ``split`` read from its file(s) row by row (call when :func:`streams_file_split`).

    Every file is opened and the other splits are read and checked now, in ``load_splits``'
    order (their errors come first when they come first there); the split's own rows are
    checked as they are yielded. Rows past ``data.limit`` are still read: a malformed one
    raises (or is counted) as in ``load_splits``. An error ``load_splits`` would raise after
    the split is complete (a later split's malformed row, a shared example under
    ``data.split_overlap: error``) is raised by the iterator, after or instead of records.
    ``load_splits`` is :func:`tinyllm_ray.data.loader.load_splits`, passed in (the loader
    imports this module): the cases that need whole splits return or raise its own result.
    """
    adapter = get_adapter(cfg.name, cfg.columns)
    files = source_files(cfg, adapter) or {}
    if split not in files:  # carved, absent or not a split: load_splits' records or error
        return iter(load_splits(cfg).require(split))
    parts = {s: [open_part(p, cfg.format) if s == split else read_file(p, cfg.format) for p in paths]
             for s, paths in files.items()}  # read errors first, in file order, as read_sources raises them
    others: dict[str, list[MCQRecord]] = {}
    deferred: Exception | None = None  # a later split's error: load_splits raises it after this split's
    for other in (s for s in SPLITS if s in files and s != split):
        try:
            records, _counts = read_split(other, parts[other], adapter, cfg.name, cfg.on_malformed)
        except (MalformedRowError, DataLoadError) as err:
            if SPLITS.index(other) < SPLITS.index(split):
                raise
            deferred = deferred or err
            continue
        if records is not None:  # None: hidden labels, left out
            others[other] = records[: cfg.limit[other]] if other in cfg.limit else records
    present = {*others, split}
    if "train" in present and "validation" not in present:  # e.g. a hidden-label validation file: carved
        return iter(load_splits(cfg).require(split))
    if cfg.split_overlap == "error" and any(o["shared_examples"] for o in split_overlap(others)):
        return iter(load_splits(cfg).require(split))  # raises load_splits' own SplitOverlapError
    if "train" not in files:
        log.warning("dataset %r at %s has no train split; teachers/student stages will ask for one "
                    "(set data.files.train). Train is never carved from validation or test.", cfg.name, where(cfg))
    return _stream(cfg, split, parts[split], adapter, others, deferred, load_splits)


def _raise_as_load_splits(cfg: DataConfig, load_splits: Callable[[DataConfig], Any]) -> None:
    """Raise the error ``load_splits(cfg)`` raises (one owner of its message), which the caller has detected."""
    load_splits(cfg)
    raise InternalError(f"streaming {cfg.name!r} found an error that load_splits does not raise")


def _stream(cfg: DataConfig, split: str, parts: list[Any], adapter: DatasetAdapter,
            others: dict[str, list[MCQRecord]], deferred: Exception | None,
            load_splits: Callable[[DataConfig], Any]) -> Iterator[MCQRecord]:
    overlap = StreamedOverlap(split, others, cfg.split_overlap)
    limit = cfg.limit.get(split)
    counts: Counter[str] = Counter()
    kept = 0
    try:
        for record in iter_records(split, parts, adapter, cfg.on_malformed, counts):
            kept += 1
            if limit is not None and kept > limit:
                continue  # past data.limit: still read, for its errors and counts
            verdict = overlap.verdict(record)
            if verdict == "error":
                _raise_as_load_splits(cfg, load_splits)  # its SplitOverlapError names every pair, count and id
            if verdict == "drop":
                continue  # shared with a later split, which keeps it
            yield record
    except MalformedRowError as err:
        if err.reason != REASON_NO_ANSWER or kept or not all_unlabelled(split, parts, adapter):
            raise
    if not kept and set(counts) <= {REASON_NO_ANSWER}:
        # No gold answer anywhere (or an empty split): load_splits leaves it out, warns, and may
        # carve it; nothing was yielded, so its records (or its missing-split error) are the answer.
        yield from load_splits(cfg).require(split)
        return
    if deferred is not None:
        raise deferred
    if not kept:
        log.warning("split %s of %r is empty (%s)", split, cfg.name, " + ".join(p.source for p in parts))
    warn_skipped(split, counts)
    overlap.warn()
