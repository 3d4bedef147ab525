"""Teacher evaluation: answer-only prompts, rows, engine settings, scoring, and the whole
``evaluate_teacher`` flow with serving's Ray step replaced by ``TeacherEngine`` on a fake
LLM (no Ray, no vLLM)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.unit.test_teacher_serving import fake_serving
from tinyllm_ray.config import ConfigError, JobConfig, TeacherConfig
from tinyllm_ray.data.schema import MCQRecord
from tinyllm_ray.errors import DataError, EmptyEvaluationError
from tinyllm_ray.evaluate import EvalResult, exact_match, score_generations
from tinyllm_ray.prompts import prompt_hash, sample_icl_examples
from tinyllm_ray.teachers.evaluate_teacher import (
    FREE_FORM_INSTRUCTION,
    MCQ_INSTRUCTION,
    answer_only_prompt,
    answer_rows,
    eval_teacher_config,
    evaluate_teacher,
    read_answer,
)
from tinyllm_ray.teachers.placement import plan_teacher
from tinyllm_ray.teachers.prompt_rows import PROMPT_COLUMNS

COLOURS = ("red", "green", "blue", "yellow")
TRAIN = [MCQRecord(f"tr{i}", f"Train question {i}?", COLOURS, COLOURS[i % 4]) for i in range(12)]
TEST = [MCQRecord(f"te{i}", f"Test question {i}?", COLOURS, COLOURS[(i + 1) % 4]) for i in range(6)]
NUM = MCQRecord("n0", "Tom has 3 apples and buys 4 more. How many apples?", (), "7")


def job(**kw) -> JobConfig:
    t = TeacherConfig(name="llama", model="/m", **kw.pop("teacher", {}))
    return JobConfig(data=kw.pop("data", {"name": "synthetic"}), teachers=[t], **kw)


# ----------------------------------------------------------------------------- prompts


def test_prompt_is_few_shot_answer_only_and_withholds_the_gold_answer():
    rec = TEST[0]
    examples = TRAIN[:2]
    p = answer_only_prompt(rec, examples)
    blocks = p.split("\n\n")
    assert blocks[0] == MCQ_INSTRUCTION and len(blocks) == 4
    for ex, block in zip(examples, blocks[1:3]):  # examples show their gold answers
        assert block.startswith(f"Q: {ex.question}\n") and block.endswith(f"Answer: ({'abcd'[ex.answer_index]}) {ex.answer}")
    last = blocks[-1]
    assert last == (f"Q: {rec.question}\nAnswer Choices:\n(a) red\n(b) green\n(c) blue\n(d) yellow\nAnswer:")
    assert p.endswith("Answer:")  # the teacher writes the answer; nothing after it is given
    assert "Rationale" not in p and "step by step" not in p
    free = answer_only_prompt(NUM, [])
    assert free == f"{FREE_FORM_INSTRUCTION}\n\nQ: {NUM.question}\nAnswer:"


def test_rows_use_train_examples_only_and_never_carry_the_gold_answer():
    cfg = job()  # icl_k 2, random, seed 0
    rows = answer_rows(TEST, TRAIN, cfg.prompts, "test")
    assert [r["example_id"] for r in rows] == [r.id for r in TEST]
    for rec, row in zip(TEST, rows):
        assert set(row) == set(PROMPT_COLUMNS)
        assert row["answer"] == "" and row["split"] == "test" and row["shard"] == 0
        assert row["choices"] == list(rec.choices) and row["question"] == rec.question
        want = answer_only_prompt(rec, sample_icl_examples(TRAIN, 2, 0, exclude_id=rec.id))
        assert row["prompt"] == want and row["prompt_hash"] == prompt_hash(want)
        questions = [ln[3:] for ln in row["prompt"].splitlines() if ln.startswith("Q: ")]
        assert questions[-1] == rec.question and len(questions) == 3
        assert set(questions[:-1]) <= {t.question for t in TRAIN}
    assert answer_rows(TEST, TRAIN, cfg.prompts, "test") == rows  # deterministic
    # a train question never gets itself as an example
    own = answer_rows(TRAIN[:3], TRAIN, cfg.prompts, "train")
    assert all(r["prompt"].count(f"Q: {t.question}\n") == 1 for r, t in zip(own, TRAIN[:3]))
    zero = answer_rows(TEST[:1], TRAIN, job(prompts={"icl_k": 0, "icl_strategy": "none"}).prompts, "test")
    assert zero[0]["prompt"] == answer_only_prompt(TEST[0], [])


# ----------------------------------------------------------------------------- engine settings


def test_evaluated_teacher_is_greedy_single_output_without_self_evaluation():
    cfg = job(teacher={"sampling": {"temperature": 0.8, "n": 3, "seed": 5, "max_tokens": 200}, "batch_size": 7},
              self_eval={"enabled": True, "evals_per_cot": 2, "temperature": 0.5}, eval={"max_new_tokens": 12})
    t = eval_teacher_config(cfg.teachers[0], cfg.eval.max_new_tokens)
    assert (t.sampling.temperature, t.sampling.n, t.sampling.max_tokens) == (0.0, 1, 12)
    assert t.sampling.stop == cfg.teachers[0].sampling.stop and t.batch_size == 7 and t.model == "/m"
    plan = plan_teacher(t, "cpu", model_path="/resolved")
    assert "enable_chunked_prefill" not in plan.engine_kwargs  # greedy: no seeded-sampling workaround


def test_unknown_teacher_fails_before_anything_starts(monkeypatch):
    import tinyllm_ray.runtime

    def no_ray(*a, **k):
        raise AssertionError("Ray must not start for an unknown teacher")

    monkeypatch.setattr(tinyllm_ray.runtime, "init_ray", no_ray)
    with pytest.raises(ConfigError, match=r"no teacher named 'ghost'.*\['llama'\]"):
        evaluate_teacher(job(), "ghost")


# ----------------------------------------------------------------------------- scoring


@pytest.mark.parametrize(("generated", "expected"), [
    ("(b) green", "green"),
    (" (b) green.\n\nQ: Train question 3?", "green"),  # run-on after the answer line
    ("green", "green"),
    ("B", "green"),
    ("b)", "green"),
    ("The Green", "green"),
    ("\n\n(c) blue\n(a) red", "blue"),  # first non-empty line wins
    ("I think so.\nThus, the answer is (d) yellow.", "yellow"),  # nothing on line 1: whole text
    ("(b) blue", None),  # letter and text disagree: no answer
    ("purple", None),
    ("", None),
    (None, None),
])
def test_read_answer(generated, expected):
    assert read_answer(generated, COLOURS) == expected


def test_read_answer_free_form_numbers():
    assert read_answer("7 apples", ()) == "7"
    assert read_answer("$7.00\nQ: next", ()) == "7"
    assert exact_match(read_answer("7.0", ()), NUM)


def test_score_generations_counts_and_records_every_decision():
    recs = TEST[:4]  # golds: green, blue, yellow, red
    gens = ["(b) green", "blue", "(a) red", ""]
    res = score_generations(recs, gens, read=read_answer, split="test", model="m (teacher llama)", seconds=1.5,
                            keep_predictions=None)
    assert isinstance(res, EvalResult)
    assert (res.correct, res.total, res.accuracy) == (2, 4, 0.5)
    assert [p["prediction"] for p in res.predictions] == ["green", "blue", "red", None]
    assert [p["correct"] for p in res.predictions] == [True, True, False, False]
    assert [p["id"] for p in res.predictions] == [r.id for r in recs]
    assert [p["answer"] for p in res.predictions] == [r.answer for r in recs]
    d = res.to_dict()
    assert set(d) == set(EvalResult(accuracy=0.0, correct=0, total=1).to_dict())  # same row shape as students
    assert d["split"] == "test" and d["model"] == "m (teacher llama)" and d["seconds"] == 1.5
    assert len(score_generations(TEST, ["x"] * 6, read=read_answer, keep_predictions=2).predictions) == 2
    with pytest.raises(ValueError, match="3 generations for 4 records"):
        score_generations(recs, gens[:3])
    with pytest.raises(EmptyEvaluationError, match="split 'test': nothing to evaluate"):
        score_generations([], [], split="test")
    assert score_generations([], [], partial=True).total == 0  # one rank's empty slice: summed later


class AnswerLLM:
    """Answers each prompt's last question: right for even ids, wrong letter for odd ones."""

    def __init__(self, golds):
        self.golds = golds
        self.prompts = []

    def generate(self, prompts, params, use_tqdm=False):
        outs = []
        for p in prompts:
            self.prompts.append(p)
            q = p.rsplit("Q: ", 1)[1].split("\n", 1)[0]
            i = int(q.split()[-1].rstrip("?"))
            gold = self.golds[q]
            idx = COLOURS.index(gold) if i % 2 == 0 else (COLOURS.index(gold) + 1) % 4
            text = f" ({'abcd'[idx]}) {COLOURS[idx]}\n\nQ: invented question"
            outs.append(SimpleNamespace(outputs=[SimpleNamespace(text=text, token_ids=[5, 6, 7], finish_reason="stop")],
                                        prompt_token_ids=[0] * 9))
        return outs


