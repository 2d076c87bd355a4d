"""The donor's words for a status (``static/plain-words.js``), run in Chromium without a server.

Every reason the app can produce has a plain sentence that never repeats the
raw word; an unknown reason falls back to a sentence for its status; the place
in line and the elapsed time read as a person would say them.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Page

from tests.live.server import PROJECT_ROOT

PLAIN_WORDS_JS = PROJECT_ROOT / "static" / "plain-words.js"

# Reasons that come from Kubernetes (Job conditions, pod waiting reasons, Events), not from our code.
KUBERNETES_REASONS = [
    "BackoffLimitExceeded",
    "DeadlineExceeded",
    "PodFailurePolicy",
    "MaxFailedIndexesExceeded",
    "FailedIndexes",
    "SuccessCriteriaMet",
    "CompletionsReached",
    "FailureTarget",
    "ImagePullBackOff",
    "ErrImagePull",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "Unschedulable",
    "FailedCreate",
    "Suspended",
    "JobSuspended",
    "BackOff",
]

# What webapp/ writes as a reason: reason="X", "reason": "X", _RunnerTrouble("X", …), (Phase.P, "X", …).
_REASON_IN_SOURCE = re.compile(
    r'reason="([A-Z]\w+)"|"reason": "([A-Z]\w+)"|_RunnerTrouble\(\s*"([A-Z]\w+)"|\(\s*Phase\.\w+,\s*"([A-Z]\w+)"'
)


# The translator names some reasons as constants: FAILED_CREATE = "FailedCreate".
_REASON_CONSTANT = re.compile(r'^[A-Z_]+ = "([A-Z][a-z]\w+)"$', re.MULTILINE)


def reasons_in_source() -> set[str]:
    found: set[str] = set()
    for path in (PROJECT_ROOT / "webapp").rglob("*.py"):
        for match in _REASON_IN_SOURCE.finditer(path.read_text()):
            found.update(group for group in match.groups() if group)
    found.update(_REASON_CONSTANT.findall((PROJECT_ROOT / "webapp" / "k8s_status.py").read_text()))
    return found


@pytest.fixture
def words(page: Page) -> Page:
    """A blank page carrying only ``window.jobpulseWords``."""
    page.set_content("<!doctype html><title>words</title>")
    page.add_script_tag(path=str(PLAIN_WORDS_JS))
    return page


def explain(page: Page, **status: Any) -> str:
    return str(page.evaluate("status => window.jobpulseWords.explain(status)", status))


def test_the_reasons_the_app_writes_are_found_in_its_source() -> None:
    found = reasons_in_source()
    assert {"WaitingForSlot", "RetryBackoff", "AttemptLost", "TaskLost", "RunnerUnreachable", "Cancelled"} <= found
    assert {"QueuedByLegacyRunner", "TaskFailed", "RunnerError", "Deleted", "StartError"} <= found
    assert {"FailedCreate", "FailedIndexes"} <= found


def test_every_reason_has_a_plain_sentence_without_the_raw_word(words: Page) -> None:
    known = set(words.evaluate("() => window.jobpulseWords.knownReasons"))
    reasons = sorted(reasons_in_source() | set(KUBERNETES_REASONS))
    assert not set(reasons) - known, "reasons without a sentence in static/plain-words.js"
    fallbacks = {explain(words, status=phase, reason="NoSuchReason") for phase in ("Pending", "Failed")}
    for reason in reasons:
        for phase in ("Queued", "Pending", "Running", "Suspended", "Succeeded", "Failed", "Cancelled"):
            sentence = explain(words, status=phase, reason=reason, message=f"{reason}: raw detail")
            assert sentence.endswith("."), (reason, phase, sentence)
            assert reason not in sentence and "raw detail" not in sentence, (reason, phase, sentence)
            assert sentence not in fallbacks, f"{reason} has its own sentence, not the fallback"


@pytest.mark.parametrize(
    ("status", "sentence"),
    [
        (
            {"status": "Failed", "reason": "BackoffLimitExceeded", "message": "exit code 3"},
            "We could not prepare your receipt and have stopped trying.",
        ),
        (
            {
                "status": "Queued",
                "reason": "WaitingForSlot",
                "message": "1 tasks running; 1 ahead",
                "queue_position": 2,
            },
            "Other donations are being processed right now. Yours starts as soon as there is room. "
            "You are number 2 in line.",
        ),
        ({"status": "Queued", "reason": None, "queue_position": 1}, "You are next in line."),
        (
            {"status": "Pending", "reason": "ImagePullBackOff"},
            "We are having trouble getting the software that prepares your receipt. We keep trying.",
        ),
        ({"status": "Failed", "reason": "RunnerError"}, "It stopped because of a problem on our side."),
        (
            {"status": "Pending", "reason": "RunnerError"},
            "The service that prepares your receipt is having trouble. We keep trying.",
        ),
        # unknown reasons: a sentence for the status, never the raw word
        ({"status": "Pending", "reason": "SomethingNew"}, "Your receipt is about to be prepared."),
        (
            {"status": "Failed", "reason": "SomethingNew"},
            "Something went wrong on our side, and we could not prepare your receipt.",
        ),
        ({"status": "Weird", "reason": "SomethingNew"}, "There is a hold-up on our side. It carries on by itself."),
        # nothing to explain: the row stays hidden, as before
        ({"status": "Running", "reason": None, "message": None}, ""),
        ({"status": "Running", "reason": None, "queue_position": 3}, ""),  # a place only while Queued
    ],
)
def test_sentences(words: Page, status: dict[str, Any], sentence: str) -> None:
    assert explain(words, **status) == sentence


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0 s"), (-3, "0 s"), (59.9, "59 s"), (72, "1 min 12 s"), (3599, "59 min 59 s"), (3725, "1 h 2 min")],
)
def test_durations(words: Page, seconds: float, text: str) -> None:
    assert words.evaluate("s => window.jobpulseWords.duration(s)", seconds) == text


def test_elapsed_runs_from_the_start_waits_from_the_donation_and_freezes_at_the_end(words: Page) -> None:
    def elapsed(status: dict[str, Any], terminal: bool, now: str) -> Any:
        return words.evaluate(
            "([s, t, now]) => window.jobpulseWords.elapsed(s, t, Date.parse(now))", [status, terminal, now]
        )

    created = "2026-12-05T10:00:00.000Z"
    started = "2026-12-05T10:00:05.000Z"
    now = "2026-12-05T10:01:17.500Z"
    assert elapsed({"status": "Running", "created_at": created, "started_at": started}, False, now) == {
        "text": "Running for 1 min 12 s",
        "seconds": 72.5,
        "ticking": True,
    }
    assert elapsed({"status": "Queued", "created_at": created}, False, now)["text"] == "Waiting for 1 min 17 s"
    assert elapsed({"status": "Pending", "created_at": created, "started_at": started}, False, now)["text"] == (
        "Waiting for 1 min 17 s"
    )
    finished = {
        "status": "Succeeded",
        "created_at": created,
        "started_at": started,
        "finished_at": "2026-12-05T10:00:11.000Z",
    }
    assert elapsed(finished, True, now) == {"text": "Finished in 6 s", "seconds": 6, "ticking": False}
    assert elapsed({"status": "Running"}, False, now) is None
