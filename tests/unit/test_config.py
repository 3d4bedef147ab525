"""Config: every shipped YAML validates; overrides apply; every error names its field."""

from __future__ import annotations

import pytest
import yaml

from tinyllm_ray.config import (
    ConfigError,
    JobConfig,
    PromptConfig,
    SamplingConfig,
    SelfEvalConfig,
    apply_overrides,
    dump_config,
    list_shipped_configs,
    load_config,
    shipped_config_path,
)
from tinyllm_ray.prompts import DEFAULT_COT_TRIGGER, DEFAULT_STOPS, DEFAULT_VERDICTS

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
    # the numbers each recipe's header attributes to the authors' code
    tl = load_config("tinyllm_commonsense")
    assert len(tl.teachers) == 2 and tl.loss.form == "additive"
    assert tl.train.zero_stage == 2 and tl.train.use_gpu and tl.train.resolved_backend == "nccl"
    assert "flan-t5-large" in tl.student.model and tl.student.arch == "seq2seq"
    t = tl.train
    assert t.lr == 5e-5 and t.num_workers * t.micro_batch_size * t.grad_accum_steps == 64
    assert t.max_steps == 10_000 and t.eval_every_steps == 250
    assert (t.scheduler, t.warmup_steps, t.min_lr_ratio, t.weight_decay, t.gradient_clipping) == (
        "linear", 0, 0.0, 0.0, 1.0)
    assert all(tl.alpha_for(x.name) == 1.0 for x in tl.teachers)
    assert tl.student.task_prefix_side == "encoder" and tl.student.answer_prefix == "predict: "
    assert tl.student.max_target_length == 256
    mm = load_config("minds_mirror_svamp")
    assert len(mm.teachers) == 1 and mm.teachers[0].sampling.n == 5
    assert mm.self_eval.enabled and mm.self_eval.evals_per_cot == 5
    assert mm.loss.form == "convex" and mm.loss.convex_alpha == 0.5 and mm.loss.schedule == "two_stage"
    assert mm.student.model == "google/t5-v1_1-base" and mm.student.max_input_length == 1024
    assert mm.student.max_target_length == 256 and mm.filter.label_source == "teacher"
    t = mm.train
    assert t.lr == 5e-5 and t.num_workers * t.micro_batch_size * t.grad_accum_steps == 16
    assert t.stage_epochs == [50, 80] and t.max_steps is None
    assert (t.scheduler, t.warmup_steps, t.min_lr_ratio, t.weight_decay, t.gradient_clipping) == (
        "linear", 0, 0.0, 0.0, 1.0)
    assert mm.data.name == "svamp" and mm.data.resplit is not None
    assert mm.data.resplit.sizes == {"train": 800, "test": 200} and mm.data.resplit.seed == 0
    assert mm.data.validation_fraction == 0.1 and mm.data.validation_size is None
    header = shipped_config_path("minds_mirror_svamp").read_text()
    assert "format_number" in header and "numbers, not equations" in header  # numeric targets, said why
    demo = load_config("demo_cpu")
    assert not demo.train.use_gpu and demo.train.resolved_backend == "gloo"
    assert {t.model.split(":")[1] for t in demo.teachers} == {"llama", "qwen2"}


def _header_smoke_overrides(name: str) -> list[str]:
    """The overrides of the CPU smoke run shown in a config's header (``S="..."``)."""
    lines = [ln.lstrip("#").strip() for ln in shipped_config_path(name).read_text().splitlines()
             if ln.startswith("#")]
    start = next(i for i, ln in enumerate(lines) if ln.startswith('S="'))
    text = []
    for ln in lines[start:]:
        text.append(ln.removeprefix('S="'))
        if ln.endswith('"'):
            break
    return " ".join(text).rstrip('"').split()


