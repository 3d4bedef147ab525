"""``KeyIndex``: string keys -> a value, in a private SQLite file on local disk, not in driver memory.

Why on disk: a Python dict or set of every key costs ~100-250 bytes per key for as long as
it lives (the record cache's keys: ~150 bytes per cached prompt, 1.5 GB at 10M; the
arithmetic task's "question already drawn" set: ~250 bytes per problem), i.e. driver
memory that grows with the prompt count. SQLite (stdlib) with an empty file name is a
temporary database that pages to a local file and is deleted when closed; its page cache
is bounded (``cache_size``), so memory stays flat in the number of keys. One owner for
both users: the record cache's key -> part file index (``store/record_cache.py``) and the
set of questions a streamed generated split has drawn (``data/arithmetic.py``).

Lookups are exact (``TEXT`` primary key, binary collation), as ``dict``/``set`` are. Not
thread-safe for concurrent writers; each user owns its index.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

__all__ = ["KeyIndex"]


class KeyIndex:
    """Key -> value (any SQLite value: int, str) on local disk; the first value added for a key wins."""

    _CHUNK = 500  # keys per IN (...) query, far below SQLite's variable limit

    def __init__(self) -> None:
        self._db = sqlite3.connect("", check_same_thread=False)  # "": temporary, on disk, removed on close
        self._db.execute("PRAGMA cache_size = -2048")  # at most ~2 MB of pages in memory
        self._db.execute("CREATE TABLE k (key TEXT PRIMARY KEY, value NOT NULL) WITHOUT ROWID")

    def add(self, keys: Iterable[str], value: Any) -> None:
        """Index ``keys`` with ``value`` (keys already indexed keep their earlier value)."""
        with self._db:
            self._db.executemany("INSERT OR IGNORE INTO k VALUES (?, ?)", ((k, value) for k in keys))

    def get(self, keys: Iterable[str]) -> dict[str, Any]:
        """The value of each of ``keys`` that is indexed (the others are absent)."""
        ks = sorted(set(keys))
        out: dict[str, Any] = {}
        for i in range(0, len(ks), self._CHUNK):
            chunk = ks[i:i + self._CHUNK]
            q = f"SELECT key, value FROM k WHERE key IN ({','.join('?' * len(chunk))})"
            out.update((str(k), v) for k, v in self._db.execute(q, chunk))
        return out

    def put_new(self, key: str, value: Any = 0) -> Any:
        """Index one key unless it is; returns the value it already had (``None``: it was new, now added).

        One statement each way and no commit per key (the temporary database's transaction
        stays open; reads on this connection see it), so a per-row membership test costs a
        few microseconds.
        """
        row = self._db.execute("SELECT value FROM k WHERE key = ?", (key,)).fetchone()
        if row is not None:
            return row[0]
        self._db.execute("INSERT INTO k VALUES (?, ?)", (key, value))
        return None

    def __contains__(self, key: object) -> bool:
        return self._db.execute("SELECT 1 FROM k WHERE key = ?", (key,)).fetchone() is not None

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM k").fetchone()[0])

    def close(self) -> None:
        """Remove the temporary database now (garbage collection of the index does too)."""
        self._db.close()
