from __future__ import annotations

import json

import pytest

from webapp.tasks.donation_receipt import EXIT_INVALID_PARAMS, main, mask_email


def test_the_task_prints_its_four_steps(capsys: pytest.CaptureFixture[str]) -> None:
    params = {"amount": "12.00", "currency": "EUR", "donor_name": "Ann", "donor_email": "ann@example.org"}
    code = main({"TASK_PARAMS": json.dumps(params), "TASK_STEP_SECONDS": "0", "TASK_JOB_NAME": "task-runner-a-1"})
    out = capsys.readouterr().out
    assert code == 0
    assert [line.split(":")[0] for line in out.splitlines()[:4]] == [
        "[1/4] validate",
        "[2/4] record",
        "[3/4] receipt",
        "[4/4] notify",
    ]
    assert "ann@example.org" not in out
    assert "a***@example.org" in out
    assert "Ann" not in out, "the output is kept with the run and shown in the console: no donor's name in it"


@pytest.mark.parametrize("params", [{}, {"amount": "x", "currency": "EUR"}, {"amount": "-1", "currency": "EUR"}])
def test_invalid_parameters_exit_2(params: dict[str, str]) -> None:
    assert main({"TASK_PARAMS": json.dumps(params), "TASK_STEP_SECONDS": "0"}) == EXIT_INVALID_PARAMS


def test_mask_email() -> None:
    assert mask_email("zoe@example.org") == "z***@example.org"
    assert mask_email("nonsense") == "***"
