from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from marshmallow import ValidationError

from webapp.api.schemas import DonationSchema, JobLaunchSchema, donation_schema

GOOD: dict[str, Any] = {"amount": "10.50", "currency": "EUR", "donor_name": "Ann", "donor_email": "ann@example.org"}


def load(body: dict[str, Any]) -> dict[str, Any]:
    return DonationSchema(currencies=("USD", "EUR", "GBP")).load(body)


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        ("10.50", "10.50"),
        (10, "10.00"),
        (Decimal("0.01"), "0.01"),
        ("1000000", "1000000.00"),
        (" 5 ", "5.00"),
        ("7.5", "7.50"),
    ],
)
def test_amounts_accepted(amount: Any, expected: str) -> None:
    assert str(load({**GOOD, "amount": amount})["amount"]) == expected


@pytest.mark.parametrize(
    ("changes", "field", "text"),
    [
        ({"amount": "0"}, "amount", "greater than 0"),
        ({"amount": -5}, "amount", "greater than 0"),
        ({"amount": "1000000.01"}, "amount", "at most 1,000,000"),
        ({"amount": "10.505"}, "amount", "2 decimal places"),
        ({"amount": "ten"}, "amount", "number"),
        ({"amount": "NaN"}, "amount", "number"),
        ({"amount": "Infinity"}, "amount", "number"),
        ({"amount": True}, "amount", "number"),
        ({"amount": None}, "amount", "null"),
        ({"amount": [1]}, "amount", "number"),
        ({"currency": "JPY"}, "currency", "one of: USD, EUR, GBP"),
        ({"currency": 978}, "currency", "string"),
        ({"donor_name": ""}, "donor_name", "Length must be between 1 and 100"),
        ({"donor_name": "   "}, "donor_name", "Length must be between 1 and 100"),
        ({"donor_name": "x" * 101}, "donor_name", "Length"),
        ({"donor_name": "bad\x00name"}, "donor_name", "control characters"),
        ({"donor_email": "not-an-email"}, "donor_email", "email"),
        ({"donor_email": "a@" + "b" * 260 + ".org"}, "donor_email", ""),
        ({"message": "x" * 501}, "message", "Length"),
        ({"surprise": 1}, "surprise", "Unknown field"),
    ],
)
def test_bad_donations_name_the_field(changes: dict[str, Any], field: str, text: str) -> None:
    with pytest.raises(ValidationError) as caught:
        load({**GOOD, **changes})
    assert field in caught.value.messages
    assert text.lower() in " ".join(caught.value.messages[field]).lower()


@pytest.mark.parametrize("missing", ["amount", "currency", "donor_name", "donor_email"])
def test_required_fields(missing: str) -> None:
    body = {k: v for k, v in GOOD.items() if k != missing}
    with pytest.raises(ValidationError) as caught:
        load(body)
    assert caught.value.messages == {missing: ["Missing data for required field."]}


