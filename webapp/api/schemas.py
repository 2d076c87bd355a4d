"""Validation at the edge: marshmallow schemas for everything a client sends.

Unknown fields are refused, sizes are bounded, and a failed validation is a
400 in the one error shape with the problems per field.
"""

from __future__ import annotations

import json
import re
import unicodedata
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from flask import Request
from marshmallow import RAISE, Schema, ValidationError, fields, pre_load, validate, validates, validates_schema
from werkzeug.exceptions import RequestEntityTooLarge

from webapp.errors import InvalidRequest
from webapp.jobspecs import PARAM_NAME_PATTERN, SPEC_NAME_PATTERN
from webapp.names import PIPELINE_RUN_ID_PATTERN

MAX_AMOUNT = Decimal("1000000")
IDEMPOTENCY_KEY_PATTERN = re.compile(r"\A[A-Za-z0-9_-]{1,64}\Z")
AMOUNT_PATTERN = re.compile(r"\A-?[0-9]+(?:\.[0-9]+)?\Z")
"""A decimal string: ASCII digits and one point, no exponent, no ``_`` and no other script's digits."""

_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
"""Control characters (C0, DEL, C1 such as NEL and CSI), lone surrogates, line and paragraph separators."""

_NOT_IN_AN_ENVIRONMENT = re.compile("[\x00\ud800-\udfff]")
"""What no process environment holds: NUL ends a C string, a lone surrogate has no UTF-8."""

_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
"""Unicode's Bidi_Control characters: they reorder how the text around them is shown."""


