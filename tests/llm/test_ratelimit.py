"""RPM/TPM limits: GCRA logic with a fake clock, and the Redis limiter shared by two processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from labeler.llm.ratelimit import LocalRateLimiter, RedisRateLimiter

pytestmark = pytest.mark.timeout(90)


def test_gcra_allows_a_burst_then_spaces_requests():
    now = [100.0]
    lim = LocalRateLimiter(limit=10, window_s=1.0, clock=lambda: now[0])
    assert [lim.try_acquire() for _ in range(10)] == [0.0] * 10  # burst of `limit`
    wait = lim.try_acquire()
    assert wait == pytest.approx(0.1)
    now[0] += wait
    assert lim.try_acquire() == 0.0
    assert lim.try_acquire() == pytest.approx(0.1)
    now[0] += 5.0  # idle time refills the bucket, but never beyond `limit`
    assert sum(lim.try_acquire() == 0.0 for _ in range(15)) == 10


def test_gcra_weighted_costs_for_tokens():
    now = [0.0]
    lim = LocalRateLimiter(limit=1000, window_s=60.0, clock=lambda: now[0])
    assert lim.try_acquire(600) == 0.0
    assert lim.try_acquire(600) == pytest.approx(12.0)  # 200 tokens over the limit at 1000/60 per second
    assert lim.try_acquire(5000) > 0  # oversized requests are clamped to the limit, so they can pass later


async def test_redis_limiter_admits_burst_then_waits(redis_url):
    lim = RedisRateLimiter(redis_url, "labeler:test:rl", limit=5, window_s=10.0)
    waits = [await lim.try_acquire() for _ in range(6)]
    assert waits[:5] == [0.0] * 5 and 1.0 < waits[5] <= 2.0
    await lim.aclose()


_WORKER = textwrap.dedent("""
    import asyncio, sys
    from labeler.llm import LLMClient

    async def main():
        llm = LLMClient(model="gpt-4o-mini", base_url=sys.argv[1], api_key="x", cache=False,
                        rpm=LIMIT, rate_window_s=WINDOW, redis_url=sys.argv[2])
        await asyncio.gather(*(llm.chat([{"role": "user", "content": f"{sys.argv[3]} {i}"}], max_tokens=5)
                               for i in range(PER_PROCESS)))
        await llm.aclose()

    asyncio.run(main())
""")


def test_rpm_is_shared_by_two_processes_through_redis(server, redis_url):
    """Two processes with one shared limit of LIMIT per WINDOW: 2 x PER_PROCESS requests need at
    least (2 x PER_PROCESS - LIMIT) / LIMIT windows in all (9 s here); each process alone would
    be done in (PER_PROCESS - LIMIT) / LIMIT = 4 s.  The span from the first to the last arrival
    only grows when a busy machine delays a process, so the check cannot pass by accident and
    does not fail because the machine is slow (a stall can only shorten it by delaying the first
    request, by far less than the 2 s of margin)."""
    limit, window, per_process = 8, 1.0, 40
    code = _WORKER.replace("LIMIT", str(limit)).replace("WINDOW", str(window)).replace("PER_PROCESS", str(per_process))
    procs = [subprocess.Popen([sys.executable, "-c", code, server.base_url, redis_url, f"p{k}"]) for k in range(2)]
    assert [p.wait(timeout=80) for p in procs] == [0, 0]
    assert server.stats["chat"] == 2 * per_process
    shared = (2 * per_process - limit) / limit * window
    alone = (per_process - limit) / limit * window
    span = max(server.arrivals) - min(server.arrivals)
    assert span >= shared - 2.0 > alone + 2.0, f"{span:.2f}s for all requests: the limit was not shared"
