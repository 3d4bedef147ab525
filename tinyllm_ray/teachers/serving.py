"""Teacher serving: the one path from a teacher's config to its vLLM engines answering prompts.

A teacher with an ``api`` section is served the same way by ``api.ApiTeacher`` actors that
call its OpenAI-compatible endpoint (``api.api_plan``: light actors, no GPU, no model to resolve).

Generation (``pipeline.py``) and teacher evaluation (``evaluate_teacher.py``) both serve
teachers exactly this way, so a teacher is planned, started, fed, described when it
fails and cleaned up identically in both::

    serving = plan_serving(cfg, cfg.teachers)         # resolve + precheck models, plan, check_fits
    with serving.pool("llama") as pool:               # nothing starts until run()
        for out_rows in pool.run(prompt_rows, batch_size):   # one list of RAW_COLUMNS rows per batch
            ...

What :func:`plan_serving` does before any engine starts (everything that can fail fast):
join or start Ray (``runtime.init_ray``), then :func:`plan_pools` (pure): choose the accelerator from the cluster's
resources, resolve each model (``bootstrap.resolve_teacher_model``: ``tiny:<family>`` is built
locally, a bootstrapped teacher trained first) and precheck local paths, compute each teacher's :class:`TeacherPlan` and
check that every replica can ever be placed (``placement.check_fits``). Each teacher
gets an :class:`EnginePool` carrying its :class:`~tinyllm_ray.teachers.engine.EngineSpec`
(the config *models* the actor needs, not hand-copied dicts).

What :meth:`EnginePool.run_stream` owns: the Ray Data pipeline (one block per batch streamed from the
driver a bounded window at a time, ``feed.py``, then ``map_batches(TeacherEngine, concurrency=replicas)``
with the plan's resources; never more actors than batches; one execution per round of
``teacher.batches_per_round`` batches: Ray Data keeps every read task of an execution until it ends),
turning any engine failure into one
:class:`GenerationError` line that names the teacher and vLLM's root cause
(:func:`describe_error`), cancellation after the current batch (:meth:`EnginePool.cancel`),
and cleanup: the iterator is closed, so Ray Data kills the pool's actors (and with them
the engines), and the plan's placement groups are removed (Ray does not remove a
placement group together with its actor).

Faults: unless ``teacher.max_restarts`` is 0, each run also starts one small
``faults.FaultLedger`` actor that the engines report to (Ray restarts a dead engine and
re-sends its batch; the ledger bounds both, see ``faults.py``); every block carries its
``batch`` number for it, and :attr:`EnginePool.faults` sums the ledgers' summaries.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

from tinyllm_ray.config import JobConfig, PromptConfig, RuntimeConfig, SelfEvalConfig, TeacherConfig
from tinyllm_ray.errors import GenerationError, InternalError, PlacementError, UserError
from tinyllm_ray.teachers.api import api_plan, api_spec
from tinyllm_ray.teachers.bootstrap import resolve_teacher_model
from tinyllm_ray.teachers.early_start import BackgroundStart
from tinyllm_ray.teachers.engine import EngineSpec, root_cause_from_log
from tinyllm_ray.teachers.faults import FaultLedger, FaultSet, merge_fault_summaries
from tinyllm_ray.teachers.feed import BatchFeeder, CreditFeed, batches_of, feed_dataset, rounds_of
from tinyllm_ray.teachers.models import precheck_model
from tinyllm_ray.teachers.placement import (
    Accelerator,
    TeacherPlan,
    check_fits,
    choose_accelerator,
    find_preload_libs,
    plan_teacher,
)

log = logging.getLogger(__name__)

__all__ = ["EnginePool", "ServingPlan", "describe_error", "engine_spec", "plan_pools", "plan_serving", "to_batches"]


def engine_spec(teacher: TeacherConfig, plan: TeacherPlan, prompts: PromptConfig,
                self_eval: SelfEvalConfig) -> EngineSpec:
    """The picklable description each actor of ``teacher`` is constructed from.

    ``teacher.sampling``, ``prompts`` and ``self_eval`` travel as the validated config
    models; the plan contributes the engine arguments and the environment.
    """
    return EngineSpec(
        teacher=teacher.name,
        engine_kwargs=dict(plan.engine_kwargs),
        sampling=teacher.sampling,
        prompts=prompts,
        self_eval=self_eval,
        env=dict(plan.env),
        env_defaults=dict(plan.env_defaults),
        unset_env=plan.unset_env,
        api=api_spec(teacher) if teacher.api is not None else None,  # reads the key from the environment
        fault=FaultSet.from_env(teacher.name),
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


#: Batches handed to the engines and not answered yet, per replica: one being generated, one
#: queued behind it and one on its way, so an engine never waits for the driver.
WINDOW_PER_REPLICA = 3


def _block(seq: int, rows: Sequence[Mapping[str, Any]]) -> Any:
    """One engine call's input: the batch as an Arrow table with its ``batch`` number (the fault ledger's key)."""
    import pyarrow as pa

    table = pa.Table.from_pylist(list(rows))
    return table.append_column("batch", pa.array([seq] * table.num_rows, pa.int64()))


def to_batches(rows: Sequence[Mapping[str, Any]], batch_size: int) -> list[list[Mapping[str, Any]]]:
    """Consecutive batches of ``batch_size`` rows (the last may be shorter): one engine call each."""
    return list(batches_of([rows], batch_size))


class EnginePool:
    """One teacher's vLLM engines in a Ray Data actor pool; a context manager.

    Built by :func:`plan_serving` (planned and checked, nothing started). Engines start
    when :meth:`run` is iterated and are released when that iteration ends, breaks,
    fails or is cancelled; leaving the ``with`` block closes a run still open.
    ``cancel_event`` may be shared by several pools (one ``cancel`` stops them all).
    """

    def __init__(self, teacher: TeacherConfig, model_path: str, plan: TeacherPlan, spec: EngineSpec,
                 cancel_event: threading.Event | None = None) -> None:
        self.teacher = teacher
        self.model_path = model_path
        self.plan = plan
        self.spec = spec
        self._cancel = cancel_event if cancel_event is not None else threading.Event()
        self._open: list[Generator[Any, None, None]] = []
        self.faults: dict[str, Any] = {}  # FaultLedger.summary() summed over this pool's runs
        #: batches served over this pool's runs, the window, the most ever unanswered (feed.CreditFeed),
        #: the Ray Data executions (rounds) they took and ``teacher.batches_per_round``
        self.feed: dict[str, int] = {}

    @property
    def name(self) -> str:
        return self.teacher.name

    @property
    def cancelled(self) -> bool:
        """True once :meth:`cancel` was called (on this pool or through its shared event)."""
        return self._cancel.is_set()

    def cancel(self) -> None:
        """Stop after the current batch and release the engines (thread-safe, idempotent)."""
        self._cancel.set()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        for gen in self._open:
            gen.close()  # no-op for a finished run; otherwise releases its engines now
        self._open = []

    def run(self, rows: Sequence[Mapping[str, Any]], batch_size: int) -> Generator[list[dict[str, Any]], None, None]:
        """Serve ``rows`` (``prompt_rows.PROMPT_COLUMNS``) in batches of ``batch_size``: :meth:`run_stream` of one list."""
        return self.run_stream([rows], batch_size, max_rows=len(rows))

    def run_stream(self, row_lists: Iterable[Sequence[Mapping[str, Any]]], batch_size: int,
                   *, max_rows: int, eager: bool = False) -> Generator[list[dict[str, Any]], None, None]:
        """Serve the rows of ``row_lists`` (e.g. one list per shard, built lazily) in batches of ``batch_size``.

        ``max_rows``: at most this many rows in all (an upper bound is enough: Ray Data's
        plan needs the number of batches before the rows exist).

        Batches are cut across the lists as if they were one (``feed.batches_of``) and
        pulled from ``row_lists`` only as engines answer (at most :data:`WINDOW_PER_REPLICA`
        batches per replica ahead, ``feed.py``): neither the driver nor the object store
        holds more prompts than that, however many the run has. Yields each engine call's
        output rows (``records.RAW_COLUMNS``) as they arrive (completion order, not input
        order). Checked after every yielded batch: once cancelled, the iteration ends and
        the engines are released. Engine failures raise :class:`GenerationError` naming
        the teacher (:func:`describe_error`); user errors pass through unchanged.

        ``eager``: start the engines at once, while the first batches are built (in a
        thread: prompt building and cache lookups overlap the engines' start, ~10 s of
        vLLM import and engine start on CPU). Only for a stream known to hold rows (no
        record cache that might serve them all): without it the pool first pulls enough
        batches to know how many replicas it needs, and a stream without rows starts none.
        """
        gen = self._run(batches_of(row_lists, batch_size), batch_size, -(-max_rows // batch_size), eager)
        self._open.append(gen)
        return gen

    def _run(self, batches: Iterator[list[Mapping[str, Any]]], batch_size: int,
             max_batches: int, eager: bool) -> Generator[list[dict[str, Any]], None, None]:
        """In rounds of ``teacher.batches_per_round`` batches (``feed.rounds_of``): one execution, new engines each."""
        per_round, left = self.teacher.batches_per_round, max_batches
        for n, round_batches in enumerate(rounds_of(batches, per_round)):
            if self.cancelled:  # before each round (a later round's first batch is pulled first)
                return
            if left < 1 and n:  # a batch beyond max_rows: the caller's bound was wrong
                raise InternalError(f"teacher {self.name}: more batches than the {max_batches} planned")
            bound = min(per_round, left)
            feed = CreditFeed(round_batches, WINDOW_PER_REPLICA * self.plan.replicas, _block)
            try:
                yield from self._round(feed, batch_size, bound, eager and n == 0)
            finally:
                left -= feed.sent
                self.feed = {"batches": self.feed.get("batches", 0) + feed.sent, "window": feed.window,
                             "max_unanswered": max(self.feed.get("max_unanswered", 0), feed.max_unanswered),
                             "rounds": self.feed.get("rounds", 0) + 1, "batches_per_round": per_round}
            if self.cancelled:
                return

    def _round(self, feed: CreditFeed, batch_size: int, max_batches: int,
               eager: bool) -> Generator[list[dict[str, Any]], None, None]:
        """One Ray Data execution over at most ``max_batches`` batches of ``feed``; never more actors than
        batches (the bound when eager, else the batches there are)."""
        replicas = min(self.plan.replicas, max_batches) if eager else feed.peek(self.plan.replicas)
        if not replicas:
            return
        stream = self._serve(BackgroundStart(feed) if eager else feed, batch_size, max_batches, replicas)
        try:
            for rows in stream:
                yield rows
                if self.cancelled:
                    log.info("teacher %s: cancelled; engines released after the current batch", self.name)
                    break
        finally:
            stream.close()  # releases the engines now, whichever way the run ended

    def _serve(self, feed: CreditFeed | BackgroundStart, batch_size: int, max_batches: int,
               replicas: int) -> Generator[list[dict[str, Any]], None, None]:
        """The Ray Data pipeline over ``replicas`` ``TeacherEngine`` actors; closing it releases them."""
        import ray

        # Imported here, at run time, so a benchmark can substitute an instrumented subclass.
        from tinyllm_ray.teachers.api import ApiTeacher
        from tinyllm_ray.teachers.engine import TeacherEngine

        engine_cls = ApiTeacher if self.spec.api is not None else TeacherEngine

        # One block per batch (one actor call each), streamed from the driver (feed.py).
        plan = dataclasses.replace(self.plan, replicas=max(1, replicas))
        kwargs = plan.map_batches_kwargs(batch_size)
        ctor: dict[str, Any] = {"spec": self.spec}
        ledger = None
        if self.teacher.max_restarts and self.spec.api is None:  # an API teacher's actor holds no engine
            ledger = ray.remote(num_cpus=0)(FaultLedger).remote(
                self.name, self.teacher.max_restarts, self.teacher.max_batch_retries)
            ctor["ledger"] = ledger
        feeder = ray.remote(num_cpus=0)(BatchFeeder).remote()
        it: Any = None
        try:
            feed.start(lambda seq, block: feeder.put.remote(seq, block))
            ds = feed_dataset(feeder, max_batches).map_batches(
                engine_cls, fn_constructor_kwargs=ctor, batch_format="pyarrow", **kwargs
            )
            it = iter(ds.iter_batches(batch_format="pyarrow", batch_size=None, prefetch_batches=1))
            for batch in it:
                feed.credit()
                if batch.num_rows:  # past the stream's end: empty blocks (feed.feed_dataset)
                    yield batch.to_pylist()
            feed.join()  # a stream ended by a failure to build its first batches: that failure
        except UserError:
            raise
        except Exception as exc:
            raise GenerationError(describe_error(self.name, exc)) from exc
        finally:
            if it is not None and hasattr(it, "close"):
                it.close()  # Ray Data shuts its executor down now (kills the actors), not at GC
            ray.kill(feeder)
            feed.join(raise_error=False)  # a background start's thread ends before the rows' owner goes on
            factory = kwargs.get("ray_remote_args_fn")
            if factory is not None:
                factory.remove_all()
            if ledger is not None:
                self._collect_faults(ledger)

    def _collect_faults(self, ledger: Any) -> None:
        """Add this run's ledger summary to :attr:`faults` (logged when anything happened); end its actors."""
        import ray

        try:
            summary = ray.get(ledger.summary.remote(), timeout=30)
            for actor in ray.get(ledger.actors.remote(), timeout=30):
                ray.kill(actor)  # no_restart: the engines end with the run, whatever holds their results
        except Exception as exc:  # noqa: BLE001 - the figures are a report, never a reason to fail
            log.warning("teacher %s: fault ledger unreadable: %s", self.name, exc)
            summary = None
        finally:
            ray.kill(ledger)
        if summary is None:
            return
        if summary["restarts"] or summary["failed_batches"]:
            log.warning("teacher %s: engine restarted %d time(s), %d batch(es) retried, %d given up as failed; "
                        "last: %s", self.name, summary["restarts"], summary["retried_batches"],
                        summary["failed_batches"], summary["last_reason"])
        self.faults = merge_fault_summaries(self.faults, summary)


