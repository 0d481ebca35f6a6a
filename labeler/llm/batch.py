"""OpenAI Batch API mode: chat requests are collected into JSONL files, submitted as batches,
polled, and each caller gets its answer back, joined by ``custom_id``.

    queue = BatchQueue(openai_client, cache, BatchOptions(collect_s=2, poll_s=30))
    body = await queue.submit(request_key, request_body)   # the chat.completion body

Requests that arrive within ``collect_s`` of the first one of a round go into one batch (at
most ``max_requests``; OpenAI takes 50,000 lines and one model per file).  The ``custom_id`` of
a line is the request's cache key, so a line's answer is found again by content.  The cache
(when there is one) remembers which batch answers which request: a process that restarts
while a batch runs (a redelivered chunk, a rerun job) waits for that batch instead of paying
for the same requests twice.

Lines without an answer (in the error file with a 429/5xx, expired, cancelled, or missing
from both files) are submitted again in a later batch, up to ``line_retries`` times; a line
the provider refused (4xx) fails at once with ``BatchLineFailed`` carrying the provider's
status and message (the client learns reasoning-model quirks from it, as from a sync 400).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

import openai

log = logging.getLogger(__name__)

ENDPOINT = "/v1/chat/completions"
TERMINAL = ("completed", "failed", "expired", "cancelled")
MAX_REQUESTS = 50_000


@dataclass
class BatchOptions:
    """How batches are formed and followed."""

    collect_s: float = 2.0
    """Seconds a batch collects requests after its first one arrived."""
    poll_s: float = 30.0
    """Seconds between two looks at a running batch."""
    max_requests: int = MAX_REQUESTS
    """Lines per batch file; a full round is submitted at once."""
    line_retries: int = 3
    """Resubmissions of a line that came back without an answer."""


class BatchLineFailed(Exception):
    """One request of a batch has no answer (after its resubmissions)."""

    def __init__(self, kind: str, message: str, *, status: int | None = None, param: str | None = None):
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.param = param


def _retryable(status: int | None) -> bool:
    return status is None or status in (408, 409, 429) or status >= 500


def parse_output(text: str) -> dict[str, dict[str, Any]]:
    """custom_id -> the line's envelope, from an output or error file (JSONL; order is not the
    input order)."""
    out: dict[str, dict[str, Any]] = {}
    for raw in text.splitlines():
        raw = raw.strip()
        if not raw:
            continue
        try:
            line = json.loads(raw)
        except json.JSONDecodeError:
            log.warning("batch result line is not JSON: %.200s", raw)
            continue
        if isinstance(line, dict) and line.get("custom_id"):
            out[str(line["custom_id"])] = line
    return out


def line_failure(line: dict[str, Any] | None, batch_status: str) -> BatchLineFailed | None:
    """None when the line holds a usable answer, else why not."""
    if line is None:
        return BatchLineFailed(f"batch_{batch_status}", f"the batch ended {batch_status} without an answer for it")
    response = line.get("response") or None
    if response is not None and int(response.get("status_code") or 0) == 200:
        return None
    if response is not None:
        status = int(response.get("status_code") or 0)
        err = ((response.get("body") or {}).get("error") or {}) if isinstance(response.get("body"), dict) else {}
        return BatchLineFailed(f"http_{status}", str(err.get("message") or f"HTTP {status}"), status=status,
                               param=err.get("param"))
    err = line.get("error") or {}
    return BatchLineFailed(str(err.get("code") or "batch_error"), str(err.get("message") or "no answer"))


class BatchQueue:
    """Batches of one OpenAI client (one event loop)."""

    def __init__(self, client: openai.AsyncOpenAI, cache: Any, options: BatchOptions | None = None):
        self.client = client
        self.cache = cache
        self.options = options or BatchOptions()
        self.submitted: list[str] = []  # batch ids, in order (tests and logs)
        self._bodies: dict[str, dict[str, Any]] = {}
        self._waiting: dict[str, asyncio.Future] = {}
        self._attempts: Counter[str] = Counter()
        self._pending: list[str] = []
        self._batch_keys: dict[str, set[str]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._flush_task: asyncio.Task | None = None

    async def submit(self, key: str, body: dict[str, Any]) -> dict[str, Any]:
        """The chat.completion body answering ``body`` (raises ``BatchLineFailed``)."""
        fut = self._waiting.get(key)
        if fut is None:
            fut = self._waiting[key] = asyncio.get_running_loop().create_future()
            self._bodies[key] = body
            known = self.cache.batch_of(key) if self.cache is not None else None
            if known:
                self._watch(known, [key])
            else:
                self._enqueue(key)
        return await asyncio.shield(fut)

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _enqueue(self, key: str) -> None:
        self._pending.append(key)
        if len(self._pending) >= self.options.max_requests:
            self._spawn(self._flush())
        elif self._flush_task is None or self._flush_task.done():
            self._flush_task = self._spawn(self._flush(delay=self.options.collect_s))

    async def _flush(self, delay: float = 0.0) -> None:
        if delay:
            await asyncio.sleep(delay)
        while self._pending:
            keys = list(dict.fromkeys(self._pending[: self.options.max_requests]))
            del self._pending[: self.options.max_requests]
            await self._send(keys)

    async def _send(self, keys: list[str]) -> None:
        data = "".join(json.dumps({"custom_id": k, "method": "POST", "url": ENDPOINT, "body": self._bodies[k]},
                                  ensure_ascii=False) + "\n" for k in keys).encode("utf-8")
        batch = None
        failure = BatchLineFailed("batch_error", "the batch was not submitted")
        for attempt in range(self.options.line_retries + 1):
            if attempt:
                await asyncio.sleep(min(self.options.poll_s, 2.0 ** attempt))
            try:
                file = await self.client.files.create(file=("labeler-batch.jsonl", data, "application/jsonl"),
                                                      purpose="batch")
                batch = await self.client.batches.create(input_file_id=file.id, endpoint=ENDPOINT,
                                                         completion_window="24h", metadata={"source": "labeler"})
                break
            except openai.APIStatusError as e:
                failure = BatchLineFailed(f"http_{e.status_code}", f"submitting the batch failed: {e}",
                                          status=e.status_code)
                if not _retryable(e.status_code):
                    break
            except (openai.APIConnectionError, openai.APITimeoutError) as e:
                failure = BatchLineFailed("connection", f"submitting the batch failed: {e}")
        if batch is None:
            for k in keys:
                self._fail(k, failure)
            return
        self.submitted.append(batch.id)
        log.info("submitted batch %s with %d request(s)", batch.id, len(keys))
        if self.cache is not None:
            self.cache.remember_batch(keys, batch.id)
        self._watch(batch.id, keys)

    def _watch(self, batch_id: str, keys: list[str]) -> None:
        first = batch_id not in self._batch_keys
        self._batch_keys.setdefault(batch_id, set()).update(keys)
        if first:
            self._spawn(self._follow(batch_id))

    async def _follow(self, batch_id: str) -> None:
        while True:
            try:
                batch = await self.client.batches.retrieve(batch_id)
            except openai.NotFoundError:
                batch = None
            except (openai.APIConnectionError, openai.APITimeoutError, openai.APIStatusError) as e:
                log.warning("polling batch %s failed (%s); trying again", batch_id, e)
                await asyncio.sleep(self.options.poll_s)
                continue
            if batch is None or batch.status in TERMINAL:
                break
            await asyncio.sleep(self.options.poll_s)
        lines: dict[str, dict[str, Any]] = {}
        status = batch.status if batch is not None else "unknown"
        for file_id in ((batch.output_file_id, batch.error_file_id) if batch is not None else ()):
            if file_id:
                lines.update(parse_output((await self.client.files.content(file_id)).text))
        keys = self._batch_keys.pop(batch_id, set())
        if self.cache is not None:
            self.cache.forget_batch(keys)
        errors = "; ".join(e.message or "" for e in (batch.errors.data or [])) if batch and batch.errors else ""
        for key in keys:
            failure = line_failure(lines.get(key), status)
            if failure is None:
                self._done(key, lines[key]["response"]["body"])
            elif status == "failed" and errors:
                self._fail(key, BatchLineFailed("batch_failed", f"the batch was refused: {errors}", status=400))
            elif _retryable(failure.status) and self._attempts[key] < self.options.line_retries:
                self._attempts[key] += 1
                self._enqueue(key)
            else:
                self._fail(key, failure)

    def _done(self, key: str, body: dict[str, Any]) -> None:
        fut = self._waiting.pop(key, None)
        self._bodies.pop(key, None)
        self._attempts.pop(key, None)
        if fut is not None and not fut.done():
            fut.set_result(body)

    def _fail(self, key: str, error: BatchLineFailed) -> None:
        fut = self._waiting.pop(key, None)
        self._bodies.pop(key, None)
        self._attempts.pop(key, None)
        if fut is not None and not fut.done():
            fut.set_exception(error)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for fut in self._waiting.values():
            fut.cancel()
        self._waiting.clear()
