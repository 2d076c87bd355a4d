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
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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
    """A lean WebSocket client: the upgrade request by hand, then a frame reader of a few slices.

    Server frames are never masked, so reading them is cheap; a lean reader
    keeps the load generator's own CPU (it shares the machine with the server)
    from inflating the latencies it measures. Pings get pongs.
    """

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
                self.recorder.message(self, payload, at)
            elif opcode == 0x9:  # ping: answer with a pong, masked (with a zero mask) as a client must
                self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
            elif opcode == 0x8:
                self.transport.write(b"\x88\x80\0\0\0\0")
                self.transport.close()
        self.buffer = buffer


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
    args = parser.parse_args(argv)
    raise_fd_limit()
    if args.command == "streams":
        asyncio.run(hold_streams(args))
    else:
        send_donations(args)


if __name__ == "__main__":
    main()
