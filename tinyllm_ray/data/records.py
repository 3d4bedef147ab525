"""Raw rows of one split -> validated :class:`MCQRecord` s: the per-row rules, one owner for both load paths.

Why its own module: ``load_splits`` (whole splits as lists) and ``iter_split`` (a file split
streamed row by row, :mod:`.file_stream`) must produce the same records with the same
fallback ids (``{split}-{n}``), the same adapter choice, the same malformed-row rules
(``on_malformed``: error at the file and line, or skip and count) and the same hidden-label
rule; both call :func:`iter_records` and :func:`read_split`. Duplicate ids are looked up in
a :class:`~tinyllm_ray.key_index.KeyIndex` (on local disk), so a streamed split holds none
of its ids in memory.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

from tinyllm_ray.data.adapters import TINYLLM, DatasetAdapter
from tinyllm_ray.data.schema import (
    REASON_DUPLICATE_ID,
    REASON_INVALID_JSON,
    REASON_NO_ANSWER,
    REASON_TOO_FEW_CHOICES,
    MalformedRowError,
    MCQRecord,
    RowError,
)
from tinyllm_ray.errors import DataLoadError
from tinyllm_ray.key_index import KeyIndex

log = logging.getLogger(__name__)


class Part(Protocol):
    """One source of a split's rows: ``readers.RawPart`` (held) or ``readers.StreamedPart`` (read on demand)."""

    source: str
    columns: list[str]

    @property
    def unit(self) -> str: ...

    def numbered_rows(self) -> Iterator[tuple[int, Any]]: ...


def iter_records(split: str, parts: Iterable[Part], adapter: DatasetAdapter, on_malformed: str,
                 counts: Counter[str]) -> Iterator[MCQRecord]:
    """Adapt and validate every row of a split, in order; raise on a bad row, or count it in ``counts``.

    ``counts`` is filled as rows are read (complete once the iterator is exhausted).
    """
    seen = KeyIndex()  # id -> where it was first read
    n = 0  # running index across the split's files: fallback ids stay unique
    try:
        for part in parts:
            part_adapter = _adapter_for(part, adapter)
            unit = part.unit
            for row_no, row in part.numbered_rows():
                fallback_id = f"{split}-{n}"
                n += 1
                try:
                    if isinstance(row, RowError):
                        raise row
                    if not isinstance(row, Mapping):  # e.g. a JSON Lines line holding `0` or `[1, 2]`
                        raise RowError(REASON_INVALID_JSON, f"a row must be a JSON object, got {type(row).__name__}")
                    record = MCQRecord.from_dict(part_adapter(row, fallback_id))
                    if not record.choices and not part_adapter.free_form:
                        raise RowError(REASON_TOO_FEW_CHOICES,
                                       f"{adapter.name} is multiple-choice but the row has no choices")
                    first = seen.put_new(record.id, f"{part.source} {unit} {row_no}")
                    if first is not None:
                        raise RowError(REASON_DUPLICATE_ID, f"id {record.id!r} already used at {first}")
                except RowError as err:
                    if on_malformed != "skip":
                        raise MalformedRowError(part.source, row_no, err.reason, err.detail, unit) from None
                    counts[err.reason] += 1
                    continue
                yield record
    finally:
        seen.close()


def to_records(split: str, parts: Iterable[Part], adapter: DatasetAdapter,
               on_malformed: str) -> tuple[list[MCQRecord], dict[str, int]]:
    """:func:`iter_records` as a list, with the skip counts."""
    counts: Counter[str] = Counter()
    records = list(iter_records(split, parts, adapter, on_malformed, counts))
    return records, dict(counts)


def all_unlabelled(split: str, parts: Iterable[Part], adapter: DatasetAdapter) -> bool:
    """True when every row of the split lacks an answer (a hidden-label test set); stops at the first labelled row."""
    counts: Counter[str] = Counter()
    for _record in iter_records(split, parts, adapter, "skip", counts):
        return False
    return set(counts) == {REASON_NO_ANSWER}


def read_split(split: str, parts: list[Any], adapter: DatasetAdapter, name: str,
               on_malformed: str) -> tuple[list[MCQRecord] | None, dict[str, int]]:
    """``(records, skip counts)`` of one split read whole; records ``None``: a hidden-label split, left out.

    A split in which no row has a gold answer is left out with a warning rather than
    failing under ``on_malformed: error``; one unlabelled row among labelled ones is an error.
    """
    try:
        records, counts = to_records(split, parts, adapter, on_malformed)
    except MalformedRowError as err:
        if err.reason != REASON_NO_ANSWER or not all_unlabelled(split, parts, adapter):
            raise
        records, counts = [], {REASON_NO_ANSWER: sum(1 for p in parts for _ in p.numbered_rows())}
    if records == [] and set(counts) == {REASON_NO_ANSWER}:
        warn_hidden_labels(split, name, counts[REASON_NO_ANSWER])
        return None, counts
    if not records:
        log.warning("split %s of %r is empty (%s)", split, name, " + ".join(p.source for p in parts))
    warn_skipped(split, counts)
    return records, counts


def warn_hidden_labels(split: str, name: str, rows: int) -> None:
    # Hidden-label test sets (CommonsenseQA, RiddleSense, PIQA on the hub) are not
    # malformed, just unusable here: the split is left out instead of failing the job.
    log.warning("split %s of %r has no gold answers in any of its %d rows (hidden test labels): "
                "leaving it out; evaluate on validation or supply data.files.%s", split, name, rows, split)


def warn_skipped(split: str, counts: Mapping[str, int]) -> None:
    if counts:
        log.warning("split %s: skipped %d malformed rows %s", split, sum(counts.values()), dict(counts))


def _adapter_for(part: Part, adapter: DatasetAdapter) -> DatasetAdapter:
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
