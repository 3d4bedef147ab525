"""A split served to Ray tasks by one small actor: any slice of it, without shipping the split.

Why: ``run``'s student reads the train split one slice at a time (the examples of store
shard *k*), in Ray Data tasks. Before, the whole split went into every task's arguments
(``fn_kwargs``: a list of dicts, ~300 bytes an example), so the driver built, pickled and
kept a copy of it for the run, and the object store held it too: memory that grew with
the prompt count (~3 GB at 10 million prompts). Here one :class:`SplitServer` actor (no
CPU, on the driver's node, where local data paths resolve) loads the split into a local
Arrow file (:func:`.split_file.load_and_spill`: streamed for generated tasks and local file
splits) and answers ``records(start, stop)``. What a task or the driver holds is a
:class:`ServedSplit`: the actor's handle and the split's size, a ``Sequence[MCQRecord]``
whose slices are actor calls. Restarted by Ray if its process dies (it loads the same
split again: loading is deterministic).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

from tinyllm_ray.config import DataConfig
from tinyllm_ray.data.schema import MCQRecord
from tinyllm_ray.data.split_file import RecordSequence
from tinyllm_ray.errors import InternalError

log = logging.getLogger(__name__)

#: Examples per actor call when a ServedSplit is iterated whole (fingerprint, group counts).
ITER_CHUNK = 1024
#: Ray restarts a dead server (and retries its calls) this many times.
MAX_RESTARTS = 3


class SplitServer:
    """Ray actor (``num_cpus=0``): one split of a dataset in a local Arrow file, read by slices."""

    def __init__(self, data: dict[str, Any], split: str) -> None:
        self._data, self._split = data, split
        self._records: Sequence[MCQRecord] | None = None

    def _loaded(self) -> Sequence[MCQRecord]:
        """Load on first use, not in ``__init__``: a loading error then reaches the caller as
        itself (a constructor's error only as the text of ``ActorDiedError``), and a restarted
        server loads again when it is next asked."""
        if self._records is None:
            from tinyllm_ray.data.split_file import load_and_spill

            self._records, _ = load_and_spill(DataConfig.model_validate(self._data), self._split)
        return self._records

    def size(self) -> int:
        return len(self._loaded())

    def records(self, start: int, stop: int) -> list[dict[str, Any]]:
        """Examples ``[start, stop)`` as dicts (``MCQRecord.to_dict``: what crosses a process)."""
        return [r.to_dict() for r in self._loaded()[start:stop]]


class ServedSplit(RecordSequence):
    """A split served by a :class:`SplitServer`: picklable (the handle and the size), nothing per example.

    Slices are one actor call each; iterating fetches :data:`ITER_CHUNK` examples at a
    time; a single index is a one-example slice (fine for a check, slow for a loop).
    """

    def __init__(self, actor: Any, size: int) -> None:
        self.actor = actor
        self.size = size

    def __len__(self) -> int:
        return self.size

    def _range(self, start: int, stop: int) -> list[MCQRecord]:
        import ray

        return [MCQRecord.from_dict(d) for d in ray.get(self.actor.records.remote(start, stop))]

    def __iter__(self) -> Iterator[MCQRecord]:
        for start in range(0, self.size, ITER_CHUNK):
            yield from self[start:start + ITER_CHUNK]

    def close(self) -> None:
        """Stop the server (its file goes with it); the split cannot be read afterwards."""
        import ray

        ray.kill(self.actor, no_restart=True)


def serve_split(data: DataConfig, split: str) -> ServedSplit:
    """Start a :class:`SplitServer` for ``split`` of ``data`` on this node and wait until it is loaded.

    Loading errors (a missing split, malformed rows, a refused overlap) are raised here as
    the loader raised them, so a bad dataset fails before anything else starts.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if not ray.is_initialized():
        raise InternalError("serve_split needs Ray to be initialised (runtime.init_ray)")
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    actor = ray.remote(SplitServer).options(
        num_cpus=0, scheduling_strategy=here, max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS).remote(data.model_dump(mode="json"), split)
    try:
        size = ray.get(actor.size.remote())
    except ray.exceptions.RayTaskError as e:  # the loader's own error (a DataError...), as itself
        ray.kill(actor, no_restart=True)
        if isinstance(e.cause, Exception):
            raise e.cause from e
        raise
    log.info("%s split served by an actor (%d examples, local Arrow file; nothing per example on the driver)",
             split, size)
    return ServedSplit(actor, size)


__all__ = ["ITER_CHUNK", "MAX_RESTARTS", "ServedSplit", "SplitServer", "serve_split"]
