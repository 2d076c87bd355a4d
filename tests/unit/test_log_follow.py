"""The shared log follow: one upstream per run whoever watches, each viewer bounded, closed when nobody watches."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import captured_logs, run_under_gevent, wait_for
from webapp import metrics
from webapp.errors import ExecutorUnavailable, StreamsFull
from webapp.executors.local import OutputFollow
from webapp.log_follow import VIEWER_BUFFER_BYTES, LogFollowers, skipped_marker

JOB = "task-runner-follow-0123abcd"


class FakeUpstream:
    """An executor's follow: what the test writes, until it ends or is closed (from any thread)."""

    def __init__(self) -> None:
        self._written: queue.Queue[str | None] = queue.Queue()
        self.closed = threading.Event()
        self.reader: threading.Thread | None = None
        """The thread that read it (the follow's pump), once it began."""

    def write(self, text: str) -> None:
        self._written.put(text)

    def end(self) -> None:
        self._written.put(None)

    def close(self) -> None:
        self.closed.set()
        self._written.put(None)

    def __iter__(self) -> Iterator[str]:
        self.reader = threading.current_thread()
        while (text := self._written.get()) is not None:
            yield text


class Opener:
    """Opens fake upstreams, counting the opens."""

    def __init__(self) -> None:
        self.upstreams: list[FakeUpstream] = []

    def __call__(self) -> FakeUpstream:
        upstream = FakeUpstream()
        self.upstreams.append(upstream)
        return upstream


def open_gauge() -> float:
    value = metrics.LOG_FOLLOWS_OPEN._value.get()  # type: ignore[attr-defined]
    return float(value)


def test_two_viewers_share_one_upstream() -> None:
    followers, opener = LogFollowers(), Opener()
    before = open_gauge()
    first = followers.follow(JOB, tail_lines=10, open_upstream=opener)
    second = followers.follow(JOB, tail_lines=10, open_upstream=opener)
    assert len(opener.upstreams) == 1
    assert open_gauge() == before + 1
    opener.upstreams[0].write("line 1\n")
    assert (next(first), next(second)) == ("line 1\n", "line 1\n")
    opener.upstreams[0].end()
    assert (list(first), list(second)) == ([], [])
    wait_for(lambda: followers.open_follows() == 0 and open_gauge() == before, what="the follow to be over")


def test_the_last_viewer_leaving_closes_the_upstream() -> None:
    followers, opener = LogFollowers(), Opener()
    first = followers.follow(JOB, tail_lines=10, open_upstream=opener)
    second = followers.follow(JOB, tail_lines=10, open_upstream=opener)
    upstream = opener.upstreams[0]
    first.close()
    upstream.write("still watched\n")
    assert next(second) == "still watched\n"
    assert not upstream.closed.is_set()
    second.close()
    assert upstream.closed.is_set()
    wait_for(lambda: followers.open_follows() == 0, what="the follow to be forgotten")
    wait_for(lambda: not any(t.name == "log-follow" for t in threading.enumerate()), what="the pump to end")
    third = followers.follow(JOB, tail_lines=10, open_upstream=opener)  # a new viewer opens a new follow
    assert len(opener.upstreams) == 2
    third.close()


def test_a_viewer_that_falls_behind_gets_a_marker_not_a_backlog() -> None:
    followers, opener = LogFollowers(viewer_buffer_bytes=20), Opener()
    slow = followers.follow(JOB, tail_lines=10, open_upstream=opener)
    fast = followers.follow(JOB, tail_lines=10, open_upstream=opener)
    upstream = opener.upstreams[0]
    for n in range(5):
        upstream.write(f"chunk {n:02d}\n")  # 9 bytes each: two fit in 20
        assert next(fast) == f"chunk {n:02d}\n"  # the pump has handed it to every viewer
    assert next(slow) == "chunk 00\nchunk 01\n"
    assert next(slow) == skipped_marker(27)
    upstream.write("chunk 05\n")
    assert next(fast) == "chunk 05\n"
    assert next(slow) == "chunk 05\n"
    assert skipped_marker(27) == "[… 27 bytes skipped …]\n"
    slow.close()
    fast.close()


