"""gunicorn settings: ``gunicorn wsgi:app`` from the checkout root uses these.

The gevent worker holds thousands of open streams per process. Nothing heavy
is imported here, and the app is never preloaded (gevent must patch first).
"""

import os

bind = os.environ.get("BIND", "127.0.0.1:8000")
worker_class = "gevent"
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
worker_connections = int(os.environ.get("WORKER_CONNECTIONS", "10000"))
preload_app = False
timeout = 30
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "10"))
keepalive = 5
accesslog = "-" if os.environ.get("ACCESS_LOG", "").lower() in ("1", "true", "yes") else None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()


def post_worker_init(worker):
    """End open streams (WebSocket close 1001) and park runs as soon as a worker is told to stop.

    gunicorn waits up to ``graceful_timeout`` for open requests; without this,
    every open stream would hold the shutdown for that long.
    """
    import signal

    previous = signal.getsignal(signal.SIGTERM)

    def stop_runtime_then_exit(signum, frame):
        runtime = worker.wsgi.extensions.get("jobpulse") if hasattr(worker.wsgi, "extensions") else None
        if runtime is not None:
            runtime.stop()
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, stop_runtime_then_exit)
