"""Real Ray Train + real DeepSpeed on CPU (gloo), tiny T5 and tiny Llama students.

Kept tiny for a 2-core machine: 64 synthetic training questions, 2 teachers whose
"rationales" state the answer (learnable), a handful of optimizer steps per run.

- T5, ZeRO-2, 2 workers: losses fall, validation accuracy is reported with every
  checkpoint, the best checkpoint is exported in HF format, its weights equal the
  DeepSpeed state in the same checkpoint (round trip), and ``evaluate_student`` (the
  ``eval --model PATH --split test`` path) scores it.
- Llama, ZeRO-3, 2 workers, ``max_failures=1``: rank 1 ``os._exit``s after step 6; the run
  resumes from the step-4 checkpoint (the next attempt starts at step 5, not 1) and ends;
  the causal one-pass layout (block mask, position ids) under ZeRO-3, and its export is
  evaluated answer-only with the same layout.
- T5, ZeRO-0, 1 worker, bf16, convex loss, Mind's Mirror two-stage schedule: self-evaluation
  (verdict + critique tasks) then CoT; the learning rate restarts at stage 2; the worker dies
  in stage 2 and the run resumes from a stage-2 checkpoint.
- Store problems fail before any worker starts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_student_tasks import store_row, write_store
from tinyllm_ray.config import JobConfig, TinyModelConfig

pytestmark = pytest.mark.slow

TEACHERS = ("llama", "qwen")


def _job(tmp: Path, model: str, *, teachers=TEACHERS, **sections: Any) -> JobConfig:
    raw: dict[str, Any] = {
        "data": {"name": "synthetic", "synthetic": {"train": 64, "validation": 16, "test": 16}},
        "teachers": [{"name": t, "model": "unused"} for t in teachers],
        "student": {"model": model, "max_input_length": 96, "max_target_length": 24},
        "loss": {"alpha": {t: 0.5 for t in teachers}},
        "train": {"num_workers": 2, "cpus_per_worker": 1, "micro_batch_size": 8, "lr": 3e-3,
                  "scheduler": "constant", "eval_every_steps": 4, "checkpoint_every_steps": 4,
                  "eval_max_new_tokens": 6, "eval_limit": 16, "num_checkpoints_to_keep": 2},
        "eval": {"batch_size": 16, "max_new_tokens": 6},
        "runtime": {"storage_path": str(tmp), "run_name": "it"},
    }
    for k, v in sections.items():
        raw[k] = {**raw.get(k, {}), **v} if isinstance(v, dict) else v
    return JobConfig.model_validate(raw)


def _store_for(cfg: JobConfig, *, self_eval: bool = False, disagree: int = 0) -> None:
    """A finished store; the last teacher parses another answer on the first ``disagree`` examples."""
    from tinyllm_ray.data.loader import load_splits

    train = load_splits(cfg.data).splits["train"]
    rows = []
    for i, r in enumerate(train):
        for t in [t.name for t in cfg.teachers]:
            other = i < disagree and t == cfg.teachers[-1].name
            rows.append(store_row(r, t, rationale=f"The answer is {r.answer} because {t} knows it.",
                                  parsed=f"not {r.answer}" if other else r.answer))
            if self_eval:
                rows.append(store_row(r, t, kind="self_eval", eval_idx=0, rationale=f"It is {r.answer}.",
                                      critique="The reasoning names the right fact.", verdict="correct"))
    write_store(cfg.runtime.resolved_store_uri, rows)


def _model(tiny_cache, family: str) -> str:
    from tinyllm_ray.models.tiny import tiny_model_path

    return str(tiny_model_path(TinyModelConfig(family=family), tiny_cache))


def _falls(history: list[dict[str, Any]], key: str) -> tuple[float, float]:
    vals = [h[key] for h in history if key in h]
    first, last = vals[0], sum(vals[-2:]) / 2
    return first, last


def test_t5_zero2_two_workers_learns_and_exports(ray_session, tiny_cache, tmp_path):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from tinyllm_ray.student.evaluate_model import evaluate_student
    from tinyllm_ray.student.trainer import run_training

    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # opt-in MLflow tracking, a local database
    cfg = _job(tmp_path, _model(tiny_cache, "t5"),
               train={"zero_stage": 2, "max_steps": 12, "mlflow_tracking_uri": mlflow_uri})
    _store_for(cfg)
    res = run_training(cfg)

    assert res.final_step == res.total_steps == 12
    hist = res.history()
    assert [h["step"] for h in hist] == list(range(1, 13))
    # the same reports, once each, in a finished MLflow run (logged by the Ray Train controller)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("tinyllm-ray").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["train.max_steps"] == "12"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss_answer")] == list(range(1, 13))
    assert all(h["attempt_start_step"] == 0 for h in hist)
    for key in ("loss", "loss_answer", "loss_rationale_llama", "loss_rationale_qwen"):
        first, last = _falls(hist, key)
        assert last < 0.8 * first, (key, first, last)
    assert res.data["rows_per_task"] == {"answer": 64, "rationale:llama": 64, "rationale:qwen": 64}
    assert res.data["truncated_inputs"] == 0
    # validation accuracy on every checkpoint; the best one is chosen on it
    # every report carries val_accuracy (Ray Tune's strict metric check); fresh at checkpoints
    assert all("val_accuracy" in h for h in hist)
    assert [h["val_step"] for h in hist] == [0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12]
    evals = [h for h in hist if h["checkpoint"]]
    assert [h["step"] for h in evals] == [4, 8, 12]
    assert res.best_val_accuracy == max(h["val_accuracy"] for h in evals)
    assert res.best_checkpoint and Path(res.best_checkpoint).is_dir()

    # the exported student is a plain HF folder
    model = AutoModelForSeq2SeqLM.from_pretrained(res.model_dir)
    tok = AutoTokenizer.from_pretrained(res.model_dir)
    assert tok("predict: x")["input_ids"]
    fmt = json.loads((Path(res.model_dir) / "tinyllm_student.json").read_text())
    assert fmt["arch"] == "seq2seq" and fmt["prefix_side"] == "decoder"

    # round trip: the DeepSpeed state in the chosen checkpoint holds exactly the exported weights
    import torch

    ds = torch.load(Path(res.best_checkpoint) / "deepspeed" / "ds" / "mp_rank_00_model_states.pt",
                    map_location="cpu", weights_only=False)["module"]
    hf = model.state_dict()
    shared = [k for k in hf if f"model.{k}" in ds]
    assert len(shared) >= len(hf) - 2  # tied embeddings may be stored once
    for k in shared:
        assert torch.equal(hf[k], ds[f"model.{k}"].to(hf[k].dtype)), k

    # the `eval --model PATH --split test` path
    ev = evaluate_student(cfg, res.model_dir, "test")
    assert ev.total == 16 and 0.0 <= ev.accuracy <= 1.0 and ev.split == "test"
    # `eval --show 3`: three predictions beside their gold answers, in the report and as a table
    from tinyllm_ray.data.loader import load_splits
    from tinyllm_ray.evaluate import format_predictions
    from tinyllm_ray.jobs.stages import evaluate

    shown = evaluate(cfg, model=res.model_dir, split="test", show=3)
    assert [p["answer"] for p in shown["predictions"]] == [r.answer for r in load_splits(cfg.data).splits["test"][:3]]
    assert shown["correct"] == ev.correct and len(format_predictions(shown["predictions"]).splitlines()) == 5


def test_llama_zero3_resumes_after_a_worker_dies(ray_session, tiny_cache, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tinyllm_ray.student.evaluate_model import evaluate_student
    from tinyllm_ray.student.trainer import run_training

    cfg = _job(tmp_path, _model(tiny_cache, "llama"),
               train={"zero_stage": 3, "max_steps": 8, "max_failures": 1, "eval_every_steps": 100},
               filter={"cross_teacher": {"mode": "filter"}})
    _store_for(cfg, disagree=8)  # the two teachers disagree on 8 of 64 examples: those CoTs are left out
    flag = tmp_path / "fault.flag"
    res = run_training(cfg, worker_env={"TINYLLM_FAULT_AT_STEP": "6", "TINYLLM_FAULT_RANK": "1",
                                        "TINYLLM_FAULT_FLAG": str(flag)})

    assert flag.exists(), "the injected fault never fired"
    assert res.final_step == 8
    assert res.data["cross_teacher_dropped"] == {"llama": 8, "qwen": 8}
    assert res.data["rows_per_task"] == {"answer": 64, "rationale:llama": 56, "rationale:qwen": 56}
    events = [json.loads(line) for line in Path(res.metrics_file).read_text().splitlines()]
    failures = [e for e in events if e["event"] == "worker_failure"]
    assert len(failures) == 1 and 1 in failures[0]["ranks"]
    reports = [e for e in events if e["event"] == "report"]
    second = [r for r in reports if r["attempt_start_step"] > 0]
    # resumed, not restarted: the second attempt starts after the step-4 checkpoint
    assert {r["attempt_start_step"] for r in second} == {4}
    assert [r["step"] for r in second] == [5, 6, 7, 8]
    assert res.ray_result.metrics["attempt_start_step"] == 4
    first, last = _falls(reports, "loss")
    assert last < first
    AutoModelForCausalLM.from_pretrained(res.model_dir)
    AutoTokenizer.from_pretrained(res.model_dir)
    # trained with the one-pass layout (question, then the task prefix); eval prompts the same way
    fmt = json.loads((Path(res.model_dir) / "tinyllm_student.json").read_text())
    assert fmt["arch"] == "causal" and fmt["prefix_side"] == "decoder" and fmt["format_version"] == 2
    ev = evaluate_student(cfg, res.model_dir, "test")
    assert ev.total == 16 and 0.0 <= ev.accuracy <= 1.0


def test_two_stage_convex_bf16_single_worker_restarts_each_stage_and_resumes_in_stage_two(
        ray_session, tiny_cache, tmp_path):
    from transformers import AutoModelForSeq2SeqLM

    from tinyllm_ray.student.trainer import run_training

    lr = 3e-3
    cfg = _job(tmp_path, _model(tiny_cache, "t5"), teachers=("llama",),
               self_eval={"enabled": True},
               loss={"form": "convex", "convex_alpha": 0.5, "schedule": "two_stage", "alpha": {}},
               train={"num_workers": 1, "zero_stage": 0, "precision": "bf16", "max_steps": 3, "lr": lr,
                      "scheduler": "linear", "warmup_steps": 2, "max_failures": 1, "num_checkpoints_to_keep": 8,
                      "eval_every_steps": 2, "checkpoint_every_steps": 2})
    _store_for(cfg, self_eval=True)
    flag = tmp_path / "fault.flag"
    # the worker dies right after step 6 (stage 2); the run resumes from the step-4 checkpoint, mid stage 2
    # (one step after the checkpoint gives the controller time to register it, as in the Llama test)
    res = run_training(cfg, worker_env={"TINYLLM_FAULT_AT_STEP": "6", "TINYLLM_FAULT_RANK": "0",
                                        "TINYLLM_FAULT_FLAG": str(flag)})
    hist = res.history()
    assert flag.exists(), "the injected fault never fired"
    assert res.total_steps == 6 and res.final_step == 6
    resumed = [h for h in hist if h["attempt_start_step"] > 0]
    assert {h["attempt_start_step"] for h in resumed} == {4} and [h["step"] for h in resumed] == [5, 6]
    by_step: dict[int, list[dict[str, Any]]] = {}
    for h in hist:
        by_step.setdefault(h["step"], []).append(h)
    assert sorted(by_step) == [1, 2, 3, 4, 5, 6]
    # each stage has its own linear schedule over its 3 steps (student/schedule.py): warm-up over 2 steps
    # (lr/2, lr), then linear decay towards 0, reached one step after the stage's last (Hugging Face's
    # schedule: no step at 0), so step 3 runs at lr/2. One schedule over both stages would go on
    # lr/2, lr, 0.75 lr | ...; so stage 2 restarts, and the resumed attempt (step 5 again, then 6)
    # continues stage 2's schedule where it was
    expected = [lr / 2, lr, lr / 2]
    for step, reports in by_step.items():
        stage = 0 if step <= 3 else 1
        for h in reports:
            assert h["stage"] == stage and h["stage_step"] == step - 3 * stage
            assert h["lr"] == pytest.approx(expected[h["stage_step"] - 1]), (step, h["lr"])
            if stage == 0:
                assert {"loss_self_eval_verdict", "loss_self_eval_critique"} <= set(h) and "loss_answer" not in h
            else:
                assert "loss_answer" in h and "loss_rationale_llama" in h
                assert "loss_self_eval_verdict" not in h and "loss_self_eval_critique" not in h
    assert [by_step[s][0]["lr"] for s in (3, 4, 5)] == pytest.approx([lr / 2, lr / 2, lr])  # stage 2 warms up again
    best = [c for c in res.checkpoints if c["step"] == res.best_step]
    assert res.best_step in (4, 6) and best and best[0]["stage"] == 1  # selection among CoT-stage checkpoints
    AutoModelForSeq2SeqLM.from_pretrained(res.model_dir)


def test_store_problems_fail_before_training(ray_session, tiny_cache, tmp_path):
    from tinyllm_ray.student.tasks import EmptyTargetError, MissingTeacherError
    from tinyllm_ray.student.trainer import run_training

    cfg = _job(tmp_path, _model(tiny_cache, "t5"))
    _store_for(cfg.model_copy(update={"teachers": cfg.teachers[:1]}))  # only 'llama' generated
    with pytest.raises(MissingTeacherError, match="qwen"):
        run_training(cfg)

    cfg2 = _job(tmp_path / "b", _model(tiny_cache, "t5"), teachers=("llama",))
    from tinyllm_ray.data.loader import load_splits

    train = load_splits(cfg2.data).splits["train"]
    rows = [store_row(r, "llama") for r in train]
    rows[5]["rationale"] = ""
    write_store(cfg2.runtime.resolved_store_uri, rows)
    with pytest.raises(EmptyTargetError, match=r"teacher 'llama' kind=rationale: 1 row\(s\), e.g. examples \['syn-tr"):
        run_training(cfg2)
    assert not os.path.exists(os.path.join(str(tmp_path / "b"), "it", "train", "checkpoint_manager_snapshot.json"))


def test_two_stage_data_keeps_the_shuffled_order_whatever_task_finishes_first(ray_session, tmp_path):
    """Each stage's groups come in the seeded shuffle's order (16 slices: 16 blocks), the same on every call."""
    from tinyllm_ray.data.loader import load_splits
    from tinyllm_ray.student.data import prepare_student_data, slice_dataset
    from tinyllm_ray.student.tasks import TaskPlan

    cfg = _job(tmp_path, "unused", teachers=("llama",), self_eval={"enabled": True},
               loss={"form": "convex", "convex_alpha": 0.5, "schedule": "two_stage", "alpha": {}},
               data={"synthetic": {"train": 64, "validation": 16, "test": 16}})
    loaded = load_splits(cfg.data)
    train = loaded.splits["train"]
    rows = []
    for r in train:
        rows.append(store_row(r, "llama", rationale=f"The answer is {r.answer}.", parsed=r.answer))
        rows.append(store_row(r, "llama", kind="self_eval", eval_idx=0, rationale=f"It is {r.answer}.",
                              critique="Right.", verdict="correct"))
    uri = cfg.runtime.resolved_store_uri
    write_store(uri, rows, records=train, shard_size=4)
    plan = TaskPlan.from_config(cfg)
    shuffled = slice_dataset(plan, train, 4, uri).random_shuffle(seed=cfg.train.seed).take_all()
    want = {s: [r["group"] for r in shuffled if r["stage"] == s] for s in (0, 1)}
    assert want[0] and want[1] and want[0] != sorted(want[0])  # really shuffled, both stages present
    for _ in range(3):
        data = prepare_student_data(cfg, train, loaded.splits["validation"], store_uri=uri)
        for s in (0, 1):
            assert [r["group"] for r in data.datasets[f"train_stage{s}"].take_all()] == want[s], f"stage {s}"
