"""Job names and pipeline run ids: generated and checked before any lookup.

A job name is ``task-runner-<pipeline_run_id>-<8 hex>``, a valid DNS-1123
label of at most 63 characters. The 8 random hex characters make names hard
to guess; names are never listed publicly.
"""

from __future__ import annotations

import re
import secrets

JOB_NAME_PREFIX = "task-runner-"
MAX_NAME_LENGTH = 63
_SUFFIX_LENGTH = 8

JOB_NAME_PATTERN = re.compile(r"\A[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
"""A DNS-1123 label: what Kubernetes accepts as a Job name."""

PIPELINE_RUN_ID_PATTERN = re.compile(r"\A[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?\Z")
"""A valid label value, since the id is also the ``jobpulse/pipeline-run-id`` label."""


def is_valid_job_name(name: str) -> bool:
    return len(name) <= MAX_NAME_LENGTH and bool(JOB_NAME_PATTERN.fullmatch(name))


def new_pipeline_run_id() -> str:
    return secrets.token_hex(6)


def new_job_name(pipeline_run_id: str) -> str:
    """``task-runner-<pipeline_run_id>-<8 hex>``, cut to a valid name of at most 63 chars."""
    room = MAX_NAME_LENGTH - len(JOB_NAME_PREFIX) - 1 - _SUFFIX_LENGTH
    middle = re.sub(r"[^a-z0-9-]+", "-", pipeline_run_id.lower())
    middle = re.sub(r"-{2,}", "-", middle)[:room].strip("-")
    suffix = secrets.token_hex(_SUFFIX_LENGTH // 2)
    return f"{JOB_NAME_PREFIX}{middle}-{suffix}" if middle else f"{JOB_NAME_PREFIX}{suffix}"