def test_minds_mirror_header_smoke_commands_validate() -> None:
    # the header's generate/train smoke commands (run by hand on CPU, see the commit) pass validation
    header = shipped_config_path("minds_mirror_svamp").read_text()
    assert "tinyllm-ray generate --config minds_mirror_svamp $S" in header
    assert "tinyllm-ray train --config minds_mirror_svamp $S" in header
    cfg = load_config("minds_mirror_svamp", _header_smoke_overrides("minds_mirror_svamp"))
    assert cfg.data.name == "arithmetic" and cfg.teachers[0].model == "tiny:qwen2"
    assert not cfg.train.use_gpu and cfg.train.resolved_backend == "gloo" and cfg.loss.schedule == "two_stage"


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
        # Library-defined (OmegaConf's message for an index past the end of a list).
        ("teachers.5.replicas=2", "override 'teachers.5.replicas=2': teachers[5]: list index out of range"),
        ("train.lr", "must look like field.path=value"),
    ],
)
def test_errors_name_the_field_and_what_is_allowed(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config("demo_cpu", [override])
    assert expected in str(exc.value)
    assert len(str(exc.value).splitlines()) == 1, "one problem, one line"


def test_unknown_top_level_section_lists_sections(tmp_path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump({"trian": {"lr": 1}}))
    with pytest.raises(ConfigError, match=r"trian: unknown key; allowed keys here: compare, data, eval, filter"):
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


# --------------------------------------------------------------------------- overrides (OmegaConf)


def test_overrides_index_lists_and_read_flow_values() -> None:
    cfg = load_config("demo_cpu", ["teachers.0.replicas=2", "tune.alpha_values=[0.1,1,3]",
                                   "data.limit={train: 8}"])
    assert cfg.teachers[0].replicas == 2 and cfg.teachers[1].replicas == 1
    assert cfg.tune.alpha_values == [0.1, 1.0, 3.0]
    assert cfg.data.limit == {"train": 8}


def test_a_prefix_ending_in_a_colon_stays_a_string() -> None:
    cfg = load_config("demo_cpu", ["student.answer_prefix=explain:", "student.self_eval_verdict_prefix="])
    assert cfg.student.answer_prefix == "explain:"
    assert cfg.student.self_eval_verdict_prefix == ""
    assert load_config("demo_cpu", ["runtime.run_name=r2024-01-01", "runtime.storage_path=2024-01-01"]
                       ).runtime.storage_path == "2024-01-01"


def test_overrides_create_missing_sections() -> None:
    cfg = load_config("demo_cpu", ["data.name=generic", "data.path=/x", "data.columns.question=q"])
    assert cfg.data.columns is not None and cfg.data.columns.question == "q"


def test_interpolations_are_never_resolved(tmp_path, monkeypatch) -> None:
    """``${...}`` is OmegaConf syntax, but a config value is data: it stays the literal text."""
    monkeypatch.setenv("HOME", "/should/not/appear")
    p = tmp_path / "interp.yaml"
    p.write_text("runtime:\n  storage_path: ${oc.env:HOME}\n  run_name: r\n"
                 "  env_vars: {A: '${runtime.run_name}'}\n")
    cfg = load_config(p, ["runtime.store_uri=${oc.env:HOME}/store", "student.answer_prefix=${oc.env:HOME}"])
    assert cfg.runtime.storage_path == "${oc.env:HOME}"
    assert cfg.runtime.env_vars == {"A": "${runtime.run_name}"}
    assert cfg.runtime.store_uri == "${oc.env:HOME}/store"
    assert cfg.student.answer_prefix == "${oc.env:HOME}"


def test_unbalanced_interpolation_is_a_config_error(tmp_path) -> None:
    """Library-defined: OmegaConf cannot hold a string with an unbalanced ``${``."""
    p = tmp_path / "bad.yaml"
    p.write_text("runtime: {storage_path: 'cost ${'}\n")
    with pytest.raises(ConfigError, match=r"runtime.storage_path: .*must be balanced.*never evaluated"):
        load_config(p)


def test_a_yaml_date_in_a_file_is_a_config_error_naming_the_key(tmp_path) -> None:
    p = tmp_path / "date.yaml"
    p.write_text("runtime: {storage_path: 2024-01-01}\n")
    with pytest.raises(ConfigError, match=r"runtime.storage_path: .*date") as exc:
        load_config(p)
    assert "balanced" not in str(exc.value)


def test_bad_override_value_is_one_line() -> None:
    with pytest.raises(ConfigError, match="not valid YAML") as exc:
        load_config("demo_cpu", ["train.lr=[1, 2"])
    assert len(str(exc.value).splitlines()) == 1


@pytest.mark.parametrize("override", ["=3", "...=3"])
def test_empty_override_path(override: str) -> None:
    with pytest.raises(ConfigError, match="empty field path"):
        load_config("demo_cpu", [override])


# --------------------------------------------------------------------------- config paths


def test_bare_names_resolve_to_shipped_configs() -> None:
    assert load_config("demo_cpu") == load_config("demo_cpu.yaml")
    entry = shipped_config_path("demo_cpu.yaml")
    assert entry is not None and "tinyllm-ray" in entry.read_text()


def test_missing_path_with_a_directory_is_an_error_even_for_a_shipped_name(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert shipped_config_path("./mine/demo_cpu.yaml") is None
    for path in ("./mine/demo_cpu.yaml", "mine/demo_cpu.yaml", str(tmp_path / "demo_cpu.yaml")):
        with pytest.raises(ConfigError, match="not found") as exc:
            load_config(path)
        assert repr(path) in str(exc.value)
        assert len(str(exc.value).splitlines()) == 1


def test_a_local_file_wins_over_the_shipped_config_of_the_same_name(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo_cpu.yaml").write_text("runtime: {run_name: local}\n")
    assert load_config("demo_cpu.yaml").runtime.run_name == "local"
    assert load_config("demo_cpu").runtime.run_name == "demo"  # no suffix: only the shipped one


def test_top_level_must_be_a_mapping(tmp_path) -> None:
    p = tmp_path / "list.yaml"
    p.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(p, ["train.lr=1"])


# --------------------------------------------------------------------------- single sources


def test_prompt_defaults_come_from_the_prompts_package() -> None:
    assert SamplingConfig().stop == list(DEFAULT_STOPS)
    assert PromptConfig().cot_trigger == DEFAULT_COT_TRIGGER
    assert SelfEvalConfig().verdicts == list(DEFAULT_VERDICTS)


def test_importing_the_config_imports_no_heavy_module() -> None:
    """Workers import the config to receive their section; merging overrides is the driver's job."""
    import subprocess
    import sys

    code = ("import sys, tinyllm_ray.config; "
            "print(sorted(m for m in ('omegaconf', 'ray', 'torch', 'vllm', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", list_shipped_configs())
def test_shipped_config_headers_only_show_commands_the_config_can_run(name):
    """A header's `tinyllm-ray run` must pass run's pre-flight; each command names its config."""
    import re

    from tinyllm_ray.config import shipped_config_path
    from tinyllm_ray.jobs.checks import check_runnable

    text = shipped_config_path(name).read_text()
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    commands = re.findall(r"tinyllm-ray (\w+) --config (\S+)", header)
    assert commands, f"{name}: the header shows no tinyllm-ray command"
    cfg = load_config(name)
    for command, config in commands:
        assert config == name
        if command == "run":
            check_runnable(cfg)


def test_the_old_single_self_eval_prefix_names_its_two_replacements() -> None:
    with pytest.raises(ConfigError, match="self_eval_verdict_prefix and student.self_eval_critique_prefix"):
        load_config("demo_cpu", ["student.self_eval_prefix=evaluate:"])