class Amount(fields.Field[Decimal]):
    """A positive amount with at most 2 decimals: a JSON number or a decimal string."""

    default_error_messages = {  # noqa: RUF012 - marshmallow's convention
        "invalid": 'must be a number or a decimal string such as "10.50"',
        "positive": "must be greater than 0",
        "too_large": "must be at most 1,000,000",
        "places": "must have at most 2 decimal places",
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Decimal:
        if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
            raise self.make_error("invalid")
        if isinstance(value, str):
            # Decimal() also takes "1_000", "1e3" and other scripts' digits: not what a donor means.
            value = value.strip(" ")
            if not AMOUNT_PATTERN.fullmatch(value):
                raise self.make_error("invalid")
        try:
            amount = Decimal(value if isinstance(value, str) else str(value))
        except InvalidOperation as error:
            raise self.make_error("invalid") from error
        if not amount.is_finite():
            raise self.make_error("invalid")
        if amount <= 0:
            raise self.make_error("positive")
        if amount > MAX_AMOUNT:
            raise self.make_error("too_large")
        if amount != amount.quantize(Decimal("0.01")):
            raise self.make_error("places")
        return amount.quantize(Decimal("0.01"))


def _is_forbidden(char: str) -> bool:
    return char in _BIDI_CONTROLS or unicodedata.category(char) in _FORBIDDEN_CATEGORIES


class PlainText(fields.String):
    """Text that cannot forge log lines or reorder what is shown, stripped of surrounding spaces.

    Refused anywhere in the value: control characters (TAB, LF, CR, ESC, DEL,
    NEL, CSI, ...), line and paragraph separators, bidirectional controls and
    lone surrogates. With ``line_breaks=True`` (a multi-line message) LF and
    CR LF are kept, as LF; a lone CR is still refused.
    """

    def __init__(self, *, line_breaks: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.line_breaks = line_breaks

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        checked = text.replace("\r\n", "\n").replace("\n", "") if self.line_breaks else text
        if any(_is_forbidden(char) for char in checked):
            controls = "control characters (line breaks excepted)" if self.line_breaks else "control characters"
            raise ValidationError(f"must not contain {controls}, line separators or bidirectional controls")
        return (text.replace("\r\n", "\n") if self.line_breaks else text).strip()


class DonationSchema(Schema):
    class Meta:
        unknown = RAISE

    amount = Amount(required=True)
    currency = fields.String(required=True)
    donor_name = PlainText(required=True, validate=validate.Length(min=1, max=100))
    donor_email = fields.Email(required=True, validate=validate.Length(max=254))
    message = PlainText(line_breaks=True, load_default="", validate=validate.Length(max=500), allow_none=True)

    def __init__(self, *, currencies: tuple[str, ...], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.currencies = currencies

    @pre_load
    def _normalise(self, data: Any, **_: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("currency"), str):
            data = {**data, "currency": data["currency"].strip().upper()}
        return data

    @validates("currency")
    def _known_currency(self, value: str, **_: Any) -> None:
        if value not in self.currencies:
            raise ValidationError(f"must be one of: {', '.join(self.currencies)}")


@lru_cache(maxsize=8)
def donation_schema(currencies: tuple[str, ...]) -> DonationSchema:
    """The :class:`DonationSchema` for ``currencies``, built once: a schema holds no state between loads.

    Building one costs about as much as loading a donation with it (marshmallow binds and copies every
    field), on every donation.
    """
    return DonationSchema(currencies=currencies)


def _valid_params(params: dict[str, str]) -> None:
    if len(params) > 50:
        raise ValidationError("at most 50 parameters")
    unfit = [name for name, value in params.items() if _NOT_IN_AN_ENVIRONMENT.search(value)]
    if unfit:
        # a task's environment holds neither: the launch would be taken, then fail to start
        raise ValidationError(
            "parameter values must not contain NUL or lone surrogates: " + ", ".join(repr(name) for name in unfit)
        )
    bad = [name for name in params if not PARAM_NAME_PATTERN.fullmatch(name)]
    if bad:
        raise ValidationError(
            "parameter names are 1-64 letters, digits or '_', not starting with a digit: "
            + ", ".join(repr(name) for name in bad)
        )


class JobLaunchSchema(Schema):
    class Meta:
        unknown = RAISE

    spec = fields.String(required=True, validate=validate.Regexp(SPEC_NAME_PATTERN))
    params = fields.Dict(
        keys=fields.String(),
        values=fields.String(validate=validate.Length(max=4096)),
        load_default=dict,
        validate=_valid_params,
    )
    pipeline_run_id = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Regexp(
            PIPELINE_RUN_ID_PATTERN,
            error="must be 1-63 letters, digits, '.', '_' or '-', starting and ending alphanumeric",
        ),
    )


MAX_PROGRESS_COUNT = 2**53 - 1
"""The largest ``done`` / ``total`` a task may report: the largest integer a browser's JSON keeps exact."""
MAX_PROGRESS_TEXT = 200


class Count(fields.Integer):
    """A whole number of steps: a JSON integer (not ``1.0``, ``"1"`` or ``true``), from 0."""

    default_error_messages = {"invalid": "must be a whole number"}  # noqa: RUF012 - marshmallow's convention

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(strict=True, validate=validate.Range(min=0, max=MAX_PROGRESS_COUNT), **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class ProgressReportSchema(Schema):
    """What a task reports about itself: ``{"done": 2, "total": 4, "text": "receipt issued"}``."""

    class Meta:
        unknown = RAISE

    done = Count(required=True)
    total = Count(load_default=None, allow_none=True)
    text = PlainText(load_default=None, allow_none=True, validate=validate.Length(max=MAX_PROGRESS_TEXT))

    @validates_schema
    def _total_covers_done(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("total") is not None and data["done"] > data["total"]:
            raise ValidationError("must be at least done, or null when unknown", "total")


class _NumberTooLong(ValueError):
    """A JSON integer longer than Python converts (``sys.get_int_max_str_digits``)."""


def _json_int(text: str) -> int:
    try:
        return int(text)
    except ValueError as error:  # (the JSON scanner gives digits only: too many of them is the one way here)
        raise _NumberTooLong(len(text)) from error


def json_body(request: Request) -> Any:
    """The request's JSON body (decimals kept exact), or 415/400 in the error shape."""
    if not request.is_json:
        raise _UnsupportedMediaType()
    try:
        return json.loads(_whole_body(request) or b"null", parse_float=Decimal, parse_int=_json_int)
    except _NumberTooLong as error:
        raise InvalidRequest(f"the body's JSON has a number of {error.args[0]} digits: too long to read") from error
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidRequest(f"the body is not valid JSON: {error}") from error
    except RecursionError as error:  # the decoder recurses once per level: "[[[[..." hits Python's limit
        raise InvalidRequest("the body's JSON is nested too deeply") from error


def _whole_body(request: Request) -> bytes:
    """The body, or 413 if it is longer than ``MAX_CONTENT_LENGTH``, however it was sent.

    With ``Content-Length`` Werkzeug refuses a body over the limit up front. A
    chunked body has no length: Werkzeug reads it up to the limit and stops,
    handing over the first 16 KiB as if they were all of it. One more byte
    from the server's own stream tells a body of exactly the limit from a
    longer one.
    """
    data = request.get_data(cache=True)
    limit = request.max_content_length
    at_limit = request.content_length is None and limit is not None and len(data) >= limit
    if at_limit and request.environ["wsgi.input"].read(1):
        raise RequestEntityTooLarge()
    return data


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not IDEMPOTENCY_KEY_PATTERN.fullmatch(key):
        raise InvalidRequest(
            "Idempotency-Key must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'",
            fields={"Idempotency-Key": ["1-64 characters of [A-Za-z0-9_-]"]},
        )
    return key


class _UnsupportedMediaType(InvalidRequest):
    code = "unsupported_media_type"
    http_status = 415

    def __init__(self) -> None:
        super().__init__("send the body as JSON with Content-Type: application/json")
