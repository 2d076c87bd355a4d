"""The audit trail of admin actions: recorded after each audited view answers, listed by ``GET /api/audit``.

An admin view marked :func:`audited` is recorded once it has answered,
whatever the answer (a launch refused with 409 is an action too), under the
operator who authenticated (``flask.g.operator``). A caller no operator's
token matches is refused before any action, and nothing is recorded: there is
no actor to name. Each action is also logged as ``admin.action``. The token is
never part of either.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import Blueprint, Response, g, jsonify, request
from marshmallow import RAISE, Schema, ValidationError, fields, validate

from webapp.api import runtime
from webapp.api.auth import admin_required, current_operator
from webapp.errors import InvalidRequest, JobpulseError
from webapp.runstore import AdminAction
from webapp.status import utcnow

logger = logging.getLogger(__name__)

bp = Blueprint("audit", __name__)

MAX_ACTIONS = 500
"""The most actions one ``GET /api/audit`` lists."""

View = TypeVar("View", bound=Callable[..., Any])


def audited(action: str) -> Callable[[View], View]:
    """Record every answer of the view as ``action`` by the operator who made it (put it above ``admin_required``).

    The target is the run acted on: the job name in the path (a cancel, a
    rerun — whose new run the old one's ``reruns`` names), else the one in
    the answer (a launch), else what the view noted with :func:`note_target`
    (the spec of a launch that started nothing), else empty.
    """

    def mark(view: View) -> View:
        @functools.wraps(view)
        def marked(*args: Any, **kwargs: Any) -> Any:
            g.audit_action = action
            return view(*args, **kwargs)

        return cast(View, marked)

    return mark


def note_target(target: str) -> None:
    """Name the target of the audited action, for when its answer names no job (the launch was refused)."""
    g.audit_target = target


def _target(response: Response, answer: Any) -> str:
    in_path = (request.view_args or {}).get("job_name")
    if isinstance(in_path, str):
        return in_path
    launched = answer.get("job_name") if isinstance(answer, dict) and response.status_code < 400 else None
    if isinstance(launched, str):
        return launched
    noted: str | None = g.get("audit_target")
    return noted if noted is not None else ""


@bp.after_app_request
def _record(response: Response) -> Response:
    """Keep and log the action of an audited view that an operator made; a store that is down loses only the row."""
    name: str | None = g.get("audit_action")
    actor = current_operator()
    if name is None or actor is None:
        return response
    answer = response.get_json(silent=True) if response.is_json and not response.is_streamed else None
    error = answer.get("error") if response.status_code >= 400 and isinstance(answer, dict) else None
    action = AdminAction(
        actor=actor,
        action=name,
        target=_target(response, answer),
        status=response.status_code,
        error=str(error) if error is not None else None,
        at=utcnow(),
    )
    logger.info(
        "admin.action",
        extra={
            "actor": action.actor,
            "action": action.action,
            "target": action.target,
            "http_status": action.status,
            "error": action.error,
        },
    )
    try:
        runtime().store.record_action(action)
    except JobpulseError as failure:
        logger.error(
            "admin.action.unrecorded",
            extra={"actor": action.actor, "action": action.action, "target": action.target, "reason": failure.message},
        )
    return response


class _QueryNumber(fields.Integer):
    """A whole number in a query string: plain ASCII digits only (``int()`` also takes ``" 5"`` and ``"1_0"``)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if not (isinstance(value, str) and value.isascii() and value.isdigit()):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


_LIMIT = f"must be a whole number from 1 to {MAX_ACTIONS}"
_BEFORE = "must be an action's id, a whole number from 1"


class AuditQuerySchema(Schema):
    """``GET /api/audit``'s query: how many actions, and before which one (the previous page's last ``id``)."""

    class Meta:
        unknown = RAISE

    error_messages = {"unknown": "is not a parameter of this route"}  # noqa: RUF012 - marshmallow's convention

    limit = _QueryNumber(
        load_default=50,
        validate=validate.Range(min=1, max=MAX_ACTIONS, error=_LIMIT),
        error_messages={"invalid": _LIMIT},
    )
    before = _QueryNumber(
        load_default=None, validate=validate.Range(min=1, error=_BEFORE), error_messages={"invalid": _BEFORE}
    )


def _audit_query() -> dict[str, Any]:
    """The checked query; a bad one is ``400 invalid_request``, as ``/api/runs``' ``limit`` is."""
    try:
        query: dict[str, Any] = AuditQuerySchema().load(request.args.to_dict())
    except ValidationError as error:
        problems = error.messages if isinstance(error.messages, dict) else {"_schema": error.messages}
        raise InvalidRequest(
            ", ".join(f"{name} {'; '.join(map(str, said))}" for name, said in sorted(problems.items())),
            fields={name: [str(one) for one in said] for name, said in problems.items()},
        ) from error
    return query


@bp.get("/api/audit")
@admin_required
def list_actions() -> Response:
    """The newest admin actions first: ``{"actions": [...]}``."""
    query = _audit_query()
    actions = runtime().store.actions(query["limit"], before=query["before"])
    return jsonify({"actions": [action.to_dict() for action in actions]})
