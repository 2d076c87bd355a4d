"""The WebSocket opening handshake, checked as RFC 6455 §4.2.1 asks before simple-websocket sees it.

simple-websocket hands the request to wsproto and lets wsproto's rejections
(and a malformed ``permessage-deflate`` offer's ``ValueError``) escape as
exceptions, which would be a ``500`` and a traceback for a client's mistake.
Checked here first, a bad handshake gets the answer the RFC names: ``426``
with ``Sec-WebSocket-Version: 13`` for a version we do not speak (§4.4),
``400`` for a missing or malformed ``Host``, key or extension offer. Pure: headers in,
a refusal (or ``None``) out.
"""

from __future__ import annotations

import binascii
from base64 import b64decode
from typing import NamedTuple

from werkzeug.datastructures import Headers
from wsproto.extensions import PerMessageDeflate
from wsproto.utilities import split_comma_header

WEBSOCKET_VERSION = "13"
_KEY_BYTES = 16


class Refusal(NamedTuple):
    """The HTTP answer to a handshake we refuse."""

    http_status: int
    code: str
    message: str
    headers: dict[str, str]


def check_handshake(headers: Headers) -> Refusal | None:
    """What is wrong with this upgrade request's WebSocket headers, if anything."""
    version = headers.get("Sec-WebSocket-Version", "").strip()
    if version != WEBSOCKET_VERSION:
        return Refusal(
            426,
            "unsupported_websocket_version",
            f"this server speaks WebSocket version {WEBSOCKET_VERSION} only (RFC 6455)",
            {"Sec-WebSocket-Version": WEBSOCKET_VERSION},
        )
    if not _valid_host(headers.get("Host")):
        return Refusal(400, "invalid_handshake", "the handshake needs a Host header with a valid host name", {})
    if not _valid_key(headers.get("Sec-WebSocket-Key")):
        return Refusal(
            400, "invalid_handshake", "Sec-WebSocket-Key must be 16 random bytes, base64-encoded (RFC 6455)", {}
        )
    if not _valid_extension_offers(headers.get("Sec-WebSocket-Extensions", "")):
        return Refusal(
            400, "invalid_handshake", "Sec-WebSocket-Extensions has a malformed permessage-deflate offer", {}
        )
    return None


def _valid_host(host: str | None) -> bool:
    """Present, and a host name wsproto can read (it decodes the header as IDNA)."""
    if host is None:
        return False
    try:
        host.encode().decode("idna")
    except UnicodeError:
        return False
    return True


def _valid_key(key: str | None) -> bool:
    if key is None:
        return False
    try:
        return len(b64decode(key.strip(), validate=True)) == _KEY_BYTES
    except (binascii.Error, ValueError):  # not base64, or not ASCII
        return False


def _valid_extension_offers(header: str) -> bool:
    """Whether wsproto can negotiate each ``permessage-deflate`` offer (the one extension the server accepts)."""
    for offer in split_comma_header(header.encode("latin-1", "replace")):
        if offer.split(";", 1)[0].strip() != PerMessageDeflate.name:
            continue  # an extension we do not know is declined, as RFC 6455 §9.1 allows
        try:
            PerMessageDeflate().accept(offer)
        except ValueError:
            return False
    return True
