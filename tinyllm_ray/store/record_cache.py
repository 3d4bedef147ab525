"""A content-addressed cache of raw teacher outputs, shared by every run under one storage path.

Why: a record key (``keys.py``) names everything that produced an output — teacher,
model + revision, template version, sampling (incl. the seed), the exact prompt and which
output of it. Two runs that would compute the same key would generate the same thing, so
the second one can take it from here instead of starting an engine: a second run into a
fresh store, a Tune trial, a config that changed one teacher or only the filter.

What is cached: the engine's *raw* outputs (``teachers/records.RAW_COLUMNS`` + ``record_key``
+ ``cot_key``), before parsing and filtering, so a changed filter re-filters cached outputs
without generating. Failed outputs (non-empty ``error``) are never cached. A self-evaluation
is found through the CoT it judged (``cot_key``: that CoT's record key), because its own
prompt embeds the CoT text, which is only known once the CoT is.

Layout (a local path or any pyarrow/fsspec URI, through ``fs.StoreCore`` like the store)::

    <cache>/ctx=<KeyContext.context_id()>/context.json       # what the folder holds (for people)
    <cache>/ctx=<id>/part-<UTC time>-<random>.parquet        # outputs of one committed shard

One folder per :class:`KeyContext` without the prompt, so a lookup reads only the keys
that could match. Concurrent writers (two runs, Tune trials) are safe: each part file has a
unique name and is written atomically (hidden temp name + rename; an object-store upload
is its own commit); readers ignore hidden and temporary files. A prompt is served only
when *every* output it would produce is here (its ``n`` CoTs, and each judged CoT's
self-evaluations from the same part file, so a CoT and its judgements always belong
together); otherwise it goes to the engine whole.

Note: the key is the prompt, not the example id; two examples with the same prompt text
share cached outputs (the same distribution; with a seed, a fresh run would have drawn
them with per-example seeds). No Ray, no vLLM.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tinyllm_ray.key_index import KeyIndex
from tinyllm_ray.store.fs import StoreCore
from tinyllm_ray.store.keys import KeyContext
from tinyllm_ray.store.layout import is_temporary

log = logging.getLogger(__name__)

#: The columns of a cache part file (``records.RAW_COLUMNS`` + the two keys).
CACHE_SCHEMA = pa.schema([
    ("kind", pa.string()), ("example_id", pa.string()), ("split", pa.string()), ("shard", pa.int32()),
    ("sample_idx", pa.int32()), ("eval_idx", pa.int32()), ("prompt_hash", pa.string()), ("text", pa.string()),
    ("prompt_tokens", pa.int32()), ("output_tokens", pa.int32()), ("finish_reason", pa.string()),
    ("gen_seconds", pa.float64()), ("n_evals", pa.int32()), ("record_key", pa.string()), ("cot_key", pa.string()),
])
#: Marks a raw row served from the cache (the pipeline writes only the others back).
FROM_CACHE = "from_cache"
_OPEN_PARTS = 4  # part files kept in memory between consecutive lookups (one shard ~ one part)


@dataclass
class CacheCounts:
    """Prompts of one teacher served from the cache (``hits``) or sent to the engine (``misses``)."""

    hits: int = 0
    misses: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses}


def format_cache_counts(counts: Mapping[str, Mapping[str, int]] | None) -> list[str]:
    """One line per teacher that had prompts to serve: hits and misses (generate and run summaries)."""
    return [f"teacher {name}: {c['hits']} of {c['hits'] + c['misses']} prompts served from the record cache, "
            f"{c['misses']} generated" for name, c in (counts or {}).items() if c.get("hits") or c.get("misses")]


class RecordCache(StoreCore):
    """The cache root; :meth:`context` opens one :class:`KeyContext`'s folder."""

    def context(self, key: KeyContext) -> ContextCache:
        return ContextCache(self, key)


