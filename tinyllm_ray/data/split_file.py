"""The generation split spilled to a local Arrow file: a ``Sequence[MCQRecord]`` that holds no example in memory.

Why: the generation phase needs the split for the whole run (shard slices, the examples
of each shard when its outputs are parsed, in-context examples drawn at random from the
train split, the manifest's data fingerprint). Held as a ``list[MCQRecord]`` that is
~290 bytes per example for the whole run (28.7 MB at 100k prompts, ~3 GB at 10M): driver
memory that grows with the prompt count. :func:`spill` writes the split once to an Arrow
IPC file in small record batches; :class:`SplitFile` reads one batch per access (an
``os.pread`` of a few KB, from the page cache) and keeps at most :data:`CACHED_BATCHES`
of them, so what the driver holds is bounded whatever the split size.

Not memory-mapped on purpose: pages of a mapped file that random in-context draws touch
count as the driver's resident memory until the kernel reclaims them; reads into
short-lived buffers do not. The file is unlinked as soon as it is open (Linux keeps it
until the last descriptor closes), so a killed driver leaves nothing behind. It lives in
the local temporary directory (``TMPDIR``), never in the store (which may be remote).

Loading (:func:`load_and_spill`): generated tasks (``data.name: synthetic | arithmetic``)
and local JSON Lines / CSV / Parquet files go from their generator or file to the Arrow
file in batches of :data:`ROWS_PER_BATCH` (``data.loader.iter_split``), so the load-time
peak does not grow with the split either (a file source's *other* splits are still loaded
whole: they are what ``data.split_overlap`` checks against). What still is per example:
hub datasets, carving (no validation file), ``data.resplit``, and a JSON file that is one
array are loaded whole first (``load_splits``), so their load-time peak grows with the
split; the generation phase that follows does not. No Ray, no vLLM.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

import pyarrow as pa

from tinyllm_ray.config import DataConfig
from tinyllm_ray.data.schema import MCQRecord
from tinyllm_ray.errors import InternalError

#: Examples per Arrow record batch: one random access reads this many (~20 KB at 64).
ROWS_PER_BATCH = 64
#: Record batches kept in memory between accesses (consecutive examples of a shard share one).
CACHED_BATCHES = 16

log = logging.getLogger(__name__)

_SCHEMA = pa.schema([("id", pa.string()), ("question", pa.string()), ("choices", pa.list_(pa.string())),
                     ("answer", pa.string()), ("context", pa.string())])
_FIELDS = ("id", "question", "answer", "context")  # rebuilt as stored; choices become a tuple


class RecordSequence(Sequence[MCQRecord]):
    """A split read by ranges (``_range``): indexing, negative indices and slices done once for every kind.

    Subclasses: :class:`SplitFile` (a local Arrow file) and ``split_server.ServedSplit``
    (an actor's file, one call per range).
    """

    def _range(self, start: int, stop: int) -> list[MCQRecord]:  # 0 <= start < stop <= len(self)
        raise NotImplementedError

    def _one(self, k: int) -> MCQRecord:
        return self._range(k, k + 1)[0]

    @overload
    def __getitem__(self, i: int) -> MCQRecord: ...
    @overload
    def __getitem__(self, i: slice) -> list[MCQRecord]: ...

    def __getitem__(self, i: int | slice) -> MCQRecord | list[MCQRecord]:
        n = len(self)
        if isinstance(i, slice):
            start, stop, step = i.indices(n)
            if step != 1:
                return [self._one(k) for k in range(start, stop, step)]
            return self._range(start, stop) if stop > start else []
        k = i + n if i < 0 else i
        if not 0 <= k < n:
            raise IndexError(f"example {i} of a split of {n}")
        return self._one(k)


class SplitFile(RecordSequence):
    """Read-only random access to a spilled split; thread-safe (one reader per teacher thread)."""

    def __init__(self, source: pa.NativeFile, rows: int, rows_per_batch: int) -> None:
        self._source = source
        self._reader = pa.ipc.open_file(source)
        self._rows = rows
        self._per_batch = rows_per_batch
        self._cache: OrderedDict[int, pa.RecordBatch] = OrderedDict()
        self._lock = threading.Lock()
        if self._reader.num_record_batches != -(-rows // rows_per_batch):
            raise InternalError(f"split file has {self._reader.num_record_batches} batches for {rows} rows")

    def __len__(self) -> int:
        return self._rows

    def _batch(self, b: int) -> pa.RecordBatch:
        with self._lock:
            batch = self._cache.get(b)
            if batch is not None:
                self._cache.move_to_end(b)
                return batch
            batch = self._reader.get_batch(b)
            self._cache[b] = batch
            if len(self._cache) > CACHED_BATCHES:
                self._cache.popitem(last=False)
            return batch

    def _one(self, i: int) -> MCQRecord:
        return _rebuild(self._batch(i // self._per_batch).slice(i % self._per_batch, 1).to_pylist()[0])

    def _range(self, start: int, stop: int) -> list[MCQRecord]:
        out: list[MCQRecord] = []
        while start < stop:  # a shard: whole batches at a time
            b, off = divmod(start, self._per_batch)
            take = min(stop - start, self._per_batch - off)
            out += [_rebuild(row) for row in self._batch(b).slice(off, take).to_pylist()]
            start += take
        return out

    def __iter__(self) -> Iterator[MCQRecord]:
        """Every example in order, one batch at a time (not through the cache)."""
        for b in range(self._reader.num_record_batches):
            with self._lock:  # the reader is shared with the other teacher threads
                batch = self._reader.get_batch(b)
            for row in batch.to_pylist():
                yield _rebuild(row)

    def close(self) -> None:
        """Release the file now (its space is freed: it was unlinked when opened); dropping the last reference does too."""
        self._cache.clear()
        self._source.close()


def _rebuild(row: dict[str, Any]) -> MCQRecord:
    """The record a row was written from, without validating it again (it was, when loaded).

    Validation (``MCQRecord.__post_init__``) is ~60% of a read; an in-context draw reads
    a record per example drawn, so it would cost every prompt twice over.
    """
    rec = object.__new__(MCQRecord)
    for name in _FIELDS:
        object.__setattr__(rec, name, row[name])
    object.__setattr__(rec, "choices", tuple(row["choices"]))
    return rec


def _to_batch(records: Sequence[MCQRecord]) -> pa.RecordBatch:
    cols: dict[str, list[Any]] = {name: [] for name in _SCHEMA.names}
    for r in records:
        cols["id"].append(r.id)
        cols["question"].append(r.question)
        cols["choices"].append(list(r.choices))
        cols["answer"].append(r.answer)
        cols["context"].append(r.context)
    return pa.RecordBatch.from_pydict(cols, schema=_SCHEMA)


def spill(records: Iterable[MCQRecord], directory: str | None = None,
          rows_per_batch: int = ROWS_PER_BATCH) -> SplitFile:
    """Write ``records`` (in order) to a fresh Arrow file and return it opened as a :class:`SplitFile`.

    ``records`` is consumed once, ``rows_per_batch`` at a time. ``directory``: where the
    (immediately unlinked) file goes; default the local temporary directory.
    """
    if rows_per_batch < 1:
        raise InternalError(f"rows_per_batch must be >= 1, got {rows_per_batch}")
    fd, path = tempfile.mkstemp(prefix="tinyllm-split-", suffix=".arrow", dir=directory)
    os.close(fd)
    try:
        rows = 0
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, _SCHEMA) as writer:
            chunk: list[MCQRecord] = []
            for r in records:
                chunk.append(r)
                if len(chunk) == rows_per_batch:
                    writer.write_batch(_to_batch(chunk))
                    rows += len(chunk)
                    chunk = []
            if chunk:
                writer.write_batch(_to_batch(chunk))
                rows += len(chunk)
        return SplitFile(pa.OSFile(path, "rb"), rows, rows_per_batch)
    finally:
        os.unlink(path)  # open descriptors keep the data; nothing is left behind by a killed driver


def load_and_spill(data: DataConfig, split: str) -> tuple[SplitFile, SplitFile]:
    """``(split, train)`` of the dataset ``data`` spilled (:func:`spill_splits`), streamed when the source can be.

    Streamed sources (``data.loader.streams``: generated tasks, local file splits read as
    they are) are never held as a list; the others go through ``load_splits`` first
    (memory as the whole split, until spilled).
    """
    from tinyllm_ray.data.loader import can_stream, generated_source, iter_split, load_splits, streams
    from tinyllm_ray.memory_probe import mark

    if not streams(data):
        return spill_splits(load_splits(data), split)
    records = spill(iter_split(data, split))
    pool = records if split == "train" else spill(iter_split(data, "train"))
    log.info("loaded %s (%s): %s %d, train (in-context pool) %d, streamed to local files", data.name,
             generated_source(data) if can_stream(data) else "files", split, len(records), len(pool))
    mark("generation")  # benchmarks/load.py: the load-time peak is before this, generation after
    return records, pool


def spill_splits(loaded: Any, split: str) -> tuple[SplitFile, SplitFile]:
    """``(split, train)`` of ``loaded`` (``data.loader.LoadedData``) spilled; one file when ``split`` is train.

    The train split is the in-context pool: never evaluation data (labels would leak into
    teacher prompts). The lists stay alive only as long as the caller's ``loaded``.
    """
    from tinyllm_ray.memory_probe import mark

    train = loaded.require("train")
    records = spill(loaded.require(split))
    pool = records if split == "train" else spill(train)
    mark("generation")  # benchmarks/load.py: the load-time peak is before this, generation after
    return records, pool


__all__ = ["CACHED_BATCHES", "ROWS_PER_BATCH", "RecordSequence", "SplitFile", "load_and_spill", "spill", "spill_splits"]
