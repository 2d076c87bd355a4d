"""Who is asking: the client address that per-client limits are keyed by.

The address is the peer's (``REMOTE_ADDR``), or, with ``TRUSTED_PROXY_HOPS``
set, the one the trusted proxies forwarded (:func:`trust_proxies`). An IPv6
client is its /64: one subscriber is given at least that many addresses and
can pick a new one for each request. The rate limit, the stream cap, the fair
share of ``MAX_ACTIVE_JOBS`` and the scope of idempotency keys all use this
one answer.
"""

from __future__ import annotations

import ipaddress
import socket

from flask import Flask, request
from werkzeug.middleware.proxy_fix import ProxyFix

IPV6_CLIENT_PREFIX = 64
"""The IPv6 prefix length that is one client (RFC 6177: a subscriber's smallest allocation is a /64)."""


def client_address() -> str:
    """The current request's client: its IPv4 address, or its IPv6 address's /64."""
    return client_key(request.remote_addr or "unknown")


def client_key(address: str) -> str:
    """What per-client limits key ``address`` by: an IPv4 address as it is, an IPv6 one as its /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address  # not an address (a unix socket's peer): as it is
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip)
    if ip.ipv4_mapped is not None:  # an IPv4 client on a dual-stack socket
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(ip), IPV6_CLIENT_PREFIX), strict=False))


def trust_proxies(app: Flask, *, hops: int) -> None:
    """Believe ``hops`` proxies' ``X-Forwarded-For``, and the nearest proxy's ``X-Forwarded-Proto/Host/Port``.

    Werkzeug's ProxyFix takes, of each header, the value the ``n``-th proxy
    from us appended, and ignores a header with fewer than ``n`` values. Each
    proxy appends to ``X-Forwarded-For``, so the client's address is ``hops``
    back and a client cannot choose its own by sending the header itself. The
    scheme, host and port headers are set, not appended (nginx's
    ``proxy_set_header``, ingress-nginx): there is one value, the nearest
    proxy's, whatever the number of proxies.
    """
    if hops:
        # its bound ``__call__``, not the instance: a call CPython 3.11 runs without a C frame (see body_deadline)
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=1, x_host=1, x_port=1).__call__  # type: ignore[method-assign]


def own_root() -> str | None:
    """This server's own root URL, from the address the request came in on: never from what the client sent.

    ``SERVER_NAME`` and ``SERVER_PORT`` are the listening socket's address
    under gunicorn's TCP binds (``0.0.0.0`` reaches this host), as before any
    proxy rewrote them (ProxyFix keeps the originals). A task posts its
    progress here unless ``SERVICE_URL`` says otherwise, so a request's
    ``Host`` header must not choose where a task sends its run's token.
    ``None`` for a request that came in on a unix socket: gunicorn makes
    ``SERVER_NAME`` of its ``Host`` header there, and the socket has no URL.
    """
    environ = request.environ
    sock = environ.get("gunicorn.socket")
    if getattr(sock, "family", None) == socket.AF_UNIX:
        return None
    original = environ.get("werkzeug.proxy_fix.orig") or {}
    scheme = original.get("wsgi.url_scheme") or environ.get("wsgi.url_scheme", "http")
    host = original.get("SERVER_NAME") or environ.get("SERVER_NAME") or "127.0.0.1"
    port = original.get("SERVER_PORT") or environ.get("SERVER_PORT") or ""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    default = {"http": "80", "https": "443"}.get(scheme)
    authority = host if not port or port == default else f"{host}:{port}"
    script = original.get("SCRIPT_NAME") if original else environ.get("SCRIPT_NAME")
    return f"{scheme}://{authority}{script or ''}/"
