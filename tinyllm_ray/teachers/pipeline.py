"""Generation pipeline: dataset -> prompts -> every teacher's actor pool -> parse/filter -> store.

Public entry points::

    report = run_generation(cfg)                 # what ``tinyllm-ray generate`` calls
    for shard in GenerationRun(cfg):             # streaming: each shard once it is persisted
        ...                                      # (e.g. start training on early shards)

Shape of one run (per teacher, all teachers concurrently, one driver thread each):

1. the generation split (``train``) is cut into fixed shards (``prompt_rows.py``); shards
   whose commit file exists are skipped (resume); a teacher with nothing left starts no
   engine;
2. prompt rows of the remaining shards become a Ray Dataset with one block per
   ``teacher.batch_size`` rows, mapped by ``map_batches(TeacherEngine,
   concurrency=replicas, num_cpus/num_gpus/placement group from placement.py)``;
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

Failure policy: an engine that cannot start, or dies, fails the job with the teacher's
name and the engine's error (``max_restarts=0``: no silent restart loop); what was
committed stays, and rerunning the same command resumes.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tinyllm_ray.config import JobConfig, TeacherConfig
from tinyllm_ray.data.schema import MCQRecord
from tinyllm_ray.store.manifest import build_manifest
from tinyllm_ray.store.stats import TeacherStats, total
from tinyllm_ray.store.store import RationaleStore
from tinyllm_ray.teachers.assembler import ShardAssembler
from tinyllm_ray.teachers.engine import EngineSpec, root_cause_from_log
from tinyllm_ray.teachers.models import precheck_model, resolve_model
from tinyllm_ray.teachers.placement import (
    PlacementError,
    TeacherPlan,
    check_fits,
    choose_accelerator,
    plan_generation,
)
from tinyllm_ray.teachers.prompt_rows import aligned_batch_size, default_shard_size, num_shards, prompt_rows
from tinyllm_ray.teachers.records import build_shard_records
from tinyllm_ray.teachers.report import GenerationError, GenerationReport, ShardWritten

log = logging.getLogger(__name__)

#: Examples per shard when not given: small enough that a killed job loses little, large
#: enough that the store does not drown in tiny files (a few hundred KB per shard).
DEFAULT_SHARD_SIZE = 64


# ----------------------------------------------------------------------------- actors


def engine_spec(cfg: JobConfig, teacher: TeacherConfig, plan: TeacherPlan) -> EngineSpec:
    """The picklable description each actor of ``teacher`` is constructed from."""
    se = None
    if cfg.self_eval.enabled:
        se = {
            "evals_per_cot": cfg.self_eval.evals_per_cot,
            "verdicts": list(cfg.self_eval.verdicts),
            "max_tokens": cfg.self_eval.max_tokens,
            "temperature": cfg.self_eval.temperature,
        }
    return EngineSpec(
        teacher=teacher.name,
        engine_kwargs=dict(plan.engine_kwargs),
        sampling=teacher.sampling.model_dump(mode="json"),
        env=dict(plan.env),
        env_defaults=dict(plan.env_defaults),
        unset_env=plan.unset_env,
        self_eval=se,
        cot_trigger=cfg.prompts.cot_trigger,
    )


def describe_error(teacher: str, exc: BaseException) -> str:
    """One line naming the teacher and the root cause, out of Ray's wrapped tracebacks."""
    text = str(exc)
    marker = "TeacherStartupError: "
    if marker in text:
        return text[text.rindex(marker) + len(marker):].splitlines()[0].strip()
    cause = root_cause_from_log(text)
    first = (text.strip().splitlines() or [type(exc).__name__])[0]
    return f"teacher {teacher!r} failed: {cause or f'{type(exc).__name__}: {first}'}"


# ----------------------------------------------------------------------------- the run


@dataclass
class _TeacherWork:
    teacher: TeacherConfig
    plan: TeacherPlan
    spec: EngineSpec
    pending: list[int]
    skipped: int


