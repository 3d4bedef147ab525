"""Opt-in sampler of the driver's memory and the Ray object store (for ``benchmarks/load.py``).

Why inside the driver: the object store's usage is known to the raylets only; a second
process would have to join the job's Ray (a second driver, its own objects) to ask. The
driver is already connected, so with ``TINYLLM_MEMORY_PROBE=<file>`` in its environment
:func:`start_memory_probe` (called by ``runtime.init_ray`` once Ray is up) appends one JSON
line every ``TINYLLM_MEMORY_PROBE_S`` seconds (default 0.5) until the process exits::

    {"t": <unix s>, "rss": <driver RSS bytes>, "store_used": <bytes>, "store_primary": <bytes>,
     "store_objects": <count>, "spilled": <bytes spilled so far>}

:func:`mark` adds ``{"t": <unix s>, "phase": <name>}`` (e.g. ``generation``: the split is
loaded and spilled, ``teachers/split_source.py``), so a reader can tell the load-time peak
from what generation holds. Off (no thread, no import) without the variable: nothing of it
runs in a normal job.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

ENV = "TINYLLM_MEMORY_PROBE"
PERIOD_ENV = "TINYLLM_MEMORY_PROBE_S"

_started = False


def object_store_usage() -> dict[str, int]:
    """The cluster's object store usage as the raylets report it (the ``ray memory --stats-only`` figures)."""
    from ray._private.internal_api import get_memory_info_reply, get_state_from_address

    stats = get_memory_info_reply(get_state_from_address(None), timeout_seconds=10.0).store_stats
    return {"store_used": int(stats.object_store_bytes_used), "store_primary": int(stats.object_store_bytes_primary_copy),
            "store_objects": int(stats.num_local_objects), "spilled": int(stats.spilled_bytes_total)}


def _rss() -> int:
    with open("/proc/self/statm") as f:  # Linux; resident pages are the second field
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _sample_forever(path: str, period: float) -> None:
    while True:
        row: dict[str, Any] = {"t": time.time(), "rss": _rss()}
        try:
            row.update(object_store_usage())
        except Exception as exc:  # noqa: BLE001 - Ray shutting down: the RSS is still worth a line
            row["error"] = type(exc).__name__
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")
        time.sleep(period)


def mark(phase: str) -> None:
    """Record that ``phase`` starts now (a no-op unless ``TINYLLM_MEMORY_PROBE`` names a file)."""
    path = os.environ.get(ENV)
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"t": time.time(), "phase": phase, "rss": _rss()}) + "\n")


def start_memory_probe() -> bool:
    """Start the sampling thread if ``TINYLLM_MEMORY_PROBE`` names a file (once per process)."""
    global _started
    path = os.environ.get(ENV)
    if not path or _started:
        return False
    _started = True
    period = float(os.environ.get(PERIOD_ENV, "0.5"))
    threading.Thread(target=_sample_forever, args=(path, period), name="memory-probe", daemon=True).start()
    log.info("memory probe: driver RSS and object store every %.1f s -> %s", period, path)
    return True
