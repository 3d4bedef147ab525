"""``tinyllm-ray compare``: the papers' settings as Ray Tune trials over ONE rationale store.

Stages (each prints one progress line):

1. **store**: the union of every selected setting's teachers (``settings.store_config``)
   goes through the resumable generation pipeline once (``tune.ensure_store``): only what
   the store lacks is generated (e.g. the Mind's Mirror CoT entry on a store ``generate``
   already filled). Trials only read it; no trial starts a vLLM engine.
2. **teachers' own rows**: each teacher model's answer-only test accuracy, served exactly
   as for ``eval --teacher`` (``teachers/evaluate_teacher.py``), cached in
   ``compare/teachers/<name>.json`` under a key of what determines it, so it is measured
   once per compare folder. Measured in a driver thread WHILE the trials run (its engines
   fill the cores the trials' last wave leaves idle).
3. **trials**: a ``Tuner`` grid over the setting names. One trial = one setting, all its
   seeds inside: the student data is prepared ONCE per trial (``trainer.prepare_data``;
   start-up outside the seeds' measured path), then each seed trains through
   ``trainer.run_training`` (``train.seed`` and, for a tiny built student,
   ``student.tiny.seed``, so initialisation varies) and the exported best-on-validation
   student is evaluated on the TEST split with per-example correctness (for per-difficulty
   accuracy). Each seed's result is appended to ``compare/trials/<setting>.json`` as soon
   as it exists, so the table is built even when a trial fails (its row says why).
   Resources: the trial itself holds ``tune.trial_cpus``; its trainer's workers reserve
   ``train.num_workers x train.cpus_per_worker`` like a plain ``train``, so Tune spreads
   trials over a cluster's nodes; concurrency defaults to what the cluster's CPUs hold.
4. **table**: ``compare.json`` / ``compare.md`` / ``compare.png`` (``table.py``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tinyllm_ray.compare.settings import Setting, settings_for, step_budget, store_config, student_kind
from tinyllm_ray.compare.table import aggregate, plot_table, render_markdown
from tinyllm_ray.config import JobConfig, validate_config
from tinyllm_ray.errors import ConfigError
from tinyllm_ray.paths import RunPaths, join

log = logging.getLogger(__name__)

__all__ = ["by_difficulty", "collect_results", "run_compare", "teacher_rows"]

TEST_SPLIT = "test"


def _progress(msg: str) -> None:
    """A stage line of the job (the driver's console shows ``tinyllm_ray`` INFO records)."""
    log.info("[compare] %s", msg)


def by_difficulty(data_name: str, predictions: list[dict[str, Any]]) -> dict[str, list[int]]:
    """``{difficulty: [correct, total]}`` from per-example predictions (``id``, ``correct``).

    Arithmetic ids carry their number of steps (``data/arithmetic.difficulty_of``); any
    other dataset has the one bucket ``all``.
    """
    from tinyllm_ray.data.arithmetic import difficulty_of

    out: dict[str, list[int]] = {}
    for p in predictions:
        d = difficulty_of(str(p["id"])) if data_name == "arithmetic" else None
        key = "all" if d is None else str(d)
        c = out.setdefault(key, [0, 0])
        c[0] += int(bool(p["correct"]))
        c[1] += 1
    return out


def _seeded(cfg: JobConfig, seed: int) -> JobConfig:
    raw = cfg.model_dump(mode="json")
    raw["train"]["seed"] = seed
    if raw["student"]["model"] == "tiny":
        raw["student"]["tiny"]["seed"] = seed
    return validate_config(raw, source=f"compare seed {seed}")


def _first_report_s(metrics_file: str | None, t_start: float) -> tuple[float | None, float | None]:
    """(start-up seconds until the first optimizer-step report, seconds from first to last report)."""
    if not metrics_file or not os.path.exists(metrics_file):
        return None, None
    times = []
    with open(metrics_file) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                if r.get("event") == "report" and r.get("time"):
                    times.append(float(r["time"]))
    if not times:
        return None, None
    return round(min(times) - t_start, 2), round(max(times) - min(times), 2)


def _write_json(path: str, doc: Any) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2, default=str)
    os.replace(tmp, path)


