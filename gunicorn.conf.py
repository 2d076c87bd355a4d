"""gunicorn settings: ``gunicorn wsgi:app`` from the checkout root uses these.

The gevent worker holds thousands of open streams per process. Nothing heavy
is imported here, and the app is never preloaded (gevent must patch first).
"""

import os
import time

bind = os.environ.get("BIND", "127.0.0.1:8000")
worker_class = "gevent"
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
worker_connections = int(os.environ.get("WORKER_CONNECTIONS", "10000"))
preload_app = False
control_socket_disable = True  # gunicorn >= 25 would share $HOME/.gunicorn/gunicorn.ctl between instances
timeout = 30
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "10"))
# Not a gunicorn setting: the share of graceful_timeout over which a stopping worker spreads the ends of
# its open streams (post_worker_init below), so their clients do not all reconnect elsewhere at once.
stream_close_spread = min(max(float(os.environ.get("STREAM_CLOSE_SPREAD", "0.5")), 0.0), 0.8)
# Not a gunicorn setting: how long a worker told to stop at once (SIGQUIT, SIGINT) still waits for its handed-over
# streams' last writes (worker_exit below); on SIGTERM it has until graceful_timeout after the signal.
quick_stop_seconds = 1.0
keepalive = 5
accesslog = "-" if os.environ.get("ACCESS_LOG", "").lower() in ("1", "true", "yes") else None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()


def post_worker_init(worker):
    """Freeze what loading the app made out of the garbage collector's sight; stop the app's runtime first
    whenever the worker is told to stop.

    That ends open streams (WebSocket close 1001; SSE clients reconnect)
    instead of holding the shutdown for ``graceful_timeout``, and hands
    unfinished local runs back to the run store for the next process. The
    streams' ends are spread, in random order, over ``STREAM_CLOSE_SPREAD``
    (a share, 0 to 0.8, default 0.5) of ``graceful_timeout``, so the process
    that takes their clients over does not get them all in the same instant;
    the rest of the timeout is left for the executors and gunicorn to stop.
    Only on ``SIGTERM``, gunicorn's graceful stop; ``SIGQUIT`` and ``SIGINT``
    end the streams at once.
    """
    import gc
    import signal

    # What loading the app made (Flask, the Kubernetes client's models, the jobspecs: tens of thousands of
    # objects that live as long as the worker) is left out of every collection from now on: a full
    # collection walked them all: 10-100 ms during which every request in flight waited (docs/PERFORMANCE.md).
    gc.freeze()
    runtime = getattr(worker.wsgi, "extensions", {}).get("jobpulse")
    if runtime is None:
        return
    spread = worker.cfg.graceful_timeout * stream_close_spread  # SIGTERM only: SIGQUIT and SIGINT stop at once

    def chain(signum, previous):
        def stop_then_continue(frame):
            runtime.stop(close_streams_over=spread if signum == signal.SIGTERM else 0.0)
            if callable(previous):
                previous(signum, frame)

        def handler(_signum, frame):
            allowed = worker.cfg.graceful_timeout if signum == signal.SIGTERM else quick_stop_seconds
            stop_by(worker, time.monotonic() + allowed)
            # never block in a signal handler (under gevent it runs in the event loop)
            spawn(stop_then_continue, frame)

        return handler

    if "gevent" in type(worker).__module__:
        from gevent import spawn

        from webapp.api.handover import enable

        enable(worker.wsgi)  # open streams leave gunicorn's requests; worker_exit below waits for them
    else:
        import threading

        def spawn(target, *args):
            threading.Thread(target=target, args=args, daemon=True).start()

    for signum in (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT):
        signal.signal(signum, chain(signum, signal.getsignal(signum)))


def stop_by(worker, deadline):
    """Note when the worker must be gone, by ``time.monotonic()``: the earliest signal's deadline holds.

    gunicorn's arbiter kills a worker ``graceful_timeout`` after its SIGTERM, and two seconds after
    a SIGQUIT that follows it ("quick shutdown"); a worker still waiting then would be killed mid-exit.
    """
    noted = getattr(worker, "jobpulse_stop_by", None)
    worker.jobpulse_stop_by = deadline if noted is None else min(noted, deadline)


def exit_wait(worker, now):
    """Seconds ``worker_exit`` may wait for handed-over streams: until half a second before the noted
    deadline (:func:`stop_by`), else ``graceful_timeout`` (a stop no signal told of: ``max_requests``)."""
    noted = getattr(worker, "jobpulse_stop_by", None)
    return worker.cfg.graceful_timeout if noted is None else max(0.0, noted - now - 0.5)


def worker_exit(server, worker):
    """Wait, at most until the stop's deadline (:func:`exit_wait`), for the streams handed over from gunicorn's
    requests to end.

    gunicorn's gevent worker leaves its graceful loop once none of *its*
    requests is left, and a handed-over stream (webapp/api/handover.py) is
    none. By the time it gets here on SIGTERM the runtime has stopped
    (post_worker_init: gunicorn is told only after), so every stream has
    been ended, spread; what is left is their last writes and the
    WebSockets' closing handshakes. Any other way out stops the runtime here
    first.
    """
    from webapp.api.handover import EXTENSION

    extensions = getattr(getattr(worker, "wsgi", None), "extensions", {})  # no app if it failed to load
    handovers = extensions.get(EXTENSION)
    runtime = extensions.get("jobpulse")
    if handovers is None or runtime is None:
        return
    runtime.stop()  # idempotent: on SIGTERM, SIGQUIT and SIGINT it has run already
    if len(handovers):
        worker.log.info("Waiting for %s handed-over streams to end", len(handovers))
    if not handovers.wait(exit_wait(worker, time.monotonic()), beat=worker.notify):  # beat: not taken for hung
        worker.log.warning("Handed-over streams still open at exit: %s", len(handovers))
