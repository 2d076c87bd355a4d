"""Hostile input against the real gunicorn gevent server, sent over real sockets.

The Flask test client hands the app a body the way no server does; how gunicorn
passes on a chunked body (no Content-Length, ``wsgi.input_terminated``) is only
seen here.
"""

from __future__ import annotations

import json
import socket
import threading
from typing import Any

import pytest
import requests

from tests.live.clients import ADMIN, DONATION
from tests.live.server import LiveServer

pytestmark = pytest.mark.live

MAX_BODY = 16 * 1024


def chunked_post(server: LiveServer, path: str, chunks: list[bytes]) -> tuple[int, dict[str, Any]]:
    """POST ``chunks`` with ``Transfer-Encoding: chunked`` on a raw socket; return the status and JSON body.

    The chunks are written from a thread, so that a server answering before
    the whole body is in (as it may for a 413) is read rather than deadlocked.
    """
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as conn:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )

        def send_body() -> None:
            try:
                conn.sendall(head.encode())
                for chunk in chunks:
                    conn.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                conn.sendall(b"0\r\n\r\n")
            except OSError:  # the server answered and closed before taking it all
                pass

        sender = threading.Thread(target=send_body, daemon=True)
        sender.start()
        answer = b""
        try:
            while data := conn.recv(65536):
                answer += data
        except ConnectionResetError:  # a reset after the answer arrived is allowed
            pass
        sender.join(timeout=30)
    head_bytes, _, body = answer.partition(b"\r\n\r\n")
    assert head_bytes, "no answer from the server"
    status = int(head_bytes.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head_bytes.lower():
        body = dechunk(body)
    return status, json.loads(body)


def dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2 :]
    return out


def runs(server: LiveServer) -> list[dict[str, Any]]:
    response = requests.get(f"{server.url}/api/runs", headers=ADMIN, timeout=10)
    body: list[dict[str, Any]] = response.json()["runs"]
    return body


def test_a_chunked_body_over_the_limit_is_413_not_cut_and_accepted(live_server: LiveServer) -> None:
    donation = json.dumps(DONATION).encode()
    padding = [b" " * 65536] * 32  # 2 MiB of JSON whitespace after a complete, valid donation
    status, body = chunked_post(live_server, "/api/donations", [donation, *padding])
    assert (status, body["error"]) == (413, "payload_too_large")
    assert runs(live_server) == []
    assert '"level": "ERROR"' not in live_server.log()


@pytest.mark.parametrize("size", [MAX_BODY - 1, MAX_BODY])
def test_a_chunked_body_up_to_the_limit_is_taken(live_server: LiveServer, size: int) -> None:
    donation = json.dumps(DONATION).encode()
    body = donation + b" " * (size - len(donation))
    status, answer = chunked_post(live_server, "/api/donations", [body[: size // 2], body[size // 2 :]])
    assert status == 202, answer
    assert answer["status"] in ("Queued", "Pending", "Running")


def test_a_chunked_body_just_over_the_limit_is_413(live_server: LiveServer) -> None:
    donation = json.dumps(DONATION).encode()
    body = donation + b" " * (MAX_BODY + 1 - len(donation))
    status, answer = chunked_post(live_server, "/api/donations", [body])
    assert (status, answer["error"]) == (413, "payload_too_large")
    assert runs(live_server) == []


def test_deeply_nested_json_is_a_400_from_the_real_server(live_server: LiveServer) -> None:
    depth = 5_000
    response = requests.post(
        f"{live_server.url}/api/donations",
        data='{"amount": ' + "[" * depth + "]" * depth + "}",
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert (response.status_code, response.json()["error"]) == (400, "invalid_request")
    assert '"level": "ERROR"' not in live_server.log()


def test_a_job_name_with_a_trailing_newline_is_400_from_the_real_server(live_server: LiveServer) -> None:
    name = "task-runner-unknown-0000beef"
    for path in (f"/api/task-status?job_name={name}%0A", f"/api/jobs/{name}%0A", f"/sse/task-status/{name}%0A"):
        response = requests.get(f"{live_server.url}{path}", timeout=10)
        assert (response.status_code, response.json()["error"]) == (400, "invalid_job_name"), path


def test_an_authorization_header_with_bytes_over_0x7f_is_401_from_the_real_server(live_server: LiveServer) -> None:
    """gunicorn hands a header's bytes to the app as latin-1 text: compared as such, refused, no ERROR."""
    with socket.create_connection(("127.0.0.1", live_server.port), timeout=10) as conn:
        conn.sendall(
            b"GET /api/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            b"Authorization: Bearer \xe9\xff\xc3\xa9-token-0123456789\r\n\r\n"
        )
        answer = b""
        while data := conn.recv(65536):
            answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    assert int(head.split(b" ", 2)[1]) == 401
    assert json.loads(body)["error"] == "unauthorized"
    assert '"level": "ERROR"' not in live_server.log()
