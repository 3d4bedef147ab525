"""`ray job submit` against a real two-node local cluster (both nodes on 127.0.0.1).

The head carries a ``trainer_node`` resource, the second node a ``teacher_node``
resource; the job's config pins teachers and training workers to them. The test checks:
the job succeeds; the streaming run began training before generation ended; teacher
engines ran on the teacher node and Ray Train workers on the trainer node; the job's
logs and artifacts are retrievable; and the project's custom metrics (per teacher, per
task) were exported by Ray's metrics endpoint while the job ran (no Prometheus needed).
Token authentication is on, as in the cluster docs.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tinyllm_ray.config import TinyModelConfig
from tinyllm_ray.models.tiny import tiny_model_path

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
JOB_TIMEOUT_S = 900


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _ray(env: dict, *args: str, timeout: float = 180, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([str(BIN / "ray"), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if check and out.returncode != 0:
        raise AssertionError(f"ray {' '.join(args[:3])} failed ({out.returncode}):\n{out.stdout[-3000:]}\n"
                             f"{out.stderr[-3000:]}")
    return out


def _wait_jobs_api(env: dict, dash: str) -> None:
    """The Jobs API answers only once the head's dashboard is up (after the node is)."""
    code = f"from ray.job_submission import JobSubmissionClient as C\nC({dash!r}).list_jobs()\nprint('ok')"
    deadline = time.time() + 120
    while time.time() < deadline:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=False)
        if out.stdout.strip().endswith("ok"):
            return
        time.sleep(2)
    raise AssertionError(f"Jobs API at {dash} not ready: {out.stderr[-2000:]}")


@pytest.fixture(scope="module")
def cluster(tiny_cache):
    # Models are built before the job so the job's time is the pipeline's, and the
    # job finds them through TINYLLM_CACHE.
    for fam in ("llama", "qwen2", "t5"):
        tiny_model_path(TinyModelConfig(family=fam), tiny_cache)
    gcs, dash, metrics_head, metrics_worker, *agent_ports = _free_ports(10)
    # Two nodes on one host: every per-node port must differ (Ray's defaults would collide).
    node_ports = [["--dashboard-agent-listen-port", str(agent_ports[3 * i]),
                   "--dashboard-agent-grpc-port", str(agent_ports[3 * i + 1]),
                   "--runtime-env-agent-port", str(agent_ports[3 * i + 2])] for i in range(2)]
    temp = tempfile.mkdtemp(prefix="rjs", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
                "PATH": f"{BIN}:{env.get('PATH', '')}", "TINYLLM_CACHE": str(tiny_cache)})
    common = ["--node-ip-address", "127.0.0.1", "--temp-dir", temp, "--disable-usage-stats", "--block"]
    nodes: list[subprocess.Popen] = []

    def start(*args: str) -> None:
        # `--block` keeps each node under a process group of our own, so teardown stops
        # exactly this cluster (`ray stop` would stop every Ray on the machine, including
        # the test session's).
        nodes.append(subprocess.Popen([str(BIN / "ray"), "start", *args, *common], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True))

    def wait_nodes(n: int) -> None:
        deadline = time.time() + 120
        while time.time() < deadline:
            st = _ray(env, "status", "--address", f"127.0.0.1:{gcs}", check=False, timeout=60)
            if (st.stdout + st.stderr).count(" node_") >= n:
                return
            time.sleep(2)
        raise RuntimeError(f"cluster did not reach {n} nodes: {st.stdout}{st.stderr}")

    try:
        start("--head", "--port", str(gcs), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
              "--num-cpus", "4", "--resources", json.dumps({"trainer_node": 4}),
              "--metrics-export-port", str(metrics_head), *node_ports[0])
        wait_nodes(1)
        start("--address", f"127.0.0.1:{gcs}", "--num-cpus", "4", "--resources", json.dumps({"teacher_node": 4}),
              "--metrics-export-port", str(metrics_worker), *node_ports[1])
        wait_nodes(2)
        _wait_jobs_api(env, f"http://127.0.0.1:{dash}")
        yield {"env": env, "dashboard": f"http://127.0.0.1:{dash}", "metrics_ports": (metrics_head, metrics_worker),
               "temp": temp}
    finally:
        for proc in reversed(nodes):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=30)
                    break
                except subprocess.TimeoutExpired:
                    continue
        shutil.rmtree(temp, ignore_errors=True)


def job_config(storage: Path | str) -> dict:
    teacher = {"dtype": "float32", "max_model_len": 1024, "kv_cache_space_gib": 0.25, "num_cpus": 1,
               "batch_size": 8, "resources": {"teacher_node": 1},
               "sampling": {"temperature": 0.0, "max_tokens": 48, "seed": 0}}
    return {
        "data": {"name": "synthetic", "synthetic": {"train": 320, "validation": 8, "test": 8}},
        "teachers": [{"name": "llama", "model": "tiny:llama", **teacher},
                     {"name": "qwen", "model": "tiny:qwen2", **teacher}],
        "filter": {"drop_unparsable": False},
        "student": {"model": "tiny", "tiny": {"family": "t5"}, "max_input_length": 192,
                    "max_target_length": 48},
        "train": {"micro_batch_size": 8, "lr": 1e-3, "scheduler": "constant", "max_steps": 12,
                  "eval_every_steps": 6, "checkpoint_every_steps": 6, "eval_max_new_tokens": 6,
                  "worker_resources": {"trainer_node": 1}},
        "eval": {"split": "test", "max_new_tokens": 6},
        "runtime": {"storage_path": str(storage), "run_name": "jobrun", "store_shard_size": 8},
    }