def test_a_late_viewer_starts_with_the_recent_tail_then_live_output() -> None:
    followers, opener = LogFollowers(), Opener()
    first = followers.follow(JOB, tail_lines=10, open_upstream=opener)
    upstream = opener.upstreams[0]
    upstream.write("one\ntwo\n")
    assert next(first) == "one\ntwo\n"
    upstream.write("three\n")
    assert next(first) == "three\n"
    late = followers.follow(JOB, tail_lines=2, open_upstream=opener)
    upstream.write("four\n")
    assert next(late) == "two\nthree\n"
    assert next(late) == "four\n"
    assert next(first) == "four\n"
    assert len(opener.upstreams) == 1
    first.close()
    late.close()


def test_the_recent_tail_is_bounded() -> None:
    followers, opener = LogFollowers(recent_bytes=10), Opener()
    first = followers.follow(JOB, tail_lines=10, open_upstream=opener)
    for n in range(5):
        opener.upstreams[0].write(f"line {n}\n")  # 7 bytes each
        assert next(first) == f"line {n}\n"
    late = followers.follow(JOB, tail_lines=100, open_upstream=opener)
    opener.upstreams[0].end()
    assert list(late) == ["line 3\nline 4\n"]


def test_a_follow_that_ended_with_nothing_answers_what_is_left() -> None:
    followers, opener = LogFollowers(), Opener()
    view = followers.follow(JOB, tail_lines=10, open_upstream=opener, when_empty=lambda: "kept\n")
    opener.upstreams[0].end()
    assert list(view) == ["kept\n"]
    other = followers.follow(JOB, tail_lines=10, open_upstream=opener, when_empty=lambda: "kept\n")
    opener.upstreams[1].write("live\n")
    opener.upstreams[1].end()
    assert list(other) == ["live\n"], "output was sent: nothing more"


def test_an_upstream_that_cannot_open_is_an_error_and_leaves_nothing() -> None:
    followers = LogFollowers(max_viewers=1)

    def unavailable() -> FakeUpstream:
        raise ExecutorUnavailable("the API server is away")

    with pytest.raises(ExecutorUnavailable):
        followers.follow(JOB, tail_lines=10, open_upstream=unavailable)
    assert followers.open_follows() == 0
    followers.follow(JOB, tail_lines=10, open_upstream=Opener()).close()  # its viewer's place was given back


def test_follows_and_viewers_are_bounded() -> None:
    followers, opener = LogFollowers(max_follows=1, max_viewers=2), Opener()
    first = followers.follow(JOB, tail_lines=10, open_upstream=opener)
    with pytest.raises(StreamsFull):
        followers.follow("task-runner-other-0123abcd", tail_lines=10, open_upstream=opener)
    second = followers.follow(JOB, tail_lines=10, open_upstream=opener)
    with pytest.raises(StreamsFull):
        followers.follow(JOB, tail_lines=10, open_upstream=opener)
    assert len(opener.upstreams) == 1
    first.close()
    second.close()


def test_stop_ends_every_view_and_closes_every_upstream() -> None:
    followers, opener = LogFollowers(), Opener()
    views = [followers.follow(f"task-runner-stop{n}-0123abcd", tail_lines=10, open_upstream=opener) for n in range(3)]
    readers = [threading.Thread(target=list, args=(view,)) for view in views]
    for reader in readers:
        reader.start()
    followers.stop()
    for reader in readers:
        reader.join(timeout=1)
        assert not reader.is_alive()
    assert all(upstream.closed.is_set() for upstream in opener.upstreams)
    with pytest.raises(StreamsFull):
        followers.follow(JOB, tail_lines=10, open_upstream=opener)


