"""Bootstrapped teachers, pure parts: rows are the served prompts, targets parse, corruptions
are wrong and named, the cache key follows the weights, config errors are one line."""

from __future__ import annotations

import random

import pytest

from tinyllm_ray.config import ConfigError, JobConfig, load_config, validate_config
from tinyllm_ray.data.arithmetic import check_solution
from tinyllm_ray.prompts import clean_rationale, parse_answer, parse_verdict, self_eval_prompt
from tinyllm_ray.teachers.bootstrap import (
    ALL_RIGHT,
    bootstrapped_path,
    cache_key,
    corrupt_solution,
    gold_completion,
    job_questions,
    teacher_pool,
    training_rows,
)
from tinyllm_ray.teachers.evaluate_teacher import cot_rows, read_cot_answer
from tinyllm_ray.teachers.prompt_rows import build_prompt


def _cfg(form: str = "mcq", icl_k: int = 0, **boot) -> JobConfig:
    return validate_config({
        "data": {"name": "arithmetic", "arithmetic": {"train": 40, "validation": 10, "test": 10, "form": form}},
        "prompts": {"icl_k": icl_k, "icl_strategy": "random" if icl_k else "none"},
        "teachers": [{"name": "llama", "model": "tiny:llama?hidden_size=128&num_layers=2",
                      "bootstrap": {"num_problems": 60, **boot}}],
    })


@pytest.mark.parametrize("icl_k", [0, 2])
def test_training_rows_are_exactly_the_served_prompts(icl_k: int) -> None:
    cfg = _cfg(icl_k=icl_k)
    teacher = cfg.teachers[0]
    pool = teacher_pool(cfg, teacher.bootstrap)
    records = [p.to_record() for p in pool]
    rows = training_rows(cfg, teacher, pool)
    assert len(rows) == 3 * len(pool)
    by = {(r.form, r.example_id): r for r in rows}
    for p, rec in zip(pool, records):
        for style in ("cot", "teacher_forcing"):
            served = build_prompt(teacher.model_copy(update={"prompt_style": style}), rec, records, cfg.prompts)
            row = by[(style, rec.id)]
            assert row.prompt == served and row.completion == gold_completion(p)
        se = by[("self_eval", rec.id)]
        judged = se.prompt.split("Proposed reasoning: ")[1].split("\n")[0]
        assert se.prompt == self_eval_prompt(rec, judged, cfg.self_eval.verdicts)
    if icl_k:  # in-context examples are drawn the way generation draws them
        assert any(r.prompt.count("\n\nQ: ") == 1 + icl_k for r in rows if r.form == "cot")


def test_the_pool_is_disjoint_from_the_job_splits() -> None:
    cfg = _cfg()
    pool = teacher_pool(cfg, cfg.teachers[0].bootstrap)
    assert pool and not {p.question for p in pool} & job_questions(cfg)
    assert all("-teacherpool-" in p.id for p in pool)


@pytest.mark.parametrize("form", ["mcq", "free"])
def test_gold_targets_end_with_the_number_and_parse(form: str) -> None:
    cfg = _cfg(form=form)
    for p in teacher_pool(cfg, cfg.teachers[0].bootstrap)[:30]:
        text = gold_completion(p)
        rec = p.to_record()
        assert text.startswith(" ") and "Thus, the answer is " in text
        assert text.endswith(f"Thus, the answer is {p.answer}.")  # the number, never an option letter
        parsed = parse_answer(clean_rationale(text), rec.choices)
        assert parsed is not None and parsed.text == rec.answer
        assert read_cot_answer(text, rec.choices) == rec.answer


def test_corrupted_solutions_are_wrong_and_their_critique_names_the_step() -> None:
    cfg = _cfg()
    rng = random.Random(0)
    kinds = set()
    for p in teacher_pool(cfg, cfg.teachers[0].bootstrap):
        bad = corrupt_solution(p, rng)
        kinds.add(bad.kind)
        assert bad.cot != gold_completion(p).strip()
        parsed = parse_answer(bad.cot, p.choices)
        stated = parsed.text if parsed else None
        steps = [s for s in bad.cot.split(". ") if "=" in s]
        chain_ok = check_solution([s + "." for s in steps], int(p.steps[1].split()[0]), p.answer)
        assert stated != str(p.answer) or not chain_ok
        if bad.kind == "step":
            k = int(bad.critique.split()[1])
            right_eq = p.steps[[i for i, s in enumerate(p.steps) if "=" in s][k - 1]].rstrip(".")
            assert bad.critique.startswith(f"Step {k} is wrong: {right_eq}, not ")
            assert not chain_ok
        else:
            assert bad.critique.startswith("Every step is right, but the answer is")
    assert kinds == {"step", "final"}


