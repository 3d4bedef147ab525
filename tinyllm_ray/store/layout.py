"""Where everything lives inside a rationale store root, and how big a shard is.

Layout (docs/internals.md)::

    <root>/manifest.json
    <root>/records/teacher=<name>/kind=<rationale|self_eval|failed>/shard-<NNNNN>.parquet
    <root>/stats/<name>.json
    <root>/markers/<NAME>          # optional signals for readers (e.g. GENERATION_FAILED)
    <root>/.writer.lock            # local stores: held by the one writer

Why one module: the student, the teachers and the reports all need these paths; if any
of them built a path itself, a layout change would silently split the store in two.
Pure string logic over a root path (no I/O).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

_SHARD_RE = re.compile(r"^shard-(\d{5,})\.parquet$")
_MARKER_RE = re.compile(r"[A-Za-z0-9_.-]+")

#: Examples per shard when not configured: small enough that a killed job loses little,
#: large enough that the store does not drown in tiny files (a few hundred KB per shard).
DEFAULT_SHARD_SIZE = 64
#: Lock file of the one writer of a local store (hidden: pyarrow and Ray Data ignore it).
WRITER_LOCK = ".writer.lock"


def num_shards(num_examples: int, shard_size: int) -> int:
    """How many shards ``num_examples`` make (the last one may be short): slices for the student."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    return -(-num_examples // shard_size)


def shard_length(num_examples: int, shard: int, shard_size: int) -> int:
    """How many examples shard ``shard`` holds (``shard_size`` but the last), counted without the examples."""
    if not 0 <= shard < num_shards(num_examples, shard_size):
        raise ValueError(f"shard {shard} of a split of {num_examples} examples in shards of {shard_size}")
    return min(shard_size, num_examples - shard * shard_size)


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


def shard_index(file_name: str) -> int | None:
    """The shard number of a committed shard file name, or None for anything else."""
    m = _SHARD_RE.match(file_name)
    return int(m.group(1)) if m else None


def is_temporary(file_name: str) -> bool:
    """Whether a file name is a writer's temporary file (see :func:`temporary_path`)."""
    return file_name.startswith(".") and file_name.endswith(".tmp")


def temporary_path(path: str) -> str:
    """A unique hidden sibling of ``path`` to write to before renaming into place.

    Starts with ``.`` (ignored by pyarrow and Ray Data) and ends in ``.tmp``.
    """
    parent, name = path.rsplit("/", 1)
    return f"{parent}/.{name}.{uuid.uuid4().hex[:8]}.tmp"


@dataclass(frozen=True)
class StoreLayout:
    """Paths inside one store root (a filesystem path as returned by ``resolve_filesystem``)."""

    root: str

    def join(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts]) if self.root != "/" else "/" + "/".join(parts)

    @property
    def records_dir(self) -> str:
        return self.join("records")

    def kind_dir(self, teacher: str, kind: str) -> str:
        return self.join("records", f"teacher={teacher}", f"kind={kind}")

    def shard_path(self, teacher: str, kind: str, shard: int) -> str:
        return f"{self.kind_dir(teacher, kind)}/shard-{shard:05d}.parquet"

    @property
    def manifest_path(self) -> str:
        return self.join("manifest.json")

    def stats_path(self, teacher: str) -> str:
        return self.join("stats", f"{teacher}.json")

    def marker_path(self, name: str) -> str:
        if not _MARKER_RE.fullmatch(name):
            raise ValueError(f"marker name {name!r} must be letters, digits, '_', '.', '-'")
        return self.join("markers", name)

    @property
    def writer_lock_path(self) -> str:
        return self.join(WRITER_LOCK)

    @staticmethod
    def teacher_of(dir_name: str) -> str | None:
        """The teacher name of a ``teacher=<name>`` folder name, or None."""
        return dir_name.split("=", 1)[1] if dir_name.startswith("teacher=") else None
