"""Flask-Limiter's ``before_request`` pass: skipped while only views have limits, run as before once others do."""

from __future__ import annotations

from flask import Flask

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
