"""Request-size caps: a request body larger than ``settings.api_max_body_bytes`` is answered
413 before the app reads it whole, whether it declares its length or streams it in chunks."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def too_large_message(max_bytes: int) -> str:
    return (f"the request body is larger than {max_bytes} bytes (LABELER_API_MAX_BODY_BYTES): "
            f"send a feature range like \"0:5000\" instead of a long list, or split the request")


class BodyTooLarge(HTTPException):
    """An HTTPException, so that FastAPI's body parsing passes it on as it is (it turns other
    errors into a 400) and the app's exception middleware answers it."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(status_code=413, detail=too_large_message(max_bytes))


class BodySizeLimit:
    """ASGI middleware: 413 with a JSON ``detail`` for a body over ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, send: Send) -> None:
        body = json.dumps({"detail": too_large_message(self.max_bytes)}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.strip().isdigit() and int(value) > self.max_bytes:
                return await self._reject(send)  # refused unread (the server rejects a length that is no number)
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await self._reject(send)
