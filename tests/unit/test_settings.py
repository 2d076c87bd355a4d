from __future__ import annotations

import pytest

from webapp.settings import ConfigError, Settings


def test_defaults_are_the_embedded_default() -> None:
    settings = Settings.from_env({})
    assert settings.execution_mode == "legacy"
    assert settings.legacy_runner == "local"
    assert settings.currencies == ("USD", "EUR", "GBP")
    assert settings.legacy_max_concurrency == 4
    assert settings.sse_heartbeat_seconds == 15
    assert settings.ws_ping_seconds == 25
    assert settings.status_retention_seconds == 86400
    assert settings.log_tail_bytes == 64 * 1024
    assert settings.redis_url is None
    assert settings.admin_token is None


@pytest.mark.parametrize(
    ("environ", "mode"),
    [
        ({"USE_K8S_JOBS": "true"}, "k8s"),
        ({"USE_K8S_JOBS": "false"}, "legacy"),
        ({"EXECUTION_MODE": "dual"}, "dual"),
        ({"EXECUTION_MODE": "dual", "USE_K8S_JOBS": "true"}, "dual"),
        ({"EXECUTION_MODE": "k8s", "USE_K8S_JOBS": "1"}, "k8s"),
        ({"EXECUTION_MODE": "legacy", "USE_K8S_JOBS": "false"}, "legacy"),
        ({"EXECUTION_MODE": " ", "USE_K8S_JOBS": "true"}, "k8s"),
    ],
)
def test_execution_mode_and_the_seed_flag(environ: dict[str, str], mode: str) -> None:
    assert Settings.from_env(environ).execution_mode == mode


