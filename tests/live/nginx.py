"""A real nginx on a free loopback port in front of the live server or of another nginx, as docs/DEPLOYMENT.md says."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.helpers import answers_ok, stop_process, wait_for
from tests.live.server import LiveServer, free_port

# The location block of docs/DEPLOYMENT.md ("Behind nginx"), with the upstream filled in.
LOCATION = """
        proxy_pass http://jobpulse;
        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $connection_upgrade;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Forwarded-Host $host;
        proxy_set_header X-Forwarded-Port $server_port;
        proxy_read_timeout 1h;
"""

# The same behind a load balancer that sets X-Forwarded-Proto, -Host and -Port (docs/DEPLOYMENT.md): passed on.
LOCATION_BEHIND_A_BALANCER = (
    LOCATION.replace("$scheme;", "$http_x_forwarded_proto;")
    .replace("$host;", "$http_x_forwarded_host;")
    .replace("$server_port;", "$http_x_forwarded_port;")
)

CONFIG = """
daemon off;
master_process off;
pid {folder}/nginx.pid;
error_log {folder}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {folder}/access.log;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    upstream jobpulse {{
        server 127.0.0.1:{upstream};
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
{extra}{location}
        }}
    }}
}}
"""


class Nginx:
    """nginx as one foreground process with a generated configuration in ``folder``."""

    def __init__(
        self, *, upstream: LiveServer | Nginx, folder: Path, extra: str = "", location: str = LOCATION
    ) -> None:
        binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
        if binary is None:
            raise AssertionError("nginx is needed for the proxy tests: apt-get install -y nginx-light")
        self.binary = binary
        self.folder = folder
        self.port = free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.config = folder / "nginx.conf"
        self.config.write_text(
            CONFIG.format(folder=folder, upstream=upstream.port, port=self.port, location=location, extra=extra)
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [self.binary, "-p", str(self.folder), "-c", str(self.config), "-e", str(self.folder / "error.log")]
        with (self.folder / "stdout.log").open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._answers, timeout=10, what=f"nginx on {self.url} to answer")

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"nginx exited with {self.process.returncode}:\n{self.log()}")
        return answers_ok(self.port, "/healthz")

    def stop(self) -> None:
        stop_process(self.process)

    def log(self) -> str:
        path = self.folder / "error.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""
