"""`run` and `tune` on one persisted store, with real vLLM teachers, Ray Train + DeepSpeed
students and Ray Tune.

One store is generated once for the module; then
- `tune` sweeps alpha over 2 trials and must leave the store byte-for-byte untouched
  (trials reuse the rationales; no vLLM engine is started by a trial);
- `run` on the same store skips every shard (a second run reuses the store), trains,
  evaluates and writes its report.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tinyllm_ray.config import TinyModelConfig, load_config, validate_config
from tinyllm_ray.models.tiny import tiny_model_path

pytestmark = pytest.mark.slow


def make_cfg(root: Path, tiny_cache: Path) -> dict:
    llama = tiny_model_path(TinyModelConfig(family="llama"), tiny_cache)
    return {
        "data": {"name": "synthetic", "synthetic": {"train": 24, "validation": 4, "test": 4}},
        "teachers": [{"name": "llama", "model": str(llama), "dtype": "float32", "max_model_len": 1024,
                      "kv_cache_space_gib": 0.25, "num_cpus": 1, "batch_size": 8,
                      "sampling": {"temperature": 0.0, "max_tokens": 12, "seed": 0}}],
        "filter": {"drop_unparsable": False},
        "student": {"model": "tiny", "tiny": {"family": "t5"}, "max_input_length": 192, "max_target_length": 24},
        "train": {"micro_batch_size": 8, "lr": 1e-3, "scheduler": "constant", "max_steps": 4,
                  "eval_every_steps": 2, "checkpoint_every_steps": 2, "eval_max_new_tokens": 6},
        "tune": {"alpha_values": [0.1, 2.0], "grace_period": 2, "max_concurrent_trials": 1},
        "eval": {"split": "test", "max_new_tokens": 6},
        "runtime": {"storage_path": str(root / "runs"), "run_name": "rt", "store_shard_size": 8},
    }


def snapshot(store: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(store)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in store.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def stored(ray_session, tiny_cache, tmp_path_factory):
    from tinyllm_ray.jobs import generate

    root = tmp_path_factory.mktemp("runtune")
    cfg = validate_config(make_cfg(root, tiny_cache))
    report = generate(cfg)
    assert sum(report["shards_written"].values()) == 3
    return cfg, Path(cfg.runtime.resolved_store_uri)


def test_tune_reuses_the_store_and_writes_its_outputs(stored):
    from tinyllm_ray.tune import run_tune

    cfg, store = stored
    before = snapshot(store)
    out = run_tune(cfg)
    assert snapshot(store) == before, "a trial touched the rationale store"
    assert out["generation"]["shards_written"] == 0 and out["generation"]["shards_skipped"] == 3
    assert out["trials"] == 2 and not out["errors"]
    assert {r for r in (0.1, 2.0)} == {float(line.split("|")[2]) for line in
                                       Path(out["results_md"]).read_text().splitlines()[2:]}
    assert Path(out["plot"]).read_bytes()[:4] == b"\x89PNG"
    assert Path(out["results_csv"]).read_text().startswith("trial,alpha/llama,best_val_accuracy")
    best = load_config(out["best_config"])  # what `tinyllm-ray train --config` accepts
    assert best.alpha_for("llama") == out["best"]["alpha/llama"]
    assert yaml.safe_load(Path(out["best_config"]).read_text())["loss"]["alpha"]["llama"] in (0.1, 2.0)


def test_second_run_reuses_the_store_and_reports(stored):
    from tinyllm_ray.jobs.run import run_pipeline

    cfg, store = stored
    before = snapshot(store)
    report = run_pipeline(cfg)
    assert snapshot(store) == before
    assert report["generation"]["shards_written"] == {"llama": 0}
    assert report["generation"]["shards_skipped"] == {"llama": 3}
    assert report["teachers"]["llama"]["kept"] == 24
    assert report["training"]["final_step"] == 4 and report["training"]["best_step"] in (2, 4)
    assert set(report["evaluation"]) == {"validation", "test"}
    assert "loss_answer" in report["training"]["task_losses"]
    assert Path(report["report_files"]["markdown"]).read_text().startswith("# tinyllm-ray run `rt`")
    assert Path(report["student"], "config.json").is_file()
    # what a Ray user watches: the report's PNG and TensorBoard event files of every report
    assert Path(report["training"]["plot"]).read_bytes()[:4] == b"\x89PNG"
    assert list(Path(report["training"]["tensorboard"]).glob("events.out.tfevents.*"))
    assert "![per-task losses and validation accuracy](training.png)" in Path(
        report["report_files"]["markdown"]).read_text()


def test_run_shows_the_saved_generation_failure(stored, tmp_path):
    """A teacher that cannot start: the run fails with the generation's own message (the one
    saved in the store's marker, which also stopped the waiting slice readers), not with a
    slice timeout or Ray Train's wrapped traceback."""
    from tinyllm_ray.errors import StreamingError
    from tinyllm_ray.jobs.run import run_pipeline
    from tinyllm_ray.store import RationaleStore

    cfg, _ = stored
    raw = cfg.model_dump(mode="json")
    raw["teachers"][0]["model"] = str(tmp_path / "no-such-model")
    raw["runtime"].update({"storage_path": str(tmp_path / "runs"), "run_name": "fails", "store_uri": None})
    bad = validate_config(raw)
    with pytest.raises(StreamingError) as info:
        run_pipeline(bad)
    saved = RationaleStore(bad.runtime.resolved_store_uri).generation_failure()
    assert saved is not None and "no-such-model" in saved and "does not exist" in saved
    assert str(info.value).startswith(f"generation failed: {saved}")


def test_a_training_failure_cancels_generation_at_once(ray_session, tiny_cache, tmp_path, monkeypatch):
    """Training fails while the real teachers generate (injected: ``run_training`` raises, as it
    does when Ray Train's workers die for good): the run stops in seconds instead of waiting
    for the whole store, and its error says that training failed and generation was cancelled."""
    import time

    from tinyllm_ray.jobs.run import run_pipeline
    from tinyllm_ray.store import RationaleStore
    from tinyllm_ray.student import trainer

    def failing_training(cfg, **kwargs):
        time.sleep(2)  # generation is under way by now
        raise RuntimeError("Ray Train workers failed (injected by the test)")

    monkeypatch.setattr(trainer, "run_training", failing_training)
    raw = make_cfg(tmp_path, tiny_cache)
    raw["runtime"]["run_name"] = "cancel"
    cfg = validate_config(raw)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"^training failed: .*injected.*generation was cancelled"):
        run_pipeline(cfg)
    assert time.monotonic() - t0 < 90
    store = RationaleStore(cfg.runtime.resolved_store_uri)
    assert len(store.shard_files("llama")) < 3 and store.generation_failure() is None


def test_a_missing_student_stops_run_before_any_generation(ray_session, tiny_cache, tmp_path):
    """Models are resolved on the driver before generation starts: a missing student folder is
    one ConfigError, and no teacher has written anything."""
    from tinyllm_ray.errors import ConfigError
    from tinyllm_ray.jobs.run import run_pipeline
    from tinyllm_ray.store import RationaleStore

    raw = make_cfg(tmp_path, tiny_cache)
    raw["student"]["model"] = str(tmp_path / "no-such-student")
    raw["runtime"]["run_name"] = "nostudent"
    cfg = validate_config(raw)
    with pytest.raises(ConfigError, match="no-such-student.*does not exist"):
        run_pipeline(cfg)
    assert RationaleStore(cfg.runtime.resolved_store_uri).shard_files("llama") == {}
