"""The WebSocket opening handshake as RFC 6455 §4.2.1 asks: what is refused, and how."""

from __future__ import annotations

import pytest
from werkzeug.datastructures import Headers

from webapp.api.handshake import check_handshake

GOOD = {"Host": "127.0.0.1:8000", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"}


@pytest.mark.parametrize(
    ("changes", "answer"),
    [
        ({}, None),
        ({"Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits"}, None),
        ({"Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits=99"}, None),  # declined, not refused
        ({"Sec-WebSocket-Extensions": "x-webkit-deflate-frame"}, None),  # unknown: declined
        ({"Sec-WebSocket-Version": "8"}, 426),
        ({"Sec-WebSocket-Version": None}, 426),
        ({"Sec-WebSocket-Version": "13, 8"}, 426),
        ({"Sec-WebSocket-Key": None}, 400),
        ({"Sec-WebSocket-Key": "YWJj"}, 400),  # 3 bytes
        ({"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ"}, 400),  # padding missing
        ({"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==dGhl"}, 400),
        ({"Sec-WebSocket-Key": "é" * 24}, 400),
        ({"Host": None}, 400),
        ({"Host": "xn--"}, 400),
        ({"Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits=x"}, 400),
        ({"Sec-WebSocket-Extensions": "permessage-deflate; server_max_window_bits="}, 400),
    ],
)
def test_check_handshake(changes: dict[str, str | None], answer: int | None) -> None:
    headers = Headers({name: value for name, value in {**GOOD, **changes}.items() if value is not None})
    refusal = check_handshake(headers)
    assert (refusal.http_status if refusal else None) == answer
    if answer == 426:
        assert refusal is not None
        assert refusal.headers == {"Sec-WebSocket-Version": "13"}
