"""Bootstrapped teachers: tiny causal LMs taught the arithmetic task by this project's own trainer.

Why: issue 9 ("proof that distillation works") needs teachers that are competent on a
CPU with no download. A teacher with ``teachers.<i>.bootstrap`` set starts from the tiny
model its ``model`` names (``tiny:llama?...`` / ``tiny:qwen2?...``), is trained through
the student's Ray Train + DeepSpeed path (:func:`~tinyllm_ray.student.trainer.run_training`
with a prebuilt :class:`~tinyllm_ray.student.data.StudentData`) on gold step-by-step
solutions of ``data.name: arithmetic``, saved as a Hugging Face folder and then served by
vLLM exactly like a 7B teacher (the serving path is unchanged: only the model folder is
resolved here first, :func:`ensure_bootstrapped`).

What a teacher is trained on (pure, unit-tested: :func:`training_rows`):

* the EXACT prompt strings it is served with, built by the pipeline's own builders
  (``prompt_rows.build_prompt`` for ``cot`` and ``teacher_forcing``, ``self_eval_prompt``
  for ``self_eval``) with the job's ``prompts`` config and in-context sampling;
* completions ending the way the prompt asks (``" ... Thus, the answer is (b) 42."``, or
  ``"... is 42."`` free form, so ``parse_answer`` reads them) and then ``</s>`` (added by
  the collator), so vLLM stops at EOS;
* self-evaluation: gold CoTs ("Every step is right.\\nVerdict: correct") and corrupted
  ones whose critique names the wrong step ("Step 2 is wrong: 8 * 2 = 16, not 18.
  \\nVerdict: wrong"), in the layout ``parse_verdict`` reads back.

The problems come from a pool of its own (seed ``bootstrap.seed``, split name
``teacherpool``) with every question of the job's splits removed, so a teacher's accuracy
on validation/test is honest.

Layout: plain prompt -> completion (``student.causal_separator: ""``, empty answer
prefix, one ``answer`` task per row). Validation in the training loop scores the student
answer task, which means nothing for a teacher: it runs only at step 0 and the last step,
on two pool problems, one new token each (seconds), and the final checkpoint is exported.
Teacher accuracy is measured separately by ``tinyllm-ray eval --teacher NAME`` (with
``eval.teacher_prompt: cot``). Batches are grouped by length (:func:`length_grouped`,
``bootstrap.length_window``): a fifth of a random batch was padding.

Cache: ``<cache>/teacher-<family>-<key>``, key = sha256 of everything that changes the
weights (:func:`cache_key`); replicas, batch sizes or sampling never rebuild. Built in a
private folder and renamed into place atomically (the first writer wins).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import shutil
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinyllm_ray.config import BootstrapConfig, JobConfig, PromptConfig, TeacherConfig
from tinyllm_ray.data.arithmetic import ArithmeticProblem, make_arithmetic_splits
from tinyllm_ray.data.schema import MCQRecord
from tinyllm_ray.errors import ConfigError
from tinyllm_ray.observability import BOOTSTRAP_LABEL, progress
from tinyllm_ray.paths import RunPaths, join
from tinyllm_ray.prompts import TEMPLATE_VERSION, self_eval_prompt
from tinyllm_ray.teachers.bootstrap_targets import ALL_RIGHT, corrupt_solution, gold_completion
from tinyllm_ray.teachers.prompt_rows import build_prompt

if TYPE_CHECKING:
    from tinyllm_ray.student.data import StudentData

log = logging.getLogger(__name__)

__all__ = [
    "BOOTSTRAP_VERSION",
    "TrainingRow",
    "bootstrap_teacher",
    "bootstrapped_path",
    "cache_key",
    "corrupt_solution",
    "ensure_bootstrapped",
    "gold_completion",
    "length_grouped",
    "resolve_teacher_model",
    "teacher_pool",
    "training_rows",
]

#: Bump when the recipe below changes what is trained (rows, layout, training job):
#: part of the cache key, so a stale teacher is never reused.
BOOTSTRAP_VERSION = 3  # 2: completions end with the number, not an option letter; 3: batches grouped by length
MARKER = "tinyllm_bootstrap.json"
POOL_SPLIT = "teacherpool"
_BUILD_LOCK = threading.Lock()


@dataclass(frozen=True)
class TrainingRow:
    """One teacher training example: the served prompt and the completion it should write."""

    form: str  # cot | teacher_forcing | self_eval
    example_id: str
    prompt: str
    completion: str


# --------------------------------------------------------------------------- pure: pool and rows


def job_questions(cfg: JobConfig) -> set[str]:
    """Every question text of the job's splits (train, validation, test)."""
    from tinyllm_ray.data.loader import arithmetic_problems

    return {p.question for ps in arithmetic_problems(cfg.data).values() for p in ps}


