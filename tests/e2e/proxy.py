"""A reverse proxy for tests that lets REST through but blocks both streaming transports.

It stands for the worst proxy a donor may sit behind: WebSocket upgrades are
refused and event streams answered ``502``, everything else is passed to the
upstream server one request per connection. It records what it refused, so a
test can prove the page really tried (and lost) each transport before polling.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

# hop-by-hop headers (RFC 9110 7.6.1) and what we recompute
_NOT_FORWARDED = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
}
_SET_BY_US = {"server", "date"}  # send_response writes its own


class TransportBlockingProxy:
    """Listens on a free loopback port; ``refused`` lists ``(kind, path)`` of each blocked request."""

    def __init__(self, upstream: str) -> None:
        split = urlsplit(upstream)
        self.upstream_host = split.hostname or "127.0.0.1"
        self.upstream_port = split.port or 80
        self.refused: list[tuple[str, str]] = []
        self.passed: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="e2e-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def refused_kinds(self) -> set[str]:
        with self._lock:
            return {kind for kind, _ in self.refused}

    def _note_refused(self, kind: str, path: str) -> None:
        with self._lock:
            self.refused.append((kind, path))

    def _note_passed(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.passed.append((method, path, status))

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection: no keep-alive to manage

            def do_GET(self) -> None:
                self._relay()

            def do_HEAD(self) -> None:
                self._relay()

            def do_POST(self) -> None:
                self._relay()

            def do_PUT(self) -> None:
                self._relay()

            def do_DELETE(self) -> None:
                self._relay()

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output quiet; what matters is recorded on the proxy

            def _refuse(self, kind: str) -> None:
                proxy._note_refused(kind, self.path)
                body = b"this proxy does not carry " + kind.encode() + b"\n"
                self.send_response(502)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _relay(self) -> None:
                if self.headers.get("Upgrade", "").lower() == "websocket":
                    return self._refuse("websocket")
                if "text/event-stream" in self.headers.get("Accept", "") or self.path.startswith("/sse/"):
                    return self._refuse("event-stream")
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _NOT_FORWARDED}
                upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=30)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    content = answer.read()
                    proxy._note_passed(self.command, self.path, answer.status)
                    self.send_response(answer.status, answer.reason)
                    for name, value in answer.getheaders():
                        if name.lower() not in _NOT_FORWARDED | _SET_BY_US:
                            self.send_header(name, value)
                    self.send_header("Content-Length", str(len(content)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(content)
                except OSError:
                    self.send_error(502, "upstream unreachable")
                finally:
                    upstream.close()
                return None

        return Handler
