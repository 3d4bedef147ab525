"""Waiting on a compiled-extension build lock with a deadline, never silently.

Why: DeepSpeed JIT-compiles its CPU ops (e.g. ``deepspeed_shm_comm``) through
``torch.utils.cpp_extension``, which guards each build folder with a ``lock`` file and
waits, without a word and without end, while that file exists. A run killed during the
compile leaves the file behind, so every later run stalled before its first step. Here a
worker checks the build folders first: it waits while another process may be compiling,
logging what it waits on, and after ``train.build_lock_timeout_s`` fails with one line
naming the file and what to do. Pure apart from the filesystem (no torch import at module
level), so the waits are unit-tested with short deadlines.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from tinyllm_ray.errors import BuildLockError

log = logging.getLogger(__name__)

__all__ = ["BuildLockError", "build_locks", "extensions_root", "wait_for_build_locks"]

LOCK_NAME = "lock"


def extensions_root() -> Path:
    """The folder torch builds JIT extensions in (``$TORCH_EXTENSIONS_DIR`` or its default)."""
    from torch.utils.cpp_extension import _get_build_directory

    return Path(_get_build_directory("x", verbose=False)).parent


def build_locks(root: str | os.PathLike[str]) -> list[Path]:
    """The ``lock`` files of every build folder directly under ``root`` (sorted)."""
    base = Path(root)
    if not base.is_dir():
        return []
    return sorted(p for p in base.glob(f"*/{LOCK_NAME}") if p.is_file())


def wait_for_build_locks(
    timeout_s: float,
    *,
    root: str | os.PathLike[str] | None = None,
    poll_s: float = 1.0,
    log_every_s: float = 15.0,
) -> float:
    """Block while a build lock exists under ``root``; returns the seconds waited.

    A lock held by a build that is really running goes away when it finishes (the wait is
    then the compile time, logged). One that is still there after ``timeout_s`` raises
    :class:`BuildLockError`: the message names the file and says to delete it when no
    build is running.
    """
    base = Path(root) if root is not None else extensions_root()
    start = time.monotonic()
    next_log = start
    while True:
        locks = build_locks(base)
        if not locks:
            return time.monotonic() - start
        waited = time.monotonic() - start
        if waited >= timeout_s:
            raise BuildLockError(
                f"the extension build lock {locks[0]} is still there after {timeout_s:.0f} s: a build killed "
                "half way leaves it; if no other training is compiling, delete it "
                f"(rm {locks[0]}) and rerun, or raise train.build_lock_timeout_s"
            )
        if time.monotonic() >= next_log:
            log.warning("waiting for the extension build lock %s (another process is compiling, or a killed "
                        "build left it; %.0f of %.0f s)", locks[0], waited, timeout_s)
            next_log = time.monotonic() + log_every_s
        time.sleep(poll_s)
