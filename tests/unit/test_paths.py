"""RunPaths: every location of a run, absolute once, URIs untouched (pure, no Ray)."""

from __future__ import annotations

import os

from tinyllm_ray.config import load_config, validate_config
from tinyllm_ray.paths import RunPaths, absolute, join, persistent_base


def test_local_paths_are_absolute_and_agree(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    p = RunPaths.of(load_config("demo_cpu", ["runtime.storage_path=out", "runtime.run_name=r1"]))
    run = tmp_path / "out" / "r1"
    assert (p.run, p.train, p.store) == (str(run), str(run), str(run / "rationales"))
    assert (p.student, p.tune) == (str(run / "student"), str(run / "tune"))
    assert (p.report_json, p.report_md) == (str(run / "report.json"), str(run / "report.md"))
    assert p.local and p.describe() == {"student": str(run / "student"), "store": str(run / "rationales"),
                                        "report": str(run / "report.md")}


def test_uris_stay_uris_and_an_explicit_store_wins(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config("demo_cpu", ["runtime.storage_path=s3://bucket/runs/", "runtime.run_name=r1",
                                   "runtime.store_uri=shared/store"])
    p = RunPaths.of(cfg)
    assert p.run == "s3://bucket/runs/r1" and p.student == "s3://bucket/runs/r1/student" and not p.local
    assert p.store == str(tmp_path / "shared" / "store")
    assert p.trial_student("t") == "s3://bucket/runs/r1/tune/trials/t/student"
    pinned = p.pin(cfg)
    assert pinned.runtime.storage_path == "s3://bucket/runs" and RunPaths.of(pinned) == p


def test_helpers() -> None:
    assert absolute("gs://b/x/") == "gs://b/x" and absolute("/a/../b") == "/b"
    assert join("memory://root", "a", "b") == "memory://root/a/b" and join("/r", "a") == "/r/a"


def test_the_report_says_where_everything_is(tmp_path) -> None:
    from tinyllm_ray.jobs.report import render_markdown, write_report

    p = RunPaths.of(load_config("demo_cpu", [f"runtime.storage_path={tmp_path}", "runtime.run_name=r1"]))
    report = {"run": "r1", "student": p.student, "store_uri": p.store, "paths": p.describe(), "teachers": {},
              "training": {"best_step": 2, "total_steps": 4, "best_val_accuracy": 0.5, "task_losses": {}},
              "evaluation": {}, "seconds": {"total": 1.0}}
    md = render_markdown(report)
    assert f"Student: `{p.student}`" in md and f"Store: `{p.store}`" in md and f"Report: `{p.report_md}`" in md
    files = write_report(report, p, md)
    assert files == {"json": p.report_json, "markdown": p.report_md}
    assert (tmp_path / "r1" / "report.md").read_text() == md


def test_a_job_in_rays_working_dir_copy_writes_to_a_persistent_place(tmp_path, monkeypatch) -> None:
    """``ray job submit --working-dir .``: ./runs must not land in the copy Ray deletes."""
    copy = tmp_path / "session_1" / "runtime_resources" / "working_dir_files" / "_ray_pkg_abc"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    monkeypatch.setenv("TINYLLM_HOME", str(tmp_path / "home"))
    cfg = validate_config({"runtime": {"storage_path": "./runs", "run_name": "demo"}})
    paths = RunPaths.of(cfg)
    assert paths.run == str(tmp_path / "home" / "runs" / "demo")
    assert paths.store == str(tmp_path / "home" / "runs" / "demo" / "rationales")
    assert absolute("/abs/runs") == "/abs/runs" and absolute("s3://b/runs") == "s3://b/runs"
    monkeypatch.delenv("TINYLLM_HOME")
    assert persistent_base() == os.path.expanduser("~/tinyllm-ray")
    monkeypatch.chdir(tmp_path)  # an ordinary working dir: relative to it, as always
    assert persistent_base() is None and absolute("runs") == str(tmp_path / "runs")
