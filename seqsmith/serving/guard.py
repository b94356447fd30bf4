"""ASGI middleware in front of the app: the body read whole within its size and time limits, and every
response counted by status, before FastAPI sees the request."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.responses import JSONResponse

from seqsmith.config import ServeConfig
from seqsmith.serving.metrics import Metrics

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class Guard:
    """ASGI middleware: reads the body whole, within ``max_body_bytes`` and ``body_timeout_s``, before the app
    sees the request (so a body too large or too slow is refused here), and counts every response."""

    def __init__(self, app: Any, limits: ServeConfig, metrics: Metrics) -> None:
        self.app, self.limits, self.metrics = app, limits, metrics

    async def _body(self, scope: Message, receive: Receive) -> bytes | tuple[int, str]:
        """The body, or the status and detail of why it was refused."""
        limit = self.limits.max_body_bytes
        too_large = (
            413,
            f"the body is larger than this server's limit of {limit} bytes (serve.max_body_bytes)",
        )
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return too_large
        chunks, size = [], 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.body_timeout_s
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0))
            except asyncio.TimeoutError:
                return (
                    408,
                    f"the body did not arrive within {self.limits.body_timeout_s:g} s (serve.body_timeout_s)",
                )
            if message["type"] != "http.request":
                return 400, "the client hung up before its body arrived"
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                return too_large
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.monotonic(), 500

        async def counted_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            body = await self._body(scope, receive)
            if isinstance(body, tuple):
                await JSONResponse({"detail": body[1]}, body[0])(scope, receive, counted_send)
                return
            delivered = False

            async def replay() -> Message:
                nonlocal delivered
                if delivered:
                    return await receive()  # what comes next is the client hanging up
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}

            await self.app(scope, replay, counted_send)
        finally:
            self.metrics.response(status, time.monotonic() - started)