def teacher_pool(cfg: JobConfig, boot: BootstrapConfig, exclude: set[str] | None = None) -> list[ArithmeticProblem]:
    """The teacher's own problems: same form and depth as the job, another seed, none of the job's questions.

    ``exclude`` defaults to :func:`job_questions` (computed once by callers that need it twice).
    """
    a = cfg.data.arithmetic
    exclude = job_questions(cfg) if exclude is None else exclude
    drawn = make_arithmetic_splits({"train": boot.num_problems}, max_steps=a.max_steps,
                                   seed=f"{POOL_SPLIT}:{boot.seed}:{cfg.data.seed}",  # type: ignore[arg-type]
                                   form=a.form)["train"]
    out = []
    for p in drawn:
        if p.question in exclude:
            continue
        out.append(ArithmeticProblem(id=p.id.replace("-train-", f"-{POOL_SPLIT}-"), question=p.question,
                                     steps=p.steps, answer=p.answer, difficulty=p.difficulty, choices=p.choices))
    return out


def training_rows(cfg: JobConfig, teacher: TeacherConfig, pool: Sequence[ArithmeticProblem]) -> list[TrainingRow]:
    """Prompt/completion rows for every form in ``teacher.bootstrap.forms``, over ``pool``.

    Prompts: the pipeline's builders with ``cfg.prompts`` (in-context examples drawn from
    the pool itself with the same sampler as generation, so a served prompt has the same
    shape). Self-evaluation alternates gold and corrupted CoTs (seeded per problem); the
    verdict words are ``self_eval.verdicts[0]`` (right) and ``[1]`` (wrong).
    """
    boot = teacher.bootstrap
    if boot is None:
        raise ConfigError(f"teacher {teacher.name!r} has no bootstrap section")
    prompts: PromptConfig = cfg.prompts
    verdicts = list(cfg.self_eval.verdicts)
    records = [p.to_record() for p in pool]
    rows: list[TrainingRow] = []
    for p, rec in zip(pool, records):
        gold = gold_completion(p)
        for form in boot.forms:
            if form in ("cot", "teacher_forcing"):
                as_form = teacher.model_copy(update={"prompt_style": form})
                rows.append(TrainingRow(form, rec.id, build_prompt(as_form, rec, records, prompts), gold))
            else:
                rng = random.Random(f"{boot.seed}:{rec.id}")
                if rng.random() < 0.5:
                    cot, critique, verdict = gold.strip(), ALL_RIGHT, verdicts[0]
                else:
                    bad = corrupt_solution(p, rng)
                    cot, critique, verdict = bad.cot, bad.critique, verdicts[1]
                rows.append(TrainingRow(form, rec.id, self_eval_prompt(rec, cot, verdicts),
                                        f" {critique}\nVerdict: {verdict}"))
    return rows


# --------------------------------------------------------------------------- pure: cache key


