"""Live log tails: one follow of a run's output per process, shared by everyone who watches it.

Following a pod's log holds a connection to the API server (and a kubelet's
stream) for as long as the follow lasts; ten operators watching one run must
not cost ten. :class:`LogFollowers` opens one *upstream* per run (the
executor's ``follow_logs``), read by one pump thread, and hands each chunk to
every *viewer* of that run. The upstream is closed when its last viewer
leaves, when it ends by itself (the run ended), or when the process stops.

Each viewer holds at most ``VIEWER_BUFFER_BYTES`` not yet sent: a viewer that
falls behind (a slow client) loses what does not fit and gets one line
``[… N bytes skipped …]`` in its place, so its memory never grows; of a chunk
bigger than the room left it keeps the last whole lines that fit. A
viewer who joins a follow already under way first gets the last lines of what
the follow has read (up to ``RECENT_BYTES``), then the live chunks.

A follow whose upstream ends by itself (the run ended) hands what it read
to its receiver (:meth:`LogFollowers.hand_output_to`: the keeper of finished
runs' output, :mod:`webapp.log_tails`), so a pod deleted the moment its Job
finished leaves its output behind when anyone watched it to the end.

Written against stdlib ``threading`` (greenlets under the gevent worker, as
the hub is). An upstream may have a ``close()`` that is safe to call from
another thread (the executors' follows do): it makes its iteration end soon.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator

from webapp import metrics
from webapp.errors import JobpulseError, StreamsFull
from webapp.log_tails import last_lines

logger = logging.getLogger(__name__)

MAX_FOLLOWS = 64
"""Upstreams (runs followed) open at once in one process; one more is refused with 503 ``streams_full``."""

MAX_VIEWERS = 512
"""Viewers (log streams to clients) at once in one process, over all runs; beyond, 503 ``streams_full``."""

VIEWER_BUFFER_BYTES = 256 * 1024
"""Output held for one viewer that has not been sent yet; what does not fit is skipped, and the viewer told."""

RECENT_BYTES = 256 * 1024
"""The end of what a follow has read, kept so that a viewer joining late starts with the recent tail."""

IDLE_CHECK_SECONDS = 2.0
"""How often a viewer with no output to send checks that its client is still there."""

Upstream = Iterable[str]
"""An executor's follow of one run: chunks of output until the run ends (``close()``, if any, ends it early)."""

OutputReceiver = Callable[[str, str], None]
"""Takes ``(job_name, output)``: the recent output of a follow that ended by itself (must not block)."""


def skipped_marker(count: int) -> str:
    """The line a viewer gets in place of ``count`` bytes it fell too far behind to receive."""
    return f"[… {count} bytes skipped …]\n"


def _last_lines_within(chunk: str, limit: int) -> str:
    """The end of ``chunk`` that starts a line and takes at most ``limit`` bytes of UTF-8 (``""`` if none does)."""
    if limit <= 0:
        return ""
    data = chunk.encode("utf-8")
    if len(data) <= limit:
        return chunk
    newline = data.find(b"\n", len(data) - limit - 1)  # the byte before the cut ends a line, or a later one does
    return data[newline + 1 :].decode("utf-8") if newline != -1 else ""


class _Viewer:
    """One client's view of a follow: a bounded buffer of chunks, read by that client's request."""

    def __init__(self, *, limit: int) -> None:
        self._limit = limit
        self._ready = threading.Condition(threading.Lock())
        self._chunks: deque[str] = deque()
        self._size = 0
        self._skipped = 0
        self._ended = False

    def offer(self, chunk: str, size: int) -> None:
        """Queue a chunk (never blocks the pump); what does not fit in the buffer is skipped and counted.

        A chunk bigger than the room left keeps its last whole lines that fit (a tail of 2000 long
        lines, a late joiner's recent output): the viewer sees the newest output, not only a marker.
        """
        with self._ready:
            room = self._limit - self._size
            if size > room:
                kept = _last_lines_within(chunk, room)
                kept_size = len(kept.encode("utf-8"))
                self._skipped += size - kept_size
                chunk, size = kept, kept_size
            if chunk:
                if self._skipped:
                    self._chunks.append(skipped_marker(self._skipped))
                    self._skipped = 0
                self._chunks.append(chunk)
                self._size += size
            self._ready.notify()

    def end(self) -> None:
        with self._ready:
            self._ended = True
            self._ready.notify()

    def take(self, timeout: float | None = None) -> str | None:
        """Everything queued, waiting for it if there is nothing; ``None`` once the follow ended and all is sent.

        ``""`` when ``timeout`` seconds passed with nothing.
        """
        with self._ready:
            if not self._chunks and not self._skipped and not self._ended:
                self._ready.wait(timeout)
            if self._chunks:
                text = "".join(self._chunks)
                self._chunks.clear()
                self._size = 0
                return text
            if self._skipped:
                text, self._skipped = skipped_marker(self._skipped), 0
                return text
            return None if self._ended else ""


