"""Behind a real nginx: the Origin check and the per-client limits see what the proxy forwarded.

With ``TRUSTED_PROXY_HOPS=1`` the app believes nginx's ``X-Forwarded-*``
headers: the public host, port and scheme for the Origin check, and the real
client address for the rate limit (and every other per-client limit).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import websocket

from tests.live.clients import DONATION, launch, post_json_from, ws_collect
from tests.live.nginx import LOCATION, LOCATION_BEHIND_A_BALANCER, Nginx
from tests.live.server import LiveServer

pytestmark = pytest.mark.live

StartNginx = Callable[..., Nginx]


@pytest.fixture
def start_nginx(tmp_path: Path) -> Iterator[StartNginx]:
    started: list[Nginx] = []

    def start(upstream: LiveServer | Nginx, *, extra: str = "", location: str = LOCATION) -> Nginx:
        nginx = Nginx(upstream=upstream, folder=tmp_path / f"nginx-{len(started)}", extra=extra, location=location)
        started.append(nginx)
        nginx.start()
        return nginx

    yield start
    for nginx in started:
        nginx.stop()


def assert_the_origin_check_passes_through(proxy: Nginx, server: LiveServer) -> None:
    """A WebSocket from the proxy's own origin follows a donation to its end; another origin is still refused."""
    name = launch(server, "quick")
    ws = websocket.create_connection(f"ws://127.0.0.1:{proxy.port}/ws/task-status/{name}", origin=proxy.url, timeout=30)
    messages, code = ws_collect(ws)
    assert code == 1000
    assert messages[-1]["status"] == "Succeeded"

    with pytest.raises(websocket.WebSocketBadStatusException) as refused:  # the check still refuses others
        websocket.create_connection(
            f"ws://127.0.0.1:{proxy.port}/ws/task-status/{name}", origin="https://evil.example.com", timeout=30
        )
    assert refused.value.status_code == 403


def assert_each_donor_has_its_own_rate_limit(proxy: Nginx) -> None:
    """Two addresses each get their one donation; a forged X-Forwarded-For does not escape the limit."""
    first, _ = post_json_from(proxy.port, "/api/donations", DONATION, source="127.0.0.2")
    other, _ = post_json_from(proxy.port, "/api/donations", DONATION, source="127.0.0.3")
    assert (first, other) == (202, 202)
    # a donor cannot escape its limit by claiming another address: the proxy appends the real one
    again, body = post_json_from(
        proxy.port, "/api/donations", DONATION, source="127.0.0.2", headers={"X-Forwarded-For": "203.0.113.9"}
    )
    assert again == 429
    assert body["error"] == "rate_limited"


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param("", id="host-not-forwarded"),
        pytest.param("        proxy_set_header Host $host;\n", id="host-without-port"),
    ],
)
def test_a_websocket_through_nginx_passes_the_origin_check(
    make_live_server: Callable[..., LiveServer], start_nginx: StartNginx, extra: str
) -> None:
    server = make_live_server(TRUSTED_PROXY_HOPS="1")
    assert_the_origin_check_passes_through(start_nginx(server, extra=extra), server)


def test_behind_nginx_each_donor_has_its_own_rate_limit(
    make_live_server: Callable[..., LiveServer], start_nginx: StartNginx
) -> None:
    server = make_live_server(TRUSTED_PROXY_HOPS="1", RATE_LIMIT="1/minute")
    assert_each_donor_has_its_own_rate_limit(start_nginx(server))


def _two_hops(
    make_live_server: Callable[..., LiveServer], start_nginx: StartNginx, **settings: str
) -> tuple[LiveServer, Nginx]:
    """A load balancer (an nginx keeping the Host) in front of nginx configured as DEPLOYMENT.md says for that case."""
    server = make_live_server(TRUSTED_PROXY_HOPS="2", **settings)
    inner = start_nginx(server, location=LOCATION_BEHIND_A_BALANCER)
    return server, start_nginx(inner, extra="        proxy_set_header Host $http_host;\n")


def test_a_websocket_through_two_proxies_passes_the_origin_check(
    make_live_server: Callable[..., LiveServer], start_nginx: StartNginx
) -> None:
    server, balancer = _two_hops(make_live_server, start_nginx)
    assert_the_origin_check_passes_through(balancer, server)


def test_behind_two_proxies_each_donor_has_its_own_rate_limit(
    make_live_server: Callable[..., LiveServer], start_nginx: StartNginx
) -> None:
    _, balancer = _two_hops(make_live_server, start_nginx, RATE_LIMIT="1/minute")
    assert_each_donor_has_its_own_rate_limit(balancer)