def cache_key(cfg: JobConfig, teacher: TeacherConfig) -> str:
    """sha256 (16 hex) of everything that changes a bootstrapped teacher's weights.

    The initial model spec, the bootstrap section, the arithmetic form/depth/sizes and
    seed (which questions are excluded), ``data.limit``, the prompt config and template
    version, the self-evaluation verdict words (when trained) and
    :data:`BOOTSTRAP_VERSION`. Not the name, replicas, resources, batch size or sampling.
    """
    boot = teacher.bootstrap
    if boot is None:
        raise ConfigError(f"teacher {teacher.name!r} has no bootstrap section")
    blob = {
        "version": BOOTSTRAP_VERSION,
        "model": teacher.model,
        "bootstrap": boot.model_dump(mode="json"),
        "arithmetic": cfg.data.arithmetic.model_dump(mode="json"),
        "data_seed": cfg.data.seed,
        "data_limit": cfg.data.limit,
        "prompts": cfg.prompts.model_dump(mode="json"),
        "template_version": TEMPLATE_VERSION,
        "verdicts": list(cfg.self_eval.verdicts) if "self_eval" in boot.forms else None,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def bootstrapped_path(cfg: JobConfig, teacher: TeacherConfig, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where ``teacher``'s trained folder lives (it may not exist yet)."""
    from tinyllm_ray.models.cache import cache_dir_for

    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_dir_for("bootstrap")
    family = teacher.model.removeprefix("tiny:").partition("?")[0]
    return root / f"teacher-{family}-{cache_key(cfg, teacher)}"


def is_complete(folder: Path) -> bool:
    return (folder / MARKER).is_file() and (folder / "config.json").is_file()


# --------------------------------------------------------------------------- training (Ray Train)


def _training_job(cfg: JobConfig, boot: BootstrapConfig, init_path: str, work: Path, max_target: int) -> JobConfig:
    """The student-training job that trains a teacher: one CPU worker, plain prompt -> completion."""
    return JobConfig.model_validate({
        "data": cfg.data.model_dump(mode="json"),
        "student": {"model": init_path, "arch": "causal", "answer_prefix": "", "causal_separator": "",
                    "max_input_length": boot.max_input_length, "max_target_length": max_target,
                    "truncation": "count"},
        "train": {"num_workers": 1, "cpus_per_worker": 1, "zero_stage": 0, "micro_batch_size": boot.micro_batch_size,
                  "lr": boot.lr, "scheduler": "cosine", "warmup_steps": boot.warmup_steps,
                  "local_shuffle": not boot.length_window,
                  "max_steps": boot.max_steps, "eval_every_steps": boot.max_steps,
                  "checkpoint_every_steps": boot.max_steps, "num_checkpoints_to_keep": 1,
                  "eval_max_new_tokens": 1, "seed": boot.seed},
        "runtime": {**cfg.runtime.model_dump(mode="json"), "storage_path": str(work), "run_name": "bootstrap"},
    })


def length_grouped(lengths: Sequence[int], micro_batch: int, seed: int, window: int) -> list[list[int]]:
    """Row indices cut into micro-batches of rows of similar length, in random order (pure).

    Why: the collator pads a batch to its longest row. Random batches of a teacher's rows
    were 77-80% real tokens (measured on the demo's llama and qwen rows), so a fifth of every
    step computed padding. Here the rows are shuffled (``seed``), each window of ``window``
    micro-batches is sorted by length and cut into micro-batches, and the batches are
    shuffled: the same rows, seen once per epoch, 91% real tokens on the demo's llama. The
    last ``len(lengths) % micro_batch`` rows of the shuffle are left out, so every batch is
    full (one Ray Data block each), unless there are fewer rows than one batch.
    """
    if micro_batch < 1 or window < 1:
        raise ValueError(f"micro_batch and window must be >= 1, got {micro_batch}, {window}")
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    order = order[:len(order) - len(order) % micro_batch or len(order)]  # fewer rows than a batch: one batch
    batches: list[list[int]] = []
    span = window * micro_batch
    for start in range(0, len(order), span):
        chunk = sorted(order[start:start + span], key=lambda i: lengths[i])
        batches.extend(chunk[j:j + micro_batch] for j in range(0, len(chunk), micro_batch))
    rng.shuffle(batches)
    return batches


def _student_data(job: JobConfig, rows: Sequence[TrainingRow], val: Sequence[MCQRecord],
                  length_window: int) -> StudentData:
    """Group rows (``GROUP_SCHEMA``: source = the served prompt, one ``answer`` task) + a 2-question validation set.

    ``length_window`` > 0 (``bootstrap.length_window``): the rows in :func:`length_grouped`
    order, one Ray Data block per micro-batch (whole blocks arrive whole, so a batch stays a
    group whatever the block order), read without the loop's local shuffle (``_training_job``).
    0: shuffled rows, as before.
    """
    import ray.data

    from tinyllm_ray.student.data import StudentData
    from tinyllm_ray.student.tasks import TaskPlan

    groups = []
    for i, r in enumerate(rows):
        groups.append({"group": f"0:{i:07d}", "stage": 0, "source": r.prompt, "example_id": r.example_id,
                       "tasks": ["answer"], "prefixes": [""], "targets": [r.completion], "weights": [1.0]})
    if length_window:
        mb = job.train.micro_batch_size
        batches = length_grouped([len(r.prompt) + len(r.completion) for r in rows], mb, job.train.seed,
                                 length_window)
        groups = [groups[i] for b in batches for i in b]
        train = ray.data.from_items(groups, override_num_blocks=len(batches))
    else:
        random.Random(job.train.seed).shuffle(groups)
        train = ray.data.from_items(groups)
    datasets = {"train_stage0": train, "validation": ray.data.from_items([r.to_dict() for r in val])}
    return StudentData(plan=TaskPlan.from_config(job), datasets=datasets, groups={0: len(groups)},
                       stats={"rows": len(groups)})


def _progress_callback(teacher: str, total: int) -> Any:
    from ray.train import UserCallback

    class Progress(UserCallback):
        """One log line per ~10% of the steps (runs in the Ray Train controller)."""

        def after_report(self, run_context, metrics, checkpoint) -> None:
            m = dict(metrics[0]) if metrics else {}
            step = int(m.get("step", 0))
            if step and (step % max(1, total // 10) == 0 or step == total):
                logging.getLogger(__name__).warning("bootstrapping teacher %s: step %d/%d, loss %.3f",
                                                    teacher, step, total, float(m.get("loss", float("nan"))))

    return Progress()


def bootstrap_teacher(cfg: JobConfig, teacher: TeacherConfig, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Train ``teacher`` (Ray must be up or startable) unless its cached folder exists; return the folder."""
    from tinyllm_ray.student.trainer import run_training
    from tinyllm_ray.teachers.models import resolve_model

    final = bootstrapped_path(cfg, teacher, cache_dir)
    if is_complete(final):
        _say_reused(teacher.name, final, "cached")
        return final
    boot = teacher.bootstrap
    assert boot is not None
    t0 = time.perf_counter()
    init = resolve_model(teacher.model)
    pool = teacher_pool(cfg, boot)
    rows = training_rows(cfg, teacher, pool)
    log.info("bootstrapping teacher %s: %s on %d rows (%s) from %d problems, %d steps of %d; cache %s",
             teacher.name, teacher.model, len(rows), "+".join(boot.forms), len(pool), boot.max_steps,
             boot.micro_batch_size, final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    work, out = final.parent / f".work-{tag}", final.parent / f".tmp-{tag}"
    try:
        max_target = 160
        job = _training_job(cfg, boot, init, work, max_target)
        data = _student_data(job, rows, [p.to_record() for p in pool[:2]], boot.length_window)
        from tinyllm_ray.student.trainer import METRICS_FILE, TRAIN_RUN_NAME

        progress("training", label=f"{BOOTSTRAP_LABEL}{teacher.name}", total=boot.max_steps,
                 pattern=join(RunPaths.of(job).train, TRAIN_RUN_NAME, METRICS_FILE))
        result = run_training(job, data=data, output_dir=str(out),
                              callbacks=[_progress_callback(teacher.name, boot.max_steps)],
                              role=f"{BOOTSTRAP_LABEL}{teacher.name}")
        if result.model_dir is None:
            raise RuntimeError(f"bootstrapping teacher {teacher.name!r} produced no checkpoint")
        for name in os.listdir(init):  # the tokenizer and generation config exactly as built
            if name.startswith(("tokenizer", "special_tokens", "generation_config", "chat_template")):
                shutil.copy2(os.path.join(init, name), out / name)
        seconds = time.perf_counter() - t0
        (out / MARKER).write_text(json.dumps({
            "teacher": teacher.name, "key": cache_key(cfg, teacher), "model": teacher.model,
            "bootstrap": boot.model_dump(mode="json"), "rows": len(rows), "problems": len(pool),
            "seconds": round(seconds, 1), "final_loss": (result.history() or [{}])[-1].get("loss"),
        }, indent=2, sort_keys=True) + "\n")
        with contextlib.suppress(OSError):
            os.rename(out, final)  # atomic; another process may have won
        if not is_complete(final):
            raise RuntimeError(f"could not move the bootstrapped teacher {teacher.name!r} into {final}")
        log.info("teacher %s bootstrapped in %.0f s (cached at %s)", teacher.name, seconds, final)
        return final
    finally:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


_REUSED_SAID: set[tuple[str, Path]] = set()


def _say_reused(name: str, path: Path, how: str) -> None:
    """Once per teacher and folder per process at INFO (each stage resolves the teachers again)."""
    level = logging.DEBUG if (name, path) in _REUSED_SAID else logging.INFO
    _REUSED_SAID.add((name, path))
    log.log(level, "reusing %s teacher %s (%s)", how, name, path)


def resolve_teacher_model(cfg: JobConfig, teacher: TeacherConfig) -> str:
    """The model folder ``teacher`` is served from: its bootstrapped folder when it has a
    ``bootstrap`` section (trained first if not cached), else ``models.resolve_model`` of its
    ``model``. The one resolution for generation, ``run`` and ``eval --teacher`` (``serving.plan_pools``).
    """
    from tinyllm_ray.teachers.models import resolve_model

    if teacher.bootstrap is None:
        return resolve_model(teacher.model)
    return str(bootstrap_teacher(cfg, teacher))


#: Ray Train controller poll interval while teachers train. A worker's report waits for the
#: controller to drain a one-slot queue once per poll (``student/trainer.py``); a tiny
#: teacher's step takes ~0.1-0.3 s on one CPU, so the default 0.2 s poll would set the pace.
BOOTSTRAP_POLL_INTERVAL_S = 0.02


def ensure_bootstrapped(cfg: JobConfig, teachers: Sequence[TeacherConfig] | None = None) -> dict[str, str]:
    """Build every bootstrapped teacher of ``teachers`` (default: all) not yet cached; name -> folder.

    Missing teachers train CONCURRENTLY (one Ray Train run per thread, one CPU worker each):
    two tiny teachers on a 2-core machine take the time of one. Serialised per process
    (a second caller waits and then finds the cache).
    """
    todo = [t for t in (cfg.teachers if teachers is None else teachers) if t.bootstrap is not None]
    if not todo:
        return {}
    with _BUILD_LOCK:
        # One training per cache folder: two entries of one model (e.g. Mind's Mirror's derived
        # ``llama_cot`` beside ``llama``) share their weights and must not train twice, in parallel
        # into the same folder.
        missing: list[TeacherConfig] = []
        seen: set[Path] = set()
        for t in todo:
            path = bootstrapped_path(cfg, t)
            if not is_complete(path) and path not in seen:
                seen.add(path)
                missing.append(t)
        if missing:
            from tinyllm_ray.runtime import import_package_now, init_ray

            progress("stage", name="bootstrap", detail=f"training teacher(s) {', '.join(t.name for t in missing)} "
                     "through Ray Train (cached afterwards)")

            import_package_now()  # transformers' lazy imports are not thread-safe
            init_ray(cfg.runtime)
            errors: dict[str, BaseException] = {}

            def work(t: TeacherConfig) -> None:
                try:
                    bootstrap_teacher(cfg, t)
                except BaseException as exc:  # noqa: BLE001 - re-raised below with the teacher's name
                    errors[t.name] = exc

            threads = [threading.Thread(target=work, args=(t,), name=f"bootstrap-{t.name}") for t in missing]
            from tinyllm_ray.student.trainer import controller_poll_interval

            with controller_poll_interval(BOOTSTRAP_POLL_INTERVAL_S):
                for th in threads:
                    th.start()
                for th in threads:
                    th.join()
            if errors:
                name, exc = next(iter(errors.items()))
                raise RuntimeError(f"bootstrapping teacher {name!r} failed: {exc}") from exc
        out = {}
        for t in todo:
            path = bootstrapped_path(cfg, t)
            if t not in missing:
                _say_reused(t.name, path, "cached" if path not in seen else "just trained")
            out[t.name] = str(path)
        return out
