"""Requests-per-minute and tokens-per-minute limits: GCRA (generic cell rate algorithm).

A limit of ``limit`` units per ``window_s`` lets a burst of ``limit`` through, then one unit
every ``window_s / limit`` seconds; over any interval of length L at most ``limit * (1 + L/window_s)``
units are admitted.  The whole state is one number (the "theoretical arrival time"), so the
Redis version is a single atomic Lua script that every process shares; without Redis the state
lives in the process.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import weakref
from typing import Callable, Protocol

_GCRA_LUA = """
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + cost * interval
local allow_at = new_tat - tolerance
if now < allow_at then
  return tostring(allow_at - now)
end
redis.call('SET', KEYS[1], string.format('%.6f', new_tat), 'PX', math.ceil((new_tat - now) * 1000) + 1000)
return '0'
"""


class RateLimiter(Protocol):
    async def acquire(self, cost: float = 1.0) -> None: ...


class LocalRateLimiter:
    """In-process GCRA (thread-safe, not bound to an event loop)."""

    def __init__(self, limit: float, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        if limit <= 0 or window_s <= 0:
            raise ValueError("rate limit and window must be positive")
        self.limit = float(limit)
        self.interval = window_s / limit
        self.tolerance = float(window_s)
        self._clock = clock
        self._tat = 0.0
        self._lock = threading.Lock()

    def try_acquire(self, cost: float = 1.0) -> float:
        """Admit ``cost`` units now (returns 0.0) or say how many seconds to wait first."""
        cost = min(float(cost), self.limit)  # a single oversized request must still pass eventually
        with self._lock:
            now = self._clock()
            tat = max(self._tat, now)
            new_tat = tat + cost * self.interval
            allow_at = new_tat - self.tolerance
            if now < allow_at:
                return allow_at - now
            self._tat = new_tat
            return 0.0

    async def acquire(self, cost: float = 1.0) -> None:
        while (wait := self.try_acquire(cost)) > 0:
            await asyncio.sleep(wait)


class RedisRateLimiter:
    """GCRA shared by every process that uses the same Redis key (clock: Redis ``TIME``)."""

    def __init__(self, redis_url: str, key: str, limit: float, window_s: float = 60.0):
        if limit <= 0 or window_s <= 0:
            raise ValueError("rate limit and window must be positive")
        self.redis_url = redis_url
        self.key = key
        self.limit = float(limit)
        self.interval = window_s / limit
        self.tolerance = float(window_s)
        # redis.asyncio connections belong to one event loop: keep one client per loop
        self._clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def _script(self):
        loop = asyncio.get_running_loop()
        entry = self._clients.get(loop)
        if entry is None:
            import redis.asyncio as aioredis

            client = aioredis.Redis.from_url(self.redis_url)
            entry = (client, client.register_script(_GCRA_LUA))
            self._clients[loop] = entry
        return entry[1]

    async def try_acquire(self, cost: float = 1.0) -> float:
        cost = min(float(cost), self.limit)
        script = self._script()
        res = await script(keys=[self.key], args=[repr(self.interval), repr(self.tolerance), repr(cost)])
        return float(res.decode() if isinstance(res, bytes) else res)

    async def acquire(self, cost: float = 1.0) -> None:
        while (wait := await self.try_acquire(cost)) > 0:
            # small jitter so waiting processes do not retry in lock-step
            await asyncio.sleep(wait + random.uniform(0, min(0.05, self.interval)))

    async def aclose(self) -> None:
        for client, _ in list(self._clients.values()):
            await client.aclose()
        self._clients.clear()


_LOCAL: dict[tuple, LocalRateLimiter] = {}
_LOCAL_LOCK = threading.Lock()


def make_limiter(name: str, limit: float, window_s: float, redis_url: str | None) -> RateLimiter:
    """Shared through Redis when configured; otherwise one limiter per (name, limit) in the process."""
    if redis_url:
        return RedisRateLimiter(redis_url, f"labeler:llm:rate:{name}", limit, window_s)
    with _LOCAL_LOCK:
        key = (name, float(limit), float(window_s))
        if key not in _LOCAL:
            _LOCAL[key] = LocalRateLimiter(limit, window_s)
        return _LOCAL[key]
