"""Reading a store: committed shards only, from Parquet footers where possible.

Why: the student, the reports and ``run``'s streaming reader all read a store that
may still be growing. Only committed shard files are listed (temporary files are
hidden), row counts come from Parquet footers (no column data read), and the ``failed``
partition is only returned when asked for by name, so student readers never see it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from tinyllm_ray.errors import CorruptShardError, StoreMismatchError
from tinyllm_ray.store.fs import StoreCore
from tinyllm_ray.store.layout import StoreLayout, shard_index
from tinyllm_ray.store.schema import FAILED_KIND, KINDS, STATS_METADATA_KEY, schema_for
from tinyllm_ray.store.stats import TeacherStats


class StoreReader(StoreCore):
    """Listing and reading records and statistics (part of :class:`~tinyllm_ray.store.store.RationaleStore`)."""

    def _kind_files(self, teacher: str, kind: str) -> dict[int, str]:
        out = {}
        for info in self._list(self.kind_dir(teacher, kind)):
            idx = shard_index(info.base_name)
            if idx is not None and info.type == pafs.FileType.File:
                out[idx] = info.path
        return dict(sorted(out.items()))

    def shard_files(self, teacher: str, kind: str = "rationale") -> dict[int, str]:
        """Committed shard files of one teacher and kind: ``{shard index: path}``.

        A ``self_eval`` or ``failed`` file counts only once its shard's rationale file (the
        commit point) exists: a writer killed between the two leaves it behind, and the
        rerun rewrites it.
        """
        files = self._kind_files(teacher, kind)
        if kind == "rationale" or not files:
            return files
        committed = self.finished_shards(teacher)
        return {i: p for i, p in files.items() if i in committed}

    def finished_shards(self, teacher: str) -> set[int]:
        """Shards whose commit file (the rationale file) exists."""
        return set(self._kind_files(teacher, "rationale"))

    def teachers(self) -> list[str]:
        """Teachers with a records folder in the store."""
        names = (StoreLayout.teacher_of(i.base_name) for i in self._list(self.layout.records_dir)
                 if i.type == pafs.FileType.Directory)
        return sorted(n for n in names if n is not None)

    @contextlib.contextmanager
    def _readable(self, path: str) -> Iterator[None]:
        """pyarrow's error on a damaged shard file -> :class:`CorruptShardError` naming the file and the fix.

        Why: a committed file is complete when written (atomic rename or upload), so a
        failure to read it means it was damaged afterwards (a full disk, a copy cut short,
        an edit); the user needs the file and the way to regenerate it, not a pyarrow trace.
        """
        try:
            yield
        except FileNotFoundError:
            raise
        except (pa.ArrowException, OSError, ValueError, KeyError, TypeError) as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            name = path.rsplit("/", 1)[-1]
            commit = path.rsplit("/", 2)[0] + "/kind=rationale/" + name  # layout: teacher=<t>/kind=<k>/<name>
            fix = ("delete it" if commit == path else f"delete it and its shard's commit file {commit}")
            raise CorruptShardError(
                f"store {self.uri}: shard file {path} cannot be read ({type(exc).__name__}: {first}); "
                f"{fix}, then run `tinyllm-ray generate` again to regenerate that shard"
            ) from exc

    def _read_file(self, path: str, kind: str, columns: Sequence[str] | None = None) -> pa.Table:
        with self._readable(path), self.fs.open_input_file(path) as f:
            # verify the writer's page checksums: a flipped byte is an error, not wrong text
            if columns is None:
                table = pq.read_table(f, schema=schema_for(kind), page_checksum_verification=True)
            else:
                table = pq.read_table(f, columns=list(columns), page_checksum_verification=True)
            return table.replace_schema_metadata(None)

    def read_table(self, kind: str = "rationale", teachers: Iterable[str] | None = None) -> pa.Table:
        """All committed records of ``kind`` (optionally only some teachers) as one table."""
        names = list(teachers) if teachers is not None else self.teachers()
        tables = [self._read_file(path, kind) for t in names for path in self.shard_files(t, kind).values()]
        return pa.concat_tables(tables) if tables else schema_for(kind).empty_table()

    def failed_rows(self, teacher: str) -> pa.Table:
        """Every stored generation failure of ``teacher`` (record columns + ``error``), for a retry."""
        return self.read_table(FAILED_KIND, [teacher])

    def row_counts(self, teachers: Iterable[str] | None = None,
                   kinds: Sequence[str] = KINDS) -> dict[tuple[str, str], int]:
        """Committed rows per (teacher, kind) from Parquet footers only (no column data read).

        ``teachers=None`` counts every teacher in the store, so readers can report rows
        of teachers they were not configured with. ``failed`` rows are counted only when
        asked for in ``kinds``.
        """
        names = list(teachers) if teachers is not None else self.teachers()
        counts: dict[tuple[str, str], int] = {}
        for t in names:
            for k in kinds:
                n = 0
                for path in self.shard_files(t, k).values():
                    with self._readable(path), self.fs.open_input_file(path) as f:
                        n += pq.ParquetFile(f).metadata.num_rows
                counts[(t, k)] = n
        return counts

    def read_shard(self, teacher: str, kind: str, shard: int, columns: Sequence[str] | None = None) -> pa.Table:
        """One committed shard file (empty table when that kind has no file for the shard)."""
        path = self.shard_path(teacher, kind, shard)
        if not self.has_file(path):
            empty = schema_for(kind).empty_table()
            return empty if columns is None else empty.select([c for c in columns if c in empty.schema.names])
        return self._read_file(path, kind, columns)

    def iter_batches(self, teacher: str, kind: str, columns: Sequence[str],
                     batch_size: int = 8192) -> Iterator[pa.RecordBatch]:
        """Stream ``columns`` of every committed shard of (teacher, kind), one record batch at a time."""
        for path in self.shard_files(teacher, kind).values():
            with self._readable(path), self.fs.open_input_file(path) as f:
                pf = pq.ParquetFile(f, page_checksum_verification=True)
                use = [c for c in columns if c in pf.schema_arrow.names]
                yield from pf.iter_batches(batch_size=batch_size, columns=use)

    def shard_stats(self, teacher: str) -> dict[int, TeacherStats]:
        """Statistics of every committed shard of ``teacher`` (from the Parquet footers)."""
        return dict(self.iter_shard_stats(teacher))

    def iter_shard_stats(self, teacher: str) -> Iterator[tuple[int, TeacherStats]]:
        """``(shard, statistics)`` of each committed shard, one footer at a time.

        For totals over a large store: summing as they are read keeps one shard's
        statistics in memory, not every shard's.
        """
        for shard, path in self.shard_files(teacher, "rationale").items():
            with self._readable(path):
                with self.fs.open_input_file(path) as f:
                    md = pq.read_schema(f).metadata or {}
                raw = md.get(STATS_METADATA_KEY)
                if raw is None:
                    raise StoreMismatchError(f"{path} has no shard statistics: not written by this store")
                stats = TeacherStats.from_dict(json.loads(raw))
            yield shard, stats

    def read_stats(self, teacher: str) -> TeacherStats:
        """The totals last written to ``stats/<teacher>.json``."""
        return TeacherStats.from_dict(self._read_json(self.stats_path(teacher)))