def test_currency_is_normalised_and_message_optional() -> None:
    loaded = load({**GOOD, "currency": " gbp "})
    assert loaded["currency"] == "GBP"
    assert loaded["message"] == ""


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "spec"),
        ({"spec": "../etc"}, "spec"),
        ({"spec": "quick", "params": {"bad-name": "x"}}, "params"),
        ({"spec": "quick", "params": {"n": 5}}, "params"),
        ({"spec": "quick", "params": {"n": "x" * 4097}}, "params"),
        ({"spec": "quick", "params": {f"p{i}": "x" for i in range(51)}}, "params"),
        ({"spec": "quick", "pipeline_run_id": "-bad"}, "pipeline_run_id"),
        ({"spec": "quick", "pipeline_run_id": "x" * 64}, "pipeline_run_id"),
        ({"spec": "quick", "extra": 1}, "extra"),
    ],
)
def test_bad_job_launches(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        JobLaunchSchema().load(body)
    assert field in caught.value.messages


# -- text fields: nothing that can forge a line, reorder text or hide it ------------------

LINE_AND_DISPLAY_CONTROLS = {
    "LF": "\n",
    "CR": "\r",
    "TAB": "\t",
    "NUL": "\x00",
    "ESC": "\x1b",
    "DEL": "\x7f",
    "NEL U+0085": "\x85",
    "CSI U+009B": "\x9b",
    "LINE SEPARATOR U+2028": "\u2028",
    "PARAGRAPH SEPARATOR U+2029": "\u2029",
    "RLO U+202E": "\u202e",
    "LRE U+202A": "\u202a",
    "RLI U+2067": "\u2067",
    "PDI U+2069": "\u2069",
    "RLM U+200F": "\u200f",
    "ALM U+061C": "\u061c",
    "lone surrogate": "\ud800",
}


@pytest.mark.parametrize("where", ["middle", "end"])
@pytest.mark.parametrize("char", LINE_AND_DISPLAY_CONTROLS.values(), ids=LINE_AND_DISPLAY_CONTROLS.keys())
def test_a_donor_name_with_a_control_character_is_refused(char: str, where: str) -> None:
    name = f"Ann{char}Donor" if where == "middle" else f"Ann Donor{char}"
    with pytest.raises(ValidationError) as caught:
        load({**GOOD, "donor_name": name})
    assert list(caught.value.messages) == ["donor_name"]
    assert "control characters" in " ".join(caught.value.messages["donor_name"])


@pytest.mark.parametrize(
    "char",
    [c for label, c in LINE_AND_DISPLAY_CONTROLS.items() if label not in ("LF", "CR")],
    ids=[label for label in LINE_AND_DISPLAY_CONTROLS if label not in ("LF", "CR")],
)
def test_a_message_with_a_control_character_is_refused(char: str) -> None:
    with pytest.raises(ValidationError) as caught:
        load({**GOOD, "message": f"Keep{char}it up"})
    assert list(caught.value.messages) == ["message"]


def test_a_message_may_have_line_breaks_but_no_lone_carriage_return() -> None:
    assert load({**GOOD, "message": "Keep it up!\r\nFrom all of us\n"})["message"] == "Keep it up!\nFrom all of us"
    with pytest.raises(ValidationError) as caught:
        load({**GOOD, "message": "Keep it up!\rFORGED"})
    assert list(caught.value.messages) == ["message"]


@pytest.mark.parametrize(
    "name",
    [
        "Zoë Ångström",
        "محمد",
        "李小龍",
        "Mary-Jane O'Neil",
        "Ann 👩\u200d👩\u200d👧",
        "Nilüfer\u200c\u0131",
        "Ann\u00a0Lee",
    ],
)
def test_names_in_any_script_are_accepted(name: str) -> None:
    assert load({**GOOD, "donor_name": name})["donor_name"] == name


# -- amounts: plain ASCII decimals only ------------------------------------------------------


@pytest.mark.parametrize(
    "amount",
    [
        "1_000",
        "\u0661\u0660",
        "\uff11\uff10",
        "10\u00a0",
        "1e3",
        "0x10",
        "+5",
        "5.",
        ".5",
        "1,000",
        "10.5.0",
        "--5",
        "",
    ],
)
def test_amount_strings_other_than_plain_decimals_are_refused(amount: str) -> None:
    with pytest.raises(ValidationError) as caught:
        load({**GOOD, "amount": amount})
    assert "amount" in caught.value.messages


# -- names and ids: the whole value matches, a trailing newline is not "the end" -----------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"spec": "quick\n"}, "spec"),
        ({"spec": "quick", "pipeline_run_id": "nightly\n"}, "pipeline_run_id"),
        ({"spec": "quick", "params": {"SECONDS\n": "1"}}, "params"),
    ],
)
def test_a_trailing_newline_does_not_pass_a_pattern(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        JobLaunchSchema().load(body)
    assert field in caught.value.messages


def test_the_donation_schema_is_built_once_per_set_of_currencies_and_keeps_nothing_between_loads() -> None:
    schema = donation_schema(("USD", "EUR"))
    assert donation_schema(("USD", "EUR")) is schema
    with pytest.raises(ValidationError) as refused:
        schema.load({**GOOD, "currency": "GBP", "message": "first"})
    assert "currency" in refused.value.messages
    loaded = schema.load({**GOOD, "currency": "usd"})
    assert (loaded["currency"], loaded["message"]) == ("USD", "")
    other = donation_schema(("GBP",))
    assert other is not schema
    assert other.load({**GOOD, "currency": "GBP"})["currency"] == "GBP"
