"""Logging set-up: one JSON object per line on stderr, or plain text for humans.

Events are logged by name (``job.launched``, ``stream.opened``, ...) with
structured fields passed through ``extra`` (``job_name``, ``mode``,
``pipeline_run_id``, ...). Nothing about donors is ever logged.
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

_JSON_FIELDS = "{asctime}{levelname}{name}{message}"


def configure_logging(*, level: str, log_format: str) -> None:
    """Send the ``webapp`` loggers to stderr in the chosen format (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                _JSON_FIELDS,
                style="{",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger", "message": "event"},
                datefmt="%Y-%m-%dT%H:%M:%S%z",
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger("webapp")
    for old in [h for h in root.handlers if getattr(h, "_jobpulse", False)]:
        root.removeHandler(old)
    handler._jobpulse = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
