"""Real clients for the live server: curl for SSE, websocket-client for WebSocket, requests for REST."""

from __future__ import annotations

import http.client
import json
import re
import socket
import struct
import subprocess
from typing import Any

import requests
import websocket

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
