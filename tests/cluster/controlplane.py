"""A real Kubernetes control plane for the tests, without Docker.

etcd + kube-apiserver + kube-controller-manager + kube-scheduler, built from
pinned Go modules by ``tests/cluster/build.sh``, and kwok simulating one Node
and the life of its Pods (see ``kwok-stages.yaml`` for what a test controls:
label ``jobpulse-test/outcome: fail``, annotation ``jobpulse-test/run-for``).

Library use (e.g. a pytest session fixture)::

    from tests.cluster.controlplane import ControlPlane, find_bin_dir
    with ControlPlane(bin_dir=find_bin_dir()) as cp:
        cp.create_namespace("t1")
        ... kubernetes.config.load_kube_config(cp.kubeconfig_path) ...

Command line (detached; the processes outlive the command)::

    python tests/cluster/controlplane.py up --dir .cluster     # or: -m tests.cluster.controlplane
    export KUBECONFIG=$PWD/.cluster/kubeconfig
    python tests/cluster/controlplane.py status --dir .cluster
    python tests/cluster/controlplane.py down --dir .cluster

Only the standard library and ``cryptography`` are needed here; the
``kubernetes`` client is imported lazily by :meth:`ControlPlane.api_client`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import datetime as _dt
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
STAGES_FILE = os.path.join(HERE, "kwok-stages.yaml")
BUILD_SCRIPT = os.path.join(HERE, "build.sh")

#: binaries the control plane needs, in start order
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
NODE_NAME = "kwok-node-0"
SERVICE_CIDR = "10.96.0.0/12"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"

__all__ = [
    "BINARIES",
    "ApiError",
    "ControlPlane",
    "ControlPlaneError",
    "build_bin_dir",
    "cache_bin_dir",
    "find_bin_dir",
    "main",
]


class ControlPlaneError(RuntimeError):
    """The control plane could not be started, reached or stopped."""


class ApiError(ControlPlaneError):
    """A non-2xx answer of the API server (or etcd)."""

    def __init__(self, status: int, body: str, method: str = "", url: str = ""):
        super().__init__(f"{method} {url} -> HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


# --------------------------------------------------------------------------
# Finding the binaries
# --------------------------------------------------------------------------


def _has_all(d: str | None) -> bool:
    return bool(d) and all(os.access(os.path.join(d, b), os.X_OK) for b in BINARIES)


def _go_mod_version(module_dir: str, module: str) -> str:
    with open(os.path.join(HERE, "go", module_dir, "go.mod")) as f:
        for line in f:
            parts = line.split()
            if parts[:1] == ["require"] and len(parts) >= 3 and parts[1] == module:
                return parts[2]
            if len(parts) >= 2 and parts[0] == module and parts[1].startswith("v"):
                return parts[1]
    raise ControlPlaneError(f"no version of {module} in go/{module_dir}/go.mod")


def cache_bin_dir() -> str:
    """The bin dir ``build.sh`` builds into (same key as the script)."""
    key = "k8s-{}_etcd-{}_kwok-{}".format(
        _go_mod_version("kubernetes", "k8s.io/kubernetes"),
        _go_mod_version("etcd", "go.etcd.io/etcd/server/v3"),
        _go_mod_version("kwok", "sigs.k8s.io/kwok"),
    )
    root = os.environ.get("JOBPULSE_CLUSTER_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "jobpulse", "cluster"
    )
    return os.path.join(root, key, "bin")


def find_bin_dir() -> str | None:
    """Where the control-plane binaries are, or None.

    In order: ``$KUBEBUILDER_ASSETS`` if it holds all of :data:`BINARIES`;
    the build cache of ``build.sh``; a directory on ``$PATH`` holding them all.
    """
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if _has_all(assets):
        return os.path.abspath(assets)  # type: ignore[arg-type]
    try:
        cached = cache_bin_dir()
    except (OSError, ControlPlaneError):
        cached = None
    if _has_all(cached):
        return cached
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if d and _has_all(d):
            return os.path.abspath(d)
    return None


def build_bin_dir() -> str:
    """Run ``build.sh`` (slow when cold, instant when warm); return its bin dir."""
    out = subprocess.run(["bash", BUILD_SCRIPT], stdout=subprocess.PIPE, text=True, check=True).stdout
    return out.strip().splitlines()[-1]


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (all held open while picking)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False


def _pid_cmd(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0", 1)[0].decode(errors="replace")
    except OSError:
        return ""


_NO_PROXY_OPENER_HANDLERS = [urllib.request.ProxyHandler({})]

_PR_SET_PDEATHSIG = 1
try:
    _libc = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover
    _libc = None


def die_with_parent() -> None:  # runs in the child between fork and exec
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


# --------------------------------------------------------------------------
# PKI
# --------------------------------------------------------------------------


def _make_pki(pki: str) -> None:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    os.makedirs(pki, exist_ok=True)
    now = _dt.datetime.now(_dt.UTC) - _dt.timedelta(minutes=5)
    later = now + _dt.timedelta(days=365)

    def write_key(name: str, key: Any) -> None:
        path = os.path.join(pki, name)
        with open(path, "wb") as f:
            f.write(
                key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
        os.chmod(path, 0o600)

    def write_cert(name: str, cert: Any) -> None:
        with open(os.path.join(pki, name), "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))

    def subject(cn: str, org: str | None = None) -> Any:
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if org:
            attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        return x509.Name(attrs)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = subject("jobpulse-test-ca")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(later)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    write_key("ca.key", ca_key)
    write_cert("ca.crt", ca_cert)

    def leaf(name: str, cn: str, org: str | None, server: bool) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        b = (
            x509.CertificateBuilder()
            .subject_name(subject(cn, org))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(later)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_encipherment=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    content_commitment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH] if server else [ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if server:
            b = b.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        x509.IPAddress(ipaddress.ip_address("10.96.0.1")),  # first IP of SERVICE_CIDR
                        x509.DNSName("localhost"),
                        x509.DNSName("kubernetes"),
                        x509.DNSName("kubernetes.default"),
                        x509.DNSName("kubernetes.default.svc"),
                        x509.DNSName("kubernetes.default.svc.cluster.local"),
                    ]
                ),
                critical=False,
            )
        write_key(name + ".key", key)
        write_cert(name + ".crt", b.sign(ca_key, hashes.SHA256()))

    leaf("apiserver", "kube-apiserver", None, server=True)
    leaf("admin", "jobpulse-admin", "system:masters", server=False)
    leaf("kube-controller-manager", "system:kube-controller-manager", None, server=False)
    leaf("kube-scheduler", "system:kube-scheduler", None, server=False)
    leaf("kwok", "kwok-controller", "system:masters", server=False)
    leaf("kwok-serving", "kwok-kubelet", None, server=True)
    leaf("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters", server=False)

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    write_key("sa.key", sa_key)
    with open(os.path.join(pki, "sa.pub"), "wb") as f:
        f.write(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


def _b64file(path: str) -> str:
    with open(path, "rb") as f:
        return base64.b64encode(f.read()).decode()


def _kubeconfig(
    server: str,
    ca_path: str,
    user: str,
    *,
    cert: str | None = None,
    key: str | None = None,
    token: str | None = None,
    namespace: str | None = None,
) -> dict[str, Any]:
    u: dict[str, Any] = {}
    if cert and key:
        u["client-certificate-data"] = _b64file(cert)
        u["client-key-data"] = _b64file(key)
    if token:
        u["token"] = token
    ctx: dict[str, Any] = {"cluster": "jobpulse-test", "user": user}
    if namespace:
        ctx["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "jobpulse-test", "cluster": {"server": server, "certificate-authority-data": _b64file(ca_path)}}
        ],
        "users": [{"name": user, "user": u}],
        "contexts": [{"name": "jobpulse-test", "context": ctx}],
        "current-context": "jobpulse-test",
        "preferences": {},
    }


def _write_json(path: str, obj: Any, mode: int = 0o600) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


# --------------------------------------------------------------------------
# The control plane
# --------------------------------------------------------------------------


class ControlPlane:
    """etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok.

    ``bin_dir``: where the binaries are (default: :func:`find_bin_dir`).
    ``workdir``: where certificates, data, kubeconfigs and logs go (default: a
    new temp dir). :meth:`stop` removes it if this object created it (it did
    not exist or was empty), else only what this object put there; pass
    ``keep_workdir=True`` to keep it (e.g. to read the logs afterwards).
    ``die_with_parent``: the processes get SIGKILL when the thread that
    started them ends (Linux PR_SET_PDEATHSIG), so a killed test run leaves no
    orphans; the CLI ``up`` turns this off.
    ``extra_args``: more flags per process, e.g.
    ``{"kube-apiserver": ["--watch-cache=false"]}``.
    """

    STATE_FILE = "state.json"
    _OWNED = (
        "pki",
        "etcd-data",
        "logs",
        "run",
        "kwok-home",
        "kwok.yaml",
        "kubeconfig",
        "kubeconfigs",
        "pids",
        STATE_FILE,
    )

    def __init__(
        self,
        *,
        bin_dir: str | None = None,
        workdir: str | None = None,
        keep_workdir: bool = False,
        die_with_parent: bool = True,
        start_timeout: float = 180.0,
        extra_args: dict[str, list[str]] | None = None,
    ):
        self.bin_dir = os.path.abspath(bin_dir) if bin_dir else find_bin_dir()
        if not self.bin_dir or not _has_all(self.bin_dir):
            raise ControlPlaneError(
                f"control-plane binaries {BINARIES} not found (bin_dir={bin_dir!r}); "
                f"build them with: bash {BUILD_SCRIPT}"
            )
        if workdir is None:
            self.workdir = tempfile.mkdtemp(prefix="jobpulse-cluster-")
            self._owns_workdir = True
        else:
            self.workdir = os.path.abspath(workdir)
            self._owns_workdir = not os.path.exists(self.workdir) or not os.listdir(self.workdir)
            os.makedirs(self.workdir, exist_ok=True)
        self.keep_workdir = keep_workdir
        self.die_with_parent = die_with_parent
        self.start_timeout = start_timeout
        self.extra_args = {k: list(v) for k, v in (extra_args or {}).items()}
        unknown = set(self.extra_args) - set(BINARIES)
        if unknown:
            raise ValueError(f"extra_args for unknown processes {sorted(unknown)}; known: {BINARIES}")
        self.ports: dict[str, int] = {}
        self.procs: dict[str, dict[str, Any]] = {}  # name -> {pid, args, env, log}
        self._popen: dict[str, subprocess.Popen] = {}
        self._lock = threading.RLock()
        self._ssl: ssl.SSLContext | None = None
        self._started = False

    # ----------------------------------------------------------- paths
    @property
    def pki_dir(self) -> str:
        return os.path.join(self.workdir, "pki")

    @property
    def ca_path(self) -> str:
        """The CA certificate (PEM) that signed the API server's serving cert."""
        return os.path.join(self.pki_dir, "ca.crt")

    @property
    def kubeconfig_path(self) -> str:
        """Admin (system:masters) kubeconfig, client certificate embedded."""
        return os.path.join(self.workdir, "kubeconfig")

    @property
    def server_url(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['etcd']}"

    @property
    def log_dir(self) -> str:
        return os.path.join(self.workdir, "logs")

    @property
    def log_paths(self) -> dict[str, str]:
        """``{process name: log file}`` for every process of the plane."""
        return {n: os.path.join(self.log_dir, n + ".log") for n in BINARIES}

    def tail_logs(self, lines: int = 30, names: list[str] | None = None) -> str:
        """The last ``lines`` lines of each process log, for a failing test's report."""
        out = []
        for name, path in self.log_paths.items():
            if names and name not in names:
                continue
            try:
                with open(path, "rb") as f:
                    f.seek(0, os.SEEK_END)
                    f.seek(max(0, f.tell() - 200 * lines))
                    text = f.read().decode(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
            out.append(f"----- {name} ({path}) -----\n" + "\n".join(text))
        return "\n".join(out)

    # ----------------------------------------------------------- lifecycle
    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> ControlPlane:
        """Start everything, each step waited on; on failure stop and raise."""
        with self._lock:
            if self._started:
                return self
            t0 = time.monotonic()
            try:
                self._start()
            except BaseException as e:
                tail = self.tail_logs(40)
                try:
                    self._kill_all()
                finally:
                    if not self.keep_workdir:
                        self._remove_workdir()
                if isinstance(e, ControlPlaneError):
                    raise ControlPlaneError(f"{e}\n{tail}") from e
                raise
            self._started = True
            self.startup_seconds = round(time.monotonic() - t0, 1)
            return self

    def _start(self) -> None:
        w = self.workdir

        def spawn(name: str, args: list[str], env: dict[str, str] | None = None) -> None:
            self._spawn(name, args + list(self.extra_args.get(name, ())), env)

        for d in ("logs", "run", "kwok-home", "kubeconfigs"):
            os.makedirs(os.path.join(w, d), exist_ok=True)
        _make_pki(self.pki_dir)
        pki = self.pki_dir
        names = ("etcd", "etcd_peer", "apiserver", "kcm", "scheduler", "kwok")
        self.ports.update(zip(names, _free_ports(len(names)), strict=True))

        # kubeconfigs: admin (the public one) and one per component
        _write_json(
            self.kubeconfig_path,
            _kubeconfig(
                self.server_url,
                self.ca_path,
                "admin",
                cert=os.path.join(pki, "admin.crt"),
                key=os.path.join(pki, "admin.key"),
            ),
        )
        kc = {}
        for comp, cert in (
            ("kube-controller-manager", "kube-controller-manager"),
            ("kube-scheduler", "kube-scheduler"),
            ("kwok", "kwok"),
        ):
            kc[comp] = os.path.join(w, "kubeconfigs", comp + ".kubeconfig")
            _write_json(
                kc[comp],
                _kubeconfig(
                    self.server_url,
                    self.ca_path,
                    comp,
                    cert=os.path.join(pki, cert + ".crt"),
                    key=os.path.join(pki, cert + ".key"),
                ),
            )
        # kwok: the Stages, and the fake container log every pod shows
        # (read by kwok at each request: set_pod_log() changes it)
        self.set_pod_log(["jobpulse-test: fake container output"])
        with open(STAGES_FILE) as f:
            kwok_conf = f.read()
        kwok_conf += (
            "\n---\n"
            + json.dumps(
                {
                    "apiVersion": "kwok.x-k8s.io/v1alpha1",
                    "kind": "ClusterLogs",
                    "metadata": {"name": "jobpulse-test-logs"},
                    "spec": {"selector": {}, "logs": [{"logsFile": self.pod_log_file, "follow": False}]},
                },
                indent=2,
            )
            + "\n"
        )
        with open(os.path.join(w, "kwok.yaml"), "w") as f:
            f.write(kwok_conf)
        deadline = time.monotonic() + self.start_timeout
        b = self.bin_dir

        # 1. etcd
        p, pp = self.ports["etcd"], self.ports["etcd_peer"]
        spawn(
            "etcd",
            [
                os.path.join(b, "etcd"),
                "--name=jobpulse",
                f"--data-dir={os.path.join(w, 'etcd-data')}",
                f"--listen-client-urls=http://127.0.0.1:{p}",
                f"--advertise-client-urls=http://127.0.0.1:{p}",
                f"--listen-peer-urls=http://127.0.0.1:{pp}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{pp}",
                f"--initial-cluster=jobpulse=http://127.0.0.1:{pp}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync",
                "--quota-backend-bytes=2147483648",
                "--log-level=warn",
            ],
        )
        self._wait(
            "etcd /health",
            lambda: json.loads(self._http("GET", self.etcd_url + "/health", tls=False)).get("health") == "true",
            deadline,
            ["etcd"],
        )

        # 2. kube-apiserver
        spawn("kube-apiserver", self._apiserver_args())
        self._wait_apiserver(deadline)

        # 3. kube-controller-manager, 4. kube-scheduler
        spawn(
            "kube-controller-manager",
            [
                os.path.join(b, "kube-controller-manager"),
                f"--kubeconfig={kc['kube-controller-manager']}",
                f"--authentication-kubeconfig={kc['kube-controller-manager']}",
                f"--authorization-kubeconfig={kc['kube-controller-manager']}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports['kcm']}",
                f"--cert-dir={os.path.join(w, 'run', 'kcm')}",
                "--leader-elect=false",
                "--controllers=*",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={os.path.join(pki, 'sa.key')}",
                f"--root-ca-file={self.ca_path}",
                f"--cluster-signing-cert-file={self.ca_path}",
                f"--cluster-signing-key-file={os.path.join(pki, 'ca.key')}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
            ],
        )
        spawn(
            "kube-scheduler",
            [
                os.path.join(b, "kube-scheduler"),
                f"--kubeconfig={kc['kube-scheduler']}",
                f"--authentication-kubeconfig={kc['kube-scheduler']}",
                f"--authorization-kubeconfig={kc['kube-scheduler']}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports['scheduler']}",
                f"--cert-dir={os.path.join(w, 'run', 'scheduler')}",
                "--leader-elect=false",
            ],
        )
        for name, port in (("kube-controller-manager", "kcm"), ("kube-scheduler", "scheduler")):
            url = f"https://127.0.0.1:{self.ports[port]}/healthz"
            self._wait(f"{name} /healthz", lambda u=url: self._http("GET", u, verify=False) == "ok", deadline, [name])

        # 5. kwok
        spawn(
            "kwok",
            [
                os.path.join(b, "kwok"),
                f"--kubeconfig={kc['kwok']}",
                f"--config={os.path.join(w, 'kwok.yaml')}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--node-lease-duration-seconds=40",
                # the fake kubelet endpoint (pod logs) is the Node's InternalIP:port
                "--node-ip=127.0.0.1",
                f"--node-port={self.ports['kwok']}",
                f"--server-address=127.0.0.1:{self.ports['kwok']}",
                f"--tls-cert-file={os.path.join(pki, 'kwok-serving.crt')}",
                f"--tls-private-key-file={os.path.join(pki, 'kwok-serving.key')}",
            ],
            env={"HOME": os.path.join(w, "kwok-home")},
        )
        kwok_health = f"https://127.0.0.1:{self.ports['kwok']}/healthz"
        self._wait(
            "kwok /healthz", lambda: self._http("GET", kwok_health, verify=False) is not None, deadline, ["kwok"]
        )
        self._write_state()

        # 6. the Node, Ready and untainted; service accounts work
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": NODE_NAME,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "kubernetes.io/arch": "amd64",
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/hostname": NODE_NAME,
                    "type": "kwok",
                },
            },
            "spec": {},
        }
        self.request("POST", "/api/v1/nodes", node, ok_conflict=True)
        self._wait("node Ready and untainted", self._node_ready, deadline, list(BINARIES))
        self._wait(
            "serviceaccount default/default",
            lambda: (
                self.request("GET", "/api/v1/namespaces/default/serviceaccounts/default", missing_ok=True) is not None
            ),
            deadline,
            list(BINARIES),
        )

    def _apiserver_args(self) -> list[str]:
        pki, w = self.pki_dir, self.workdir
        return [
            os.path.join(self.bin_dir, "kube-apiserver"),
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports['apiserver']}",
            "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none",
            f"--cert-dir={os.path.join(w, 'run', 'apiserver')}",
            f"--tls-cert-file={os.path.join(pki, 'apiserver.crt')}",
            f"--tls-private-key-file={os.path.join(pki, 'apiserver.key')}",
            f"--client-ca-file={self.ca_path}",
            f"--kubelet-client-certificate={os.path.join(pki, 'apiserver-kubelet-client.crt')}",
            f"--kubelet-client-key={os.path.join(pki, 'apiserver-kubelet-client.key')}",
            "--kubelet-preferred-address-types=InternalIP",
            f"--service-account-issuer={SA_ISSUER}",
            f"--api-audiences={SA_ISSUER}",
            f"--service-account-key-file={os.path.join(pki, 'sa.pub')}",
            f"--service-account-signing-key-file={os.path.join(pki, 'sa.key')}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            "--profiling=true",  # /debug/pprof, for the admin only: benchmarks profile the API server's share
        ]

    def _node_ready(self) -> bool:
        n = self.request("GET", f"/api/v1/nodes/{NODE_NAME}", missing_ok=True)
        if not n:
            return False
        conds = {c["type"]: c["status"] for c in n.get("status", {}).get("conditions", [])}
        return conds.get("Ready") == "True" and not n.get("spec", {}).get("taints")

    def _wait_apiserver(self, deadline: float) -> None:
        self._wait(
            "kube-apiserver /readyz",
            lambda: self.request("GET", "/readyz", raw=True).strip() == "ok",
            deadline,
            ["kube-apiserver"],
        )

    def stop(self) -> None:
        """Kill the processes (reverse order, by process group); remove the workdir."""
        with self._lock:
            self._kill_all()
            if not self.keep_workdir:
                self._remove_workdir()
            self._started = False

    # ----------------------------------------------------------- helpers for tests
    @property
    def pod_log_file(self) -> str:
        """The file (CRI log format) kwok serves as every container's log."""
        return os.path.join(self.workdir, "run", "pod.log")

    def set_pod_log(self, lines: list[str], stream: str = "stdout") -> None:
        """Set what ``kubectl logs`` / read_namespaced_pod_log shows for any pod."""
        ts = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        tmp = self.pod_log_file + ".tmp"
        with open(tmp, "w") as f:
            for line in lines:
                f.write(f"{ts} {stream} F {line}\n")
        os.replace(tmp, self.pod_log_file)

    def restart_apiserver(self, *, grace: float = 1.0, timeout: float = 90.0) -> None:
        """Stop kube-apiserver and start it again on the same port; wait for /readyz and for Jobs to run again.

        It gets SIGTERM, then SIGKILL after ``grace`` seconds (a graceful
        kube-apiserver shutdown waits up to 60 s for open watches): clients
        see their connections, watches included, cut.
        """
        with self._lock:
            info = self.procs["kube-apiserver"]
            self._kill("kube-apiserver", grace=grace)
            self._spawn("kube-apiserver", info["args"])
            self._write_state()
            self._wait_apiserver(time.monotonic() + timeout)
            self._wait_until_jobs_run(time.monotonic() + timeout)

    @contextlib.contextmanager
    def apiserver_stopped(self, *, grace: float = 1.0, timeout: float = 90.0) -> Iterator[None]:
        """kube-apiserver stopped for the block (its port refuses connections), then started again on the same port.

        Stopped as :meth:`restart_apiserver` stops it; after the block it waits for /readyz and for Jobs to
        run again (:meth:`_wait_until_jobs_run`).
        """
        with self._lock:
            info = self.procs["kube-apiserver"]
            self._kill("kube-apiserver", grace=grace)
        try:
            yield
        finally:
            with self._lock:
                self._spawn("kube-apiserver", info["args"])
                self._write_state()
                self._wait_apiserver(time.monotonic() + timeout)
                self._wait_until_jobs_run(time.monotonic() + timeout)

    def _wait_until_jobs_run(self, deadline: float) -> None:
        """After the API server came back: wait until a probe Job runs to its end (the lock held).

        The controllers, the scheduler and kwok retry a lost API server with client-go's backoff, which
        doubles up to 30 s (jitter up to twice that) and resets only after two quiet minutes: after a few
        restarts in a row they come back up to a minute late, and until its pod informer has caught up
        the Job controller syncs no Job at all ("read version ... is not as new as written version").
        A Job that succeeds has been through all of them; the next test's Jobs then run as ever.
        """
        name = f"probe-{secrets.token_hex(4)}"
        container = {"name": "probe", "image": "probe:latest", "command": ["true"]}
        job = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name},
            "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [container]}}},
        }
        path = f"/apis/batch/v1/namespaces/default/jobs/{name}"
        self.request("POST", "/apis/batch/v1/namespaces/default/jobs", job)
        try:
            self._wait(
                "a probe Job to succeed after the API server came back",
                lambda: ((self.request("GET", path).get("status") or {}).get("succeeded") or 0) >= 1,
                deadline,
                list(BINARIES),
            )
        finally:
            self.request("DELETE", path + "?propagationPolicy=Background", missing_ok=True)

    def profile_apiserver(self, seconds: int) -> bytes:
        """A CPU profile of the API server over the next ``seconds`` (Go's pprof format, gzipped), read as admin."""
        url = f"{self.server_url}/debug/pprof/profile?seconds={int(seconds)}"
        opener = urllib.request.build_opener(
            *_NO_PROXY_OPENER_HANDLERS, urllib.request.HTTPSHandler(context=self._ssl_context())
        )
        with opener.open(url, timeout=seconds + 30) as response:
            return bytes(response.read())

    def apiserver_metrics(self) -> str:
        """The API server's ``/metrics`` (Prometheus text), read as admin."""
        return self.request("GET", "/metrics", raw=True)

    def etcd_revision(self) -> int:
        """etcd's current revision (what resourceVersions are made of)."""
        r = json.loads(
            self._http(
                "POST",
                self.etcd_url + "/v3/kv/range",
                tls=False,
                body={"key": base64.b64encode(b"/").decode(), "limit": 1, "keys_only": True},
            )
        )
        return int(r["header"]["revision"])

    def compact_etcd(self, *, restart_apiserver: bool = True) -> int:
        """Compact etcd at its current revision (physically); return that revision.

        Then a watch (or list) from an older resourceVersion gets 410 Gone
        (``Expired`` / "too old resource version"). The API server's watch
        cache would still serve recent old resourceVersions, so by default the
        API server is restarted too (:meth:`restart_apiserver`: open watches
        are cut and must be re-established, from a now-compacted version).
        With ``restart_apiserver=False`` only etcd is compacted: 410 then
        reaches only requests that bypass the watch cache (or every request
        if the plane runs with ``--watch-cache=false``).
        """
        rev = self.etcd_revision()
        self._http(
            "POST", self.etcd_url + "/v3/kv/compaction", tls=False, body={"revision": str(rev), "physical": True}
        )
        if restart_apiserver:
            self.restart_apiserver()
        return rev

    def create_namespace(self, name: str, *, labels: dict[str, str] | None = None, timeout: float = 60.0) -> None:
        """Create namespace ``name`` (fine if it exists); wait for its default ServiceAccount."""
        ns: dict[str, Any] = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        if labels:
            ns["metadata"]["labels"] = dict(labels)
        self.request("POST", "/api/v1/namespaces", ns, ok_conflict=True)
        self._wait(
            f"serviceaccount {name}/default",
            lambda: (
                self.request("GET", f"/api/v1/namespaces/{name}/serviceaccounts/default", missing_ok=True) is not None
            ),
            time.monotonic() + timeout,
            [],
        )

    def delete_namespace(self, name: str) -> None:
        """Delete namespace ``name`` (background; fine if it is gone)."""
        self.request("DELETE", f"/api/v1/namespaces/{name}", missing_ok=True)

    def service_account_token(
        self, namespace: str, name: str, *, create: bool = True, expiration_seconds: int = 3600
    ) -> str:
        """A token for ServiceAccount ``namespace/name`` via the TokenRequest API."""
        if create:
            self.request(
                "POST",
                f"/api/v1/namespaces/{namespace}/serviceaccounts",
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}},
                ok_conflict=True,
            )
        tr = self.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": expiration_seconds},
            },
        )
        return tr["status"]["token"]

    def service_account_kubeconfig(self, namespace: str, name: str, path: str | None = None, **token_kw: Any) -> str:
        """Write a kubeconfig authenticating as ServiceAccount ``namespace/name``; return its path."""
        token = self.service_account_token(namespace, name, **token_kw)
        path = path or os.path.join(self.workdir, "kubeconfigs", f"sa-{namespace}-{name}.kubeconfig")
        _write_json(
            path, _kubeconfig(self.server_url, self.ca_path, f"{namespace}-{name}", token=token, namespace=namespace)
        )
        return path

    def api_client(self, kubeconfig: str | None = None) -> Any:
        """A ``kubernetes.client.ApiClient`` for the admin (or the given) kubeconfig."""
        from kubernetes import config as k8s_config

        return k8s_config.new_client_from_config(config_file=kubeconfig or self.kubeconfig_path)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bool = False,
        missing_ok: bool = False,
        ok_conflict: bool = False,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> Any:
        """One call to the API server as admin. JSON in and out (``raw``: text out).

        ``missing_ok``: 404 gives None; ``ok_conflict``: 409 gives None.
        Other non-2xx answers raise :class:`ApiError`.
        """
        try:
            text = self._http(method, self.server_url + path, body=body, timeout=timeout, content_type=content_type)
        except ApiError as e:
            if (missing_ok and e.status == 404) or (ok_conflict and e.status == 409):
                return None
            raise
        return text if raw else (json.loads(text) if text else None)

    def healthy(self) -> bool:
        """All processes alive and the API server ready."""
        try:
            return (
                all(_pid_alive(p["pid"]) for p in self.procs.values())
                and len(self.procs) == len(BINARIES)
                and self.request("GET", "/readyz", raw=True, timeout=5).strip() == "ok"
            )
        except (OSError, ControlPlaneError, ValueError):
            return False

    # ----------------------------------------------------------- internals
    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            ctx = ssl.create_default_context(cafile=self.ca_path)
            ctx.load_cert_chain(os.path.join(self.pki_dir, "admin.crt"), os.path.join(self.pki_dir, "admin.key"))
            self._ssl = ctx
        return self._ssl

    def _http(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        tls: bool = True,
        verify: bool = True,
        timeout: float = 10.0,
        content_type: str = "application/json",
    ) -> str:
        data = None
        headers = {"Accept": "application/json, */*"}
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            data = data.encode() if isinstance(data, str) else data
            headers["Content-Type"] = content_type
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        handlers: list[Any] = list(_NO_PROXY_OPENER_HANDLERS)
        if tls:
            ctx = self._ssl_context() if verify else ssl._create_unverified_context()
            handlers.append(urllib.request.HTTPSHandler(context=ctx))
        opener = urllib.request.build_opener(*handlers)
        try:
            with opener.open(req, timeout=timeout) as resp:
                return resp.read().decode()
        except urllib.error.HTTPError as e:
            raise ApiError(e.code, e.read().decode(errors="replace"), method, url) from None

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        full_env = dict(os.environ)
        full_env.pop("KUBECONFIG", None)
        full_env["NO_PROXY"] = full_env["no_proxy"] = "127.0.0.1,localhost"
        full_env.update(env or {})
        with open(self.log_paths[name], "ab") as log:
            log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} start: {' '.join(args)}\n".encode())
            log.flush()
            p = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=full_env,
                start_new_session=True,
                preexec_fn=die_with_parent if self.die_with_parent else None,
            )
        self._popen[name] = p
        self.procs[name] = {"pid": p.pid, "args": args, "env": env or {}, "log": self.log_paths[name]}

    def _alive(self, name: str) -> bool:
        p = self._popen.get(name)
        if p is not None:
            return p.poll() is None
        info = self.procs.get(name)
        return bool(info) and _pid_alive(info["pid"]) and _pid_cmd(info["pid"]) == info["args"][0]

    def _wait(self, what: str, check: Any, deadline: float, watch: list[str]) -> None:
        last: BaseException | None = None
        while True:
            for name in watch:
                if name in self.procs and not self._alive(name):
                    code = self._popen[name].returncode if name in self._popen else "?"
                    raise ControlPlaneError(
                        f"{name} exited (code {code}) while waiting for {what}; log: {self.log_paths[name]}"
                    )
            try:
                if check():
                    return
            except (OSError, ControlPlaneError, ValueError, KeyError) as e:
                last = e
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"timed out waiting for {what} (last error: {last})")
            time.sleep(0.25)

    def _kill(self, name: str, grace: float = 3.0) -> None:
        info = self.procs.pop(name, None)
        popen = self._popen.pop(name, None)
        if not info:
            return
        pid = info["pid"]

        def alive() -> bool:
            if popen is not None:
                return popen.poll() is None
            return _pid_alive(pid)

        if popen is None and _pid_alive(pid) and _pid_cmd(pid) != info["args"][0]:
            return  # the pid was reused by something else: not ours
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            if not alive():
                break
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            except PermissionError:
                os.kill(pid, sig)
            end = time.monotonic() + wait
            while alive() and time.monotonic() < end:
                time.sleep(0.05)
        with contextlib.suppress(OSError):  # whatever else is left in its process group
            os.killpg(pid, signal.SIGKILL)

    def _kill_all(self) -> None:
        for name in reversed(BINARIES):
            self._kill(name)

    def _remove_workdir(self) -> None:
        if not os.path.isdir(self.workdir):
            return
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            for entry in self._OWNED:
                p = os.path.join(self.workdir, entry)
                if os.path.isdir(p):
                    shutil.rmtree(p, ignore_errors=True)
                elif os.path.exists(p):
                    os.remove(p)

    def _write_state(self) -> None:
        state = {
            "bin_dir": self.bin_dir,
            "workdir": self.workdir,
            "owns_workdir": self._owns_workdir,
            "ports": self.ports,
            "server_url": self.server_url,
            "kubeconfig": self.kubeconfig_path,
            "processes": self.procs,
        }
        _write_json(os.path.join(self.workdir, self.STATE_FILE), state)
        with open(os.path.join(self.workdir, "pids"), "w") as f:
            for name in BINARIES:
                if name in self.procs:
                    f.write(f"{name} {self.procs[name]['pid']}\n")

    @classmethod
    def attach(cls, workdir: str) -> ControlPlane:
        """A ControlPlane object for a plane started elsewhere (e.g. by ``up``)."""
        workdir = os.path.abspath(workdir)
        with open(os.path.join(workdir, cls.STATE_FILE)) as f:
            st = json.load(f)
        self = cls.__new__(cls)
        self.bin_dir = st["bin_dir"]
        self.workdir = workdir
        self._owns_workdir = st.get("owns_workdir", False)
        self.keep_workdir = False
        self.die_with_parent = False
        self.start_timeout = 180.0
        self.extra_args = {}
        self.ports = {k: int(v) for k, v in st["ports"].items()}
        self.procs = st["processes"]
        self._popen = {}
        self._lock = threading.RLock()
        self._ssl = None
        self._started = True
        return self


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="controlplane", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, help_ in (
        ("up", "start the control plane in the background"),
        ("down", "stop it and remove its directory"),
        ("status", "say whether it is up"),
    ):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--dir", default=".cluster", help="state directory (default .cluster)")
        if name == "up":
            p.add_argument(
                "--bin-dir",
                default=None,
                help="binaries (default: KUBEBUILDER_ASSETS, build cache, PATH; else build.sh is run)",
            )
    a = ap.parse_args(argv)
    state = os.path.join(a.dir, ControlPlane.STATE_FILE)
    old = None
    if os.path.exists(state):
        try:
            old = ControlPlane.attach(a.dir)
        except (OSError, ValueError, KeyError):
            old = None

    if a.cmd == "status":
        if old and old.healthy():
            print(f"up: {old.server_url}\nexport KUBECONFIG={old.kubeconfig_path}")
            return 0
        print("down")
        return 1

    if a.cmd == "down":
        if old is None:
            print(f"nothing to stop in {a.dir}")
            return 0
        old.stop()
        print(f"stopped; removed {a.dir if old._owns_workdir else 'its files in ' + a.dir}")
        return 0

    # up
    if old is not None:
        if old.healthy():
            print(f"already up: {old.server_url}")
            print(f"export KUBECONFIG={old.kubeconfig_path}")
            return 0
        print("found a stale control plane; stopping it", file=sys.stderr)
        old.stop()
    bin_dir = a.bin_dir or find_bin_dir()
    if not bin_dir:
        print("building the control-plane binaries (tests/cluster/build.sh)...", file=sys.stderr)
        bin_dir = build_bin_dir()
    cp = ControlPlane(bin_dir=bin_dir, workdir=a.dir, die_with_parent=False, keep_workdir=True)
    cp.start()
    print(f"up in {cp.startup_seconds}s: {cp.server_url} (logs: {cp.log_dir})")
    print(f"export KUBECONFIG={cp.kubeconfig_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
