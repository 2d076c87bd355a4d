from __future__ import annotations

import re

import pytest

from webapp.names import is_valid_job_name, new_job_name


@pytest.mark.parametrize(
    ("pipeline_run_id", "middle"),
    [
        ("abc123", "abc123"),
        ("Run_42.retry", "run-42-retry"),
        ("--x--", "x"),
        ("A" * 80, "a" * 42),
        ("ab-" + "c" * 60, "ab-" + "c" * 39),
    ],
)
def test_job_names_are_valid_dns_labels_with_a_random_suffix(pipeline_run_id: str, middle: str) -> None:
    name = new_job_name(pipeline_run_id)
    assert re.fullmatch(rf"task-runner-{re.escape(middle)}-[0-9a-f]{{8}}", name), name
    assert len(name) <= 63
    assert is_valid_job_name(name)


def test_a_name_cut_at_a_dash_stays_valid() -> None:
    name = new_job_name("x" * 41 + "-y")
    assert is_valid_job_name(name)
    assert "--" not in name


def test_two_names_for_one_run_differ() -> None:
    assert new_job_name("same") != new_job_name("same")


@pytest.mark.parametrize(
    "name",
    ["", "UPPER", "-leading", "trailing-", "a_b", "a.b", "a" * 64, "../etc/passwd", "x y", "tâche"],
)
def test_invalid_job_names(name: str) -> None:
    assert not is_valid_job_name(name)


@pytest.mark.parametrize("name", ["task-runner-abc-0000beef\n", "task-runner-abc-0000beef\r\n", "abc\n"])
def test_a_trailing_newline_is_not_part_of_a_valid_name(name: str) -> None:
    assert not is_valid_job_name(name)
