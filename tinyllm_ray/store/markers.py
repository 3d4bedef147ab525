"""Signals between a store's writer and its readers: markers and shard readiness.

Why: ``run`` trains while teachers still generate. A reader of shard *k* must know
when *k* is committed for every teacher (its rationale file exists: the commit point),
and must stop at once — with the generation's own error — when generation failed,
instead of waiting for a deadline. Markers are small files under ``<root>/markers/``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence

from tinyllm_ray.errors import StreamingError
from tinyllm_ray.store.fs import StoreCore

log = logging.getLogger(__name__)

#: Marker left by a streaming ``run`` whose generation failed (readers stop waiting).
GENERATION_FAILED = "GENERATION_FAILED"


class StoreMarkers(StoreCore):
    """Markers and shard readiness (part of :class:`~tinyllm_ray.store.store.RationaleStore`)."""

    # ------------------------------------------------------------------ markers
    def write_marker(self, name: str, message: str = "") -> None:
        """Leave a named signal for readers of a store still being written (e.g. a failure)."""
        self._write_bytes(self.marker_path(name), message.encode())

    def has_marker(self, name: str) -> bool:
        return self.has_file(self.marker_path(name))

    def read_marker(self, name: str) -> str | None:
        path = self.marker_path(name)
        return self._read_bytes(path).decode() if self.has_file(path) else None

    def remove_marker(self, name: str) -> None:
        if self.has_marker(name):
            self.fs.delete_file(self.marker_path(name))

    def mark_generation_failed(self, message: str) -> None:
        """Tell waiting readers that generation failed, and why (they raise instead of timing out)."""
        self.write_marker(GENERATION_FAILED, message)

    def clear_generation_failed(self) -> None:
        self.remove_marker(GENERATION_FAILED)

    def generation_failure(self) -> str | None:
        """The saved message of a failed generation, or None."""
        return self.read_marker(GENERATION_FAILED)

    # ------------------------------------------------------------------ readiness
    def shard_ready(self, teachers: Iterable[str], shard: int) -> dict[str, bool]:
        """Whether shard ``shard`` is committed (its rationale file exists) for each teacher."""
        return {t: self.has_file(self.shard_path(t, "rationale", shard)) for t in teachers}

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
