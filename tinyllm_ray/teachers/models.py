"""Where a teacher's model comes from, checked before any engine is started.

Why: an engine that cannot find its model should fail in milliseconds with the
teacher's name, not after Ray has started an actor and vLLM has been imported.
``tiny:<family>`` names a tiny random model built locally (demo, tests, benchmarks).
"""

from __future__ import annotations

import os
from typing import Any

from tinyllm_ray.config import TinyModelConfig
from tinyllm_ray.teachers.report import GenerationError

TINY_PREFIX = "tiny:"


def resolve_model(spec: str, cache_dir: str | os.PathLike[str] | None = None) -> str:
    """``tiny:<family>[?key=int&...]`` -> a locally built tiny model folder; else unchanged.

    Example: ``tiny:qwen2?seed=1&hidden_size=256``. Built once into the tiny-model cache
    (``$TINYLLM_CACHE``). Needs a filesystem shared by driver and actors (the demo runs
    on one machine).
    """
    if not spec.startswith(TINY_PREFIX):
        return spec
    from tinyllm_ray.models.tiny import tiny_model_path

    body = spec[len(TINY_PREFIX):]
    family, _, query = body.partition("?")
    params: dict[str, Any] = {"family": family}
    for item in filter(None, query.split("&")):
        k, _, v = item.partition("=")
        params[k] = int(v)
    return str(tiny_model_path(TinyModelConfig(**params), cache_dir))


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~", "file://"))


def precheck_model(teacher: str, model: str, same_filesystem: bool) -> None:
    """Fail in milliseconds for a local model path that does not exist.

    Only when driver and actors share a filesystem (one-node cluster); on a cluster the
    path may exist only on workers, and the engine reports it instead.
    """
    if not same_filesystem or not _looks_like_path(model):
        return
    path = os.path.expanduser(model.removeprefix("file://"))
    if not os.path.exists(path):
        raise GenerationError(
            f"teacher {teacher!r}: model path {model!r} does not exist (teachers.<i>.model must be a local "
            f"model folder, a hub name, or tiny:<family>)"
        )
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "config.json")):
        raise GenerationError(f"teacher {teacher!r}: model folder {model!r} has no config.json")
