"""Config: every shipped YAML validates; overrides apply; every error names its field."""

from __future__ import annotations

import pytest
import yaml

from tinyllm_ray.config import (
    ConfigError,
    JobConfig,
    apply_overrides,
    dump_config,
    list_shipped_configs,
    load_config,
    shipped_config_path,
)

SHIPPED = list_shipped_configs()


def test_the_three_recipes_ship() -> None:
    assert {"demo_cpu", "tinyllm_commonsense", "minds_mirror_svamp"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_loads_and_round_trips(name: str, tmp_path) -> None:
    cfg = load_config(name)
    assert isinstance(cfg, JobConfig)
    out = tmp_path / f"{name}.yaml"
    dump_config(cfg, out)
    assert load_config(out) == cfg


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_show_their_launch_command(name: str) -> None:
    header = shipped_config_path(name).read_text().splitlines()[:8]
    assert any("tinyllm-ray" in line for line in header), "config header must show how to launch it"


def test_recipes_match_the_papers() -> None:
    tl = load_config("tinyllm_commonsense")
    assert len(tl.teachers) == 2 and tl.loss.form == "additive"
    assert tl.train.zero_stage == 2 and tl.train.use_gpu and tl.train.resolved_backend == "nccl"
    assert "flan-t5-large" in tl.student.model
    mm = load_config("minds_mirror_svamp")
    assert len(mm.teachers) == 1 and mm.teachers[0].sampling.n == 5
    assert mm.self_eval.enabled and mm.self_eval.evals_per_cot == 5
    assert mm.loss.form == "convex" and mm.loss.convex_alpha == 0.5 and mm.loss.schedule == "two_stage"
    demo = load_config("demo_cpu")
    assert not demo.train.use_gpu and demo.train.resolved_backend == "gloo"
    assert {t.model.split(":")[1] for t in demo.teachers} == {"llama", "qwen2"}


def test_dotted_overrides_reach_dicts_and_lists() -> None:
    cfg = load_config("demo_cpu", ["loss.alpha.llama=2", "teachers.1.replicas=3", "train.max_steps=5",
                                   "teachers.0.sampling.stop=[a, b]"])
    assert cfg.alpha_for("llama") == 2.0 and cfg.alpha_for("qwen") == 0.5
    assert cfg.teachers[1].replicas == 3 and cfg.train.max_steps == 5
    assert cfg.teachers[0].sampling.stop == ["a", "b"]


def test_alpha_defaults_for_unlisted_teachers() -> None:
    cfg = load_config("demo_cpu", ["loss.alpha={}", "loss.default_alpha=0.1"])
    assert cfg.alpha_for("qwen") == 0.1


def test_apply_overrides_does_not_mutate_input() -> None:
    raw = {"train": {"lr": 1}}
    out = apply_overrides(raw, ["train.lr=2"])
    assert raw == {"train": {"lr": 1}} and out == {"train": {"lr": 2}}


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("teachers.0.replicas=0", "teachers.0.replicas: Input should be greater than or equal to 1 (got 0)"),
        ("train.zero_stag=3", "train.zero_stag: unknown key; allowed keys here:"),
        ("train.precision=fp8", "train.precision: Input should be 'fp32', 'bf16' or 'fp16' (got 'fp8')"),
        ("teachers.0.sampling.top_p=2", "teachers.0.sampling.top_p:"),
        ("loss.alpha.bogus=1", "loss.alpha names unknown teachers ['bogus']"),
        ("teachers.1.name=llama", "teachers: names must be unique"),
        ("teachers.0.sampling.n=4", "teachers.0.sampling: n=4 distinct CoTs need sampling"),
        ("train.backend=nccl", "train: train.backend 'nccl' needs train.use_gpu: true"),
        ("data.name=obqa", "data: dataset 'obqa' needs data.path"),
        ("student.rationale_prefix=explain:", "student.rationale_prefix: student.rationale_prefix must contain"),
        ("teachers.0.name=9bad name", "teachers.0.name:"),
        ("runtime.run_name=../escape", "runtime.run_name:"),
        ("loss.alpha.llama=-1", "loss.alpha: alpha for teacher 'llama' must be >= 0"),
        ("teachers.5.replicas=2", "teachers.5 is not an index of a list of 2 items"),
        ("train.lr", "must look like field.path=value"),
    ],
)
def test_errors_name_the_field_and_what_is_allowed(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config("demo_cpu", [override])
    assert expected in str(exc.value)


def test_unknown_top_level_section_lists_sections(tmp_path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump({"trian": {"lr": 1}}))
    with pytest.raises(ConfigError, match=r"trian: unknown key; allowed keys here: data, eval, filter"):
        load_config(p)


def test_missing_file_lists_shipped_configs() -> None:
    with pytest.raises(ConfigError, match="not found .*demo_cpu"):
        load_config("no_such_config.yaml")


def test_yaml_is_never_evaluated(tmp_path) -> None:
    p = tmp_path / "evil.yaml"
    p.write_text("runtime: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


def test_store_uri_is_derived_from_storage_path() -> None:
    cfg = load_config("demo_cpu", ["runtime.storage_path=s3://bucket/x/", "runtime.run_name=r1"])
    assert cfg.runtime.resolved_store_uri == "s3://bucket/x/r1/rationales"
    cfg = load_config("demo_cpu", ["runtime.store_uri=/data/store"])
    assert cfg.runtime.resolved_store_uri == "/data/store"


def test_trust_remote_code_is_off_by_default() -> None:
    for name in SHIPPED:
        cfg = load_config(name)
        assert not cfg.student.trust_remote_code
        assert not any(t.trust_remote_code for t in cfg.teachers)
