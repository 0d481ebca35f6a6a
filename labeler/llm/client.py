"""The one LLM client: ``openai.AsyncOpenAI`` for any OpenAI-compatible endpoint, plus
tenacity retries, a per-process concurrency cap, RPM/TPM limits (shared through Redis when
configured), a persistent response cache, token/cost accounting (cached prompt tokens and the
Batch API priced as billed), budget caps, request shapes for reasoning models, and the
Batch API mode (``mode="batch"``: half price, answers within the provider's 24 h window).

    llm = get_llm("explainer")            # None when no endpoint is configured (offline)
    resp = await llm.chat(messages, max_tokens=60)
    resp.text, resp.usage, resp.cached
    job_llm = llm.with_budget(budget)     # same connections, charges the job's budget

Order of one call: cache lookup (a hit costs nothing and never waits) -> budget check ->
concurrency slot -> budget check again -> [rate limits -> HTTP request] retried with
exponential backoff + jitter on 429/5xx/timeouts/connection errors (Retry-After honoured,
capped; a 400 naming a parameter the model refuses reshapes the request once) -> cost
charged -> answer cached if the caller's ``validate`` accepts it.  In batch mode the request
joins a batch instead of the concurrency slot and the HTTP request (``labeler.llm.batch``).
"""

from __future__ import annotations

import asyncio
import copy
import functools
import hashlib
import json
import logging
import ssl
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import openai
from openai.types.chat import ChatCompletion
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from labeler.core.config import Settings, get_settings
from labeler.core.errors import LLMError
from labeler.llm import echo, params as shapes
from labeler.llm.batch import BatchLineFailed, BatchOptions, BatchQueue
from labeler.llm.budget import PROCESS_SPEND, Budget, SpendTracker
from labeler.llm.cache import ResponseCache, cache_url, open_cache, request_key
from labeler.llm.pricing import cost_usd, load_prices
from labeler.llm.ratelimit import RateLimiter, make_limiter
from labeler.llm.retry import _BadResponse, _parse_retry_after, _retryable, classify
from labeler.llm.types import LLMResponse, RejectedAnswer, TokenLogprob
from labeler.records import LLMUsage

log = logging.getLogger(__name__)

MODES = ("sync", "batch")


# --- per-process shared state -----------------------------------------------------------------

_LOGPROB_SUPPORT: dict[tuple[str, ...], bool] = {}
_SEMAPHORES: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, asyncio.Semaphore]]" = (
    weakref.WeakKeyDictionary()
)
_CACHES: dict[str, ResponseCache] = {}
_CACHES_LOCK = threading.Lock()


def _process_semaphore(limit: int) -> asyncio.Semaphore:
    """One semaphore per process (and event loop: asyncio primitives belong to one loop)."""
    per_loop = _SEMAPHORES.setdefault(asyncio.get_running_loop(), {})
    if limit not in per_loop:
        per_loop[limit] = asyncio.Semaphore(limit)
    return per_loop[limit]


def _shared_cache(url: str) -> ResponseCache:
    with _CACHES_LOCK:
        if url not in _CACHES:
            _CACHES[url] = open_cache(url)
        return _CACHES[url]


def reset_process_state() -> None:
    """Forget process spend, logprob probes and open caches (tests and long-lived workers)."""
    PROCESS_SPEND.spent_usd = 0.0
    _LOGPROB_SUPPORT.clear()
    shapes.QUIRKS.clear()
    with _CACHES_LOCK:
        for c in _CACHES.values():
            c.close()
        _CACHES.clear()


# --- the client ----------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _ssl_context() -> ssl.SSLContext:
    """One SSL context per process: building one costs ~20 ms, and every client needs it."""
    return ssl.create_default_context()