def test_viewers_share_a_follow_under_gevent() -> None:
    run_under_gevent(
        """
import threading
from tests.unit.test_log_follow import Opener, JOB
from webapp.log_follow import LogFollowers

followers, opener = LogFollowers(), Opener()
views = [followers.follow(JOB, tail_lines=10, open_upstream=opener) for _ in range(2)]
got = [[], []]
readers = [threading.Thread(target=lambda n=n: got[n].extend(views[n])) for n in range(2)]
for reader in readers:
    reader.start()
opener.upstreams[0].write("a\\n")
opener.upstreams[0].end()
for reader in readers:
    reader.join(timeout=5)
assert len(opener.upstreams) == 1, opener.upstreams
assert got == [["a\\n"], ["a\\n"]], got
"""
    )


def test_a_quiet_follow_leaves_once_its_client_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("webapp.log_follow.IDLE_CHECK_SECONDS", 0.01)
    followers, opener = LogFollowers(), Opener()
    connected = threading.Event()
    connected.set()
    view = followers.follow(JOB, tail_lines=10, open_upstream=opener, still_wanted=connected.is_set)
    opener.upstreams[0].write("line\n")
    assert next(view) == "line\n"
    connected.clear()  # the client hung up; the task writes nothing more
    assert list(view) == []
    assert opener.upstreams[0].closed.is_set()


@pytest.mark.parametrize(
    ("chunk", "shown"),
    [
        ("aaaa\nbbbb\ncccc\n", "bbbb\ncccc\n"),  # 15 bytes in 12: the last whole lines that fit
        ("aaaa\nbbbbbbbbbb\ncc\n", "cc\n"),  # the cut falls inside a line: from the next line on
        ("aaaaaaaaaaa\nbbbbbbbbbbbbb", ""),  # no line starts within the last 12 bytes: all skipped
        ("ééééé\nééééé\nab\n", "ab\n"),  # 11-byte lines of two-byte characters: never cut in one
        ("aaa\nééééé\n", "ééééé\n"),  # exactly 11 bytes, starting a line
    ],
    ids=["whole-lines", "cut-in-a-line", "one-long-line", "utf-8", "exact"],
)
def test_a_chunk_bigger_than_the_buffer_keeps_its_last_lines(chunk: str, shown: str) -> None:
    followers, opener = LogFollowers(viewer_buffer_bytes=12), Opener()
    view = followers.follow(JOB, tail_lines=10, open_upstream=opener)
    opener.upstreams[0].write(chunk)
    opener.upstreams[0].end()
    skipped = len(chunk.encode("utf-8")) - len(shown.encode("utf-8"))
    assert "".join(view) == skipped_marker(skipped) + shown


def test_a_chunk_bigger_than_the_room_left_keeps_its_last_lines_after_what_is_queued() -> None:
    followers, opener = LogFollowers(viewer_buffer_bytes=20), Opener()
    slow = followers.follow(JOB, tail_lines=10, open_upstream=opener)
    fast = followers.follow(JOB, tail_lines=10, open_upstream=opener)
    upstream = opener.upstreams[0]
    upstream.write("chunk 00\n")
    assert next(fast) == "chunk 00\n"
    upstream.write("one\ntwo\nthree\n")  # 14 bytes, 11 of room left: "two\nthree\n" fits
    assert next(fast) == "one\ntwo\nthree\n"
    assert next(slow) == "chunk 00\n" + skipped_marker(4) + "two\nthree\n"
    slow.close()
    fast.close()


def test_a_late_viewer_with_a_small_buffer_starts_with_the_newest_lines() -> None:
    followers, opener = LogFollowers(viewer_buffer_bytes=16), Opener()
    first = followers.follow(JOB, tail_lines=10, open_upstream=opener)
    opener.upstreams[0].write("".join(f"line {n}\n" for n in range(6)))  # 42 bytes of recent output
    assert next(first).startswith("[…")
    late = followers.follow(JOB, tail_lines=6, open_upstream=opener)
    opener.upstreams[0].end()
    assert list(late) == [skipped_marker(28) + "line 4\nline 5\n"]
    first.close()