def _trial_body(job: dict[str, Any], setting: dict[str, Any], seeds: list[int], out_file: str,
                work_dir: str, eval_limit: int | None) -> dict[str, Any]:
    """All seeds of one setting (runs in a task outside the trial's placement group)."""
    from tinyllm_ray.student.evaluate_model import evaluate_student
    from tinyllm_ray.student.trainer import prepare_data, run_training

    cfg = validate_config(job, source=f"compare setting {setting['name']}")
    result: dict[str, Any] = {"setting": setting["name"], "description": setting["description"],
                              "group": setting["group"], "teachers": setting["teachers"], "status": "running",
                              "error": None, "seeds": [], "max_steps": cfg.train.max_steps}
    _write_json(out_file, result)
    try:
        t0 = time.perf_counter()
        data = prepare_data(cfg)
        result["data_seconds"] = round(time.perf_counter() - t0, 2)
        result["data"] = data.stats
        for seed in seeds:
            scfg = _seeded(cfg, seed)
            name = f"{setting['name']}_seed{seed}"
            shutil.rmtree(os.path.join(work_dir, name), ignore_errors=True)  # a rerun starts afresh: no stale
            # checkpoints or metrics of an earlier compare under the same name
            t1, wall = time.perf_counter(), time.time()
            tr = run_training(scfg, data=data, run_config_overrides={"name": name, "storage_path": work_dir},
                              worker_env={"TINYLLM_TRIAL": name}, output_dir=join(work_dir, name, "student"))
            train_s = time.perf_counter() - t1
            if tr.model_dir is None:
                raise RuntimeError(f"seed {seed}: training reported no validation accuracy, nothing to evaluate")
            t2 = time.perf_counter()
            ev = evaluate_student(scfg, tr.model_dir, split=TEST_SPLIT, limit=eval_limit, keep_predictions=None)
            startup, steps_s = _first_report_s(tr.metrics_file, wall)
            result["seeds"].append({
                "seed": seed, "accuracy": ev.accuracy, "correct": ev.correct, "total": ev.total,
                "by_difficulty": by_difficulty(cfg.data.name, ev.predictions),
                "best_val_accuracy": tr.best_val_accuracy, "best_step": tr.best_step, "steps": tr.total_steps,
                "train_seconds": round(train_s, 2), "startup_seconds": startup, "steps_seconds": steps_s,
                "eval_seconds": round(time.perf_counter() - t2, 2), "student": tr.model_dir,
            })
            _write_json(out_file, result)
            s = result["seeds"][-1]
            print(f"[compare] {setting['name']} seed {seed}: test accuracy {s['accuracy']:.3f} ({s['total']} "
                  f"questions; train {s['train_seconds']:.0f} s of which start-up {s['startup_seconds']} s)",
                  flush=True)  # a Ray task: its output goes to the driver's log
        result["status"] = "ok"
    except BaseException as exc:  # recorded in the row, then re-raised for Tune
        result["status"] = "failed"
        result["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]
        result["traceback"] = traceback.format_exc()[-4000:]
        _write_json(out_file, result)
        raise
    _write_json(out_file, result)
    return result


def _trial(params: dict[str, Any], jobs: dict[str, dict[str, Any]], settings: dict[str, dict[str, Any]],
           seeds: list[int], out_dir: str, eval_limit: int | None) -> None:
    """One Tune trial = one setting. The body runs outside the trial's bundle (see tune.py's
    ``_trial_driver``: Ray Data preparation and the Train controller would not fit in it)."""
    import ray
    from ray import tune
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    name = params["setting"]
    body = ray.remote(num_cpus=0, max_retries=0)(_trial_body).options(
        scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=None))
    res = ray.get(body.remote(jobs[name], settings[name], seeds, os.path.join(out_dir, "trials", f"{name}.json"),
                              os.path.join(out_dir, "train"), eval_limit))
    for s in res["seeds"]:
        tune.report({"test_accuracy": s["accuracy"], "seed": s["seed"], "train_seconds": s["train_seconds"]})


def collect_results(settings: list[Setting], out_dir: str, errors: dict[str, str]) -> list[dict[str, Any]]:
    """One result per setting from the trials' JSON files; a trial that failed or wrote
    nothing is a ``failed`` row with its error (Tune's when the trial's own is missing),
    keeping the seeds it finished. Every other setting is still reported."""
    results = []
    for s in settings:
        path = Path(out_dir, "trials", f"{s.name}.json")
        res = json.loads(path.read_text()) if path.exists() else {}
        if not res:
            res = {"setting": s.name, "description": s.description, "group": s.group, "teachers": list(s.teachers),
                   "status": "failed", "error": errors.get(s.name, "the trial wrote no result"), "seeds": []}
        elif res.get("status") != "ok" or s.name in errors:
            res["status"] = "failed"
            res["error"] = res.get("error") or errors.get(s.name) or "the trial did not finish"
        results.append(res)
    return results


# ----------------------------------------------------------------------------- teachers' rows


