"""Placement plans for teacher actor pools: pure, with logical GPUs, no Ray, no vLLM."""

from __future__ import annotations

import pytest

from tinyllm_ray.config import SelfEvalConfig, TeacherConfig
from tinyllm_ray.teachers.placement import (
    GIB,
    PlacementError,
    check_fits,
    choose_accelerator,
    plan_teacher,
)


def teacher(**kw) -> TeacherConfig:
    base = {"name": "t", "model": "/models/t"}
    base.update(kw)
    return TeacherConfig(**base)


def test_cpu_plan_sizes_actor_threads_and_kv_cache():
    p = plan_teacher(teacher(num_cpus=2, replicas=3, batch_size=64, kv_cache_space_gib=2), "cpu")
    assert (p.replicas, p.batch_size, p.num_cpus, p.num_gpus, p.bundles) == (3, 64, 2.0, 0.0, ())
    assert p.engine_kwargs["enforce_eager"] is True
    assert p.engine_kwargs["kv_cache_memory_bytes"] == 2 * GIB
    assert p.env == {"VLLM_CPU_KVCACHE_SPACE": "2", "OMP_NUM_THREADS": "2"}
    assert p.env_defaults == {"VLLM_CPU_OMP_THREADS_BIND": "nobind", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    assert "gpu_memory_utilization" not in p.engine_kwargs
    assert p.replica_resources == {"CPU": 2.0}
    assert p.total_resources == {"CPU": 6.0}
    # Ray restarts a dead engine and re-sends its batch; faults.FaultLedger bounds both
    assert p.actor_options() == {"num_cpus": 2.0}  # Ray Data's pool defaults: restarts -1, task retries -1
    assert plan_teacher(teacher(num_cpus=2, max_restarts=0, max_batch_retries=0), "cpu").actor_options() == {
        "num_cpus": 2.0, "max_restarts": 0}


def test_cpu_fractional_kv_cache_unsets_the_int_only_env_var():
    p = plan_teacher(teacher(kv_cache_space_gib=0.5), "cpu")
    assert p.engine_kwargs["kv_cache_memory_bytes"] == GIB // 2
    assert "VLLM_CPU_KVCACHE_SPACE" not in p.env
    assert p.unset_env == ("VLLM_CPU_KVCACHE_SPACE",)


def test_cpu_seeded_sampling_turns_chunked_prefill_off_with_a_reason():
    greedy = plan_teacher(teacher(), "cpu")
    assert "enable_chunked_prefill" not in greedy.engine_kwargs
    sampled = plan_teacher(teacher(sampling={"temperature": 0.7, "n": 3, "seed": 1}), "cpu")
    assert sampled.engine_kwargs["enable_chunked_prefill"] is False
    assert any("chunked prefill" in w for w in sampled.why)
    unseeded = plan_teacher(teacher(sampling={"temperature": 0.7, "seed": None}), "cpu")
    assert "enable_chunked_prefill" not in unseeded.engine_kwargs
    se = plan_teacher(teacher(), "cpu", self_eval=SelfEvalConfig(enabled=True, evals_per_cot=2, temperature=0.5))
    assert se.engine_kwargs["enable_chunked_prefill"] is False
    on_gpu = plan_teacher(teacher(sampling={"temperature": 0.7, "seed": 1}), "gpu")
    assert "enable_chunked_prefill" not in on_gpu.engine_kwargs


def test_gpu_tp1_actor_owns_one_gpu():
    p = plan_teacher(teacher(replicas=2, num_cpus=4, gpu_memory_utilization=0.8), "gpu")
    assert (p.num_gpus, p.num_cpus, p.bundles) == (1.0, 4.0, ())
    assert p.engine_kwargs["gpu_memory_utilization"] == 0.8
    assert "enforce_eager" not in p.engine_kwargs and "kv_cache_memory_bytes" not in p.engine_kwargs
    assert p.env == {} and p.env_defaults == {}
    kw = p.actor_options()
    assert kw["num_gpus"] == 1.0 and p.replicas == 2 and "ray_remote_args_fn" not in kw
    assert p.total_resources == {"CPU": 8.0, "GPU": 2.0}


def test_gpu_tensor_parallel_uses_a_strict_pack_group_per_replica():
    p = plan_teacher(teacher(tensor_parallel_size=4, replicas=2, num_cpus=2), "gpu")
    assert p.num_gpus == 0.0
    assert p.bundles == ({"GPU": 1.0, "CPU": 2.0},) + ({"GPU": 1.0, "CPU": 1.0},) * 3
    assert p.strategy == "STRICT_PACK"
    assert p.engine_kwargs["distributed_executor_backend"] == "ray"
    assert p.engine_kwargs["tensor_parallel_size"] == 4
    assert p.replica_resources == {"GPU": 4.0, "CPU": 5.0}
    assert p.total_resources == {"GPU": 8.0, "CPU": 10.0}
    kw = p.actor_options()
    assert "num_gpus" not in kw and kw["num_cpus"] == 2.0 and callable(kw["ray_remote_args_fn"])
    factory = kw["ray_remote_args_fn"]
    assert (factory.bundles, factory.strategy, factory.count, factory.groups) == (
        [dict(b) for b in p.bundles], "STRICT_PACK", 2, [])


def test_gpu_pipeline_parallel_may_span_nodes():
    p = plan_teacher(teacher(tensor_parallel_size=2, engine_kwargs={"pipeline_parallel_size": 2}), "gpu")
    assert len(p.bundles) == 4 and p.strategy == "PACK"


def test_engine_kwargs_override_automatic_choices_and_say_so():
    p = plan_teacher(teacher(engine_kwargs={"enforce_eager": False, "max_num_seqs": 8}), "cpu")
    assert p.engine_kwargs["enforce_eager"] is False and p.engine_kwargs["max_num_seqs"] == 8
    assert any("override" in w and "enforce_eager" in w for w in p.why)


def test_engine_kwargs_from_teacher_config():
    t = teacher(dtype="bfloat16", max_model_len=4096, tokenizer="/tok", trust_remote_code=True,
                sampling={"seed": 7})
    p = plan_teacher(t, "cpu", model_path="/resolved")
    e = p.engine_kwargs
    assert (e["model"], e["tokenizer"], e["dtype"], e["max_model_len"], e["trust_remote_code"], e["seed"]) == (
        "/resolved", "/tok", "bfloat16", 4096, True, 7)
    assert p.model == "/resolved"


def test_choose_accelerator_from_logical_resources():
    assert choose_accelerator({"CPU": 8})[0] == "cpu"
    acc, why = choose_accelerator({"CPU": 8, "GPU": 2})
    assert acc == "gpu" and "2 GPUs" in why


def test_check_fits_names_the_teacher_that_can_never_be_placed():
    nodes = [{"CPU": 8, "GPU": 2}, {"CPU": 8, "GPU": 2}]  # logical GPUs
    ok = plan_teacher(teacher(name="small", tensor_parallel_size=2), "gpu")
    assert check_fits([ok], nodes) == []
    big = plan_teacher(teacher(name="big", tensor_parallel_size=4), "gpu")  # STRICT_PACK: 4 GPUs on one node
    with pytest.raises(PlacementError, match="teacher 'big'.*GPU: 4"):
        check_fits([big], nodes)
    pp = plan_teacher(teacher(name="pp", tensor_parallel_size=2, engine_kwargs={"pipeline_parallel_size": 2}), "gpu")
    assert check_fits([pp], nodes) == []  # PACK may span the two nodes
    cpu_hog = plan_teacher(teacher(name="hog", num_cpus=16), "cpu")
    with pytest.raises(PlacementError, match="'hog'"):
        check_fits([cpu_hog], nodes)


def test_check_fits_warns_when_teachers_must_queue():
    nodes = [{"CPU": 2, "GPU": 2}]
    plans = [plan_teacher(teacher(name=n, replicas=2), "gpu") for n in ("a", "b")]
    warnings = check_fits(plans, nodes)
    assert len(warnings) == 1 and "wait" in warnings[0]


def test_custom_resources_pin_replicas_to_nodes() -> None:
    from tinyllm_ray.config import load_config
    from tinyllm_ray.teachers.placement import plan_teacher

    cfg = load_config("demo_cpu", ["teachers.0.resources={teacher_node: 1}", "teachers.0.replicas=2"])
    plan = plan_teacher(cfg.teachers[0], "cpu", model_path="/m", self_eval=cfg.self_eval)
    assert plan.actor_options()["resources"] == {"teacher_node": 1.0}
    assert plan.replica_resources == {"CPU": 1.0, "teacher_node": 1.0}
    assert plan.total_resources == {"CPU": 2.0, "teacher_node": 2.0}
    gpu = plan_teacher(cfg.teachers[0].model_copy(update={"tensor_parallel_size": 2}), "gpu",
                       model_path="/m", self_eval=cfg.self_eval)
    assert gpu.bundles[0]["teacher_node"] == 1.0 and "teacher_node" not in gpu.bundles[1]


def test_cpu_preload_goes_into_the_actor_runtime_env_and_is_said(tmp_path):
    """vLLM's CPU guide: tcmalloc + Intel OpenMP preloaded; only via the process's start env."""
    from tinyllm_ray.config import RuntimeConfig
    from tinyllm_ray.teachers.placement import find_preload_libs
    from tinyllm_ray.teachers.serving import cpu_preload

    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "libiomp5.so").write_bytes(b"")
    found = find_preload_libs(str(tmp_path))
    assert found["iomp"] == str(tmp_path / "lib" / "libiomp5.so")
    libs = {"tcmalloc": "/x/libtcmalloc_minimal.so.4", "iomp": "/y/libiomp5.so"}
    p = plan_teacher(teacher(), "cpu", preload=libs)
    assert p.actor_options()["runtime_env"] == {"env_vars": {"LD_PRELOAD": "/x/libtcmalloc_minimal.so.4:/y/libiomp5.so"}}
    assert any("preloading tcmalloc + iomp" in w for w in p.why)
    assert "runtime_env" not in plan_teacher(teacher(), "cpu").actor_options()
    # a user's own LD_PRELOAD wins; [] turns it off; only libraries that exist are used
    assert cpu_preload(RuntimeConfig(env_vars={"LD_PRELOAD": "/mine.so"})) == {}
    assert cpu_preload(RuntimeConfig(cpu_preload=[])) == {}
    assert set(cpu_preload(RuntimeConfig())) <= {"tcmalloc", "iomp"}
