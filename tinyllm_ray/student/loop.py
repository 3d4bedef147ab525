"""The per-worker training loop run by Ray Train (one process per DeepSpeed rank).

Why everything heavy is imported inside :func:`train_loop_per_worker`: DeepSpeed alone
costs ~16 s to import, and the driver, the tests of pure logic and ``tinyllm-ray --help``
must not pay it. ``DS_ACCELERATOR=cpu`` is set before that import on CPU runs.

One optimizer step = ``grad_accum_steps`` packed micro-batches through the DeepSpeed
engine. After every step the per-task losses (token-weighted, summed over micro-batches
and ranks with one ``all_reduce``) go to ``ray.train.report``. At evaluation steps (every
``train.eval_every_steps``, every ``train.checkpoint_every_steps`` and the last step of a
stage) all ranks generate answers for their slice of the validation split and the correct
counts are summed; the same step saves a checkpoint (DeepSpeed state of every rank, plus
the Hugging Face export and the loop state from rank 0) reported with a fresh
``val_accuracy``, so every checkpoint is ranked on validation.

Every report carries ``val_accuracy`` and ``val_step`` (the step it was measured at; 0 is
a baseline taken before the first update): Ray Tune checks that each result holds the
metric it optimises, and ``val_step`` says how fresh the value is. Checkpoint selection
only ever sees fresh values (those reported with a checkpoint).

Learning rate: before each optimizer step the loop writes ``lr_at(stage_step, ...)``
(``student/schedule.py``, a pure function of the step) into every parameter group; DeepSpeed
runs no scheduler. Stages (``loss.schedule: two_stage``): each stage starts like a run of its
own, with an empty optimizer state and a full learning-rate schedule over its own steps (see
``student/stages.py``: Mind's Mirror's code trains the two stages as two runs). Each report
carries ``lr``, the learning rate of the step it reports (read back from the optimizer), and
``stage_step`` (1-based step within the stage); a joint run has one stage and one schedule.

Resuming: ``ray.train.get_checkpoint()`` (set by Ray Train after a worker failure) restores
the DeepSpeed engine (weights, optimizer) and the step; the learning rate follows from the
step (nothing to restore), and the data stream of the
current epoch is fast-forwarded by the micro-batches already consumed. Every report
carries ``attempt_start_step`` (0 on a fresh start), which shows a resumed run resumed.

Start-up overlaps the data (``student/prefetch.py``): on a fresh start the first pass over
the training stream begins before the heavy imports, so Ray Data's slice readers (in a
streaming ``run``: the waits for the teachers' first slices) work while this worker gets
ready. A streaming first pass has no local shuffle buffer: the buffer would hold the first
batch back until several slices exist (4 micro-batches plus Ray's compaction margin, 7
slices of the demo), i.e. until the teachers are nearly done; later passes read a complete
store and shuffle as batch training does. DeepSpeed's shared-memory all-reduce op is not
built on CPU: only tensor-parallel inference uses it, and its JIT compile (rebuilt whenever
another build of it ran with other flags) took 53 of the worker's 65 s of start-up.

Fault injection for tests (off unless set; via ``run_training(worker_env=...)``):
``TINYLLM_FAULT_AT_STEP=K``, ``TINYLLM_FAULT_FLAG=/path`` and ``TINYLLM_FAULT_RANK=r``:
rank ``r`` creates the flag file and ``os._exit(1)`` right after step ``K``, once.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["LoopConfig", "metric_name", "shuffle_args", "skip_inference_comm_op", "train_loop_per_worker"]

STATE_FILE = "train_state.json"
DS_DIR = "deepspeed"
DS_TAG = "ds"
HF_DIR = "hf"


def metric_name(task: str) -> str:
    """``rationale:llama`` -> ``loss_rationale_llama`` (safe for Tune/TensorBoard keys)."""
    return "loss_" + "".join(c if c.isalnum() else "_" for c in task)


@dataclass
class LoopConfig:
    """Everything a worker needs, computed once on the driver (JSON-able)."""

    job: dict[str, Any]
    plan: dict[str, Any]
    collate: dict[str, Any]
    student_format: dict[str, Any]
    model_path: str
    stage_steps: list[int]
    micro_per_epoch: list[int]
    eval_batch_size: int
    streaming: bool = False  # the training stream waits for a store still being written

    @property
    def total_steps(self) -> int:
        return int(sum(self.stage_steps))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_eval_step(step: int, total: int, eval_every: int, ckpt_every: int) -> bool:
    return step == total or step % eval_every == 0 or step % ckpt_every == 0


def shuffle_args(seed: int, micro_batch: int, stage: int, epoch: int, streaming: bool,
                 local: bool = True) -> dict[str, Any]:
    """Local-shuffle arguments of one pass over a stage (pure; see the module doc).

    A streaming run's first pass has no buffer, so its first batch needs one micro-batch
    of groups, not the buffer's worth of slices. ``local=False`` (``train.local_shuffle``):
    no buffer on any pass, the rows come in the order the data was given.
    """
    if not local or (streaming and epoch == 0):
        return {"local_shuffle_buffer_size": None}
    return {"local_shuffle_buffer_size": 4 * micro_batch, "local_shuffle_seed": seed * 100003 + stage * 1009 + epoch}


def skip_inference_comm_op(compatible_ops: dict[str, bool]) -> None:
    """Keep DeepSpeed from JIT-building its shared-memory all-reduce op on CPU.

    ``deepspeed.comm`` builds it whenever a backend starts, yet only inference all-reduce
    (tensor-parallel inference) uses it; training's collectives go through
    ``torch.distributed``. Its build took most of a worker's start-up (module doc).
    ``compatible_ops`` is ``deepspeed.ops.__compatible_ops__`` (edits persist there).
    """
    compatible_ops["deepspeed_shm_comm"] = False


def train_loop_per_worker(config: dict[str, Any]) -> None:
    t_start = time.perf_counter()
    lc = LoopConfig(**config)
    from tinyllm_ray.config import JobConfig

    job = JobConfig.model_validate(lc.job)
    tcfg = job.train
    if not tcfg.use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")

    import ray.data
    import ray.train

    from tinyllm_ray.student.prefetch import EarlyBatches

    ray.data.DataContext.get_current().enable_progress_bars = False  # one log line per step, not bars
    from tinyllm_ray.observability import quiet_train_reports

    quiet_train_reports()  # not one Ray Train INFO line per report: metrics.jsonl has them
    timings: dict[str, float] = {}
    ckpt = ray.train.get_checkpoint()
    mb0 = tcfg.micro_batch_size
    early = None
    if ckpt is None and lc.stage_steps and lc.stage_steps[0] > 0:  # fresh start: stage 0, epoch 0, nothing to skip
        first_pass = ray.train.get_dataset_shard("train_stage0")
        early = EarlyBatches(lambda: first_pass.iter_batches(
            batch_size=mb0, batch_format="numpy", prefetch_batches=1,
            **shuffle_args(tcfg.seed, mb0, 0, 0, lc.streaming, tcfg.local_shuffle)))

    import deepspeed
    import torch
    import torch.distributed as dist

    from tinyllm_ray.data.schema import MCQRecord
    from tinyllm_ray.observability import TrainMetrics
    from tinyllm_ray.student.build_lock import wait_for_build_locks
    from tinyllm_ray.student.collate import CollateSpec, TaskCollator
    from tinyllm_ray.student.deepspeed_config import build_deepspeed_config
    from tinyllm_ray.student.evaluate_model import evaluate_records
    from tinyllm_ray.student.model import StudentFormat, load_student, write_student_format
    from tinyllm_ray.student.packed import PackedStudent, batch_to_device
    from tinyllm_ray.student.schedule import lr_at, set_lr
    from tinyllm_ray.student.stages import reset_optimizer_state, stage_of_step, stage_offsets
    from tinyllm_ray.student.tasks import TaskPlan

    dash = TrainMetrics(trial=os.environ.get("TINYLLM_TRIAL") or job.runtime.run_name)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    plan = TaskPlan.from_dict(lc.plan)
    spec = CollateSpec.from_dict(lc.collate)
    fmt = StudentFormat(**{**lc.student_format, "task_names": tuple(lc.student_format.get("task_names", ()))})
    k_tasks = len(plan.names)
    total_steps = lc.total_steps
    zero3 = tcfg.zero_stage == 3

    timings["imports"] = time.perf_counter() - t_start
    torch.manual_seed(tcfg.seed)
    model, tok = load_student(lc.model_path, spec.arch, trust_remote_code=job.student.trust_remote_code)
    module = PackedStudent(model, spec.arch, k_tasks)
    timings["model"] = time.perf_counter() - t_start - sum(timings.values())
    with ckpt.as_directory() if ckpt is not None else contextlib.nullcontext() as ckpt_dir:
        state: dict[str, Any] = {}
        if ckpt_dir is not None:
            with open(os.path.join(ckpt_dir, STATE_FILE)) as f:
                state = json.load(f)
        step = int(state.get("step", 0))
        ds_config = build_deepspeed_config(tcfg, world)  # no DeepSpeed scheduler: set_lr below, every step
        if rank == 0:
            log.info("DeepSpeed config: %s", json.dumps(ds_config))
        if not tcfg.use_gpu:
            skip_inference_comm_op(deepspeed.ops.__compatible_ops__)
        wait_for_build_locks(tcfg.build_lock_timeout_s)  # a killed JIT build must not stall us silently
        engine, _, _, _ = deepspeed.initialize(
            model=module,
            model_parameters=[p for p in module.parameters() if p.requires_grad],
            config=ds_config,
            dist_init_required=False,
        )
        if ckpt_dir is not None:
            engine.load_checkpoint(os.path.join(ckpt_dir, DS_DIR), tag=DS_TAG)
            log.info("rank %d resumed from step %d (stage %s of the next step: %d)", rank, step,
                     state.get("stage"), stage_of_step(lc.stage_steps, step))
    timings["engine"] = time.perf_counter() - t_start - sum(timings.values())
    device = engine.device
    val_acc: float | None = state.get("val_accuracy")
    val_step = int(state.get("val_step", 0))
    attempt_start = step

    def start_stage(stage: int, n_steps: int) -> None:
        """A later stage starts like a new run on the weights so far (``student/stages.py``)."""
        cleared = reset_optimizer_state(engine.optimizer)
        if rank == 0:  # its schedule restarts by itself: lr_at counts the stage's own steps
            log.info("stage %d: fresh optimizer state (%d cleared) and a %s schedule over %d steps",
                     stage, cleared, tcfg.scheduler, n_steps)

    # The collator runs in Ray Data's prefetch thread while validation tokenizes in this one;
    # a Rust tokenizer must not be used from two threads at once, so the collator gets a copy.
    collator = TaskCollator(copy.deepcopy(tok), spec,
                            decoder_start_token_id=getattr(model.config, "decoder_start_token_id", None))
    if early is not None:
        early.set_collate(collator)
    val_rows = list(ray.train.get_dataset_shard("validation").iter_rows())
    val_records = [MCQRecord.from_dict(r) for r in val_rows]
    my_val = val_records[rank::world]
    per_rank = math.ceil(len(val_records) / world)
    val_batches = math.ceil(per_rank / lc.eval_batch_size) if per_rank else 0
    fault_step = int(os.environ.get("TINYLLM_FAULT_AT_STEP", "0") or 0)
    fault_flag = os.environ.get("TINYLLM_FAULT_FLAG", "")
    fault_rank = int(os.environ.get("TINYLLM_FAULT_RANK", "0") or 0)

    def all_sum(t: torch.Tensor) -> torch.Tensor:
        if world > 1:
            t = t.to(device)
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.cpu()

    def validate() -> float:
        engine.eval()
        res = evaluate_records(engine.module.model, tok, my_val, fmt, max_new_tokens=tcfg.eval_max_new_tokens,
                               batch_size=lc.eval_batch_size, num_batches=val_batches,
                               synced_gpus=zero3 and world > 1, partial=True)
        engine.train()
        counts = all_sum(torch.tensor([res.correct, res.total], dtype=torch.float64))
        return float(counts[0] / counts[1]) if counts[1] > 0 else 0.0

    def save_and_report(metrics: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory(prefix="tinyllm-ckpt-") as tmp:
            os.makedirs(os.path.join(tmp, DS_DIR, DS_TAG), exist_ok=True)
            engine.save_checkpoint(os.path.join(tmp, DS_DIR), tag=DS_TAG)
            state_dict = engine._zero3_consolidated_16bit_state_dict() if zero3 else None
            if rank == 0:
                hf = os.path.join(tmp, HF_DIR)
                if zero3:
                    engine.module.model.save_pretrained(hf, state_dict=state_dict)
                else:
                    engine.module.model.save_pretrained(hf)
                tok.save_pretrained(hf)
                write_student_format(hf, fmt)
                with open(os.path.join(tmp, STATE_FILE), "w") as f:
                    json.dump({"step": metrics["step"], "stage": metrics["stage"], "stage_step": metrics["stage_step"],
                               "val_accuracy": metrics["val_accuracy"], "val_step": metrics["val_step"]}, f)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                             checkpoint_dir_name=f"checkpoint_step{metrics['step']:07d}")

    if val_acc is None:  # baseline before any update: every report can then carry val_accuracy
        val_acc, val_step = validate(), 0
    setup_seconds = time.perf_counter() - t_start
    timings["validation"] = setup_seconds - sum(timings.values())
    log.info("rank %d ready in %.1f s (%s; the data stream started %s)", rank, setup_seconds,
             ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()),
             "at once" if early is not None else "now (resumed run)")
    engine.train()
    offsets = stage_offsets(lc.stage_steps)
    mb, ga = tcfg.micro_batch_size, tcfg.grad_accum_steps
    for stage, (offset, n_steps, micro_per_epoch) in enumerate(zip(offsets, lc.stage_steps, lc.micro_per_epoch)):
        end = offset + n_steps
        if step >= end:
            continue
        if stage > 0 and step == offset:
            start_stage(stage, n_steps)
        shard = ray.train.get_dataset_shard(f"train_stage{stage}")
        consumed = (step - offset) * ga
        epoch, skip = divmod(consumed, micro_per_epoch)
        acc = torch.zeros(2 * k_tasks + 5, dtype=torch.float64)  # sums, tokens, total, micro, cut_in, cut_t, groups
        t_step = time.perf_counter()
        while step < end:
            seen = 0
            if early is not None:  # the first pass, started before the worker was ready
                batches, early = early, None
            else:
                batches = shard.iter_torch_batches(batch_size=mb, collate_fn=collator, prefetch_batches=1,
                                                   **shuffle_args(tcfg.seed, mb, stage, epoch, lc.streaming,
                                                                 tcfg.local_shuffle))
            for batch in batches:
                seen += 1
                if skip:
                    skip -= 1
                    continue
                batch = batch_to_device(batch, device)
                total, task_sum, task_tokens = engine(batch)
                engine.backward(total)
                boundary = engine.is_gradient_accumulation_boundary()
                # the rate of the optimizer step this micro-batch belongs to (step + 1), set before it runs
                set_lr(engine.optimizer, lr_at(step + 1 - offset, n_steps, tcfg.warmup_steps, tcfg.scheduler,
                                               tcfg.lr, tcfg.min_lr_ratio))
                step_lr = float(engine.get_lr()[0])  # read back: the rate this optimizer step uses
                engine.step()
                acc[:k_tasks] += task_sum.detach().double().cpu()
                acc[k_tasks:2 * k_tasks] += task_tokens.detach().double().cpu()
                acc[2 * k_tasks] += float(total.detach())
                acc[2 * k_tasks + 1] += 1
                acc[2 * k_tasks + 2] += float(batch["num_truncated_inputs"])
                acc[2 * k_tasks + 3] += float(batch["num_truncated_targets"])
                acc[2 * k_tasks + 4] += float(batch["num_groups"])
                if not boundary:
                    continue
                step += 1
                g = all_sum(acc.clone())
                acc.zero_()
                if fault_step and step == fault_step and rank == fault_rank and fault_flag \
                        and not os.path.exists(fault_flag):
                    with open(fault_flag, "w") as f:
                        f.write(f"rank {rank} exited after step {step}\n")
                    os._exit(1)
                metrics: dict[str, Any] = {
                    "step": step, "total_steps": total_steps, "stage": stage, "stage_step": step - offset,
                    "epoch": epoch,
                    "attempt_start_step": attempt_start,
                    "loss": float(g[2 * k_tasks] / max(g[2 * k_tasks + 1], 1)),
                    "lr": step_lr,
                    "truncated_inputs": int(g[2 * k_tasks + 2]), "truncated_targets": int(g[2 * k_tasks + 3]),
                    "groups": int(g[2 * k_tasks + 4]),
                    "step_seconds": time.perf_counter() - t_step, "setup_seconds": setup_seconds,
                }
                for i, name in enumerate(plan.names):
                    if g[k_tasks + i] > 0:
                        metrics[metric_name(name)] = float(g[i] / g[k_tasks + i])
                        metrics["tokens_" + metric_name(name)[5:]] = int(g[k_tasks + i])
                evaluate_now = step == end or _is_eval_step(step, total_steps, tcfg.eval_every_steps,
                                                            tcfg.checkpoint_every_steps)
                if evaluate_now:
                    val_acc, val_step = validate(), step
                if rank == 0:  # dashboard gauges: one series per trial, not per worker
                    dash.record_step({name: metrics[metric_name(name)] for name in plan.names
                                      if metric_name(name) in metrics} | {"total": metrics["loss"]},
                                     samples_per_s=metrics["groups"] / max(metrics["step_seconds"], 1e-9))
                    if evaluate_now:
                        dash.record_eval(val_acc)
                metrics["val_accuracy"], metrics["val_step"] = val_acc, val_step
                if evaluate_now:
                    save_and_report(metrics)
                else:
                    ray.train.report(metrics)
                t_step = time.perf_counter()
                if step >= end:
                    break
            else:
                if seen == 0:
                    raise RuntimeError(f"rank {rank}: training stage {stage} yielded no batches (empty shard)")
                epoch += 1
                continue
            if isinstance(batches, EarlyBatches):  # the budget ended inside the first pass
                batches.close()
            break