def _teacher_key(cfg: JobConfig, name: str, limit: int | None) -> str:
    t = cfg.teacher(name)
    what = {"model": t.model, "dtype": t.dtype, "stop": t.sampling.stop, "prompts": cfg.prompts.model_dump(mode="json"),
            "data": cfg.data.model_dump(mode="json"), "eval": cfg.eval.max_new_tokens, "limit": limit,
            "prompt": cfg.eval.teacher_prompt}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def teacher_rows(cfg: JobConfig, out_dir: str, limit: int | None) -> list[dict[str, Any]]:
    """Each distinct teacher model's test row (``eval.teacher_prompt``), cached under ``out_dir/teachers``.

    A derived Mind's Mirror entry serves the same model with the same answer-only prompt as
    its source teacher, so one row per (model) is measured, named after the first teacher.
    """
    from tinyllm_ray.teachers.evaluate_teacher import evaluate_teacher

    folder = Path(out_dir, "teachers")
    folder.mkdir(parents=True, exist_ok=True)
    rows, seen = [], set()
    for t in cfg.teachers:
        if t.model in seen:
            continue
        seen.add(t.model)
        key = _teacher_key(cfg, t.name, limit)
        path = folder / f"{t.name}.json"
        if path.exists():
            cached = json.loads(path.read_text())
            if cached.get("key") == key:
                _progress(f"teacher {t.name}: cached row ({path})")
                rows.append(cached)
                continue
        t0 = time.perf_counter()
        try:
            ev = evaluate_teacher(cfg, t.name, split=TEST_SPLIT, limit=limit, keep_predictions=None)
            row = {"teacher": t.name, "model": t.model, "prompt": cfg.eval.teacher_prompt, "status": "ok",
                   "accuracy": ev.accuracy,
                   "correct": ev.correct, "total": ev.total,
                   "by_difficulty": by_difficulty(cfg.data.name, ev.predictions), "key": key,
                   "seconds": round(time.perf_counter() - t0, 2)}
        except Exception as exc:  # noqa: BLE001 - a teacher that cannot be served is a failed row
            row = {"teacher": t.name, "model": t.model, "status": "failed", "error": str(exc)[:500], "key": key}
        _write_json(str(path), row)
        _progress(f"teacher {t.name}: test accuracy {row.get('accuracy')} ({row['status']})")
        rows.append(row)
    return rows


def _timed_teacher_rows(cfg: JobConfig, out_dir: str, limit: int | None) -> tuple[list[dict[str, Any]], float]:
    t = time.perf_counter()
    rows = teacher_rows(cfg, out_dir, limit)
    return rows, time.perf_counter() - t


# ----------------------------------------------------------------------------- the job


def _concurrency(cfg: JobConfig, n_trials: int) -> int:
    import ray

    if cfg.compare.max_concurrent_trials:
        return min(cfg.compare.max_concurrent_trials, n_trials)
    per = cfg.train.num_workers * cfg.train.cpus_per_worker + cfg.tune.trial_cpus
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    if cfg.runtime.ray_address is None and cfg.runtime.num_cpus is not None:
        # A local Ray started with over-committed logical CPUs (so engines and readers place):
        # trials are bounded by the real cores, counting only their trainers' workers (the
        # trial driver waits). Measured on the 2-core demo: 7 trials at once ran at load 17.
        cpus = float(min(cpus, os.cpu_count() or 1))
        per = cfg.train.num_workers * cfg.train.cpus_per_worker
    return max(1, min(n_trials, math.floor(cpus / per) if per > 0 else n_trials))


