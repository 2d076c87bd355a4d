"""The task's helper, ``webapp.tasks.progress.report``, against a real local HTTP server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.live.server import free_port
from webapp.jobspecs import PROGRESS_TOKEN_ENV, PROGRESS_URL_ENV
from webapp.tasks import progress
from webapp.tasks.donation_receipt import main as donation_task
from webapp.tasks.progress import TOKEN_ENV, URL_ENV, report

TOKEN = "the-runs-own-token-0123456789"


class ProgressServer(ThreadingHTTPServer):
    """Plays jobpulse's progress endpoint: records each request, answers ``answer`` (202 by default)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[dict[str, Any]] = []
        self.answer = 202
        self.redirect_to: str | None = None
        self.hold = threading.Event()
        self.hold.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/api/jobs/task-runner-help-0123abcd/progress"


class _Handler(BaseHTTPRequestHandler):
    server: ProgressServer

    def do_POST(self) -> None:
        self.server.hold.wait(10)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append(
            {
                "path": self.path,
                "authorization": self.headers["Authorization"],
                "content_type": self.headers["Content-Type"],
                "body": json.loads(body),
            }
        )
        if self.server.redirect_to:
            self.send_response(307)
            self.send_header("Location", self.server.redirect_to)
        else:
            self.send_response(self.server.answer)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ProgressServer]:
    server = ProgressServer()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.hold.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(autouse=True)
def complain_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test is a new task process: it may print its one line again."""
    monkeypatch.setattr(progress, "_complained", False)


def env_for(server: ProgressServer) -> dict[str, str]:
    return {URL_ENV: server.url, TOKEN_ENV: TOKEN}


def test_a_report_is_posted_with_the_runs_token(server: ProgressServer) -> None:
    assert report(2, 4, "Receipt issued", environ=env_for(server)) is True
    assert server.received == [
        {
            "path": "/api/jobs/task-runner-help-0123abcd/progress",
            "authorization": f"Bearer {TOKEN}",
            "content_type": "application/json",
            "body": {"done": 2, "total": 4, "text": "Receipt issued"},
        }
    ]


def test_the_helper_reads_the_names_jobpulse_renders() -> None:
    assert (URL_ENV, TOKEN_ENV) == (PROGRESS_URL_ENV, PROGRESS_TOKEN_ENV)


def test_without_the_variables_it_does_nothing(
    server: ProgressServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(URL_ENV, raising=False)
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert report(1) is False
    assert report(1, environ={URL_ENV: server.url}) is False
    assert server.received == []
    assert capsys.readouterr().err == ""


def test_text_is_one_line_of_at_most_200_characters(server: ProgressServer) -> None:
    report(1, None, "line one\nline\ttwo " + "x" * 300, environ=env_for(server))
    sent = server.received[0]["body"]
    assert sent["total"] is None
    assert "\n" not in sent["text"] and "\t" not in sent["text"]
    assert sent["text"].startswith("line one line two x")
    assert len(sent["text"]) == 200


@pytest.mark.parametrize(
    "trouble",
    [
        pytest.param("refused", id="nothing-listens"),
        pytest.param(403, id="refused-token"),
        pytest.param(500, id="server-error"),
        pytest.param("bad-arguments", id="arguments-json-cannot-carry"),
        pytest.param("file-url", id="not-an-http-url"),
    ],
)
def test_it_never_raises_and_says_so_once_on_stderr(
    server: ProgressServer, capsys: pytest.CaptureFixture[str], trouble: object
) -> None:
    env = env_for(server)
    done: Any = 1
    if trouble == "refused":
        env[URL_ENV] = f"http://127.0.0.1:{free_port()}/api/jobs/x/progress"
    elif trouble == "bad-arguments":
        done = object()
    elif trouble == "file-url":
        env[URL_ENV] = "file:///etc/passwd"
    else:
        assert isinstance(trouble, int)
        server.answer = trouble
    assert report(done, 4, environ=env) is False
    assert report(done, 4, environ=env) is False
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("progress not reported (")
    assert TOKEN not in err


def test_it_gives_up_after_its_timeout(server: ProgressServer, capsys: pytest.CaptureFixture[str]) -> None:
    server.hold.clear()  # the server accepts and never answers
    assert report(1, 4, environ=env_for(server), timeout=0.2) is False
    err = capsys.readouterr().err
    assert "timed out" in err or "TimeoutError" in err, err


def test_a_redirect_is_not_followed_so_the_token_goes_nowhere_else(
    server: ProgressServer, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = ProgressServer()
    thread = threading.Thread(target=elsewhere.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        server.redirect_to = elsewhere.url
        assert report(1, 4, environ=env_for(server)) is False
        assert len(server.received) == 1
        assert elsewhere.received == []
        assert "307" in capsys.readouterr().err
    finally:
        elsewhere.shutdown()
        elsewhere.server_close()
        thread.join(5)


def test_the_donation_task_reports_its_four_steps(server: ProgressServer) -> None:
    params = {"amount": "12.00", "currency": "EUR", "donor_name": "Ann", "donor_email": "ann@example.org"}
    env = {"TASK_PARAMS": json.dumps(params), "TASK_STEP_SECONDS": "0", **env_for(server)}
    assert donation_task(env) == 0
    assert [r["body"] for r in server.received] == [
        {"done": 1, "total": 4, "text": "Donation checked"},
        {"done": 2, "total": 4, "text": "Donation recorded"},
        {"done": 3, "total": 4, "text": "Receipt issued"},
        {"done": 4, "total": 4, "text": "Receipt sent"},
    ]
    assert all("ann@example.org" not in json.dumps(r["body"]) for r in server.received)


def test_the_donation_task_succeeds_when_jobpulse_cannot_be_reached(capsys: pytest.CaptureFixture[str]) -> None:
    params = {"amount": "12.00", "currency": "EUR", "donor_name": "Ann", "donor_email": "ann@example.org"}
    env = {
        "TASK_PARAMS": json.dumps(params),
        "TASK_STEP_SECONDS": "0",
        URL_ENV: f"http://127.0.0.1:{free_port()}/api/jobs/x/progress",
        TOKEN_ENV: TOKEN,
    }
    assert donation_task(env) == 0
    captured = capsys.readouterr()
    assert captured.out.count("[") == 4
    assert captured.err.count("progress not reported") == 1
