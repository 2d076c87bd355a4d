"""Load generators: separate processes that hold many status streams, or send donations, over loopback.

Run by the benchmarks, one or more at a time, never in the server's process::

    python -m benchmarks.loadgen streams --base http://127.0.0.1:8000 --transport sse --jobs NAME --count 1000
    python -m benchmarks.loadgen donations --base http://127.0.0.1:8000 --count 500 --concurrency 8

``streams`` opens ``--count`` streams (SSE or WebSocket, spread round-robin
over ``--jobs``) with asyncio, prints ``{"opened": n}`` once every stream has
had its first status, then notes the monotonic time each status message
arrives, keyed by the message's ``active`` counter (the benchmarks set it to
a fresh marker for every change they make), and separately by its progress
``done`` (the progress benchmark reports a fresh one each time). A stream
counts a marker once, when it first brings it: a message that changes only
the progress still carries the last ``active``. ``report`` on stdin, or
``--duration`` seconds, ends it: it prints what arrived and exits.
``time.monotonic()`` is one clock for every process on Linux, so the
benchmark compares these times with the moment it made each change.

``donations`` posts ``--count`` donations, ``--concurrency`` at a time, and
prints each request's latency, status code and job name.

``consoles`` holds ``--count`` operator consoles: ``/sse/runs`` or
``/ws/runs`` (HTTP/1.1, chunked SSE decoded), each with the ``Authorization``
header. It prints ``{"opened": n}`` once every console has had its first
``runs`` list, then keeps, per console, the latest ``seq`` and status of each
run, the arrival time (``time.monotonic()``) of every message and the delay
from each status's ``updated_at`` to its arrival (``time.time()``, the same
wall clock as the server's). A JSON line on stdin, ``{"wait_for": [names],
"timeout": s}``, ends it: once every console holds a finished status of every
named run (or the timeout passes) it prints what each console saw.

``followers`` holds ``--count`` streams on ``--base`` that follow their job
as the page does through a restart: when the server ends a stream before
its job's final status, each comes back on ``--reconnect-to`` after the
delay of ``--policy``: ``jittered`` (this release: a WebSocket closed with
1001 after 0.5 to 2.5 s at random, any other drop after a random pause
within a growing window; an SSE stream after its own ``retry:``, with
``Last-Event-ID``, as any EventSource) or ``fixed`` (the first release: a
WebSocket after 0.5 s, an SSE stream after 2 s, its ``retry: 2000``).
``report`` on stdin ends it: it prints, per stream, when the server closed
it, when each new connection was made, when the first word came on the new
connection (a status; for an SSE stream whose ``Last-Event-ID`` is current,
the stream's opening) and whether it saw its job's final status.

``launches`` posts ``POST /api/jobs`` (admin) at ``--rate`` a second for
``--duration`` s, open loop: launch ``k`` is due ``k / rate`` s after the
start and goes to a pool of ``--concurrency`` threads, so a slow answer does
not delay the next launch unless every thread is busy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import requests

ACTIVE = re.compile(rb'"active":\s*(\d+)')
PROGRESS_DONE = re.compile(rb'"progress":\s*\{"done":\s*(\d+)')
DONATION = {"amount": "12.50", "currency": "USD", "donor_name": "Bench Donor", "donor_email": "bench@example.org"}


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


class Recorder:
    """Arrival times of status messages, by ``active`` marker and by progress ``done``; which streams are well."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.first = 0
        self.closed = 0
        self.errors: list[str] = []
        self.arrivals: dict[int, list[float]] = defaultdict(list)
        self.progress: dict[int, list[float]] = defaultdict(list)
        self.all_open = asyncio.Event()

    def message(self, stream: StreamClient, payload: bytes, at: float) -> None:
        match = ACTIVE.search(payload)
        if match is None:
            return
        marker = int(match.group(1))
        if marker != stream.last_active:
            stream.last_active = marker
            self.arrivals[marker].append(at)
        done = PROGRESS_DONE.search(payload)
        if done is not None and int(done.group(1)) != stream.last_done:
            stream.last_done = int(done.group(1))
            self.progress[stream.last_done].append(at)
        if not stream.got_first:
            stream.got_first = True
            self.first += 1
            if self.first == self.expected:
                self.all_open.set()

    def lost(self, stream: StreamClient, why: str) -> None:
        self.closed += 1
        if len(self.errors) < 20:
            self.errors.append(why)