def run_compare(cfg: JobConfig, mode: str = "default", seeds: int | None = None) -> dict[str, Any]:
    """Run the comparison and write ``<run>/compare/compare.{json,md,png}``; returns a report."""
    from ray import tune

    from tinyllm_ray.runtime import init_ray
    from tinyllm_ray.tune import ensure_store

    t_start = time.perf_counter()
    paths = RunPaths.of(cfg)
    if not paths.local:
        raise ConfigError(f"compare writes its table to {paths.compare}: runtime.storage_path must be a local (or "
                          "shared, mounted) folder; store_uri may stay a URI")
    cfg = paths.pin(cfg)
    kind = student_kind(cfg)
    if kind is None:
        from tinyllm_ray.student.model import detect_arch, resolve_student_path

        kind = detect_arch(resolve_student_path(cfg.student), cfg.student.arch, cfg.student.trust_remote_code)
    settings: list[Setting] = settings_for(cfg, mode, kind)
    budget = step_budget(cfg, kind, mode)
    n_seeds = seeds or cfg.compare.seeds
    if mode == "full":
        n_seeds = max(3, n_seeds)
    seed_list = [cfg.train.seed + i for i in range(n_seeds)]
    limit = cfg.compare.quick_examples if mode == "quick" else cfg.eval.limit
    scfg = store_config(cfg, settings)
    if mode == "quick" and limit:
        raw = scfg.model_dump(mode="json")
        raw["train"]["eval_limit"] = limit
        scfg = validate_config(raw, source="compare --quick")
    _progress(f"{mode}: {len(settings)} setting(s) x {n_seeds} seed(s), {budget} step(s) each, {kind} student: "
              + ", ".join(s.name for s in settings))
    init_ray(cfg.runtime)  # before any folder is made: a refused start leaves nothing behind
    out_dir = paths.compare
    for sub in ("trials", "train", "teachers"):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)

    t = time.perf_counter()
    _progress(f"1/4 store {paths.store}: teachers {[x.name for x in scfg.teachers]}")
    generation = ensure_store(scfg)
    store_s = time.perf_counter() - t
    _progress(f"1/4 store ready in {store_s:.1f} s ({generation.get('shards_written', 0)} shard(s) written, "
              f"{generation.get('shards_skipped', 0)} reused)")

    # The teachers' own rows are measured WHILE the trials train: their vLLM engines take
    # about one core for ~15 s per teacher, which the trials' last wave leaves idle (measured
    # on the 2-core demo: 29 s of teacher rows, then 82 s with one trial running alone).
    rows_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="compare-teacher-rows")
    rows_future: Future[tuple[list[dict[str, Any]], float]] | None = None
    if cfg.compare.teacher_rows and scfg.teachers:
        _progress("2/4 teachers' own rows: measured alongside the trials")
        rows_future = rows_pool.submit(_timed_teacher_rows, scfg, out_dir, limit)

    jobs = {s.name: s.apply(scfg, budget).model_dump(mode="json") for s in settings}
    for s in settings:
        stale = Path(out_dir, "trials", f"{s.name}.json")
        if stale.exists():
            stale.unlink()
    conc = _concurrency(scfg, len(settings))
    _progress(f"3/4 trials: {len(settings)} Tune trial(s), up to {conc} at once")
    t = time.perf_counter()
    trainable = tune.with_resources(
        tune.with_parameters(_trial, jobs=jobs, settings={s.name: s.to_dict() for s in settings}, seeds=seed_list,
                             out_dir=out_dir, eval_limit=limit),
        {"CPU": scfg.tune.trial_cpus})
    tuner = tune.Tuner(
        trainable,
        param_space={"setting": tune.grid_search([s.name for s in settings])},
        tune_config=tune.TuneConfig(max_concurrent_trials=conc),
        run_config=tune.RunConfig(name="compare", storage_path=join(out_dir, "tune"), verbose=1),
    )
    from tinyllm_ray.observability import progress
    from tinyllm_ray.student.trainer import METRICS_FILE

    progress("training", label="{dir}", pattern=os.path.join(out_dir, "train", "*", METRICS_FILE), total=budget)
    try:
        grid = tuner.fit()
        trials_s = time.perf_counter() - t
        teachers, teachers_s = rows_future.result() if rows_future is not None else ([], 0.0)
    finally:
        rows_pool.shutdown(wait=True)
    if rows_future is not None:
        _progress(f"2/4 teachers' own rows in {teachers_s:.1f} s (alongside the trials)")
    errors = {str(r.config.get("setting")): str(r.error).splitlines()[0][:300] for r in grid
              if r.error is not None and r.config}
    results = collect_results(settings, out_dir, errors)
    _progress(f"3/4 trials done in {trials_s:.1f} s ({sum(r['status'] == 'ok' for r in results)}/{len(results)} ok)")

    meta = {"mode": mode, "config": cfg.runtime.run_name, "dataset": cfg.data.name, "student": cfg.student.model,
            "student_kind": kind, "steps": budget, "seeds": seed_list, "test_examples_limit": limit,
            "store": paths.store}
    doc = aggregate(results, teachers, meta)
    doc["timings"] = {"store_seconds": round(store_s, 1), "teachers_seconds": round(teachers_s, 1),
                      "trials_seconds": round(trials_s, 1),
                      "total_seconds": round(time.perf_counter() - t_start, 1)}
    files = {"json": os.path.join(out_dir, "compare.json"), "md": os.path.join(out_dir, "compare.md"),
             "png": os.path.join(out_dir, "compare.png")}
    _write_json(files["json"], doc)
    md = render_markdown(doc)
    Path(files["md"]).write_text(md)
    plot_table(doc, files["png"])
    _progress(f"4/4 table written: {files['md']}")
    print(md, flush=True)
    return {"settings": [s.name for s in settings], "seeds": seed_list, "steps": budget,
            "failed": {r["setting"]: r["error"] for r in results if r["status"] != "ok"},
            "timings": doc["timings"], "generation": generation,
            "paths": {"table": files["md"], "json": files["json"], "plot": files["png"], "store": paths.store}}
