"""``tinyllm-ray run``: generation -> training -> evaluation as one Ray job, streaming.

Generation runs in a driver thread (its own Ray Data pipeline over the teachers' vLLM
actors) and commits store shards as it goes; training starts at the same time on a
Ray Data stream that waits for each slice of the train split to be committed by every
teacher (``student/streaming.py``). So the first optimizer step does not wait for the
last rationale, and the store still persists every record: a second ``run`` (or
``train``/``tune``) reuses it, skipping every finished shard.

Failures: a failed generation saves its message in the store's marker, so waiting
slice readers stop at once and the user sees *that* message; a failed training cancels
generation at once (committed shards stay) and the error names both failures.

The run ends with a report (``report.json`` + ``report.md`` in the run folder, see
:class:`~tinyllm_ray.paths.RunPaths`): teacher statistics, per-task losses, validation
and test accuracy, time per stage, the overlap achieved and where the outputs are.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from tinyllm_ray.config import JobConfig
from tinyllm_ray.errors import StreamingError, UserError
from tinyllm_ray.jobs.checks import check_runnable
from tinyllm_ray.jobs.report import plot_training, render_markdown, write_report
from tinyllm_ray.observability import progress
from tinyllm_ray.paths import RunPaths

__all__ = ["first_step_record", "first_step_time", "one_line", "overlap_blocker", "overlap_timeline", "run_failure",
           "run_pipeline", "task_losses"]

log = logging.getLogger(__name__)
#: How long a cancelled generation may take to stop (its teachers finish their batch).
CANCEL_WAIT_S = 120.0


@dataclass
class _GenerationThread:
    """Runs generation beside training; remembers when each shard was committed.

    A failure is saved in the store's marker (``RationaleStore.mark_generation_failed``)
    so that slice readers waiting for a shard stop at once, with this message.
    """

    cfg: JobConfig
    shard_size: int
    shard_events: list[tuple[str, int, float]] = field(default_factory=list)  # (teacher, shard, committed at)
    report: Any = None
    error: BaseException | None = None
    started: float = 0.0
    ended: float = 0.0

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tinyllm-generation", daemon=True)
        self._gen: Any = None
        self._cancelled = threading.Event()

    def _run(self) -> None:
        from tinyllm_ray.store import RationaleStore
        from tinyllm_ray.teachers.pipeline import GenerationRun

        self.started = time.time()
        try:
            self._gen = GenerationRun(self.cfg, shard_size=self.shard_size)
            if self._cancelled.is_set():  # training failed before generation got going
                self._gen.cancel()
            for written in self._gen:
                self.shard_events.append((written.teacher, written.shard, time.time()))
                progress("shard", shard=written)
                if self._cancelled.is_set():
                    break
            self.report = self._gen.report
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread (see run_pipeline)
            self.error = exc
            if not self._cancelled.is_set():
                RationaleStore(self.cfg.runtime.resolved_store_uri).mark_generation_failed(one_line(exc))
        finally:
            self.ended = time.time()

    def start(self) -> None:
        self._thread.start()

    def cancel(self) -> None:
        """Stop the teachers after their current batch (committed shards stay in the store)."""
        self._cancelled.set()
        if self._gen is not None:
            self._gen.cancel()  # before iteration starts, no engine is started at all

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the thread; its error (if any) stays in :attr:`error` for the caller."""
        if self._thread.is_alive():
            self._thread.join(timeout)


def one_line(exc: BaseException) -> str:
    """The first line of ``exc``: a user error as is, anything else prefixed with its type."""
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else ""
    if isinstance(exc, UserError):
        return first or type(exc).__name__
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def first_step_record(metrics_file: str | None) -> dict[str, Any] | None:
    """The first optimizer-step report of the trainer's metrics log (``time``, ``step_seconds`` ...)."""
    if not metrics_file:
        return None
    try:
        with open(metrics_file) as f:
            for line in f:
                rec = json.loads(line)
                if rec.get("event") == "report" and int(rec.get("step", 0)) >= 1:
                    return rec
    except FileNotFoundError:
        return None
    return None


def first_step_time(metrics_file: str | None) -> float | None:
    """Wall-clock time of the first optimizer-step report (from the trainer's metrics log)."""
    rec = first_step_record(metrics_file)
    return float(rec["time"]) if rec is not None else None