@dataclass(frozen=True)
class ServingPlan:
    """Every requested teacher planned and checked against the cluster; nothing started.

    ``notes`` say why each automatic choice was made (accelerator, engine settings,
    queueing when all teachers together exceed the cluster); they are logged.
    """

    pools: tuple[EnginePool, ...]
    accelerator: Accelerator
    notes: tuple[str, ...]

    def pool(self, name: str) -> EnginePool:
        for p in self.pools:
            if p.name == name:
                return p
        raise InternalError(f"no engine pool planned for teacher {name!r}")


def plan_pools(
    cfg: JobConfig,
    teachers: Sequence[TeacherConfig],
    cluster_resources: Mapping[str, float],
    nodes: Sequence[Mapping[str, float]],
    *,
    self_eval: SelfEvalConfig | None = None,
    cancel_event: threading.Event | None = None,
) -> ServingPlan:
    """Plan one :class:`EnginePool` per teacher for a cluster described by its resources.

    Pure (no Ray, no vLLM; ``tiny:`` models are built locally), so plans are checked in
    unit tests with logical GPUs. ``nodes`` are the per-node resource totals of the live
    nodes; one node means driver and actors share a filesystem, so local model paths are
    checked here. ``self_eval`` defaults to ``cfg.self_eval`` (evaluation passes a
    disabled one). Raises :class:`GenerationError` naming the teacher when its local
    model path is missing or one of its replicas can never be placed.
    """
    def se_of(t: TeacherConfig) -> SelfEvalConfig:  # per teacher (TeacherConfig.self_eval) unless forced
        if self_eval is not None:
            return self_eval
        flag = cfg.self_eval.enabled if t.self_eval is None else t.self_eval
        return cfg.self_eval if flag == cfg.self_eval.enabled else cfg.self_eval.model_copy(update={"enabled": flag})

    accelerator, why = choose_accelerator(cluster_resources)
    notes = [why]
    paths = {}
    for t in teachers:
        if t.api is not None:  # served by its endpoint: nothing to resolve or check locally
            paths[t.name] = t.model
            continue
        paths[t.name] = resolve_teacher_model(cfg, t)
        precheck_model(t.name, paths[t.name], same_filesystem=len(nodes) <= 1)
    preload = cpu_preload(cfg.runtime) if accelerator == "cpu" else {}
    plans = [api_plan(t, accelerator) if t.api is not None
             else plan_teacher(t, accelerator, model_path=paths[t.name], self_eval=se_of(t), preload=preload)
             for t in teachers]
    try:
        notes += check_fits(plans, nodes)
    except PlacementError as exc:
        raise GenerationError(str(exc)) from None
    pools = []
    for t, plan in zip(teachers, plans):
        notes += [f"teacher {t.name}: {w}" for w in plan.why]
        pools.append(EnginePool(t, paths[t.name], plan, engine_spec(t, plan, cfg.prompts, se_of(t)), cancel_event))
    return ServingPlan(tuple(pools), accelerator, tuple(notes))


