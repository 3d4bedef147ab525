"""Everything under cluster/ (and docs/cluster.md) launches a real command securely.

Why: these files are never exercised by CI against a real cloud, so a renamed config, a
typo in a subcommand, a dropped token-auth switch or a GPU group without GPUs would only
show up on a paid cluster. Each check here is cheap and reads the files as the tools do
(``yaml.safe_load_all``; Ray's own launcher schema; the real CLI parser; a stub ``ray``
executable for submit.sh).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tinyllm_ray.config import load_config, shipped_config_path

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
DOCS = REPO / "docs" / "cluster.md"
LAUNCHER = CLUSTER / "aws-gpu.yaml"
RAYCLUSTER = CLUSTER / "kuberay" / "raycluster.yaml"
RAYJOB = CLUSTER / "kuberay" / "rayjob.yaml"
SUBMIT = CLUSTER / "submit.sh"
RUNTIME_ENV = CLUSTER / "runtime_env.yaml"

SUBCOMMANDS = {"run", "generate", "train", "tune", "eval", "demo"}
# `tinyllm-ray <sub> ... --config <name> [overrides]` as written in files and docs.
COMMAND_RE = re.compile(
    r"tinyllm-ray[ \t]+([\w$\"{}-]+)[ \t]+--config[ \t]+([\w$\"{}./-]+)((?:[ \t]+[\w.]+=[^\s`]+)*)"
)
GPU_INSTANCE_FAMILIES = ("g4dn.", "g5.", "g6.", "g6e.", "p3.", "p4d.", "p4de.", "p5.", "p5e.")
MIN_RAY_FOR_TOKEN_AUTH = (2, 52)


def _yaml_files() -> list[Path]:
    return sorted(p for p in CLUSTER.rglob("*") if p.suffix in (".yaml", ".yml"))


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _ray_docs(path: Path, kind: str) -> list[dict[str, Any]]:
    return [d for d in _docs(path) if d.get("kind") == kind]


def _walk(node: Any, path: str = ""):
    """Yield (dotted path, key, value) for every mapping entry in a YAML tree."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield f"{path}.{k}" if path else str(k), k, v
            yield from _walk(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}.{i}")


def _check_command(text: str, where: str) -> tuple[str, str, list[str]]:
    """Validate one `tinyllm-ray <sub> --config <name> [overrides]` occurrence."""
    m = COMMAND_RE.search(text)
    assert m, f"{where}: no `tinyllm-ray <subcommand> --config <name>` in {text!r}"
    sub, name, overrides = m.group(1), m.group(2), m.group(3).split()
    assert sub in SUBCOMMANDS, f"{where}: subcommand {sub!r} not in {sorted(SUBCOMMANDS)}"
    assert shipped_config_path(name) is not None, f"{where}: --config {name!r} is not in tinyllm_ray/configs"
    # The overrides must validate exactly as the CLI would validate them.
    load_config(name, overrides)
    return sub, name, overrides


# --------------------------------------------------------------------------- every YAML


def test_cluster_dir_has_the_expected_files():
    for p in (LAUNCHER, RAYCLUSTER, RAYJOB, SUBMIT, RUNTIME_ENV):
        assert p.is_file(), f"missing {p.relative_to(REPO)}"
    assert os.access(SUBMIT, os.X_OK), "cluster/submit.sh must be executable"


@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: str(p.relative_to(CLUSTER)))
def test_every_yaml_parses_and_never_trusts_remote_code(path: Path):
    docs = _docs(path)
    assert docs, f"{path} is empty"
    for doc in docs:
        for dotted, key, value in _walk(doc):
            if str(key) == "trust_remote_code":
                assert value is not True, f"{path}: {dotted} enables trust_remote_code"
    text = path.read_text()
    assert not re.search(r"trust[_-]remote[_-]code\s*[:=]\s*true", text, re.IGNORECASE), (
        f"{path} enables trust_remote_code"
    )
    assert "--trust-remote-code" not in text, f"{path} passes --trust-remote-code"


def test_every_tinyllm_command_in_cluster_files_and_docs_is_valid():
    found = 0
    sources = [p for p in CLUSTER.rglob("*") if p.is_file()] + ([DOCS] if DOCS.is_file() else [])
    for path in sources:
        for m in COMMAND_RE.finditer(path.read_text()):
            if "$" in m.group(0):  # submit.sh's templated line: covered by the stub test
                continue
            _check_command(m.group(0), str(path.relative_to(REPO)))
            found += 1
    assert found >= 3, "expected launch commands in the launcher header, RayJob and docs"


# --------------------------------------------------------------------------- KubeRay


def _ray_version(spec: dict[str, Any]) -> tuple[int, int]:
    major, minor = (int(x) for x in str(spec["rayVersion"]).split(".")[:2])
    return major, minor


