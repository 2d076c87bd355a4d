"""A reflector, as in client-go: list a kind of object, watch it from there, and report what is seen.

It only lists, watches, relists and reports; what the objects mean, and what
vanished between two listings, is its handler's business. The loop: list,
then watch from the list's ``resourceVersion`` with bookmarks and a server
timeout of 5-10 minutes (random, so instances do not reconnect in step); a
watch that ends is reopened from the last ``resourceVersion`` seen; ``410
Gone`` (an ``ERROR`` event or the answer to the watch request) means that
version is too old: list again and report the whole listing; a watch silent
for :data:`READ_TIMEOUT` is reopened; any other error backs off (0.8 s → 30 s
with jitter) and retries. The loop never dies, and it is not synced until a
listing is in.

``stop()`` shuts the open watch's socket down, so :meth:`Reflector.run`
returns at once even while it waits in a read for the next event, under
threads and gevent alike.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Protocol

import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from webapp import metrics
from webapp.backoff import Backoff
from webapp.kube.client import describe_api_failure, raw_json
from webapp.status import utcnow

logger = logging.getLogger(__name__)

SOURCE = "k8s"
"""The default ``source`` of the ``watch.*`` log lines and the ``WATCH_RESTARTS`` metric (the Job watch's)."""
WATCH_TIMEOUT_RANGE = (300, 600)
"""Server-side watch timeout, seconds, picked at random per watch."""
READ_TIMEOUT = 120.0
"""Client read timeout the watch function must set: a watch silent this long (not even a bookmark) is reopened."""


class WatchResponse(Protocol):
    """The streaming answer to a watch request: urllib3's ``HTTPResponse`` (``_preload_content=False``)."""

    def stream(self, amt: int | None = ..., decode_content: bool | None = ...) -> Iterator[bytes]: ...

    def shutdown(self) -> None:
        """Shut the socket down for reading: wakes a read blocked in another thread."""

    def close(self) -> None: ...

    def release_conn(self) -> None: ...


class ListObjects(Protocol):
    def __call__(self) -> dict[str, Any]:
        """List the objects: the server's JSON, ``{"items": [...], "metadata": {"resourceVersion": ...}}``."""


class WatchObjects(Protocol):
    def __call__(self, *, resource_version: str, timeout_seconds: int) -> WatchResponse:
        """Open a watch with bookmarks from ``resource_version``, read timeout :data:`READ_TIMEOUT`."""


def list_watch(call: Any, namespace: str, **selector: str) -> tuple[ListObjects, WatchObjects]:
    """The list and watch functions of one kind of object for a :class:`Reflector`.

    ``call`` is the client's ``list_namespaced_*`` method; ``selector`` its
    ``label_selector`` and/or ``field_selector``. Both read the server's JSON
    as it is sent, without the client's model classes.
    """

    def list_objects() -> dict[str, Any]:
        return raw_json(call, namespace, _request_timeout=(5, 60), **selector)

    def watch_objects(*, resource_version: str, timeout_seconds: int) -> WatchResponse:
        response: WatchResponse = call(
            namespace,
            watch=True,
            allow_watch_bookmarks=True,
            resource_version=resource_version,
            timeout_seconds=timeout_seconds,
            _preload_content=False,  # urllib3's streaming response, not the client's model of a list
            _request_timeout=(5, READ_TIMEOUT),
            **selector,
        )
        return response

    return list_objects, watch_objects


class ReflectorHandler(Protocol):
    def on_list(self, objects: list[dict[str, Any]], *, requested_at: datetime) -> None:
        """The whole listing (first sync and every relist), asked for at ``requested_at``."""

    def on_event(self, kind: str, obj: dict[str, Any]) -> None:
        """One change: ``kind`` is ``ADDED``, ``MODIFIED`` or ``DELETED``."""


class _Gone(Exception):
    """The watch's resourceVersion is too old (410 Gone): relist."""


class Reflector:
    def __init__(
        self,
        *,
        list_objects: ListObjects,
        watch_objects: WatchObjects,
        handler: ReflectorHandler,
        backoff: Backoff | None = None,
        source: str = SOURCE,
    ) -> None:
        self.source = source
        """What is watched, as the ``watch.*`` log lines and the ``WATCH_RESTARTS`` metric name it."""
        self._list_objects = list_objects
        self._watch_objects = watch_objects
        self._handler = handler
        self._backoff = backoff or Backoff()
        self._stopping = threading.Event()
        self._synced = threading.Event()
        self.last_error: str | None = None
        """Why the last attempt failed, in public words (:func:`describe_api_failure`); ``None`` once synced."""
        self.resource_version: str | None = None
        """Where the reflector has got to: the last listing, event or bookmark seen."""
        self._response: WatchResponse | None = None
        """The open watch's streaming response, guarded by ``_response_lock``: what ``stop()`` shuts down."""
        self._response_lock = threading.Lock()

    @property
    def synced(self) -> bool:
        """Whether what was reported is current: a listing is in and no error since the last listing or watch."""
        return self._synced.is_set()

    @property
    def watching(self) -> bool:
        """Whether a watch is open now (not while listing, nor between reconnects)."""
        return self._response is not None

    def stop(self) -> None:
        """Make :meth:`run` return at once.

        The open watch's socket is shut down, not closed: closing the response
        from this thread would wait for the run thread's read to end (it holds
        the read buffer's lock; an idle watch reads until the next bookmark, a
        minute), while a shutdown wakes that read at once. The run thread then
        closes the response as it unwinds.
        """
        self._stopping.set()
        with self._response_lock:
            if self._response is not None:
                # ValueError/RuntimeError: the watch already ended and released its connection
                with contextlib.suppress(ValueError, RuntimeError, OSError):
                    self._response.shutdown()

    def run(self) -> None:
        """List, then watch, until stopped."""
        self.resource_version = None
        while not self._stopping.is_set():
            try:
                if self.resource_version is None:
                    self.resource_version = self._list()
                    self._synced.set()
                    self.last_error = None
                self._watch(self.resource_version)
                self._backoff.reset()
            except _Gone:
                self._restarted("gone", "resourceVersion too old; relisting")
                self.resource_version = None
            except urllib3.exceptions.ReadTimeoutError:
                self._restarted("silence", f"no event for {READ_TIMEOUT:g}s; reopening the watch")
            except Exception as error:  # the loop never dies
                if self._stopping.is_set():  # the watch's socket was shut down by stop()
                    return
                self._synced.clear()
                self.last_error = describe_api_failure(error)
                delay = self._backoff.next_delay()
                self._restarted("error", f"{str(error) or type(error).__name__}; retrying in {delay:.1f}s")
                self._stopping.wait(delay)

    def _restarted(self, reason: str, detail: str) -> None:
        metrics.WATCH_RESTARTS.labels(source=self.source, reason=reason).inc()
        logger.warning("watch.restarted", extra={"source": self.source, "reason": reason, "detail": detail})

    def _list(self) -> str:
        """List, report the listing, and return its resourceVersion."""
        requested_at = utcnow()
        listing = self._list_objects()
        objects = list(listing.get("items") or ())
        self._handler.on_list(objects, requested_at=requested_at)
        version: str = listing["metadata"]["resourceVersion"]
        # "jobs": the field operators know from this line, whatever the kind listed
        logger.info("watch.listed", extra={"source": self.source, "jobs": len(objects), "resource_version": version})
        return version

    def _watch(self, resource_version: str) -> None:
        """Report changes from ``resource_version`` until the watch ends, keeping ``self.resource_version`` up to date.

        After an error the next watch starts from the last event seen, not from where this one started.
        """
        try:
            response = self._watch_objects(
                resource_version=resource_version, timeout_seconds=random.randint(*WATCH_TIMEOUT_RANGE)
            )
        except ApiException as error:
            if error.status == 410:
                raise _Gone(str(error)) from error
            raise
        with self._response_lock:
            self._response = response
        self._synced.set()  # the watch is open again: what was reported is current
        self.last_error = None
        try:
            if self._stopping.is_set():  # stop() came before the response was there to shut down
                return
            for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
                if self._stopping.is_set():
                    break
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Gone(obj.get("message"))
                    raise ApiException(status=obj.get("code"), reason=obj.get("message"))
                self.resource_version = (obj.get("metadata") or {}).get("resourceVersion") or self.resource_version
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self._handler.on_event(kind, obj)
        finally:
            with self._response_lock:
                self._response = None
            response.close()
            response.release_conn()
