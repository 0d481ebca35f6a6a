"""An OpenAI-compatible HTTP server we own, for tests, benchmarks and manual runs.

Endpoints: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models``; every
answer carries ``usage`` (whitespace/punctuation token counts), and ``logprobs`` /
``top_logprobs`` (chat format; legacy format for completions) when requested.

In a test (starts on a free localhost port in a background thread)::

    with TestLLMServer(latency_s=0.05, seed=1) as server:
        llm = LLMClient(model="test-model", base_url=server.base_url, api_key="x")
        ...
        server.configure(fail_429=0.2, retry_after_s=0.1)   # change behaviour at any time
        server.script("first answer", {"status": 500}, {"hang": True})  # queue, used first
        server.stats["chat"], server.stats["http_429"], server.requests[-1]["messages"]

From the shell: ``labeler llm-test-server --port 8089 --latency 0.2``.

How answers are chosen, first match wins:
1. the scripted queue (``script(...)``): a string (the answer), or a dict with any of
   ``text``, ``finish_reason``, ``logprobs``, ``status`` (an HTTP error, e.g. 429 / 500 / 401),
   ``retry_after`` (header for that error), ``hang: True`` (never answers before the client
   gives up), ``malformed: True``, ``truncated: True``;
2. random failures, drawn with ``seed``: ``fail_429`` (with ``Retry-After: retry_after_s``),
   ``fail_500``, ``hang`` (sleeps ``hang_s``, past the client timeout), ``malformed`` (200 with
   garbage text), ``broken_json`` (200 with a body that is not JSON), ``truncated`` (the answer
   cut in half with ``finish_reason: "length"``), each a probability per request;
3. rules: ``server.add_rule(predicate, responder)`` (this server) then the module-level
   ``add_rule(predicate, responder)`` (every server in the process), newest first.
   ``predicate(request_json) -> bool``; ``responder(request_json) -> str | Reply``
   (``Reply(text, logprobs=[(token, logprob, {alternative: logprob})], finish_reason)``).
   For ``/v1/completions`` the request has ``prompt`` instead of ``messages``;
   ``prompt_text(request_json)`` gives the text of either.
4. the default rule, which understands labeler's explanation prompts: it finds the tokens
   marked ``<<like this>>`` (or listed as ``"token"=7`` pairs) and answers a short phrase naming
   the most frequent one (``the token "bridge"``); when the prompt asks for a line starting
   ``EXPLANATION:`` it writes one line of reasoning first.  Requests for logprobs without a
   rule-provided distribution get one per generated token: the token itself most likely, then
   digits as alternatives.

Also: ``api_key`` (401 on mismatch), ``models`` (404 for others), ``logprobs_mode``
("on" | "ignore": answer without logprobs | "error": 400), ``prompt_logprobs`` (completions
with ``echo`` + ``logprobs`` answered like vLLM: the prompt back with logprobs per prompt
token, see ``labeler.testing.echo``; off by default, when the request gets OpenAI's 400),
``latency_s`` + ``jitter_s``; see ``labeler.testing.provider`` and ``labeler.testing.batch_api``
for the rest.
Counters in ``stats`` (by endpoint and outcome) let tests assert what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from labeler.testing.batch_api import BatchAPI
from labeler.testing.replies import (_GLOBAL_RULES, _TOKEN_RE, Predicate, Reply, Responder,  # noqa: F401
                                     _default_logprobs, add_rule, count_tokens, default_responder, prompt_text,
                                     remove_rule)
from labeler.testing.provider import PromptCache, reasoning_refusal
from labeler.testing.echo import echo_pieces, is_echo

_GARBAGE = "#@!%&*{}[]<>|~^`$=+\\/"


@dataclass
class ServerConfig:
    seed: int = 0
    latency_s: float = 0.0
    jitter_s: float = 0.0
    fail_429: float = 0.0
    fail_500: float = 0.0
    hang: float = 0.0
    malformed: float = 0.0
    broken_json: float = 0.0
    truncated: float = 0.0
    retry_after_s: float | str = 1.0  # seconds, or an HTTP date string
    hang_s: float = 30.0
    logprobs_mode: str = "on"  # on | ignore | error
    prompt_logprobs: bool = False  # completions with echo + logprobs (vLLM): on; off: 400 as OpenAI
    api_key: str | None = None
    models: list[str] | None = None
    reasoning_models: list[str] | None = None  # labeler.testing.provider: refuse max_tokens, temperature
    prompt_cache: bool = False  # labeler.testing.provider: report cached prompt tokens
    batch_latency_s: float = 0.0  # labeler.testing.batch_api: how long a batch runs
    batch_expire: float = 0.0  # labeler.testing.batch_api: probability a line is left unanswered


class TestLLMServer:
    """Context manager: an OpenAI-compatible server on a free localhost port (background thread)."""

    __test__ = False  # not a pytest test class

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **config: Any):
        self.host = host
        self.port = port
        self.config = ServerConfig()
        self.stats: Counter[str] = Counter()
        self.requests: list[dict[str, Any]] = []
        self.arrivals: list[float] = []  # time.time() of each request (rate-limit tests)
        self._rules: list[tuple[Predicate, Responder]] = []
        self._script: list[Any] = []
        self._lock = threading.Lock()
        self._inflight = 0
        self._rng = random.Random(0)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self.configure(**config)
        self.prompt_cache = PromptCache()
        self.batch_api = BatchAPI(self)
        self.app = Starlette(routes=[
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/completions", self._completions, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
            *self.batch_api.routes(),
        ])

    # -- configuration --
    def configure(self, **kw: Any) -> "TestLLMServer":
        with self._lock:
            for k, v in kw.items():
                if not hasattr(self.config, k):
                    raise TypeError(f"unknown test server setting {k!r}")
                setattr(self.config, k, v)
            if "seed" in kw:
                self._rng = random.Random(kw["seed"])
        return self

    def script(self, *items: Any) -> "TestLLMServer":
        with self._lock:
            self._script.extend(items)
        return self

    def add_rule(self, predicate: Predicate, responder: Responder) -> "TestLLMServer":
        with self._lock:
            self._rules.insert(0, (predicate, responder))
        return self

    def reset_stats(self) -> None:
        with self._lock:
            self.stats.clear()
            self._inflight = 0
            self.requests.clear()
            self.arrivals.clear()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    # -- lifecycle --
    def start(self) -> "TestLLMServer":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit this; without it Nagle's algorithm meets the client's
        # delayed ACK and every keep-alive response waits ~40 ms (measured: 44 ms -> 1.4 ms).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        cfg = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off",
                             timeout_graceful_shutdown=1, timeout_keep_alive=30)
        self._server = uvicorn.Server(cfg)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name=f"llm-test-server:{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("LLM test server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.should_exit = True
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)  # release hung requests
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None

    def __enter__(self) -> "TestLLMServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Foreground mode for the CLI command (starts the server unless it already runs)."""
        if self._server is None:
            self.start()
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(0.5)
        finally:
            self.stop()

    # -- request handling --
    def _count(self, *keys: str) -> None:
        with self._lock:
            for k in keys:
                self.stats[k] += 1

    def _next_action(self) -> dict[str, Any] | None:
        """A scripted item, or a randomly drawn failure, or None (answer normally)."""
        with self._lock:
            if self._script:
                item = self._script.pop(0)
                return {"text": item} if isinstance(item, str) else dict(item)
            c = self.config
            r = self._rng.random()
            for name, p in (("fail_429", c.fail_429), ("fail_500", c.fail_500), ("hang", c.hang),
                            ("malformed", c.malformed), ("broken_json", c.broken_json),
                            ("truncated", c.truncated)):
                if r < p:
                    return {"fail_429": {"status": 429}, "fail_500": {"status": 500}}.get(name, {name: True})
                r -= p
            return None

    def _answer(self, req: dict[str, Any]) -> Reply:
        with self._lock:
            rules = list(self._rules) + list(_GLOBAL_RULES)
        for predicate, responder in rules:
            if predicate(req):
                out = responder(req)
                return out if isinstance(out, Reply) else Reply(str(out))
        if is_echo(req):
            return Reply(prompt_text(req), echo_pieces(prompt_text(req)))
        return Reply(default_responder(req))

    # -- prompt logprobs (vLLM's completions echo) --
    def _echo_refusal(self, req: dict[str, Any]) -> Response | None:
        """OpenAI's answer to echo + logprobs, unless this server plays vLLM (``prompt_logprobs``)."""
        if is_echo(req) and not self.config.prompt_logprobs:
            self._count("http_400")
            return self._error(400, "Setting 'echo' and 'logprobs' at the same time is not supported for this model.")
        if is_echo(req):
            self._count("echo")
        return None

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        kind = {429: "rate_limit_exceeded", 401: "invalid_api_key", 404: "model_not_found"}.get(status, "server_error")
        return JSONResponse({"error": {"message": message, "type": kind, "code": kind}},
                            status_code=status, headers=headers)

    async def _prepare(self, request: Request, endpoint: str) -> tuple[dict[str, Any] | None, Response | None]:
        if self._stopping is None:
            self._loop = asyncio.get_running_loop()
            self._stopping = asyncio.Event()
        with self._lock:
            self.stats["requests"] += 1
            self.stats[endpoint] += 1
            self.arrivals.append(time.time())
        try:
            req = json.loads(await request.body())
            assert isinstance(req, dict)
        except Exception:
            self._count("http_400")
            return None, self._error(400, "request body is not a JSON object")
        with self._lock:
            self.requests.append(req)
        c = self.config
        if c.api_key is not None and request.headers.get("authorization") != f"Bearer {c.api_key}":
            self._count("http_401")
            return None, self._error(401, "Incorrect API key provided")
        refusal = self._refusal(req)
        if refusal is None:
            refusal = self._echo_refusal(req)
        if refusal is not None:
            return None, refusal
        delay = c.latency_s + (self._rng.uniform(0, c.jitter_s) if c.jitter_s else 0.0)
        if delay > 0:
            await asyncio.sleep(delay)
        return req, None

    def _refusal(self, req: dict[str, Any]) -> Response | None:
        """The error this endpoint answers the request with, before any reply is drawn."""
        c = self.config
        if c.models is not None and req.get("model") not in c.models:
            out = self._error(404, f"The model {req.get('model')!r} does not exist")
        elif req.get("logprobs") and c.logprobs_mode == "error":
            out = self._error(400, "logprobs are not supported by this endpoint")
        else:
            out = reasoning_refusal(req, c.reasoning_models)
        if out is not None:
            self._count(f"http_{out.status_code}")
        return out

    async def _failure_or_reply(self, req: dict[str, Any]) -> tuple[Reply | None, Response | None]:
        action = self._next_action() or {}
        status = action.get("status")
        if status:
            self._count(f"http_{status}")
            headers = {}
            if status == 429:
                ra = action.get("retry_after", self.config.retry_after_s)
                headers["retry-after"] = ra if isinstance(ra, str) else f"{ra:g}"
            return None, self._error(int(status), f"injected HTTP {status}", headers)
        if action.get("hang"):
            self._count("hang")
            assert self._stopping is not None
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=self.config.hang_s)
            except asyncio.TimeoutError:
                pass
            return None, self._error(500, "hung request released")
        if action.get("broken_json"):
            self._count("broken_json")
            return None, Response('{"id": "chatcmpl-broken", "choices": [', media_type="application/json")
        if action.get("malformed"):
            self._count("malformed")
            with self._lock:
                garbage = "".join(self._rng.choice(_GARBAGE) for _ in range(24))
            return Reply(garbage), None
        if "text" in action:
            reply = Reply(action["text"], action.get("logprobs"), action.get("finish_reason"))
        else:
            reply = self._answer(req)
        limit = req.get("max_tokens") or req.get("max_completion_tokens")
        if action.get("truncated"):
            self._count("truncated")
            reply = Reply(reply.text[: max(0, len(reply.text) // 2)], None, "length")
        elif limit and count_tokens(reply.text) > int(limit):  # honour max_tokens like a real endpoint
            kept = _TOKEN_RE.findall(reply.text)[: int(limit)]
            cut = reply.text
            end = 0
            for t in kept:
                end = cut.index(t, end) + len(t)
            reply = Reply(cut[:end], None, "length")
            self._count("cut_by_max_tokens")
        self._count("ok")
        return reply, None

    def _logprobs_for(self, req: dict[str, Any], reply: Reply, n_top: int) -> list[tuple[str, float, dict[str, float]]] | None:
        if self.config.logprobs_mode != "on":
            return None
        return reply.logprobs if reply.logprobs is not None else _default_logprobs(reply.text, n_top)

    async def _chat(self, request: Request) -> Response:
        with self._in_flight():
            return await self._chat_inner(request)

    async def _completions(self, request: Request) -> Response:
        with self._in_flight():
            return await self._completions_inner(request)

    @contextlib.contextmanager
    def _in_flight(self):
        """Track concurrent requests (``stats["max_in_flight"]``: concurrency-cap tests)."""
        with self._lock:
            self._inflight += 1
            self.stats["max_in_flight"] = max(self.stats["max_in_flight"], self._inflight)
        try:
            yield
        finally:
            with self._lock:
                self._inflight -= 1

    async def _request_and_reply(self, request: Request, kind: str) -> tuple[dict, Any, Response | None]:
        """Parse and check the request, then draw a failure or produce the reply."""
        req, err = await self._prepare(request, kind)
        if err is not None:
            return {}, None, err
        assert req is not None
        reply, err = await self._failure_or_reply(req)
        return req, reply, err

    async def _chat_inner(self, request: Request) -> Response:
        req, reply, err = await self._request_and_reply(request, "chat")
        if err is not None:
            return err
        return JSONResponse(self.chat_body(req, reply))

    def chat_body(self, req: dict[str, Any], reply: Reply) -> dict[str, Any]:
        """The chat.completion object answering ``req`` with ``reply``."""
        lp_block = None
        if req.get("logprobs"):
            lps = self._logprobs_for(req, reply, int(req.get("top_logprobs") or 0))
            if lps is not None:
                lp_block = {"content": [
                    {"token": t, "logprob": lp, "bytes": list(t.encode()),
                     "top_logprobs": [{"token": a, "logprob": alp, "bytes": list(a.encode())}
                                      for a, alp in list(top.items())[: int(req.get("top_logprobs") or 0)]]}
                    for t, lp, top in lps]}
        tokens = _TOKEN_RE.findall(prompt_text(req))
        completion_tokens = count_tokens(reply.text)
        usage: dict[str, Any] = {"prompt_tokens": len(tokens), "completion_tokens": completion_tokens,
                                 "total_tokens": len(tokens) + completion_tokens}
        if self.config.prompt_cache:
            usage["prompt_tokens_details"] = {"cached_tokens": self.prompt_cache.cached_tokens(tokens)}
        return {
            "id": f"chatcmpl-test{self.stats['requests']}", "object": "chat.completion",
            "created": int(time.time()), "model": req.get("model", "test-model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text},
                         "logprobs": lp_block, "finish_reason": reply.finish_reason or "stop"}],
            "usage": usage,
        }

    async def _completions_inner(self, request: Request) -> Response:
        req, reply, err = await self._request_and_reply(request, "completions")
        if err is not None:
            return err
        lp_block = None
        if req.get("logprobs") is not None and req.get("logprobs") is not False:
            n_top = int(req["logprobs"]) if not isinstance(req["logprobs"], bool) else 1
            lps = self._logprobs_for(req, reply, n_top)
            if lps is not None:
                offsets, pos = [], 0
                for t, _, _ in lps:
                    offsets.append(pos)
                    pos += len(t)
                lp_block = {"tokens": [t for t, _, _ in lps], "token_logprobs": [lp for _, lp, _ in lps],
                            "top_logprobs": [dict(list(top.items())[:n_top]) for _, _, top in lps],
                            "text_offset": offsets}
                if is_echo(req):  # as vLLM: the first prompt token has no context, so no logprobs
                    lp_block["token_logprobs"][0] = lp_block["top_logprobs"][0] = None
        prompt_tokens = count_tokens(prompt_text(req))
        completion_tokens = 0 if is_echo(req) and not req.get("max_tokens") else count_tokens(reply.text)
        return JSONResponse({
            "id": f"cmpl-test{self.stats['requests']}", "object": "text_completion",
            "created": int(time.time()), "model": req.get("model", "test-model"),
            "choices": [{"index": 0, "text": reply.text, "logprobs": lp_block,
                         "finish_reason": reply.finish_reason or "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        })

    async def _models(self, request: Request) -> Response:
        self._count("requests", "models")
        names = self.config.models or ["test-model"]
        return JSONResponse({"object": "list", "data": [
            {"id": m, "object": "model", "created": 0, "owned_by": "labeler-test"} for m in names]})