class PositionLLM:
    """Answers the i-th evaluated record (by ``golds[question] = (i, record)``): right for
    even i, the next choice for odd i; each answer followed by a run-on."""

    def __init__(self):
        self.golds = {}
        self.prompts = []

    def generate(self, prompts, params, use_tqdm=False):
        outs = []
        for p in prompts:
            self.prompts.append(p)
            i, rec = self.golds[p.rsplit("Q: ", 1)[1].split("\n", 1)[0]]
            idx = (rec.answer_index + i % 2) % len(rec.choices)
            text = f" ({'abcdefgh'[idx]}) {rec.choices[idx]}\n\nQ: invented question"
            outs.append(SimpleNamespace(outputs=[SimpleNamespace(text=text, token_ids=[5, 6], finish_reason="stop")],
                                        prompt_token_ids=[0] * 9))
        return outs


def test_evaluate_teacher_serves_greedy_answer_only_rows_and_scores_them(monkeypatch):
    """The whole flow with serving's Ray step replaced: rows go through the real
    ``TeacherEngine.__call__`` (fake LLM) and are scored by the shared rules."""
    from tinyllm_ray.data.loader import load_splits

    llm = PositionLLM()
    served = fake_serving(monkeypatch, llm=lambda: llm)
    cfg = job(teacher={"sampling": {"temperature": 0.8, "n": 3, "seed": 5}, "batch_size": 4},
              data={"name": "synthetic", "synthetic": {"train": 12, "validation": 2, "test": 6}},
              self_eval={"enabled": True, "evals_per_cot": 2, "temperature": 0.5}, eval={"max_new_tokens": 8})
    test = load_splits(cfg.data).require("test")
    llm.golds = {r.question: (i, r) for i, r in enumerate(test)}
    res = evaluate_teacher(cfg, "llama", "test", keep_predictions=None)
    spec = served.specs["llama"]  # greedy, one output, eval.max_new_tokens, no self-evaluation
    assert (spec.sampling.temperature, spec.sampling.n, spec.sampling.max_tokens) == (0.0, 1, 8)
    assert not spec.self_eval.enabled and spec.env_defaults["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert served.batches == [4, 2] and served.released == ["llama"]
    assert len(llm.prompts) == 6 and all(p.endswith("Answer:") for p in llm.prompts)
    assert isinstance(res, EvalResult) and (res.split, res.total, res.correct) == ("test", 6, 3)
    assert res.model == "/m (teacher llama)" and res.accuracy == 0.5
    assert [p["correct"] for p in res.predictions] == [i % 2 == 0 for i in range(6)]
    assert [p["id"] for p in res.predictions] == [r.id for r in test]
    assert "\n" not in res.predictions[0]["generated"]  # the engine cut the run-on


def test_missing_or_empty_split_is_one_clear_error(monkeypatch):
    fake_serving(monkeypatch)
    cfg = job(data={"name": "synthetic", "synthetic": {"train": 4, "validation": 2, "test": 2}})
    with pytest.raises(DataError, match=r"no 'nope' split \(loaded: train \(4\), validation \(2\), test \(2\)\)"):
        evaluate_teacher(cfg, "llama", "nope")
