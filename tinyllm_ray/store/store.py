"""The rationale store: Parquet shards under any URI pyarrow or fsspec can open.

:class:`RationaleStore` is the one front door; each responsibility lives in its own
module (read it for the *why*):

=================  =============================================================
``layout.py``      paths of records, stats, manifest, markers; shard size
``fs.py``          local path or URI -> one pyarrow filesystem; atomic writes
``schema.py``      record kinds and columns (``rationale``, ``self_eval``, ``failed``)
``keys.py``        content-addressed record keys (what produced a row)
``writer.py``      one writer per store, shard commit protocol, stats files
``reader.py``      committed shards, row counts, tables, failed rows, shard stats
``markers.py``     markers and shard readiness for readers of a growing store
``manifest.py``    what the store was generated from; refusing a different setup
``stats.py``       per-teacher statistics (kept, dropped by reason, failed)
=================  =============================================================
"""

from __future__ import annotations

# Re-exported (defined in their own modules) for code written against the one-module store;
# new code imports them from ``tinyllm_ray.store``.
from tinyllm_ray.errors import StoreMismatchError
from tinyllm_ray.store.fs import is_uri, resolve_filesystem
from tinyllm_ray.store.layout import DEFAULT_SHARD_SIZE, resolve_shard_size
from tinyllm_ray.store.manifest import StoreManifest, manifest_conflicts
from tinyllm_ray.store.markers import GENERATION_FAILED, StoreMarkers
from tinyllm_ray.store.reader import StoreReader
from tinyllm_ray.store.schema import KINDS, RECORD_COLUMNS, RECORD_SCHEMA
from tinyllm_ray.store.writer import StoreWriter


class RationaleStore(StoreReader, StoreWriter, StoreMarkers, StoreManifest):
    """Read and write one rationale store: ``RationaleStore(uri)`` (a local path or any URI).

    Writers: ``with store.writer_lock(): store.open_manifest(...); store.write_shard(...)``.
    Readers: ``shard_files``, ``row_counts``, ``read_shard``, ``iter_batches``,
    ``read_table``, ``failed_rows``, ``wait_for_shard``.
    """


__all__ = [
    "DEFAULT_SHARD_SIZE",
    "GENERATION_FAILED",
    "KINDS",
    "RECORD_COLUMNS",
    "RECORD_SCHEMA",
    "RationaleStore",
    "StoreMismatchError",
    "is_uri",
    "manifest_conflicts",
    "resolve_filesystem",
    "resolve_shard_size",
]
