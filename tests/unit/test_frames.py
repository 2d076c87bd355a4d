"""The streams' frames: built once per change whatever the number of streams, framed as the server would."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from webapp.api.frames import FrameCache, frames_of, http_chunk, sse_event, ws_message, ws_text_frame
from webapp.status import JobStatus
from webapp.wire import SSE_RETRY_WINDOW_MS, sse_preamble, sse_status_frame, ws_status_message

T0 = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)


def queued(name: str = "task-runner-x-0badcafe") -> JobStatus:
    return JobStatus.new(job_name=name, mode="legacy", spec="quick", pipeline_run_id="x", at=T0)


def test_wire_forms_are_built_once_per_status_not_per_subscriber() -> None:
    status = queued().evolve(status="Running")
    assert sse_event(status) is sse_event(status)
    assert ws_message(status) is ws_message(status)
    following = status.evolve(active=2)
    assert sse_event(following) != sse_event(status)
    assert json.loads(ws_message(following))["active"] == 2


def test_the_frames_are_the_wire_forms_framed_as_the_server_would() -> None:
    status = queued().evolve(status="Running")
    frames = frames_of(status)
    assert frames.sse == sse_status_frame(status)
    assert frames.ws_message == ws_status_message(status)
    assert frames.sse_chunk == b"%X\r\n" % len(frames.sse) + frames.sse + b"\r\n"
    assert frames.ws_frame == ws_text_frame(frames.ws_message.encode())
    assert http_chunk(b"hello") == b"5\r\nhello\r\n"


@pytest.mark.parametrize(
    ("size", "header"),
    [
        (0, b"\x81\x00"),
        (125, b"\x81\x7d"),
        (126, b"\x81\x7e\x00\x7e"),
        (65535, b"\x81\x7e\xff\xff"),
        (65536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
)
def test_a_websocket_text_frame_has_the_length_form_rfc_6455_asks_for(size: int, header: bytes) -> None:
    payload = b"x" * size
    assert ws_text_frame(payload) == header + payload


def test_the_cache_keeps_the_newest_status_per_job_for_a_bounded_number_of_jobs() -> None:
    cache = FrameCache(jobs=2)
    first = queued()
    running = first.evolve(status="Running")
    kept = cache.frames(running)
    assert cache.frames(running) is kept
    older = cache.frames(first)  # a stream still sending an older status gets its frames, not kept
    assert cache.frames(first) is not older
    assert cache.frames(running) is kept

    a, b = queued("task-runner-a-00000000"), queued("task-runner-b-00000000")
    kept_a = cache.frames(a)
    cache.frames(b)  # a third job: the one first asked for goes
    assert cache.frames(a) is kept_a
    assert cache.frames(running) is not kept


@pytest.mark.parametrize("retry_ms", SSE_RETRY_WINDOW_MS)
def test_the_sse_preamble_carries_the_streams_own_retry(retry_ms: int) -> None:
    assert sse_preamble(retry_ms) == f"retry: {retry_ms}\n\n".encode()
