"""Every security promise of the project, one test each, in one place (issue 11 item 6).

docs/security.md lists the same promises and what Ray itself leaves open. Pure: no Ray
is started (the local Ray's bind address is read from what ``init_ray`` passes).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from tinyllm_ray.config import (
    JobConfig,
    dump_config,
    list_shipped_configs,
    load_config,
    public_dump,
    validate_config,
)
from tinyllm_ray.errors import ConfigError
from tinyllm_ray.paths import RunPaths

REPO = Path(__file__).resolve().parents[2]


def test_local_ray_binds_its_dashboard_to_loopback(monkeypatch):
    import ray

    from tinyllm_ray import runtime
    from tinyllm_ray.config import RuntimeConfig

    seen: dict = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(runtime, "other_ray_instances", list)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.update(kw))
    monkeypatch.setattr(ray, "cluster_resources", dict)
    runtime.init_ray(RuntimeConfig())
    assert seen["dashboard_host"] == "127.0.0.1" and seen["address"] == "local"
    assert RuntimeConfig().dashboard_host == "127.0.0.1"


def test_trust_remote_code_is_off_in_every_default_and_shipped_config():
    assert JobConfig().student.trust_remote_code is False
    for name in list_shipped_configs():
        cfg = load_config(name)
        assert not cfg.student.trust_remote_code and not any(t.trust_remote_code for t in cfg.teachers), name


@pytest.mark.parametrize("name", ["../escape", "a/b", "/abs", "..", "run name", "", "a" * 65, "x\\y"])
def test_no_run_or_teacher_name_can_write_outside_the_run_folder(name, tmp_path):
    with pytest.raises(ConfigError):
        validate_config({"runtime": {"run_name": name, "storage_path": str(tmp_path)}})
    with pytest.raises(ConfigError):
        validate_config({"teachers": [{"name": name, "model": "tiny:llama"}]})


def test_every_path_of_a_run_is_inside_its_run_folder(tmp_path):
    cfg = validate_config({"runtime": {"run_name": "ok.name-1", "storage_path": str(tmp_path)},
                           "teachers": [{"name": "t.1-x", "model": "tiny:llama"}]})
    p = RunPaths.of(cfg)
    run = Path(p.run).resolve()
    assert run.parent == tmp_path.resolve()
    for path in (p.store, p.train, p.student, p.tune, p.report_json, p.report_md, p.report_png, p.trial_student("t1")):
        assert Path(path).resolve().is_relative_to(run), path


def test_configs_are_loaded_with_safe_yaml(tmp_path):
    bad = tmp_path / "evil.yaml"
    bad.write_text("data: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))


def test_secrets_never_reach_written_configs_or_printed_ones(tmp_path, monkeypatch, capsys):
    cfg = load_config("demo_cpu", ["runtime.env_vars.HF_TOKEN=hf_secret_123", "runtime.env_vars.OPENAI_API_KEY=sk-9",
                                   "runtime.env_vars.MODE=plain"])
    out = tmp_path / "best_config.yaml"
    dump_config(cfg, out)  # what `tinyllm-ray tune` writes as best_config.yaml
    text = out.read_text()
    assert "hf_secret_123" not in text and "sk-9" not in text and "plain" in text
    assert public_dump(cfg)["runtime"]["env_vars"] == {"HF_TOKEN": "<redacted>", "OPENAI_API_KEY": "<redacted>",
                                                      "MODE": "plain"}
    # reading it back takes the secret from the environment, or says what to do
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="export HF_TOKEN"):
        load_config(str(out))
    monkeypatch.setenv("HF_TOKEN", "hf_secret_123")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-9")
    assert load_config(str(out)).runtime.env_vars["HF_TOKEN"] == "hf_secret_123"
    # `tinyllm-ray config` prints the redacted form
    from tinyllm_ray import cli

    cli.main(["config", "--config", "demo_cpu", "runtime.env_vars.HF_TOKEN=hf_secret_123"])
    printed = capsys.readouterr().out
    assert "hf_secret_123" not in printed and yaml.safe_load(printed)["runtime"]["env_vars"]["HF_TOKEN"] == "<redacted>"


def test_secrets_never_reach_logs_of_a_config_error(caplog):
    with caplog.at_level(logging.DEBUG), pytest.raises(ConfigError) as err:
        load_config("demo_cpu", ["runtime.env_vars.HF_TOKEN=hf_secret_123", "train.lr=-1"])
    assert "hf_secret_123" not in str(err.value)
    assert all("hf_secret_123" not in r.getMessage() for r in caplog.records)


def test_cluster_manifests_use_token_auth():
    docs = list(yaml.safe_load_all((REPO / "cluster/kuberay/raycluster.yaml").read_text()))
    raycluster = next(d for d in docs if d and d.get("kind") == "RayCluster")
    assert raycluster["spec"]["authOptions"]["mode"] == "token"
    assert "RAY_AUTH_MODE=token" in (REPO / "cluster/aws-gpu.yaml").read_text()
    assert 'RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"' in (REPO / "cluster/submit.sh").read_text()


def test_api_keys_live_only_in_the_environment(monkeypatch):
    from tinyllm_ray.teachers.api import api_spec

    teacher = {"name": "gpt", "model": "gpt-3.5-turbo-instruct",
               "api": {"base_url": "https://api.example/v1", "api_key_env": "OPENAI_API_KEY"}}
    with pytest.raises(ConfigError) as err:  # the key where its variable's name belongs
        validate_config({"teachers": [{**teacher, "api": {**teacher["api"], "api_key_env": "sk-live-abc123"}}]})
    assert "sk-live-abc123" not in str(err.value)
    cfg = validate_config({"teachers": [teacher]})
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="export OPENAI_API_KEY="):
        api_spec(cfg.teachers[0])
    monkeypatch.setenv("OPENAI_API_KEY", "sk-live-abc123")
    spec = api_spec(cfg.teachers[0])
    assert spec.key.value() == "sk-live-abc123" and "sk-live-abc123" not in repr(spec)
    assert "sk-live-abc123" not in yaml.safe_dump(public_dump(cfg))