def read_ws_frames(
    buffer: bytes,
    transport: asyncio.Transport,
    on_text: Callable[[bytes], None],
    on_close: Callable[[bytes], None] | None = None,
) -> bytes:
    """Read the whole server frames in ``buffer`` (never masked, so a few slices each); return what is left.

    Text frames go to ``on_text``; pings get pongs, masked (with a zero mask)
    as a client must; a Close (its payload to ``on_close``) is answered and the
    connection closed. A lean reader keeps the load generator's own CPU (it
    shares the machine with the server) from inflating the latencies it measures.
    """
    while len(buffer) >= 2:
        opcode, length, start = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
        if length == 126:
            length, start = int.from_bytes(buffer[2:4], "big"), 4
        elif length == 127:
            length, start = int.from_bytes(buffer[2:10], "big"), 10
        if len(buffer) < start + length:
            break
        payload, buffer = buffer[start : start + length], buffer[start + length :]
        if opcode == 0x1:
            on_text(payload)
        elif opcode == 0x9:
            transport.write(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
        elif opcode == 0x8:
            if on_close is not None:
                on_close(payload)
            transport.write(b"\x88\x80\0\0\0\0")
            transport.close()
    return buffer


class StreamClient(asyncio.Protocol):
    def __init__(self, recorder: Recorder, host: str, path: str) -> None:
        self.recorder = recorder
        self.host = host
        self.path = path
        self.got_first = False
        self.last_active: int | None = None
        self.last_done: int | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.recorder.lost(self, f"{type(self).__name__} closed: {exc or 'by the server'}")


class SseClient(StreamClient):
    """An HTTP/1.1 ``text/event-stream`` reader: each ``data:`` line is one status."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.buffer = b""
        request = f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nAccept: text/event-stream\r\n\r\n"
        self.transport.write(request.encode())  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        at = time.monotonic()
        buffer = self.buffer + data
        while True:
            start = buffer.find(b"data: ")
            if start < 0:
                buffer = buffer[-5:]
                break
            end = buffer.find(b"\n", start)
            if end < 0:
                buffer = buffer[start:]
                break
            self.recorder.message(self, buffer[start + 6 : end], at)
            buffer = buffer[end + 1 :]
        self.buffer = buffer


class WsClient(StreamClient):
    """A lean WebSocket client: the upgrade request by hand, then :func:`read_ws_frames`."""

    KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # any 16 bytes, base64: the server only hashes it back

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.upgraded = False
        self.buffer = b""
        request = (
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {self.KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.transport.write(request.encode())  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        at = time.monotonic()
        assert self.transport is not None
        buffer = self.buffer + data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                self.recorder.lost(self, buffer[: buffer.find(b"\r\n")].decode(errors="replace"))
                self.transport.close()
                return
            self.upgraded, buffer = True, buffer[end + 4 :]
        self.buffer = read_ws_frames(buffer, self.transport, lambda payload: self.recorder.message(self, payload, at))


async def hold_streams(args: argparse.Namespace) -> None:
    base = urlsplit(args.base)
    host, port = base.hostname or "127.0.0.1", base.port or 80
    jobs = args.jobs.split(",")
    recorder = Recorder(args.count)
    factory: Callable[[str], StreamClient]
    if args.transport == "sse":
        factory = lambda job: SseClient(recorder, base.netloc, f"/sse/task-status/{job}")  # noqa: E731
    else:
        factory = lambda job: WsClient(recorder, base.netloc, f"/ws/task-status/{job}")  # noqa: E731
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(args.concurrency)
    transports: list[asyncio.BaseTransport] = []

    async def open_one(index: int) -> None:
        async with gate:
            transport, _ = await loop.create_connection(lambda: factory(jobs[index % len(jobs)]), host, port)
            transports.append(transport)

    started = time.monotonic()
    results = await asyncio.gather(*(open_one(i) for i in range(args.count)), return_exceptions=True)
    failed = [repr(r) for r in results if isinstance(r, BaseException)]
    if failed:
        emit({"error": f"{len(failed)} connections failed", "examples": failed[:5]})
        return
    try:
        await asyncio.wait_for(recorder.all_open.wait(), args.open_timeout)
    except TimeoutError:
        emit({"error": f"only {recorder.first} of {args.count} streams had a first status", "lost": recorder.errors})
        return
    emit({"opened": args.count, "seconds": round(time.monotonic() - started, 3)})

    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    with contextlib.suppress(TimeoutError):  # --duration is up: report anyway
        await asyncio.wait_for(reader.readline(), args.duration)
    emit(
        {
            "streams": args.count,
            "closed": recorder.closed,
            "errors": recorder.errors,
            "arrivals": {str(marker): times for marker, times in recorder.arrivals.items()},
            "progress": {str(done): times for done, times in recorder.progress.items()},
        }
    )
    for transport in transports:
        transport.close()


class Console(asyncio.Protocol):
    """One operator console on ``/sse/runs`` or ``/ws/runs``: the runs it holds, what arrived and when."""

    KEY = WsClient.KEY

    def __init__(self, host: str, path: str, token: str, *, websocket: bool, opened: Callable[[], None]) -> None:
        self.host, self.path, self.token, self.websocket = host, path, token, websocket
        self._opened = opened
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.headers_done = False
        self.chunked = False
        self.body = b""
        self.runs: dict[str, tuple[int, str, bool]] = {}
        """Per job: the latest ``seq``, ``status`` and ``terminal`` this console was sent."""
        self.arrivals: list[float] = []
        self.delays: list[float] = []
        """Seconds from each ``status`` message's ``updated_at`` to its arrival."""
        self.lists = 0
        self.status_messages = 0
        self.closed: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        lines = [f"GET {self.path} HTTP/1.1", f"Host: {self.host}", f"Authorization: Bearer {self.token}"]
        if self.websocket:
            lines += ["Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {self.KEY}"]
            lines += ["Sec-WebSocket-Version: 13"]
        else:
            lines += ["Accept: text/event-stream"]
        transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = f"closed: {exc or 'by the server'}"

    def data_received(self, data: bytes) -> None:
        at, wall = time.monotonic(), time.time()
        buffer = self.buffer + data
        if not self.headers_done:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            head = buffer[:end].decode(errors="replace")
            expected = "HTTP/1.1 101" if self.websocket else "HTTP/1.1 200"
            if not head.startswith(expected):
                self.closed = head.split("\r\n", 1)[0]
                assert self.transport is not None
                self.transport.close()
                return
            self.chunked = "transfer-encoding: chunked" in head.lower()
            self.headers_done, buffer = True, buffer[end + 4 :]
        self.buffer = self._frames(buffer, at, wall) if self.websocket else self._events(buffer, at, wall)

    def _events(self, buffer: bytes, at: float, wall: float) -> bytes:
        if self.chunked:  # take whole chunks into the body; keep a partial chunk for later
            while True:
                line_end = buffer.find(b"\r\n")
                if line_end < 0:
                    break
                size = int(buffer[:line_end].split(b";")[0] or b"0", 16)
                if len(buffer) < line_end + 2 + size + 2:
                    break
                self.body += buffer[line_end + 2 : line_end + 2 + size]
                buffer = buffer[line_end + 2 + size + 2 :]
        else:
            self.body, buffer = self.body + buffer, b""
        while (end := self.body.find(b"\n\n")) >= 0:
            block, self.body = self.body[:end], self.body[end + 2 :]
            event, data = b"message", b""
            for line in block.split(b"\n"):
                if line.startswith(b"event: "):
                    event = line[7:]
                elif line.startswith(b"data: "):
                    data += line[6:]
            if data and event == b"runs":
                self._list(json.loads(data)["runs"], at)
            elif data and event == b"status":
                self._status(json.loads(data), at, wall)
        return buffer

    def _frames(self, buffer: bytes, at: float, wall: float) -> bytes:
        assert self.transport is not None

        def text(payload: bytes) -> None:
            message = json.loads(payload)
            if message.get("type") == "runs":
                self._list(message["runs"], at)
            elif message.get("type") == "status":
                self._status(message["status"], at, wall)

        return read_ws_frames(buffer, self.transport, text)

    def _apply(self, status: dict[str, Any]) -> None:
        known = self.runs.get(status["job_name"])
        if known is None or status["seq"] > known[0]:
            self.runs[status["job_name"]] = (status["seq"], status["status"], bool(status["terminal"]))

    def _list(self, runs: list[dict[str, Any]], at: float) -> None:
        first = not self.lists
        self.lists += 1
        self.arrivals.append(at)
        for status in runs:
            self._apply(status)
        if first:
            self._opened()

    def _status(self, status: dict[str, Any], at: float, wall: float) -> None:
        self.status_messages += 1
        self.arrivals.append(at)
        self._apply(status)
        updated = datetime.fromisoformat(status["updated_at"].replace("Z", "+00:00")).timestamp()
        self.delays.append(wall - updated)

    def finished(self, names: list[str]) -> bool:
        return all(self.runs.get(name, (0, "", False))[2] for name in names)


async def hold_consoles(args: argparse.Namespace) -> None:
    base = urlsplit(args.base)
    host, port = base.hostname or "127.0.0.1", base.port or 80
    websocket = args.transport == "ws"
    path = ("/ws/runs" if websocket else "/sse/runs") + (f"?{args.query}" if args.query else "")
    loop = asyncio.get_running_loop()
    all_open = asyncio.Event()
    opened = 0

    def one_opened() -> None:
        nonlocal opened
        opened += 1
        if opened == args.count:
            all_open.set()

    consoles = []
    for _ in range(args.count):
        _, console = await loop.create_connection(
            lambda: Console(base.netloc, path, args.token, websocket=websocket, opened=one_opened), host, port
        )
        consoles.append(console)
    try:
        await asyncio.wait_for(all_open.wait(), args.open_timeout)
    except TimeoutError:
        emit(
            {"error": f"only {opened} of {args.count} consoles had their list", "closed": [c.closed for c in consoles]}
        )
        return
    emit({"opened": args.count})

    reader = asyncio.StreamReader(limit=2**26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    order = json.loads(await reader.readline() or b"{}")
    names: list[str] = order.get("wait_for", [])
    deadline = time.monotonic() + float(order.get("timeout", 0))
    while time.monotonic() < deadline and not all(c.finished(names) or c.closed for c in consoles):
        await asyncio.sleep(0.05)  # the load generator's own poll of its consoles, not a test's
    emit(
        {
            "consoles": [
                {
                    "transport": args.transport,
                    "closed": c.closed,
                    "lists": c.lists,
                    "status_messages": c.status_messages,
                    "arrivals": c.arrivals,
                    "delays": c.delays,
                    "runs": {name: c.runs[name][:2] for name in names if name in c.runs},
                }
                for c in consoles
            ]
        }
    )
    for c in consoles:
        if c.transport is not None:
            c.transport.close()


# -- followers: streams that reconnect as the page does ------------------------------

GOING_AWAY_WINDOW = (0.5, 2.5)
"""Seconds: the page's pause after a server going away (static/app.js GOING_AWAY_WINDOW_MS)."""
RETRY_WINDOW = 1.0
"""Seconds: the page's first retry window after any other drop; doubles per failed try (static/app.js)."""
SEQ = re.compile(rb'"seq":\s*(\d+)')
TERMINAL_FLAG = re.compile(rb'"terminal":\s*true')


class Follower:
    """One viewer of one job: its connections one after the other, and what the restart cost it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, kind: str, job: str, bases: list[str], policy: str) -> None:
        self.loop, self.kind, self.job, self.bases, self.policy = loop, kind, job, bases, policy
        self.base_index = 0
        self.connection: FollowerConnection | None = None
        self.seq: int | None = None
        self.retry_ms: int | None = None
        self.got_first = False
        self.terminal = False
        self.closed_at: float | None = None
        """When the first server ended the stream (its close reached us)."""
        self.dialed: list[float] = []
        """When each new connection was begun after that (the client's pause over)."""
        self.connected: list[float] = []
        """When each new connection was made after that."""
        self.head_at: float | None = None
        """When the first new connection's response head came (the 101, or the SSE 200)."""
        self.back_at: float | None = None
        """When the first word came on a new connection."""
        self.tries = 0
        self.errors: list[str] = []

    def connect(self) -> None:
        if self.closed_at is not None:
            self.dialed.append(time.monotonic())
        base = urlsplit(self.bases[self.base_index])
        path = f"/{'sse' if self.kind == 'sse' else 'ws'}/task-status/{self.job}"
        factory = SseConnection if self.kind == "sse" else WsConnection
        self.loop.create_task(self._open(factory, base.netloc, base.hostname or "127.0.0.1", base.port or 80, path))

    async def _open(self, factory: type[FollowerConnection], netloc: str, host: str, port: int, path: str) -> None:
        try:
            await self.loop.create_connection(lambda: factory(self, netloc, path), host, port)
        except OSError as error:
            self.note(f"connect: {error}")
            self.ended(going_away=False)

    def note(self, error: str) -> None:
        if len(self.errors) < 3:
            self.errors.append(error)

    def opened(self, connection: FollowerConnection, at: float) -> None:
        self.connection = connection
        if self.closed_at is not None:
            self.connected.append(at)

    def answered(self, at: float) -> None:
        """The server's response head on this connection: it took the request."""
        if self.closed_at is not None and self.head_at is None and self.connected:
            self.head_at = at

    def word(self, at: float) -> None:
        """A status, or (SSE, ``Last-Event-ID`` current) the stream's opening: this connection is live."""
        if self.closed_at is not None and self.back_at is None and self.connected:
            self.back_at = at
        self.tries = 0

    def status(self, payload: bytes, at: float) -> None:
        match = SEQ.search(payload)
        if match is not None:
            self.seq = int(match.group(1))
        if not self.got_first:
            self.got_first = True
            FOLLOWERS_OPEN.append(self)
        self.word(at)
        if TERMINAL_FLAG.search(payload):
            self.terminal = True

    def ended(self, *, going_away: bool, at: float | None = None) -> None:
        """The connection is gone: after the final status, stop; otherwise come back after the policy's delay."""
        self.connection = None
        if self.terminal:
            return
        if self.closed_at is None and at is not None:
            self.closed_at = at
            self.base_index = min(1, len(self.bases) - 1)  # the load balancer sends it to the survivor
        self.loop.call_later(self.delay(going_away), self.connect)

    def delay(self, going_away: bool) -> float:
        tries, self.tries = self.tries, self.tries + 1
        if self.policy == "fixed":
            return 2.0 if self.kind == "sse" else 0.5
        if self.kind == "sse" and self.retry_ms is not None:
            return self.retry_ms / 1000  # as any EventSource: the stream's own retry:
        if going_away:
            return random.uniform(*GOING_AWAY_WINDOW)
        return random.uniform(0, min(RETRY_WINDOW * 2**tries, 10.0))

    def record(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "job": self.job,
            "closed_at": self.closed_at,
            "dialed": self.dialed,
            "connected": self.connected,
            "head_at": self.head_at,
            "back_at": self.back_at,
            "terminal": self.terminal,
            "seq": self.seq,
            "errors": self.errors,
        }


FOLLOWERS_OPEN: list[Follower] = []


class FollowerConnection(asyncio.Protocol):
    def __init__(self, follower: Follower, netloc: str, path: str) -> None:
        self.follower, self.netloc, self.path = follower, netloc, path
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.head_done = False
        self.going_away = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.follower.opened(self, time.monotonic())
        transport.write(self.request().encode())

    def request(self) -> str:
        raise NotImplementedError

    def connection_lost(self, exc: Exception | None) -> None:
        self.follower.ended(going_away=self.going_away, at=time.monotonic())


class SseConnection(FollowerConnection):
    """An EventSource: ``Last-Event-ID`` on a reconnect, ``retry:`` kept, ``event: end`` or 204 ends it."""

    def request(self) -> str:
        last = f"Last-Event-ID: {self.follower.seq}\r\n" if self.follower.seq is not None else ""
        return f"GET {self.path} HTTP/1.1\r\nHost: {self.netloc}\r\nAccept: text/event-stream\r\n{last}\r\n"

    def data_received(self, data: bytes) -> None:
        at = time.monotonic()
        buffer = self.buffer + data
        if not self.head_done:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            head = buffer[:end]
            self.follower.answered(at)
            if head.startswith(b"HTTP/1.1 204"):  # it has the final status already
                self.follower.terminal = True
            elif not head.startswith(b"HTTP/1.1 200"):
                self.follower.note(head[: head.find(b"\r\n")].decode(errors="replace"))
            self.head_done, buffer = True, buffer[end + 4 :]
            if self.follower.terminal or not head.startswith(b"HTTP/1.1 200"):
                assert self.transport is not None
                self.transport.close()
                return
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.startswith(b"data: ") and line != b"data: {}":
                self.follower.status(line[6:], at)
            elif line.startswith(b"retry: "):
                self.follower.retry_ms = int(line[7:].strip())
                if self.follower.seq is not None:  # a reconnect: the server sends nothing it already has
                    self.follower.word(at)
            elif line.startswith(b"event: end"):
                self.follower.terminal = True
            elif line == b"0\r":  # the last chunk: the server ended the response (the connection may stay open)
                assert self.transport is not None
                self.transport.close()
                return
        self.buffer = buffer


class WsConnection(FollowerConnection):
    """The page's WebSocket: a close with 1001 is the server going away."""

    def request(self) -> str:
        return (
            f"GET {self.path} HTTP/1.1\r\nHost: {self.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {WsClient.KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )

    def data_received(self, data: bytes) -> None:
        at = time.monotonic()
        assert self.transport is not None
        buffer = self.buffer + data
        if not self.head_done:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            self.follower.answered(at)
            if not buffer.startswith(b"HTTP/1.1 101"):
                self.follower.note(buffer[: buffer.find(b"\r\n")].decode(errors="replace"))
                self.transport.close()
                return
            self.head_done, buffer = True, buffer[end + 4 :]
        self.buffer = read_ws_frames(
            buffer, self.transport, lambda payload: self.follower.status(payload, at), self._closing
        )

    def _closing(self, payload: bytes) -> None:
        self.going_away = payload[:2] == (1001).to_bytes(2, "big")


async def hold_followers(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    jobs = args.jobs.split(",")
    bases = [args.base, *([args.reconnect_to] if args.reconnect_to else [])]
    followers = [
        Follower(loop, kind=args.transport, job=jobs[i % len(jobs)], bases=bases, policy=args.policy)
        for i in range(args.count)
    ]
    started = time.monotonic()
    for start in range(0, len(followers), args.concurrency):
        for follower in followers[start : start + args.concurrency]:
            follower.connect()
        while len(FOLLOWERS_OPEN) < min(len(followers), start + args.concurrency):
            if time.monotonic() - started > args.open_timeout:
                emit({"error": f"only {len(FOLLOWERS_OPEN)} of {args.count} followers had a first status"})
                return
            await asyncio.sleep(0.01)  # the load generator's own pacing of its opens
    emit({"opened": args.count, "seconds": round(time.monotonic() - started, 3)})
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(reader.readline(), args.duration)
    emit({"followers": [f.record() for f in followers]})
    for follower in followers:
        if follower.connection is not None and follower.connection.transport is not None:
            follower.terminal = True  # no reconnect once the report is out
            follower.connection.transport.close()


def send_launches(args: argparse.Namespace) -> None:
    """POST ``/api/jobs`` at a steady rate (open loop) from a thread pool; one keep-alive session per thread."""
    import threading

    local = threading.local()
    url = f"{args.base}/api/jobs"
    body = {"spec": args.spec, "params": {}}

    def one(due: float) -> dict[str, Any]:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
            session.headers["Authorization"] = f"Bearer {args.token}"
        started = time.monotonic()
        try:
            response = session.post(url, json=body, timeout=30)
        except requests.RequestException as error:
            return {
                "at": started,
                "late": started - due,
                "seconds": time.monotonic() - started,
                "code": 0,
                "error": str(error),
            }
        seconds = time.monotonic() - started
        answer = response.json() if response.headers.get("Content-Type", "").startswith("application/json") else {}
        return {
            "at": started,
            "late": started - due,
            "seconds": seconds,
            "code": response.status_code,
            "job_name": answer.get("job_name"),
        }

    count = max(1, round(args.rate * args.duration))
    started = time.monotonic()
    with ThreadPoolExecutor(args.concurrency) as pool:
        futures = []
        for k in range(count):
            due = started + k / args.rate
            time.sleep(max(0.0, due - time.monotonic()))  # the pace of the launches itself
            futures.append(pool.submit(one, due))
        results = [f.result() for f in futures]
    emit({"started": started, "wall_seconds": time.monotonic() - started, "results": results})


def send_donations(args: argparse.Namespace) -> None:
    """POST donations from a thread pool; one keep-alive session per thread."""
    import threading

    local = threading.local()
    url = f"{args.base}/api/donations"

    def one(_: int) -> dict[str, Any]:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        started = time.monotonic()
        try:
            response = session.post(url, json=DONATION, timeout=30)
        except requests.RequestException as error:
            return {"seconds": time.monotonic() - started, "code": 0, "error": str(error)}
        seconds = time.monotonic() - started
        body = response.json() if response.headers.get("Content-Type", "").startswith("application/json") else {}
        return {"seconds": seconds, "code": response.status_code, "job_name": body.get("job_name")}

    started = time.monotonic()
    with ThreadPoolExecutor(args.concurrency) as pool:
        results = list(pool.map(one, range(args.count)))
    emit({"wall_seconds": time.monotonic() - started, "results": results})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loadgen", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    streams = commands.add_parser("streams", help="hold status streams and note when each message arrives")
    streams.add_argument("--base", required=True, help="the server, e.g. http://127.0.0.1:8000")
    streams.add_argument("--transport", choices=("sse", "ws"), required=True)
    streams.add_argument("--jobs", required=True, help="comma-separated job names; streams spread over them")
    streams.add_argument("--count", type=int, required=True)
    streams.add_argument("--concurrency", type=int, default=200, help="connections being opened at once")
    streams.add_argument("--open-timeout", type=float, default=180.0)
    streams.add_argument("--duration", type=float, default=600.0, help="most seconds to hold the streams")
    donations = commands.add_parser("donations", help="post donations and time each")
    donations.add_argument("--base", required=True)
    donations.add_argument("--count", type=int, required=True)
    donations.add_argument("--concurrency", type=int, default=8)
    consoles = commands.add_parser("consoles", help="hold /sse/runs or /ws/runs consoles; note what each saw")
    consoles.add_argument("--base", required=True)
    consoles.add_argument("--transport", choices=("sse", "ws"), required=True)
    consoles.add_argument("--count", type=int, required=True)
    consoles.add_argument("--token", required=True, help="an operator's token (sent in the Authorization header)")
    consoles.add_argument("--query", default="", help="e.g. status=Running,Failed&spec=console")
    consoles.add_argument("--open-timeout", type=float, default=60.0)
    followers = commands.add_parser("followers", help="hold streams that reconnect elsewhere as the page does")
    followers.add_argument("--base", required=True)
    followers.add_argument("--reconnect-to", default="", help="where streams the server ended come back")
    followers.add_argument("--transport", choices=("sse", "ws"), required=True)
    followers.add_argument("--jobs", required=True)
    followers.add_argument("--count", type=int, required=True)
    followers.add_argument("--policy", choices=("jittered", "fixed"), default="jittered")
    followers.add_argument("--concurrency", type=int, default=200)
    followers.add_argument("--open-timeout", type=float, default=300.0)
    followers.add_argument("--duration", type=float, default=900.0)
    launches = commands.add_parser("launches", help="POST /api/jobs at a steady rate and time each")
    launches.add_argument("--base", required=True)
    launches.add_argument("--token", required=True)
    launches.add_argument("--spec", required=True)
    launches.add_argument("--rate", type=float, required=True, help="launches a second")
    launches.add_argument("--duration", type=float, required=True, help="seconds")
    launches.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    raise_fd_limit()
    if args.command == "streams":
        asyncio.run(hold_streams(args))
    elif args.command == "consoles":
        asyncio.run(hold_consoles(args))
    elif args.command == "followers":
        asyncio.run(hold_followers(args))
    elif args.command == "launches":
        send_launches(args)
    else:
        send_donations(args)


if __name__ == "__main__":
    main()
