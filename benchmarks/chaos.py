"""Chaos campaign (issue 11 item 2): seeded rounds of ``tinyllm-ray run``, several faults each.

    python benchmarks/chaos.py --rounds 25 --seed 0 --lock /tmp/tinyllm-ray.lock

Every round runs the CLI (``python -m tinyllm_ray.cli run``, a fresh local Ray) on a small
config (one tiny vLLM teacher, a tiny T5 student, frequent checkpoints) in its own
``runtime.storage_path`` and injects, at seeded random points (``_chaos_plan.plan_round``):

* ``teacher_kill`` / ``teacher_error``: the teacher's engine actor SIGKILLs itself, or
  raises an engine error, mid-batch on the first attempt of two batches
  (``TINYLLM_FAULT_INJECT``, the test hook); Ray restarts the actor, the batch is retried;
* ``worker_kill``: once the trainer has reported step *s*, the Ray Train worker process
  (``ray::RayTrainWorker``, found among this round's driver's descendants only, never
  another Ray on the machine) gets SIGKILL; Ray Train restores the last checkpoint
  (``train.max_failures``);
* ``driver_kill``: later (or, one round in four, right after the teacher faults), the
  ``run`` process group and every process it started get SIGKILL, and the same command is
  resubmitted (without the test hook): generation resumes from the store, Ray Train v2 from the run's checkpoint
  snapshot (same ``RunConfig(name, storage_path)``).

Then the round's store is compared with an unfaulted reference run's store (records lost,
duplicated, different), steps redone come from the metrics log (``attempt_start_step``),
and the student's validation accuracy is reported beside the reference's (not judged).
Results: ``benchmarks/results/chaos.{json,md}``. ``--lock PATH`` holds an exclusive flock
on PATH around each round's Ray use only, so other users of the machine interleave.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._chaos_plan import (
    RoundPlan,
    compare_stores,
    fault_record,
    plan_round,
    steps_redone,
    tally,
    to_markdown,
    training_attempts,
)
from benchmarks._common import REPO, log, machine_facts, set_quiet_offline_env

N_TRAIN, N_VAL, BATCH, MAX_STEPS = 24, 8, 4, 12
RUN_NAME = "chaos"
WORKER_TITLE = "RayTrainWorker"
ROUND_TIMEOUT_S = 600.0


def chaos_config(storage: Path) -> dict[str, Any]:
    """The small config: rounds of about a minute, a checkpoint every 2 steps, room for the faults."""
    return {
        "data": {"name": "synthetic", "synthetic": {"train": N_TRAIN, "validation": N_VAL, "test": 4}},
        "teachers": [{"name": "llama", "model": "tiny:llama", "dtype": "float32", "max_model_len": 1024,
                      "kv_cache_space_gib": 0.25, "num_cpus": 1, "batch_size": BATCH,
                      "sampling": {"temperature": 0.0, "max_tokens": 16, "seed": 0},
                      "max_restarts": 3, "max_batch_retries": 1}],
        "filter": {"drop_unparsable": False},
        "student": {"model": "tiny", "tiny": {"family": "t5"}, "max_input_length": 192, "max_target_length": 24},
        "train": {"micro_batch_size": 4, "lr": 1e-3, "scheduler": "constant", "max_steps": MAX_STEPS,
                  "eval_every_steps": 2, "checkpoint_every_steps": 2, "eval_max_new_tokens": 6,
                  "max_failures": 3},
        "eval": {"split": "test", "max_new_tokens": 6},
        # record_cache off: every round must generate (and survive) what it means to, not reuse a cache
        "runtime": {"storage_path": str(storage), "run_name": RUN_NAME, "store_shard_size": BATCH, "num_cpus": 4,
                    "record_cache": False},
    }


@contextlib.contextmanager
def held(lock: Path | None):
    """An exclusive flock on ``lock`` (None: nothing) while the block uses Ray."""
    if lock is None:
        yield
        return
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _descendants(pid: int) -> list[Any]:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _train_workers(pid: int) -> list[Any]:
    """The Ray Train worker processes among ``pid``'s descendants (this round's Ray only)."""
    out = []
    for p in _descendants(pid):
        with contextlib.suppress(Exception):
            if WORKER_TITLE in " ".join(p.cmdline()):
                out.append(p)
    return out


def _kill_tree(pid: int) -> None:
    """SIGKILL the process group of ``pid`` and every process it started (its local Ray too)."""
    procs = _descendants(pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    for p in procs + _descendants(pid):
        with contextlib.suppress(Exception):
            p.kill()


def _last_step(metrics: Path) -> int:
    steps = [r.get("step") or 0 for r in _reports(metrics)]
    return max(steps, default=0)


def _reports(metrics: Path) -> list[dict[str, Any]]:
    out = []
    if metrics.exists():
        for line in metrics.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                rec = json.loads(line)
                if rec.get("event") == "report":
                    out.append(rec)
    return out


def _run(cfg_file: Path, storage: Path, log_file: Path, plan: RoundPlan | None,
         faults: dict[str, dict[str, Any]], teacher_faults: bool = True) -> dict[str, Any]:
    """One ``tinyllm-ray run``; with ``plan``, kill a training worker and then the driver when due.

    Kills already done (``faults[kind]["injected"]``) are not repeated; a resubmitted run
    gets no teacher faults (``teacher_faults`` False: the hook is not part of the command)
    but still the worker kill if the driver died before it.
    """
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("TINYLLM_FAULT_INJECT", None)
    inject = plan.inject_env("llama") if plan is not None and teacher_faults else ""
    if inject:
        env["TINYLLM_FAULT_INJECT"] = inject
    cmd = [sys.executable, "-m", "tinyllm_ray.cli", "run", "--config", str(cfg_file)]
    metrics = storage / RUN_NAME / "train" / "metrics.jsonl"
    t0 = time.perf_counter()
    with open(log_file, "a") as out:
        out.write(f"\n=== {' '.join(cmd)} (teacher faults: {inject or 'none'})\n")
        out.flush()
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        worker, driver = (plan.of("worker_kill"), plan.of("driver_kill")) if plan else (None, None)
        teachers_hit = None
        while proc.poll() is None and time.perf_counter() - t0 < ROUND_TIMEOUT_S:
            time.sleep(0.2)
            step = _last_step(metrics)
            if worker and not faults["worker_kill"]["injected"] and step >= (worker.step or 0):
                procs = _train_workers(proc.pid)
                if procs:
                    random.Random(step).choice(procs).kill()
                    faults["worker_kill"].update(injected=True, at_step=step)
            if driver and not faults["driver_kill"]["injected"]:
                if driver.step == 0 and teachers_hit is None and (not inject or _teacher_faults_seen(storage, faults)):
                    teachers_hit = time.perf_counter()
                due = (teachers_hit is not None and time.perf_counter() - teachers_hit >= driver.delay_s) \
                    if driver.step == 0 else (step >= (driver.step or 0)
                                              and (worker is None or faults["worker_kill"]["injected"]))
                if due:
                    _kill_tree(proc.pid)
                    faults["driver_kill"].update(injected=True, at_step=step)
        if proc.poll() is None:  # a hung round: killed and reported as not survived
            _kill_tree(proc.pid)
        code = proc.wait()
    _kill_tree(proc.pid)  # nothing of this round's Ray outlives it (orphans included)
    return {"exit": code, "seconds": round(time.perf_counter() - t0, 1)}


def _teacher_faults_seen(storage: Path, faults: dict[str, dict[str, Any]]) -> bool:
    """Mark the teacher faults the engine logged as injected (the run's console log); all of them seen?"""
    console = storage / RUN_NAME / "logs" / "console.log"
    text = console.read_text(errors="replace") if console.exists() else ""
    for kind, action in (("teacher_kill", "kill"), ("teacher_error", "raise")):
        if kind in faults and f"injected fault {action} in batch {faults[kind]['batch']} attempt 1" in text:
            faults[kind]["injected"] = True
    return all(faults[k]["injected"] for k in ("teacher_kill", "teacher_error") if k in faults)


def _rows(store: Path) -> list[dict[str, Any]]:
    from tinyllm_ray.store import RationaleStore

    s = RationaleStore(str(store))
    return [r for kind in ("rationale", "self_eval") for r in s.read_table(kind).to_pylist()] if s.exists() else []


def _val_accuracy(storage: Path) -> float | None:
    report = storage / RUN_NAME / "report.json"
    if not report.exists():
        return None
    return (json.loads(report.read_text()).get("evaluation", {}).get("validation") or {}).get("accuracy")


def run_round(plan: RoundPlan, work: Path, reference: list[dict[str, Any]], max_reruns: int = 2) -> dict[str, Any]:
    """Run, inject ``plan``'s faults, resubmit after a driver kill; compare with the reference."""
    from tinyllm_ray.config import dump_config, validate_config

    storage = work / f"round{plan.round}"
    storage.mkdir(parents=True, exist_ok=True)
    cfg_file, log_file = storage / "chaos.yaml", storage / "round.log"
    dump_config(validate_config(chaos_config(storage)), cfg_file)
    faults = {f.kind: fault_record(f, False) for f in plan.faults}
    t0 = time.perf_counter()
    runs = [_run(cfg_file, storage, log_file, plan, faults)]
    reruns = 0
    while runs[-1]["exit"] != 0 and reruns < max_reruns:
        reruns += 1
        runs.append(_run(cfg_file, storage, log_file, plan, faults, teacher_faults=False))
    _teacher_faults_seen(storage, faults)
    attempts = training_attempts(_reports(storage / RUN_NAME / "train" / "metrics.jsonl"))
    student = storage / RUN_NAME / "student"
    survived = runs[-1]["exit"] == 0 and student.is_dir()
    return {"round": plan.round, "faults": list(faults.values()), "survived": survived, "reruns": reruns,
            "runs": runs, "attempts": attempts, "steps_redone": steps_redone(attempts),
            "val_accuracy": _val_accuracy(storage), "seconds": round(time.perf_counter() - t0, 1),
            "log": str(log_file), **compare_stores(reference, _rows(storage / RUN_NAME / "rationales"))}


def _git_commit() -> str:
    """HEAD's short hash, with ``+dirty`` when tracked files differ from it."""
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], check=False, cwd=REPO, capture_output=True, text=True).stdout.strip()

    dirty = git("status", "--porcelain", "--untracked-files=no")
    return (git("rev-parse", "--short", "HEAD") or "unknown") + ("+dirty" if dirty else "")


