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
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=1, x_host=1, x_port=1)  # type: ignore[method-assign]
