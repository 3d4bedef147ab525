"""`tinyllm-ray compare` settings: which settings exist per mode, teacher count and student
kind; every transformed config validates; the one store holds what every setting reads."""

from __future__ import annotations

import pytest

from tinyllm_ray.compare.settings import (
    base_teachers,
    mirror_entry,
    settings_for,
    step_budget,
    store_config,
    student_kind,
)
from tinyllm_ray.config import validate_config
from tinyllm_ray.errors import ConfigError


def teacher(name: str, **kw) -> dict:
    return {"name": name, "model": f"tiny:{name}", **kw}


def cfg_with(n_teachers: int, **extra) -> object:
    raw = {"teachers": [teacher(f"t{i}") for i in range(n_teachers)],
           "loss": {"alpha": {f"t{i}": 0.5 for i in range(n_teachers)}},
           "train": {"max_steps": 20}}
    for k, v in extra.items():
        raw.setdefault(k, {}).update(v) if isinstance(v, dict) else raw.__setitem__(k, v)
    return validate_config(raw)


def names(cfg, mode, kind="seq2seq"):
    return [s.name for s in settings_for(cfg, mode, kind)]


def test_default_mode_is_the_main_settings() -> None:
    got = names(cfg_with(2), "default")
    assert got == ["label_only", "dss_t0", "dss_t1", "tinyllm", "mm_cots_selfeval"]
    assert {"mm_1cot", "mm_cots"} <= set(names(cfg_with(2), "full"))  # Mind's Mirror's ablations: --full


def test_quick_mode_covers_every_code_path_with_few_trials() -> None:
    assert names(cfg_with(2), "quick") == ["label_only", "tinyllm", "mm_cots_selfeval"]


def test_leave_one_out_only_with_three_or_more_teachers() -> None:
    assert not [n for n in names(cfg_with(2), "full") if n.startswith("loo_")]
    assert [n for n in names(cfg_with(3), "full") if n.startswith("loo_")] == ["loo_t0", "loo_t1", "loo_t2"]
    assert not [n for n in names(cfg_with(3), "default") if n.startswith("loo_")]


def test_prefix_setting_only_for_seq2seq_students() -> None:
    assert "tinyllm_prefix_encoder" in names(cfg_with(2), "full", "seq2seq")
    assert not [n for n in names(cfg_with(2), "full", "causal") if "prefix" in n]
    enc = cfg_with(2, student={"task_prefix_side": "encoder"})
    assert "tinyllm_prefix_decoder" in names(enc, "full", "seq2seq")


def test_no_teachers_gives_label_only() -> None:
    cfg = validate_config({"train": {"max_steps": 5}})
    assert names(cfg, "full") == ["label_only"]
    assert store_config(cfg, settings_for(cfg, "full")).teachers == []


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("mode", ["quick", "default", "full"])
def test_every_setting_config_validates_and_reads_only_the_store(n: int, mode: str) -> None:
    cfg = cfg_with(n)
    settings = settings_for(cfg, mode, "seq2seq")
    store = store_config(cfg, settings)
    stored = {t.name for t in store.teachers}
    for s in settings:
        c = s.apply(store, 20)
        assert {t.name for t in c.teachers} == set(s.teachers) <= stored
        assert set(c.loss.alpha) <= set(s.teachers)
        assert c.self_eval.enabled == s.self_eval
        # the same step budget for every setting: two stages share it
        assert c.train.max_steps * (2 if c.loss.schedule == "two_stage" else 1) == 20


def test_single_teacher_uses_tinyllms_loss_and_mirror_settings_the_convex_one() -> None:
    cfg = cfg_with(3)
    store = store_config(cfg, settings_for(cfg, "full"))
    forms = {s.name: s.apply(store, 4).loss.form for s in settings_for(cfg, "full")}
    assert {forms[n] for n in ("label_only", "dss_t0", "tinyllm", "loo_t0", "tinyllm_prefix_encoder")} == {"additive"}
    assert {forms[n] for n in ("mm_1cot", "mm_cots", "mm_cots_selfeval")} == {"convex"}


def test_label_only_has_no_teachers_and_no_weights() -> None:
    cfg = cfg_with(2)
    s = settings_for(cfg, "default")[0]
    c = s.apply(store_config(cfg, [s]), 10)
    assert s.name == "label_only" and c.teachers == [] and c.loss.alpha == {} and not c.self_eval.enabled


