"""``tinyllm-ray run``: generation -> training -> evaluation as one Ray job, streaming.

Generation runs in a driver thread (its own Ray Data pipeline over the teachers' vLLM
actors) and commits store shards as it goes; training starts at the same time on a
Ray Data stream that waits for each slice of the train split to be committed by every
teacher (``student/streaming.py``). So the first optimizer step does not wait for the
last rationale, and the store still persists every record: a second ``run`` (or
``train``/``tune``) reuses it, skipping every finished shard.

The run ends with a report (``report.json`` + ``report.md`` under
``<storage_path>/<run_name>/``): teacher statistics, per-task losses, validation and
test accuracy, time per stage and the overlap achieved.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tinyllm_ray.config import JobConfig

log = logging.getLogger(__name__)


@dataclass
class _GenerationThread:
    """Runs generation beside training; remembers when each shard was committed."""

    cfg: JobConfig
    shard_size: int
    shard_times: list[float] = field(default_factory=list)
    report: Any = None
    error: BaseException | None = None
    started: float = 0.0
    ended: float = 0.0

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tinyllm-generation", daemon=True)

    def _run(self) -> None:
        from tinyllm_ray.student.streaming import mark_generation_failed
        from tinyllm_ray.teachers.pipeline import GenerationRun

        self.started = time.time()
        try:
            run = GenerationRun(self.cfg, shard_size=self.shard_size)
            for _ in run:
                self.shard_times.append(time.time())
            self.report = run.report
        except BaseException as exc:  # noqa: BLE001 - re-raised on the main thread in join()
            self.error = exc
            mark_generation_failed(self.cfg.runtime.resolved_store_uri, f"{type(exc).__name__}: {exc}")
        finally:
            self.ended = time.time()

    def start(self) -> None:
        self._thread.start()

    def wait(self) -> None:
        """Wait for the thread; its error (if any) stays in :attr:`error` for the caller."""
        if self._thread.is_alive():
            self._thread.join()


def resolve_shard_size(cfg: JobConfig) -> int:
    """The store's shard size: config, else the existing store's, else the pipeline default."""
    from tinyllm_ray.store.store import RationaleStore
    from tinyllm_ray.teachers.pipeline import DEFAULT_SHARD_SIZE
    from tinyllm_ray.teachers.prompt_rows import default_shard_size

    if cfg.runtime.store_shard_size:
        return cfg.runtime.store_shard_size
    have = RationaleStore(cfg.runtime.resolved_store_uri).read_manifest()
    if have and have.get("shard_size"):
        return int(have["shard_size"])
    return default_shard_size([t.batch_size for t in cfg.teachers], DEFAULT_SHARD_SIZE)


def first_step_time(metrics_file: str | None) -> float | None:
    """Wall-clock time of the first optimizer-step report (from the trainer's metrics log)."""
    if not metrics_file:
        return None
    try:
        with open(metrics_file) as f:
            for line in f:
                rec = json.loads(line)
                if rec.get("event") == "report" and int(rec.get("step", 0)) >= 1:
                    return float(rec["time"])
    except FileNotFoundError:
        return None
    return None


def task_losses(history: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """First and last value of every per-task loss the trainer reported."""
    out: dict[str, dict[str, float]] = {}
    for key in sorted({k for rec in history for k in rec if k == "loss" or k.startswith("loss_")}):
        vals = [rec[key] for rec in history if rec.get(key) is not None]
        if vals:
            out[key] = {"first": round(float(vals[0]), 4), "last": round(float(vals[-1]), 4)}
    return out


def run_pipeline(cfg: JobConfig) -> dict[str, Any]:
    """Generate (streaming) + train + evaluate; write and return the run report."""
    import os

    import transformers  # noqa: F401  (imported while the cwd still exists; see below)

    from tinyllm_ray.data.loader import load_splits
    from tinyllm_ray.jobs.stages import run_dir, write_report
    from tinyllm_ray.runtime import init_ray
    from tinyllm_ray.student.evaluate_model import evaluate_student
    from tinyllm_ray.student.streaming import clear_generation_failed, streaming_student_data
    from tinyllm_ray.student.trainer import run_training
    from tinyllm_ray.tune import absolute_paths

    t0 = time.time()
    # Under `ray job submit --working-dir`, the driver's cwd is Ray's copy of the working
    # dir, which Ray may garbage-collect once the job's other workers are gone (seen with
    # two nodes on one host). Pin outputs to absolute paths and leave that directory.
    cfg = absolute_paths(cfg)
    if "://" not in run_dir(cfg):
        os.makedirs(run_dir(cfg), exist_ok=True)
        os.chdir(run_dir(cfg))
    init_ray(cfg.runtime)
    loaded = load_splits(cfg.data)
    train, val = loaded.require("train"), loaded.require("validation")
    shard_size = resolve_shard_size(cfg)
    clear_generation_failed(cfg.runtime.resolved_store_uri)

    gen = _GenerationThread(cfg, shard_size)
    if cfg.teachers:
        gen.start()
    try:
        data = streaming_student_data(cfg, train, val, shard_size)
        t_train = time.time()
        result = run_training(cfg, data=data)
        t_train_end = time.time()
    finally:
        gen.wait()
    if gen.error is not None:
        raise gen.error
    if result.model_dir is None:
        raise RuntimeError("training produced no checkpoint with a validation score; see the Ray Train log")

    t_eval = time.time()
    test_split = cfg.eval.split if cfg.eval.split != "validation" else "test"
    evaluation = {}
    for split in ("validation", test_split):
        if split in loaded.splits:
            evaluation[split] = evaluate_student(cfg, result.model_dir, split=split).to_dict()
    t_end = time.time()

    first_step = first_step_time(result.metrics_file)
    gen_report = gen.report.to_dict() if gen.report is not None else None
    overlap = None
    if cfg.teachers and first_step is not None:
        overlap = {
            "generation_started_s": round(gen.started - t0, 2),
            "generation_ended_s": round(gen.ended - t0, 2),
            "first_train_step_s": round(first_step - t0, 2),
            "train_started_before_generation_ended": first_step < gen.ended,
            "overlap_s": round(max(0.0, gen.ended - first_step), 2),
            "shards_committed_after_first_step": sum(1 for t in gen.shard_times if t > first_step),
            "shards_committed_this_run": len(gen.shard_times),
        }
    report = {
        "run": cfg.runtime.run_name,
        "store_uri": cfg.runtime.resolved_store_uri,
        "student": result.model_dir,
        "teachers": gen_report["teachers"] if gen_report else {},
        "generation": {k: v for k, v in (gen_report or {}).items() if k != "teachers"},
        "training": {"best_step": result.best_step, "best_val_accuracy": result.best_val_accuracy,
                     "final_step": result.final_step, "total_steps": result.total_steps,
                     "task_losses": task_losses(result.history()), "data": result.data},
        "evaluation": {k: {"accuracy": v["accuracy"], "correct": v["correct"], "total": v["total"]}
                       for k, v in evaluation.items()},
        "seconds": {"generation": round(gen.ended - gen.started, 2) if cfg.teachers else 0.0,
                    "training": round(t_train_end - t_train, 2), "evaluation": round(t_end - t_eval, 2),
                    "total": round(t_end - t0, 2)},
        "overlap": overlap,
    }
    paths = write_report(report, run_dir(cfg), render_markdown(report))
    report["report_files"] = paths
    return report


def render_markdown(r: dict[str, Any]) -> str:
    """The human-readable run report."""
    lines = [f"# tinyllm-ray run `{r['run']}`", "", f"Student: `{r['student']}`  ", f"Store: `{r['store_uri']}`", ""]
    if r["teachers"]:
        lines += ["## Teachers", "", "| teacher | prompts | outputs | kept | dropped | output tokens | tokens/s |",
                  "|---|---|---|---|---|---|---|"]
        for name, s in r["teachers"].items():
            dropped = ", ".join(f"{k} {v}" for k, v in (s.get("dropped") or {}).items() if v) or "0"
            lines.append(f"| {name} | {s.get('prompts')} | {s.get('outputs')} | {s.get('kept')} | {dropped} | "
                         f"{s.get('output_tokens')} | {s.get('tokens_per_s', 0):.0f} |")
        lines.append("")
    t = r["training"]
    lines += ["## Training", "", f"Best step {t['best_step']} of {t['total_steps']} "
              f"(validation accuracy {t['best_val_accuracy']}).", "", "| loss | first | last |", "|---|---|---|"]
    lines += [f"| {k} | {v['first']} | {v['last']} |" for k, v in t["task_losses"].items()]
    lines += ["", "## Evaluation (answer-only, normalised exact match)", "", "| split | accuracy | correct/total |",
              "|---|---|---|"]
    lines += [f"| {k} | {v['accuracy']:.4f} | {v['correct']}/{v['total']} |" for k, v in r["evaluation"].items()]
    s = r["seconds"]
    lines += ["", "## Time", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in s.items()]
    if r.get("overlap"):
        o = r["overlap"]
        lines += ["", "## Streaming overlap", "",
                  f"Generation ran {o['generation_started_s']}–{o['generation_ended_s']} s; the first training step "
                  f"finished at {o['first_train_step_s']} s; training began before generation ended: "
                  f"**{o['train_started_before_generation_ended']}** (overlap {o['overlap_s']} s, "
                  f"{o['shards_committed_after_first_step']} of {o['shards_committed_this_run']} shards committed "
                  "after the first step)."]
    return "\n".join(lines) + "\n"
