"""The console: what it says (pure) and where the output goes (fd redirection, in a subprocess; no Ray)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tinyllm_ray import observability as obs
from tinyllm_ray.jobs.progress import (
    MetricsTail,
    ProgressState,
    TeacherProgress,
    Throttle,
    TrainingProgress,
    fit,
    format_seconds,
    job_summary,
)
from tinyllm_ray.observability import BOOTSTRAP_LABEL

REPO = Path(__file__).resolve().parents[2]


def test_short_durations_and_lines_that_never_wrap() -> None:
    assert [format_seconds(s) for s in (0.4, 48, 185, 3720, None, float("nan"), -1)] == [
        "0s", "48s", "3m05s", "1h02m", "?", "?", "?"]
    assert fit("abcdef", 4) == "abc…" and fit("abc", 4) == "abc" and fit("abc", 0) == "abc"


def test_throttle_says_a_changed_text_at_most_once_per_interval() -> None:
    t = Throttle(10.0)
    assert t.due(0.0, "a")
    assert not t.due(1.0, "b")  # too soon
    t = Throttle(10.0)
    assert t.due(0.0, "a") and not t.due(20.0, "a")  # nothing changed: no record
    assert t.due(20.0, "b") and not t.due(25.0, "c") and t.due(31.0, "c")
    assert not t.due(100.0, "")  # nothing to say


def test_metrics_tail_reads_complete_new_records_only(tmp_path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 1}) + "\n")
    old_size = path.stat().st_size
    with open(path, "a") as f:
        f.write(json.dumps({"step": 2}) + "\nnot json\n" + '{"step": 3')
    tail = MetricsTail(str(path), offset=old_size)  # an earlier run's records are skipped
    assert tail.read() == [{"step": 2}]
    with open(path, "a") as f:
        f.write("}\n")
    assert tail.read() == [{"step": 3}] and tail.read() == []
    assert MetricsTail(str(tmp_path / "missing.jsonl")).read() == []
    path.write_text(json.dumps({"step": 1}) + "\n")  # a rerun replaced the file: read from its start
    assert tail.read() == [{"step": 1}]


def test_training_progress_shows_step_losses_per_task_validation_and_eta() -> None:
    tp = TrainingProgress("student")
    assert tp.status() == "student starting" and not tp.done
    tp.update({"event": "worker_failure", "time": 1.0})  # not a report: ignored
    for step in (1, 2, 3):
        tp.update({"event": "report", "time": 100.0 + 2 * step, "step": step, "total_steps": 11, "loss": 2.0 / step,
                   "loss_answer": 1.0 / step, "loss_rationale_llama": 3.0 / step, "lr": 1e-3,
                   "val_accuracy": 0.25 if step >= 2 else None, "val_step": 2 if step >= 2 else None})
    assert tp.step == 3 and tp.total == 11 and tp.eta() == 16.0  # 2 s per step, 8 to go
    assert tp.status() == "student step 3/11 loss 0.667 (answer 0.33 llama 1.00) val 0.250 ETA 16s"
    assert (tp.best_val, tp.best_step) == (0.25, 2)
    tp.update({"event": "report", "time": 130.0, "step": 11, "loss": 0.5})
    assert tp.done
    assert tp.done_line().startswith("training student: step 11/11 in 28s; loss 0.500 (answer")
    tp.t_start = 90.0  # followed since before its first step: start-up counts
    assert tp.done_line().startswith("training student: step 11/11 in 40s;")
    assert tp.done_line().endswith("best validation accuracy 0.250 at step 2")


def test_generation_status_per_teacher_and_one_status_line() -> None:
    tp = TeacherProgress("llama", examples_total=40, shard_size=16, started=0.0)
    assert [tp.shard_examples(s) for s in range(4)] == [16, 16, 8, 0]
    tp.add_shard(0, outputs=16, kept=15, dropped=1, tokens=400, now=10.0)
    assert tp.status(10.0) == "llama 16/40 rows, 40 tok/s, kept 15 dropped 1" and not tp.done
    tp.add_shard(2, outputs=8, kept=8, dropped=0, tokens=200, now=20.0)
    tp.add_shard(1, outputs=16, kept=16, dropped=0, tokens=400, now=25.0)
    assert tp.done and tp.ended == 25.0
    assert tp.done_line(99.0) == "generation llama: 40/40 rows, kept 39 dropped 1 of 40 outputs, 40 tok/s, 25s"

    state = ProgressState()
    state.teachers["llama"] = tp
    state.teachers["qwen"] = TeacherProgress("qwen", 40, 16, examples_done=16, started=0.0)
    state.trainings["a"] = TrainingProgress("student")
    assert state.status(10.0) == "qwen 16/40 rows (engine starting) | 1 training(s) starting"
    state.trainings["a"].update({"step": 1, "time": 1.0, "total_steps": 4, "loss": 1.0})
    state.trainings["b"] = TrainingProgress("other", reported_done=True)
    assert state.status(10.0) == "student step 1/4 loss 1.000 | qwen 16/40 rows (engine starting) | 1/2 trainings done"
    # while a teacher is being bootstrapped, no engine is starting yet: the line says what it waits on
    state.trainings["boot"] = TrainingProgress(f"{BOOTSTRAP_LABEL}qwen")
    state.trainings["boot"].update({"step": 3, "time": 2.0, "total_steps": 450, "loss": 2.0})
    assert "qwen 16/40 rows (waiting for bootstrapped teachers)" in state.status(10.0)


def test_a_bootstrapped_teacher_shows_no_validation_accuracy() -> None:
    """Its loop's validation scores the student's answer task: 0.000 on every step meant nothing;
    its one task is its whole completion, so its loss is not repeated per task."""
    tp = TrainingProgress(f"{BOOTSTRAP_LABEL}qwen")
    for step in (1, 2):
        tp.update({"step": step, "time": float(step), "total_steps": 2, "loss": 1.0, "loss_answer": 1.0,
                   "val_accuracy": 0.0, "val_step": 0})
    assert tp.status() == f"{BOOTSTRAP_LABEL}qwen step 2/2 loss 1.000 ETA 0s"
    assert tp.done_line() == f"training {BOOTSTRAP_LABEL}qwen: step 2/2 in 1s; loss 1.000"


def test_job_summaries_are_short_and_name_the_results(tmp_path) -> None:
    report = {
        "teachers": {"llama": {"teacher": "llama", "by_kind": {"rationale": {"prompts": 8, "outputs": 8, "kept": 7,
                                                                           "dropped": {"empty": 1}}}}},
        "training": {"final_step": 60, "total_steps": 60, "best_val_accuracy": 0.3125, "best_step": 60,
                     "task_losses": {"loss": {"first": 3.0, "last": 1.0}, "loss_answer": {"first": 2.0, "last": 0.5}}},
        "evaluation": {"test": {"accuracy": 0.25, "correct": 8, "total": 32}},
        "seconds": {"generation": 60.0, "training": 90.0, "total": 170.0},
        "overlap": {"train_started_before_generation_ended": True, "overlap_s": 30.0},
    }
    lines = job_summary("run", report)
    text = "\n".join(lines)
    assert text.splitlines()[0].split()[:4] == ["teacher", "prompts", "outputs", "kept"]
    assert "training: 60/60 steps, best validation accuracy 0.312 at step 60; loss total 3.000 -> 1.000, " \
           "answer 2.000 -> 0.500" in text
    assert "evaluation: test 0.250 (8/32)" in text and "30 s before generation ended" in text
    table = tmp_path / "compare.md"
    table.write_text("# compare\n\n| a |\n")
    assert job_summary("demo", {"paths": {"table": str(table)}, "failed": {"x": "boom"}}) == [
        "# compare\n\n| a |", "x failed: boom"]
    assert job_summary("eval", {"accuracy": 0.5, "correct": 1, "total": 2, "split": "test"}) == [
        "accuracy 0.500 (1/2) on test"]
    assert job_summary("unknown", {}) == []


def test_progress_listeners_never_break_the_caller() -> None:
    seen = []

    def broken(event, fields):
        raise RuntimeError("display bug")

    remove_a = obs.add_progress_listener(lambda e, f: seen.append((e, f)))
    remove_b = obs.add_progress_listener(broken)
    try:
        obs.progress("stage", name="x")
    finally:
        remove_a()
        remove_b()
    obs.progress("stage", name="y")  # nobody listens: nothing happens
    assert seen == [("stage", {"name": "x"})]


def _run_child(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def test_redirection_catches_fd_writes_and_child_processes(tmp_path) -> None:
    out = _run_child(f"""
        import os, subprocess, sys
        from tinyllm_ray.jobs.console import OutputRedirect
        r = OutputRedirect()
        r.to_file({str(tmp_path / 'logs' / 'console.log')!r})
        print("python stdout"); print("python stderr", file=sys.stderr)
        os.write(1, b"fd 1\\n"); os.write(2, b"fd 2\\n")
        subprocess.run(["sh", "-c", "echo child out; echo child err >&2"], check=True)
        os.write(r.stderr_fd, b"to the terminal\\n")
        r.restore()
        print("after restore")
    """, tmp_path)
    assert out.returncode == 0, out.stderr
    logged = (tmp_path / "logs" / "console.log").read_text()
    for text in ("python stdout", "python stderr", "fd 1", "fd 2", "child out", "child err"):
        assert text in logged and text not in out.stdout + out.stderr
    assert out.stderr == "to the terminal\n" and out.stdout == "after restore\n"


def test_job_console_without_a_terminal(tmp_path) -> None:
    """Records instead of a live line; finished trainings leave one line; noise stays in the log."""
    run, log_path = tmp_path / "run", tmp_path / "run" / "logs" / "console.log"
    metrics = tmp_path / "train" / "t1" / "metrics.jsonl"
    metrics.parent.mkdir(parents=True)
    out = _run_child(f"""
        import json, logging, os, sys, time
        from tinyllm_ray.jobs.console import JobConsole
        from tinyllm_ray.observability import progress
        print("before ray: on the terminal")
        import builtins
        with JobConsole("run", {str(log_path)!r}, {str(run)!r}, record_every_s=0.2):
            assert os.environ["RAY_TQDM_PATCH_PRINT"] == "0"
            progress("ray", address="local")
            print("worker noise"); os.write(2, b"C-level noise\\n")
            builtins.print = lambda *a, **k: None  # as Ray's tqdm manager would patch it
            logging.getLogger("tinyllm_ray.jobs.run").info("store shard size 16")
            logging.getLogger("ray.data").info("ray data chatter")
            progress("stage", name="trials", detail="2 settings")
            progress("training", label="{{dir}}", pattern={str(tmp_path / 'train' / '*' / 'metrics.jsonl')!r}, total=2)
            with open({str(metrics)!r}, "a") as f:
                for step in (1, 2):
                    f.write(json.dumps({{"event": "report", "time": time.time(), "step": step, "loss": 1.5}}) + "\\n")
            time.sleep(2.5)
        print("summary line")
    """, tmp_path)
    assert out.returncode == 0, out.stderr
    term = out.stdout + out.stderr
    assert "before ray: on the terminal" in out.stdout and "summary line" in out.stdout
    assert f"log (Ray, vLLM, DeepSpeed, workers; `-v` shows it here): {log_path}" in term
    assert "store shard size 16" in term and "==> trials: 2 settings" in term
    assert "training t1: step 2/2 in" in term and "loss 1.500" in term
    for noise in ("worker noise", "C-level noise", "ray data chatter"):
        assert noise not in term
    logged = log_path.read_text()
    assert "worker noise" in logged and "C-level noise" in logged and "ray data chatter" in logged
    assert "INFO tinyllm_ray.jobs.run: store shard size 16" in logged  # the full record too
    assert len(term.splitlines()) <= 10, term


def test_a_training_whose_metrics_file_is_removed_leaves_the_status_line(tmp_path) -> None:
    """A bootstrap removes its work folder once its teacher is exported, sometimes before the
    console read its last step: the status line showed 'teacher llama step 999/1000' until the end."""
    metrics, other = tmp_path / "boot" / "metrics.jsonl", tmp_path / "student" / "metrics.jsonl"
    metrics.parent.mkdir(parents=True)
    other.parent.mkdir(parents=True)
    out = _run_child(f"""
        import json, shutil, time
        from tinyllm_ray.jobs.console import JobConsole
        from tinyllm_ray.observability import BOOTSTRAP_LABEL, progress
        with JobConsole("run", {str(tmp_path / 'run' / 'logs' / 'console.log')!r}, {str(tmp_path / 'run')!r},
                        record_every_s=0.2):
            progress("training", label=BOOTSTRAP_LABEL + "llama", pattern={str(metrics)!r}, total=3)
            progress("training", label="student", pattern={str(other)!r}, total=3)
            for path in ({str(metrics)!r}, {str(other)!r}):
                with open(path, "a") as f:
                    f.write(json.dumps({{"event": "report", "time": time.time(), "step": 1, "loss": 1.5}}) + "\\n")
            time.sleep(1.5)
            shutil.rmtree({str(metrics.parent)!r})
            time.sleep(1.5)
    """, tmp_path)
    assert out.returncode == 0, out.stderr
    records = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("[")]
    assert any("teacher llama step 1/3" in r and "student step 1/3" in r for r in records), out.stderr
    assert "teacher llama" not in records[-1] and "student step 1/3" in records[-1], out.stderr


def test_job_console_failure_user_error_and_bug(tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()  # an existing run folder: output goes to its log from the start
    code = f"""
        import sys
        from tinyllm_ray.jobs.console import JobConsole
        from tinyllm_ray.errors import ConfigError
        try:
            with JobConsole("train", {str(run / 'logs' / 'console.log')!r}, {str(run)!r}):
                print("noise")
                raise EXC
        except ConfigError as e:
            print(f"tinyllm-ray train: {{e}}", file=sys.stderr)
    """
    out = _run_child(code.replace("EXC", 'ConfigError("set train.lr")'), tmp_path)
    assert out.returncode == 0 and out.stderr.strip().endswith("tinyllm-ray train: set train.lr"), out.stderr
    assert "noise" not in out.stdout + out.stderr
    bug = _run_child(code.replace("EXC", 'KeyError("a bug")'), tmp_path)
    assert bug.returncode == 1 and "Traceback" in bug.stderr and "KeyError: 'a bug'" in bug.stderr
    logged = (run / "logs" / "console.log").read_text()
    assert "failed: set train.lr" in logged and "KeyError: 'a bug'" in logged


def test_cli_flags_for_the_console() -> None:
    from tinyllm_ray.cli import _uses_console, build_parser

    parser = build_parser()
    args = parser.parse_args(["run", "-v", "--json"])
    assert args.verbose and args.json and _uses_console(args)
    assert parser.parse_args(["-v", "train"]).verbose and not parser.parse_args(["train"]).verbose
    assert not _uses_console(parser.parse_args(["compare", "--list"]))
    assert not _uses_console(parser.parse_args(["config"]))
