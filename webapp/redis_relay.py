"""The Redis status channel: every status one instance's door writes reaches every instance's hub.

A legacy run executes on one instance only, and even a Kubernetes run's
progress reports, cancels and launch land on whichever instance took the
request; so each status a door writes is published on one Redis pub/sub
channel (each message is the whole status as the run store keeps it,
``status.stored_json``, with what only jobpulse reads back) and every
instance publishes what it hears into its own hub. A stream on instance B follows a
run executing on instance A. (Each instance also watches Kubernetes itself;
the shared run store gives a status one ``seq`` whoever writes it first, and
a hub ignores what it already has.)

One subscription per process, not per client: a background thread (a
greenlet under gevent) subscribes and reads with a short timeout, pings to
notice a silent connection, and on any error reconnects with backoff. Pub/sub
delivers nothing that was sent while a subscriber was away, so after every
(re)subscription the channel re-syncs from the run store: each unfinished
run this hub knows (or streams) is republished from the store's copy,
and statuses this instance failed to publish are saved and published again.
The hub ignores anything not newer than what it holds, so repeats are free.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

from redis.exceptions import RedisError

from webapp import metrics
from webapp.backoff import Backoff
from webapp.errors import JobpulseError
from webapp.hub import StatusHub
from webapp.runstore.backlog import StatusBacklog
from webapp.runstore.redis import RedisRunStore, connect, describe_redis_error
from webapp.status import JobStatus

logger = logging.getLogger(__name__)

DEFAULT_CHANNEL = "jobpulse:status"

_LIVENESS_PING = "jobpulse-liveness"


class _ChannelSilent(Exception):
    """Nothing heard, not even our own pings' answers: the connection is dead without saying so."""


