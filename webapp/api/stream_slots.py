"""Open streams, counted per client and in all, so that no client can take the worker's connections.

A client may hold at most ``MAX_STREAMS_PER_CLIENT`` streams, and the
process at most ``MAX_STREAMS``. Under the gevent worker a stream that stays
gunicorn's request holds one of its ``worker_connections``, and when they are
all taken the worker accepts nothing more, probes and launches included; so
``MAX_STREAMS`` is kept below ``WORKER_CONNECTIONS``, leaving connections for
``/healthz``, ``/readyz``, launches and polls. A stream handed over from
gunicorn's request (:mod:`webapp.api.handover`) holds no connection of
gunicorn's: these slots are then its only bound.
"""

from __future__ import annotations

import threading
from collections import Counter
from types import TracebackType

from webapp.errors import StreamsFull, TooManyStreams


class StreamSlot:
    """One open stream's place; :meth:`release` gives it back (once, however often it is called)."""

    def __init__(self, slots: StreamSlots, client: str) -> None:
        self._slots = slots
        self._client = client
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._slots._give_back(self._client)

    def __enter__(self) -> StreamSlot:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()


class StreamSlots:
    def __init__(self, *, per_client: int, total: int) -> None:
        self._per_client = per_client
        self._total = total
        self._lock = threading.Lock()
        self._open: Counter[str] = Counter()
        self._open_total = 0

    def take(self, client: str) -> StreamSlot:
        """A place for one more stream of ``client``; raise :class:`TooManyStreams` or :class:`StreamsFull`."""
        with self._lock:
            if self._per_client and self._open[client] >= self._per_client:
                raise TooManyStreams(
                    f"this address already has {self._per_client} open streams; close one, or poll the status"
                )
            if self._open_total >= self._total:
                raise StreamsFull("this server holds as many streams as it can; poll the status, or retry shortly")
            self._open[client] += 1
            self._open_total += 1
        return StreamSlot(self, client)

    def _give_back(self, client: str) -> None:
        with self._lock:
            self._open[client] -= 1
            self._open_total -= 1
            if self._open[client] <= 0:
                del self._open[client]
