"""One JSON error shape everywhere: ``{"error": CODE, "message": TEXT, "fields": {...}}``.

Every error — ours, marshmallow's, Werkzeug's (404, 405, 413, 415, 429, ...) —
is mapped here and nowhere else.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from flask_limiter.errors import RateLimitExceeded
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

from webapp.api.ratelimit import seconds_until_allowed
from webapp.errors import JobpulseError

logger = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def error_response(http_status: int, code: str, message: str, *, fields: dict[str, Any] | None = None) -> Response:
    body: dict[str, Any] = {"error": code, "message": message}
    if fields is not None:
        body["fields"] = fields
    response = jsonify(body)
    response.status_code = http_status
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(JobpulseError)
    def _ours(error: JobpulseError) -> Response:
        response = error_response(error.http_status, error.code, error.message, fields=error.fields)
        if error.retry_after is not None:
            response.headers["Retry-After"] = str(error.retry_after)
        return response

    @app.errorhandler(ValidationError)
    def _invalid(error: ValidationError) -> Response:
        fields = error.messages if isinstance(error.messages, dict) else {"_schema": error.messages}
        return error_response(400, "validation_error", "the request has invalid fields", fields=fields)

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException) -> Response:
        status = error.code or 500
        code = _HTTP_CODES.get(status, "http_error")
        message = error.description or error.name
        response = error_response(status, code, message)
        if isinstance(error, RateLimitExceeded):
            response = error_response(status, code, f"too many donations from this address: {error.description}")
            response.headers["Retry-After"] = str(seconds_until_allowed())
        carried = dict(error.get_headers())
        for name in ("Retry-After", "WWW-Authenticate", "Allow"):
            if name in carried:
                response.headers[name] = carried[name]
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        logger.exception("request.error")
        return error_response(500, "internal_error", "something went wrong on our side")
