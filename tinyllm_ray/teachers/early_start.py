"""Starting teacher engines early: what may run while the engines start, and how.

On CPU a vLLM engine takes ~10 s to start (import, model load, KV cache); the work before
its first batch (loading the split, joining Ray and resolving models, building the first
prompts, record-cache lookups) should run while it starts, not before. Two pieces:

* :func:`load_while_planning`: the split loads in a thread while ``plan_serving`` joins Ray
  and resolves, prechecks and places the models (neither needs the other);
* :class:`BackgroundStart`: an engine pool's first window of batches is built in a thread
  while Ray Data starts the engine actors (``serving.EnginePool.run_stream(eager=True)``).

Why the engines cannot start before the split is loaded: Ray Data needs the number of
batches of the stream's first round (``feed.feed_dataset``: one read task per batch,
planned up front; at most ``teacher.batches_per_round``) when its iteration starts, which
is when it starts the actors; an upper bound is enough, but it comes from the split's
size. Only the first round starts eagerly: later rounds (``feed.rounds_of``) start their
engines once a batch is known to be left. The split itself is loaded and spilled by
``data.split_file.load_and_spill`` (streamed for generated tasks and local file splits).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from tinyllm_ray.store.record_cache import ContextCache
from tinyllm_ray.teachers.feed import CreditFeed

log = logging.getLogger(__name__)

T = TypeVar("T")
P = TypeVar("P")


def may_serve(cache: ContextCache | None) -> bool:
    """Whether a teacher's record-cache folder might serve some prompt (else its engines start eagerly).

    Cheap (one listing): an absent or empty folder serves nothing, so the engines are needed
    whatever the prompts; otherwise the pool peeks first, keeping "no miss, no engine".
    """
    return cache is not None and cache.has_parts()


def load_while_planning(load: Callable[[], T], plan: Callable[[], P]) -> tuple[T, P]:
    """``(load(), plan())`` with ``load`` in a thread; ``load``'s error wins (it used to run first)."""
    got: list[Any] = []

    def run() -> None:
        try:
            got.append(load())
        except BaseException as exc:  # noqa: BLE001 - re-raised below, in the caller's thread
            got.append(exc)

    th = threading.Thread(target=run, name="load-splits", daemon=True)
    th.start()
    try:
        planned = plan()
    finally:
        th.join()
        if isinstance(got[0], BaseException):
            raise got[0]
    return got[0], planned


class BackgroundStart:
    """A :class:`~tinyllm_ray.teachers.feed.CreditFeed` whose first window is built in a thread.

    Ray Data starts the engine actors when its iteration begins; :meth:`CreditFeed.start`
    builds the first ``window`` batches (prompts, record-cache lookups) before returning, so
    the engines would start only after that. Here :meth:`start` returns at once and the
    engines start while the batches are built. The row stream is never pulled by two
    threads: :meth:`credit` (the first answer) joins the thread first, which re-raises
    what it raised. A thread that fails ends the stream (``send(n, None)``) so that the
    engines' side stops waiting for batches.
    """

    def __init__(self, feed: CreditFeed) -> None:
        self._feed = feed
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self, send: Any) -> None:
        def fill() -> None:
            try:
                self._feed.start(send)
            except BaseException as exc:  # noqa: BLE001 - re-raised by join() in the consumer's thread
                self._error = exc
                try:
                    send(self._feed.sent, None)
                except Exception as end_exc:  # noqa: BLE001 - the engines' side is being torn down anyway
                    log.debug("feed end not sent: %s", end_exc)

        self._thread = threading.Thread(target=fill, name="engine-feed-start", daemon=True)
        self._thread.start()

    def join(self, *, raise_error: bool = True) -> None:
        """Wait for the first window to be handed over; re-raise what building it raised."""
        if self._thread is not None:
            self._thread.join()
        if raise_error and self._error is not None:
            exc, self._error = self._error, None
            raise exc

    def credit(self) -> None:
        self.join()
        self._feed.credit()

    def __getattr__(self, name: str) -> Any:  # sent, window, max_unanswered, peek: the feed's
        return getattr(self._feed, name)


__all__ = ["BackgroundStart", "load_while_planning", "may_serve"]