def overlap_timeline(t0: float, gen_started: float, gen_ended: float, shard_events: list[tuple[str, int, float]],
                     teachers: list[str], train_started: float, first_step: dict[str, Any]) -> dict[str, Any]:
    """The report's streaming timeline, in seconds since the run began (pure).

    Why each point: a late first step is explained by which of them came late: the first
    slice (every teacher's shard k committed: what a slice reader waits for), the trainer
    being ready (imports, model, DeepSpeed engine, baseline validation: the first step's
    ``time`` minus its ``step_seconds``, which start when the worker is ready), or neither.
    """
    done: dict[int, dict[str, float]] = {}
    for teacher, shard, t in shard_events:
        done.setdefault(shard, {})[teacher] = t
    complete = [max(by.values()) for by in done.values() if set(teachers) <= set(by)]
    step_t = float(first_step["time"])
    ready = step_t - float(first_step.get("step_seconds", 0.0))
    return {
        "generation_started_s": round(gen_started - t0, 2),
        "generation_ended_s": round(gen_ended - t0, 2),
        "first_slice_committed_s": round(min(complete) - t0, 2) if complete else None,
        "training_started_s": round(train_started - t0, 2),
        "trainer_ready_s": round(ready - t0, 2),
        "first_train_step_s": round(step_t - t0, 2),
        "train_started_before_generation_ended": step_t < gen_ended,
        "overlap_s": round(max(0.0, gen_ended - step_t), 2),
        "shards_committed_after_first_step": sum(1 for *_, t in shard_events if t > step_t),
        "shards_committed_this_run": len(shard_events),
    }


