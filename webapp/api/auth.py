"""Admin authentication: ``Authorization: Bearer $ADMIN_TOKEN``, compared in constant time."""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import request
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import Forbidden, Unauthorized

from webapp.api import runtime

View = TypeVar("View", bound=Callable[..., Any])


def admin_required(view: View) -> View:
    """Refuse with 403 when no token is configured, 401 when the caller's is missing or wrong."""

    @functools.wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        expected = runtime().settings.admin_token
        if not expected:
            raise Forbidden("the admin API is disabled: set ADMIN_TOKEN to enable it")
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
            raise Unauthorized(
                "a valid admin token is required (Authorization: Bearer ...)",
                www_authenticate=WWWAuthenticate("bearer", {"realm": "jobpulse"}),
            )
        return view(*args, **kwargs)

    return cast(View, guarded)
