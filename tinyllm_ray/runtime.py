"""Start or join Ray the same way from every entry point.

Why one function: local runs must bind the dashboard and metrics ports to 127.0.0.1
(security default), carry the job's env vars to every worker, and be idempotent so the
CLI, tests and benchmarks share one Ray instance instead of paying start-up twice.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from tinyllm_ray.config import RuntimeConfig
from tinyllm_ray.errors import SecondRayError

log = logging.getLogger(__name__)

# Worker processes inherit these; DS_ACCELERATOR makes DeepSpeed pick its CPU backend
# when no GPU is visible (set per worker by the trainer too).
_BASE_ENV = {"TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore::DeprecationWarning"}
#: Driver settings every process of a local Ray gets too (set by the console: no bars in log files).
_PASS_THROUGH_ENV = ("RAY_DATA_DISABLE_PROGRESS_BARS",)


def import_package_now() -> int:
    """Import every module of tinyllm_ray, and the transformers classes the driver uses, now.

    Why, before joining a cluster: under ``ray job submit --working-dir`` the driver's
    code *and its working directory* are Ray's copy of the working dir, and Ray may delete
    (and re-extract) that copy while the job runs: seen right after ``ray.init`` and again
    once the job's workers are gone, with two nodes on one host sharing the copy. Then a
    lazily imported module of ours fails (``FileNotFoundError``, ``No module named
    tinyllm_ray.student.loop``), and so do imports that read the working directory:
    ``transformers`` itself (``utils/auto_docstring.py``) and the first use of its Auto
    classes (which imports ``torch._dynamo``, whose config calls ``os.getcwd()``). Imported
    here, while the directory exists, they are never imported again; every path we write
    is absolute (``tinyllm_ray.paths``), so nothing of ours reads the working directory.
    Costs about the torch + transformers import the driver pays anyway (vLLM and
    DeepSpeed load only in actors and workers). Returns the number of package modules.
    """
    import importlib
    import pkgutil

    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer  # noqa: F401

    import tinyllm_ray

    names = [m.name for m in pkgutil.walk_packages(tinyllm_ray.__path__, "tinyllm_ray.")]
    for name in names:
        importlib.import_module(name)
    return len(names)


#: glibc malloc arenas of the driver (``MALLOC_ARENA_MAX`` in its environment wins).
DRIVER_MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # mallopt parameter (glibc malloc.h)


def limit_malloc_arenas(arenas: int = DRIVER_MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas of this process before Ray starts its threads (True if set).

    Why: glibc gives threads arenas of their own (up to 8 per core); in the driver, Ray's
    core worker, gRPC and Ray Data threads and one thread per teacher each fragment theirs,
    and the memory they free but glibc keeps grew the driver's RSS with the prompt count
    (``benchmarks/results/load_diag.md``, 30k prompts: glibc's free-but-kept heap 15 MB and
    +4.3 MB during generation; with 2 arenas 4.5 MB and +0.5 MB, the peak 12 MB lower;
    ``load.md``: the 20k -> 100k slope 0.142 -> 0.093 KB/prompt, the rest bounded caches).
    The driver allocates little per thread (no slower in those runs).
    Called before the arena count passes glibc's first check (8), it holds for every later
    thread (in the driver only: Ray's workers are other processes); a no-op
    off glibc and when ``MALLOC_ARENA_MAX`` is set (the user's choice).
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    from tinyllm_ray.memory_probe import glibc

    try:
        return bool(glibc().mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):  # not glibc
        return False


def other_ray_instances() -> list[str]:
    """GCS addresses of Ray instances already running on this machine (from its process list)."""
    from ray._private.services import find_gcs_addresses

    return sorted(find_gcs_addresses())


def check_no_other_ray(found: list[str] | None = None) -> None:
    """Refuse to start a second local Ray beside a running one, at once and in one line.

    Why: with two Ray instances on one machine, Ray Train's placement-group cleanup fails
    and a local run hung before its first step without a word. Joining the running one
    (``runtime.ray_address: auto``) or stopping it are the two ways out; both are named.
    """
    found = other_ray_instances() if found is None else found
    if found:
        raise SecondRayError(
            f"another Ray is already running on this machine (GCS at {', '.join(found)}); a second local Ray "
            "makes Ray Train hang before its first step: join it with runtime.ray_address=auto (or "
            "RAY_ADDRESS=auto), or stop it (`ray stop` stops every Ray on this machine), or set "
            "runtime.allow_second_ray=true"
        )


def init_ray(runtime: RuntimeConfig, **extra: Any) -> dict[str, Any]:
    """Connect to ``runtime.ray_address`` or start a local Ray bound to loopback.

    Returns ``ray.cluster_resources()`` so callers can log what they got. Idempotent:
    an already-initialised Ray is reused as is.
    """
    import ray

    if ray.is_initialized():
        return ray.cluster_resources()
    limit_malloc_arenas()  # before ray.init starts its threads: the driver's RSS must not grow with the prompts
    kwargs: dict[str, Any] = {"log_to_driver": True, "ignore_reinit_error": True}
    address = runtime.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        import_package_now()
        kwargs["address"] = address
        if runtime.env_vars:
            kwargs["runtime_env"] = {"env_vars": dict(runtime.env_vars)}
            # Inside `ray job submit` the job already has a runtime_env; merge, don't refuse.
            os.environ.setdefault("RAY_OVERRIDE_JOB_RUNTIME_ENV", "1")
        log.info("joining Ray cluster at %s", address)
    else:
        if not runtime.allow_second_ray:
            check_no_other_ray()
        kwargs["address"] = "local"
        if runtime.num_cpus is not None:
            kwargs["num_cpus"] = runtime.num_cpus
        if runtime.num_gpus is not None:
            kwargs["num_gpus"] = runtime.num_gpus
        kwargs["dashboard_host"] = runtime.dashboard_host
        kwargs["include_dashboard"] = extra.pop("include_dashboard", None)
        if runtime.metrics_export_port is not None:
            kwargs["_metrics_export_port"] = runtime.metrics_export_port
        log.info("starting a local Ray (dashboard on %s)", runtime.dashboard_host)
    kwargs.update(extra)
    from tinyllm_ray.observability import progress

    progress("ray", address=kwargs["address"])  # the CLI's console moves Ray's output to the run's log now
    if kwargs["address"] == "local":  # after the console's say: it may turn Ray Data's bars off everywhere
        passed = {k: os.environ[k] for k in _PASS_THROUGH_ENV if k in os.environ}
        kwargs["runtime_env"] = {"env_vars": {**_BASE_ENV, **passed, **runtime.env_vars}}
    ray.init(**kwargs)
    from tinyllm_ray.memory_probe import start_memory_probe

    start_memory_probe()  # TINYLLM_MEMORY_PROBE=<file> only (benchmarks/load.py)
    return ray.cluster_resources()