def task_losses(history: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """First and last value of every per-task loss the trainer reported."""
    out: dict[str, dict[str, float]] = {}
    for key in sorted({k for rec in history for k in rec if k == "loss" or k.startswith("loss_")}):
        vals = [rec[key] for rec in history if rec.get(key) is not None]
        if vals:
            out[key] = {"first": round(float(vals[0]), 4), "last": round(float(vals[-1]), 4)}
    return out


def run_failure(gen_error: BaseException | None, saved: str | None, train_error: BaseException | None,
                store_uri: str) -> Exception:
    """The one error a failed streaming run raises, naming every failure (pure).

    * generation failed (whatever training then did): its saved message (the store's
      marker, else the exception's first line) leads, and the training failure it caused
      is named after it;
    * only training failed: say so, and that generation was cancelled and resumes on rerun.

    A user error at the root stays a :class:`StreamingError` (one line in the CLI); any
    other root is a ``RuntimeError`` (raised ``from`` the root, so its traceback is kept).
    """
    if saved is not None or gen_error is not None:
        msg = f"generation failed: {saved or one_line(gen_error)}"  # type: ignore[arg-type]
        if train_error is not None:
            msg += f" (training stopped too: {one_line(train_error)})"
        root = gen_error
    else:
        msg = (f"training failed: {one_line(train_error)}; generation was cancelled (committed shards stay "  # type: ignore[arg-type]
               f"in {store_uri}; rerun to resume)")
        root = train_error
    return StreamingError(msg) if root is None or isinstance(root, UserError) else RuntimeError(msg)


def overlap_blocker(teachers: Mapping[str, float], trainer: Mapping[str, float],
                    cluster: Mapping[str, float]) -> str | None:
    """Why training cannot start while the teachers hold their resources, or None (pure).

    ``teachers``: what all teachers' replicas reserve together (their placement plans);
    ``trainer``: what the training workers and the streaming slice readers reserve;
    ``cluster``: Ray's resource totals. A necessary condition only (cluster totals, not
    per node). Why it matters: a Ray Train worker that cannot be placed waits, silently,
    until a teacher's engine exits, so the run trains after generation, not beside it.
    """
    short = sorted(k for k, need in trainer.items()
                   if need > 0 and teachers.get(k, 0.0) + need > cluster.get(k, 0.0) + 1e-9)
    if not short:
        return None

    def fmt(res: Mapping[str, float]) -> str:
        return ", ".join(f"{k} {res.get(k, 0.0):g}" for k in short)

    return (f"the teachers reserve {fmt(teachers)} of the cluster's {fmt(cluster)} and training needs {fmt(trainer)} "
            "more: training starts only when a teacher finishes (no streaming overlap). Give Ray more "
            f"{'/'.join(short)} (runtime.num_cpus for a local run; `ray start --num-cpus N` on a cluster: logical "
            "CPUs may over-commit a small machine), or lower teachers.<i>.num_cpus / train.cpus_per_worker")


def _check_overlap_resources(cfg: JobConfig) -> str | None:
    """:func:`overlap_blocker` for ``cfg`` on the running cluster; logged as a warning when set."""
    import ray

    from tinyllm_ray.student.data import STREAM_READER_CPUS, STREAM_READERS
    from tinyllm_ray.teachers.serving import plan_pools

    cluster = ray.cluster_resources()
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    try:
        plans = plan_pools(cfg, cfg.teachers, cluster, nodes).pools
    except Exception as exc:  # noqa: BLE001 - advisory: generation plans again and reports this in its own words
        log.debug("overlap resource check skipped: %s", one_line(exc))
        return None
    teachers: dict[str, float] = {}
    for pool in plans:
        for k, v in pool.plan.total_resources.items():
            teachers[k] = teachers.get(k, 0.0) + v
    t, n = cfg.train, cfg.train.num_workers
    trainer = {"CPU": t.cpus_per_worker * n + STREAM_READER_CPUS * STREAM_READERS,
               **({"GPU": float(n)} if t.use_gpu else {}), **{k: v * n for k, v in t.worker_resources.items()}}
    note = overlap_blocker(teachers, trainer, cluster)
    if note:
        log.warning("%s", note)
    return note


def _train_streaming(cfg: JobConfig, gen: _GenerationThread, train: Any, val: Iterator[Any], shard_size: int,
                     store_uri: str, fingerprint: str | None) -> tuple[Any, float, float]:
    """Fit the student on the stream; returns the result and when fitting began and ended.

    Training failed -> generation is cancelled at once; either way, a failure is raised
    as :func:`run_failure` words it.
    """
    from tinyllm_ray.store import RationaleStore
    from tinyllm_ray.student.streaming import streaming_student_data
    from tinyllm_ray.student.trainer import run_training

    store = RationaleStore(store_uri)
    try:
        data = streaming_student_data(cfg, train, val, shard_size, fingerprint=fingerprint)
        t_train = time.time()
        result = run_training(cfg, data=data)
        t_end = time.time()
    except BaseException as train_exc:
        gen.cancel()
        gen.wait(CANCEL_WAIT_S)
        if not isinstance(train_exc, Exception):  # KeyboardInterrupt, SystemExit: as they are
            raise
        raise run_failure(gen.error, store.generation_failure(), train_exc, store_uri) from (gen.error or train_exc)
    gen.wait()
    if gen.error is not None:
        raise run_failure(gen.error, store.generation_failure(), None, store_uri) from gen.error
    return result, t_train, t_end


def _resolve_models_before_threads(cfg: JobConfig) -> None:
    """Import transformers' classes and build/resolve every model on this thread, first.

    Why: ``transformers`` imports its classes lazily and that is not thread-safe. With the
    generation thread building the tiny teachers while this thread built the tiny student,
    a fresh ``tinyllm-ray run`` failed with ``ImportError: cannot import name
    'AutoModelForCausalLM' from 'transformers'``. Done once here, both threads later find
    the modules imported and the models cached.
    """
    from tinyllm_ray.runtime import import_package_now
    from tinyllm_ray.student.model import resolve_student_path
    from tinyllm_ray.teachers.bootstrap import ensure_bootstrapped, resolve_teacher_model

    import_package_now()
    ensure_bootstrapped(cfg)  # bootstrapped teachers train (concurrently) before any thread starts
    for teacher in cfg.teachers:
        resolve_teacher_model(cfg, teacher)
    resolve_student_path(cfg.student)


def _run_splits(cfg: JobConfig) -> tuple[Any, Iterator[Any], list[str]]:
    """The train split served by an actor, the validation split (an iterator: model selection
    reads only ``train.eval_limit`` rows of it), and the splits the closing evaluation
    reports (validation, then ``eval.split`` or test if any).

    Why served: the student's slice readers fetch their examples from a ``SplitServer``
    actor (``data/split_server.py``), so the driver holds nothing per prompt, whatever the
    prompt count.
    """
    from tinyllm_ray.data.loader import can_stream, iter_split, load_splits
    from tinyllm_ray.data.split_server import serve_split

    test_split = cfg.eval.split if cfg.eval.split != "validation" else "test"
    if not can_stream(cfg.data):  # files and the hub: which splits exist is only known by loading
        loaded = load_splits(cfg.data)
        loaded.require(cfg.eval.split, "eval.split")  # hub datasets: check_runnable could not look before
        names = set(loaded.splits)
        del loaded
    else:  # a generated task has every split
        names = {"train", "validation", test_split}
    train = serve_split(cfg.data, "train")
    return train, iter_split(cfg.data, "validation"), [s for s in ("validation", test_split) if s in names]


def run_pipeline(cfg: JobConfig) -> dict[str, Any]:
    """Generate (streaming) + train + evaluate; write and return the run report.

    A config streaming cannot train is refused before anything starts (``check_runnable``).
    """
    check_runnable(cfg)
    from tinyllm_ray.runtime import init_ray
    from tinyllm_ray.store import RationaleStore, build_manifest, resolve_shard_size
    from tinyllm_ray.student.evaluate_model import evaluate_student
    from tinyllm_ray.student.trainer import METRICS_FILE, TENSORBOARD_DIR, TRAIN_RUN_NAME

    t0 = time.time()
    paths = RunPaths.of(cfg)
    cfg = paths.pin(cfg)
    init_ray(cfg.runtime)
    train, val, eval_splits = _run_splits(cfg)
    try:
        store = RationaleStore(paths.store)
        stored = store.read_manifest()
        shard_size, why = resolve_shard_size(cfg.runtime.store_shard_size, (stored or {}).get("shard_size"),
                                             [t.batch_size for t in cfg.teachers])
        log.info("store shard size %d (%s)", shard_size, why)
        store.clear_generation_failed()
        fingerprint = None
        if cfg.teachers:  # shards a changed config supersedes move aside before training may read a slice
            manifest = build_manifest(cfg, "train", train, shard_size)  # one pass over the served split
            fingerprint = manifest["data_hash"]
            with store.writer_lock():
                store.open_manifest(manifest, supersede=cfg.runtime.record_cache)

        _resolve_models_before_threads(cfg)
        resources_note = _check_overlap_resources(cfg) if cfg.teachers else None
        gen = _GenerationThread(cfg, shard_size)
        if cfg.teachers:
            progress("generation", cfg=cfg, shard_size=shard_size)
            gen.start()
        progress("training", label="student", pattern=os.path.join(paths.train, TRAIN_RUN_NAME, METRICS_FILE),
                 total=cfg.train.max_steps)
        result, t_train, t_train_end = _train_streaming(cfg, gen, train, val, shard_size, paths.store,
                                                         fingerprint)
        if result.model_dir is None:
            raise RuntimeError("training produced no checkpoint with a validation score; see the Ray Train log")

        t_eval = time.time()
        evaluation = {}
        progress("stage", name="evaluation", detail="student on " + ", ".join(eval_splits))
        for split in eval_splits:
            evaluation[split] = evaluate_student(cfg, result.model_dir, split=split).to_dict()
        t_end = time.time()
    finally:
        train.close()  # its actor and local file; a failed run keeps nothing running either

    first_step = first_step_record(result.metrics_file)
    history = result.history()
    gen_report = gen.report.to_dict() if gen.report is not None else None
    overlap = None
    if cfg.teachers and first_step is not None:
        overlap = overlap_timeline(t0, gen.started, gen.ended, gen.shard_events, [t.name for t in cfg.teachers],
                                   t_train, first_step)
        if resources_note:
            overlap["resources"] = resources_note
    data = dict(result.data or {})
    if cfg.teachers and cfg.filter.cross_teacher.mode != "off":  # slices counted it in Ray tasks: recount, whole store
        from tinyllm_ray.student.data import cross_teacher_summary
        from tinyllm_ray.student.tasks import TaskPlan

        data.update(cross_teacher_summary(store, TaskPlan.from_config(cfg)))
    report = {
        "run": cfg.runtime.run_name,
        "store_uri": paths.store,
        "student": result.model_dir,
        "paths": {**paths.describe(), "student": result.model_dir},
        "teachers": gen_report["teachers"] if gen_report else {},
        "generation": {k: v for k, v in (gen_report or {}).items() if k != "teachers"},
        "training": {"best_step": result.best_step, "best_val_accuracy": result.best_val_accuracy,
                     "final_step": result.final_step, "total_steps": result.total_steps,
                     "task_losses": task_losses(history), "data": data,
                     "plot": plot_training(history, paths.report_png) if paths.local else None,
                     "tensorboard": (os.path.join(os.path.dirname(result.metrics_file), TENSORBOARD_DIR)
                                     if result.metrics_file else None)},
        "evaluation": {k: {"accuracy": v["accuracy"], "correct": v["correct"], "total": v["total"]}
                       for k, v in evaluation.items()},
        "seconds": {"generation": round(gen.ended - gen.started, 2) if cfg.teachers else 0.0,
                    "training": round(t_train_end - t_train, 2), "evaluation": round(t_end - t_eval, 2),
                    "total": round(t_end - t0, 2)},
        "overlap": overlap,
    }
    report["report_files"] = write_report(report, paths, render_markdown(report))
    return report
