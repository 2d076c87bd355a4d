"""Real clients for the live server: curl for SSE, websocket-client for WebSocket, requests for REST.

For what a well-behaved client library will not do (crafted handshakes, frames
that announce more than they carry, the closing handshake watched byte by
byte) there are raw sockets: ``http.client`` writes exactly the handshake
headers it is given, and wsproto frames a WebSocket on a bare socket.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import select
import socket
import struct
import subprocess
import time
from typing import Any

import psutil
import requests
import websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Event, Request, TextMessage
from wsproto.extensions import PerMessageDeflate

from tests.conftest import ADMIN_TOKEN
from tests.helpers import parse_sse, wait_for
from tests.live.server import LiveServer

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
DONATION = {"amount": "12.50", "currency": "USD", "donor_name": "Live Donor", "donor_email": "live@example.org"}


def donate(server: LiveServer, **headers: str) -> dict[str, Any]:
    response = requests.post(f"{server.url}/api/donations", json=DONATION, headers=headers, timeout=10)
    assert response.status_code in (200, 202), response.text
    body: dict[str, Any] = response.json()
    return body


def launch(server: LiveServer, spec: str, **params: str) -> str:
    response = requests.post(f"{server.url}/api/jobs", json={"spec": spec, "params": params}, headers=ADMIN, timeout=10)
    assert response.status_code == 202, response.text
    name: str = response.json()["job_name"]
    return name


def status(server: LiveServer, name: str) -> dict[str, Any]:
    body: dict[str, Any] = requests.get(f"{server.url}/api/jobs/{name}", timeout=10).json()
    return body


def wait_for_status(server: LiveServer, name: str, wanted: str, timeout: float = 30) -> dict[str, Any]:
    return wait_for(lambda: (s := status(server, name))["status"] == wanted and s, timeout=timeout, what=wanted)


def curl_sse(server: LiveServer, name: str, *, timeout: float = 60) -> tuple[int, list[dict[str, Any]], str]:
    """Run ``curl -N`` on the job's stream until curl exits by itself; return (exit code, frames, raw)."""
    done = subprocess.run(
        ["curl", "-N", "-sS", "--max-time", str(timeout), f"{server.url}/sse/task-status/{name}"],
        capture_output=True,
        text=True,
        timeout=timeout + 10,
        check=False,
    )
    return done.returncode, parse_sse(done.stdout), done.stdout


def curl_sse_reconnect(server: LiveServer, name: str, last_event_id: str, *, timeout: float = 60) -> tuple[int, str]:
    """``curl -N`` reconnecting as an EventSource does, with ``Last-Event-ID``; return (HTTP status, body)."""
    done = subprocess.run(
        [
            "curl",
            "-N",
            "-sS",
            "--max-time",
            str(timeout),
            "-H",
            f"Last-Event-ID: {last_event_id}",
            "-w",
            "\n%{http_code}",
            f"{server.url}/sse/task-status/{name}",
        ],
        capture_output=True,
        text=True,
        timeout=timeout + 10,
        check=True,
    )
    body, _, code = done.stdout.rpartition("\n")
    return int(code), body


