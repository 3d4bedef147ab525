"""A small HTTP proxy in front of an OpenAI-compatible server that injects 429s, 5xx and stalls.

Why a real proxy (aiohttp, a real socket) instead of a mock: the API teacher's retries,
back-off, timeouts and rate limit are exercised over real HTTP from real Ray actors.

The schedule is seeded and keyed by the request body, not by arrival order, so which
request fails how is the same in every run whatever the concurrency: a body's attempt
``k`` gets a fault with probability ``rate / (k + 1)`` for ``k < 2`` (never later), kind
drawn from (429 with ``Retry-After``, 500, stall). The first three distinct bodies get one
fault of each kind at their first attempt, so every kind occurs at least once. A body
matching ``poison`` always gets 500 (its retries are exhausted). A stall holds the
request for ``stall_s`` (longer than the client's timeout), then answers 504.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Self

from aiohttp import ClientSession, ClientTimeout, web

FAULTS = ("429", "500", "stall")


class FaultProxy:
    """``with FaultProxy(upstream, seed=0) as p: p.url`` is a base URL (``.../v1``) to point a teacher at."""

    def __init__(self, upstream: str, *, seed: int = 0, rate: float = 0.3, stall_s: float = 8.0,
                 retry_after: str = "1", poison: Callable[[str], bool] | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.seed, self.rate, self.stall_s, self.retry_after = seed, rate, stall_s, retry_after
        self.poison = poison or (lambda _text: False)
        self.received = 0
        self.faults: Counter[str] = Counter()
        self.poisoned = 0
        self.forwarded = 0
        self.arrivals: list[float] = []
        self.auth: set[str] = set()
        self.bodies: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._attempts: Counter[str] = Counter()
        self._forced: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # ------------------------------------------------------------------ schedule (pure)
    def decide(self, key: str, text: str) -> str | None:
        """The fault for this body's next attempt: ``429`` / ``500`` / ``stall``, ``poison`` or None."""
        attempt = self._attempts[key]
        self._attempts[key] += 1
        if self.poison(text):
            return "poison"
        if attempt == 0 and key not in self._forced and len(self._forced) < len(FAULTS):
            self._forced.append(key)
            return FAULTS[len(self._forced) - 1]
        rng = random.Random(f"{self.seed}|{key}|{attempt}")
        if attempt < 2 and rng.random() < self.rate / (attempt + 1):
            return rng.choice(FAULTS)
        return None

    # ------------------------------------------------------------------ server
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.received += 1
        self.arrivals.append(time.monotonic())
        self.auth.add(request.headers.get("Authorization", ""))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            body = json.loads(raw or b"{}")
            self.bodies.append(body)
            text = str(body.get("prompt") or json.dumps(body.get("messages") or ""))
            fault = self.decide(hashlib.sha256(raw).hexdigest(), text)
            if fault == "poison":
                self.poisoned += 1
                return web.json_response({"error": {"message": "injected: poisoned prompt"}}, status=500)
            if fault is not None:
                self.faults[fault] += 1
            if fault == "429":
                return web.json_response({"error": {"message": "injected: rate limited"}}, status=429,
                                         headers={"Retry-After": self.retry_after})
            if fault == "500":
                return web.json_response({"error": {"message": "injected: server error"}}, status=500)
            if fault == "stall":
                await asyncio.sleep(self.stall_s)
                return web.json_response({"error": {"message": "injected: stalled"}}, status=504)
            headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "content-type")}
            async with ClientSession(timeout=ClientTimeout(total=600)) as s, s.post(
                    self.upstream + request.path_qs.removeprefix("/v1"), data=raw, headers=headers) as up:
                payload = await up.read()
                self.forwarded += 1
                return web.Response(body=payload, status=up.status, content_type="application/json")
        finally:
            self.in_flight -= 1

    def __enter__(self) -> Self:
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            port = runner.addresses[0][1]
            self.url = f"http://127.0.0.1:{port}/v1"
            self._runner = runner
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name="fault-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("fault proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(30)