def test_self_eval_targets_parse_back_to_verdict_and_critique() -> None:
    cfg = _cfg()
    rows = [r for r in training_rows(cfg, cfg.teachers[0], teacher_pool(cfg, cfg.teachers[0].bootstrap))
            if r.form == "self_eval"]
    verdicts = set()
    for r in rows:
        pv = parse_verdict(r.completion, cfg.self_eval.verdicts)
        assert pv is not None
        verdicts.add(pv.verdict)
        assert (pv.verdict == "correct") == (pv.critique == ALL_RIGHT)
        assert pv.critique == r.completion.strip().rsplit("\n", 1)[0]
    assert verdicts == {"correct", "wrong"}


@pytest.mark.parametrize("override", [
    "teachers.0.bootstrap.max_steps=7", "teachers.0.bootstrap.lr=0.01", "teachers.0.bootstrap.seed=3",
    "teachers.0.bootstrap.num_problems=61", "teachers.0.bootstrap.forms=[cot]",
    "teachers.0.bootstrap.length_window=0", "teachers.0.bootstrap.length_window=8",
    "teachers.0.model=tiny:llama?hidden_size=256&num_layers=2&num_heads=4", "data.seed=5",
    "data.arithmetic.max_steps=4", "data.arithmetic.form=free", "data.arithmetic.validation=11", "data.limit.test=5",
    "prompts.icl_k=2", "prompts.cot_trigger=Think.", "self_eval.verdicts=[good, bad]",
])
def test_cache_key_changes_with_each_weight_changing_field(override: str) -> None:
    from tinyllm_ray.config import apply_overrides

    base = _cfg()
    raw = base.model_dump(mode="json")
    if override.startswith("prompts.icl_k"):
        raw["prompts"]["icl_strategy"] = "random"
    changed = validate_config(apply_overrides(raw, [override]))
    assert cache_key(changed, changed.teachers[0]) != cache_key(base, base.teachers[0])


@pytest.mark.parametrize("override", [
    "teachers.0.replicas=3", "teachers.0.batch_size=8", "teachers.0.num_cpus=2", "teachers.0.name=other",
    "teachers.0.sampling.max_tokens=50", "teachers.0.prompt_style=cot", "runtime.num_cpus=4",
    "train.max_steps=9", "student.max_input_length=300",
])
def test_cache_key_ignores_what_does_not_change_the_weights(override: str, tmp_path) -> None:
    from tinyllm_ray.config import apply_overrides

    base = _cfg()
    changed = validate_config(apply_overrides(base.model_dump(mode="json"), [override]))
    assert cache_key(changed, changed.teachers[0]) == cache_key(base, base.teachers[0])
    assert bootstrapped_path(changed, changed.teachers[0], tmp_path).name.startswith("teacher-llama-")


def test_verdict_words_only_matter_when_self_evaluation_is_trained() -> None:
    a = _cfg(forms=["cot"])
    b = validate_config({**a.model_dump(mode="json"), "self_eval": {"verdicts": ["yes", "no"]}})
    assert cache_key(a, a.teachers[0]) == cache_key(b, b.teachers[0])