def _cluster_specs() -> list[tuple[str, dict[str, Any]]]:
    specs = [(f"RayCluster {d['metadata']['name']}", d["spec"]) for d in _ray_docs(RAYCLUSTER, "RayCluster")]
    specs += [
        (f"RayJob {d['metadata']['name']}", d["spec"]["rayClusterSpec"]) for d in _ray_docs(RAYJOB, "RayJob")
    ]
    assert len(specs) == 2, specs
    return specs


def test_kuberay_resources_use_the_v1_api():
    for path in (RAYCLUSTER, RAYJOB):
        for doc in _docs(path):
            if doc["kind"].startswith("Ray"):
                assert doc["apiVersion"] == "ray.io/v1", f"{path}: {doc['kind']} uses {doc['apiVersion']}"


def test_rayjob_entrypoint_runs_a_shipped_config():
    (job,) = _ray_docs(RAYJOB, "RayJob")
    entry = job["spec"]["entrypoint"]
    assert entry.startswith("tinyllm-ray run --config tinyllm_commonsense"), entry
    sub, name, overrides = _check_command(entry, "rayjob entrypoint")
    # ... and the real CLI parser accepts it (subcommand, flags, overrides).
    from tinyllm_ray.cli import build_parser

    args = build_parser().parse_args(shlex.split(entry)[1:])
    assert (args.command, args.config, args.overrides) == (sub, name, overrides)
    # Outputs must outlive the job's cluster: storage on the shared volume every pod mounts.
    cfg = load_config(name, overrides)
    assert cfg.runtime.storage_path.startswith("/mnt/shared"), cfg.runtime.storage_path
    assert job["spec"]["shutdownAfterJobFinishes"] is True


@pytest.mark.parametrize("idx", [0, 1], ids=["raycluster", "rayjob"])
def test_kuberay_token_auth_and_private_dashboard(idx: int):
    where, spec = _cluster_specs()[idx]
    assert spec.get("authOptions", {}).get("mode") == "token", f"{where}: spec.authOptions.mode must be token"
    assert _ray_version(spec) >= MIN_RAY_FOR_TOKEN_AUTH, f"{where}: authOptions needs rayVersion >= 2.52"
    head = spec["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP", f"{where}: head service must stay ClusterIP"
    assert not head.get("enableIngress", False), f"{where}: no Ingress for the dashboard"
    for _, key, value in _walk(spec):
        if key == "privileged":
            assert value is not True, f"{where}: privileged container"


@pytest.mark.parametrize("idx", [0, 1], ids=["raycluster", "rayjob"])
def test_kuberay_gpu_worker_groups_request_gpus(idx: int):
    where, spec = _cluster_specs()[idx]
    groups = spec["workerGroupSpecs"]
    gpu_groups = [g for g in groups if "gpu" in g["groupName"]]
    assert gpu_groups, f"{where}: no GPU worker group"
    for g in gpu_groups:
        (container,) = g["template"]["spec"]["containers"]
        limits = container["resources"]["limits"]
        requests = container["resources"].get("requests", {})
        assert int(limits.get("nvidia.com/gpu", 0)) > 0, f"{where}/{g['groupName']}: no nvidia.com/gpu limit"
        # Kubernetes extended resources: a request, if given, must equal the limit.
        if "nvidia.com/gpu" in requests:
            assert requests["nvidia.com/gpu"] == limits["nvidia.com/gpu"]
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"], g["groupName"]
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head["resources"].get("limits", {}), f"{where}: the head needs no GPU"


def test_kuberay_images_match_the_dockerfile_and_ray_version():
    images = {
        v for path in (RAYCLUSTER, RAYJOB) for doc in _docs(path) for _, k, v in _walk(doc) if k == "image"
    }
    assert len(images) == 1, f"one image for every pod, got {images}"
    dockerfile = (CLUSTER / "kuberay" / "Dockerfile").read_text()
    base = re.search(r"^FROM\s+(\S+)", dockerfile, re.MULTILINE).group(1)
    for where, spec in _cluster_specs():
        assert f"ray:{spec['rayVersion']}" in base, f"{where}: rayVersion {spec['rayVersion']} vs {base}"
    assert f"-t {images.pop()}" in dockerfile, "Dockerfile header must show how to build the manifests' image"


# --------------------------------------------------------------------------- cluster launcher


def _launcher() -> dict[str, Any]:
    (doc,) = _docs(LAUNCHER)
    return doc


def test_launcher_config_passes_rays_own_schema():
    pytest.importorskip("jsonschema")
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(_launcher()))


def test_launcher_gpu_node_types_have_gpus():
    cfg = _launcher()
    workers = {k: v for k, v in cfg["available_node_types"].items() if k != cfg["head_node_type"]}
    assert {"gpu_teacher", "gpu_trainer"} <= set(workers)
    for name, node in workers.items():
        itype = node["node_config"]["InstanceType"]
        gpus = node.get("resources", {}).get("GPU")
        assert itype.startswith(GPU_INSTANCE_FAMILIES) or (gpus or 0) > 0, f"{name}: {itype} has no GPU"
    head_type = cfg["available_node_types"][cfg["head_node_type"]]["node_config"]["InstanceType"]
    assert not head_type.startswith(GPU_INSTANCE_FAMILIES), "the head should be a CPU instance"


