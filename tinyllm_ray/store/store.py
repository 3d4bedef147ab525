"""The rationale store: Parquet shards under any URI pyarrow or fsspec can open.

Layout (docs/internals.md)::

    <root>/manifest.json
    <root>/records/teacher=<name>/kind=<rationale|self_eval>/shard-<NNNNN>.parquet
    <root>/stats/<name>.json
    <root>/markers/<NAME>          # optional signals for readers (e.g. GENERATION_FAILED)

Why these rules:

* **Persist before trust.** A shard is written to a hidden temporary name and renamed
  into place (local and other POSIX-like filesystems); on object stores (S3, GCS, Azure)
  an object only becomes visible when its upload completes, so it is written under its
  final name directly. Readers never see half a shard.
* **One commit point per shard.** The ``self_eval`` file is written first, the
  ``rationale`` file last; a shard is finished iff its rationale file exists. A job
  killed between the two rewrites the self-evaluation file on rerun (atomic replace),
  so each (teacher, example, sample[, eval]) is stored exactly once.
* **Statistics travel with the data.** The shard's statistics are stored in the
  rationale file's Parquet metadata, so totals are recomputed from committed shards
  only, also across resumed runs.
* **Readable while being written.** Temporary names start with ``.`` (ignored by
  pyarrow and Ray Data) and end in ``.tmp``; :meth:`RationaleStore.shard_files` lists
  only committed shards, so training can stream from a store that is still growing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from tinyllm_ray.errors import StoreMismatchError, StreamingError, UsageError
from tinyllm_ray.store.schema import KINDS, RECORD_COLUMNS, RECORD_SCHEMA, STATS_METADATA_KEY  # noqa: F401
from tinyllm_ray.store.stats import TeacherStats

log = logging.getLogger(__name__)
_SHARD_RE = re.compile(r"^shard-(\d{5,})\.parquet$")
_OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az", "adl", "oss", "r2"}

#: Examples per shard when not configured: small enough that a killed job loses little,
#: large enough that the store does not drown in tiny files (a few hundred KB per shard).
DEFAULT_SHARD_SIZE = 64
#: Marker left by a streaming ``run`` whose generation failed (readers stop waiting).
GENERATION_FAILED = "GENERATION_FAILED"
#: Lock file of the one writer of a local store (hidden: pyarrow and Ray Data ignore it).
WRITER_LOCK = ".writer.lock"


def is_uri(path: str) -> bool:
    """Whether ``path`` is a URI (``scheme://...``) rather than a local path: the one such test."""
    return "://" in str(path)


def resolve_shard_size(configured: int | None, stored: int | None, batch_sizes: Sequence[int]) -> tuple[int, str]:
    """The store's shard size and why: config, else the existing store's, else the default.

    The default is :data:`DEFAULT_SHARD_SIZE`, or the largest teacher batch if bigger (a
    batch never straddles shards). Pure.
    """
    if configured:
        return int(configured), "runtime.store_shard_size"
    if stored:
        return int(stored), "from the existing store"
    size = max([DEFAULT_SHARD_SIZE, *batch_sizes])
    return size, f"default: {DEFAULT_SHARD_SIZE}, or the largest teacher batch_size if bigger"



def resolve_filesystem(uri: str) -> tuple[pafs.FileSystem, str, bool]:
    """``(filesystem, path inside it, is_object_store)`` for a local path or any URI.

    pyarrow handles local paths, ``file://``, ``s3://``, ``gs://``, ``hdfs://``,
    ``abfs://``; anything else goes through fsspec (``memory://``, ``az://`` ...) wrapped
    as a pyarrow filesystem so the rest of the module has one code path.
    """
    scheme = urlparse(uri).scheme if is_uri(uri) else ""
    if not scheme:
        path = os.path.abspath(os.path.expanduser(uri))
        return pafs.LocalFileSystem(), path, False
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
        import fsspec
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        ffs, path = fsspec.core.url_to_fs(uri)
        fs = PyFileSystem(FSSpecHandler(ffs))
    return fs, path.rstrip("/") or "/", scheme.lower() in _OBJECT_STORES


class RationaleStore:
    """Read and write one rationale store (see the module docstring for the layout)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.fs, self.root, self.object_store = resolve_filesystem(uri)

    # ------------------------------------------------------------------ paths
    def _join(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts]) if self.root != "/" else "/" + "/".join(parts)

    def kind_dir(self, teacher: str, kind: str) -> str:
        return self._join("records", f"teacher={teacher}", f"kind={kind}")

    def shard_path(self, teacher: str, kind: str, shard: int) -> str:
        return f"{self.kind_dir(teacher, kind)}/shard-{shard:05d}.parquet"

    @property
    def manifest_path(self) -> str:
        return self._join("manifest.json")

    def stats_path(self, teacher: str) -> str:
        return self._join("stats", f"{teacher}.json")

    # ------------------------------------------------------------------ low-level I/O
    def _exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type == pafs.FileType.File

    def _write_bytes(self, path: str, data: bytes) -> None:
        """Atomic from a reader's point of view (see module docstring)."""
        parent = path.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        if self.object_store:
            with self.fs.open_output_stream(path) as f:
                f.write(data)
            return
        name = path.rsplit("/", 1)[1]
        tmp = f"{parent}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        try:
            self.fs.move(tmp, path)
        except Exception:
            self.fs.delete_file(tmp)
            raise

    def _read_bytes(self, path: str) -> bytes:
        with self.fs.open_input_stream(path) as f:
            return f.read()

    def _write_json(self, path: str, obj: Any) -> None:
        self._write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())

    def _read_json(self, path: str) -> Any:
        return json.loads(self._read_bytes(path).decode())

    def has_file(self, path: str) -> bool:
        """Whether ``path`` (e.g. :meth:`shard_path`) is a committed file (for store pollers)."""
        return self._exists(path)

    # ------------------------------------------------------------------ markers
    def marker_path(self, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ValueError(f"marker name {name!r} must be letters, digits, '_', '.', '-'")
        return self._join("markers", name)

    def write_marker(self, name: str, message: str = "") -> None:
        """Leave a named signal for readers of a store still being written (e.g. a failure)."""
        self._write_bytes(self.marker_path(name), message.encode())

    def has_marker(self, name: str) -> bool:
        return self._exists(self.marker_path(name))

    def read_marker(self, name: str) -> str | None:
        path = self.marker_path(name)
        return self._read_bytes(path).decode() if self._exists(path) else None

    def remove_marker(self, name: str) -> None:
        if self.has_marker(name):
            self.fs.delete_file(self.marker_path(name))

    # ------------------------------------------------------------------ manifest
    def read_manifest(self) -> dict[str, Any] | None:
        return self._read_json(self.manifest_path) if self._exists(self.manifest_path) else None

    def write_manifest(self, manifest: Mapping[str, Any]) -> None:
        self._write_json(self.manifest_path, dict(manifest))

    def open_manifest(self, wanted: Mapping[str, Any]) -> dict[str, Any]:
        """Create the manifest, or check the existing one against ``wanted`` and merge.

        The common part (dataset, prompts, self-evaluation, filter, shard size) must be
        identical; a teacher already in the store must have the same generation config;
        a new teacher is added. Anything else raises :class:`StoreMismatchError`: mixing
        records of two configs in one store would silently corrupt training data.
        """
        have = self.read_manifest()
        if have is None:
            self.write_manifest(wanted)
            return dict(wanted)
        problems = manifest_conflicts(have, wanted)
        if problems:
            raise StoreMismatchError(
                f"rationale store {self.uri} was written with a different generation setup: "
                + "; ".join(problems)
                + ". Rerun with the original config, write to a new store (change runtime.run_name or "
                "runtime.store_uri), or delete the store to regenerate"
            )
        merged = dict(have)
        merged["teachers"] = {**have.get("teachers", {}), **wanted.get("teachers", {})}
        if merged != have:
            self.write_manifest(merged)
        return merged

    # ------------------------------------------------------------------ shards
    def shard_files(self, teacher: str, kind: str = "rationale") -> dict[int, str]:
        """Committed shard files of one teacher and kind: ``{shard index: path}``."""
        sel = pafs.FileSelector(self.kind_dir(teacher, kind), allow_not_found=True)
        out = {}
        for info in self.fs.get_file_info(sel):
            m = _SHARD_RE.match(info.base_name)
            if m and info.type == pafs.FileType.File:
                out[int(m.group(1))] = info.path
        return dict(sorted(out.items()))

    def finished_shards(self, teacher: str) -> set[int]:
        """Shards whose commit file (the rationale file) exists."""
        return set(self.shard_files(teacher, "rationale"))

    @contextlib.contextmanager
    def writer_lock(self) -> Iterator[None]:
        """Hold the store's one-writer lock for the duration of a generation.

        Why: two generations writing one store would race on the same shard names and
        stats files (and one's cleanup of temporary files would delete the other's).
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
        lock = FileLock(os.path.join(self.root, WRITER_LOCK), timeout=0, thread_local=False)
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

    def remove_temporary_files(self, teacher: str) -> int:
        """Delete leftovers of a killed writer (one writer per store at a time)."""
        n = 0
        for kind in KINDS:
            sel = pafs.FileSelector(self.kind_dir(teacher, kind), allow_not_found=True)
            for info in self.fs.get_file_info(sel):
                if info.base_name.startswith(".") and info.base_name.endswith(".tmp"):
                    self.fs.delete_file(info.path)
                    n += 1
        return n

    def write_shard(
        self,
        teacher: str,
        shard: int,
        rationale: Sequence[Mapping[str, Any]],
        self_eval: Sequence[Mapping[str, Any]] | None,
        stats: TeacherStats,
    ) -> str:
        """Write one shard (self-evaluations first, rationale file = commit) and return its path."""
        if self_eval is not None:
            self._write_bytes(self.shard_path(teacher, "self_eval", shard), _parquet_bytes(self_eval))
        meta = {STATS_METADATA_KEY: json.dumps(stats.to_dict(), sort_keys=True).encode()}
        path = self.shard_path(teacher, "rationale", shard)
        self._write_bytes(path, _parquet_bytes(rationale, meta))
        return path

    def shard_stats(self, teacher: str) -> dict[int, TeacherStats]:
        """Statistics of every committed shard of ``teacher`` (from the Parquet footers)."""
        out = {}
        for shard, path in self.shard_files(teacher, "rationale").items():
            with self.fs.open_input_file(path) as f:
                md = pq.read_schema(f).metadata or {}
            raw = md.get(STATS_METADATA_KEY)
            if raw is None:
                raise StoreMismatchError(f"{path} has no shard statistics: not written by this store")
            out[shard] = TeacherStats.from_dict(json.loads(raw))
        return out

    # ------------------------------------------------------------------ stats
    def write_stats(self, stats: TeacherStats) -> str:
        """Write ``stats/<teacher>.json``, unless it already says exactly this.

        A rerun over a finished store recomputes the same totals; leaving the file
        alone keeps a finished store byte- and timestamp-identical (readers such as
        Tune trials can then check nothing was redone).
        """
        path = self.stats_path(stats.teacher)
        new = stats.to_dict()
        if self._exists(path) and self._read_json(path) == json.loads(json.dumps(new)):
            return path
        self._write_json(path, new)
        return path

    def read_stats(self, teacher: str) -> TeacherStats:
        return TeacherStats.from_dict(self._read_json(self.stats_path(teacher)))

    # ------------------------------------------------------------------ reading records
    def teachers(self) -> list[str]:
        """Teachers with a records folder in the store."""
        sel = pafs.FileSelector(self._join("records"), allow_not_found=True)
        return sorted(
            i.base_name.split("=", 1)[1] for i in self.fs.get_file_info(sel)
            if i.type == pafs.FileType.Directory and i.base_name.startswith("teacher=")
        )

    def read_table(self, kind: str = "rationale", teachers: Iterable[str] | None = None) -> pa.Table:
        """All committed records of ``kind`` (optionally only some teachers) as one table."""
        names = list(teachers) if teachers is not None else self.teachers()
        tables = []
        for t in names:
            for path in self.shard_files(t, kind).values():
                with self.fs.open_input_file(path) as f:
                    tables.append(pq.read_table(f, schema=RECORD_SCHEMA).replace_schema_metadata(None))
        if not tables:
            return RECORD_SCHEMA.empty_table()
        return pa.concat_tables(tables)

    def exists(self) -> bool:
        """Whether a generation has opened this store (its manifest exists)."""
        return self._exists(self.manifest_path)

    def row_counts(self, teachers: Iterable[str] | None = None,
                   kinds: Sequence[str] = KINDS) -> dict[tuple[str, str], int]:
        """Committed rows per (teacher, kind) from Parquet footers only (no column data read).

        ``teachers=None`` counts every teacher in the store, so readers can report rows
        of teachers they were not configured with.
        """
        names = list(teachers) if teachers is not None else self.teachers()
        counts: dict[tuple[str, str], int] = {}
        for t in names:
            for k in kinds:
                n = 0
                for path in self.shard_files(t, k).values():
                    with self.fs.open_input_file(path) as f:
                        n += pq.ParquetFile(f).metadata.num_rows
                counts[(t, k)] = n
        return counts

    def read_shard(self, teacher: str, kind: str, shard: int, columns: Sequence[str] | None = None) -> pa.Table:
        """One committed shard file (empty table when that kind has no file for the shard)."""
        path = self.shard_path(teacher, kind, shard)
        if not self._exists(path):
            return RECORD_SCHEMA.empty_table() if columns is None else RECORD_SCHEMA.empty_table().select(
                [c for c in columns if c in RECORD_SCHEMA.names])
        with self.fs.open_input_file(path) as f:
            table = pq.read_table(f, columns=list(columns) if columns is not None else None)
        return table.replace_schema_metadata(None)

    def iter_batches(self, teacher: str, kind: str, columns: Sequence[str], batch_size: int = 8192) -> Iterator[pa.RecordBatch]:
        """Stream ``columns`` of every committed shard of (teacher, kind), one record batch at a time."""
        for path in self.shard_files(teacher, kind).values():
            with self.fs.open_input_file(path) as f:
                pf = pq.ParquetFile(f)
                use = [c for c in columns if c in pf.schema_arrow.names]
                yield from pf.iter_batches(batch_size=batch_size, columns=use)

    # ------------------------------------------------------------------ readiness
    def shard_ready(self, teachers: Iterable[str], shard: int) -> dict[str, bool]:
        """Whether shard ``shard`` is committed (its rationale file exists) for each teacher."""
        return {t: self._exists(self.shard_path(t, "rationale", shard)) for t in teachers}

    def wait_for_shard(self, teachers: Sequence[str], shard: int, *, poll_s: float = 1.0,
                       timeout_s: float = 3600.0, log_every_s: float = 60.0) -> None:
        """Block until ``shard`` is committed for every teacher (streaming readers).

        Stops at once, with the generation's own error, when the failure marker appears;
        after ``timeout_s`` raises :class:`StreamingError` naming the missing teachers.
        Logs what it waits on every ``log_every_s`` seconds, so a wait is never silent.
        """
        start = time.monotonic()
        next_log = start + log_every_s
        while True:
            ready = self.shard_ready(teachers, shard)
            if all(ready.values()):
                return
            missing = [t for t, ok in ready.items() if not ok]
            failure = self.generation_failure()
            if failure is not None:
                raise StreamingError(f"generation failed before shard {shard} was written: {failure}")
            now = time.monotonic()
            if now - start > timeout_s:
                raise StreamingError(
                    f"shard {shard} of teacher(s) {missing} not written after {timeout_s:.0f} s in {self.uri}; "
                    "check the teachers' progress in the job log, or raise the streaming timeout"
                )
            if now >= next_log:
                log.info("waiting for shard %d of teacher(s) %s in %s (%.0f s so far)", shard, missing, self.uri,
                         now - start)
                next_log = now + log_every_s
            time.sleep(poll_s)

    def mark_generation_failed(self, message: str) -> None:
        """Tell waiting readers that generation failed, and why (they raise instead of timing out)."""
        self.write_marker(GENERATION_FAILED, message)

    def clear_generation_failed(self) -> None:
        self.remove_marker(GENERATION_FAILED)

    def generation_failure(self) -> str | None:
        """The saved message of a failed generation, or None."""
        return self.read_marker(GENERATION_FAILED)


def _parquet_bytes(rows: Sequence[Mapping[str, Any]], metadata: Mapping[bytes, bytes] | None = None) -> bytes:
    table = pa.Table.from_pylist([dict(r) for r in rows], schema=RECORD_SCHEMA) if rows else RECORD_SCHEMA.empty_table()
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def manifest_conflicts(have: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """Human-readable differences that make a store unusable for ``wanted`` (pure)."""
    problems = []
    if have.get("version") != wanted.get("version"):
        problems.append(f"store format version {have.get('version')} != {wanted.get('version')}")
    if have.get("common_hash") != wanted.get("common_hash"):
        diffs = _diff_keys(have.get("common", {}), wanted.get("common", {}))
        problems.append("dataset/prompts/self_eval/filter/shard settings differ" + (f" ({', '.join(diffs)})" if diffs else ""))
    if have.get("data_hash") != wanted.get("data_hash"):
        problems.append(
            f"the {wanted.get('split', 'train')} examples differ (data fingerprint "
            f"{have.get('data_hash')} != {wanted.get('data_hash')})"
        )
    for name, spec in (wanted.get("teachers") or {}).items():
        old = (have.get("teachers") or {}).get(name)
        if old is not None and old.get("hash") != spec.get("hash"):
            diffs = _diff_keys(old.get("config", {}), spec.get("config", {}))
            problems.append(f"teacher {name!r} changed" + (f" ({', '.join(diffs)})" if diffs else ""))
    return problems


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [prefix.rstrip(".")] if a != b else []
