"""Start a training worker's data stream before the worker is ready to train on it.

Why: a Ray Train worker spends tens of seconds getting ready (importing DeepSpeed and
transformers, building the model and the DeepSpeed engine, a baseline validation), and
Ray Data runs nothing until the first batch is asked for. So before this module, the
slice readers of a streaming ``run`` started only once the worker was ready: their own
start-up (task workers, imports, reading the first committed slices) came after the
worker's, on the critical path to the first optimizer step. :class:`EarlyBatches`
iterates the stream in a thread from the moment the worker starts; batches wait in a
small queue and are collated once the tokenizer exists (:meth:`EarlyBatches.set_collate`).

Pure apart from threads (no Ray, no torch): the caller passes a function that opens the
iterator (e.g. ``lambda: shard.iter_batches(...)``), so it is unit-tested with lists.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

__all__ = ["EarlyBatches"]

_END = object()
_POLL_S = 0.2


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class EarlyBatches:
    """One pass over ``open_batches()``, pulled by a daemon thread from construction on.

    Items are ``collate(raw)`` once :meth:`set_collate` was called (in the thread, as Ray
    Data's own collate runs off the training thread); until then the thread holds the
    first raw batch and Ray Data keeps reading ahead up to its own back-pressure. An
    error while reading is raised by the iteration, where the batch would have been.
    Iterate once; :meth:`close` stops the thread after its current batch.
    """

    def __init__(self, open_batches: Callable[[], Iterable[Any]], depth: int = 1) -> None:
        self._open = open_batches
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
        self._collate: Callable[[Any], Any] | None = None
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tinyllm-early-batches", daemon=True)
        self._thread.start()

    def set_collate(self, collate: Callable[[Any], Any]) -> None:
        """Turn raw batches into training batches from now on (e.g. a ``TaskCollator``)."""
        self._collate = collate
        self._ready.set()

    def close(self) -> None:
        """Stop pulling (the thread ends after its current batch; nothing more is queued)."""
        self._stop.set()
        self._ready.set()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for raw in self._open():
                self._ready.wait()
                if self._stop.is_set() or self._collate is None:
                    return
                if not self._put(self._collate(raw)):
                    return
        except BaseException as exc:  # noqa: BLE001 - re-raised by __iter__ in the training thread
            self._put(_Failed(exc))
            return
        self._put(_END)

    def __iter__(self) -> Iterator[Any]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield item