def test_mirror_entry_is_derived_once_and_alone_self_evaluates() -> None:
    cfg = cfg_with(2)
    m = mirror_entry(cfg)
    assert m is not None and m.name == "t0_cot" and m.prompt_style == "cot"
    assert m.sampling.n == cfg.compare.mirror_cots and m.sampling.temperature > 0
    store = store_config(cfg, settings_for(cfg, "default"))
    by = {t.name: t for t in store.teachers}
    assert set(by) == {"t0", "t1", "t0_cot"}
    assert store.self_evaluates("t0_cot") and not store.self_evaluates("t0") and not store.self_evaluates("t1")
    steps = {s.name: s.apply(store, 10) for s in settings_for(cfg, "full")}
    assert steps["mm_1cot"].student.max_cots_per_teacher == 1
    assert steps["mm_cots"].student.max_cots_per_teacher is None and not steps["mm_cots"].self_eval.enabled
    assert steps["mm_cots_selfeval"].self_eval.enabled and steps["mm_cots_selfeval"].loss.schedule == "two_stage"


def test_a_configured_multi_cot_teacher_is_used_as_is_and_left_out_of_tinyllm() -> None:
    cot = teacher("cot", prompt_style="cot", sampling={"n": 4, "temperature": 0.8})
    cfg = validate_config({"teachers": [teacher("a"), teacher("b"), cot], "train": {"max_steps": 4}})
    assert mirror_entry(cfg).name == "cot"
    assert [t.name for t in base_teachers(cfg)] == ["a", "b"]
    tiny = next(s for s in settings_for(cfg, "default") if s.name == "tinyllm")
    assert tiny.teachers == ("a", "b")


def test_configured_teachers_are_kept_as_they_are_so_an_existing_store_still_matches() -> None:
    from tinyllm_ray.store.manifest import teacher_generation_config

    for cfg in (cfg_with(2), cfg_with(2, self_eval={"enabled": True})):
        store = store_config(cfg, settings_for(cfg, "default"))
        for t in cfg.teachers:
            assert teacher_generation_config(store.teacher(t.name)) == teacher_generation_config(t)
        assert store.self_eval == cfg.self_eval
        assert store.self_evaluates("t0_cot")
    mm = validate_config({"teachers": [teacher("q", prompt_style="cot", sampling={"n": 5, "temperature": 0.7})],
                          "self_eval": {"enabled": True}, "train": {"max_steps": 3}})
    store = store_config(mm, settings_for(mm, "default"))
    assert teacher_generation_config(store.teacher("q")) == teacher_generation_config(mm.teacher("q"))


def test_compare_settings_list_and_unknown_names() -> None:
    cfg = cfg_with(2, compare={"settings": ["tinyllm", "label_only"]})
    assert names(cfg, "full") == ["tinyllm", "label_only"]
    with pytest.raises(ConfigError, match="unknown setting"):
        settings_for(cfg_with(2, compare={"settings": ["nope"]}), "default")


def test_step_budget_by_kind_and_required() -> None:
    cfg = cfg_with(1, compare={"max_steps": {"causal": 300}})
    assert step_budget(cfg, "causal", "default") == 300
    assert step_budget(cfg, "seq2seq", "default") == 20
    assert step_budget(cfg, "seq2seq", "quick") == cfg.compare.quick_max_steps
    with pytest.raises(ConfigError, match="same step budget"):
        step_budget(validate_config({}), "seq2seq", "default")


def test_student_kind_from_config() -> None:
    assert student_kind(validate_config({})) == "seq2seq"
    assert student_kind(validate_config({"student": {"tiny": {"family": "llama"}}})) == "causal"
    assert student_kind(validate_config({"student": {"model": "/nonexistent", "arch": "causal"}})) == "causal"
    assert student_kind(validate_config({"student": {"model": "/nonexistent"}})) is None


def test_mirror_teacher_must_exist() -> None:
    with pytest.raises(ConfigError, match="mirror_teacher"):
        cfg_with(1, compare={"mirror_teacher": "zzz"})


def test_shipped_configs_give_valid_settings() -> None:
    from tinyllm_ray.config import list_shipped_configs, load_config

    for name in list_shipped_configs():
        cfg = load_config(name, ["compare.max_steps.seq2seq=8", "compare.max_steps.causal=8"])
        kind = student_kind(cfg) or "seq2seq"
        settings = settings_for(cfg, "full", kind)
        store = store_config(cfg, settings)
        for s in settings:
            c = s.apply(store, step_budget(cfg, kind, "full"))
            assert c.train.stage_epochs is None and c.train.max_steps in (4, 8)


def test_single_teacher_settings_train_without_cross_teacher_agreement():
    """A one-teacher setting has no one to agree with: its trial turns filter.cross_teacher off."""
    from tinyllm_ray.compare.settings import settings_for, store_config
    from tinyllm_ray.config import load_config

    cfg = load_config("demo", overrides=["filter.cross_teacher.mode=filter"])
    settings = settings_for(cfg, "default")
    store_cfg = store_config(cfg, settings)
    modes = {s.name: s.apply(store_cfg, 10).filter.cross_teacher.mode for s in settings}
    assert modes["tinyllm"] == "filter"
    assert {m for n, m in modes.items() if n.startswith("dss_")} == {"off"}
