"""``evaluate_teacher`` with a real vLLM (CPU build) engine in a Ray actor: a tiny random
Llama teacher answers 8 test questions; the result has the student's row shape and every
prediction is parsed and scored by the shared rules (``evaluate.score_generations``),
served by the same engine pool as generation (``teachers/serving.py``). One engine start
(~15-30 s here)."""

from __future__ import annotations

import time

import pytest

from tinyllm_ray.config import TinyModelConfig, validate_config
from tinyllm_ray.data.loader import load_splits
from tinyllm_ray.evaluate import EvalResult, exact_match
from tinyllm_ray.models.tiny import tiny_model_path
from tinyllm_ray.teachers.evaluate_teacher import evaluate_teacher, read_answer

pytestmark = pytest.mark.slow


def test_tiny_teacher_answer_only_accuracy_on_8_test_questions(ray_session, tiny_cache):
    llama = tiny_model_path(TinyModelConfig(family="llama"), tiny_cache)
    cfg = validate_config({
        "data": {"name": "synthetic", "synthetic": {"train": 16, "validation": 4, "test": 16}},
        "teachers": [{"name": "llama", "model": str(llama), "dtype": "float32", "max_model_len": 1024,
                      "kv_cache_space_gib": 0.25, "num_cpus": 1, "batch_size": 4,
                      "sampling": {"temperature": 0.7, "n": 2, "max_tokens": 64, "seed": 0}}],
        "eval": {"max_new_tokens": 8},
    })
    t0 = time.perf_counter()
    res = evaluate_teacher(cfg, "llama", "test", limit=8, keep_predictions=None)
    seconds = time.perf_counter() - t0
    print(f"\nteacher eval: {res.correct}/{res.total} in {seconds:.1f}s; e.g. {res.predictions[0]}")

    assert isinstance(res, EvalResult)
    assert res.total == 8 and 0.0 <= res.accuracy <= 1.0
    assert res.split == "test" and "teacher llama" in res.model and res.seconds > 0
    assert set(res.to_dict()) == {"accuracy", "correct", "total", "split", "model", "truncated_inputs", "seconds"}
    records = load_splits(cfg.data).require("test")[:8]
    assert [p["id"] for p in res.predictions] == [r.id for r in records]
    for p, rec in zip(res.predictions, records):
        assert p["answer"] == rec.answer
        assert p["prediction"] == read_answer(p["generated"], rec.choices)
        assert p["prediction"] is None or p["prediction"] in rec.choices
        assert p["correct"] == exact_match(p["prediction"], rec)
    assert res.correct == sum(p["correct"] for p in res.predictions)
    assert res.accuracy == res.correct / 8
    assert any(p["generated"] for p in res.predictions)  # the engine really produced text
