"""Writing a store: one writer at a time, one commit point per shard, stats beside the data.

Why these rules:

* **One writer per store.** Two generations writing one store would race on shard
  names and stats files, and one's cleanup would delete the other's temporary files.
  :meth:`StoreWriter.writer_lock` enforces it on local/POSIX stores.
* **One commit point per shard.** The ``failed`` and ``self_eval`` files are written
  first, the ``rationale`` file last; a shard is finished iff its rationale file exists.
  A job killed in between rewrites the earlier files on rerun (atomic replace, or
  removal of a ``failed`` file the new attempt does not have), so each
  (teacher, example, sample[, eval]) is stored exactly once.
* **Statistics travel with the data.** The shard's statistics are stored in the
  rationale file's Parquet metadata, so totals are recomputed from committed shards
  only, also across resumed runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from tinyllm_ray.errors import UsageError
from tinyllm_ray.store.fs import StoreCore
from tinyllm_ray.store.layout import is_temporary
from tinyllm_ray.store.schema import FAILED_KIND, STATS_METADATA_KEY, STORED_KINDS, schema_for
from tinyllm_ray.store.stats import StatsError, TeacherStats

log = logging.getLogger(__name__)


def parquet_bytes(rows: Sequence[Mapping[str, Any]], schema: pa.Schema,
                  metadata: Mapping[bytes, bytes] | None = None) -> bytes:
    """One shard file's bytes: ``rows`` in ``schema`` (zstd), with optional footer metadata."""
    table = pa.Table.from_pylist([dict(r) for r in rows], schema=schema) if rows else schema.empty_table()
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    sink = pa.BufferOutputStream()
    # Page checksums (CRC32): a byte flipped inside a page fails the read instead of reading back wrong.
    pq.write_table(table, sink, compression="zstd", write_page_checksum=True)
    return sink.getvalue().to_pybytes()


class StoreWriter(StoreCore):
    """Shards, statistics and the writer lock (part of :class:`~tinyllm_ray.store.store.RationaleStore`)."""

    @contextlib.contextmanager
    def writer_lock(self) -> Iterator[None]:
        """Hold the store's one-writer lock for the duration of a generation.

        Local/POSIX stores take ``<root>/.writer.lock`` with ``filelock`` (released by the
        OS if the process dies); a second writer fails at once with :class:`UsageError`.
        Object and in-memory stores have no portable lock: one writer is by convention.
        """
        if not isinstance(self.fs, pafs.LocalFileSystem):
            log.info("store %s: one writer at a time by convention (no lock on this filesystem)", self.uri)
            yield
            return
        from filelock import FileLock, Timeout

        os.makedirs(self.root, exist_ok=True)
        lock = FileLock(self.layout.writer_lock_path, timeout=0, thread_local=False)
        try:
            lock.acquire()
        except Timeout:
            raise UsageError(
                f"rationale store {self.uri} is being written by another generation (lock {lock.lock_file} is "
                "held); wait for it to finish, or write to another store (runtime.run_name or runtime.store_uri)"
            ) from None
        try:
            yield
        finally:
            lock.release()

    def write_shard(
        self,
        teacher: str,
        shard: int,
        rationale: Sequence[Mapping[str, Any]],
        self_eval: Sequence[Mapping[str, Any]] | None,
        stats: TeacherStats,
        *,
        failed: Sequence[Mapping[str, Any]] | None = None,
    ) -> str:
        """Write one shard and return the path of its commit (rationale) file.

        Order: ``failed`` rows (one per generation that failed, with ``error``), then
        self-evaluations, then the rationale file with ``stats`` in its footer. The
        number of failed rows must equal ``stats.failed`` (every counted failure can be
        retried). Without failed rows a ``failed`` file of an earlier, uncommitted
        attempt is removed.
        """
        failed = list(failed or ())
        if len(failed) != stats.failed:
            raise StatsError(
                f"teacher {teacher!r} shard {shard}: {len(failed)} failed rows but the statistics count "
                f"{stats.failed} failed generations"
            )
        failed_path = self.shard_path(teacher, FAILED_KIND, shard)
        if failed:
            self._write_bytes(failed_path, parquet_bytes(failed, schema_for(FAILED_KIND)))
        elif self.has_file(failed_path):
            self.fs.delete_file(failed_path)
        if self_eval is not None:
            self._write_bytes(self.shard_path(teacher, "self_eval", shard),
                              parquet_bytes(self_eval, schema_for("self_eval")))
        meta = {STATS_METADATA_KEY: json.dumps(stats.to_dict(), sort_keys=True).encode()}
        path = self.shard_path(teacher, "rationale", shard)
        self._write_bytes(path, parquet_bytes(rationale, schema_for("rationale"), meta))
        return path

    def remove_temporary_files(self, teacher: str) -> int:
        """Delete leftovers of a killed writer (safe under :meth:`writer_lock`: one writer at a time)."""
        n = 0
        for kind in STORED_KINDS:
            for info in self._list(self.kind_dir(teacher, kind)):
                if is_temporary(info.base_name):
                    self.fs.delete_file(info.path)
                    n += 1
        return n

    def write_stats(self, stats: TeacherStats) -> str:
        """Write ``stats/<teacher>.json``, unless it already says exactly this.

        A rerun over a finished store recomputes the same totals; leaving the file
        alone keeps a finished store byte- and timestamp-identical (readers such as
        Tune trials can then check nothing was redone).
        """
        path = self.stats_path(stats.teacher)
        new = stats.to_dict()
        if self.has_file(path) and self._read_json(path) == json.loads(json.dumps(new)):
            return path
        self._write_json(path, new)
        return path
