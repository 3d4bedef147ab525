"""Pure parts of the sweep: search space, trial configs, table and plot."""

from __future__ import annotations

import pytest
from ray import tune

from tinyllm_ray.config import ConfigError, dump_config, load_config
from tinyllm_ray.paths import RunPaths
from tinyllm_ray.tune import apply_trial_params, plot_results, results_table, search_space


def test_grid_uses_the_papers_alpha_set_per_teacher() -> None:
    cfg = load_config("demo_cpu")
    space = search_space(cfg)
    assert set(space) == {"alpha/llama", "alpha/qwen"}
    assert space["alpha/llama"] == tune.grid_search([0.01, 0.1, 0.5, 1.0, 2.0, 3.0])


def test_random_and_optuna_spaces() -> None:
    cfg = load_config("demo_cpu", ["tune.search=random", "tune.tune_lr=true"])
    space = search_space(cfg)
    assert set(space) == {"alpha/llama", "alpha/qwen", "lr"}
    assert sorted(space["alpha/qwen"].categories) == [0.01, 0.1, 0.5, 1.0, 2.0, 3.0]
    cfg = load_config("demo_cpu", ["tune.search=optuna"])
    dom = search_space(cfg)["alpha/llama"]
    assert (dom.lower, dom.upper) == (0.01, 3.0)


def test_convex_form_sweeps_one_alpha_within_unit_interval() -> None:
    cfg = load_config("minds_mirror_svamp")
    space = search_space(cfg)
    assert set(space) == {"alpha/convex", "self_eval_weight"}
    assert set(space["alpha/convex"].categories) <= {0.01, 0.1, 0.5, 1.0}


def test_trial_params_land_in_a_valid_config(tmp_path) -> None:
    cfg = load_config("demo_cpu")
    trial = apply_trial_params(cfg, {"alpha/llama": 3.0, "alpha/qwen": 0.01, "lr": 1e-4})
    assert trial.alpha_for("llama") == 3.0 and trial.alpha_for("qwen") == 0.01 and trial.train.lr == 1e-4
    out = tmp_path / "best.yaml"
    dump_config(trial, out)
    assert load_config(out, ["train.max_steps=3"]).alpha_for("llama") == 3.0  # `train` accepts it
    with pytest.raises(KeyError):
        apply_trial_params(cfg, {"momentum": 0.9})
    with pytest.raises(ConfigError, match="loss.alpha"):
        apply_trial_params(cfg, {"alpha/llama": -1.0})


def test_trials_get_the_drivers_absolute_paths(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    paths = RunPaths.of(load_config("demo_cpu"))
    cfg = paths.pin(load_config("demo_cpu"))  # what the sweep hands every trial
    assert cfg.runtime.storage_path == str(tmp_path / "runs")
    assert cfg.runtime.resolved_store_uri == str(tmp_path / "runs" / "demo" / "rationales")
    monkeypatch.chdir("/")  # a trial process elsewhere derives the same places
    assert RunPaths.of(cfg) == paths
    assert paths.trial_student("t1") == str(tmp_path / "runs" / "demo" / "tune" / "trials" / "t1" / "student")


def test_table_and_plot(tmp_path) -> None:
    rows = [{"trial": "t1", "alpha/llama": 0.1, "best_val_accuracy": 0.5, "best_step": 4, "last_step": 8,
             "status": "completed"},
            {"trial": "t2", "alpha/llama": 3.0, "best_val_accuracy": 0.25, "best_step": 2, "last_step": 2,
             "status": "stopped early (ASHA)"}]
    md = results_table(rows, ["alpha/llama"])
    assert md.splitlines()[2] == "| t1 | 0.1 | 0.5 | 4 | 8 | completed |"
    png = plot_results(rows, ["alpha/llama"], tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.endswith("p.png")
