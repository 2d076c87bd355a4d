"""Flask-Limiter's ``before_request`` pass: skipped while only views have limits, run as before once others do."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Blueprint, Flask
from flask_limiter import Limiter

from webapp.api.ratelimit import DecoratedLimiter


def limited_app(limiter: DecoratedLimiter) -> Flask:
    app = Flask(__name__)
    app.config["RATELIMIT_STORAGE_URI"] = "memory://"
    limiter.init_app(app)

    @app.get("/open")
    def open_view() -> str:
        return "open"

    @app.get("/limited")
    @limiter.limit("1/minute")
    def limited_view() -> str:
        return "limited"

    return app


def test_a_view_limit_still_answers_429_and_other_views_are_not_counted() -> None:
    client = limited_app(DecoratedLimiter(key_func=lambda: "192.0.2.1", default_limits=[])).test_client()
    assert [client.get("/open").status_code for _ in range(3)] == [200, 200, 200]
    assert [client.get("/limited").status_code for _ in range(2)] == [200, 429]


def test_a_default_limit_is_still_checked_before_every_view() -> None:
    client = limited_app(DecoratedLimiter(key_func=lambda: "192.0.2.1", default_limits=["2/minute"])).test_client()
    assert [client.get("/open").status_code for _ in range(3)] == [200, 200, 429]


SETTINGS: list[dict[str, Any]] = [
    {},
    {"RATELIMIT_HEADERS_ENABLED": True},
    {"RATELIMIT_HEADERS_ENABLED": True, "RATELIMIT_DEFAULT": "3/minute"},
    {"RATELIMIT_HEADERS_ENABLED": True, "RATELIMIT_APPLICATION": "4/minute"},
    {"RATELIMIT_HEADERS_ENABLED": True, "RATELIMIT_META": "2/minute"},
    {"RATELIMIT_HEADERS_ENABLED": True, "RATELIMIT_HEADER_RETRY_AFTER_VALUE": "http-date"},
    # the storage down (nothing listens on port 1), limits in memory meanwhile: for every route, not only views
    {"RATELIMIT_STORAGE_URI": "redis://127.0.0.1:1", "RATELIMIT_IN_MEMORY_FALLBACK": "1/minute"},
]


def _blueprint_app(limiter: Limiter, settings: dict[str, Any], *, blueprint_limit: bool) -> Flask:
    app = Flask(__name__)
    app.config.update({"RATELIMIT_STORAGE_URI": "memory://", **settings})
    routes = Blueprint("routes", __name__)

    @routes.post("/limited")
    @limiter.limit("2/minute")
    def limited_view() -> str:
        return "limited"

    @routes.get("/open")
    def open_view() -> str:
        return "open"

    @routes.get("/exempt")
    @limiter.exempt
    def exempt_view() -> str:
        return "exempt"

    if blueprint_limit:
        limiter.limit("5/minute")(routes)
    limiter.init_app(app)
    app.register_blueprint(routes)
    return app


def _timeless(name: str, value: str) -> str:
    """A header's value, but only the form of a time: the two limiters' runs may straddle a second."""
    if name == "X-RateLimit-Reset":
        return "(epoch seconds)" if value.isdigit() else value
    if name == "Retry-After":
        return "(seconds)" if value.isdigit() else "(an HTTP date)" if value.endswith(" GMT") else value
    return value


@pytest.mark.parametrize("blueprint_limit", [False, True])
@pytest.mark.parametrize("settings", SETTINGS)
def test_every_answer_and_header_is_flask_limiters_own(settings: dict[str, Any], blueprint_limit: bool) -> None:
    """Side by side with Flask-Limiter's own ``Limiter``: the same statuses, ``X-RateLimit-*`` and ``Retry-After``."""
    answers = []
    for kind in (Limiter, DecoratedLimiter):
        client = _blueprint_app(
            kind(key_func=lambda: "192.0.2.1", default_limits=[]), settings, blueprint_limit=blueprint_limit
        ).test_client()
        seen = []
        for method, path in [("get", "/open"), ("post", "/limited"), ("get", "/exempt")] * 4 + [("get", "/nowhere")]:
            response = client.open(path, method=method.upper())
            limits = sorted((k, _timeless(k, v)) for k, v in response.headers if k.startswith(("X-RateLimit", "Retry")))
            seen.append((path, response.status_code, limits))
        answers.append(seen)
    assert answers[0] == answers[1]
