"""The URLs a launch answer points to, so clients never build them by hand."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from flask import Response, current_app, jsonify, url_for
from flask.json.provider import DefaultJSONProvider

from webapp.status import JobStatus


def links(status: JobStatus) -> dict[str, str]:
    return {
        "status": url_for("jobs.task_status", job_name=status.job_name),
        "events": url_for("streams.sse_status", job_name=status.job_name),
        # WebSocket rules build ws:// URLs; the page needs the path, relative to its own host
        "websocket": urlsplit(url_for("streams.ws_status", job_name=status.job_name)).path,
    }


def with_links(status: JobStatus) -> dict[str, Any]:
    body = status.to_dict()
    body["links"] = links(status)
    return body


def answer_with_links(status: JobStatus, *, code: int) -> Response:
    """``jsonify(with_links(status))`` with ``code`` and ``Location``, its body spliced from :attr:`JobStatus.json`.

    The status's JSON is already made (the door saved it): the answer adds its links to that text instead of
    building and encoding the whole dict again, the same bytes as ``jsonify`` gives with the app's settings
    (compact, keys in order, ASCII). Any other settings (debug mode's indentation, sorted keys): ``jsonify``.
    """
    found = links(status)
    provider = current_app.json
    if _writes_like_status_json(provider):
        body = f'{status.json[:-1]},"links":{json.dumps(found, separators=(",", ":"))}}}\n'
        response = current_app.response_class(body, mimetype=provider.mimetype)  # type: ignore[attr-defined]
    else:
        response = jsonify({**status.to_dict(), "links": found})
    response.status_code = code
    response.headers["Location"] = found["status"]
    return response


def _writes_like_status_json(provider: Any) -> bool:
    """Whether ``jsonify`` would write a status as :attr:`JobStatus.json` does (compact, unsorted, ASCII)."""
    if type(provider) is not DefaultJSONProvider or provider.sort_keys or not provider.ensure_ascii:
        return False
    return provider.compact is True or (provider.compact is None and not current_app.debug)
