"""What the API server has been asked, from its own ``/metrics``: how the tests prove a cost does not grow."""

from __future__ import annotations

import re
from typing import Any

_LABEL = re.compile(r'(\w+)="([^"]*)"')


def _samples(cluster: Any, metric: str) -> list[tuple[dict[str, str], float]]:
    found = []
    for line in cluster.apiserver_metrics().splitlines():
        if line.startswith(metric + "{"):
            labels, value = line[len(metric) + 1 :].rsplit("} ", 1)
            found.append((dict(_LABEL.findall(labels)), float(value)))
    return found


def reads(cluster: Any, resource: str, *, verbs: tuple[str, ...] = ("GET", "LIST")) -> float:
    """Requests the API server has answered that read ``resource`` one by one or as lists (not watches)."""
    return sum(
        value
        for labels, value in _samples(cluster, "apiserver_request_total")
        if labels.get("resource") == resource and labels.get("subresource", "") == "" and labels.get("verb") in verbs
    )


def open_watches(cluster: Any, resource: str) -> float:
    """Watches of ``resource`` open at the API server now (from anyone: controllers, kwok, the app)."""
    return sum(
        value
        for labels, value in _samples(cluster, "apiserver_longrunning_requests")
        if labels.get("resource") == resource and labels.get("verb") == "WATCH"
    )
