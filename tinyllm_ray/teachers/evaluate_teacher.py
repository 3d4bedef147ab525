"""Answer-only accuracy of a teacher LLM, served by vLLM in the pipeline's Ray actors.

Why: a results table that only holds students cannot say how much of the teachers'
accuracy a student recovers. ``tinyllm-ray eval --teacher NAME --split test`` puts a
teacher row next to the student rows, scored by exactly the same rules
(:func:`tinyllm_ray.evaluate.extract_prediction` + :func:`~tinyllm_ray.evaluate.exact_match`)
and returned as the student's :class:`~tinyllm_ray.student.evaluate_model.EvalResult`.

The prompt (:func:`answer_only_prompt`) is a short few-shot *answer* template, not a CoT
prompt: the teacher prompts' block layout (``prompts.py``), the configured in-context
examples (``prompts.icl_k`` / ``icl_strategy`` / ``seed``, drawn from the TRAIN split
only, as for generation), each example showing its gold answer, then the question with
``Answer:`` and nothing after it::

    Answer the last question. Reply with the correct choice as "(x) <answer text>".

    Q: <train example>
    Answer Choices:
    (a) ...
    Answer: (c) ...

    Q: <the evaluated question>
    Answer Choices:
    (a) ...
    Answer:                              <- the teacher continues from here

The evaluated question's gold answer is never sent (the ``answer`` column of the rows
the actors receive is empty; gold stays on the driver). No rationale is asked for: the
student is evaluated answer-only too (TinyLLM inference), and a CoT would cost ~10x the
tokens. Decoding is greedy, ``eval.max_new_tokens`` tokens, the teacher's stop sequences.
The generation is read by :func:`read_answer`: its first non-empty line (the answer the
template asks for), else the whole text (``parse_answer``'s "the answer is (b)" rules).

Serving reuses the generation machinery unchanged: ``models.resolve_model`` /
``precheck_model``, ``placement.plan_teacher`` + ``check_fits`` (same resources, engine
kwargs and CPU-build environment), ``pipeline.engine_spec`` with self-evaluation off, and
``engine.TeacherEngine`` in a Ray Data actor pool (``map_batches``, ``teacher.batch_size``
prompts per call, ``min(replicas, batches)`` actors). Nothing is written to the store.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tinyllm_ray.config import (
    ConfigError,
    JobConfig,
    PromptConfig,
    SamplingConfig,
    SelfEvalConfig,
    TeacherConfig,
)
from tinyllm_ray.evaluate import exact_match, extract_prediction

# The teacher prompts' own block renderers: the answer-only prompt must keep their layout.
from tinyllm_ray.prompts import _example_block, _question_block, prompt_hash, sample_icl_examples

if TYPE_CHECKING:
    from tinyllm_ray.data.schema import MCQRecord
    from tinyllm_ray.student.evaluate_model import EvalResult
    from tinyllm_ray.teachers.engine import EngineSpec
    from tinyllm_ray.teachers.placement import TeacherPlan

log = logging.getLogger(__name__)

__all__ = [
    "answer_only_prompt",
    "answer_rows",
    "eval_engine_spec",
    "eval_teacher_config",
    "evaluate_teacher",
    "read_answer",
    "score_generations",
]

MCQ_INSTRUCTION = 'Answer the last question. Reply with the correct choice as "(x) <answer text>".'
FREE_FORM_INSTRUCTION = "Answer the last question. Reply with the answer only."


# ----------------------------------------------------------------------------- pure: prompts


def answer_only_prompt(record: MCQRecord, examples: Sequence[MCQRecord]) -> str:
    """The few-shot answer-only prompt for ``record`` (see the module docstring).

    ``examples`` show their gold answers (they come from the train split); ``record``'s
    answer is withheld: the prompt ends with ``"Answer:"``.
    """
    header = MCQ_INSTRUCTION if record.choices else FREE_FORM_INSTRUCTION
    blocks = [header, *(_example_block(e) for e in examples), f"{_question_block(record)}\nAnswer:"]
    return "\n\n".join(blocks)


def answer_rows(
    records: Sequence[MCQRecord], pool: Sequence[MCQRecord], prompts: PromptConfig, split: str
) -> list[dict[str, Any]]:
    """One ``TeacherEngine`` input row per record (``prompt_rows.PROMPT_COLUMNS``).

    In-context examples: ``prompts.icl_k`` from ``pool`` (the train split), chosen by
    ``(prompts.seed, record.id)`` exactly as for generation, never the record itself.
    ``answer`` is left empty on purpose: the gold answer does not leave the driver.
    """
    k = prompts.icl_k if prompts.icl_strategy == "random" else 0
    rows = []
    for rec in records:
        text = answer_only_prompt(rec, sample_icl_examples(pool, k, prompts.seed, exclude_id=rec.id))
        rows.append({
            "example_id": rec.id, "split": split, "shard": 0, "prompt": text, "prompt_hash": prompt_hash(text),
            "question": rec.question, "choices": list(rec.choices), "answer": "", "context": rec.context,
        })
    return rows


# ----------------------------------------------------------------------------- pure: scoring


def read_answer(generated: str | None, choices: Sequence[str]) -> str | None:
    """The choice (or number) a teacher's answer-only generation names, or None.

    First non-empty line first (``"(b) purple"``, ``"purple"``, ``"B"``), because the
    template asks for the answer on the ``Answer:`` line and whatever follows is a
    run-on; if that line names nothing, the whole text (``"... the answer is (b)"``).
    """
    text = (generated or "").strip()
    if not text:
        return None
    first = next(line.strip() for line in text.splitlines() if line.strip())
    pred = extract_prediction(first, choices)
    if pred is None and first != text:
        pred = extract_prediction(text, choices)
    return pred


def score_generations(
    records: Sequence[MCQRecord],
    generations: Sequence[str | None],
    *,
    split: str = "",
    model: str = "",
    seconds: float = 0.0,
    keep_predictions: int | None = 20,
) -> EvalResult:
    """Score one generation per record: :func:`read_answer` then ``exact_match``.

    ``keep_predictions`` (None: all) rows of ``{"id", "generated", "prediction",
    "answer", "correct"}`` are kept, as the student evaluation does.
    """
    from tinyllm_ray.student.evaluate_model import EvalResult  # imports torch: only when scoring

    if len(generations) != len(records):
        raise ValueError(f"{len(generations)} generations for {len(records)} records")
    if not records:
        raise ValueError("nothing to evaluate: zero records (check eval.limit and the split)")
    correct = 0
    preds: list[dict[str, Any]] = []
    for rec, gen in zip(records, generations):
        pred = read_answer(gen, rec.choices)
        ok = exact_match(pred, rec)
        correct += int(ok)
        if keep_predictions is None or len(preds) < keep_predictions:
            preds.append({"id": rec.id, "generated": gen or "", "prediction": pred, "answer": rec.answer,
                          "correct": ok})
    total = len(records)
    return EvalResult(accuracy=correct / total, correct=correct, total=total, split=split, model=model,
                      seconds=seconds, predictions=preds)


# ----------------------------------------------------------------------------- pure: engine settings


def eval_teacher_config(teacher: TeacherConfig, max_new_tokens: int) -> TeacherConfig:
    """The teacher as evaluated: greedy, one output, ``max_new_tokens``, its own stops.

    Everything else (model, dtype, resources, engine kwargs, replicas, batch size) is the
    teacher's, so the engine is planned and started exactly as for generation.
    """
    s = teacher.sampling
    greedy = SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=max_new_tokens, stop=list(s.stop), n=1,
                            seed=s.seed)
    return teacher.model_copy(update={"sampling": greedy})


def eval_engine_spec(cfg: JobConfig, teacher: TeacherConfig, plan: TeacherPlan) -> EngineSpec:
    """``pipeline.engine_spec`` for ``teacher`` (already :func:`eval_teacher_config`'d), no self-evaluation."""
    from tinyllm_ray.teachers.pipeline import engine_spec

    no_self_eval = cfg.model_copy(update={"self_eval": SelfEvalConfig(enabled=False)})
    return engine_spec(no_self_eval, teacher, plan)


# ----------------------------------------------------------------------------- Ray + vLLM


def _generate(rows: list[dict[str, Any]], spec: EngineSpec, plan: TeacherPlan, batch_size: int) -> dict[str, str]:
    """Run the rows through ``TeacherEngine`` actors; example id -> generated text."""
    import pyarrow as pa
    import ray

    from tinyllm_ray.teachers.engine import TeacherEngine
    from tinyllm_ray.teachers.pipeline import describe_error
    from tinyllm_ray.teachers.report import GenerationError

    blocks = [pa.Table.from_pylist(rows[i:i + batch_size]) for i in range(0, len(rows), batch_size)]
    plan = dataclasses.replace(plan, replicas=max(1, min(plan.replicas, len(blocks))))
    kwargs = plan.map_batches_kwargs(batch_size)
    out: dict[str, str] = {}
    tokens = truncated = 0
    try:
        ds = ray.data.from_blocks(blocks).map_batches(
            TeacherEngine, fn_constructor_kwargs={"spec": spec}, batch_format="pyarrow", **kwargs
        )
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            for r in batch.to_pylist():
                if r["kind"] == "rationale" and int(r["sample_idx"]) == 0:
                    out[r["example_id"]] = r["text"] or ""
                    tokens += int(r["output_tokens"])
                    truncated += r["finish_reason"] == "length"
    except GenerationError:
        raise
    except Exception as exc:
        raise GenerationError(describe_error(spec.teacher, exc)) from exc
    finally:
        factory = kwargs.get("ray_remote_args_fn")
        if factory is not None:
            factory.remove_all()
    missing = [r["example_id"] for r in rows if r["example_id"] not in out]
    if missing:
        raise GenerationError(f"teacher {spec.teacher!r}: no output for {len(missing)} questions, e.g. {missing[:3]}")
    log.info("teacher %s: %d answers, %d tokens, %d cut at max_new_tokens", spec.teacher, len(out), tokens, truncated)
    return out


def evaluate_teacher(
    cfg: JobConfig,
    teacher: str,
    split: str | None = None,
    *,
    limit: int | None = None,
    keep_predictions: int | None = 20,
) -> EvalResult:
    """Answer-only accuracy of teacher ``teacher`` on ``split`` (default ``cfg.eval.split``).

    Rows: the first ``limit`` (or ``cfg.eval.limit``) records of the split, as for the
    student. Starts (or joins) Ray as ``cfg.runtime`` says. Raises ``ConfigError`` for an
    unknown teacher (before anything starts) and ``GenerationError`` naming the teacher
    when its engine cannot be placed or fails.
    """
    import ray

    from tinyllm_ray.data.loader import load_splits
    from tinyllm_ray.runtime import init_ray
    from tinyllm_ray.teachers.models import precheck_model, resolve_model
    from tinyllm_ray.teachers.placement import PlacementError, check_fits, choose_accelerator, plan_teacher
    from tinyllm_ray.teachers.report import GenerationError

    names = [t.name for t in cfg.teachers]
    if teacher not in names:
        raise ConfigError(f"no teacher named {teacher!r} to evaluate; teachers are {names}")
    t0 = time.perf_counter()
    split = split or cfg.eval.split
    tcfg = eval_teacher_config(cfg.teacher(teacher), cfg.eval.max_new_tokens)

    data = load_splits(cfg.data)
    from tinyllm_ray.evaluate import select_eval_records

    records = select_eval_records(data.splits, split, limit or cfg.eval.limit)
    pool = data.splits.get("train") or []
    if cfg.prompts.icl_strategy == "random" and cfg.prompts.icl_k and not pool:
        log.warning("no train split: teacher %s is evaluated zero-shot (in-context examples come from train only)",
                    teacher)

    init_ray(cfg.runtime)
    alive = [nd for nd in ray.nodes() if nd.get("Alive")]
    accelerator, why = choose_accelerator(ray.cluster_resources())
    path = resolve_model(tcfg.model)
    precheck_model(teacher, path, len(alive) <= 1)
    plan = plan_teacher(tcfg, accelerator, model_path=path, self_eval=SelfEvalConfig(enabled=False))
    try:
        check_fits([plan], [nd.get("Resources", {}) for nd in alive])
    except PlacementError as exc:
        raise GenerationError(str(exc)) from None
    log.info("evaluating teacher %s on %d %s questions (%s; %s)", teacher, len(records), split, why,
             "; ".join(plan.why))

    rows = answer_rows(records, pool, cfg.prompts, split)
    batch_size = max(1, min(tcfg.batch_size, len(rows)))
    texts = _generate(rows, eval_engine_spec(cfg, tcfg, plan), plan, batch_size)
    return score_generations(records, [texts[r.id] for r in records], split=split,
                             model=f"{tcfg.model} (teacher {teacher})", seconds=time.perf_counter() - t0,
                             keep_predictions=keep_predictions)