class _Follow:
    """One upstream of one run, its recent output and its viewers (guarded by :class:`LogFollowers`' lock)."""

    def __init__(self, job_name: str) -> None:
        self.job_name = job_name
        self.upstream: Upstream = ()
        """Set once opened; empty until then."""
        self.viewers: dict[_Viewer, None] = {}
        """In the order they joined (each chunk is offered in that order)."""
        self.recent: deque[tuple[str, int]] = deque()
        """The end of what was read: (chunk, its size in bytes), oldest first."""
        self.recent_size = 0
        self.ended = False

    def close_upstream(self) -> None:
        close = getattr(self.upstream, "close", None)
        if close is not None:
            with contextlib.suppress(ValueError):  # a generator being read cannot be closed: it ends at its next chunk
                close()


class LogView:
    """What one viewer reads: an iterator of text that leaves its follow when exhausted or closed."""

    def __init__(
        self,
        viewer: _Viewer,
        *,
        leave: Callable[[], None],
        when_empty: Callable[[], str] | None,
        still_wanted: Callable[[], bool] | None,
    ) -> None:
        self._viewer = viewer
        self._leave = leave
        self._when_empty = when_empty
        self._still_wanted = still_wanted
        self._sent = False
        self._done = False

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if not self._done:
            timeout = None if self._still_wanted is None else IDLE_CHECK_SECONDS
            while (text := self._viewer.take(timeout)) == "":  # quiet: is anyone still reading?
                if self._still_wanted is not None and not self._still_wanted():
                    self.close()
                    raise StopIteration
            if text is not None:
                self._sent = True
                return text
            self.close()
            if not self._sent and self._when_empty is not None:
                self._sent = True
                if text := self._when_empty():
                    return text
        raise StopIteration

    def close(self) -> None:
        """Leave the follow (idempotent): the last viewer to leave closes the upstream."""
        if not self._done:
            self._done = True
            self._leave()


