"""One typed settings object, read from the environment once and validated once.

Every knob jobpulse has is an environment variable (twelve-factor style, so the
same image runs on a laptop, under a legacy WSGI host and in Kubernetes). They
are parsed here with a marshmallow schema; a bad value stops start-up with the
variable's name and the reason, instead of failing later on a donor's request.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from limits import parse_many
from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    validate,
    validates,
    validates_schema,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent

EXECUTION_MODES = ("legacy", "k8s", "dual")
LEGACY_RUNNERS = ("local", "http")
_CURRENCY = re.compile(r"\A[A-Z]{3}\Z")


class ConfigError(Exception):
    """A setting is missing or invalid; the message names the variable."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything jobpulse can be told, after validation."""

    execution_mode: str = "legacy"
    """Who runs tasks: ``legacy`` (the legacy runner), ``k8s`` (Kubernetes Jobs) or ``dual`` (both)."""

    dual_primary: str = "legacy"
    """In dual mode, the run the donor follows; the other one is its shadow."""

    jobspecs_dir: Path = PROJECT_ROOT / "jobspecs"
    """Folder of ``*.yaml`` Job manifests; each file name is a spec name."""

    donation_jobspec: str = "donation-receipt"
    """The spec a donation starts."""

    k8s_namespace: str | None = None
    """Namespace for Jobs; unset means the in-cluster namespace, the kubeconfig context's, or ``default``."""

    kubeconfig: Path | None = None
    """Kubeconfig file when not running in a cluster; unset means the client's default (``~/.kube/config``)."""

    task_image: str | None = None
    """Overrides every container image of a rendered Job when set."""

    legacy_runner: str = "local"
    """``local`` runs tasks as subprocesses here; ``http`` calls an existing task-runner service."""

    legacy_runner_url: str | None = None
    """Base URL of the legacy task-runner service (``LEGACY_RUNNER=http``)."""

    legacy_max_concurrency: int = 4
    """How many local runs at once; the rest wait as ``Queued``."""

    legacy_python: Path | None = None
    """The interpreter the local runner uses for a command starting with ``python``; unset means this one."""

    redis_url: str | None = None
    """Redis for several instances (run store, idempotency, rate limits, status fan-out)."""

    database_path: Path = PROJECT_ROOT / "var" / "jobpulse.sqlite3"
    """SQLite run store when no Redis is configured; task output is kept beside it."""

    admin_token: str | None = None
    """Bearer token for the admin API; unset means the admin API answers 403."""

    allowed_origins: tuple[str, ...] = ()
    """Extra origins (``scheme://host[:port]``) allowed to open WebSockets besides the same host."""

    currencies: tuple[str, ...] = ("USD", "EUR", "GBP")
    """ISO 4217 codes a donation may use; the first is the page's default."""

    status_retention_seconds: int = 86400
    """How long finished runs stay in the run store."""

    sse_heartbeat_seconds: float = 15.0
    """Seconds between ``: ping`` comments on idle SSE streams."""

    ws_ping_seconds: float = 25.0
    """Seconds between WebSocket pings."""

    rate_limit: str = "10/minute"
    """Donations allowed per client address, in the ``limits`` notation (``10/minute;100/day``)."""

    max_active_jobs: int = 100
    """Launches are refused (429) while this many runs are unfinished; 0 means no limit."""

    max_active_jobs_per_client: int = 10
    """A client's donations are refused (429) while it has this many unfinished runs; 0 means no limit.

    Unset, a tenth of ``max_active_jobs`` (at least 1): two clients cannot take every slot.
    """

    max_streams_per_client: int = 50
    """Open SSE and WebSocket streams one client may hold (429, WebSocket close 1008); 0 means no limit."""

    max_streams: int = 9000
    """Open streams per process (503, WebSocket close 1013); unset, nine tenths of ``worker_connections``.

    The rest of the worker's connections stay free for probes, launches and polls.
    """

    worker_connections: int = 10000
    """gunicorn's ``worker_connections`` (``WORKER_CONNECTIONS``, read by ``gunicorn.conf.py`` too)."""

    body_timeout_seconds: float = 10.0
    """A request body must arrive whole within this many seconds, else 408 and the connection is closed."""

    trusted_proxy_hops: int = 0
    """Reverse proxies in front whose ``X-Forwarded-For``/``-Proto``/``-Host``/``-Port`` are believed; 0: none."""

    completion_webhook_url: str | None = None
    """URL that receives the status object of every finished run."""

    webhook_secret: str | None = None
    """Key of the HMAC-SHA256 signature sent with each webhook."""

    log_level: str = "INFO"
    """Python logging level name."""

    log_format: str = "json"
    """``json`` (one object per line) or ``text``."""

    @property
    def legacy_enabled(self) -> bool:
        return self.execution_mode in ("legacy", "dual")

    @property
    def k8s_enabled(self) -> bool:
        return self.execution_mode in ("k8s", "dual")

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