def start_curl_sse(server: LiveServer, name: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["curl", "-N", "-sS", "--max-time", "60", f"{server.url}/sse/task-status/{name}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def open_streams(server: LiveServer, transport: str) -> float:
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    found = re.search(rf'^jobpulse_open_streams\{{transport="{transport}"\}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def ws_connect(server: LiveServer, name: str, **options: Any) -> websocket.WebSocket:
    return websocket.create_connection(f"{server.ws_url}/ws/task-status/{name}", timeout=30, **options)


def ws_collect(ws: websocket.WebSocket) -> tuple[list[dict[str, Any]], int | None]:
    """Read messages until the server closes; return them and the close code."""
    messages: list[dict[str, Any]] = []
    try:
        while True:
            opcode, data = ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
                return messages, code
            if opcode == websocket.ABNF.OPCODE_TEXT:
                messages.append(json.loads(data.decode()))
    finally:
        ws.shutdown()  # close the socket even after the server's close frame


WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's sample nonce: 16 bytes, base64
UPGRADE_HEADERS = {
    "Host": "127.0.0.1",
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": WS_KEY,
    "Sec-WebSocket-Version": "13",
}


def raw_handshake(server: LiveServer, path: str, headers: dict[str, str]) -> tuple[int, http.client.HTTPMessage, bytes]:
    """Send a handshake with exactly ``headers`` (no Host or others added); return status, headers and body."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.headers, response.read()  # after a 101: no body is read
    finally:
        connection.close()


def worker_rss(server: LiveServer) -> int:
    """Resident memory of the gunicorn worker (the master's one child), in bytes."""
    assert server.process is not None
    (worker,) = psutil.Process(server.process.pid).children()
    return int(worker.memory_info().rss)


class RawWebSocket:
    """A WebSocket client on a bare socket, framed by wsproto, that also sends whatever bytes it is told to."""

    def __init__(self, server: LiveServer, name: str, *, deflate: bool = False) -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        self.ws = WSConnection(ConnectionType.CLIENT)
        extensions = [PerMessageDeflate()] if deflate else []
        self.sock.sendall(
            self.ws.send(Request(host="127.0.0.1", target=f"/ws/task-status/{name}", extensions=extensions))
        )
        self.messages: list[dict[str, Any]] = []
        self.close: CloseConnection | None = None
        accepted = self._next_event()
        assert isinstance(accepted, AcceptConnection), accepted
        self.deflate = bool(accepted.extensions)

    def _next_event(self) -> Event | None:
        """The next event from the server; ``None`` once the server has closed TCP."""
        while True:
            for event in self.ws.events():
                return event
            data = self.sock.recv(65536)
            if not data:
                return None
            self.ws.receive_data(data)

    def send(self, event: Event) -> None:
        self.send_raw(self.ws.send(event))

    def send_raw(self, data: bytes) -> bool:
        """Write ``data``; ``False`` if the server has already shut the connection (a reset or a broken pipe)."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    def until_close(self, *, timeout: float = 30) -> CloseConnection | None:
        """Read messages until the server's Close frame (``None`` if TCP ends, or nothing comes for ``timeout``)."""
        self.sock.settimeout(timeout)
        while self.close is None:
            try:
                event = self._next_event()
            except (ConnectionResetError, TimeoutError):
                return None
            if event is None:
                return None
            if isinstance(event, TextMessage):
                self.messages.append(json.loads(event.data))
            elif isinstance(event, CloseConnection):
                self.close = event
        return self.close

    def server_closed_tcp_within(self, seconds: float) -> bool:
        """Whether the server's FIN (or a reset) arrives within ``seconds``, while we have not answered its Close."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if select.select([self.sock], [], [], left)[0]:
                try:
                    return self.sock.recv(65536) == b""
                except ConnectionResetError:
                    return True
        return False

    def answer_close_and_wait_for_eof(self) -> bool:
        """Send our Close (completing the handshake); ``True`` if the server then ends TCP cleanly (FIN, no reset)."""
        assert self.close is not None
        try:
            self.sock.sendall(self.ws.send(self.close.response()))
            while self.sock.recv(65536):
                pass
        except OSError:
            return False
        return True

    def shutdown(self) -> None:
        self.sock.close()


def masked_frame_header(*, opcode: int, length: int, fin: bool = True, rsv1: bool = False) -> tuple[bytes, bytes]:
    """A client frame's header announcing ``length`` payload bytes, and its masking key (RFC 6455 §5.2)."""
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    if length < 126:
        size = bytes((0x80 | length,))
    elif length < 1 << 16:
        size = bytes((0x80 | 126,)) + struct.pack("!H", length)
    else:
        size = bytes((0x80 | 127,)) + struct.pack("!Q", length)
    mask = os.urandom(4)
    return bytes((first,)) + size + mask, mask


def post_json_from(
    port: int, path: str, body: dict[str, Any], *, source: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    """POST to 127.0.0.1:``port`` from the loopback address ``source`` (127.0.0.2, ...): another client."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def open_sse_socket(server: LiveServer, name: str, *, source: str = "127.0.0.1") -> tuple[socket.socket, bytes]:
    """Open the job's SSE stream on a raw socket from ``source``; return it and the answer's head (headers)."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10, source_address=(source, 0))
    sock.sendall(f"GET /sse/task-status/{name} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    return sock, head
