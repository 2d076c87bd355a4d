"""The donation page, the operator console's page and the headers that keep them safe.

``/`` is ``static/index.html``; ``/admin`` is ``static/admin.html``.

The pages are plain HTML, CSS and JS served by this app: no CDN, no inline
script or style, so a strict Content-Security-Policy holds. The console's
page itself holds no data: everything it shows comes from the admin API,
with the operator's token.
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, render_template

from webapp.api import runtime

bp = Blueprint("page", __name__)

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self' ws: wss:; "
    "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


@bp.get("/")
def donation_page() -> str:
    return render_template("index.html", currencies=runtime().settings.currencies)


@bp.get("/admin")
def operator_console() -> str:
    return render_template("admin.html")


def add_security_headers(app: Flask) -> None:
    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        if response.mimetype == "text/html":
            response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
            response.headers.setdefault("X-Frame-Options", "DENY")
        return response
