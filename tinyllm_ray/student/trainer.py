"""Driver side of student training: build the Ray Train ``TorchTrainer``, fit, pick, export.

Public front door: :func:`run_training` (``tinyllm-ray train``, the ``run`` pipeline and
each Ray Tune trial call it). What it does, in order:

1. load the dataset splits and resolve the student model (``tiny`` is built locally);
2. build the per-stage Ray Data datasets from the rationale store, with teacher-coverage,
   empty-target and length checks (``student/data.py``) — before any worker starts;
3. compute steps per stage, then a ``TorchTrainer`` with ``ScalingConfig`` (workers, CPUs
   or GPUs per worker), ``TorchConfig(backend=gloo|nccl)`` from ``train.backend`` /
   ``train.use_gpu``, ``RunConfig(storage_path, FailureConfig(max_failures),
   CheckpointConfig(score = val_accuracy))`` and ``DS_ACCELERATOR=cpu`` in the workers'
   runtime env on CPU;
4. fit; choose the best checkpoint on **validation** accuracy (never test), from the
   final training stage when there are two, ties to the later step;
5. copy that checkpoint's Hugging Face export (model + tokenizer + tinyllm_student.json)
   to ``<storage>/<run_name>/student`` (or ``output_dir``).

Ray Tune: pass ``callbacks=[TuneReportCallback()]`` and ``run_config_overrides={"name":
..., "storage_path": ...}``; every checkpoint report carries ``val_accuracy``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinyllm_ray.config import public_dump
from tinyllm_ray.errors import ConfigError, find_user_error
from tinyllm_ray.paths import RunPaths
from tinyllm_ray.store import is_uri
from tinyllm_ray.student.loop import HF_DIR, LoopConfig, train_loop_per_worker
from tinyllm_ray.student.metrics_log import (
    METRICS_FILE,
    TENSORBOARD_DIR,
    MetricsLogCallback,
    MlflowSink,
    check_mlflow_available,
)

if TYPE_CHECKING:
    from tinyllm_ray.config import JobConfig
    from tinyllm_ray.student.data import StudentData

log = logging.getLogger(__name__)

__all__ = [
    "METRICS_FILE",
    "TENSORBOARD_DIR",
    "MetricsLogCallback",
    "TrainerBundle",
    "TrainingResult",
    "build_trainer",
    "controller_poll_interval",
    "export_checkpoint",
    "prepare_data",
    "run_training",
]

TRAIN_RUN_NAME = "train"
#: Controller poll interval during training (see ``controller_poll_interval``).
REPORT_POLL_INTERVAL_S = 0.2


@dataclass
class TrainingResult:
    """What a training run produced; ``ray_result`` is the raw ``ray.train.Result``."""

    model_dir: str | None
    best_checkpoint: str | None
    best_step: int | None
    best_val_accuracy: float | None
    final_step: int
    total_steps: int
    run_dir: str
    metrics_file: str | None
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    ray_result: Any = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("ray_result", None)
        return d

    def history(self) -> list[dict[str, Any]]:
        """Every report (one per optimizer step) from the metrics log, in order."""
        if not self.metrics_file or not os.path.exists(self.metrics_file):
            return []
        with open(self.metrics_file) as f:
            return [r for r in (json.loads(line) for line in f if line.strip()) if r.get("event") == "report"]


@dataclass
class TrainerBundle:
    """A built (not yet fitted) trainer and what :func:`run_training` needs after ``fit``."""

    trainer: Any
    data: StudentData
    loop_config: LoopConfig
    metrics_file: str | None
    mlflow: MlflowSink | None = None


def build_trainer(
    cfg: JobConfig,
    *,
    data: StudentData | None = None,
    callbacks: list[Any] | None = None,
    run_config_overrides: dict[str, Any] | None = None,
    worker_env: dict[str, str] | None = None,
    store_uri: str | None = None,
    role: str = "student",
) -> TrainerBundle:
    """The configured ``TorchTrainer`` (not started), its data and the workers' loop config.

    ``role`` names what is trained in the log (``teacher llama`` for a bootstrapped teacher).
    """
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from tinyllm_ray.student.collate import CollateSpec
    from tinyllm_ray.student.data import steps_per_stage
    from tinyllm_ray.student.model import StudentFormat, detect_arch, prefix_side_for, resolve_student_path
    from tinyllm_ray.student.schedule import check_warmup, stage_lrs
    from tinyllm_ray.student.store_checks import check_store_ready
    from tinyllm_ray.student.tasks import TaskPlan

    if data is None:  # a store that cannot feed this config fails before the model and tokenizer load
        check_store_ready(cfg, store_uri=store_uri)
    tcfg = cfg.train
    model_path = resolve_student_path(cfg.student)
    arch = detect_arch(model_path, cfg.student.arch, cfg.student.trust_remote_code)
    plan = TaskPlan.from_config(cfg)
    spec = CollateSpec(arch=arch, task_names=plan.names, max_input_length=cfg.student.max_input_length,
                       max_target_length=cfg.student.max_target_length, truncation=cfg.student.truncation,
                       prefix_side=prefix_side_for(cfg.student, arch), causal_separator=cfg.student.causal_separator)
    fmt = StudentFormat.from_config(cfg, arch, plan.names)
    if data is None:
        data = _prepare(cfg, model_path, spec, store_uri)
    world = tcfg.num_workers
    stage_steps, micro = [], []
    for stage in data.stages:
        s, m = steps_per_stage(data.groups[stage], world, tcfg.micro_batch_size, tcfg.grad_accum_steps,
                               tcfg.epochs_of_stage(stage), tcfg.max_steps)
        stage_steps.append(s)
        micro.append(m)
    try:
        check_warmup(stage_steps, tcfg.warmup_steps)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    lrs = stage_lrs(stage_steps, tcfg.warmup_steps, tcfg.scheduler, tcfg.lr, tcfg.min_lr_ratio)
    log.info("learning rate (%s, warm-up %d, floor %g x lr): %s", tcfg.scheduler, tcfg.warmup_steps,
             tcfg.min_lr_ratio, "; ".join(f"stage {i}: step 1 {r[0]:.3g} -> step {len(r)} {r[-1]:.3g}"
                                          for i, r in zip(data.stages, lrs)))
    fmt_dict = asdict(fmt)
    fmt_dict["task_names"] = list(fmt.task_names)
    loop_cfg = LoopConfig(
        job=public_dump(cfg), plan=plan.to_dict(), collate=spec.to_dict(), student_format=fmt_dict,
        model_path=model_path, stage_steps=stage_steps, micro_per_epoch=micro,
        eval_batch_size=cfg.eval.batch_size, streaming=bool(data.stats.get("streaming")),
    )
    log.info("%s %s (%s, task prefix on the %s side); tasks %s; steps per stage %s; %d worker(s), "
             "backend %s, ZeRO-%d, %s", role, model_path, arch, spec.prefix_side, list(plan.names), stage_steps,
             world, tcfg.resolved_backend, tcfg.zero_stage, tcfg.precision)
    from tinyllm_ray.student.deepspeed_config import effective_zero_stage

    if effective_zero_stage(tcfg.zero_stage, world) != tcfg.zero_stage:
        log.info("one worker: ZeRO-%d would partition nothing and costs ~10%% per step, so DeepSpeed runs "
                 "stage 0 (measured in benchmarks/student_throughput.py); ZeRO-%d applies with 2+ workers",
                 tcfg.zero_stage, tcfg.zero_stage)

    env = {"TOKENIZERS_PARALLELISM": "false", **cfg.runtime.env_vars, **(worker_env or {})}
    if not tcfg.use_gpu:
        env.setdefault("DS_ACCELERATOR", "cpu")
    rc_kwargs: dict[str, Any] = {
        "name": TRAIN_RUN_NAME,
        "storage_path": RunPaths.of(cfg).train,
        "failure_config": FailureConfig(max_failures=tcfg.max_failures),
        "checkpoint_config": CheckpointConfig(num_to_keep=tcfg.num_checkpoints_to_keep,
                                           checkpoint_score_attribute="val_accuracy",
                                           checkpoint_score_order="max"),
        "worker_runtime_env": {"env_vars": env},
    }
    rc_kwargs.update(run_config_overrides or {})
    callbacks = list(callbacks or []) + list(rc_kwargs.get("callbacks") or [])
    log_path = os.path.join(str(rc_kwargs["storage_path"]), str(rc_kwargs["name"]), METRICS_FILE)
    local = not is_uri(log_path) and rc_kwargs.get("storage_filesystem") is None
    metrics_file = log_path if local else None  # the controller writes only to a local folder
    mlflow = _mlflow_sink(cfg, str(rc_kwargs["storage_path"]), str(rc_kwargs["name"]))
    if metrics_file is not None or mlflow is not None:
        callbacks.append(MetricsLogCallback(metrics_file, mlflow))
    rc_kwargs["callbacks"] = callbacks
    run_config = RunConfig(**rc_kwargs)
    resources = {"CPU": float(tcfg.cpus_per_worker), **{k: float(v) for k, v in tcfg.worker_resources.items()}}
    if tcfg.use_gpu:
        resources["GPU"] = 1.0
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_cfg.to_dict(),
        torch_config=TorchConfig(backend=tcfg.resolved_backend),
        scaling_config=ScalingConfig(num_workers=world, use_gpu=tcfg.use_gpu, resources_per_worker=resources),
        run_config=run_config,
        datasets=data.datasets,
        dataset_config=DataConfig(datasets_to_split=[n for n in data.datasets if n.startswith("train_stage")]),
    )
    return TrainerBundle(trainer=trainer, data=data, loop_config=loop_cfg, metrics_file=metrics_file, mlflow=mlflow)


def _mlflow_sink(cfg: JobConfig, storage_path: str, name: str) -> MlflowSink | None:
    """The MLflow run of this training (``train.mlflow_tracking_uri``), started now, or None."""
    uri = cfg.train.mlflow_tracking_uri
    check_mlflow_available(uri)
    if uri is None:
        return None
    sink = MlflowSink(uri, cfg.train.mlflow_experiment, run_name=f"{cfg.runtime.run_name}/{name}")
    dump = public_dump(cfg)  # secrets redacted, as in every other copy of the config
    params = {f"{sec}.{k}": v for sec in ("train", "loss") for k, v in (dump.get(sec) or {}).items()
              if not isinstance(v, (dict, list)) and not k.startswith("mlflow")}
    params.update({"student.model": cfg.student.model, "storage_path": storage_path,
                   "teachers": ",".join(t.name for t in cfg.teachers)})
    run_id = sink.start(dict(list(params.items())[:100]))
    log.info("MLflow: run %s in experiment %r at %s", run_id, cfg.train.mlflow_experiment, uri)
    return sink


def _prepare(cfg: JobConfig, model_path: str, spec: Any, store_uri: str | None) -> StudentData:
    from transformers import AutoTokenizer

    from tinyllm_ray.data.loader import load_splits
    from tinyllm_ray.student.collate import TaskCollator
    from tinyllm_ray.student.data import prepare_student_data

    tok = AutoTokenizer.from_pretrained(model_path, trust_remote_code=cfg.student.trust_remote_code)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    loaded = load_splits(cfg.data)
    return prepare_student_data(cfg, loaded.require("train"), loaded.require("validation"), store_uri=store_uri,
                                collator=TaskCollator(tok, spec))


def prepare_data(cfg: JobConfig, *, store_uri: str | None = None) -> StudentData:
    """The student's datasets for ``cfg`` (store checks included), to pass as ``run_training(data=...)``.

    Why public: ``compare`` trains several seeds of one setting on the same data; preparing
    it once keeps the data start-up out of every seed's measured path. Only the seed may
    differ between the configs that share it (the global shuffle is ``cfg.train.seed``'s).
    """
    from tinyllm_ray.student.collate import CollateSpec
    from tinyllm_ray.student.model import detect_arch, prefix_side_for, resolve_student_path
    from tinyllm_ray.student.store_checks import check_store_ready
    from tinyllm_ray.student.tasks import TaskPlan

    check_store_ready(cfg, store_uri=store_uri)
    model_path = resolve_student_path(cfg.student)
    arch = detect_arch(model_path, cfg.student.arch, cfg.student.trust_remote_code)
    plan = TaskPlan.from_config(cfg)
    spec = CollateSpec(arch=arch, task_names=plan.names, max_input_length=cfg.student.max_input_length,
                       max_target_length=cfg.student.max_target_length, truncation=cfg.student.truncation,
                       prefix_side=prefix_side_for(cfg.student, arch))
    return _prepare(cfg, model_path, spec, store_uri)


@contextlib.contextmanager
def controller_poll_interval(seconds: float):
    """Poll workers every ``seconds`` during ``fit`` unless the user set the interval.

    Why: Ray Train v2 hands each ``ray.train.report`` to the controller through a queue of
    size one that the controller drains once per health-check poll (2 s by default), so
    reporting every optimizer step (which we do, for per-task losses) would cap training
    at one step per poll. The variable is propagated from the driver to the controller.
    """
    key = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
    if key in os.environ:
        yield
        return
    os.environ[key] = str(seconds)
    try:
        yield
    finally:
        os.environ.pop(key, None)


def _select_best(best_checkpoints: list[tuple[Any, dict[str, Any]]], last_stage: int) -> tuple[Any, dict] | None:
    """Highest validation accuracy among final-stage checkpoints; ties -> later step."""
    scored = [(c, m) for c, m in best_checkpoints if m.get("val_accuracy") is not None]
    final = [(c, m) for c, m in scored if int(m.get("stage", 0)) == last_stage] or scored
    if not final:
        return None
    return max(final, key=lambda cm: (float(cm[1]["val_accuracy"]), int(cm[1].get("step", 0))))


def export_checkpoint(ckpt: Any, model_dir: str) -> str:
    """Copy a checkpoint's Hugging Face export (model + tokenizer + layout) to ``model_dir``.

    Works for local and remote storage alike: the checkpoint is opened with
    ``as_directory`` (a download when remote), and a URI ``model_dir`` is an upload.
    """
    import shutil

    with ckpt.as_directory() as d:
        src = os.path.join(d, HF_DIR)
        if not os.path.isdir(src):
            raise FileNotFoundError(f"checkpoint {ckpt.path} has no {HF_DIR}/ export")
        if is_uri(model_dir):
            import pyarrow.fs as pafs

            pafs.copy_files(src, model_dir)
        else:
            if os.path.exists(model_dir):
                shutil.rmtree(model_dir)
            shutil.copytree(src, model_dir)
    return model_dir


def run_training(
    cfg: JobConfig,
    *,
    callbacks: list[Any] | None = None,
    run_config_overrides: dict[str, Any] | None = None,
    worker_env: dict[str, str] | None = None,
    output_dir: str | None = None,
    data: StudentData | None = None,
    store_uri: str | None = None,
    role: str = "student",
) -> TrainingResult:
    """Train the student described by ``cfg`` on Ray Train + DeepSpeed; export the best one.

    ``callbacks``/``run_config_overrides`` go to ``RunConfig`` (Tune's ``TuneReportCallback``,
    a trial's ``name``/``storage_path``); ``worker_env`` adds env vars to every worker;
    ``output_dir`` replaces ``<storage>/<run_name>/student``; ``data`` reuses prepared
    datasets; ``role`` names what is trained in the log. Raises
    ``ray.train.TrainingFailedError`` when workers fail more than ``train.max_failures`` times.
    """
    from tinyllm_ray.runtime import init_ray

    t0 = time.perf_counter()
    init_ray(cfg.runtime)
    bundle = build_trainer(cfg, data=data, callbacks=callbacks, run_config_overrides=run_config_overrides,
                           worker_env=worker_env, store_uri=store_uri, role=role)
    data, loop_cfg = bundle.data, bundle.loop_config
    t_fit = time.perf_counter()
    log.info("data ready in %.1f s; starting Ray Train", t_fit - t0)
    with controller_poll_interval(REPORT_POLL_INTERVAL_S):
        try:
            result = bundle.trainer.fit()
        except Exception as exc:  # a worker's UserError (e.g. a stale build lock) is one line, not Ray's traceback
            if bundle.mlflow is not None:
                bundle.mlflow.finish("FAILED")
            cause = find_user_error(exc)
            if cause is None:
                raise
            raise cause from exc
    log.info("Ray Train finished in %.1f s", time.perf_counter() - t_fit)
    if bundle.mlflow is not None:
        bundle.mlflow.finish()
    best_ckpts = list(result.best_checkpoints or [])
    best = _select_best(best_ckpts, last_stage=len(loop_cfg.stage_steps) - 1)
    model_dir = None
    if best is not None:
        ckpt, metrics = best
        model_dir = export_checkpoint(ckpt, output_dir or RunPaths.of(cfg).student)
        # a bootstrapped teacher's validation scores the student's answer task: meaningless for it
        score = f", val_accuracy {metrics['val_accuracy']:.4f}" if role == "student" else ""
        log.info("%s: best checkpoint: step %s%s -> %s", role, metrics.get("step"), score, model_dir)
    latest = result.metrics or {}
    out = TrainingResult(
        model_dir=model_dir,
        best_checkpoint=best[0].path if best else None,
        best_step=int(best[1]["step"]) if best else None,
        best_val_accuracy=float(best[1]["val_accuracy"]) if best else None,
        final_step=int(latest.get("step", 0)),
        total_steps=loop_cfg.total_steps,
        run_dir=str(result.path) if getattr(result, "path", None) else "",
        metrics_file=bundle.metrics_file,
        checkpoints=[{"path": c.path, **{k: m.get(k) for k in ("step", "stage", "val_accuracy", "loss")}}
                     for c, m in best_ckpts],
        data=data.stats,
        seconds=time.perf_counter() - t0,
        ray_result=result,
    )
    if model_dir and not is_uri(model_dir):
        Path(model_dir, "training_result.json").write_text(json.dumps(out.to_dict(), indent=2, default=str))
    return out
