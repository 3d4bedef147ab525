"""Opt-in sampler of the driver's memory and the Ray object store (for ``benchmarks/load.py``).

Why inside the driver: the object store's usage is known to the raylets only; a second
process would have to join the job's Ray (a second driver, its own objects) to ask. The
driver is already connected, so with ``TINYLLM_MEMORY_PROBE=<file>`` in its environment
:func:`start_memory_probe` (called by ``runtime.init_ray`` once Ray is up) appends one JSON
line every ``TINYLLM_MEMORY_PROBE_S`` seconds (default 0.5) until the process exits::

    {"t": <unix s>, "rss": <driver RSS bytes>, "store_used": <bytes>, "store_primary": <bytes>,
     "store_objects": <count>, "spilled": <bytes spilled so far>,
     "rss_anon": <bytes>, "rss_file": <bytes>, "rss_shmem": <bytes>,
     "malloc_used": <bytes>, "malloc_free": <bytes>, "arrow": <bytes>, "traced": <bytes>}

The last four tell native from Python growth: glibc's heap in use and free-but-kept
(``mallinfo2``: C/C++ allocations, e.g. Ray's core worker; Python's small objects live in
its own mmapped arenas, not here), Arrow's pool (``pyarrow.total_allocated_bytes``, once
pyarrow is imported) and the traced Python heap (only under ``TINYLLM_TRACEMALLOC``).
``TINYLLM_MALLOC_TRIM_S=<s>`` also calls glibc's ``malloc_trim(0)`` that often: memory it
gives back was free, not leaked (a test of fragmentation, never a product setting).

:func:`mark` adds ``{"t": <unix s>, "phase": <name>}`` (e.g. ``generation``: the split is
loaded and spilled, ``data/split_file.py``), so a reader can tell the load-time peak
from what generation holds. Off (no thread, no import) without the variable: nothing of it
runs in a normal job.

``TINYLLM_TRACEMALLOC=<file>`` (independent of the probe) answers *which Python lines* the
driver's growth comes from: :func:`start_memory_probe` starts ``tracemalloc`` (frames per
allocation: ``TINYLLM_TRACEMALLOC_FRAMES``, default 1); ``TINYLLM_TRACEMALLOC_AFTER_S`` s
(default 30) after :func:`mark` ``("generation")`` a baseline snapshot is taken (past the
first engine start and round's imports), then every ``TINYLLM_TRACEMALLOC_S`` s (default 30)
a snapshot is compared to it and the file is rewritten with the traced heap, the RSS and
the top differences by line (and by traceback with more than one frame). The last rewrite
before the process ends is the run's answer. Growth of the RSS that the traced heap does
not show is native (C++ core worker, Arrow, allocator). It slows the driver: measure
memory with it, never time.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import logging
import os
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

ENV = "TINYLLM_MEMORY_PROBE"
PERIOD_ENV = "TINYLLM_MEMORY_PROBE_S"

TRIM_ENV = "TINYLLM_MALLOC_TRIM_S"
TRACE_ENV = "TINYLLM_TRACEMALLOC"
TRACE_PERIOD_ENV = "TINYLLM_TRACEMALLOC_S"
TRACE_AFTER_ENV = "TINYLLM_TRACEMALLOC_AFTER_S"
TRACE_FRAMES_ENV = "TINYLLM_TRACEMALLOC_FRAMES"
#: Top differences written per grouping.
TRACE_TOP = 40

_started = False
_trace_started = False
_generation = threading.Event()  # set by mark("generation"): the tracemalloc baseline waits for it


def object_store_usage() -> dict[str, int]:
    """The cluster's object store usage as the raylets report it (the ``ray memory --stats-only`` figures)."""
    from ray._private.internal_api import get_memory_info_reply, get_state_from_address

    stats = get_memory_info_reply(get_state_from_address(None), timeout_seconds=10.0).store_stats
    return {"store_used": int(stats.object_store_bytes_used), "store_primary": int(stats.object_store_bytes_primary_copy),
            "store_objects": int(stats.num_local_objects), "spilled": int(stats.spilled_bytes_total)}


def _rss() -> int:
    with open("/proc/self/statm") as f:  # Linux; resident pages are the second field
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]


@functools.cache
def glibc() -> Any:
    """This process's glibc, loaded once (``OSError`` off glibc): the probe's ``mallinfo2`` and
    ``malloc_trim``, and ``runtime.limit_malloc_arenas``' ``mallopt``."""
    libc = ctypes.CDLL("libc.so.6")
    with contextlib.suppress(AttributeError):  # glibc < 2.33: no mallinfo2 (heap_usage skips it)
        libc.mallinfo2.restype = _MallInfo2
    return libc


def heap_usage() -> dict[str, int]:
    """glibc heap in use / free (``mallinfo2``), Arrow's pool, and the traced Python heap (when tracing)."""
    import sys
    import tracemalloc

    out: dict[str, int] = {}
    try:
        mi = glibc().mallinfo2()
        out.update(malloc_used=int(mi.uordblks + mi.hblkhd), malloc_free=int(mi.fordblks))
    except (OSError, AttributeError):  # not glibc (or older than 2.33): the RSS is still worth a line
        pass
    if "pyarrow" in sys.modules:
        out["arrow"] = int(sys.modules["pyarrow"].total_allocated_bytes())
    if tracemalloc.is_tracing():
        out["traced"] = tracemalloc.get_traced_memory()[0]
    return out


