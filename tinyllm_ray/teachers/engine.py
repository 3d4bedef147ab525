"""The teacher actor: one vLLM engine per Ray actor, fed whole batches by Ray Data.

Why a custom callable class instead of ``ray.data.llm``'s processor (measured and read
in Ray 2.60 / vLLM 0.32; details in the module docstring of ``pipeline.py``):

* ``ray.data.llm`` keeps only ``outputs[0]`` of every request, so Mind's Mirror's ``n``
  sampled CoTs per question would need ``n`` duplicated prompts with different seeds;
* it drives ``AsyncLLMEngine`` one asyncio task and one pydantic object per row, while
  a single ``LLM.generate(prompts, params)`` per batch is the fastest path vLLM has;
* the self-evaluation pass must reuse the *same* engine right after the CoTs of a batch
  are known; a second processor would load the model a second time.

Ray Data still does what it is good at: the actor pool (``concurrency=replicas``),
resources, batching, back-pressure and streaming results to the driver.

vLLM is imported inside ``__init__`` (never at module import), so the driver and the
unit tests import this module in milliseconds.

Faults (policy in ``faults.py``): with a ledger (``serving.EnginePool`` passes one unless
``max_restarts`` is 0) the actor reports its start and each batch's begin and end. An
engine error inside a batch is recorded with its reason, then the actor exits so that Ray
restarts it with a fresh engine and re-sends the batch; a batch the ledger gives up comes
back as failed rows (an ``error`` per CoT) instead of being generated.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from tinyllm_ray.config import PromptConfig, SamplingConfig, SelfEvalConfig
from tinyllm_ray.errors import TeacherStartupError
from tinyllm_ray.teachers.api_limits import ApiSpec
from tinyllm_ray.teachers.faults import FaultSet
from tinyllm_ray.teachers.prompt_rows import request_seed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineSpec:
    """Picklable description of one teacher engine (built by ``serving.engine_spec``).

    Why config models and not dicts: the actor reads ``sampling.temperature`` etc. from
    the very objects the config validated, so every default is defined once (in
    ``config.py``) and a renamed field fails loudly instead of silently re-defaulting.
    Pydantic models pickle, so they travel to the actors as they are.
    """

    teacher: str
    engine_kwargs: dict[str, Any]
    sampling: SamplingConfig
    prompts: PromptConfig
    self_eval: SelfEvalConfig  # the second pass runs iff ``self_eval.enabled``
    env: dict[str, str] = field(default_factory=dict)
    env_defaults: dict[str, str] = field(default_factory=dict)
    unset_env: tuple[str, ...] = ()
    api: ApiSpec | None = None  # ``api.ApiSpec`` for a teacher served by an OpenAI-compatible endpoint (``ApiTeacher``)
    fault: FaultSet | None = None  # test-only hook (faults.FAULT_ENV), None in real runs


#: Columns of every engine output table: ``records.RAW_COLUMNS`` plus ``error`` (null unless failed).
_OUTPUT_COLUMNS = ("kind", "example_id", "split", "shard", "sample_idx", "eval_idx", "prompt_hash", "text",
                   "prompt_tokens", "output_tokens", "finish_reason", "gen_seconds", "n_evals", "error")


def sampling_kwargs(sampling: SamplingConfig, self_eval: SelfEvalConfig | None = None) -> dict[str, Any]:
    """``vllm.SamplingParams`` arguments (seed aside) for the CoT pass, or the self-evaluation pass.

    The self-evaluation pass keeps the teacher's ``top_p`` and stop sequences but uses
    its own ``n`` (``evals_per_cot``), temperature and token budget. Pure.
    """
    if self_eval is None:
        return {"n": sampling.n, "temperature": sampling.temperature, "top_p": sampling.top_p,
                "max_tokens": sampling.max_tokens, "stop": list(sampling.stop)}
    return {"n": self_eval.evals_per_cot, "temperature": self_eval.temperature, "top_p": sampling.top_p,
            "max_tokens": self_eval.max_tokens, "stop": list(sampling.stop)}


# ----------------------------------------------------------------------------- errors

_ERR_LINE_RE = re.compile(r"([A-Za-z_][\w.]*(?:Error|Exception)): (.+)$")
_GENERIC = ("Engine core initialization failed", "EngineDeadError", "See root cause above")


def root_cause_from_log(text: str) -> str | None:
    """The most specific exception line in engine log text (pure, unit-tested).

    vLLM's engine core runs in a child process; the exception raised in the actor only
    says "Engine core initialization failed. See root cause above". The real error is
    in the children's stderr, which the actor shares; this picks it out.
    """
    found = []
    for line in text.splitlines():
        m = _ERR_LINE_RE.search(line.strip())
        if m and not any(g in line for g in _GENERIC):
            found.append(f"{m.group(1)}: {m.group(2)}".strip())
    if not found:
        return None
    return found[-1][:800]


def _stderr_position() -> tuple[str | None, int]:
    try:
        sys.stderr.flush()
        path = os.readlink("/proc/self/fd/2")
        return (path, os.path.getsize(path)) if os.path.isfile(path) else (None, 0)
    except OSError:
        return None, 0


def _stderr_since(path: str | None, offset: int, limit: int = 1 << 20) -> str:
    if path is None:
        return ""
    try:
        sys.stderr.flush()
        with open(path, "rb") as f:
            size = os.path.getsize(path)
            f.seek(max(offset, size - limit))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


# ----------------------------------------------------------------------------- the actor


class TeacherEngine:
    """``map_batches`` callable: prompt rows in, one row per generated output out.

    For each input row (one question) it returns ``n`` ``rationale`` rows, and, with
    self-evaluation on, ``evals_per_cot`` ``self_eval`` rows for every non-empty CoT
    (one request with ``n = evals_per_cot``). Columns: ``records.RAW_COLUMNS``, plus
    :attr:`EXTRA_COLUMNS` read from each completion (``api.ApiTeacher``: error, requests,
    retries, cost).
    """

    EXTRA_COLUMNS: tuple[tuple[str, Any], ...] = ()  # (name, pyarrow type) of per-output extras

    def __init__(self, spec: EngineSpec, ledger: Any = None) -> None:
        for k in spec.unset_env:
            os.environ.pop(k, None)
        os.environ.update(spec.env)
        for k, v in spec.env_defaults.items():
            os.environ.setdefault(k, v)
        self.spec = spec
        self._ledger = ledger
        self._refusal: str | None = None
        if ledger is not None:
            import ray

            ctx = ray.get_runtime_context()
            self._refusal = ray.get(ledger.engine_started.remote(
                ctx.was_current_actor_reconstructed, os.getpid(), ctx.current_actor, ctx.get_actor_id()))
            if self._refusal is not None:  # given up: start no engine, refuse every batch (ends the job)
                log.error("%s", self._refusal)
                return
        model = spec.engine_kwargs.get("model")
        log_path, log_offset = _stderr_position()
        t0 = time.perf_counter()
        try:
            from vllm import LLM, SamplingParams

            self.llm = LLM(**spec.engine_kwargs)
        except Exception as exc:  # noqa: BLE001 - re-raised with the teacher's name
            cause = root_cause_from_log(_stderr_since(log_path, log_offset))
            first = f"{type(exc).__name__}: {exc}".strip()
            detail = first if cause is None or cause in first else f"{cause} (raised as {first})"
            raise TeacherStartupError(
                f"teacher {spec.teacher!r}: vLLM engine for model {model!r} failed to start: {detail[:1500]}"
            ) from None
        self.startup_seconds = time.perf_counter() - t0
        self._configure_sampling(SamplingParams)
        log.info("teacher %s: engine for %s ready in %.1fs", spec.teacher, model, self.startup_seconds)

    def _configure_sampling(self, params_cls: Any) -> None:
        """Build the shared SamplingParams of both passes (``params_cls``: vLLM's, or a test fake).

        Requests carry their own seed only when sampling with a fixed seed (greedy
        decoding needs none, and one shared params object is cheaper).
        """
        spec = self.spec
        s, se = spec.sampling, spec.self_eval
        self._SamplingParams = params_cls
        self._seeded = s.seed is not None and s.temperature > 0
        self._cot_base = sampling_kwargs(s)
        self._cot_params = params_cls(**self._cot_base)
        if se.enabled:
            self._se_seeded = s.seed is not None and se.temperature > 0
            self._se_base = sampling_kwargs(s, se)
            self._se_params = params_cls(**self._se_base)

    # -------------------------------------------------------------- helpers
    def _params(self, base: dict[str, Any], shared: Any, seeded: bool, ids: list[str], kind: str,
                sample_idx: list[int] | None = None) -> Any:
        """One shared SamplingParams, or one per request when seeds make results order-free."""
        if not seeded:
            return shared
        seed = self.spec.sampling.seed
        idx = sample_idx or [0] * len(ids)
        return [self._SamplingParams(**base, seed=request_seed(seed, self.spec.teacher, i, kind, j))
                for i, j in zip(ids, idx)]

    def _generate(self, prompts: list[str], params: Any) -> tuple[list[Any], float]:
        t0 = time.perf_counter()
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        return outs, time.perf_counter() - t0

    # -------------------------------------------------------------- the batch
    def __call__(self, batch: pa.Table) -> pa.Table:
        ledger = getattr(self, "_ledger", None)
        if ledger is None:
            return self._generate_batch(batch)
        import ray

        if self._refusal is not None:
            raise TeacherStartupError(self._refusal)
        bid = int(batch.column("batch")[0].as_py())
        attempt, give_up = ray.get(ledger.begin.remote(bid, os.getpid()))
        if give_up is not None:
            out = failed_output(batch, self.spec.sampling.n, give_up)
            ray.get(ledger.gave_up_rows.remote(out.num_rows))
            log.warning("teacher %s: batch %d stored as failed: %s", self.spec.teacher, bid, give_up)
            return out
        try:
            out = self._generate_batch(batch, (bid, attempt))
        except Exception as exc:  # noqa: BLE001 - the engine may be broken: record why, exit, be restarted
            first = (str(exc).strip().splitlines() or [""])[0]
            reason = f"engine error: {type(exc).__name__}: {first}"
            log.error("teacher %s: batch %d attempt %d: %s; exiting so Ray restarts this actor",
                      self.spec.teacher, bid, attempt, reason)
            ray.get(ledger.engine_error.remote(bid, reason[:1000]))
            self.close()
            os._exit(1)
        ray.get(ledger.end.remote(bid))
        return out

    def _fault_point(self, where: tuple[int, int] | None) -> None:
        """Test-only: fail here, mid-batch (after the CoTs, before the self-evaluations), if asked."""
        fault = self.spec.fault.firing(*where) if self.spec.fault is not None and where is not None else None
        if fault is None:
            return
        log.warning("teacher %s: injected fault %s in batch %d attempt %d", self.spec.teacher, fault.action, *where)
        if fault.action == "kill":
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(f"injected engine error in batch {where[0]} ({fault})")

    def _generate_batch(self, batch: pa.Table, where: tuple[int, int] | None = None) -> pa.Table:
        from tinyllm_ray.data.schema import MCQRecord
        from tinyllm_ray.prompts import clean_rationale, cut_at_stop, self_eval_prompt

        cols = {name: batch.column(name).to_pylist() for name in batch.column_names}
        ids: list[str] = cols["example_id"]
        stops = self._cot_base["stop"]
        rows: dict[str, list[Any]] = {c: [] for c in (
            "kind", "example_id", "split", "shard", "sample_idx", "eval_idx", "prompt_hash", "text",
            "prompt_tokens", "output_tokens", "finish_reason", "gen_seconds", "n_evals",
            *(c for c, _t in self.EXTRA_COLUMNS))}

        def add(kind, i, sample_idx, eval_idx, phash, text, ptoks, comp, secs, n_evals):
            rows["kind"].append(kind)
            rows["example_id"].append(ids[i])
            rows["split"].append(cols["split"][i])
            rows["shard"].append(cols["shard"][i])
            rows["sample_idx"].append(sample_idx)
            rows["eval_idx"].append(eval_idx)
            rows["prompt_hash"].append(phash)
            rows["text"].append(text)
            rows["prompt_tokens"].append(ptoks)
            rows["output_tokens"].append(len(comp.token_ids))
            rows["finish_reason"].append(str(comp.finish_reason or ""))
            rows["gen_seconds"].append(secs)
            rows["n_evals"].append(n_evals)
            for c, _t in self.EXTRA_COLUMNS:
                rows[c].append(getattr(comp, c))

        params = self._params(self._cot_base, self._cot_params, self._seeded, ids, "cot")
        outs, dt = self._generate(cols["prompt"], params)
        self._fault_point(where)
        share = _time_shares(outs, dt)

        # CoTs, cleaned once here (the self-evaluation must judge the cleaned text).
        cots: list[tuple[int, int, str, Any, float, int]] = []
        for i, out in enumerate(outs):
            for j, comp in enumerate(out.outputs):
                cots.append((i, j, clean_rationale(comp.text, stops, self.spec.prompts.cot_trigger), comp,
                             share(len(comp.token_ids)), len(out.prompt_token_ids or ())))

        se = self.spec.self_eval
        judged = [c for c in cots if c[2].strip()] if se.enabled else []
        n_evals = se.evals_per_cot if se.enabled else 0
        judged_keys = {(c[0], c[1]) for c in judged}
        for i, j, text, comp, secs, ptoks in cots:
            add("rationale", i, j, -1, cols["prompt_hash"][i], text, ptoks, comp, secs,
                n_evals if (i, j) in judged_keys else 0)

        if judged:
            from tinyllm_ray.prompts import prompt_hash

            se_prompts, meta = [], []
            for i, j, text, _comp, _s, _p in judged:
                rec = MCQRecord(id=ids[i], question=cols["question"][i], choices=tuple(cols["choices"][i] or ()),
                                answer=cols["answer"][i], context=cols["context"][i])
                p = self_eval_prompt(rec, text, se.verdicts)
                se_prompts.append(p)
                meta.append((i, j, prompt_hash(p)))
            se_params = self._params(self._se_base, self._se_params, self._se_seeded,
                                     [ids[i] for i, _j, _h in meta], "self_eval", [j for _i, j, _h in meta])
            se_outs, se_dt = self._generate(se_prompts, se_params)
            se_share = _time_shares(se_outs, se_dt)
            for (i, j, phash), out in zip(meta, se_outs):
                ptoks = len(out.prompt_token_ids or ())
                for e, comp in enumerate(out.outputs):
                    add("self_eval", i, j, e, phash, cut_at_stop(comp.text, stops), ptoks, comp,
                        se_share(len(comp.token_ids)), 0)

        return pa.table({
            **{k: rows[k] for k in ("kind", "example_id", "split", "prompt_hash", "text", "finish_reason")},
            "shard": pa.array(rows["shard"], pa.int32()),
            "sample_idx": pa.array(rows["sample_idx"], pa.int32()),
            "eval_idx": pa.array(rows["eval_idx"], pa.int32()),
            "prompt_tokens": pa.array(rows["prompt_tokens"], pa.int32()),
            "output_tokens": pa.array(rows["output_tokens"], pa.int32()),
            "gen_seconds": pa.array(rows["gen_seconds"], pa.float64()),
            "n_evals": pa.array(rows["n_evals"], pa.int32()),
            **{c: pa.array(rows[c], t) for c, t in self.EXTRA_COLUMNS},
            **({} if any(c == "error" for c, _t in self.EXTRA_COLUMNS)
               else {"error": pa.array([None] * len(rows["kind"]), pa.string())}),
        })

    def close(self) -> None:
        """Stop the engine's child processes (they would otherwise outlive the actor)."""
        llm = getattr(self, "llm", None)
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            try:
                core.shutdown()
            except Exception as exc:  # noqa: BLE001 - best effort at teardown
                log.debug("teacher %s: engine shutdown: %s", self.spec.teacher, exc)

    def __del__(self) -> None:
        self.close()


def failed_output(batch: pa.Table, n: int, reason: str) -> pa.Table:
    """The engine's output for a batch given up: ``n`` failed CoT rows per prompt, each with ``reason``.

    Pure. ``records.build_shard_records`` stores them as ``failed`` rows and counts them
    under ``failed``; a rerun generates exactly these (example, sample) pairs again.
    """
    cols = {c: batch.column(c).to_pylist() for c in ("example_id", "split", "shard", "prompt_hash")}
    m = len(cols["example_id"])
    rep = lambda v: [x for x in v for _ in range(n)]
    k = m * n
    return pa.table({
        "kind": ["rationale"] * k, "example_id": rep(cols["example_id"]), "split": rep(cols["split"]),
        "prompt_hash": rep(cols["prompt_hash"]), "text": [""] * k, "finish_reason": [""] * k,
        "shard": pa.array(rep(cols["shard"]), pa.int32()),
        "sample_idx": pa.array(list(range(n)) * m, pa.int32()),
        "eval_idx": pa.array([-1] * k, pa.int32()),
        "prompt_tokens": pa.array([0] * k, pa.int32()), "output_tokens": pa.array([0] * k, pa.int32()),
        "gen_seconds": pa.array([0.0] * k, pa.float64()), "n_evals": pa.array([0] * k, pa.int32()),
        "error": pa.array([reason] * k, pa.string()),
    }).select(list(_OUTPUT_COLUMNS))


def _time_shares(outs: list[Any], seconds: float):
    """Split a generate() call's wall time over its outputs by generated tokens.

    Why: shards are committed separately but share batches; attributing engine time by
    tokens makes per-shard ``generation_seconds`` add up to the engine-busy time.
    """
    tokens = sum(len(c.token_ids) for o in outs for c in o.outputs)
    count = sum(len(o.outputs) for o in outs)

    def share(n: int) -> float:
        if tokens > 0:
            return seconds * n / tokens
        return seconds / count if count else 0.0

    return share