def test_launcher_installs_the_gpu_package():
    setup = " ".join(_launcher()["setup_commands"])
    assert re.search(r"pip install [^;]*tinyllm-ray\[gpu\]", setup), setup


def test_launcher_enables_token_auth_on_every_node_and_keeps_dashboard_local():
    cfg = _launcher()
    starts = [c for key in ("head_start_ray_commands", "worker_start_ray_commands") for c in cfg[key]]
    ray_starts = [c for c in starts if "ray start" in c]
    assert len(ray_starts) == 2
    for cmd in ray_starts:
        before = cmd.split("ray start")[0]
        assert re.search(r"\bRAY_AUTH_MODE=token\b", before), f"RAY_AUTH_MODE=token not set before: {cmd}"
    # The shared secret reaches every node at Ray's default token path.
    assert any(remote.endswith("/.ray/auth_token") for remote in cfg["file_mounts"]), cfg["file_mounts"]
    (head_start,) = [c for c in cfg["head_start_ray_commands"] if "ray start" in c]
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "tinyllm-ray run --config" in LAUNCHER.read_text(), "header must show the launch command"


# --------------------------------------------------------------------------- runtime env, submit.sh


def test_runtime_env_ships_code_but_not_secrets_or_venvs():
    (env,) = _docs(RUNTIME_ENV)
    assert env["working_dir"] == "."
    excludes = env["excludes"]
    for must in (".git/", ".venv/", "runs/"):
        assert must in excludes, f"runtime_env excludes must contain {must}"
    assert any("auth_token" in e for e in excludes)
    assert all(isinstance(v, str) for v in env.get("env_vars", {}).values()), "env var values must be strings"
    assert not any("AUTH_TOKEN" in k for k in env.get("env_vars", {})), "never ship the token in env_vars"


def _run_submit(tmp_path: Path, args: list[str], env_extra: dict[str, str]) -> tuple[int, str, dict | None]:
    """Run submit.sh with a stub `ray` on PATH that records its argv and auth env."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    record = tmp_path / "ray_argv.json"
    stub = bin_dir / "ray"
    stub.write_text(
        "#!/usr/bin/env python3\n"
        "import json, os, sys\n"
        f"json.dump({{'argv': sys.argv[1:], 'cwd': os.getcwd(), "
        f"'auth_mode': os.environ.get('RAY_AUTH_MODE')}}, open({str(record)!r}, 'w'))\n"
    )
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "HOME": str(home), **env_extra}
    proc = subprocess.run(
        ["bash", str(SUBMIT), *args], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    return proc.returncode, proc.stderr, json.loads(record.read_text()) if record.exists() else None


def test_submit_sh_builds_the_documented_command(tmp_path: Path):
    rc, err, rec = _run_submit(tmp_path, [], {"RAY_AUTH_TOKEN": "x" * 32})
    assert rc == 0, err
    argv = rec["argv"]
    assert argv[:2] == ["job", "submit"]
    sep = argv.index("--")
    flags = argv[2:sep]
    assert flags == [
        "--address",
        "http://127.0.0.1:8265",
        "--working-dir",
        ".",
        "--runtime-env",
        "cluster/runtime_env.yaml",
    ]
    assert Path(rec["cwd"]).resolve() == REPO, (
        "runs from the repo root so working_dir and the runtime env resolve"
    )
    assert rec["auth_mode"] == "token", "submit.sh must default to token auth"
    assert argv[sep + 1 :] == ["tinyllm-ray", "run", "--config", "tinyllm_commonsense"]
    _check_command(" ".join(argv[sep + 1 :]), "submit.sh default")


def test_submit_sh_passes_subcommand_config_and_overrides(tmp_path: Path):
    rc, err, rec = _run_submit(
        tmp_path,
        ["demo_cpu", "train.max_steps=20"],
        {
            "RAY_AUTH_TOKEN": "x" * 32,
            "TINYLLM_CMD": "train",
            "RAY_ADDRESS": "http://127.0.0.1:18265",
            "NO_WAIT": "1",
        },
    )
    assert rc == 0, err
    argv = rec["argv"]
    assert argv[argv.index("--address") + 1] == "http://127.0.0.1:18265"
    assert "--no-wait" in argv
    tail = argv[argv.index("--") + 1 :]
    assert tail == ["tinyllm-ray", "train", "--config", "demo_cpu", "train.max_steps=20"]
    _check_command(" ".join(tail), "submit.sh with overrides")


def test_submit_sh_refuses_without_token_or_with_bad_subcommand(tmp_path: Path):
    rc, err, rec = _run_submit(tmp_path, [], {})
    assert rc == 2 and "no token found" in err and rec is None
    rc, err, rec = _run_submit(tmp_path, [], {"RAY_AUTH_TOKEN": "x" * 32, "TINYLLM_CMD": "serve"})
    assert rc == 2 and "TINYLLM_CMD" in err and rec is None
