"""API teachers: an OpenAI-compatible endpoint in place of vLLM engines, behind the same pool.

Why a subclass of :class:`~tinyllm_ray.teachers.engine.TeacherEngine`: an API teacher must
produce exactly the rows a vLLM teacher produces (``n`` samples per prompt, per-request
seeds, stop strings cut and CoTs cleaned the same way, the self-evaluation second pass on
the same teacher), so it reuses the engine's batch logic and replaces only the one call
that generates (:meth:`ApiTeacher._generate`). Ray Data maps it like the engine
(``serving.EnginePool``: ``map_batches(ApiTeacher, concurrency=replicas)``), each actor
reserving ``api.actor_cpus`` and no GPU.

How requests are sent (per actor, per batch): one asyncio loop, one ``httpx.AsyncClient``,
at most ``concurrency`` requests in flight (a semaphore), each waiting for its slot in a
token bucket (``requests_per_minute``, kept across batches). A 429, 408/409, 5xx, timeout
or connection error is retried up to ``max_retries`` times after ``Retry-After`` or an
exponential back-off with jitter (``api_limits.backoff_delay``). A request that still
fails gives ``failed`` rows carrying the reason (stored with their record keys, counted in
the statistics by reason), never a silent gap. 401/403/404 (wrong key, no access, wrong model or
URL) and an endpoint never reached fail the teacher at once with one line.

The key: read on the driver from the environment variable ``api.api_key_env`` names
(:func:`api_spec`), carried to the actors as a :class:`~.api_limits.Secret` (prints as
``<redacted>``), sent only as the ``Authorization`` header, scrubbed from error texts.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import random
import time
from typing import Any

import pyarrow as pa

from tinyllm_ray.config import TeacherConfig
from tinyllm_ray.errors import ConfigError, TeacherStartupError
from tinyllm_ray.teachers.api_limits import (
    ApiOutput,
    ApiSpec,
    Secret,
    TokenBucket,
    backoff_delay,
    failed_output,
    is_fatal,
    is_retryable,
    merge_outputs,
    parse_retry_after,
    response_output,
    scrub,
)
from tinyllm_ray.teachers.engine import EngineSpec, TeacherEngine
from tinyllm_ray.teachers.placement import Accelerator, TeacherPlan

log = logging.getLogger(__name__)

__all__ = ["ApiTeacher", "api_plan", "api_spec"]


def api_spec(teacher: TeacherConfig, environ: dict[str, str] | None = None) -> ApiSpec:
    """The :class:`ApiSpec` of an API teacher, its key read from the environment (on the driver).

    Raises :class:`ConfigError` naming the variable when ``api.api_key_env`` is not set.
    """
    api = teacher.api
    if api is None:
        raise ValueError(f"teacher {teacher.name!r} has no api section")
    env = os.environ if environ is None else environ
    key = None
    if api.api_key_env is not None:
        value = env.get(api.api_key_env)
        if not value:
            raise ConfigError(f"teacher {teacher.name!r}: its API key is read from ${api.api_key_env}, which is not "
                              f"set: export {api.api_key_env}=... and run again")
        key = Secret(value)
    r = teacher.replicas
    return ApiSpec(config=api, model=teacher.model, key=key, concurrency=max(1, api.concurrency // r),
                   requests_per_minute=None if api.requests_per_minute is None else api.requests_per_minute / r)


def api_plan(teacher: TeacherConfig, accelerator: Accelerator) -> TeacherPlan:
    """The actor-pool plan of an API teacher: ``replicas`` light actors, no GPU, no engine (pure)."""
    api = teacher.api
    if api is None:
        raise ValueError(f"teacher {teacher.name!r} has no api section")
    rpm = "unlimited" if api.requests_per_minute is None else f"{api.requests_per_minute:g}/min"
    why = (f"API teacher: {teacher.replicas} actor(s) of {api.actor_cpus:g} CPU (no GPU, no vLLM) send "
           f"{api.endpoint} requests to {api.base_url}, {api.concurrency} in flight and {rpm} in total, "
           f"{api.max_retries} retries, {api.timeout_s:g}s timeout")
    return TeacherPlan(teacher=teacher.name, model=teacher.model, accelerator=accelerator,
                       replicas=teacher.replicas, batch_size=teacher.batch_size, num_cpus=api.actor_cpus,
                       num_gpus=0.0, resources={k: float(v) for k, v in teacher.resources.items()}, why=(why,))


class _Unreachable(Exception):
    """The endpoint was never reached (connection refused, DNS): every request would fail alike."""


class ApiTeacher(TeacherEngine):
    """``map_batches`` callable like :class:`TeacherEngine`, generating through an HTTP API."""

    EXTRA_COLUMNS = (("error", pa.string()), ("requests", pa.int32()), ("retries", pa.int32()),
                     ("cost", pa.float64()))
    transport: Any = None  # an httpx transport in unit tests (httpx.MockTransport); None: the network

    def __init__(self, spec: EngineSpec) -> None:
        if spec.api is None:
            raise TeacherStartupError(f"teacher {spec.teacher!r}: ApiTeacher needs an api spec")
        self.spec = spec
        self.api: ApiSpec = spec.api
        cfg = self.api.config
        self.bucket = TokenBucket(self.api.requests_per_minute)
        self.rng = random.Random()
        self.url = f"{cfg.base_url.rstrip('/')}/{'chat/completions' if cfg.endpoint == 'chat' else 'completions'}"
        self.prices = (cfg.prompt_cost_per_1k, cfg.output_cost_per_1k)
        self.ever_succeeded = False
        self.startup_seconds = 0.0
        self._configure_sampling(dict)  # request bodies are plain dicts
        log.info("teacher %s: API teacher for %s at %s", spec.teacher, self.api.model, cfg.base_url)

    # ------------------------------------------------------------------ requests
    def body(self, prompt: str, params: dict[str, Any], n: int, seed: int | None) -> dict[str, Any]:
        """The JSON body of one request (pure): model, prompt or message, sampling, stops, seed."""
        cfg = self.api.config
        stops = list(params.get("stop") or [])
        if cfg.max_stops is not None:
            stops = stops[:cfg.max_stops]
        out: dict[str, Any] = {"model": self.api.model, "max_tokens": params["max_tokens"],
                               "temperature": params["temperature"], "top_p": params["top_p"], "n": n}
        if cfg.endpoint == "chat":
            out["messages"] = [{"role": "user", "content": prompt}]
        else:
            out["prompt"] = prompt
        if stops:
            out["stop"] = stops
        if seed is not None:
            out["seed"] = seed
        return out

    def _headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if self.api.key is not None:
            h["Authorization"] = f"Bearer {self.api.key.value()}"
        return h

    def _scrub(self, text: str) -> str:
        return scrub(text, self.api.key.value() if self.api.key is not None else None)

    async def _request(self, client: Any, sem: asyncio.Semaphore, body: dict[str, Any]) -> ApiOutput:
        """One logical request with its retries -> its ``n`` samples, or ``n`` failed ones."""
        import httpx

        cfg = self.api.config
        n = int(body["n"])
        retry = 0
        while True:
            retry_after = None
            async with sem:
                wait = self.bucket.reserve()
                if wait > 0:
                    await asyncio.sleep(wait)
                try:
                    resp = await client.post(self.url, json=body)
                except httpx.TimeoutException:
                    error = f"timeout: no response within {cfg.timeout_s:g}s"
                except httpx.TransportError as exc:
                    if not self.ever_succeeded and isinstance(exc, httpx.ConnectError) and retry >= cfg.max_retries:
                        raise _Unreachable(self._scrub(f"{type(exc).__name__}: {exc}")) from None
                    error = self._scrub(f"connection: {type(exc).__name__}: {exc}")
                else:
                    status = resp.status_code
                    if status == 200:
                        try:
                            out = response_output(resp.json(), cfg.endpoint, n, retry, self.prices)
                        except ValueError as exc:
                            return failed_output(self._scrub(f"bad response: {exc}"), n, retry)
                        self.ever_succeeded = True
                        return out
                    text = self._scrub(" ".join(resp.text.split())[:300])
                    if is_fatal(status):
                        raise TeacherStartupError(
                            f"teacher {self.spec.teacher!r}: {self.url} answered HTTP {status} for model "
                            f"{self.api.model!r} ({text}); check api.base_url, the model name and the key in "
                            f"${cfg.api_key_env or '(no api_key_env)'}")
                    error = f"HTTP {status}: {text}"
                    if not is_retryable(status):
                        return failed_output(error, n, retry)
                    retry_after = parse_retry_after(resp.headers.get("retry-after"))
            if retry >= cfg.max_retries:
                return failed_output(f"{error} (after {retry} retries)", n, retry)
            await asyncio.sleep(backoff_delay(retry, cfg.backoff_s, cfg.max_backoff_s, retry_after, self.rng))
            retry += 1

    async def _prompt(self, client: Any, sem: asyncio.Semaphore, prompt: str, params: dict[str, Any]) -> ApiOutput:
        n, seed = int(params["n"]), params.get("seed")
        if self.api.config.n_per_request or n == 1:
            return await self._request(client, sem, self.body(prompt, params, n, seed))
        # n one-sample requests; like vLLM's n > 1, sample j uses seed + j
        parts = await asyncio.gather(*(self._request(client, sem, self.body(
            prompt, params, 1, None if seed is None else seed + j)) for j in range(n)))
        return merge_outputs(parts)

    async def _all(self, prompts: list[str], params: list[dict[str, Any]]) -> list[ApiOutput]:
        import httpx

        cfg = self.api.config
        sem = asyncio.Semaphore(self.api.concurrency)
        limits = httpx.Limits(max_connections=self.api.concurrency, max_keepalive_connections=self.api.concurrency)
        async with httpx.AsyncClient(timeout=httpx.Timeout(cfg.timeout_s), headers=self._headers(),
                                     limits=limits, transport=self.transport) as client:
            return list(await asyncio.gather(*(self._prompt(client, sem, p, q) for p, q in zip(prompts, params))))

    # ------------------------------------------------------------------ TeacherEngine's one generation call
    def _generate(self, prompts: list[str], params: Any) -> tuple[list[Any], float]:
        plist = params if isinstance(params, list) else [params] * len(prompts)
        t0 = time.perf_counter()
        try:
            outs = _run_async(self._all(prompts, plist))
        except _Unreachable as exc:
            raise TeacherStartupError(
                f"teacher {self.spec.teacher!r}: cannot reach {self.api.config.base_url} ({exc}); check api.base_url "
                f"and that the server is up") from None
        return outs, time.perf_counter() - t0

    def close(self) -> None:
        """Nothing to stop: each batch's HTTP client is closed when the batch ends."""


def _run_async(coro: Any) -> Any:
    """Run ``coro`` to completion from synchronous code, also when a loop already runs in this thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