class GenerationRun:
    """One generation job; iterate it to run it and receive each persisted shard.

    The store is consistent and readable at every point of the iteration. Breaking out
    of the loop stops all teachers after their current batch (finished shards stay).
    After the loop, :attr:`report` holds the totals.
    """

    def __init__(self, cfg: JobConfig, *, shard_size: int | None = None, split: str = "train") -> None:
        if not cfg.teachers:
            raise GenerationError("no teachers configured: add at least one entry under teachers:")
        self.cfg = cfg
        self.split = split
        self.store = RationaleStore(cfg.runtime.resolved_store_uri)
        self._shard_size_arg = shard_size
        self.report: GenerationReport | None = None
        self._stop = threading.Event()

    # -------------------------------------------------------------- setup
    def _prepare(self) -> tuple[list[MCQRecord], list[MCQRecord], int, list[_TeacherWork], str, list[str]]:
        import ray

        from tinyllm_ray.data.loader import load_splits
        from tinyllm_ray.runtime import init_ray

        cfg = self.cfg
        init_ray(cfg.runtime)
        loaded = load_splits(cfg.data)
        records = loaded.require(self.split)
        pool = loaded.require("train")  # in-context examples: train split only, never eval data

        # Everything that can fail without touching the store is checked first.
        notes: list[str] = []
        alive = [n for n in ray.nodes() if n.get("Alive")]
        accelerator, why = choose_accelerator(ray.cluster_resources())
        notes.append(why)
        same_fs = len(alive) <= 1
        paths = {}
        for t in cfg.teachers:
            paths[t.name] = resolve_model(t.model)
            precheck_model(t.name, paths[t.name], same_fs)
        plans = plan_generation(cfg, accelerator, paths)
        try:
            notes += check_fits(plans, [n.get("Resources", {}) for n in alive])
        except PlacementError as exc:
            raise GenerationError(str(exc)) from None

        have = self.store.read_manifest()
        stored_size = have.get("shard_size") if have else None
        shard_size = (self._shard_size_arg or stored_size
                      or default_shard_size([t.batch_size for t in cfg.teachers], DEFAULT_SHARD_SIZE))
        if self._shard_size_arg is None:
            notes.append(f"shard size {shard_size} examples ("
                         + ("from the existing store)" if stored_size else
                            f"default: {DEFAULT_SHARD_SIZE}, or the largest teacher batch_size if bigger)"))
        self.store.open_manifest(build_manifest(cfg, self.split, records, shard_size))

        total_shards = num_shards(len(records), shard_size)
        work = []
        for t, plan in zip(cfg.teachers, plans):
            bs = aligned_batch_size(shard_size, t.batch_size)
            if bs != t.batch_size:
                notes.append(f"teacher {t.name}: batches of {bs} prompts, not {t.batch_size}: a batch must "
                             f"divide the shard size ({shard_size}) so resumed runs batch identically")
            self.store.remove_temporary_files(t.name)
            done = self.store.finished_shards(t.name)
            pending = [s for s in range(total_shards) if s not in done]
            notes += [f"teacher {t.name}: {w}" for w in plan.why]
            work.append(_TeacherWork(t, plan, engine_spec(cfg, t, plan), pending, total_shards - len(pending)))
        for n in notes:
            log.info("%s", n)
        return records, pool, shard_size, work, accelerator, notes

    # -------------------------------------------------------------- one teacher (driver thread)
    def _teacher_thread(
        self,
        w: _TeacherWork,
        records: Sequence[MCQRecord],
        pool: Sequence[MCQRecord],
        shard_size: int,
        out: queue.Queue,
    ) -> None:
        name = w.teacher.name
        try:
            import pyarrow as pa
            import ray

            from tinyllm_ray.observability import TeacherMetrics
            from tinyllm_ray.teachers.engine import TeacherEngine

            # One block per batch (one actor call each). The batch size divides the shard
            # size, so batches tile shards and are the same in a resumed run; from_blocks
            # keeps blocks as built (no repartitioning, metadata computed here, no tasks).
            bs = aligned_batch_size(shard_size, w.plan.batch_size)
            blocks = []
            for s in w.pending:
                rows = prompt_rows(w.teacher, records, s, shard_size, pool, self.cfg.prompts, self.split)
                blocks += [pa.Table.from_pylist(rows[i:i + bs]) for i in range(0, len(rows), bs)]
            by_id = {r.id: r for r in records}
            n = w.teacher.sampling.n
            expected = {s: n * len(records[s * shard_size:(s + 1) * shard_size]) for s in w.pending}
            assembler = ShardAssembler(expected)
            metrics = TeacherMetrics(name)

            kwargs = w.plan.map_batches_kwargs(bs)
            ds = ray.data.from_blocks(blocks).map_batches(
                TeacherEngine, fn_constructor_kwargs={"spec": w.spec}, batch_format="pyarrow", **kwargs
            )
            try:
                for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None, prefetch_batches=1):
                    if self._stop.is_set():
                        break
                    for s in assembler.add(batch.to_pylist()):
                        out.put(self._persist(name, s, assembler.take(s), by_id, metrics))
            finally:
                factory = kwargs.get("ray_remote_args_fn")
                if factory is not None:
                    factory.remove_all()
            if not self._stop.is_set() and assembler.pending:
                raise GenerationError(f"teacher {name!r}: shards {assembler.pending} never completed")
            out.put(("done", name, None))
        except BaseException as exc:  # noqa: BLE001 - forwarded to the consumer thread
            out.put(("failed", name, exc))

    def _persist(self, name: str, shard: int, raw: list[dict[str, Any]], by_id: Mapping[str, MCQRecord],
                 metrics: Any) -> ShardWritten:
        """Parse, filter, write one complete shard; only then is it reported."""
        recs = build_shard_records(raw, by_id, name, self.cfg.filter, self.cfg.self_eval.verdicts)
        path = self.store.write_shard(
            name, shard, recs.rationale, recs.self_eval if self.cfg.self_eval.enabled else None, recs.stats
        )
        st = recs.stats
        metrics.record_batch(outputs=st.outputs, kept=st.kept, dropped=st.dropped, tokens=st.output_tokens,
                             seconds=st.generation_seconds)
        return ShardWritten(name, shard, path, len(recs.rationale), len(recs.self_eval), st)

    # -------------------------------------------------------------- iteration
    def __iter__(self) -> Iterator[ShardWritten]:
        t0 = time.perf_counter()
        self._stop = threading.Event()
        records, pool, shard_size, work, accelerator, notes = self._prepare()
        out: queue.Queue = queue.Queue()
        threads = []
        for w in work:
            if not w.pending:
                log.info("teacher %s: all %d shards already in the store, nothing to generate", w.teacher.name,
                         w.skipped)
                continue
            log.info("teacher %s: %d shards to generate, %d already done", w.teacher.name, len(w.pending), w.skipped)
            th = threading.Thread(target=self._teacher_thread, args=(w, records, pool, shard_size, out),
                                  name=f"teacher-{w.teacher.name}", daemon=True)
            th.start()
            threads.append(th)
        written = {w.teacher.name: 0 for w in work}
        tokens = {w.teacher.name: 0 for w in work}
        alive = len(threads)
        try:
            while alive:
                item = out.get()
                if isinstance(item, ShardWritten):
                    written[item.teacher] += 1
                    tokens[item.teacher] += item.stats.output_tokens
                    yield item
                    continue
                status, name, exc = item
                alive -= 1
                if status == "failed":
                    self._stop.set()
                    if isinstance(exc, GenerationError):
                        raise GenerationError(str(exc)) from None
                    raise GenerationError(describe_error(name, exc)) from exc
        finally:
            self._stop.set()
        totals = {}
        for w in work:
            name = w.teacher.name
            totals[name] = total(name, self.store.shard_stats(name).values())
            self.store.write_stats(totals[name])
        self.report = GenerationReport(
            store_uri=self.store.uri, split=self.split, shard_size=shard_size,
            num_shards=num_shards(len(records), shard_size), teachers=totals, shards_written=written,
            shards_skipped={w.teacher.name: w.skipped for w in work}, run_output_tokens=tokens,
            wall_seconds=time.perf_counter() - t0, accelerator=accelerator, notes=notes,
        )


def run_generation(
    cfg: JobConfig,
    *,
    shard_size: int | None = None,
    on_shard: Callable[[ShardWritten], None] | None = None,
    print_summary: bool = True,
) -> GenerationReport:
    """Generate (or finish generating) all teachers' rationales into the store.

    Rerunning with the same config skips finished shards; a different generation
    config for the same store is refused (``StoreMismatchError``). ``on_shard`` is
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
    return {t: total(t, store.shard_stats(t).values()) for t in teachers}


__all__ = [
    "DEFAULT_SHARD_SIZE",
    "GenerationError",
    "GenerationReport",
    "GenerationRun",
    "ShardWritten",
    "committed_stats",
    "describe_error",
    "engine_spec",
    "run_generation",
]
