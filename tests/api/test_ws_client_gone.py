"""A WebSocket client that goes during its handshake is its own doing: no error logged, nothing kept."""

from __future__ import annotations

import base64
import logging
import os
import socket

import pytest
from flask.testing import FlaskClient

HANDSHAKE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Version": "13",
}


@pytest.mark.parametrize("path", ["/ws/task-status/task-runner-x-0000abcd", "/ws/runs"])
def test_a_websocket_client_gone_during_its_handshake_is_no_server_error(
    client: FlaskClient, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    ours, theirs = socket.socketpair()
    theirs.close()  # gone before the server's 101: writing it fails with EPIPE
    headers = {**HANDSHAKE, "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}
    try:
        with caplog.at_level(logging.INFO, logger="webapp"):
            client.get(path, headers=headers, environ_overrides={"gunicorn.socket": ours})
    finally:
        ours.close()
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR], caplog.text
    assert "stream.client_gone" in caplog.text
