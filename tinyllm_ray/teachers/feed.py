"""Prompt batches streamed from the driver into Ray Data, a bounded window at a time.

Why: ``ray.data.from_blocks(all batches)`` (what the pool did before) puts every prompt of
a run in the object store at once and keeps every row and Arrow table alive on the driver
until the run ends: about 5 KB per prompt (prompt text with its in-context examples), i.e.
memory that grows with the prompt count (50 GB at 10 million prompts). Ray Data has no
source fed by a driver-side iterator, so this module adds one:

* :class:`BatchFeeder`: a small async actor (no CPU) holding the batches handed to it, in
  order of their sequence number;
* :func:`feed_dataset`: a read of a datasource (:func:`_datasource`) whose every read task asks the
  feeder for the next batch (an empty block once the stream has ended);
* :class:`CreditFeed` (driver): pulls batches from the caller's iterator *lazily* and hands
  the feeder at most ``window`` batches more than the output blocks received so far. Every
  input batch gives at least one output block (each prompt gives at least one row, a
  failed one included), so at most ``window`` batches are between the driver and the
  engines at any time, whatever the prompt count;
* :func:`rounds_of`: the batches in rounds of ``teacher.batches_per_round``, one Ray Data
  execution each (``serving.EnginePool``), since an execution keeps a read task per batch
  until it ends: that too is then bounded by the round, not the run.

Rows are built on the driver (not in a read task) so that the driver can still look at
each batch before it is served (a record cache, retries) and the split is never shipped.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from tinyllm_ray.errors import InternalError

_B = TypeVar("_B")
_END = object()


def batches_of(row_lists: Iterable[Sequence[Mapping[str, Any]]], batch_size: int) -> Iterator[list[Mapping[str, Any]]]:
    """Consecutive batches of ``batch_size`` rows across ``row_lists`` (the last may be shorter).

    The same batches as cutting the concatenation of every list, without building it: a
    batch is complete as soon as its rows have been pulled from ``row_lists`` (one shard at
    a time in the pipeline), so the shards after it are not built yet.
    """
    if batch_size < 1:
        raise InternalError(f"batch_size must be >= 1, got {batch_size}")
    buf: list[Mapping[str, Any]] = []
    for rows in row_lists:
        for r in rows:
            buf.append(r)
            if len(buf) == batch_size:
                yield buf
                buf = []
    if buf:
        yield buf


def rounds_of(batches: Iterable[_B], per_round: int) -> Iterator[Iterator[_B]]:
    """``batches`` in consecutive rounds of at most ``per_round`` (one Ray Data execution each).

    Lazy: a round is an ``islice`` of the same iterator, so it must be consumed before the
    next round is asked for. The first round is yielded before anything is pulled (it may
    be empty: an eager start builds its first batches while the engines start); a later
    round exists only if a batch is left (pulled then, not before). Why rounds: Ray Data
    builds and keeps every read task of an execution up front (:func:`feed_dataset`), so
    serving in rounds bounds that to ``per_round`` batches whatever the prompt count.
    """
    if per_round < 1:
        raise InternalError(f"per_round must be >= 1, got {per_round}")
    it = iter(batches)
    yield itertools.islice(it, per_round)
    while (first := next(it, _END)) is not _END:
        yield itertools.chain([first], itertools.islice(it, per_round - 1))  # type: ignore[list-item]


class BatchFeeder:
    """Ray actor (async, ``num_cpus=0``): the batches the driver handed over, read in sequence order.

    Actor calls of an async actor may run out of submission order, hence the sequence
    numbers; :meth:`next` returns ``None`` once the end (a ``None`` block) said how many
    there are and all were read.
    """

    def __init__(self) -> None:
        self._blocks: dict[int, Any] = {}
        self._next = 0
        self._total: int | None = None
        self._changed = asyncio.Condition()

    async def put(self, seq: int, block: Any) -> None:
        """Batch ``seq``; ``block=None``: the stream has ``seq`` batches in all."""
        async with self._changed:
            if block is None:
                self._total = seq
            else:
                self._blocks[seq] = block
            self._changed.notify_all()

    async def next(self) -> Any:
        async with self._changed:
            await self._changed.wait_for(lambda: self._next in self._blocks or self._total == self._next)
            if self._next in self._blocks:
                self._next += 1
                return self._blocks.pop(self._next - 1)
            return None


class _Fetch:
    """A read task's body: the feeder's next batch as one block (an empty one past the end)."""

    def __init__(self, feeder: Any) -> None:
        self.feeder = feeder

    def __call__(self) -> list[Any]:
        import pyarrow as pa
        import ray

        block = ray.get(self.feeder.next.remote())
        return [block if block is not None else pa.table({})]


def _datasource(feeder: Any, max_batches: int) -> Any:
    """A ``ray.data.Datasource`` of ``max_batches`` read tasks, each one :class:`_Fetch` (Ray imported here, not at import)."""
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class _FeedDatasource(Datasource):
        def get_name(self) -> str:
            return "Feed"

        def estimate_inmemory_data_size(self) -> int | None:
            return None  # unknown: no block splitting, no size-based parallelism

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                           data_context: Any = None) -> list[Any]:
            meta = BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None)
            fetch = _Fetch(feeder)
            return [ReadTask(fetch, meta) for _ in range(max_batches)]

    return _FeedDatasource()


def feed_dataset(feeder: Any, max_batches: int) -> Any:
    """A Ray Data dataset of the feeder's batches, one block each, in order (at most ``max_batches``).

    Every read task is one fetch (:class:`_Fetch`), so its block is emitted when it ends:
    a read task that yielded several batches would be buffered by Ray Data up to
    ``target_max_block_size``, i.e. wait for batches the driver only sends once earlier
    ones are answered. One fetch at a time (``concurrency=1``; ``num_cpus=0``: it only
    waits), and a fetch returns only what the driver handed over, so at most the credit
    window of batch blocks is in the object store whatever the prompt count.

    Why not ``range(max_batches)`` mapped by a fetch (what this was): the range read tasks
    finish at once and their one-row blocks are too small for Ray Data's byte-based
    backpressure to hold back, so one block per batch of the run piled up ahead of the
    fetch. What remains per batch: Ray Data 2.60 builds every read task up front and keeps
    each ``ray.put`` of it until the execution ends (``plan_read_op``: ``owns_blocks=False``),
    ~1.4 KB of object store per batch (not per prompt) since a task holds only the feeder's
    handle; the pool bounds it by serving in rounds (:func:`rounds_of`, one execution of at
    most ``teacher.batches_per_round`` batches each). Past the end of the stream a fetch returns an empty block, which the engines'
    ``map_batches`` passes on without a call, so ``max_batches`` may be an upper bound.
    """
    import ray

    return ray.data.read_datasource(_datasource(feeder, max_batches), override_num_blocks=max_batches,
                                    concurrency=1, num_cpus=0)


class CreditFeed:
    """Driver side of the stream: at most ``window`` batches handed over and not yet answered.

    ``to_block(seq, rows)`` turns a batch into what the engines receive (an Arrow table
    with its ``batch`` number). Call :meth:`start` with the way to the engines (e.g. the
    feeder's ``put``), then :meth:`credit` for every output block received.
    """

    def __init__(self, batches: Iterator[list[Mapping[str, Any]]], window: int, to_block: Any) -> None:
        if window < 1:
            raise InternalError(f"window must be >= 1, got {window}")
        self._batches = batches
        self._head: list[list[Mapping[str, Any]]] = []
        self._window = window
        self._to_block = to_block
        self._sent = 0
        self._credits = 0
        self.max_unanswered = 0  # most batches ever handed over and not answered (<= window)
        self._ended = False
        self._send: Callable[[int, Any], Any] | None = None

    def peek(self, k: int) -> int:
        """Pull up to ``k`` batches ahead (kept for :meth:`start`); how many there are (<= ``k``)."""
        while len(self._head) < k:
            nxt = next(self._batches, None)
            if nxt is None:
                break
            self._head.append(nxt)
        return len(self._head)

    @property
    def sent(self) -> int:
        """Batches handed to the feeder so far."""
        return self._sent

    def start(self, send: Callable[[int, Any], Any]) -> None:
        """Begin: ``send(seq, block)`` hands a batch over, ``send(n, None)`` says there are ``n`` in all."""
        self._send = send
        for _ in range(self._window):
            self._send_one()

    @property
    def window(self) -> int:
        return self._window

    def join(self, *, raise_error: bool = True) -> None:
        """Nothing to wait for: :meth:`start` hands the first window over before returning
        (``early_start.BackgroundStart`` builds it in a thread and waits here)."""

    def credit(self) -> None:
        """One output block arrived: hand over one more batch (or the end of the stream)."""
        self._credits += 1
        self._send_one()

    def _send_one(self) -> None:
        if self._ended:
            return
        batch = self._head.pop(0) if self._head else next(self._batches, None)
        if batch is None:
            self._ended = True
            self._send(self._sent, None)
            return
        self._send(self._sent, self._to_block(self._sent, batch))
        self._sent += 1
        self.max_unanswered = max(self.max_unanswered, self._sent - self._credits)
