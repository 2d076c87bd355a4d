"""``POST /api/donations``: a donor's form becomes the donation task."""

from __future__ import annotations

from flask import Blueprint, Response, request

from webapp.api import runtime
from webapp.api.clients import client_address, own_root
from webapp.api.links import answer_with_links
from webapp.api.ratelimit import limiter
from webapp.api.schemas import donation_schema, idempotency_key, json_body
from webapp.launcher import request_fingerprint

bp = Blueprint("donations", __name__)


def _donation_rate_limit() -> str:
    return runtime().settings.rate_limit


@bp.post("/api/donations")
@limiter.limit(_donation_rate_limit)
def create_donation() -> Response:
    settings = runtime().settings
    key = idempotency_key(request)
    donation = donation_schema(settings.currencies).load(json_body(request))
    params = {
        "amount": str(donation["amount"]),
        "currency": donation["currency"],
        "donor_name": donation["donor_name"],
        "donor_email": donation["donor_email"],
    }
    if donation.get("message"):
        params["message"] = donation["message"]
    status, created = runtime().launcher.launch(
        spec_name=settings.donation_jobspec,
        params=params,
        idempotency_key=key,
        fingerprint=request_fingerprint({"donation": params}) if key is not None else None,  # only a key needs it
        client=client_address(),
        request_root=own_root(),
        fair_share=True,
    )
    return answer_with_links(status, code=202 if created else 200)
