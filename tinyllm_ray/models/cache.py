"""Where built and converted models are cached: one rule for every model builder.

Why one place: tiny random models and the converted SmolLM2 teacher are both expensive
to build once and must never land inside the repository; ``$TINYLLM_CACHE`` moves the
cache (CI points it at a shared folder), otherwise it lives under ``~/.cache/tinyllm_ray``.

Note the historical asymmetry kept for cached folders to stay valid: when
``$TINYLLM_CACHE`` is set it *is* the folder for each kind (tiny models and conversions
side by side in it); unset, each kind gets its own subfolder of the default root.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "TINYLLM_CACHE"


def default_cache_root() -> Path:
    """``$TINYLLM_CACHE`` if set, else ``~/.cache/tinyllm_ray`` (never inside the repo)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tinyllm_ray"


def cache_dir_for(kind: str) -> Path:
    """``$TINYLLM_CACHE`` if set, else ``~/.cache/tinyllm_ray/<kind>``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else default_cache_root() / kind
