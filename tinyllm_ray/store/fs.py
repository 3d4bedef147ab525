"""One filesystem code path for local and remote stores, with atomic writes.

Why: the store must work the same on a laptop path, ``file://``, an object store
(``s3://``, ``gs://``, ``abfs://``) and anything fsspec can open (``memory://``, ``az://``).
Everything is resolved to a pyarrow filesystem once (:func:`resolve_filesystem`), and
:class:`StoreCore` gives the rest of the store package a few primitives on top of it.

Persist before trust: a file is written to a hidden temporary name and renamed into
place (local and other POSIX-like filesystems); on object stores an object only becomes
visible when its upload completes, so it is written under its final name directly.
Readers never see half a file.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs

from tinyllm_ray.store.layout import StoreLayout, temporary_path

_OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az", "adl", "oss", "r2"}


def is_uri(path: str) -> bool:
    """Whether ``path`` is a URI (``scheme://...``) rather than a local path: the one such test."""
    return "://" in str(path)


def resolve_filesystem(uri: str) -> tuple[pafs.FileSystem, str, bool]:
    """``(filesystem, path inside it, is_object_store)`` for a local path or any URI.

    pyarrow handles local paths, ``file://``, ``s3://``, ``gs://``, ``hdfs://``,
    ``abfs://``; anything else goes through fsspec (``memory://``, ``az://`` ...) wrapped
    as a pyarrow filesystem so the rest of the package has one code path.
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


class StoreCore:
    """A store root on its filesystem: the layout plus atomic read/write primitives.

    The base of every part of :class:`~tinyllm_ray.store.store.RationaleStore`.
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.fs, self.root, self.object_store = resolve_filesystem(uri)
        self.layout = StoreLayout(self.root)

    # ------------------------------------------------------------------ paths (the layout's)
    def kind_dir(self, teacher: str, kind: str) -> str:
        return self.layout.kind_dir(teacher, kind)

    def shard_path(self, teacher: str, kind: str, shard: int) -> str:
        return self.layout.shard_path(teacher, kind, shard)

    @property
    def manifest_path(self) -> str:
        return self.layout.manifest_path

    def stats_path(self, teacher: str) -> str:
        return self.layout.stats_path(teacher)

    def marker_path(self, name: str) -> str:
        return self.layout.marker_path(name)

    # ------------------------------------------------------------------ primitives
    def has_file(self, path: str) -> bool:
        """Whether ``path`` (e.g. :meth:`shard_path`) is a committed file (for store pollers)."""
        return self.fs.get_file_info(path).type == pafs.FileType.File

    def _list(self, directory: str) -> list[pafs.FileInfo]:
        """Entries of ``directory`` (none if it does not exist)."""
        return self.fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True))

    def _write_bytes(self, path: str, data: bytes) -> None:
        """Write ``path`` so that readers see either nothing, the old or the new file."""
        parent = path.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        if self.object_store:
            with self.fs.open_output_stream(path) as f:
                f.write(data)
            return
        tmp = temporary_path(path)
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