class ContextCache:
    """The cached outputs of one teacher context: look prompts up, add fresh outputs.

    The index (rationale key -> part file) is built once, on the first lookup, from the
    ``record_key``/``kind`` columns of this folder's part files only, into a
    :class:`KeyIndex` on local disk; rows are read per shard from the few part files that
    hold them. The driver keeps one path per part file (one per committed shard), nothing
    per cached prompt.
    """

    def __init__(self, cache: RecordCache, key: KeyContext) -> None:
        self.cache = cache
        self.key = key
        self.dir = cache.layout.join(f"ctx={key.context_id()}")
        self._parts: list[str] = []
        self._index: KeyIndex | None = None
        self._open: OrderedDict[int, pa.Table] = OrderedDict()

    # ------------------------------------------------------------------ reading
    def has_parts(self) -> bool:
        """Whether this folder holds anything (one listing; the index is not built)."""
        return bool(self.cache._list(self.dir))

    def _load_index(self) -> KeyIndex:
        if self._index is None:
            index = KeyIndex()
            infos = sorted((i for i in self.cache._list(self.dir) if i.is_file), key=lambda i: i.path)
            for info in infos:
                if is_temporary(info.base_name) or info.base_name.startswith(".") \
                        or not info.base_name.endswith(".parquet"):
                    continue
                try:
                    t = pq.read_table(info.path, columns=["record_key", "kind"], filesystem=self.cache.fs)
                except Exception as exc:  # noqa: BLE001 - an unreadable part is a miss, never a failure
                    log.warning("record cache: skipping unreadable %s: %s", info.path, exc)
                    continue
                self._add_to_index(index, info.path, t)
            self._index = index
        return self._index

    def _add_to_index(self, index: KeyIndex, path: str, table: pa.Table) -> None:
        self._parts.append(path)
        kinds = table.column("kind").to_pylist()
        index.add((k for k, kind in zip(table.column("record_key").to_pylist(), kinds) if kind == "rationale"),
                  len(self._parts) - 1)

    def _part(self, idx: int) -> pa.Table:
        if idx in self._open:
            self._open.move_to_end(idx)
            return self._open[idx]
        t = pq.read_table(self._parts[idx], filesystem=self.cache.fs)
        self._open[idx] = t
        if len(self._open) > _OPEN_PARTS:
            self._open.popitem(last=False)
        return t

    def cot_keys(self, prompt_hash: str, n: int) -> list[str]:
        """The record keys of a prompt's ``n`` CoTs in this context."""
        return [self.key.record_key(prompt_hash, "rationale", j, -1) for j in range(n)]

    def lookup(self, rows: Sequence[Mapping[str, Any]], n: int) -> tuple[list[dict[str, Any]], list[Mapping[str, Any]]]:
        """Split prompt rows into (raw outputs served from the cache, rows the engine must generate).

        Served rows carry the current ``example_id``/``split``/``shard`` and :data:`FROM_CACHE`.
        """
        keyed = [(r, self.cot_keys(str(r["prompt_hash"]), n)) for r in rows]
        index = self._load_index().get({k for _r, keys in keyed for k in keys})  # this shard's keys only
        wanted: dict[int, list[tuple[Mapping[str, Any], list[str]]]] = {}
        misses: list[Mapping[str, Any]] = []
        for r, keys in keyed:
            files = {index.get(k) for k in keys}
            if None in files:
                misses.append(r)
                continue
            # a prompt whose CoTs sit in several parts: take them all from the first one's part or miss
            wanted.setdefault(min(f for f in files if f is not None), []).append((r, keys))
        served: list[dict[str, Any]] = []
        for idx, items in wanted.items():
            by_cot, evals = self._rows_of(idx, {k for _r, keys in items for k in keys})
            for r, keys in items:
                out = self._serve(r, keys, by_cot, evals)
                if out is None:
                    misses.append(r)
                else:
                    served += out
        return served, misses

    def _rows_of(self, idx: int, keys: set[str]) -> tuple[dict[str, dict[str, Any]], dict[str, dict[int, dict]]]:
        """The CoT rows of ``keys`` in one part, and their self-evaluations by eval index."""
        import pyarrow.compute as pc

        t = self._part(idx)
        value_set = pa.array(sorted(keys), pa.string())
        t = t.filter(pc.or_(pc.is_in(t.column("record_key"), value_set=value_set),
                            pc.is_in(t.column("cot_key"), value_set=value_set)))
        by_cot: dict[str, dict[str, Any]] = {}
        evals: dict[str, dict[int, dict[str, Any]]] = {}
        for row in t.to_pylist():
            if row["kind"] == "rationale":
                by_cot.setdefault(row["record_key"], row)
            else:
                evals.setdefault(row["cot_key"], {}).setdefault(int(row["eval_idx"]), row)
        return by_cot, evals

    def _serve(self, r: Mapping[str, Any], keys: list[str], by_cot: Mapping[str, dict],
               evals: Mapping[str, dict[int, dict]]) -> list[dict[str, Any]] | None:
        out = []
        for k in keys:
            cot = by_cot.get(k)
            if cot is None:
                return None
            judged = evals.get(k, {})
            need = int(cot["n_evals"] or 0)
            if any(e not in judged for e in range(need)):
                return None
            out.append(cot)
            out += [judged[e] for e in range(need)]
        stamp = {"example_id": r["example_id"], "split": r["split"], "shard": int(r["shard"]), FROM_CACHE: True}
        return [{**{c: v for c, v in row.items() if c not in ("record_key", "cot_key")}, **stamp} for row in out]

    # ------------------------------------------------------------------ writing
    def put(self, raw: Sequence[Mapping[str, Any]]) -> int:
        """Add freshly generated raw outputs (one part file); return how many rows were cached.

        Skipped: failed rows, rows served from the cache, and self-evaluations whose CoT is
        not among ``raw`` (their ``cot_key`` could not be computed).
        """
        rows = [r for r in raw if not r.get("error") and not r.get(FROM_CACHE)]
        cot_hash = {(r["example_id"], int(r["sample_idx"])): r["prompt_hash"] for r in rows if r["kind"] == "rationale"}
        out = []
        for r in rows:
            ph = cot_hash.get((r["example_id"], int(r["sample_idx"])))
            if ph is None:
                continue
            key = self.key.record_key(r["prompt_hash"], r["kind"], int(r["sample_idx"]), int(r["eval_idx"]))
            cot = self.key.record_key(ph, "rationale", int(r["sample_idx"]), -1)
            out.append({**{c: r.get(c) for c in CACHE_SCHEMA.names}, "record_key": key, "cot_key": cot})
        if not out:
            return 0
        table = pa.Table.from_pylist(out, schema=CACHE_SCHEMA)
        buf = io.BytesIO()
        pq.write_table(table, buf)
        if not self.cache.has_file(f"{self.dir}/context.json"):
            self.cache._write_json(f"{self.dir}/context.json", dataclasses.asdict(self.key))
        name = f"part-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:12]}.parquet"
        path = f"{self.dir}/{name}"
        self.cache._write_bytes(path, buf.getvalue())
        if self._index is not None:
            self._add_to_index(self._index, path, table.select(["record_key", "kind"]))
        return len(out)


def split_shards(cache: ContextCache | None, shards: Iterable[Sequence[Mapping[str, Any]]], n: int,
                 counts: CacheCounts) -> Iterator[tuple[list[dict[str, Any]], list[Mapping[str, Any]]]]:
    """Per shard's prompt rows: ``(raw outputs served from the cache, rows to generate)``; counts prompts.

    Lazy and per shard, so the driver never holds every shard's rows or an index of the
    cached rows (the context's key index is on local disk, :class:`KeyIndex`). Without a cache every row is a miss.
    """
    for rows in shards:
        served, misses = cache.lookup(rows, n) if cache is not None else ([], list(rows))
        counts.hits += len(rows) - len(misses)
        counts.misses += len(misses)
        yield served, misses


def open_context_cache(uri: str | None, key: KeyContext) -> ContextCache | None:
    """The cache folder of ``key`` under ``uri``, or None when the cache is off (``uri`` None)."""
    return None if uri is None else RecordCache(uri).context(key)


__all__ = ["CACHE_SCHEMA", "FROM_CACHE", "CacheCounts", "ContextCache", "RecordCache", "format_cache_counts",
           "open_context_cache",
           "split_shards"]