class RedisStatusChannel:
    """A runtime service that carries legacy statuses between the hubs of every instance."""

    name = "redis"

    def __init__(
        self,
        *,
        hub: StatusHub,
        url: str,
        channel: str = DEFAULT_CHANNEL,
        store: RedisRunStore | None = None,
        poll_seconds: float = 0.5,
        ping_seconds: float = 5.0,
        backoff: Backoff | None = None,
    ) -> None:
        self._hub = hub
        self._channel = channel
        self._store = store if store is not None else RedisRunStore(url)
        self._owns_store = store is None
        self._publisher = connect(url, client_name="jobpulse-publisher")
        # The subscriber gets no client-side retries: this class owns reconnecting
        # (with backoff, metrics, logs and a re-sync), so errors must reach it.
        self._subscriber = connect(url, retries=0, client_name="jobpulse-subscriber")
        self._poll_seconds = poll_seconds
        self._ping_seconds = ping_seconds
        self._backoff = backoff or Backoff(initial=0.5, maximum=10.0)
        self._unsent = StatusBacklog(current=hub.get)
        self._subscribed = False
        self._last_error: str | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.subscriptions = 0
        """How many times the channel has subscribed (1 + reconnects); for tests and debugging."""

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="redis-status-channel", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the subscription loop promptly and close the connections. Idempotent."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=self._poll_seconds + 2.0)
        self._publisher.close()
        self._subscriber.close()
        if self._owns_store:
            self._store.close()

    def unready_reason(self) -> str | None:
        if self._subscribed:
            return None
        return self._last_error or "Redis unreachable: not subscribed yet"

    # -- outgoing: statuses this instance originates ---------------------------

    def announce(self, status: JobStatus) -> None:
        """Publish a status this instance wrote (the door's relay; statuses heard from Redis never come here)."""
        if self._stopping.is_set():
            return
        try:
            self._publisher.publish(self._channel, status.stored_json)
        except RedisError as error:
            self._unsent.keep(status)
            logger.warning(
                "redis.publish_failed",
                extra={"job_name": status.job_name, "mode": status.mode, "error": str(error)},
            )

    def _flush_unsent(self) -> None:
        """Save and publish what could not be published while Redis was away (store first: re-syncs read it)."""
        self._unsent.drain(self._republish)

    def _republish(self, status: JobStatus) -> None:
        # The door wrote this status, but while Redis was down its save waits in the door's backlog, and an
        # instance that re-subscribes before that is retried would re-sync without it. Saving the same status
        # again makes no new one: the store refuses a seq it already has.
        self._store.save(status)
        self._publisher.publish(self._channel, status.stored_json)
        logger.info("redis.republished", extra={"job_name": status.job_name, "mode": status.mode, "seq": status.seq})

    # -- incoming: the subscription loop ---------------------------------------

    def _run(self) -> None:
        """Subscribe, listen, and on any failure back off and subscribe again, until stopped."""
        while not self._stopping.is_set():
            pubsub = self._subscriber.pubsub()
            # ``detail`` is for the log and may name Redis's address; ``public`` is for /readyz and must not.
            try:
                self._listen(pubsub)
                reason, detail, public = "stopped", "", ""
            except _ChannelSilent as error:
                reason, detail, public = "silence", str(error), f"Redis unreachable: {error}"
            except RedisError as error:
                reason, detail, public = "error", str(error), describe_redis_error(error)
            except JobpulseError as error:  # the run store, while re-syncing
                reason, detail, public = "error", str(error.__cause__ or error.message), error.message
            except Exception as error:
                logger.exception("redis.channel_failed", extra={"source": "redis"})
                reason, detail, public = "error", f"{type(error).__name__}: {error}", "the status channel failed"
            finally:
                self._subscribed = False
                with contextlib.suppress(RedisError):
                    pubsub.close()
            if self._stopping.is_set():
                return
            self._last_error = public
            delay = self._backoff.next_delay()
            metrics.REDIS_RECONNECTS.labels(reason=reason).inc()
            logger.warning(
                "watch.restarted",
                extra={"source": "redis", "reason": reason, "detail": f"{detail}; retrying in {delay:.1f}s"},
            )
            self._stopping.wait(delay)

    def _listen(self, pubsub: Any) -> None:
        pubsub.subscribe(self._channel)
        last_heard = last_ping = time.monotonic()
        while not self._stopping.is_set():
            message = pubsub.get_message(timeout=self._poll_seconds)
            now = time.monotonic()
            if message is not None:
                last_heard = now
                if message["type"] == "subscribe":
                    self._on_subscribed()
                elif message["type"] == "message":
                    self._receive(message["data"])
            elif now - last_heard > 2 * self._ping_seconds + self._poll_seconds:
                raise _ChannelSilent(f"nothing heard from Redis for {now - last_heard:.1f}s")
            if now - last_ping >= self._ping_seconds:
                pubsub.ping(_LIVENESS_PING)  # answered in-band, as a "pong" message
                last_ping = now
            if self._unsent:
                self._flush_unsent()

    def _on_subscribed(self) -> None:
        """(Re)subscribed: catch up on what pub/sub could not deliver meanwhile, then say ready."""
        self.subscriptions += 1
        if self.subscriptions > 1:
            logger.info("redis.resubscribed", extra={"source": "redis", "channel": self._channel})
        self._resync()
        self._flush_unsent()
        self._subscribed = True
        self._last_error = None
        self._backoff.reset()

    def _resync(self) -> None:
        """Publish the run store's copy of every unfinished run this hub knows or streams."""
        wanted = {status.job_name for status in self._hub.known_jobs() if not status.terminal}
        stored = {status.job_name: status for status in self._store.unfinished()}
        wanted |= {name for name in stored if self._hub.subscriber_count(name)}
        for job_name in wanted:
            status = stored.get(job_name) or self._store.get(job_name)  # finished meanwhile: not in unfinished
            if status is not None:
                self._publish_heard(status)

    def _receive(self, data: str) -> None:
        try:
            status = JobStatus.from_json(data)
        except (ValueError, KeyError, TypeError) as error:
            logger.warning("redis.bad_message", extra={"channel": self._channel, "error": str(error)})
            return
        self._publish_heard(status)

    def _publish_heard(self, status: JobStatus) -> None:
        """Into this process's hub only: it was saved and relayed by the instance that wrote it."""
        self._hub.publish(status)
