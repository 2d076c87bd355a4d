"""Tell jobpulse how far a task has got: ``report(done, total=None, text=None)``.

A task started by jobpulse, under any executor, finds two variables in its
environment: ``JOBPULSE_PROGRESS_URL`` (where its run's progress goes) and
``JOBPULSE_PROGRESS_TOKEN`` (its run's own secret, good for nothing else).
:func:`report` sends one report there; the donor's page shows it live.

Progress is a courtesy, never a reason to fail: :func:`report` never raises,
waits at most a couple of seconds, and prints one line on stderr the first
time a report cannot be delivered (then stays quiet). Without the two
variables (a task run by hand) it does nothing. Standard library only: this
runs inside Job containers and must not import the app.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

URL_ENV = "JOBPULSE_PROGRESS_URL"
TOKEN_ENV = "JOBPULSE_PROGRESS_TOKEN"  # noqa: S105 - the variable's name, not a secret
TIMEOUT_SECONDS = 2.0
MAX_TEXT = 200
"""jobpulse refuses longer texts; longer ones are cut to this (with an ellipsis)."""

_complained = False


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an error: the token is never sent anywhere but the URL jobpulse gave."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirects())


def report(
    done: int,
    total: int | None = None,
    text: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    timeout: float = TIMEOUT_SECONDS,
) -> bool:
    """Send one progress report: ``done`` of ``total`` steps (``None``: unknown), and what is happening.

    Returns whether jobpulse accepted it (``202``). Never raises. jobpulse keeps at most a few reports a
    second per run (the latest wins), so a loop may call this as often as it likes.
    """
    env = os.environ if environ is None else environ
    url, token = env.get(URL_ENV), env.get(TOKEN_ENV)
    if not url or not token:
        return False
    if not url.startswith(("http://", "https://")):
        _complain(f"{URL_ENV} is not an http(s) URL")
        return False
    try:
        body = json.dumps({"done": done, "total": total, "text": _tidy(text)}).encode()
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
            url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
        with _opener.open(request, timeout=timeout) as answer:
            return bool(answer.status == 202)
    except urllib.error.HTTPError as error:
        _complain(f"jobpulse answered {error.code}")
    except Exception as error:  # unreachable, timed out, bad arguments: the task goes on regardless
        _complain(type(error).__name__ + (f": {error}" if str(error) else ""))
    return False


def _tidy(text: str | None) -> str | None:
    """One line, at most :data:`MAX_TEXT` characters."""
    if text is None:
        return None
    line = " ".join(str(text).split())
    return line if len(line) <= MAX_TEXT else line[: MAX_TEXT - 1] + "…"


def _complain(why: str) -> None:
    global _complained  # noqa: PLW0603 - one line per process, whatever calls report
    if not _complained:
        _complained = True
        print(f"progress not reported ({why}); carrying on", file=sys.stderr, flush=True)