def rss_parts() -> dict[str, int]:
    """The RSS split as the kernel counts it: anonymous (heaps), file-backed (libraries) and shared
    memory (the pages of Ray's object store the driver touched: RSS, but no memory of its own)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile", "RssShmem"):
                out["rss_" + key[3:].lower()] = int(value.split()[0]) * 1024
    return out


def _sample_forever(path: str, period: float) -> None:
    trim = float(os.environ.get(TRIM_ENV, "0") or 0)
    last_trim = time.time()
    while True:
        if trim > 0 and time.time() - last_trim >= trim:
            glibc().malloc_trim(0)
            last_trim = time.time()
        row: dict[str, Any] = {"t": time.time(), "rss": _rss(), **rss_parts(), **heap_usage()}
        try:
            row.update(object_store_usage())
        except Exception as exc:  # noqa: BLE001 - Ray shutting down: the RSS is still worth a line
            row["error"] = type(exc).__name__
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")
        time.sleep(period)


def trace_report(baseline: Any, snapshot: Any, *, elapsed: float, frames: int, top: int = TRACE_TOP,
                 baseline_rss: int | None = None) -> str:
    """What ``snapshot`` holds more than ``baseline`` (two ``tracemalloc.Snapshot``), by line, as text."""
    import tracemalloc

    keep = (tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"), tracemalloc.Filter(False, __file__))
    base, snap = baseline.filter_traces(keep), snapshot.filter_traces(keep)
    total_now = sum(s.size for s in snap.statistics("filename"))
    total_base = sum(s.size for s in base.statistics("filename"))
    head = (f"after baseline: {elapsed:.0f} s; traced heap {total_base / 1e6:.2f} MB -> {total_now / 1e6:.2f} MB "
            f"({(total_now - total_base) / 1e6:+.2f} MB); RSS "
            + (f"{baseline_rss / 1e6:.1f} MB -> " if baseline_rss else "") + f"{_rss() / 1e6:.1f} MB")
    lines = [head, "",
             f"top {top} by line (size diff, count diff):"]
    lines += [f"  {d.size_diff / 1e3:+10.1f} KB {d.count_diff:+8d}  {d.traceback[0].filename}:{d.traceback[0].lineno}"
              for d in snap.compare_to(base, "lineno")[:top]]
    if frames > 1:
        lines += ["", f"top {top // 4} by traceback:"]
        for d in snap.compare_to(base, "traceback")[:top // 4]:
            lines.append(f"  {d.size_diff / 1e3:+10.1f} KB {d.count_diff:+8d}")
            lines += [f"      {f.filename}:{f.lineno}" for f in d.traceback]
    return "\n".join(lines) + "\n"


def _trace_forever(path: str, period: float, after: float, frames: int) -> None:
    import tracemalloc

    _generation.wait()
    time.sleep(after)
    t0, rss0 = time.time(), _rss()
    baseline = tracemalloc.take_snapshot()
    while True:
        time.sleep(period)
        text = trace_report(baseline, tracemalloc.take_snapshot(), elapsed=time.time() - t0, frames=frames,
                            baseline_rss=rss0)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)  # a reader (or the process's end) never sees half a report


def start_tracemalloc() -> bool:
    """Start ``tracemalloc`` and its reporting thread if ``TINYLLM_TRACEMALLOC`` names a file (once per process)."""
    global _trace_started
    path = os.environ.get(TRACE_ENV)
    if not path or _trace_started:
        return False
    import tracemalloc

    _trace_started = True
    frames = int(os.environ.get(TRACE_FRAMES_ENV, "1"))
    tracemalloc.start(frames)
    args = (path, float(os.environ.get(TRACE_PERIOD_ENV, "30")), float(os.environ.get(TRACE_AFTER_ENV, "30")), frames)
    threading.Thread(target=_trace_forever, args=args, name="tracemalloc-report", daemon=True).start()
    log.info("tracemalloc: %d frame(s); differences to the baseline every %.0f s -> %s", frames, args[1], path)
    return True


def mark(phase: str) -> None:
    """Record that ``phase`` starts now (a no-op unless ``TINYLLM_MEMORY_PROBE`` names a file)."""
    if phase == "generation":
        _generation.set()
    path = os.environ.get(ENV)
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"t": time.time(), "phase": phase, "rss": _rss()}) + "\n")


def start_memory_probe() -> bool:
    """Start the sampling thread if ``TINYLLM_MEMORY_PROBE`` names a file (once per process), and
    :func:`start_tracemalloc` if ``TINYLLM_TRACEMALLOC`` does."""
    global _started
    start_tracemalloc()
    path = os.environ.get(ENV)
    if not path or _started:
        return False
    _started = True
    period = float(os.environ.get(PERIOD_ENV, "0.5"))
    threading.Thread(target=_sample_forever, args=(path, period), name="memory-probe", daemon=True).start()
    log.info("memory probe: driver RSS and object store every %.1f s -> %s", period, path)
    return True
