"""Shared fixtures. One Ray instance per test session: starting Ray costs seconds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the repo; tests that need it skip with the reason."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (clone with ../shared beside the repo)")
    return SHARED_DATA


def init_session_ray() -> None:
    """Start the session's local Ray (over-committing logical CPUs to place actors), if not running."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=8,
            # Keep the dashboard: with it off, Ray Train 2.60's placement-group cleaner can
            # judge a live controller dead and kill its workers.
            runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false", "DS_ACCELERATOR": "cpu",
                                      "VLLM_CPU_KVCACHE_SPACE": "1"}},
        )


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray for the whole session."""
    import ray

    init_session_ray()
    yield ray
    ray.shutdown()


@pytest.fixture
def no_ray_in_process():
    """No Ray in this process during the test (CLI subprocesses start their own; a second one is
    refused), and the session's Ray back afterwards if an earlier test had started it."""
    import ray

    was = ray.is_initialized()
    if was:
        ray.shutdown()
    yield
    if was:
        init_session_ray()


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> Path:
    """Where tiny models are built once per session (or $TINYLLM_CACHE if set)."""
    env = os.environ.get("TINYLLM_CACHE")
    if env:
        p = Path(env)
        p.mkdir(parents=True, exist_ok=True)
        return p
    return tmp_path_factory.mktemp("tiny_models")
