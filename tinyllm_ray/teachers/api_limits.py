"""The pure parts of talking to an API teacher: rate limit, retry policy, responses -> outputs.

Why apart from ``api.py``: each rule here decides how many requests an endpoint sees and
what a teacher's statistics say, so each is unit-tested in milliseconds without a server
(``tests/unit/test_teacher_api.py``); ``api.py`` only adds HTTP and asyncio around them.
No Ray, no vLLM, no HTTP client.
"""

from __future__ import annotations

import email.utils
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tinyllm_ray.config import ApiConfig

#: HTTP statuses worth a retry: rate limited, request timeout, and every server error.
RETRY_STATUSES: frozenset[int] = frozenset({408, 409, 429})


def is_retryable(status: int) -> bool:
    """True for 408, 409, 429 and every 5xx: the same request may succeed later."""
    return status in RETRY_STATUSES or 500 <= status < 600


def is_fatal(status: int) -> bool:
    """True for 401, 403 and 404: a wrong key, no access, or a wrong model/URL fails every request."""
    return status in (401, 403, 404)


class Secret:
    """A string that never prints: ``repr``/``str`` say ``<redacted>``; :meth:`value` gives it.

    Why: the API key travels from the driver's environment to the teacher's actors inside
    the pickled :class:`ApiSpec`; anything that logs or formats the spec must not show it.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<redacted>"

    __str__ = __repr__

    def __reduce__(self) -> tuple[Any, ...]:
        return (Secret, (self._value,))


@dataclass(frozen=True)
class ApiSpec:
    """What an ``ApiTeacher`` actor needs besides the sampling and prompt config (built on the driver).

    ``concurrency`` and ``requests_per_minute`` are this replica's share of the teacher's limits.
    """

    config: ApiConfig
    model: str
    key: Secret | None
    concurrency: int
    requests_per_minute: float | None


class TokenBucket:
    """A token bucket over requests (GCRA form): ``rate_per_minute`` on average, ``burst`` at once.

    :meth:`reserve` books the next slot and returns how long the caller must wait before
    sending; bookings are never given back, so the limit holds however the waits interleave.
    ``rate_per_minute`` ``None`` means unlimited (always 0). The clock is injectable so the
    schedule is tested without sleeping.
    """

    def __init__(self, rate_per_minute: float | None, burst: int = 1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 60.0 / rate_per_minute if rate_per_minute else 0.0
        self.tolerance = self.interval * (max(1, burst) - 1)
        self.clock = clock
        self._tat = float("-inf")  # theoretical arrival time of the next request

    def reserve(self, now: float | None = None) -> float:
        """Book one request; return the seconds to wait before sending it (0: send now)."""
        if self.interval == 0.0:
            return 0.0
        now = self.clock() if now is None else now
        tat = max(self._tat, now)
        send_at = max(now, tat - self.tolerance)
        self._tat = tat + self.interval
        return send_at - now


def backoff_delay(retry: int, base_s: float, cap_s: float, retry_after_s: float | None = None,
                  rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``retry`` (0 = the first retry).

    The server's ``Retry-After`` wins when given (capped at ``cap_s``); otherwise
    ``base_s * 2**retry`` capped at ``cap_s``, with "equal jitter" (a uniform draw in
    ``[d/2, d]``): never zero, and concurrent clients that failed together spread out.
    """
    if retry_after_s is not None:
        return min(cap_s, max(0.0, retry_after_s))
    d = min(cap_s, base_s * 2.0 ** retry)
    r = (rng or random).random()
    return d / 2 + r * d / 2


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` in seconds: delta-seconds or an HTTP date; ``None`` when absent or unreadable."""
    if value is None or not value.strip():
        return None
    v = value.strip()
    try:
        return max(0.0, float(v))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(v).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


_KEY_LIKE = re.compile(r"\b(sk|rk|pk|key|api)[-_][A-Za-z0-9*._-]{6,}", re.IGNORECASE)


def scrub(text: str, secret: str | None) -> str:
    """``text`` without the API key, nor anything shaped like one (servers echo masked keys)."""
    if secret:
        text = text.replace(secret, "<redacted>")
    return _KEY_LIKE.sub("<redacted>", text)


def split_tokens(total: int, texts: Sequence[str]) -> list[int]:
    """Share a response's ``completion_tokens`` over its choices, in proportion to their length.

    Why: the OpenAI API reports one token count per response, not per choice; a per-row
    count is needed by the store. Exact for one choice; for ``n`` choices the shares add
    up to ``total`` (largest remainder), so the teacher's token totals stay exact.
    """
    n = len(texts)
    if n == 0:
        return []
    if n == 1:
        return [total]
    weights = [len(t) for t in texts]
    s = sum(weights)
    if s == 0:
        weights, s = [1] * n, n
    raw = [total * w / s for w in weights]
    out = [int(x) for x in raw]
    by_rest = sorted(range(n), key=lambda i: (out[i] - raw[i], i))
    for i in by_rest[: total - sum(out)]:
        out[i] += 1
    return out


@dataclass
class ApiCompletion:
    """One generated sample, shaped like vLLM's ``CompletionOutput`` where ``TeacherEngine`` reads it.

    ``token_ids`` is ``range(n_tokens)``: the engine only takes its length. ``requests``,
    ``retries`` and ``cost`` are carried by the first sample of each request (0 on the
    others), so summing rows counts each request once; ``error`` is set when the request
    failed for good (then the row is stored as a ``failed`` record with that reason).
    """

    text: str
    finish_reason: str
    n_tokens: int
    error: str = ""
    requests: int = 0
    retries: int = 0
    cost: float = 0.0

    @property
    def token_ids(self) -> range:
        return range(self.n_tokens)


@dataclass
class ApiOutput:
    """One prompt's samples, shaped like vLLM's ``RequestOutput`` (``outputs``, ``prompt_token_ids``)."""

    outputs: list[ApiCompletion]
    n_prompt_tokens: int = 0

    @property
    def prompt_token_ids(self) -> range:
        return range(self.n_prompt_tokens)


def choice_text(choice: Mapping[str, Any], endpoint: str) -> str:
    """The generated text of one choice of a completions or chat response."""
    if endpoint == "chat":
        return str((choice.get("message") or {}).get("content") or "")
    return str(choice.get("text") or "")


def response_output(body: Mapping[str, Any], endpoint: str, n: int, retries: int,
                    prices: tuple[float, float]) -> ApiOutput:
    """A successful response (JSON) -> :class:`ApiOutput` with ``n`` samples, tokens and cost.

    ``prices`` are (prompt, output) per 1000 tokens. Choices are ordered by ``index``; a
    response with fewer than ``n`` choices is a server bug and raises ``ValueError``
    (the caller turns it into failed rows with that reason).
    """
    choices = sorted(body.get("choices") or [], key=lambda c: int(c.get("index", 0)))
    if len(choices) < n:
        raise ValueError(f"response has {len(choices)} choices, asked for {n}")
    choices = choices[:n]
    usage = body.get("usage") or {}
    ptoks = int(usage.get("prompt_tokens") or 0)
    texts = [choice_text(c, endpoint) for c in choices]
    toks = split_tokens(int(usage.get("completion_tokens") or 0), texts)
    p_price, o_price = prices
    comps = []
    for j, (c, text, k) in enumerate(zip(choices, texts, toks)):
        first = j == 0
        cost = k * o_price / 1000 + (ptoks * p_price / 1000 if first else 0.0)
        comps.append(ApiCompletion(text=text, finish_reason=str(c.get("finish_reason") or ""), n_tokens=k,
                                   requests=int(first), retries=retries if first else 0, cost=cost))
    return ApiOutput(comps, ptoks)


def failed_output(error: str, n: int, retries: int) -> ApiOutput:
    """A request that failed for good: ``n`` samples carrying the reason (``failed`` records)."""
    return ApiOutput([ApiCompletion(text="", finish_reason="error", n_tokens=0, error=error,
                                    requests=int(j == 0), retries=retries if j == 0 else 0)
                      for j in range(n)])


def merge_outputs(parts: Sequence[ApiOutput]) -> ApiOutput:
    """The ``n`` one-sample requests of one prompt (``api.n_per_request: false``) as one output."""
    comps = [c for p in parts for c in p.outputs]
    return ApiOutput(comps, max((p.n_prompt_tokens for p in parts), default=0))


__all__ = [
    "ApiCompletion",
    "ApiOutput",
    "ApiSpec",
    "Secret",
    "TokenBucket",
    "backoff_delay",
    "failed_output",
    "is_fatal",
    "is_retryable",
    "merge_outputs",
    "parse_retry_after",
    "response_output",
    "scrub",
    "split_tokens",
]
