"""The filters an operator puts on lists and streams of runs: ``status=`` and ``spec=``, checked at the edge.

``GET /api/runs``, ``GET /sse/runs`` and ``/ws/runs`` take the same query
parameters, each a comma-separated list: status values of :class:`Phase`,
and spec names as jobspecs spell them. A value that cannot be one is the
client's mistake (400), never a silent empty list.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from webapp.errors import InvalidRequest
from webapp.jobspecs import SPEC_NAME_PATTERN
from webapp.status import JobStatus, Phase

MAX_SPECS = 50
"""The most spec names one filter may list."""
_MAX_PARAMETER_CHARS = 4000


@dataclasses.dataclass(frozen=True)
class RunFilter:
    """Which runs a client wants: any of ``statuses`` and any of ``specs`` (an empty one: all)."""

    statuses: frozenset[Phase] = frozenset()
    specs: frozenset[str] = frozenset()

    def matches(self, status: JobStatus) -> bool:
        return (not self.statuses or status.status in self.statuses) and (not self.specs or status.spec in self.specs)


def run_filter(args: Mapping[str, str]) -> RunFilter:
    """The filter of a request's query parameters; :class:`InvalidRequest` (400) for values that cannot be one."""
    statuses: set[Phase] = set()
    for value in _listed(args, "status"):
        try:
            statuses.add(Phase(value))
        except ValueError:
            known = ", ".join(phase.value for phase in Phase)
            raise InvalidRequest(
                f"status must list status values ({known})", fields={"status": [f"unknown status {value[:40]!r}"]}
            ) from None
    specs = _listed(args, "spec")
    if len(specs) > MAX_SPECS:
        raise InvalidRequest(f"spec may list at most {MAX_SPECS} names", fields={"spec": ["too many"]})
    for value in specs:
        if not SPEC_NAME_PATTERN.fullmatch(value):
            raise InvalidRequest(
                "spec must list jobspec names (letters, digits, '.', '_', '-'; at most 63 characters)",
                fields={"spec": [f"not a spec name: {value[:40]!r}"]},
            )
    return RunFilter(frozenset(statuses), frozenset(specs))


def _listed(args: Mapping[str, str], name: str) -> list[str]:
    raw = args.get(name)
    if raw is None or not raw.strip():
        return []
    if len(raw) > _MAX_PARAMETER_CHARS:
        raise InvalidRequest(f"{name} is too long", fields={name: ["too long"]})
    return [value.strip() for value in raw.split(",") if value.strip()]


def list_limit(args: Mapping[str, str], *, default: int, high: int = 500) -> int:
    """``limit=``: how many runs a list holds, from 1 to ``high``; :class:`InvalidRequest` (400) otherwise."""
    raw = args.get("limit")
    if raw is None:
        return default
    # int() also takes " 5", "1_0" and other scripts' digits: only plain ASCII digits are a number here.
    value = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 6 else 0
    if not 1 <= value <= high:
        raise InvalidRequest(f"limit must be a whole number from 1 to {high}", fields={"limit": ["out of range"]})
    return value