def test_a_local_follow_of_a_tail_over_the_buffer_shows_its_newest_lines(tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    log.write_text("".join(f"line {n:05d} " + "x" * 200 + "\n" for n in range(2000)))  # 2000 lines, ~420 KB
    followers = LogFollowers()
    view = followers.follow(
        JOB, tail_lines=2000, open_upstream=lambda: OutputFollow(log, tail_lines=2000, finished=lambda: True)
    )
    text = "".join(view)
    assert text.startswith("[… ") and text.endswith("line 01999 " + "x" * 200 + "\n")
    marker, _, shown = text.partition("\n")
    assert len(shown.encode("utf-8")) <= VIEWER_BUFFER_BYTES
    assert shown.startswith("line ") and marker == skipped_marker(log.stat().st_size - len(shown.encode()))[:-1]


def pump_done(upstream: FakeUpstream) -> None:
    """Wait for the follow's pump that read ``upstream`` to return (it hands its output over last)."""
    wait_for(lambda: upstream.reader is not None, timeout=5, what="the pump to begin")
    assert upstream.reader is not None
    upstream.reader.join(timeout=5)
    assert not upstream.reader.is_alive()


def test_a_follow_that_saw_its_run_end_hands_its_recent_output_over() -> None:
    followers, opener = LogFollowers(recent_bytes=8), Opener()
    handed: list[tuple[str, str]] = []
    followers.hand_output_to(lambda job_name, output: handed.append((job_name, output)))
    view = followers.follow(JOB, tail_lines=10, open_upstream=opener)
    for line in ("line 1\n", "line 2\n", "line 3\n"):
        opener.upstreams[0].write(line)
    opener.upstreams[0].end()
    assert "".join(view) == "line 1\nline 2\nline 3\n", "the viewers get it all first"
    pump_done(opener.upstreams[0])
    assert handed == [(JOB, "line 2\nline 3\n")], "what the follow kept: its recent output"


@pytest.mark.parametrize("how", ["left", "stopped", "broke"])
def test_a_follow_that_did_not_see_its_run_end_hands_nothing_over(how: str) -> None:
    followers, opener = LogFollowers(), Opener()
    handed: list[tuple[str, str]] = []
    followers.hand_output_to(lambda job_name, output: handed.append((job_name, output)))
    broke = threading.Event()
    breaking = FakeUpstream()  # only its reader is used

    def upstream() -> Iterator[str]:
        breaking.reader = threading.current_thread()
        yield "line 1\n"
        broke.wait(5)
        raise ExecutorUnavailable("the log stream broke")

    view = followers.follow(JOB, tail_lines=10, open_upstream=upstream if how == "broke" else opener)
    if how != "broke":
        opener.upstreams[0].write("line 1\n")
    assert next(view) == "line 1\n"
    if how == "left":
        view.close()
    elif how == "stopped":
        followers.stop()
    else:
        broke.set()
        assert list(view) == []
    pump_done(breaking if how == "broke" else opener.upstreams[0])
    assert handed == []


def test_a_failing_receiver_costs_the_hand_over_not_the_follow() -> None:
    followers, opener = LogFollowers(), Opener()

    def failing(job_name: str, output: str) -> None:
        raise RuntimeError("the keeper broke")

    followers.hand_output_to(failing)
    view = followers.follow(JOB, tail_lines=10, open_upstream=opener)
    opener.upstreams[0].write("line 1\n")
    with captured_logs() as records:
        opener.upstreams[0].end()
        assert list(view) == ["line 1\n"]
        pump_done(opener.upstreams[0])
    assert [r.getMessage() for r in records] == ["log_follow.hand_over_failed"]
    assert followers.open_follows() == 0
