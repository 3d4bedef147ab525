"""Ray Tune sweep of the loss weights (alpha per teacher, self-evaluation weight, lr).

Shape (the Ray 2.60 way for Tune to drive Ray Train v2): a ``Tuner`` runs a small
*driver function* per trial; the driver builds this project's ``TorchTrainer`` through
:func:`tinyllm_ray.student.trainer.run_training` with a ``TuneReportCallback``, so every
``ray.train.report`` of rank 0 reaches Tune and ASHA can stop weak trials early on
**validation accuracy** (never on the weighted training loss being swept: changing
alpha changes that loss's scale).

Why the store is ensured once, here: rationales are the expensive part. The driver
checks (and, if needed, finishes) the store before the first trial; trials only read
it, so no trial ever starts a vLLM engine.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tinyllm_ray.config import JobConfig, dump_config, validate_config
from tinyllm_ray.errors import ConfigError
from tinyllm_ray.observability import progress
from tinyllm_ray.paths import RunPaths

log = logging.getLogger(__name__)

ALPHA_KEY = "alpha/"
SELF_EVAL_KEY = "self_eval_weight"
LR_KEY = "lr"


# ----------------------------------------------------------------------------- pure parts


def search_space(cfg: JobConfig) -> dict[str, Any]:
    """The Tune ``param_space``: one entry per swept weight.

    grid -> ``grid_search`` over the listed values (the paper's {0.01..3} by default);
    random -> ``choice`` among them; optuna -> ``loguniform`` over their range (TPE).
    """
    from ray import tune

    t = cfg.tune

    def dim(values: list[float]) -> Any:
        if t.search == "grid":
            return tune.grid_search(list(values))
        if t.search == "random":
            return tune.choice(list(values))
        lo, hi = min(values), max(values)
        return tune.loguniform(lo, hi) if 0 < lo < hi else tune.choice(list(values))

    space: dict[str, Any] = {}
    if cfg.loss.form == "additive":
        for teacher in cfg.teachers:
            space[ALPHA_KEY + teacher.name] = dim(t.alpha_values)
    else:  # convex: one alpha in [0, 1] for label vs rationale
        space[ALPHA_KEY + "convex"] = dim([v for v in t.alpha_values if v <= 1.0] or [0.5])
    if t.tune_self_eval_weight:
        space[SELF_EVAL_KEY] = dim(t.self_eval_values)
    if t.tune_lr:
        space[LR_KEY] = tune.loguniform(*t.lr_range) if t.search != "grid" else tune.grid_search(list(t.lr_range))
    if not space:
        raise ValueError("nothing to tune: no teachers and tune_self_eval_weight/tune_lr are off")
    return space


def apply_trial_params(cfg: JobConfig, params: Mapping[str, Any]) -> JobConfig:
    """The job config of one trial: the swept weights written into ``loss``/``train``.

    Goes through validation again, so a search space can never produce a config that
    ``tinyllm-ray train`` would refuse.
    """
    raw = cfg.model_dump(mode="json")
    for key, value in params.items():
        if key.startswith(ALPHA_KEY):
            name = key[len(ALPHA_KEY):]
            if name == "convex":
                raw["loss"]["convex_alpha"] = float(value)
            else:
                raw["loss"]["alpha"][name] = float(value)
        elif key == SELF_EVAL_KEY:
            raw["loss"]["self_eval_weight"] = float(value)
        elif key == LR_KEY:
            raw["train"]["lr"] = float(value)
        else:
            raise KeyError(f"unknown tune parameter {key!r}")
    return validate_config(raw, source="tune trial")


def results_table(rows: list[dict[str, Any]], params: list[str]) -> str:
    """Markdown table of trials, best first."""
    head = ["trial", *params, "best val_accuracy", "at step", "last step", "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["trial"], *[_fmt(r.get(p)) for p in params], _fmt(r["best_val_accuracy"]),
                 str(r["best_step"]), str(r["last_step"]), r["status"]]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def plot_results(rows: list[dict[str, Any]], params: list[str], path: str | Path) -> str:
    """One panel per swept weight: best validation accuracy of each trial against it."""
    from tinyllm_ray import plots

    fig, axes = plots.subplots(len(params), (4.2 * len(params), 3.4))
    for ax, p in zip(axes[0], params):
        xs = [r[p] for r in rows if r.get(p) is not None]
        ys = [r["best_val_accuracy"] for r in rows if r.get(p) is not None]
        ax.scatter(xs, ys, s=36)
        if xs and min(xs) > 0 and max(xs) / min(xs) >= 20:
            ax.set_xscale("log")
        ax.set_xlabel(p)
        ax.set_ylabel("validation accuracy")
        ax.grid(alpha=0.3)
    return plots.save(fig, path, title="Ray Tune: validation accuracy vs loss weights")


# ----------------------------------------------------------------------------- Ray parts


def _fit_trial(cfg_json: dict[str, Any], trial: str, callback: Any) -> None:
    from tinyllm_ray.student.trainer import run_training

    cfg = validate_config(cfg_json, source="tune trial")
    paths = RunPaths.of(cfg)  # the job's config is pinned: the same paths as the driver's
    run_training(
        cfg,
        callbacks=[callback],
        run_config_overrides={"name": trial, "storage_path": paths.tune_trials},
        worker_env={"TINYLLM_TRIAL": trial},
        output_dir=paths.trial_student(trial),
    )


def _trial_driver(params: dict[str, Any], job: dict[str, Any]) -> None:
    """One trial: build and fit this project's TorchTrainer with the trial's weights.

    The fit runs in a task *outside* the trial's placement group: Tune captures child
    tasks into the trial's small bundle, where the student's Ray Data preparation
    (shuffle, groupby) and the Train controller would not fit. The trainer's workers
    reserve their own resources, as in a plain ``tinyllm-ray train``.
    """
    import ray
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    cfg = apply_trial_params(validate_config(job, source="tune job"), params)
    trial = tune.get_context().get_trial_name()
    fit = ray.remote(num_cpus=0, max_retries=0)(_fit_trial).options(
        scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=None)
    )
    ray.get(fit.remote(cfg.model_dump(mode="json"), trial, TuneReportCallback()))


def ensure_store(cfg: JobConfig) -> dict[str, Any]:
    """Finish (or just verify) the rationale store before any trial; trials never generate."""
    from tinyllm_ray.teachers.pipeline import run_generation

    if not cfg.teachers:
        return {"shards_written": 0, "note": "no teachers: answer-only sweep"}
    progress("generation", cfg=cfg, shard_size=cfg.runtime.store_shard_size)
    rep = run_generation(cfg, shard_size=cfg.runtime.store_shard_size, print_summary=False,
                         on_shard=lambda shard: progress("shard", shard=shard))
    return {"shards_written": sum(rep.shards_written.values()),
            "shards_skipped": sum(rep.shards_skipped.values()),
            "teachers": {k: v.to_dict() for k, v in rep.teachers.items()}}


def run_tune(cfg: JobConfig) -> dict[str, Any]:
    """Sweep, then write results.csv / results.md / val_accuracy.png / best_config.yaml."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from tinyllm_ray.runtime import init_ray

    t0 = time.perf_counter()
    paths = RunPaths.of(cfg)
    if not paths.local:
        raise ConfigError(f"tune writes its results table and plot to {paths.tune}: runtime.storage_path must be "
                          "a local (or shared, mounted) folder for tune; store_uri may stay a URI")
    cfg = paths.pin(cfg)  # trials run in other processes (and directories): they get absolute paths
    init_ray(cfg.runtime)
    generation = ensure_store(cfg)
    out_dir = Path(paths.tune)
    space = search_space(cfg)
    params = sorted(space)
    t = cfg.tune
    scheduler = None
    if t.asha:
        scheduler = ASHAScheduler(time_attr="step", max_t=cfg.train.max_steps or 10**6,
                                  grace_period=t.grace_period, reduction_factor=t.reduction_factor)
    search_alg = None
    if t.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(seed=cfg.train.seed)
    trainable = tune.with_resources(
        tune.with_parameters(_trial_driver, job=cfg.model_dump(mode="json")),
        {"CPU": t.trial_cpus},
    )
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(metric=t.metric, mode=t.mode, scheduler=scheduler, search_alg=search_alg,
                                    num_samples=t.num_samples if t.search != "grid" else 1,
                                    max_concurrent_trials=t.max_concurrent_trials),
        run_config=tune.RunConfig(name="sweep", storage_path=paths.tune, verbose=1),
    )
    from tinyllm_ray.student.trainer import METRICS_FILE

    progress("stage", name="trials", detail=f"Ray Tune over {', '.join(params)} ({t.search} search"
             + (", ASHA" if t.asha else "") + ")")
    progress("training", label="{dir}", pattern=str(Path(paths.tune_trials, "*", METRICS_FILE)),
             total=cfg.train.max_steps)
    grid = tuner.fit()
    rows = _collect(grid, params, cfg)
    if not rows:
        raise RuntimeError(f"no Tune trial reported {t.metric}; see the trial errors under {out_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    md = results_table(rows, params)
    (out_dir / "results.md").write_text(md)
    plot = plot_results(rows, params, out_dir / "val_accuracy.png")
    best = rows[0]
    best_cfg = apply_trial_params(cfg, {p: best[p] for p in params if best.get(p) is not None})
    dump_config(best_cfg, out_dir / "best_config.yaml")
    print(md, flush=True)
    return {
        "generation": generation, "trials": len(rows), "best": best, "params": params,
        "results_csv": str(out_dir / "results.csv"), "results_md": str(out_dir / "results.md"),
        "plot": plot, "best_config": str(out_dir / "best_config.yaml"),
        "seconds": round(time.perf_counter() - t0, 1),
        "errors": [str(r.error)[:300] for r in grid if r.error is not None],
    }


def _collect(grid: Any, params: list[str], cfg: JobConfig) -> list[dict[str, Any]]:
    """One row per trial with its best validation accuracy (sorted best first)."""
    rows = []
    planned = cfg.train.max_steps
    for r in grid:
        df = r.metrics_dataframe
        if df is None or cfg.tune.metric not in getattr(df, "columns", []):
            continue
        df = df.dropna(subset=[cfg.tune.metric])
        if df.empty:
            continue
        i = df[cfg.tune.metric].idxmax() if cfg.tune.mode == "max" else df[cfg.tune.metric].idxmin()
        last_step = int(df["step"].max()) if "step" in df else None
        status = "error" if r.error is not None else (
            "stopped early (ASHA)" if planned and last_step is not None and last_step < planned else "completed")
        row = {"trial": Path(r.path).name if r.path else "?"}
        row.update({p: r.config.get(p) for p in params})
        row.update({"best_val_accuracy": float(df.loc[i, cfg.tune.metric]),
                    "best_step": int(df.loc[i, "val_step"]) if "val_step" in df else int(df.loc[i, "step"]),
                    "last_step": last_step, "status": status})
        rows.append(row)
    sign = -1.0 if cfg.tune.mode == "max" else 1.0
    rows.sort(key=lambda x: (sign * x["best_val_accuracy"], -(x["last_step"] or 0)))
    return rows


__all__ = [
    "apply_trial_params",
    "ensure_store",
    "plot_results",
    "results_table",
    "run_tune",
    "search_space",
]