class LogFollowers:
    """The live follows of this process, one per followed run (a runtime part; :meth:`stop` ends them all)."""

    def __init__(
        self,
        *,
        max_follows: int = MAX_FOLLOWS,
        max_viewers: int = MAX_VIEWERS,
        viewer_buffer_bytes: int = VIEWER_BUFFER_BYTES,
        recent_bytes: int = RECENT_BYTES,
    ) -> None:
        self._max_follows = max_follows
        self._max_viewers = max_viewers
        self._viewer_buffer_bytes = viewer_buffer_bytes
        self._recent_bytes = recent_bytes
        self._lock = threading.Lock()
        self._follows: dict[str, _Follow] = {}
        self._viewers = 0
        self._stopped = False
        self._receiver: OutputReceiver | None = None

    def hand_output_to(self, receiver: OutputReceiver) -> None:
        """From now on, a follow whose upstream ends by itself gives ``receiver`` the end of what it read.

        Up to ``RECENT_BYTES``, from the pump's thread, once its viewers have been told the follow ended.
        Not for a follow its viewers left, the server stopped, or whose upstream broke: it did not see the end.
        """
        self._receiver = receiver

    def follow(
        self,
        job_name: str,
        *,
        tail_lines: int,
        open_upstream: Callable[[], Upstream],
        when_empty: Callable[[], str] | None = None,
        still_wanted: Callable[[], bool] | None = None,
    ) -> LogView:
        """One viewer's stream of the run's output: the tail, then chunks as written, until the follow ends.

        The first viewer of a run opens its upstream with ``open_upstream`` (here,
        so that its errors, such as :class:`~webapp.errors.ExecutorUnavailable`,
        come before any output); later ones join it and start with the last
        ``tail_lines`` lines it has read. ``when_empty``: what to send a viewer
        whose follow ended without a byte for it (the tail the run store kept).
        ``still_wanted``: asked every ``IDLE_CHECK_SECONDS`` without output (is
        the client still connected?); ``False`` leaves at once, where a write
        would only find out at the next output. Closing the returned view
        leaves, whether it was read or not.
        """
        with self._lock:
            self._check_room(job_name)
            follow = self._follows.get(job_name)
            opener = follow is None
            if follow is None:  # registered before it is opened: a second viewer meanwhile joins it, opens nothing
                follow = self._follows[job_name] = _Follow(job_name)
            viewer = _Viewer(limit=self._viewer_buffer_bytes)
            if follow.recent:
                tail = last_lines("".join(chunk for chunk, _ in follow.recent), tail_lines)
                if tail:
                    viewer.offer(tail, len(tail.encode("utf-8")))
            follow.viewers[viewer] = None
            self._viewers += 1
        if opener:
            try:
                self._open(follow, open_upstream)
            except BaseException:
                self._leave(follow, viewer)
                raise
        return LogView(
            viewer, leave=lambda: self._leave(follow, viewer), when_empty=when_empty, still_wanted=still_wanted
        )

    def _open(self, follow: _Follow, open_upstream: Callable[[], Upstream]) -> None:
        """Open the run's upstream (outside the lock: it may ask the API server) and start its pump."""
        try:
            follow.upstream = open_upstream()
        except BaseException:
            self._end(follow)
            raise
        with self._lock:
            if follow.ended:  # stopped, or everyone left, while it was being opened
                stale = True
            else:
                stale = False
                metrics.LOG_FOLLOWS_OPEN.inc()
        if stale:
            self._end(follow)
            return
        threading.Thread(target=self._pump, args=(follow,), name="log-follow", daemon=True).start()

    def _end(self, follow: _Follow) -> None:
        """The follow is over: nobody joins it any more, its viewers get what they have, its upstream is closed."""
        with self._lock:
            follow.ended = True
            if self._follows.get(follow.job_name) is follow:
                del self._follows[follow.job_name]
            viewers = tuple(follow.viewers)
        for viewer in viewers:
            viewer.end()
        follow.close_upstream()

    def _check_room(self, job_name: str) -> None:
        if self._stopped:
            raise StreamsFull("this server is shutting down; retry on another")
        if self._viewers >= self._max_viewers or (
            job_name not in self._follows and len(self._follows) >= self._max_follows
        ):
            raise StreamsFull("this server follows as many logs as it can; read the logs without follow, or retry")

    def _leave(self, follow: _Follow, viewer: _Viewer) -> None:
        with self._lock:
            if viewer not in follow.viewers:
                return
            del follow.viewers[viewer]
            self._viewers -= 1
            last = not follow.viewers and not follow.ended
            if last:
                follow.ended = True  # nobody joins it any more: the next viewer opens a new one
                if self._follows.get(follow.job_name) is follow:
                    del self._follows[follow.job_name]
        if last:
            follow.close_upstream()

    def _pump(self, follow: _Follow) -> None:
        """Read the upstream and hand each chunk to every viewer, until it ends or nobody watches."""
        by_itself = False
        try:
            for chunk in follow.upstream:
                if not chunk:
                    continue
                size = len(chunk.encode("utf-8"))
                with self._lock:
                    if follow.ended:
                        break
                    follow.recent.append((chunk, size))
                    follow.recent_size += size
                    while len(follow.recent) > 1 and follow.recent_size - follow.recent[0][1] >= self._recent_bytes:
                        follow.recent_size -= follow.recent.popleft()[1]
                    viewers = tuple(follow.viewers)
                for viewer in viewers:
                    viewer.offer(chunk, size)
            else:
                with self._lock:
                    by_itself = not follow.ended  # not left by its viewers, nor ended by stop()
        except JobpulseError as error:  # the executor says why (the API server went away mid-follow)
            logger.warning("log_follow.failed", extra={"job_name": follow.job_name, "error": error.message})
        except Exception:
            if not follow.ended:  # a read cut short by close_upstream() is how a follow is left, not a failure
                logger.exception("log_follow.failed", extra={"job_name": follow.job_name})
        finally:
            metrics.LOG_FOLLOWS_OPEN.dec()
            self._end(follow)
        if by_itself:
            self._hand_over(follow)

    def _hand_over(self, follow: _Follow) -> None:
        """Give the receiver what a follow that saw its run end read (its recent output), if there is any."""
        receiver = self._receiver
        with self._lock:
            output = "".join(chunk for chunk, _ in follow.recent)
        if receiver is None or not output:
            return
        try:
            receiver(follow.job_name, output)
        except Exception:  # the receiver's failure costs the kept output, not the follow
            logger.exception("log_follow.hand_over_failed", extra={"job_name": follow.job_name})

    def open_follows(self) -> int:
        """Upstreams open now (one per followed run)."""
        with self._lock:
            return len(self._follows)

    def stop(self) -> None:
        """End every follow (server shutting down): each viewer gets what it has, then its stream ends."""
        with self._lock:
            self._stopped = True
            follows = list(self._follows.values())
        for follow in follows:
            self._end(follow)
