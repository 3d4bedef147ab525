"""Regroup the stream of teacher outputs into complete shards.

Why: Ray Data returns outputs in whatever order and grouping the actors finish them;
a shard may only be written once *all* its outputs are in. A shard is complete when it
has ``n`` rationale rows per example and, for every rationale row, the ``n_evals``
self-evaluation rows the engine announced for it. Pure: no Ray, no vLLM.

Exactly once: Ray re-sends a batch whose engine actor died (at-least-once actor tasks),
and a retried task may deliver an output whose first delivery already arrived (an actor
that died after returning). Each output has one identity (kind, example, sample,
evaluation); a second arrival is dropped and counted in :attr:`ShardAssembler.duplicates`,
never stored twice. Any arrival for a shard already handed over is such a redelivery
(every prompt is sent once per run; a complete shard has all its outputs), so those
shards forget their identities (memory stays bounded by the shards in flight).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tinyllm_ray.errors import InternalError


class AssemblyError(InternalError):
    """More outputs arrived for a shard than it can have (a pipeline bug)."""


class ShardAssembler:
    """Buffer rows per shard and report shards as they become complete."""

    def __init__(self, expected_rationales: Mapping[int, int]) -> None:
        self._expected = dict(expected_rationales)
        # Per-shard buffers exist only while a shard is in flight (created on its first output).
        self._rows: dict[int, list[dict[str, Any]]] = {}
        self._rat: dict[int, int] = {}
        self._se: dict[int, int] = {}
        self._se_expected: dict[int, int] = {}
        self._done: set[int] = set()
        self._seen: dict[int, set[tuple[str, str, int, int]]] = {}
        self.duplicates = 0

    @property
    def pending(self) -> list[int]:
        """Shards not yet complete."""
        return sorted(s for s in self._expected if s not in self._done)

    def add(self, rows: Iterable[Mapping[str, Any]]) -> list[int]:
        """Add rows; return the shards this completed (in order)."""
        touched = set()
        for r in rows:
            s = int(r["shard"])
            if s not in self._expected:
                raise AssemblyError(f"output for shard {s}, which is not being generated")
            if s in self._done:
                self.duplicates += 1
                continue
            if s not in self._seen:
                self._open(s)
            ident = (str(r["kind"]), str(r["example_id"]), int(r["sample_idx"]), int(r["eval_idx"]))
            if ident in self._seen[s]:
                self.duplicates += 1
                continue
            self._seen[s].add(ident)
            self._rows[s].append(dict(r))
            if r["kind"] == "rationale":
                self._rat[s] += 1
                self._se_expected[s] += int(r.get("n_evals") or 0)
            else:
                self._se[s] += 1
            touched.add(s)
        completed = []
        for s in sorted(touched):
            if self._rat[s] > self._expected[s] or self._se[s] > self._se_expected[s] and self._rat[s] == self._expected[s]:
                raise AssemblyError(
                    f"shard {s}: {self._rat[s]} rationale rows (expected {self._expected[s]}), "
                    f"{self._se[s]} self-evaluation rows (expected {self._se_expected[s]})"
                )
            if self._rat[s] == self._expected[s] and self._se[s] == self._se_expected[s]:
                completed.append(s)
        return completed

    def _open(self, s: int) -> None:
        self._rows[s], self._seen[s] = [], set()
        self._rat[s] = self._se[s] = self._se_expected[s] = 0

    def take(self, shard: int) -> list[dict[str, Any]]:
        """Hand over a complete shard's rows and forget them (only its number stays, as done)."""
        self._done.add(shard)
        self._seen.pop(shard, None)
        for counts in (self._rat, self._se, self._se_expected):
            counts.pop(shard, None)
        return self._rows.pop(shard, [])