@dataclass
class LLMClient:
    model: str
    base_url: str | None = None
    api_key: str | None = None
    role: str = "explainer"
    timeout_s: float = 60.0
    max_retries: int = 6
    concurrency: int = 32
    rpm: int | None = None
    tpm: int | None = None
    rate_window_s: float = 60.0  # the "minute" of rpm/tpm (tests shrink it)
    redis_url: str | None = None
    cache: bool = True
    cache_path: Path | None = None  # the SQLite file of the cache when cache_url is not given
    cache_url: str | None = None  # redis://... or a database URL: a cache shared by every worker
    budget_usd: float | None = None  # the process cap, checked against ``spend``
    prices_file: Path | None = None
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0
    retry_after_cap_s: float = 60.0
    spend: SpendTracker = field(default_factory=lambda: PROCESS_SPEND)
    budget: Budget | None = None  # e.g. a job's budget (``with_budget``)
    mode: str = "sync"  # sync | batch (OpenAI Batch API)
    batch: BatchOptions = field(default_factory=BatchOptions)
    reasoning_effort: str | None = "low"  # sent to reasoning models (dropped if refused)
    reasoning_headroom_tokens: int = 1024  # reasoning models: max_completion_tokens = max_tokens + this
    usage: LLMUsage = field(default_factory=LLMUsage)  # running total of this client

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            from labeler.core.errors import ConfigError

            raise ConfigError(f"LLM mode {self.mode!r} is unknown: use one of {', '.join(MODES)}")
        if self.cache and self.cache_url is None:
            self.cache_url = cache_url(None, self.cache_path or get_settings().resolved_llm_cache_path)
        self._cache = _shared_cache(self.cache_url) if self.cache else None  # type: ignore[arg-type]
        self._prices = load_prices(str(self.prices_file) if self.prices_file else None)
        self._openai: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._batches: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._usage_lock = threading.Lock()
        endpoint = hashlib.sha1(f"{self.base_url}|{self.model}".encode()).hexdigest()[:16]
        self._limiters: list[tuple[str, RateLimiter]] = []
        if self.rpm:
            self._limiters.append(("requests", make_limiter(f"{endpoint}:rpm", self.rpm, self.rate_window_s, self.redis_url)))
        if self.tpm:
            self._limiters.append(("tokens", make_limiter(f"{endpoint}:tpm", self.tpm, self.rate_window_s, self.redis_url)))
        self._probe_lock: asyncio.Lock | None = None

    @classmethod
    def from_settings(cls, role: str, settings: Settings | None = None, model: str | None = None,
                      **overrides: Any) -> "LLMClient":
        s = settings or get_settings()
        rs = s.llm_role(role)
        kwargs: dict[str, Any] = dict(
            model=model or rs.model, base_url=rs.base_url, api_key=rs.api_key, role=role,
            timeout_s=s.llm_timeout_s, max_retries=s.llm_max_retries, concurrency=s.llm_concurrency,
            rpm=s.llm_rpm, tpm=s.llm_tpm, redis_url=s.redis_url, cache=s.llm_cache,
            cache_url=cache_url(s.llm_cache_url, s.resolved_llm_cache_path), budget_usd=s.llm_budget_usd,
            prices_file=s.llm_prices_file, mode=s.llm_mode,
            batch=BatchOptions(collect_s=s.llm_batch_collect_s, poll_s=s.llm_batch_poll_s),
            reasoning_effort=s.llm_reasoning_effort or None,
            reasoning_headroom_tokens=s.llm_reasoning_headroom_tokens,
        )
        kwargs.update(overrides)
        return cls(**kwargs)

    def with_budget(self, budget: Budget | None) -> "LLMClient":
        """This client charging ``budget`` (and not the process cap): same connections, limits,
        cache and batches; the runner hands each job's explainer and scorers one of these."""
        clone = copy.copy(self)
        clone.budget, clone.budget_usd = budget, None
        return clone

    # -- plumbing --
    def _client(self) -> openai.AsyncOpenAI:
        loop = asyncio.get_running_loop()
        client = self._openai.get(loop)
        if client is None:
            # retries are ours (tenacity), so the SDK's own are off
            client = openai.AsyncOpenAI(base_url=self.base_url, api_key=self.api_key or "EMPTY",
                                        timeout=self.timeout_s, max_retries=0,
                                        http_client=openai.DefaultAsyncHttpxClient(verify=_ssl_context()))
            self._openai[loop] = client
        return client

    def _batch_queue(self) -> BatchQueue:
        loop = asyncio.get_running_loop()
        queue = self._batches.get(loop)
        if queue is None:
            queue = self._batches[loop] = BatchQueue(self._client(), self._cache, self.batch)
        return queue

    def _wait(self, retry_state: Any) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after = None
        if isinstance(exc, openai.APIStatusError):
            retry_after = _parse_retry_after(exc.response.headers)
        if retry_after is not None:
            return min(retry_after, self.retry_after_cap_s)
        return wait_exponential_jitter(multiplier=self.backoff_initial_s, max=self.backoff_max_s)(retry_state)

    def _add_usage(self, u: LLMUsage) -> None:
        with self._usage_lock:
            self.usage.add(u)

    def _check_budget(self) -> None:
        self.spend.check(self.budget_usd)
        if self.budget is not None:
            self.budget.check()

    def _worst_case_usd(self, params: dict[str, Any], batch: bool) -> float:
        """What one request can cost at most: its prompt at ~3 characters a token (an over-
        estimate for text) plus every completion token it may write."""
        shaped = self._shape(params) if "messages" in params else params
        chars = (sum(len(str(m.get("content", ""))) for m in params["messages"]) if "messages" in params
                 else len(str(params.get("prompt", ""))))
        completion = int(shaped.get("max_completion_tokens") or shaped.get("max_tokens") or 0)
        return cost_usd(self.model, chars // 3 + 16, completion, self._prices, batch=batch)

    def _reserve(self, usd: float) -> None:
        self.spend.reserve(usd, self.budget_usd)
        if self.budget is not None:
            try:
                self.budget.reserve(usd)
            except BaseException:
                self.spend.settle(usd, 0.0)
                raise

    def _settle(self, reserved: float, spent: float) -> None:
        self.spend.settle(reserved, spent)
        if self.budget is not None:
            self.budget.settle(reserved, spent)

    def _shape(self, params: dict[str, Any]) -> dict[str, Any]:
        return shapes.shape(params, shapes.QUIRKS.get(self.base_url, self.model),
                            reasoning_effort=self.reasoning_effort, headroom_tokens=self.reasoning_headroom_tokens)

    def _learn(self, message: str, param: str | None) -> bool:
        """Whether a 400 taught what this model refuses (then the request is sent again)."""
        learned = shapes.learn(shapes.QUIRKS.get(self.base_url, self.model), message, param)
        if learned is None:
            return False
        log.info("%s at %s refuses a parameter (%s): requests are reshaped from now on", self.model,
                 self.base_url or "api.openai.com", message)
        shapes.QUIRKS.set(self.base_url, self.model, learned)
        return True

    @property
    def cache_store(self) -> ResponseCache | None:
        return self._cache

    # -- the API --
    async def chat(
        self,
        messages: list[dict[str, str]],
        max_tokens: int = 256,
        temperature: float = 0.0,
        logprobs: bool = False,
        top_logprobs: int | None = None,
        response_format: dict[str, Any] | None = None,
        *,
        cache_salt: str | None = None,
        use_cache: bool = True,
        validate: Callable[[LLMResponse], Any] | None = None,
    ) -> LLMResponse:
        """One chat completion.  ``cache_salt`` distinguishes deliberate repeats of one request
        (best-of-N candidates, retries after an unusable answer) so each gets its own cache entry.

        ``validate(response)`` raises when the answer is unusable (the caller's parser): such an
        answer is never cached and ``RejectedAnswer`` (with the answer and the parser's error)
        reaches the caller; a cached answer that fails it is dropped and asked for again."""
        params: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": max_tokens,
                                  "temperature": temperature}
        if logprobs:
            params["logprobs"] = True
            if top_logprobs:
                params["top_logprobs"] = top_logprobs
        if response_format is not None:
            params["response_format"] = response_format
        return await self._request(params, cache_salt, use_cache, validate)

    async def complete_echo(self, prompt: str, top_logprobs: int, *, use_cache: bool = True,
                            validate: Callable[[LLMResponse], Any] | None = None) -> LLMResponse:
        """The prompt scored, nothing generated (``labeler.llm.echo``): cached, budgeted,
        retried and validated like :meth:`chat`; always a direct request, never batched."""
        return await self._request(echo.params(self.model, prompt, top_logprobs), None, use_cache, validate)

    async def supports_prompt_logprobs(self) -> bool:
        """Whether the endpoint returns prompt logprobs (vLLM's completions echo); probed once
        per (base_url, model) in this process."""
        key = (str(self.base_url), self.model, "echo")
        if key not in _LOGPROB_SUPPORT:
            _LOGPROB_SUPPORT[key] = await echo.probe(self)
        return _LOGPROB_SUPPORT[key]

    async def _request(self, params: dict[str, Any], cache_salt: str | None, use_cache: bool,
                       validate: Callable[[LLMResponse], Any] | None) -> LLMResponse:
        cache = self._cache if use_cache else None
        key = request_key({**params, "base_url": self.base_url, "salt": cache_salt})
        if cache is not None and (hit := cache.get(key)) is not None:
            resp = LLMResponse.from_dict(hit)
            resp.cached = True
            resp.usage = LLMUsage(calls=1, prompt_tokens=resp.usage.prompt_tokens,
                                  completion_tokens=resp.usage.completion_tokens, cost_usd=0.0, cached_calls=1,
                                  cached_prompt_tokens=resp.usage.cached_prompt_tokens)
            if _passes(validate, resp):
                self._add_usage(resp.usage)
                return resp
            cache.delete(key)

        self._check_budget()
        batch = self.mode == "batch" and "prompt" not in params  # batches hold chat requests only
        held = self._worst_case_usd(params, batch)
        if batch:
            self._reserve(held)
            resp = await self._held(held, self._through_batch(key, params))
        else:
            async with _process_semaphore(self.concurrency):
                self._reserve(held)  # held only while the call runs, not while it queues
                resp = await self._held(held, self._with_retries(params))
        u = resp.usage
        u.cost_usd = cost_usd(self.model, u.prompt_tokens, u.completion_tokens, self._prices,
                              cached_tokens=u.cached_prompt_tokens, batch=batch)
        self._settle(held, u.cost_usd)
        self._add_usage(u)
        if validate is not None:
            try:
                validate(resp)
            except Exception as e:  # whatever the caller's parser raises: do not keep this answer
                raise RejectedAnswer(resp, e) from e
        if cache is not None:
            cache.put(key, self.model, resp.to_dict())
        return resp

    async def _held(self, held: float, call: Any) -> LLMResponse:
        """Await the call; when it fails unanswered, give its reservation back."""
        try:
            return await call
        except BaseException:
            self._settle(held, 0.0)
            raise

    async def _through_batch(self, key: str, params: dict[str, Any]) -> LLMResponse:
        for _ in range(4):  # at most one reshape per refused parameter
            try:
                body = await self._batch_queue().submit(key, self._shape(params))
            except BatchLineFailed as e:
                if e.status == 400 and self._learn(str(e), e.param):
                    continue
                raise LLMError(f"LLM batch request to {self.model} at {self.base_url or 'api.openai.com'} "
                               f"failed: {e.kind}: {e}", kind=e.kind) from e
            try:
                return self._parse(ChatCompletion.model_validate(body), params)
            except (_BadResponse, ValueError) as e:
                raise LLMError(f"LLM batch answer from {self.model} is unusable: {e}", kind="bad_response") from e
        raise LLMError(f"{self.model} keeps refusing parameters of the request", kind="http_400")

    async def _with_retries(self, params: dict[str, Any]) -> LLMResponse:
        chars = len(params["prompt"]) if "prompt" in params else sum(len(str(m.get("content", "")))
                                                                      for m in params["messages"])
        token_estimate = chars // 4 + params["max_tokens"]
        attempts = 0
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.max_retries + 1), wait=self._wait,
                retry=retry_if_exception(_retryable), reraise=True,
            ):
                with attempt:
                    attempts += 1
                    for what, limiter in self._limiters:
                        await limiter.acquire(token_estimate if what == "tokens" else 1)
                    return await self._once(params)
        except (openai.OpenAIError, _BadResponse, json.JSONDecodeError) as e:
            kind, retryable = classify(e)
            tried = f"after {attempts} attempts" if retryable else "(not retried: asking again cannot succeed)"
            raise LLMError(f"LLM call to {self.model} at {self.base_url or 'api.openai.com'} failed {tried}: "
                           f"{kind}: {e}", kind=kind) from e
        raise AssertionError("unreachable")  # pragma: no cover

    async def _once(self, params: dict[str, Any]) -> LLMResponse:
        if "prompt" in params:
            return echo.parse(await self._client().completions.create(**params), params, self.model)
        for _ in range(4):  # at most one reshape per refused parameter
            try:
                completion = await self._client().chat.completions.create(**self._shape(params))
                break
            except openai.BadRequestError as e:
                err = e.body.get("error", e.body) if isinstance(e.body, dict) else {}
                message = str(err.get("message") or e.message) if isinstance(err, dict) else e.message
                if not self._learn(message, err.get("param") if isinstance(err, dict) else None):
                    raise
        else:
            raise _BadResponse(f"{self.model} keeps refusing parameters of the request")
        return self._parse(completion, params)

    def _parse(self, completion: Any, params: dict[str, Any]) -> LLMResponse:
        if not getattr(completion, "choices", None):
            raise _BadResponse("the endpoint returned no choices")
        choice = completion.choices[0]
        text = (choice.message.content if choice.message else None) or ""
        lps: list[TokenLogprob] | None = None
        if params.get("logprobs") and choice.logprobs is not None and choice.logprobs.content is not None:
            lps = [TokenLogprob(token=t.token, logprob=float(t.logprob),
                                top={a.token: float(a.logprob) for a in (t.top_logprobs or [])})
                   for t in choice.logprobs.content]
        u = completion.usage
        if u is not None:
            details = getattr(u, "prompt_tokens_details", None)
            usage = LLMUsage(calls=1, prompt_tokens=int(u.prompt_tokens or 0),
                             completion_tokens=int(u.completion_tokens or 0),
                             cached_prompt_tokens=int(getattr(details, "cached_tokens", 0) or 0))
        else:  # some servers omit usage: estimate (~4 characters per token)
            prompt_chars = sum(len(str(m.get("content", ""))) for m in params["messages"])
            usage = LLMUsage(calls=1, prompt_tokens=prompt_chars // 4, completion_tokens=len(text) // 4)
        return LLMResponse(text=text, logprobs=lps, usage=usage, cached=False,
                           model=getattr(completion, "model", None) or self.model,
                           finish_reason=choice.finish_reason)

    async def supports_logprobs(self) -> bool:
        """Whether the endpoint returns per-token logprobs with alternatives; probed once per
        (base_url, model) in this process, always with a direct (not batched) request."""
        key = (str(self.base_url), self.model)
        if key in _LOGPROB_SUPPORT:
            return _LOGPROB_SUPPORT[key]
        if self._probe_lock is None:
            self._probe_lock = asyncio.Lock()
        async with self._probe_lock:
            if key in _LOGPROB_SUPPORT:
                return _LOGPROB_SUPPORT[key]
            direct = copy.copy(self)
            direct.mode = "sync"
            try:
                resp = await direct.chat([{"role": "user", "content": "Answer with one digit: 7"}],
                                         max_tokens=1, logprobs=True, top_logprobs=2, use_cache=False)
                ok = bool(resp.logprobs) and bool(resp.logprobs[0].top)
            except LLMError as e:
                # o-series models answer 403 "You are not allowed to request logprobs from this model"
                if e.kind not in ("http_400", "http_403", "http_422", "http_404"):
                    raise
                ok = False
            _LOGPROB_SUPPORT[key] = ok
            return ok

    async def aclose(self) -> None:
        for queue in list(self._batches.values()):
            await queue.aclose()
        self._batches.clear()
        for client in list(self._openai.values()):
            await client.close()
        self._openai.clear()
        for _, limiter in self._limiters:
            if hasattr(limiter, "aclose"):
                await limiter.aclose()  # type: ignore[union-attr]

    def describe(self) -> dict[str, Any]:
        return {"model": self.model, "base_url": self.base_url, "role": self.role, "cache": self.cache,
                "mode": self.mode}


def _passes(validate: Callable[[LLMResponse], Any] | None, resp: LLMResponse) -> bool:
    if validate is None:
        return True
    try:
        validate(resp)
    except Exception:  # whatever the caller's parser raises: the cached answer is unusable
        return False
    return True


def get_llm(role: str, settings: Settings | None = None, model: str | None = None, **overrides: Any) -> LLMClient | None:
    """The client for one role (explainer, simulator, scorer), or None when no endpoint is
    configured, in which case callers use their offline fallbacks."""
    s = settings or get_settings()
    if not s.llm_role(role).configured:
        return None
    return LLMClient.from_settings(role, s, model=model, **overrides)