@pytest.mark.parametrize("raw, expected", [
    ({"data": {"name": "arithmetic"}, "teachers": [{"name": "t", "model": "/some/folder", "bootstrap": {}}]},
     "set model to tiny:llama or tiny:qwen2"),
    ({"data": {"name": "arithmetic"}, "teachers": [{"name": "t", "model": "tiny:t5", "bootstrap": {}}]},
     "set model to tiny:llama or tiny:qwen2"),
    ({"teachers": [{"name": "t", "model": "tiny:llama", "bootstrap": {}}]}, "set data.name: arithmetic"),
    ({"data": {"name": "arithmetic"}, "teachers": [{"name": "t", "model": "tiny:llama", "bootstrap": {"forms": []}}]},
     "bootstrap.forms needs one or more"),
    ({"data": {"name": "arithmetic"},
      "teachers": [{"name": "t", "model": "tiny:llama", "bootstrap": {"forms": ["cot", "poem"]}}]}, "forms"),
])
def test_bootstrap_config_errors_are_one_line(raw: dict, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as exc:
        validate_config(raw)
    assert len(str(exc.value).splitlines()) == 1


def test_the_shipped_example_has_two_different_bootstrapped_teachers() -> None:
    cfg = load_config("arithmetic_teachers")
    assert cfg.data.name == "arithmetic" and cfg.prompts.icl_k == 0
    assert [t.model.split("?")[0] for t in cfg.teachers] == ["tiny:llama", "tiny:qwen2"]
    assert all(t.bootstrap is not None and t.prompt_style == "teacher_forcing" for t in cfg.teachers)
    assert all(t.sampling.temperature == 0.0 for t in cfg.teachers)
    assert len({cache_key(cfg, t) for t in cfg.teachers}) == 2
    assert cfg.eval.teacher_prompt == "cot"


def test_eval_teacher_cot_rows_use_the_generation_cot_prompt_and_withhold_the_answer() -> None:
    cfg = _cfg()
    teacher = cfg.teachers[0]  # teacher_forcing for generation; evaluation asks the plain CoT
    from tinyllm_ray.data.loader import load_splits

    data = load_splits(cfg.data)
    val, train = data.splits["validation"], data.splits["train"]
    rows = cot_rows(teacher, val, train, cfg.prompts, "validation")
    for row, rec in zip(rows, val):
        assert row["prompt"] == build_prompt(teacher.model_copy(update={"prompt_style": "cot"}), rec, train,
                                             cfg.prompts)
        assert row["answer"] == "" and "\nAnswer: " not in row["prompt"]


def test_manifest_of_a_teacher_without_bootstrap_is_unchanged() -> None:
    from tinyllm_ray.store.manifest import teacher_generation_config

    cfg = _cfg()
    plain = cfg.teachers[0].model_copy(update={"bootstrap": None})
    assert "bootstrap" not in teacher_generation_config(plain)
    assert teacher_generation_config(cfg.teachers[0])["bootstrap"]["num_problems"] == 60


def test_the_training_job_is_plain_prompt_to_completion_on_one_cpu_worker(tmp_path) -> None:
    from tinyllm_ray.teachers.bootstrap import _training_job

    cfg = _cfg(max_steps=30, micro_batch_size=4, lr=0.01)
    job = _training_job(cfg, cfg.teachers[0].bootstrap, "/models/init", tmp_path, 160)
    s, t = job.student, job.train
    assert (s.model, s.arch, s.causal_separator, s.answer_prefix) == ("/models/init", "causal", "", "")
    assert (t.num_workers, t.cpus_per_worker, t.micro_batch_size, t.lr, t.max_steps) == (1, 1, 4, 0.01, 30)
    # in-loop validation (student answer task: meaningless for a teacher) only at step 0 and the end
    assert t.eval_every_steps == t.checkpoint_every_steps == 30 and t.eval_max_new_tokens == 1
    assert job.teachers == [] and job.runtime.storage_path == str(tmp_path)
    assert t.local_shuffle is False  # batches come grouped by length: the loop must not mix them
    random_batches = _cfg(length_window=0)
    assert _training_job(random_batches, random_batches.teachers[0].bootstrap, "/m", tmp_path, 160).train.local_shuffle


def test_length_grouped_batches_are_full_disjoint_seeded_and_nearly_unpadded() -> None:
    from tinyllm_ray.teachers.bootstrap import length_grouped

    lengths = [random.Random(i).randint(100, 300) for i in range(1000)]
    batches = length_grouped(lengths, 32, seed=0, window=64)
    rows = [i for b in batches for i in b]
    assert all(len(b) == 32 for b in batches) and len(rows) == len(set(rows)) == 1000 - 1000 % 32
    assert batches == length_grouped(lengths, 32, 0, 64) and batches != length_grouped(lengths, 32, 1, 64)

    def real(bs: list[list[int]]) -> float:  # real tokens / computed tokens (padded to each batch's longest)
        return sum(lengths[i] for b in bs for i in b) / sum(32 * max(lengths[i] for i in b) for b in bs)

    shuffled = list(range(1000))
    random.Random(0).shuffle(shuffled)
    assert real(batches) > 0.97 and real([shuffled[j:j + 32] for j in range(0, 992, 32)]) < 0.8
    # batches come in random order, not shortest first
    means = [sum(lengths[i] for i in b) / 32 for b in batches]
    assert means != sorted(means) and means != sorted(means, reverse=True)
    assert sorted(length_grouped(lengths[:5], 32, 0, 64)[0]) == [0, 1, 2, 3, 4]  # fewer rows than a batch
    with pytest.raises(ValueError, match="must be >= 1"):
        length_grouped(lengths, 0, seed=0, window=64)


def test_two_entries_of_one_model_train_once(monkeypatch, tmp_path) -> None:
    """Mind's Mirror's derived ``llama_cot`` shares llama's weights: one training, not two racing ones."""
    import tinyllm_ray.runtime
    from tinyllm_ray.teachers import bootstrap as boot

    raw = _cfg().model_dump(mode="json")
    raw["teachers"].append({**raw["teachers"][0], "name": "llama_cot", "prompt_style": "cot",
                            "sampling": {"n": 3, "temperature": 0.7}})
    cfg = validate_config(raw)
    trained: list[str] = []
    monkeypatch.setattr(boot, "bootstrapped_path", lambda c, t: tmp_path / "same-key")
    monkeypatch.setattr(boot, "is_complete", lambda p: False)
    monkeypatch.setattr(boot, "bootstrap_teacher", lambda c, t: trained.append(t.name))
    monkeypatch.setattr(tinyllm_ray.runtime, "init_ray", lambda r: {})
    monkeypatch.setattr(tinyllm_ray.runtime, "import_package_now", lambda: 0)
    out = boot.ensure_bootstrapped(cfg)
    assert trained == ["llama"] and out == {"llama": str(tmp_path / "same-key"), "llama_cot": str(tmp_path / "same-key")}
