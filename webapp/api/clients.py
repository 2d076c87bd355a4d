"""Who is asking: the client address that per-client limits are keyed by.

The address is the peer's (``REMOTE_ADDR``), or, with ``TRUSTED_PROXY_HOPS``
set, the one the trusted proxies forwarded (:func:`trust_proxies`). The rate
limit, the stream cap, the fair share of ``MAX_ACTIVE_JOBS`` and the scope of
idempotency keys all use this one answer.
"""

from __future__ import annotations

from flask import Flask, request
from werkzeug.middleware.proxy_fix import ProxyFix


def client_address() -> str:
    """The current request's client address."""
    return request.remote_addr or "unknown"


def trust_proxies(app: Flask, *, hops: int) -> None:
    """Believe ``hops`` proxies' ``X-Forwarded-*`` headers: client address, scheme, host and port.

    Werkzeug's ProxyFix takes, of each header, the value the ``hops``-th proxy
    from us appended, so a client cannot choose its own address by sending the
    header itself.
    """
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops)  # type: ignore[method-assign]
