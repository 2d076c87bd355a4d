"""The HTTP edge: blueprints per feature. Views validate input and read the hub, nothing more."""

from __future__ import annotations

from flask import current_app

from webapp.runtime import Runtime


def runtime() -> Runtime:
    """The process's :class:`~webapp.runtime.Runtime`, wired by ``create_app``."""
    found: Runtime = current_app.extensions["jobpulse"]
    return found