@pytest.mark.parametrize(
    ("environ", "named", "why"),
    [
        ({"EXECUTION_MODE": "kubernetes"}, "EXECUTION_MODE", "Must be one of"),
        ({"EXECUTION_MODE": "legacy", "USE_K8S_JOBS": "true"}, "EXECUTION_MODE", "conflicts with USE_K8S_JOBS"),
        ({"EXECUTION_MODE": "k8s", "USE_K8S_JOBS": "false"}, "EXECUTION_MODE", "conflicts"),
        ({"USE_K8S_JOBS": "maybe"}, "USE_K8S_JOBS", "boolean"),
        ({"DUAL_PRIMARY": "both"}, "DUAL_PRIMARY", "Must be one of"),
        ({"LEGACY_MAX_CONCURRENCY": "0"}, "LEGACY_MAX_CONCURRENCY", "greater than or equal to 1"),
        ({"LEGACY_MAX_CONCURRENCY": "four"}, "LEGACY_MAX_CONCURRENCY", "integer"),
        ({"LEGACY_PYTHON": "python3"}, "LEGACY_PYTHON", "absolute path"),
        ({"LEGACY_PYTHON": "/nonexistent/bin/python3"}, "LEGACY_PYTHON", "not an executable file"),
        ({"LEGACY_RUNNER": "http"}, "LEGACY_RUNNER_URL", "required when LEGACY_RUNNER=http"),
        ({"LEGACY_RUNNER": "ssh"}, "LEGACY_RUNNER", "Must be one of"),
        ({"LEGACY_RUNNER_URL": "not a url"}, "LEGACY_RUNNER_URL", "URL"),
        ({"SERVICE_URL": "jobpulse.ns.svc:8000"}, "SERVICE_URL", "URL"),
        ({"SERVICE_URL": "ftp://jobpulse.ns.svc"}, "SERVICE_URL", "URL"),
        ({"REDIS_URL": "http://localhost:6379"}, "REDIS_URL", "URL"),
        ({"ADMIN_TOKEN": "short"}, "ADMIN_TOKEN", "at least 16"),
        ({"CURRENCIES": "USD,euro"}, "CURRENCIES", "euro"),
        ({"CURRENCIES": ","}, "CURRENCIES", "at least one"),
        ({"ALLOWED_ORIGINS": "example.org"}, "ALLOWED_ORIGINS", "scheme://host"),
        ({"SSE_HEARTBEAT_SECONDS": "-1"}, "SSE_HEARTBEAT_SECONDS", "greater than or equal"),
        ({"WS_PING_SECONDS": "soon"}, "WS_PING_SECONDS", "number"),
        ({"RATE_LIMIT": "lots"}, "RATE_LIMIT", "rate limit"),
        ({"MAX_ACTIVE_JOBS": "-3"}, "MAX_ACTIVE_JOBS", "greater than or equal to 0"),
        ({"MAX_STREAMS": "10000"}, "MAX_STREAMS", "below WORKER_CONNECTIONS (10000)"),
        ({"MAX_STREAMS": "50", "WORKER_CONNECTIONS": "40"}, "MAX_STREAMS", "below WORKER_CONNECTIONS (40)"),
        ({"MAX_STREAMS_PER_CLIENT": "-1"}, "MAX_STREAMS_PER_CLIENT", "greater than or equal to 0"),
        ({"BODY_TIMEOUT_SECONDS": "0"}, "BODY_TIMEOUT_SECONDS", "greater than or equal to 0.1"),
        ({"TRUSTED_PROXY_HOPS": "many"}, "TRUSTED_PROXY_HOPS", "integer"),
        ({"K8S_NAMESPACE": "Not_Valid"}, "K8S_NAMESPACE", "DNS-1123"),
        ({"STATUS_RETENTION_SECONDS": "5"}, "STATUS_RETENTION_SECONDS", "greater than or equal to 60"),
        ({"LOG_TAIL_BYTES": "-1"}, "LOG_TAIL_BYTES", "greater than or equal to 0"),
        ({"LOG_TAIL_BYTES": "64k"}, "LOG_TAIL_BYTES", "integer"),
        ({"COMPLETION_WEBHOOK_URL": "https://hooks.example.org/x"}, "WEBHOOK_SECRET", "required"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL", "Must be one of"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT", "Must be one of"),
    ],
)
def test_a_bad_value_names_the_variable_and_why(environ: dict[str, str], named: str, why: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(environ)
    assert named in str(caught.value)
    assert why in str(caught.value)


def test_lists_and_paths_are_parsed(tmp_path: object) -> None:
    settings = Settings.from_env(
        {
            "CURRENCIES": "EUR, USD",
            "ALLOWED_ORIGINS": "https://donate.example.org, http://localhost:3000",
            "DATABASE_PATH": "/tmp/jobpulse-x/runs.db",
            "LEGACY_RUNNER": "http",
            "LEGACY_RUNNER_URL": "http://runner.internal:8080/",
            "SERVICE_URL": "http://jobpulse.donations.svc:8000/",
        }
    )
    assert settings.service_url == "http://jobpulse.donations.svc:8000"
    assert settings.currencies == ("EUR", "USD")
    assert settings.allowed_origins == ("https://donate.example.org", "http://localhost:3000")
    assert str(settings.database_path) == "/tmp/jobpulse-x/runs.db"
    assert settings.legacy_runner_url == "http://runner.internal:8080"


def test_primary_mode_follows_dual_primary() -> None:
    assert Settings.from_env({"EXECUTION_MODE": "dual", "DUAL_PRIMARY": "k8s"}).primary_mode == "k8s"
    assert Settings.from_env({"EXECUTION_MODE": "dual"}).primary_mode == "legacy"
    assert Settings.from_env({"EXECUTION_MODE": "k8s", "DUAL_PRIMARY": "legacy"}).primary_mode == "k8s"


@pytest.mark.parametrize(
    ("environ", "per_client", "max_streams"),
    [
        ({}, 10, 9000),
        ({"MAX_ACTIVE_JOBS": "20", "WORKER_CONNECTIONS": "30"}, 2, 27),
        ({"MAX_ACTIVE_JOBS": "5"}, 1, 9000),
        ({"MAX_ACTIVE_JOBS": "0"}, 0, 9000),
        ({"MAX_ACTIVE_JOBS_PER_CLIENT": "3", "MAX_STREAMS": "100"}, 3, 100),
    ],
)
def test_shares_and_stream_headroom_follow_the_limits_they_divide(
    environ: dict[str, str], per_client: int, max_streams: int
) -> None:
    settings = Settings.from_env(environ)
    assert (settings.max_active_jobs_per_client, settings.max_streams) == (per_client, max_streams)


ALICE = "alice-token-0123456789"
BOB = "bob-token-0123456789ab"


@pytest.mark.parametrize(
    ("environ", "operators"),
    [
        ({}, {}),
        ({"ADMIN_TOKEN": ALICE}, {"admin": ALICE}),
        ({"ADMIN_TOKENS": f"alice:{ALICE}"}, {"alice": ALICE}),
        ({"ADMIN_TOKENS": f" alice : {ALICE} , bob:{BOB}, "}, {"alice": ALICE, "bob": BOB}),
        ({"ADMIN_TOKENS": f"on-call_2:{ALICE}:with-colon"}, {"on-call_2": f"{ALICE}:with-colon"}),
        ({"ADMIN_TOKENS": f"alice:{ALICE}", "ADMIN_TOKEN": BOB}, {"alice": ALICE, "admin": BOB}),
        ({"ADMIN_TOKENS": f"{'a' * 32}:{ALICE}"}, {"a" * 32: ALICE}),
    ],
)
def test_operators_are_the_named_tokens_and_admin_token_as_admin(
    environ: dict[str, str], operators: dict[str, str]
) -> None:
    assert Settings.from_env(environ).operators == operators


@pytest.mark.parametrize(
    ("environ", "why"),
    [
        ({"ADMIN_TOKENS": ","}, "at least one name:token pair"),
        ({"ADMIN_TOKENS": ALICE}, "pair 1 is not name:token"),
        ({"ADMIN_TOKENS": f"alice:{ALICE},Bob:{BOB}"}, "pair 2: an operator name is 1-32 characters"),
        ({"ADMIN_TOKENS": f"{'a' * 33}:{ALICE}"}, "pair 1: an operator name"),
        ({"ADMIN_TOKENS": f":{ALICE}"}, "pair 1: an operator name"),
        ({"ADMIN_TOKENS": f"al ice:{ALICE}"}, "pair 1: an operator name"),
        ({"ADMIN_TOKENS": "alice:short-token"}, "alice's token is too short: use at least 16 characters"),
        ({"ADMIN_TOKENS": f"alice:{ALICE},alice:{BOB}"}, "each operator is named once: alice"),
        ({"ADMIN_TOKENS": f"alice:{ALICE},bob:{ALICE}"}, "each operator needs a token of its own"),
        ({"ADMIN_TOKENS": f"admin:{ALICE}", "ADMIN_TOKEN": BOB}, "names 'admin', the operator ADMIN_TOKEN stands for"),
        ({"ADMIN_TOKENS": f"alice:{ALICE}", "ADMIN_TOKEN": ALICE}, "one is ADMIN_TOKEN's"),
    ],
)
def test_bad_admin_tokens_name_the_variable_never_a_token(environ: dict[str, str], why: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(environ)
    assert "ADMIN_TOKENS" in str(caught.value)
    assert why in str(caught.value)
    assert ALICE not in str(caught.value)
    assert BOB not in str(caught.value)
    assert "short-token" not in str(caught.value)


def test_admin_alone_in_admin_tokens_is_fine_without_admin_token() -> None:
    assert Settings.from_env({"ADMIN_TOKENS": f"admin:{ALICE}"}).operators == {"admin": ALICE}
