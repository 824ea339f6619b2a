"""The bounds on every request: body size and arrival time (an ASGI middleware), the time a request
head may take (uvicorn's HTTP/1.1 protocol, subclassed), the decoding work in flight in one worker
process, and how glibc hands large image buffers back to the system."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import socket
from contextlib import asynccontextmanager

import h11
from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from lenet.serve.errors import error_response

MAX_UPLOAD_BYTES = 5_000_000  # one image file; a request body may carry this much image data, plus base64's third
MAX_BATCH = 64  # images in one request
MAX_REQUEST_PIXELS = 50_000_000  # pixels decoded for one request, all its images together (one image's limit)
DECODE_BUDGET_PIXELS = 100_000_000  # pixels decoding at once in one worker: two worst-case requests, about 0.5 GB
MAX_WAITING = 16  # requests queued for that budget; the next one gets 503
WAIT_S = 30  # the longest a request waits in that queue before 503
BODY_TIMEOUT_S = 20.0  # the whole body must arrive within this (slow or stalled clients get 408)
HEAD_TIMEOUT_S = 10.0  # the request line and headers must arrive within this, or the connection is closed
MAX_HEAD_BYTES = 16 * 1024  # request line and headers; more is a 400 from the HTTP server
MMAP_THRESHOLD = 1 << 20  # allocations this large get their own mapping, unmapped when freed (see below)
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


def body_limit(max_upload_bytes: int) -> int:
    """The largest request body for images of up to `max_upload_bytes`: base64's third more, and room for the form."""
    return max_upload_bytes * 4 // 3 + 64 * 1024


class BodyLimits:
    """ASGI middleware: a body over `max_bytes` gets 413 before more of it is read (at once when its
    Content-Length says so), and a body still arriving `timeout_s` after the request began gets 408.
    Both answers close the connection, so the rest of the body is never read."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float) -> None:
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:  # refused unread
            too_large = self.too_large()
            return await error_response(413, "request_too_large", too_large.detail, too_large.headers)(scope, receive, send)
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        received, complete = 0, False

        async def limited_receive() -> Message:
            nonlocal received, complete
            if complete:  # later calls only wait for a disconnect, with no deadline
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(
                    408,
                    f"the request body did not arrive within {self.timeout_s:g} s: send it at once, or a smaller image.",
                    headers={"connection": "close"},
                ) from None
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise self.too_large()
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, limited_receive, send)

    def too_large(self) -> HTTPException:
        return HTTPException(
            413,
            f"the request body is over the server's limit of {self.max_bytes:,} bytes: send a smaller image or fewer images.",
            headers={"connection": "close"},
        )


class HeadTimeoutH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, closing a connection whose request head (request line and headers)
    is not complete HEAD_TIMEOUT_S after the connection opened or the previous answer was sent.
    uvicorn's own keep-alive timeout stops at the first byte, so a partial head would be held forever.

    It also turns Nagle's algorithm off on every connection. With --workers 2 or more, uvicorn hands
    the workers a listening socket made without IPPROTO_TCP, so asyncio leaves Nagle on for the
    connections it accepts: an answer's body then waited for the client's delayed ACK of its head,
    and one client's requests took 48 ms each instead of 5 (benchmarks/serve_load.py)."""

    head_timeout_s = HEAD_TIMEOUT_S
    head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        connection = transport.get_extra_info("socket")
        if connection is not None and connection.family in (socket.AF_INET, socket.AF_INET6):
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.watch_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self.watch_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self.watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop_watching()
        super().connection_lost(exc)

    def watch_head(self) -> None:
        """Time the head while h11 waits for one (the client's side IDLE); stop once it has arrived."""
        if self.conn.their_state is not h11.IDLE:
            self.stop_watching()
        elif self.head_timer is None:
            self.head_timer = self.loop.call_later(self.head_timeout_s, self.transport.close)

    def stop_watching(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None


class DecodeBudget:
    """At most `pixels` image pixels being decoded at once in this process. A request waits for its
    share, up to `wait_s`; when `max_waiting` requests already wait, or its wait runs out, it gets 503."""

    def __init__(self, pixels: int, max_waiting: int = MAX_WAITING, wait_s: float = WAIT_S) -> None:
        self.free, self.max_waiting, self.wait_s = pixels, max_waiting, wait_s
        self.waiting = 0
        self.changed = asyncio.Condition()

    @asynccontextmanager
    async def reserve(self, pixels: int):
        async with self.changed:
            if self.free < pixels:
                if self.waiting >= self.max_waiting:
                    raise self.busy()
                self.waiting += 1
                try:
                    await asyncio.wait_for(self.changed.wait_for(lambda: self.free >= pixels), self.wait_s)
                except TimeoutError:
                    raise self.busy() from None
                finally:
                    self.waiting -= 1
            self.free -= pixels
        try:
            yield
        finally:
            async with self.changed:
                self.free += pixels
                self.changed.notify_all()

    def busy(self) -> HTTPException:
        return HTTPException(
            503,
            "the server is busy decoding other large images: retry after the seconds in Retry-After, or send a smaller image.",
            headers={"Retry-After": "5"},
        )


def map_large_buffers_apart(threshold: int = MMAP_THRESHOLD) -> bool:
    """Have glibc give every allocation of `threshold` bytes or more its own memory mapping, returned
    to the system when freed. By default glibc raises that threshold as large blocks are freed and
    then serves image buffers from per-thread arenas, where they pile up: 8 concurrent worst-case
    uploads peaked at 1.42 GB that way (even with malloc_trim after each), 1.20 GB with this
    (benchmarks/serve_memory.py). False where the C library is not glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):
        return False
