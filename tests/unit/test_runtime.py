"""Starting Ray: a second local Ray beside a running one is refused at once (issue 11 item 5)."""

from __future__ import annotations

import pytest

from tinyllm_ray import memory_probe, runtime
from tinyllm_ray.config import RuntimeConfig
from tinyllm_ray.errors import SecondRayError, UserError


def test_second_local_ray_is_refused_in_one_line_naming_both_ways_out(monkeypatch):
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(runtime, "other_ray_instances", lambda: ["10.0.0.1:6379"])

    def no_init(**kwargs):
        raise AssertionError("ray.init must not be called")

    monkeypatch.setattr(ray, "init", no_init)
    with pytest.raises(SecondRayError) as err:
        runtime.init_ray(RuntimeConfig())
    msg = str(err.value)
    assert isinstance(err.value, UserError) and "\n" not in msg
    assert "10.0.0.1:6379" in msg and "runtime.ray_address=auto" in msg and "ray stop" in msg


def test_joining_a_cluster_or_allowing_it_skips_the_check(monkeypatch):
    import ray

    calls: list[dict] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(runtime, "other_ray_instances", lambda: ["10.0.0.1:6379"])
    monkeypatch.setattr(runtime, "import_package_now", lambda: 0)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    assert runtime.init_ray(RuntimeConfig(allow_second_ray=True)) == {"CPU": 2.0}
    assert runtime.init_ray(RuntimeConfig(ray_address="auto")) == {"CPU": 2.0}
    assert [c["address"] for c in calls] == ["local", "auto"]
    runtime.check_no_other_ray([])  # nothing running: fine


class _FakeLibc:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return 1


def test_the_driver_caps_glibc_malloc_arenas_before_ray_starts(monkeypatch):
    """Fragmented per-thread arenas grew the driver's RSS with the prompt count (benchmarks/results/load.md)."""
    import ray

    libc = _FakeLibc()
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.setattr(memory_probe, "glibc", lambda: libc)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(runtime, "other_ray_instances", list)

    def init(**kwargs):  # Ray's threads start here: the cap must already be set
        assert libc.calls == [(-8, runtime.DRIVER_MALLOC_ARENAS)]
        raise RuntimeError("stop before starting Ray")

    monkeypatch.setattr(ray, "init", init)
    with pytest.raises(RuntimeError, match="stop before"):
        runtime.init_ray(RuntimeConfig())
    assert libc.calls == [(-8, 2)]


def test_a_user_malloc_arena_max_wins(monkeypatch):
    libc = _FakeLibc()
    monkeypatch.setattr(memory_probe, "glibc", lambda: libc)
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    assert runtime.limit_malloc_arenas() is False and libc.calls == []
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    assert runtime.limit_malloc_arenas() is True and libc.calls == [(-8, 2)]