def _csv(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


class _SettingsSchema(Schema):
    """Environment variable names on the left, exactly as operators write them."""

    class Meta:
        unknown = RAISE

    EXECUTION_MODE = fields.String(validate=validate.OneOf(EXECUTION_MODES))
    USE_K8S_JOBS = fields.Boolean()
    DUAL_PRIMARY = fields.String(validate=validate.OneOf(("legacy", "k8s")))
    JOBSPECS_DIR = fields.String()
    DONATION_JOBSPEC = fields.String(validate=validate.Regexp(r"\A[A-Za-z0-9][A-Za-z0-9._-]*\Z"))
    K8S_NAMESPACE = fields.String(
        validate=validate.Regexp(r"\A[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z", error="must be a DNS-1123 label")
    )
    KUBECONFIG = fields.String()
    TASK_IMAGE = fields.String()
    LEGACY_RUNNER = fields.String(validate=validate.OneOf(LEGACY_RUNNERS))
    LEGACY_RUNNER_URL = fields.Url(require_tld=False, schemes={"http", "https"})
    LEGACY_MAX_CONCURRENCY = fields.Integer(validate=validate.Range(min=1, max=1000))
    LEGACY_PYTHON = fields.String()
    REDIS_URL = fields.Url(require_tld=False, schemes={"redis", "rediss", "unix"})
    DATABASE_PATH = fields.String()
    ADMIN_TOKEN = fields.String(validate=validate.Length(min=16, error="use at least 16 characters"))
    ALLOWED_ORIGINS = fields.String()
    CURRENCIES = fields.String()
    STATUS_RETENTION_SECONDS = fields.Integer(validate=validate.Range(min=60))
    SSE_HEARTBEAT_SECONDS = fields.Float(validate=validate.Range(min=0.05, max=3600))
    WS_PING_SECONDS = fields.Float(validate=validate.Range(min=0.05, max=3600))
    RATE_LIMIT = fields.String()
    MAX_ACTIVE_JOBS = fields.Integer(validate=validate.Range(min=0))
    MAX_ACTIVE_JOBS_PER_CLIENT = fields.Integer(validate=validate.Range(min=0))
    MAX_STREAMS_PER_CLIENT = fields.Integer(validate=validate.Range(min=0))
    MAX_STREAMS = fields.Integer(validate=validate.Range(min=1))
    WORKER_CONNECTIONS = fields.Integer(validate=validate.Range(min=2))
    BODY_TIMEOUT_SECONDS = fields.Float(validate=validate.Range(min=0.1, max=3600))
    TRUSTED_PROXY_HOPS = fields.Integer(validate=validate.Range(min=0, max=10))
    COMPLETION_WEBHOOK_URL = fields.Url(require_tld=False, schemes={"http", "https"})
    WEBHOOK_SECRET = fields.String(validate=validate.Length(min=16, error="use at least 16 characters"))
    LOG_LEVEL = fields.String(validate=validate.OneOf(("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")))
    LOG_FORMAT = fields.String(validate=validate.OneOf(("json", "text")))

    @validates("CURRENCIES")
    def _check_currencies(self, value: str, **_: Any) -> None:
        codes = _csv(value)
        if not codes:
            raise ValidationError("list at least one ISO 4217 code")
        bad = [code for code in codes if not _CURRENCY.fullmatch(code)]
        if bad:
            raise ValidationError(f"not ISO 4217 codes: {', '.join(bad)}")

    @validates("ALLOWED_ORIGINS")
    def _check_origins(self, value: str, **_: Any) -> None:
        bad = [o for o in _csv(value) if not re.fullmatch(r"https?://[^/\s]+", o)]
        if bad:
            raise ValidationError(f"origins are scheme://host[:port]: {', '.join(bad)}")

    @validates("LEGACY_PYTHON")
    def _check_legacy_python(self, value: str, **_: Any) -> None:
        path = Path(value).expanduser()
        if not path.is_absolute():
            raise ValidationError("give an absolute path to a Python interpreter")
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ValidationError(f"{value} is not an executable file")

    @validates("RATE_LIMIT")
    def _check_rate_limit(self, value: str, **_: Any) -> None:
        try:
            parse_many(value)
        except ValueError as error:
            raise ValidationError(f"not a rate limit such as 10/minute ({error})") from error

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
        connections = data.get("WORKER_CONNECTIONS", Settings.worker_connections)
        if data.get("MAX_STREAMS", 0) >= connections:
            raise ValidationError(
                f"must be below WORKER_CONNECTIONS ({connections}), leaving connections for probes and launches",
                "MAX_STREAMS",
            )

    @post_load
    def _to_settings(self, data: dict[str, Any], **_: Any) -> Settings:
        mode = data.get("EXECUTION_MODE") or ("k8s" if data.get("USE_K8S_JOBS") else "legacy")
        defaults = Settings()
        max_active = data.get("MAX_ACTIVE_JOBS", defaults.max_active_jobs)
        connections = data.get("WORKER_CONNECTIONS", defaults.worker_connections)
        return Settings(
            execution_mode=mode,
            dual_primary=data.get("DUAL_PRIMARY", defaults.dual_primary),
            jobspecs_dir=_path(data.get("JOBSPECS_DIR"), defaults.jobspecs_dir),
            donation_jobspec=data.get("DONATION_JOBSPEC", defaults.donation_jobspec),
            k8s_namespace=data.get("K8S_NAMESPACE"),
            kubeconfig=_path(data.get("KUBECONFIG"), None),
            task_image=data.get("TASK_IMAGE"),
            legacy_runner=data.get("LEGACY_RUNNER", defaults.legacy_runner),
            legacy_runner_url=(data.get("LEGACY_RUNNER_URL") or "").rstrip("/") or None,
            legacy_max_concurrency=data.get("LEGACY_MAX_CONCURRENCY", defaults.legacy_max_concurrency),
            # not resolved: a virtualenv's python is a symlink, and following it would leave the virtualenv
            legacy_python=Path(data["LEGACY_PYTHON"]).expanduser() if "LEGACY_PYTHON" in data else None,
            redis_url=data.get("REDIS_URL"),
            database_path=_path(data.get("DATABASE_PATH"), defaults.database_path),
            admin_token=data.get("ADMIN_TOKEN"),
            allowed_origins=_csv(data.get("ALLOWED_ORIGINS", "")),
            currencies=_csv(data["CURRENCIES"]) if "CURRENCIES" in data else defaults.currencies,
            status_retention_seconds=data.get("STATUS_RETENTION_SECONDS", defaults.status_retention_seconds),
            sse_heartbeat_seconds=data.get("SSE_HEARTBEAT_SECONDS", defaults.sse_heartbeat_seconds),
            ws_ping_seconds=data.get("WS_PING_SECONDS", defaults.ws_ping_seconds),
            rate_limit=data.get("RATE_LIMIT", defaults.rate_limit),
            max_active_jobs=max_active,
            max_active_jobs_per_client=data.get(
                "MAX_ACTIVE_JOBS_PER_CLIENT", max(1, max_active // 10) if max_active else 0
            ),
            max_streams_per_client=data.get("MAX_STREAMS_PER_CLIENT", defaults.max_streams_per_client),
            max_streams=data.get("MAX_STREAMS", connections * 9 // 10),
            worker_connections=connections,
            body_timeout_seconds=data.get("BODY_TIMEOUT_SECONDS", defaults.body_timeout_seconds),
            trusted_proxy_hops=data.get("TRUSTED_PROXY_HOPS", defaults.trusted_proxy_hops),
            completion_webhook_url=data.get("COMPLETION_WEBHOOK_URL"),
            webhook_secret=data.get("WEBHOOK_SECRET"),
            log_level=data.get("LOG_LEVEL", defaults.log_level),
            log_format=data.get("LOG_FORMAT", defaults.log_format),
        )


def _path(value: str | None, default: Path | None) -> Any:
    return Path(value).expanduser().resolve() if value else default
