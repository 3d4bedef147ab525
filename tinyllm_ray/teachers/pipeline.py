"""Generation pipeline: dataset -> prompts -> every teacher's actor pool -> parse/filter -> store.

Public entry points::

    report = run_generation(cfg)                 # what ``tinyllm-ray generate`` calls
    for shard in GenerationRun(cfg):             # streaming: each shard once it is persisted
        ...                                      # (e.g. start training on early shards)

Shape of one run (per teacher, all teachers concurrently, one driver thread each):

1. the generation split (``train``) is cut into fixed shards (``prompt_rows.py``); shards
   whose commit file exists are skipped (resume); a teacher with nothing left starts no
   engine;
2. prompt rows are built a shard at a time as the engines ask for more; prompts whose every
   output is in the record cache (``store/record_cache.py``) are served from it, the rest
   reach the engines (``serving.py``: a Ray Data block per ``teacher.batch_size`` rows, a
   bounded window at a time by ``feed.py``, ``map_batches(TeacherEngine, ...)``): driver and
   object store hold a few batches, never the run's prompts; no miss, no engine started;
3. the driver streams the outputs back, regroups them into complete shards
   (``assembler.py``), parses and filters them (``records.py``) and writes each shard
   atomically (``store.py``) before reporting it: persist, then trust;
4. at the end, per-teacher statistics are recomputed from every committed shard (also
   those of earlier runs), written to ``stats/<teacher>.json`` and printed.

Why not ``ray.data.llm``: its ``vLLMEngineProcessorConfig`` + ``build_processor`` do run on
the vLLM CPU build here (given ``placement_group_config={"bundles": [{"CPU": 1}]}``,
``log_engine_metrics=False`` and a chat template or a disabled chat stage), but (Ray 2.60
``ray/llm/_internal/batch/stages/vllm_engine_stage.py``) it returns only
``outputs[0]`` of each request, so ``sampling.n`` CoTs per question are impossible without
duplicating prompts; it runs one asyncio task and several pydantic objects per row on an
``AsyncLLMEngine``; and a self-evaluation pass would need a second processor, i.e. a second
copy of every model. A callable class around ``vllm.LLM`` keeps one engine per actor, one
``generate`` call per batch and both passes on the same engine; Ray Data still provides
the actor pool, resources, batching, back-pressure and streaming.

Failure policy (what survives which fault; ``faults.py`` has the mechanism):

* an engine that cannot start fails the job at once with the teacher's name and vLLM's
  reason (Ray Data does not restart an actor whose constructor failed);
* an engine that dies mid-run (process killed, engine error, out of memory) is restarted
  by Ray (fresh vLLM engine) and the batch it held is sent again, at most
  ``teachers.<i>.max_batch_retries`` times; then that batch's CoTs are stored as ``failed``
  rows with the reason, counted under ``failed`` in the statistics, and the job goes on.
  Each output is stored once however often its batch was sent (``assembler.py``);
* a teacher whose engine dies more than ``teachers.<i>.max_restarts`` times in a row
  without finishing a batch ends the job with one line naming it and the last reason
  (``max_restarts: 0``: the first death does);
* the next run generates the failed CoTs of committed shards again, and only those
  (``retry.py``), next to the shards that are not committed yet. Restarts, retried and
  given-up batches of a run are in :attr:`GenerationReport.faults`.

What was committed stays, and rerunning the same command resumes.
:meth:`GenerationRun.cancel` (thread-safe; e.g. ``run`` when training fails) stops every
teacher after its current batch and releases the engines; the run then ends normally
with what was committed.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tinyllm_ray import memory_probe
from tinyllm_ray.config import JobConfig
from tinyllm_ray.data.schema import MCQRecord
from tinyllm_ray.data.split_file import SplitFile, load_and_spill
from tinyllm_ray.store import KeyContext, RationaleStore, build_manifest, key_context_for, resolve_shard_size
from tinyllm_ray.store.agreement import store_agreement
from tinyllm_ray.store.layout import shard_length
from tinyllm_ray.store.record_cache import (
    FROM_CACHE,
    CacheCounts,
    ContextCache,
    open_context_cache,
    split_shards,
)
from tinyllm_ray.store.stats import TeacherStats, total
from tinyllm_ray.teachers.assembler import ShardAssembler
from tinyllm_ray.teachers.early_start import load_while_planning, may_serve
from tinyllm_ray.teachers.prompt_rows import (
    TEMPLATE_VERSION,
    aligned_batch_size,
    examples_by_id,
    num_shards,
    prompt_rows,
)
from tinyllm_ray.teachers.records import build_shard_records
from tinyllm_ray.teachers.report import GenerationError, GenerationReport, ShardWritten
from tinyllm_ray.teachers.retry import RetrySet, merge_retried_shard, retried_outputs, retry_set
from tinyllm_ray.teachers.serving import EnginePool, ServingPlan, plan_serving

log = logging.getLogger(__name__)


@dataclass
class _TeacherWork:
    pool: EnginePool
    key: KeyContext  # what produces this teacher's rows (record keys, provenance columns)
    batch_size: int
    pending: list[int]
    skipped: int
    retry: dict[int, RetrySet]  # committed shards with failed CoTs to generate again
    committed: dict[int, TeacherStats]  # their footer statistics (what the retry sets came from)
    cache: ContextCache | None = None  # this teacher's record-cache folder (None: runtime.record_cache off)
    cache_counts: CacheCounts = field(default_factory=CacheCounts)


@dataclass
class _Prepared:
    records: Sequence[MCQRecord]  # data.split_file.SplitFile: on local disk, not in driver memory
    pool: Sequence[MCQRecord]
    shard_size: int
    work: list[_TeacherWork]
    accelerator: str
    notes: list[str]


class GenerationRun:
    """One generation job; iterate it to run it and receive each persisted shard.

    The store is consistent and readable at every point of the iteration. Breaking out
    of the loop, or :meth:`cancel` from any thread, stops all teachers after their
    current batch (finished shards stay). After the loop, :attr:`report` holds the
    totals. A run is iterated once.
    """

    def __init__(self, cfg: JobConfig, *, shard_size: int | None = None, split: str = "train") -> None:
        if not cfg.teachers:
            raise GenerationError("no teachers configured: add at least one entry under teachers:")
        self.cfg = cfg
        self.split = split
        self.store = RationaleStore(cfg.runtime.resolved_store_uri)
        self._shard_size_arg = shard_size
        self.report: GenerationReport | None = None
        self._stop = threading.Event()  # shared by every teacher's engine pool

    def cancel(self) -> None:
        """Stop every teacher after its current batch and release its engines (thread-safe).

        Shards already committed stay; iteration then ends normally (``report.cancelled``).
        Called before iteration starts, no engine is started at all.
        """
        self._stop.set()

    @property
    def cancelled(self) -> bool:
        return self._stop.is_set()

    # -------------------------------------------------------------- setup
    def _plan(self) -> tuple[tuple[SplitFile, SplitFile], ServingPlan]:
        """What can fail without the store: the generation split and the train (ICL) pool, spilled to
        local files while serving (models, placement) is planned (``early_start.py``)."""
        return load_while_planning(lambda: load_and_spill(self.cfg.data, self.split),
                                   lambda: plan_serving(self.cfg, self.cfg.teachers, cancel_event=self._stop))

    def _prepare(self, records: Sequence[MCQRecord], pool: Sequence[MCQRecord], serving: ServingPlan) -> _Prepared:
        """Open the store (under the writer lock): manifest, shard size, pending shards, record keys."""
        cfg = self.cfg
        notes = list(serving.notes)
        have = self.store.read_manifest()
        shard_size, why = resolve_shard_size(self._shard_size_arg, have.get("shard_size") if have else None,
                                             [t.batch_size for t in cfg.teachers])
        if self._shard_size_arg is None:
            notes.append(f"shard size {shard_size} examples ({why})")
        self.store.open_manifest(build_manifest(cfg, self.split, records, shard_size),
                                 supersede=cfg.runtime.record_cache)

        total_shards = num_shards(len(records), shard_size)
        work = []
        for p in serving.pools:
            t = p.teacher
            bs = aligned_batch_size(shard_size, t.batch_size)
            if bs != t.batch_size:
                notes.append(f"teacher {t.name}: batches of {bs} prompts, not {t.batch_size}: a batch must "
                             f"divide the shard size ({shard_size}) so resumed runs batch identically")
            self.store.remove_temporary_files(t.name)
            done = self.store.finished_shards(t.name)
            pending = [s for s in range(total_shards) if s not in done]
            # Only the footers of shards with failed CoTs are kept (one at a time otherwise).
            footers = {s: st for s, st in (self.store.iter_shard_stats(t.name) if done else ())
                       if s < total_shards and retry_set(st)}
            retry = {s: r for s, st in footers.items() if (r := retry_set(st))}
            if retry:
                notes.append(f"teacher {t.name}: {sum(len(v) for r in retry.values() for v in r.values())} failed "
                             f"CoTs of {len(retry)} committed shard(s) are generated again")
            key = key_context_for(t, p.model_path, cfg, TEMPLATE_VERSION)
            work.append(_TeacherWork(p, key, bs, pending, total_shards - len(pending), retry,
                                     {s: footers[s] for s in retry},
                                     open_context_cache(cfg.runtime.resolved_record_cache_uri, key)))
        for n in notes:
            log.info("%s", n)
        return _Prepared(records, pool, shard_size, work, serving.accelerator, notes)

    # -------------------------------------------------------------- one teacher (driver thread)
    def _teacher_thread(self, w: _TeacherWork, prep: _Prepared, out: queue.Queue) -> None:
        name = w.pool.name
        try:
            from tinyllm_ray.observability import TeacherMetrics

            size = prep.shard_size
            n = w.pool.teacher.sampling.n
            expected = {s: n * len(retry) for s, retry in w.retry.items()}
            expected.update({s: n * shard_length(len(prep.records), s, size) for s in w.pending})  # no read
            assembler = ShardAssembler(expected)
            metrics = TeacherMetrics(name)
            with w.pool as engines:
                rows = sum(expected.values()) // n  # a prompt gives n rationale rows
                misses = self._cache_misses(w, prep, assembler, out, metrics)
                for batch in engines.run_stream(misses, w.batch_size, max_rows=rows, eager=not may_serve(w.cache)):
                    for s in assembler.add(batch):
                        out.put(self._persist(w, s, assembler.take(s), examples_by_id(prep.records, s, size),
                                              metrics))
            if w.cache is not None:
                c = w.cache_counts
                log.info("teacher %s: %d of %d prompts served from the record cache", name, c.hits, c.hits + c.misses)
            if assembler.duplicates:
                log.info("teacher %s: %d outputs delivered twice by retried batches were dropped", name,
                         assembler.duplicates)
            if not self.cancelled and assembler.pending:
                raise GenerationError(f"teacher {name!r}: shards {assembler.pending} never completed")
            out.put(("done", name, None))
        except BaseException as exc:  # noqa: BLE001 - forwarded to the consumer thread
            out.put(("failed", name, exc))

    def _shard_rows(self, w: _TeacherWork, prep: _Prepared) -> Iterator[list[dict[str, Any]]]:
        """Each shard's prompt rows, built only when the engines are ready for them (one list per shard).

        Retried CoTs first (their shards are already readable; a prompt yields all n
        samples), then the pending shards. Lazy so that the driver never holds the prompts
        of the whole run (``serving.EnginePool.run_stream`` pulls a bounded window).
        """
        def rows_of(s: int) -> list[dict[str, Any]]:
            return prompt_rows(w.pool.teacher, prep.records, s, prep.shard_size, prep.pool, self.cfg.prompts,
                               self.split)

        for s, retry in w.retry.items():
            yield [r for r in rows_of(s) if r["example_id"] in retry]
        for s in w.pending:
            yield rows_of(s)

    def _cache_misses(self, w: _TeacherWork, prep: _Prepared, assembler: ShardAssembler, out: queue.Queue,
                      metrics: Any) -> Iterator[list[Mapping[str, Any]]]:
        """Each shard's prompt rows the record cache cannot serve; the served outputs are persisted here.

        Pulled lazily by the engine pool (same thread as the assembler): a shard whose every
        prompt is cached is committed as soon as it is reached, and a teacher whose stream
        has no miss at all never starts an engine (``EnginePool`` peeks before starting).
        """
        size = prep.shard_size
        for served, misses in split_shards(w.cache, self._shard_rows(w, prep), w.pool.teacher.sampling.n,
                                           w.cache_counts):
            if self.cancelled:
                return
            for s in assembler.add(served):
                out.put(self._persist(w, s, assembler.take(s), examples_by_id(prep.records, s, size), metrics))
            if misses:
                yield misses

    def _persist(self, w: _TeacherWork, shard: int, raw: list[dict[str, Any]], by_id: Mapping[str, MCQRecord],
                 metrics: Any) -> ShardWritten:
        """Parse, filter, write one complete shard; only then is it reported."""
        name = w.pool.name
        if w.cache is not None:  # fresh outputs first, then the shard: a killed run loses no generation
            try:
                w.cache.put(raw)
            except Exception as exc:  # noqa: BLE001 - a cache that cannot be written costs reuse, not the run
                log.warning("teacher %s: record cache not written (%s): %s", name, w.cache.dir, exc)
        retry = w.retry.get(shard)
        if retry is not None:
            raw = retried_outputs(raw, retry)
        served_tokens = sum(int(r.get("output_tokens") or 0) for r in raw if r.get(FROM_CACHE))
        recs = build_shard_records(raw, by_id, name, self.cfg.filter, self.cfg.self_eval.verdicts, key=w.key)
        run_stats = recs.stats
        if retry is not None:  # the committed shard, its retried CoTs replaced (retry.py: exactly once)
            old = {k: self.store.read_shard(name, k, shard).to_pylist() for k in ("rationale", "self_eval", "failed")}
            recs = merge_retried_shard(retry, recs, w.committed[shard], old["rationale"], old["self_eval"],
                                       old["failed"])
        path = self.store.write_shard(
            name, shard, recs.rationale, recs.self_eval if self.cfg.self_evaluates(name) else None, recs.stats,
            failed=recs.failed,
        )
        st = run_stats  # what this run generated (the whole shard, or its retried CoTs)
        metrics.record_batch(outputs=st.outputs, kept=st.kept, dropped=st.dropped, tokens=st.output_tokens,
                             seconds=st.generation_seconds)
        return ShardWritten(name, shard, path, len(recs.rationale), len(recs.self_eval), recs.stats,
                            retried=retry is not None, run_stats=st, cached_output_tokens=served_tokens)

    # -------------------------------------------------------------- iteration
    def __iter__(self) -> Iterator[ShardWritten]:
        t0 = time.perf_counter()
        (records, pool), serving = self._plan()
        with self.store.writer_lock():  # one generation writes a store at a time
            yield from self._generate(self._prepare(records, pool, serving), t0)

    def _generate(self, prep: _Prepared, t0: float) -> Iterator[ShardWritten]:
        out: queue.Queue = queue.Queue()
        threads = []
        for w in prep.work:
            name = w.pool.name
            if not w.pending and not w.retry:
                log.info("teacher %s: all %d shards already in the store, nothing to generate", name, w.skipped)
                continue
            if self.cancelled:
                break
            log.info("teacher %s: %d shards to generate, %d already done (%d with failed CoTs to retry)", name,
                     len(w.pending), w.skipped, len(w.retry))
            th = threading.Thread(target=self._teacher_thread, args=(w, prep, out), name=f"teacher-{name}",
                                  daemon=True)
            th.start()
            threads.append(th)
        written = {w.pool.name: 0 for w in prep.work}
        retried = {w.pool.name: 0 for w in prep.work}
        tokens = {w.pool.name: 0 for w in prep.work}
        try:
            alive = len(threads)
            while alive:
                item = out.get()
                if isinstance(item, ShardWritten):
                    (retried if item.retried else written)[item.teacher] += 1
                    tokens[item.teacher] += item.run_output_tokens
                    yield item
                    continue
                _status, _name, exc = item
                alive -= 1
                if exc is not None:
                    # Engine failures are already one GenerationError line naming the teacher
                    # (serving.describe_error); store errors are UserErrors; anything else is a
                    # bug and keeps its traceback.
                    raise exc
        except BaseException:  # a failure, or the caller broke out: stop the other teachers
            self._stop.set()
            raise
        finally:
            for th in threads:  # no thread may still write once the caller moves on
                th.join()
        memory_probe.mark("generated")  # benchmarks/load.py: the driver's growth is measured up to here
        totals = {}
        for w in prep.work:
            name = w.pool.name
            totals[name] = total(name, (st for _, st in self.store.iter_shard_stats(name)))
            self.store.write_stats(totals[name])
        self.report = GenerationReport(
            store_uri=self.store.uri, split=self.split, shard_size=prep.shard_size,
            num_shards=num_shards(len(prep.records), prep.shard_size), teachers=totals, shards_written=written,
            shards_skipped={w.pool.name: w.skipped for w in prep.work}, run_output_tokens=tokens,
            wall_seconds=time.perf_counter() - t0, accelerator=prep.accelerator, notes=prep.notes,
            cancelled=self.cancelled, shards_retried=retried,
            faults={w.pool.name: dict(w.pool.faults) for w in prep.work if w.pool.faults},
            feed={w.pool.name: dict(w.pool.feed) for w in prep.work if w.pool.feed},
            agreement=store_agreement(self.store, [w.pool.name for w in prep.work]),
            record_cache=({w.pool.name: w.cache_counts.to_dict() for w in prep.work}
                          if self.cfg.runtime.record_cache else None),
        )


def run_generation(
    cfg: JobConfig,
    *,
    shard_size: int | None = None,
    on_shard: Callable[[ShardWritten], None] | None = None,
    print_summary: bool = True,
) -> GenerationReport:
    """Generate (or finish generating) all teachers' rationales into the store.

    Rerunning with the same config skips finished shards; with a different generation
    config the shards it invalidates are moved aside and generated again (from the record
    cache where possible), or, with ``runtime.record_cache: false``, it is refused
    (``StoreMismatchError``). ``on_shard`` is
    called after each shard is persisted (e.g. to feed a trainer that is already
    running). Prints the statistics table unless ``print_summary`` is False.
    """
    run = GenerationRun(cfg, shard_size=shard_size)
    for shard in run:
        if on_shard is not None:
            on_shard(shard)
    assert run.report is not None
    if print_summary:
        print(run.report.summary(), flush=True)
    return run.report


def committed_stats(store_uri: str, teachers: Sequence[str]) -> Mapping[str, TeacherStats]:
    """Totals of what a store holds right now (for readers of a store still being written)."""
    store = RationaleStore(store_uri)
    return {t: total(t, (st for _, st in store.iter_shard_stats(t))) for t in teachers}


__all__ = [
    "GenerationError",
    "GenerationReport",
    "GenerationRun",
    "ShardWritten",
    "committed_stats",
    "run_generation",
]