def _broken_round(plan: RoundPlan, exc: Exception) -> dict[str, Any]:
    """A round whose harness failed (not the product): recorded as not survived, with the error."""
    return {"round": plan.round, "faults": [fault_record(f, False) for f in plan.faults], "survived": False,
            "reruns": 0, "runs": [], "attempts": [], "steps_redone": 0, "val_accuracy": None, "seconds": 0.0,
            "error": f"{type(exc).__name__}: {exc}", "records": 0, "lost": 0, "duplicated": 0, "extra": 0,
            "different": 0}


def _write(args: argparse.Namespace, argv: list[str] | None, commit: str, ref: dict[str, Any],
           results: list[dict[str, Any]], final: bool) -> None:
    """The results so far (after every round: a long campaign that stops keeps what it measured)."""
    result = {
        "command": "python benchmarks/chaos.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "git_commit": commit, "seed": args.seed, "complete": final,
        "setting": (f"{N_TRAIN} questions, 1 tiny llama teacher (batches of {BATCH}), tiny T5 student, "
                    f"{MAX_STEPS} steps, checkpoint every 2, train.max_failures 3"),
        "machine": machine_facts(("ray", "vllm", "deepspeed")),
        "reference": ref, "results": results, "summary": tally(results),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(to_markdown(result))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lock", type=Path, default=None, help="flock this file around each round's Ray use")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "chaos")
    ap.add_argument("--work", type=Path, default=None, help="keep rounds' folders here (default: a temp dir)")
    args = ap.parse_args(argv)
    set_quiet_offline_env()
    commit = _git_commit()  # the code that runs (a long campaign outlives later commits)
    from tinyllm_ray.config import dump_config, validate_config

    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
        work = args.work or Path(tmp)
        ref_dir = work / "reference"
        ref_dir.mkdir(parents=True, exist_ok=True)
        dump_config(validate_config(chaos_config(ref_dir)), ref_dir / "chaos.yaml")
        log("reference run (no fault)")
        with held(args.lock):
            ref = _run(ref_dir / "chaos.yaml", ref_dir, ref_dir / "round.log", None, {})
        if ref["exit"] != 0:
            raise SystemExit(f"reference run failed; see {ref_dir / 'round.log'}:\n"
                             + (ref_dir / "round.log").read_text()[-3000:])
        ref["val_accuracy"] = _val_accuracy(ref_dir)
        reference = _rows(ref_dir / RUN_NAME / "rationales")
        results: list[dict[str, Any]] = []
        for no in range(args.rounds):
            plan = plan_round(args.seed, no, num_batches=N_TRAIN // BATCH, max_steps=MAX_STEPS)
            log(f"round {no}: {plan}")
            with held(args.lock):
                try:
                    results.append(run_round(plan, work, reference))
                except Exception as exc:  # noqa: BLE001 - a broken round is a result, not the campaign's end
                    results.append(_broken_round(plan, exc))
            r = results[-1]
            log(f"round {no}: " + json.dumps({k: r[k] for k in ("survived", "reruns", "lost", "duplicated",
                                                                "steps_redone", "seconds")}))
            _write(args, argv, commit, ref, results, final=no == args.rounds - 1)
    print(to_markdown(json.loads(args.out.with_suffix(".json").read_text())) if args.rounds else "no rounds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
