"""jobpulse: start a donation's background task and stream its status to the page, live.

``create_app`` is the application factory: it reads and validates the
settings, builds the runtime (hub, run store, executors), registers the
blueprints, wraps the app in the middleware that limits strangers (a body
read deadline; the trusted proxies' forwarded client address, when set) and
starts the background work.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Mapping

from flask import Flask

from webapp.settings import PROJECT_ROOT, Settings

__version__ = "0.1.0"

MAX_BODY_BYTES = 16 * 1024


def create_app(test_config: Mapping[str, str] | None = None) -> Flask:
    """Build the app. ``test_config`` overrides environment variables (same names, same checks)."""
    from webapp.api import audit, console, donations, jobs, page, probes, progress, streams
    from webapp.api.body_deadline import BODY_WATCHDOG, body_deadline
    from webapp.api.clients import trust_proxies
    from webapp.api.errors import register_error_handlers
    from webapp.api.ratelimit import MEMORY_STORAGE_URI, limiter
    from webapp.api.stream_slots import StreamSlots
    from webapp.api.ws_reader import WebSocketReader
    from webapp.logs import configure_logging
    from webapp.runtime import build_runtime

    environ = {**os.environ, **(test_config or {})}
    settings = Settings.from_env(environ)
    configure_logging(level=settings.log_level, log_format=settings.log_format)

    app = Flask(
        __name__,
        static_folder=str(PROJECT_ROOT / "static"),
        template_folder=str(PROJECT_ROOT / "static"),
    )
    app.config.update(
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
        SOCK_SERVER_OPTIONS={
            "ping_interval": settings.ws_ping_seconds,
            "max_message_size": streams.WS_MAX_MESSAGE_BYTES,
            "thread_class": WebSocketReader,  # under gevent, no reader greenlet per WebSocket
        },
        RATELIMIT_STORAGE_URI=settings.redis_url or MEMORY_STORAGE_URI,
        RATELIMIT_SWALLOW_ERRORS=True,  # Redis down: the request goes on and the run store answers 503
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the documented field order

    runtime = build_runtime(settings)
    app.extensions["jobpulse"] = runtime
    app.extensions["jobpulse.stream_slots"] = StreamSlots(
        per_client=settings.max_streams_per_client, total=settings.max_streams
    )

    register_error_handlers(app)
    page.add_security_headers(app)
    limiter.init_app(app)
    for blueprint in (page.bp, donations.bp, jobs.bp, audit.bp, console.bp, progress.bp, streams.bp, probes.bp):
        app.register_blueprint(blueprint)
    streams.sock.init_app(app)
    # functions, not instances: each stream's greenlet parks under every layer (see body_deadline)
    app.wsgi_app = body_deadline(app.wsgi_app, seconds=settings.body_timeout_seconds)  # type: ignore[method-assign,assignment]
    runtime.services.append(BODY_WATCHDOG)  # stops with the runtime
    trust_proxies(app, hops=settings.trusted_proxy_hops)  # outermost: everything inside sees the real client

    runtime.start()
    atexit.register(runtime.stop)
    return app
