"""What the console may show of a rendered manifest: personal data and secrets become ``•••``.

An operator needs a run's manifest to see what ran (image, limits, deadline,
retries), not the donor behind it nor the run's progress token. So before a
manifest leaves for the console, three rules mask values, and a value any one
of them catches is masked:

- **Parameters are masked by default.** Every task parameter (each
  ``TASK_PARAM_<NAME>`` env value, each value inside ``TASK_PARAMS``) is
  masked unless it is one of :data:`SHOWN_PARAMS` (amount and currency): a
  parameter a jobspec adds tomorrow is hidden until someone decides otherwise.
- **Known personal and secret names**, anywhere: the value of a key (or of an
  env entry) named in :data:`PERSONAL_KEYS`, or whose name looks like a secret
  (:data:`SECRET_NAME`: token, secret, password, credential, key…), such as
  ``JOBPULSE_PROGRESS_TOKEN``; a switch or a number under such a name
  (``automountServiceAccountToken: false``) is no secret and is shown.
- **Anything that looks like an e-mail address**, wherever it is.

Pure: the manifest is copied, never changed. References such as
``valueFrom.secretKeyRef`` name a secret without holding it and are shown.
"""

from __future__ import annotations

import json
import re
from typing import Any

from webapp.jobspecs import param_env_name

MASK = "•••"

SHOWN_PARAMS = frozenset({"amount", "currency"})
"""Task parameters that are neither personal nor secret: the only ones shown."""

PERSONAL_KEYS = frozenset({"donor_name", "donor_email", "message"})
"""Keys whose values are personal wherever they appear (the donation's parameters)."""

SECRET_NAME = re.compile(r"token|secret|passw|credential|api[_-]?key|private[_-]?key|auth", re.IGNORECASE)
"""A key or env name that holds a secret."""

REFERENCE_KEYS = frozenset({"valueFrom", "envFrom", "secretKeyRef", "secretRef", "secretName", "imagePullSecrets"})
"""Keys whose values name a Secret or ConfigMap without holding its data: shown as they are."""

EMAIL = re.compile(r"[^\s@\"',;<>()]+@[^\s@\"',;<>()]+\.[A-Za-z]{2,}")

PARAMS_ENV = "TASK_PARAMS"
PARAM_ENV_PREFIX = param_env_name("")
SHOWN_PARAM_ENVS = frozenset(param_env_name(name) for name in SHOWN_PARAMS)


def masked_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``manifest`` with every personal or secret value replaced by :data:`MASK`."""
    masked = _masked(manifest)
    assert isinstance(masked, dict)  # a mapping stays a mapping
    return masked


def _hidden_name(name: str) -> bool:
    return name.lower() in PERSONAL_KEYS or SECRET_NAME.search(name) is not None


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        if _is_env_entry(value):
            return _masked_env_entry(value)
        return {key: _masked_under(str(key), item) for key, item in value.items()}
    if isinstance(value, list):
        return [_masked(item) for item in value]
    if isinstance(value, str) and EMAIL.search(value):
        return MASK
    return value


def _masked_under(key: str, value: Any) -> Any:
    if key in REFERENCE_KEYS:
        return value
    if _hidden_name(key) and not isinstance(value, (bool, int, float)) and value is not None:
        return MASK  # a switch or a number is no secret (automountServiceAccountToken: false)
    return _masked(value)


def _is_env_entry(value: dict[str, Any]) -> bool:
    return isinstance(value.get("name"), str) and isinstance(value.get("value"), str)


def _masked_env_entry(entry: dict[str, Any]) -> dict[str, Any]:
    name: str = entry["name"]
    rest = {key: _masked(item) for key, item in entry.items() if key not in ("name", "value")}
    if name == PARAMS_ENV:
        return {"name": name, "value": _masked_params_json(entry["value"]), **rest}
    hidden = _hidden_name(name) or (name.startswith(PARAM_ENV_PREFIX) and name not in SHOWN_PARAM_ENVS)
    return {"name": name, "value": MASK if hidden else _masked(entry["value"]), **rest}


def _masked_params_json(text: str) -> str:
    """``TASK_PARAMS``' JSON with every value but the shown parameters' masked; not JSON: all of it."""
    try:
        params = json.loads(text)
    except ValueError:
        return MASK
    if not isinstance(params, dict):
        return MASK
    shown = {
        key: _masked(item) if key in SHOWN_PARAMS and not isinstance(item, (dict, list)) else MASK
        for key, item in params.items()
    }
    return json.dumps(shown, sort_keys=True)