def cpu_preload(runtime: RuntimeConfig) -> dict[str, str]:
    """The libraries CPU engine actors preload (``runtime.cpu_preload`` that exist on the driver's node).

    A user's own ``LD_PRELOAD`` in ``runtime.env_vars`` wins (nothing is added). Looked up
    on the driver: on a multi-node cluster the nodes are expected to share the image; a
    missing file is ignored by the dynamic loader with a warning, never fatal.
    """
    if "LD_PRELOAD" in runtime.env_vars or not runtime.cpu_preload:
        return {}
    libs = find_preload_libs()
    return {name: libs[name] for name in runtime.cpu_preload if name in libs}


def plan_serving(
    cfg: JobConfig,
    teachers: Sequence[TeacherConfig],
    *,
    self_eval: SelfEvalConfig | None = None,
    cancel_event: threading.Event | None = None,
) -> ServingPlan:
    """:func:`plan_pools` for the Ray cluster ``cfg.runtime`` names (started or joined here)."""
    import ray

    from tinyllm_ray.runtime import init_ray

    init_ray(cfg.runtime)
    from tinyllm_ray.teachers.bootstrap import ensure_bootstrapped

    ensure_bootstrapped(cfg, teachers)  # teachers.<i>.bootstrap: trained (concurrently) before planning
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    return plan_pools(cfg, teachers, ray.cluster_resources(), nodes, self_eval=self_eval, cancel_event=cancel_event)
