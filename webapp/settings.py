"""One typed settings object, read from the environment once and validated once.

Every knob jobpulse has is an environment variable (twelve-factor style, so the
same image runs on a laptop, under a legacy WSGI host and in Kubernetes). They
are parsed here with a marshmallow schema; a bad value stops start-up with the
variable's name and the reason, instead of failing later on a donor's request.

Each setting is declared once, as a field of :class:`Settings`: its default,
the marshmallow field that reads and checks its variable (the attribute's name
in upper case), how the checked text becomes the attribute's value, and the
docstring under it. The schema is built from those fields; only the rules that
tie several variables together are written apart, in :class:`_Rules`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from limits import parse_many
from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    validate,
    validates_schema,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent

EXECUTION_MODES = ("legacy", "k8s", "dual")
LEGACY_RUNNERS = ("local", "http")
_CURRENCY = re.compile(r"\A[A-Z]{3}\Z")

_T = TypeVar("_T")


class ConfigError(Exception):
    """A setting is missing or invalid; the message names the variable."""


def setting(
    default: _T,
    variable: fields.Field[Any],
    *,
    convert: Callable[[Any], _T] | None = None,
    default_from: Callable[[Settings], _T] | None = None,
) -> _T:
    """Declare a field of :class:`Settings`.

    ``variable`` reads and checks the environment variable named after the
    field (in upper case); ``convert`` turns the checked value into the
    field's (unchanged without it); ``default_from`` computes the default
    from the other settings, when it depends on them (``default`` is then
    what it computes from theirs).
    """
    return dataclasses.field(
        default=default, metadata={"variable": variable, "convert": convert, "default_from": default_from}
    )


def _csv(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _resolved_path(value: str) -> Path:
    return Path(value).expanduser().resolve()


def _check_currencies(value: str) -> None:
    codes = _csv(value)
    if not codes:
        raise ValidationError("list at least one ISO 4217 code")
    bad = [code for code in codes if not _CURRENCY.fullmatch(code)]
    if bad:
        raise ValidationError(f"not ISO 4217 codes: {', '.join(bad)}")


def _check_origins(value: str) -> None:
    bad = [o for o in _csv(value) if not re.fullmatch(r"https?://[^/\s]+", o)]
    if bad:
        raise ValidationError(f"origins are scheme://host[:port]: {', '.join(bad)}")


def _check_legacy_python(value: str) -> None:
    path = Path(value).expanduser()
    if not path.is_absolute():
        raise ValidationError("give an absolute path to a Python interpreter")
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise ValidationError(f"{value} is not an executable file")


def _check_rate_limit(value: str) -> None:
    try:
        parse_many(value)
    except ValueError as error:
        raise ValidationError(f"not a rate limit such as 10/minute ({error})") from error


_SECRET_MIN = 16
_SECRET_LENGTH = validate.Length(min=_SECRET_MIN, error=f"use at least {_SECRET_MIN} characters")
_OPERATOR_NAME = re.compile(r"\A[a-z0-9_-]{1,32}\Z")
DEFAULT_OPERATOR = "admin"
"""The operator ``ADMIN_TOKEN`` alone stands for."""


def _operator_pairs(value: str) -> tuple[tuple[str, str], ...]:
    """``name:token`` pairs, comma-separated, as ``(name, token)``; :func:`_check_operators` checked them."""
    return tuple((name.strip(), token.strip()) for name, _, token in (item.partition(":") for item in _csv(value)))


def _check_operators(value: str) -> None:
    """Names ``[a-z0-9_-]{1,32}``, each once; tokens as long as ``ADMIN_TOKEN``'s, each once.

    The messages name operators (by name or position), never a token.
    """
    items = _csv(value)
    if not items:
        raise ValidationError("list at least one name:token pair")
    problems: list[str] = []
    for position, item in enumerate(items, start=1):
        name, colon, token = (part.strip() for part in item.partition(":"))
        if not colon:
            problems.append(f"pair {position} is not name:token")
        elif not _OPERATOR_NAME.fullmatch(name):
            problems.append(f"pair {position}: an operator name is 1-32 characters of a-z, 0-9, '_' or '-'")
        elif len(token) < _SECRET_MIN:
            problems.append(f"{name}'s token is too short: use at least {_SECRET_MIN} characters")
    if problems:
        raise ValidationError("; ".join(problems))
    pairs = _operator_pairs(value)
    names = [name for name, _ in pairs]
    if repeated := sorted({name for name in names if names.count(name) > 1}):
        raise ValidationError(f"each operator is named once: {', '.join(repeated)}")
    tokens = [token for _, token in pairs]
    if len(set(tokens)) != len(tokens):
        raise ValidationError("each operator needs a token of its own: two pairs share one")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything jobpulse can be told, after validation."""

    execution_mode: str = setting("legacy", fields.String(validate=validate.OneOf(EXECUTION_MODES)))
    """Who runs tasks: ``legacy`` (the legacy runner), ``k8s`` (Kubernetes Jobs) or ``dual`` (both)."""

    dual_primary: str = setting("legacy", fields.String(validate=validate.OneOf(("legacy", "k8s"))))
    """In dual mode, the run the donor follows; the other one is its shadow."""

    jobspecs_dir: Path = setting(PROJECT_ROOT / "jobspecs", fields.String(), convert=_resolved_path)
    """Folder of ``*.yaml`` Job manifests; each file name is a spec name."""

    donation_jobspec: str = setting(
        "donation-receipt", fields.String(validate=validate.Regexp(r"\A[A-Za-z0-9][A-Za-z0-9._-]*\Z"))
    )
    """The spec a donation starts."""

    k8s_namespace: str | None = setting(
        None,
        fields.String(
            validate=validate.Regexp(r"\A[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z", error="must be a DNS-1123 label")
        ),
    )
    """Namespace for Jobs; unset means the in-cluster namespace, the kubeconfig context's, or ``default``."""

    kubeconfig: Path | None = setting(None, fields.String(), convert=_resolved_path)
    """Kubeconfig file when not running in a cluster; unset means the client's default (``~/.kube/config``)."""

    task_image: str | None = setting(None, fields.String())
    """Overrides every container image of a rendered Job when set."""

    legacy_runner: str = setting("local", fields.String(validate=validate.OneOf(LEGACY_RUNNERS)))
    """``local`` runs tasks as subprocesses here; ``http`` calls an existing task-runner service."""

    legacy_runner_url: str | None = setting(
        None, fields.Url(require_tld=False, schemes={"http", "https"}), convert=lambda url: url.rstrip("/")
    )
    """Base URL of the legacy task-runner service (``LEGACY_RUNNER=http``)."""

    service_url: str | None = setting(
        None, fields.Url(require_tld=False, schemes={"http", "https"}), convert=lambda url: url.rstrip("/")
    )
    """The URL tasks use to reach jobpulse, e.g. ``http://jobpulse.<namespace>.svc:8000`` (progress reports).

    Unset, each run gets the root URL of the request that launched it: enough for the local runner on this
    host, but a pod in Kubernetes needs the Service's address.
    """

    legacy_max_concurrency: int = setting(4, fields.Integer(validate=validate.Range(min=1, max=1000)))
    """How many local runs at once; the rest wait as ``Queued``."""

    # not resolved: a virtualenv's python is a symlink, and following it would leave the virtualenv
    legacy_python: Path | None = setting(
        None, fields.String(validate=_check_legacy_python), convert=lambda path: Path(path).expanduser()
    )
    """The interpreter the local runner uses for a command starting with ``python``; unset means this one."""

    redis_url: str | None = setting(None, fields.Url(require_tld=False, schemes={"redis", "rediss", "unix"}))
    """Redis for several instances (run store, idempotency, rate limits, status fan-out)."""

    database_path: Path = setting(PROJECT_ROOT / "var" / "jobpulse.sqlite3", fields.String(), convert=_resolved_path)
    """SQLite run store when no Redis is configured; task output is kept beside it."""

    admin_token: str | None = setting(None, fields.String(validate=_SECRET_LENGTH))
    """Bearer token for the admin API, the operator named ``admin``; unset (and no ``ADMIN_TOKENS``): 403."""

    admin_tokens: tuple[tuple[str, str], ...] = setting(
        (), fields.String(validate=_check_operators), convert=_operator_pairs
    )
    """Named operators, ``name:token`` pairs, comma-separated: each operator's own bearer token for the admin API.

    Names are 1-32 characters of ``a-z``, ``0-9``, ``_``, ``-``; tokens at least 16 characters. With
    ``ADMIN_TOKEN`` too, both are accepted (``admin`` may then not be named here). A pair removed (and a
    restart) revokes that operator. The audit trail records each admin action under its operator's name.
    """

    allowed_origins: tuple[str, ...] = setting((), fields.String(validate=_check_origins), convert=_csv)
    """Extra origins (``scheme://host[:port]``) allowed to open WebSockets besides the same host."""

    currencies: tuple[str, ...] = setting(
        ("USD", "EUR", "GBP"), fields.String(validate=_check_currencies), convert=_csv
    )
    """ISO 4217 codes a donation may use; the first is the page's default."""

    status_retention_seconds: int = setting(86400, fields.Integer(validate=validate.Range(min=60)))
    """How long finished runs stay in the run store."""

    log_tail_bytes: int = setting(65536, fields.Integer(validate=validate.Range(min=0, max=16 * 1024 * 1024)))
    """How much of a finished run's output (its last bytes, whole lines) the run store keeps; 0 keeps none.

    Kept as long as the run, so ``GET /api/jobs/<name>/logs`` answers after the pod is gone or on another
    instance than the one that ran a legacy task.
    """

    sse_heartbeat_seconds: float = setting(15.0, fields.Float(validate=validate.Range(min=0.05, max=3600)))
    """Seconds between ``: ping`` comments on idle SSE streams."""

    ws_ping_seconds: float = setting(25.0, fields.Float(validate=validate.Range(min=0.05, max=3600)))
    """Seconds between WebSocket pings."""

    rate_limit: str = setting("10/minute", fields.String(validate=_check_rate_limit))
    """Donations allowed per client address, in the ``limits`` notation (``10/minute;100/day``)."""

    max_active_jobs: int = setting(100, fields.Integer(validate=validate.Range(min=0)))
    """Launches are refused (429) while this many runs are unfinished; 0 means no limit."""

    max_queued_jobs: int = setting(0, fields.Integer(validate=validate.Range(min=0)))
    """Launches over ``max_active_jobs`` wait in line (``Queued``, ``WaitingForCapacity``) while fewer than this
    many wait; beyond, they are refused (429). 0: no line, every launch over the limit is refused."""

    max_active_jobs_per_client: int = setting(
        10,
        fields.Integer(validate=validate.Range(min=0)),
        default_from=lambda given: max(1, given.max_active_jobs // 10) if given.max_active_jobs else 0,
    )
    """A client's donations are refused (429) while it has this many unfinished runs; 0 means no limit.

    Unset, a tenth of ``max_active_jobs`` (at least 1): two clients cannot take every slot.
    """

    max_streams_per_client: int = setting(50, fields.Integer(validate=validate.Range(min=0)))
    """Open SSE and WebSocket streams one client may hold (429, WebSocket close 1008); 0 means no limit."""

    max_streams: int = setting(
        9000,
        fields.Integer(validate=validate.Range(min=1)),
        default_from=lambda given: given.worker_connections * 9 // 10,
    )
    """Open streams per process (503, WebSocket close 1013); unset, nine tenths of ``worker_connections``.

    The rest of the worker's connections stay free for probes, launches and polls.
    """

    worker_connections: int = setting(10000, fields.Integer(validate=validate.Range(min=2)))
    """gunicorn's ``worker_connections`` (``WORKER_CONNECTIONS``, read by ``gunicorn.conf.py`` too)."""

    body_timeout_seconds: float = setting(10.0, fields.Float(validate=validate.Range(min=0.1, max=3600)))
    """A request body must arrive whole within this many seconds, else 408 and the connection is closed."""

    stream_write_timeout_seconds: float = setting(30.0, fields.Float(validate=validate.Range(min=0.1, max=3600)))
    """A stream's write (a status, a ping, a pong) must go out within this many seconds, else the stream ends.

    A client that stops reading (a zero TCP window) would otherwise hold its stream, its slot and its
    connection for as long as TCP lives. Under the gevent worker only (elsewhere, see docs/CONFIGURATION.md).
    """

    trusted_proxy_hops: int = setting(0, fields.Integer(validate=validate.Range(min=0, max=10)))
    """Reverse proxies in front whose ``X-Forwarded-For``/``-Proto``/``-Host``/``-Port`` are believed; 0: none."""

    completion_webhook_url: str | None = setting(None, fields.Url(require_tld=False, schemes={"http", "https"}))
    """URL that receives the status object of every finished run."""

    webhook_secret: str | None = setting(None, fields.String(validate=_SECRET_LENGTH))
    """Key of the HMAC-SHA256 signature sent with each webhook."""

    log_level: str = setting(
        "INFO", fields.String(validate=validate.OneOf(("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")))
    )
    """Python logging level name."""

    log_format: str = setting("json", fields.String(validate=validate.OneOf(("json", "text"))))
    """``json`` (one object per line) or ``text``."""

    @property
    def legacy_enabled(self) -> bool:
        return self.execution_mode in ("legacy", "dual")

    @property
    def k8s_enabled(self) -> bool:
        return self.execution_mode in ("k8s", "dual")

    @property
    def operators(self) -> dict[str, str]:
        """Every operator's token by name: ``ADMIN_TOKENS``' pairs and ``ADMIN_TOKEN`` as ``admin``."""
        named = dict(self.admin_tokens)
        if self.admin_token:
            named[DEFAULT_OPERATOR] = self.admin_token
        return named

    @property
    def primary_mode(self) -> str:
        """The mode of the run a donor follows."""
        return self.dual_primary if self.execution_mode == "dual" else self.execution_mode

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read and validate the settings; raise :class:`ConfigError` naming the variable."""
        raw = {
            name: value.strip()
            for name in _SettingsSchema().fields
            if (value := environ.get(name)) is not None and value.strip() != ""
        }
        try:
            loaded: Settings = _SettingsSchema().load(raw)
        except ValidationError as error:
            raise ConfigError(_describe(error.messages)) from error
        return loaded


def _describe(messages: Any) -> str:
    if isinstance(messages, dict):
        parts = []
        for name, problems in sorted(messages.items()):
            text = "; ".join(problems) if isinstance(problems, list) else str(problems)
            parts.append(f"{name}: {text}" if name != "_schema" else text)
        return ", ".join(parts)
    return str(messages)


class _Rules(Schema):
    """What no single variable can check: how variables combine, and the seed's flag.

    :data:`_SettingsSchema` adds one field per setting, named after the
    environment variable exactly as operators write it.
    """

    class Meta:
        unknown = RAISE

    USE_K8S_JOBS = fields.Boolean()
    """The seed's flag: ``true`` means ``EXECUTION_MODE=k8s`` when that is unset. Not a setting of its own."""

    @validates_schema
    def _check_combinations(self, data: dict[str, Any], **_: Any) -> None:
        mode, use_k8s = data.get("EXECUTION_MODE"), data.get("USE_K8S_JOBS")
        if mode is not None and use_k8s is not None and use_k8s != (mode in ("k8s", "dual")):
            raise ValidationError(
                f"EXECUTION_MODE={mode} conflicts with USE_K8S_JOBS={str(use_k8s).lower()}; set only EXECUTION_MODE",
                "EXECUTION_MODE",
            )
        if data.get("LEGACY_RUNNER") == "http" and not data.get("LEGACY_RUNNER_URL"):
            raise ValidationError("required when LEGACY_RUNNER=http", "LEGACY_RUNNER_URL")
        if data.get("WEBHOOK_SECRET") and not data.get("COMPLETION_WEBHOOK_URL"):
            raise ValidationError("set COMPLETION_WEBHOOK_URL too", "WEBHOOK_SECRET")
        if data.get("COMPLETION_WEBHOOK_URL") and not data.get("WEBHOOK_SECRET"):
            raise ValidationError("required to sign webhooks", "WEBHOOK_SECRET")
        if data.get("ADMIN_TOKEN") and (pairs := data.get("ADMIN_TOKENS")):
            if DEFAULT_OPERATOR in dict(_operator_pairs(pairs)):
                raise ValidationError(
                    f"names {DEFAULT_OPERATOR!r}, the operator ADMIN_TOKEN stands for: rename it or unset ADMIN_TOKEN",
                    "ADMIN_TOKENS",
                )
            if data["ADMIN_TOKEN"] in {token for _, token in _operator_pairs(pairs)}:
                raise ValidationError("each operator needs a token of its own: one is ADMIN_TOKEN's", "ADMIN_TOKENS")
        connections = data.get("WORKER_CONNECTIONS", Settings.worker_connections)
        if data.get("MAX_STREAMS", 0) >= connections:
            raise ValidationError(
                f"must be below WORKER_CONNECTIONS ({connections}), leaving connections for probes and launches",
                "MAX_STREAMS",
            )

    @post_load
    def _to_settings(self, data: dict[str, Any], **_: Any) -> Settings:
        given: dict[str, Any] = {}
        for field in dataclasses.fields(Settings):
            if field.name.upper() in data:
                convert = field.metadata["convert"]
                value = data[field.name.upper()]
                given[field.name] = convert(value) if convert is not None else value
        if "execution_mode" not in given and data.get("USE_K8S_JOBS"):
            given["execution_mode"] = "k8s"
        settings = Settings(**given)
        derived = {
            field.name: field.metadata["default_from"](settings)
            for field in dataclasses.fields(Settings)
            if field.name not in given and field.metadata["default_from"] is not None
        }
        return dataclasses.replace(settings, **derived)


_SettingsSchema = _Rules.from_dict(
    {field.name.upper(): field.metadata["variable"] for field in dataclasses.fields(Settings)},
    name="_SettingsSchema",
)
