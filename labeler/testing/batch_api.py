"""OpenAI's Files and Batch endpoints for the test server: ``POST /v1/files`` (multipart upload,
purpose ``batch``), ``GET /v1/files/{id}``, ``GET /v1/files/{id}/content``, ``POST /v1/batches``,
``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``.

A batch is validated (one JSON object per line with ``custom_id``, ``method`` POST, ``url`` equal
to the batch's endpoint, unique ``custom_id``s; otherwise the batch ``failed`` with ``errors``),
then after the server's ``batch_latency_s`` every line is answered like a chat request (rules,
oracle, scripted and random failures, reasoning-model refusals).  Answers go to the output
file, failures (non-200 lines) to the error file, in an order that is not the input order.
``batch_expire`` is the probability that a line is left unanswered and the batch ends
``expired``, as a batch whose 24 h window passed does.  Counters: ``stats["batches"]``,
``stats["batch_lines"]``, ``stats["files"]``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from labeler.testing.provider import openai_error

_IDS = itertools.count(1)


def _now() -> int:
    return int(time.time())


class BatchAPI:
    """Files and batches of one ``TestLLMServer``."""

    def __init__(self, server: Any):
        self.server = server
        self.files: dict[str, dict[str, Any]] = {}
        self.contents: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self._tasks: set[asyncio.Task] = set()

    def routes(self) -> list[Route]:
        return [
            Route("/v1/files", self.create_file, methods=["POST"]),
            Route("/v1/files/{file_id}", self.get_file, methods=["GET"]),
            Route("/v1/files/{file_id}/content", self.file_content, methods=["GET"]),
            Route("/v1/batches", self.create_batch, methods=["POST"]),
            Route("/v1/batches/{batch_id}", self.get_batch, methods=["GET"]),
            Route("/v1/batches/{batch_id}/cancel", self.cancel_batch, methods=["POST"]),
        ]

    # -- files --
    def _store(self, name: str, data: bytes, purpose: str) -> dict[str, Any]:
        fid = f"file-test{next(_IDS)}"
        self.files[fid] = {"id": fid, "object": "file", "bytes": len(data), "created_at": _now(), "filename": name,
                           "purpose": purpose, "status": "processed"}
        self.contents[fid] = data
        return self.files[fid]

    async def create_file(self, request: Request) -> Response:
        self.server._count("requests", "files")
        form = await request.form()
        upload, purpose = form.get("file"), form.get("purpose")
        if upload is None or isinstance(upload, str) or purpose not in ("batch", "fine-tune", "assistants"):
            return openai_error(400, "a file and a purpose (batch) are required", param="file", code=None)
        return JSONResponse(self._store(upload.filename or "upload.jsonl", await upload.read(), str(purpose)))

    async def get_file(self, request: Request) -> Response:
        f = self.files.get(request.path_params["file_id"])
        return JSONResponse(f) if f else openai_error(404, "No such file", param="file_id", code=None)

    async def file_content(self, request: Request) -> Response:
        data = self.contents.get(request.path_params["file_id"])
        if data is None:
            return openai_error(404, "No such file", param="file_id", code=None)
        return Response(data, media_type="application/octet-stream")

    # -- batches --
    async def create_batch(self, request: Request) -> Response:
        self.server._count("requests", "batches")
        body = json.loads(await request.body() or b"{}")
        fid, endpoint = body.get("input_file_id"), body.get("endpoint")
        if fid not in self.contents:
            return openai_error(400, f"input file {fid!r} does not exist", param="input_file_id", code=None)
        if endpoint != "/v1/chat/completions" or body.get("completion_window") != "24h":
            return openai_error(400, "only endpoint /v1/chat/completions and completion_window 24h are served",
                                param="endpoint", code=None)
        bid = f"batch_test{next(_IDS)}"
        now = _now()
        self.batches[bid] = {
            "id": bid, "object": "batch", "endpoint": endpoint, "errors": None, "input_file_id": fid,
            "completion_window": "24h", "status": "validating", "output_file_id": None, "error_file_id": None,
            "created_at": now, "in_progress_at": None, "expires_at": now + 86400, "finalizing_at": None,
            "completed_at": None, "failed_at": None, "expired_at": None, "cancelling_at": None,
            "cancelled_at": None, "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": body.get("metadata")}
        task = asyncio.get_running_loop().create_task(self._run(bid))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return JSONResponse(self.batches[bid])

    async def get_batch(self, request: Request) -> Response:
        self.server._count("batch_polls")
        b = self.batches.get(request.path_params["batch_id"])
        return JSONResponse(b) if b else openai_error(404, "No such batch", param="batch_id", code=None)

    async def cancel_batch(self, request: Request) -> Response:
        b = self.batches.get(request.path_params["batch_id"])
        if b is None:
            return openai_error(404, "No such batch", param="batch_id", code=None)
        if b["status"] in ("validating", "in_progress"):
            b["status"], b["cancelling_at"] = "cancelling", _now()
        return JSONResponse(b)

    def _lines(self, batch: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(requests, validation errors) of a batch's input file."""
        lines, errors, seen = [], [], set()
        for n, raw in enumerate(self.contents[batch["input_file_id"]].decode("utf-8").splitlines(), 1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
                assert isinstance(line, dict) and isinstance(line.get("body"), dict)
            except (json.JSONDecodeError, AssertionError):
                errors.append({"code": "invalid_json_line", "line": n, "message": "not a JSON request object",
                               "param": None})
                continue
            cid = line.get("custom_id")
            if not cid or cid in seen or line.get("method") != "POST" or line.get("url") != batch["endpoint"]:
                errors.append({"code": "invalid_request", "line": n, "param": "custom_id",
                               "message": "custom_id must be unique and method/url must match the batch endpoint"})
                continue
            seen.add(cid)
            lines.append(line)
        return lines, errors

    def _draw(self) -> float:
        with self.server._lock:
            return self.server._rng.random()

    async def _answer(self, req: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        s = self.server
        s._count("batch_lines")
        with s._lock:
            s.requests.append(req)
        refusal = s._refusal(req)
        reply, err = (None, refusal) if refusal is not None else await s._failure_or_reply(req)
        if err is not None:
            try:
                return err.status_code, json.loads(err.body)
            except json.JSONDecodeError:  # a broken body: what a client would see as a 500
                return 500, {"error": {"message": "the server sent a broken body", "type": "server_error"}}
        return 200, s.chat_body(req, reply)

    async def _run(self, bid: str) -> None:
        batch = self.batches[bid]
        lines, errors = self._lines(batch)
        if errors or not lines:
            batch.update(status="failed", failed_at=_now(),
                         errors={"object": "list", "data": errors or [{"code": "empty_file", "line": None,
                                                                       "param": None, "message": "no requests"}]})
            return
        batch.update(status="in_progress", in_progress_at=_now())
        batch["request_counts"]["total"] = len(lines)
        await asyncio.sleep(self.server.config.batch_latency_s)
        out, err, expired = [], [], False
        for line in lines:
            if batch["status"] == "cancelling" or self._draw() < self.server.config.batch_expire:
                expired = expired or batch["status"] != "cancelling"
                code = "batch_cancelled" if batch["status"] == "cancelling" else "batch_expired"
                err.append({"id": f"batch_req_{next(_IDS)}", "custom_id": line["custom_id"], "response": None,
                            "error": {"code": code, "message": "This request could not be executed before the "
                                                               "completion window expired."}})
                continue
            status, body = await self._answer(line["body"])
            entry = {"id": f"batch_req_{next(_IDS)}", "custom_id": line["custom_id"],
                     "response": {"status_code": status, "request_id": f"req_{next(_IDS)}", "body": body},
                     "error": None}
            (out if status == 200 else err).append(entry)
        out.reverse()  # the output order is not the input order
        counts = batch["request_counts"]
        counts["completed"], counts["failed"] = len(out), len(err)
        batch["finalizing_at"] = _now()
        for key, entries in (("output_file_id", out), ("error_file_id", err)):
            if entries:
                data = "".join(json.dumps(e) + "\n" for e in entries).encode()
                batch[key] = self._store(f"{bid}_{key}.jsonl", data, "batch_output")["id"]
        if batch["status"] == "cancelling":
            batch.update(status="cancelled", cancelled_at=_now())
        elif expired:
            batch.update(status="expired", expired_at=_now())
        else:
            batch.update(status="completed", completed_at=_now())