def _job_status(env: dict, dash: str, sub_id: str) -> str:
    """The job's status through the Jobs SDK (token from ``env``), e.g. ``SUCCEEDED``."""
    code = ("from ray.job_submission import JobSubmissionClient as C\n"
            f"print(C({dash!r}).get_job_status({sub_id!r}).value)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=False)
    return (out.stdout.strip().splitlines() or [out.stderr[-300:]])[-1]


def _scrape(ports) -> str:
    text = ""
    for port in ports:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text += r.read().decode()
        except OSError:
            pass
    return text


def test_ray_job_submit_two_nodes(cluster, tmp_path):
    env, dash = cluster["env"], cluster["dashboard"]
    # A relative storage_path, as in the README's command: it must not resolve into Ray's
    # temporary copy of the working dir, but into $TINYLLM_HOME (persistent), said in the log.
    storage = tmp_path / "home" / "runs-job"
    cfg_path = tmp_path / "job.yaml"
    cfg_path.write_text(yaml.safe_dump(job_config("runs-job")))
    runtime_env = {"excludes": [".venv", ".git", "runs", ".cache", "*.egg-info"],
                   "env_vars": {"TINYLLM_CACHE": env["TINYLLM_CACHE"], "TOKENIZERS_PARALLELISM": "false",
                                "TINYLLM_HOME": str(tmp_path / "home")}}
    sub_id = f"tinyllm-{secrets.token_hex(4)}"
    for attempt in range(30):  # the head's job agent comes up a little after the Jobs API
        sub = _ray(env, "job", "submit", "--address", dash, "--working-dir", str(REPO), "--submission-id", sub_id,
                   "--runtime-env-json", json.dumps(runtime_env), "--no-wait", "--",
                   "tinyllm-ray", "run", "--config", str(cfg_path), check=False)
        if sub.returncode == 0 or "No available agent" not in sub.stderr:
            break
        time.sleep(3)
    assert sub.returncode == 0, sub.stderr[-3000:]

    seen: set[str] = set()
    wanted = {"ray_tinyllm_rationales_generated_total", "ray_tinyllm_rationales_kept_total",
              "ray_tinyllm_teacher_tokens_per_second", "ray_tinyllm_train_loss",
              "ray_tinyllm_train_samples_per_second", "ray_tinyllm_val_accuracy"}
    deadline, status = time.time() + JOB_TIMEOUT_S, ""
    while time.time() < deadline:
        for line in _scrape(cluster["metrics_ports"]).splitlines():
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if name in wanted and ('teacher="' in line or 'trial="' in line):
                seen.add(name)
        status = _job_status(env, dash, sub_id)
        if any(s in status for s in ("SUCCEEDED", "FAILED", "STOPPED")):
            break
        time.sleep(3)
    logs = _ray(env, "job", "logs", "--address", dash, sub_id, check=False).stdout
    assert "SUCCEEDED" in status, f"job did not succeed: {status}\n--- logs (tail) ---\n{logs[-6000:]}"

    # artifacts and logs: the job log is the console (summary, paths, a progress record every few
    # seconds); Ray's, vLLM's, DeepSpeed's and the workers' output is in the run's log file
    report = json.loads((storage / "jobrun" / "report.json").read_text())
    assert "evaluation: validation" in logs and "before generation ended (overlap)" in logs
    print(f"job log: {len(logs.splitlines())} lines, {len(logs)} characters")
    log_file = storage / "jobrun" / "logs" / "console.log"
    assert f"log: {log_file}" in logs and "TeacherEngine" not in logs and "RayTrainWorker" not in logs
    kept = log_file.read_text()
    assert "TeacherEngine" in kept and "RayTrainWorker" in kept
    assert "Reporting training result" not in kept  # stopped in the Train workers, not only hidden
    assert len(logs.splitlines()) <= 150, f"{len(logs.splitlines())} console lines:\n{logs[-4000:]}"
    assert "temporary copy of its working dir" in logs
    assert f"report: {storage / 'jobrun' / 'report.md'}" in logs  # the job log's last lines say where
    assert (storage / "jobrun" / "report.md").read_text().startswith("# tinyllm-ray run")
    assert report["teachers"]["llama"]["outputs"] == 320 and report["teachers"]["qwen"]["outputs"] == 320
    assert report["training"]["final_step"] == 12
    overlap = report["overlap"]
    assert overlap["train_started_before_generation_ended"], overlap
    assert overlap["shards_committed_after_first_step"] >= 1

    # placement: teacher engines on the teacher node, Ray Train workers on the trainer node
    probe = subprocess.run(
        [sys.executable, "-c", (
            "import json; from ray.util.state import list_actors, list_nodes\n"
            f"a = list_actors(address='{dash}', detail=True, limit=10000, raise_on_missing_output=False)\n"
            f"n = list_nodes(address='{dash}', detail=True)\n"
            "print(json.dumps({'actors': [{'cls': x.class_name, 'repr': x.repr_name or '', 'node': x.node_id}"
            " for x in a], 'nodes': {x.node_id: sorted(x.resources_total) for x in n}}))")],
        env=env, capture_output=True, text=True, timeout=120, check=True)
    state = json.loads(probe.stdout.strip().splitlines()[-1])
    node_of = {r: nid for nid, res in state["nodes"].items() for r in ("teacher_node", "trainer_node") if r in res}
    teachers = [x for x in state["actors"] if "TeacherEngine" in x["repr"]]
    workers = [x for x in state["actors"] if x["cls"] == "RayTrainWorker"]
    assert teachers and workers, state["actors"]
    assert {x["node"] for x in teachers} == {node_of["teacher_node"]}
    assert {x["node"] for x in workers} == {node_of["trainer_node"]}

    # dashboard metrics, tagged by teacher / trial, read from Ray's export endpoint
    assert seen == wanted, f"missing metrics: {sorted(wanted - seen)}"
