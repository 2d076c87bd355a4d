"""Admin authentication: ``Authorization: Bearer <token>``, one token per named operator.

The operators are ``ADMIN_TOKENS``' ``name:token`` pairs, plus ``ADMIN_TOKEN``
as the operator ``admin``. The caller's token is compared in constant time with
every operator's (no early exit, so the timing tells neither which operator
nor how many there are); the name it matches is ``flask.g.operator`` for the
view and the audit trail. The token itself goes nowhere else.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

from flask import g, request
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import Forbidden, Unauthorized

from webapp.api import runtime

View = TypeVar("View", bound=Callable[..., Any])


def operator_of(given: str, operators: Mapping[str, str]) -> str | None:
    """The name of the operator whose token is ``given``, or ``None``; every token is compared, in constant time.

    ``given`` is whatever a stranger sent: a header (WSGI hands it over as latin-1 text) or a JSON
    string, which may hold a lone surrogate. ``surrogatepass`` encodes any ``str`` to bytes, so no
    input raises; a lone surrogate's bytes are not UTF-8, so they match no configured token.
    """
    sent = given.encode("utf-8", "surrogatepass")
    found: str | None = None
    for name, token in operators.items():
        if hmac.compare_digest(sent, token.encode("utf-8", "surrogatepass")):
            found = name
    return found


def current_operator() -> str | None:
    """The operator who authenticated this request (``None`` outside an admin view)."""
    name: str | None = g.get("operator")
    return name


def admin_required(view: View) -> View:
    """Refuse with 403 when no operator is configured, 401 when the caller's token is missing or no operator's.

    Sets ``flask.g.operator`` to the operator's name before the view runs.
    """

    @functools.wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        operators = runtime().settings.operators
        if not operators:
            raise Forbidden("the admin API is disabled: set ADMIN_TOKENS or ADMIN_TOKEN to enable it")
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        name = operator_of(given.strip(), operators) if scheme.lower() == "bearer" else None
        if name is None:
            raise Unauthorized(
                "a valid admin token is required (Authorization: Bearer ...)",
                www_authenticate=WWWAuthenticate("bearer", {"realm": "jobpulse"}),
            )
        g.operator = name
        return view(*args, **kwargs)

    return cast(View, guarded)
