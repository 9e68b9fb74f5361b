"""The embedded development stack: ports, paths and the command line of every process.

``make run`` starts :mod:`launcher.supervisor` on the Procfile; each Procfile line is
``python -m launcher.stack <process>``, which prepares that process's directory
and ``exec``s its real command, so signals reach it directly. Tests start the same
servers on free ports through the command builders here (``redis_command``, ...).

``GREENLIGHT_LB_COUNT`` load balancers run side by side: load balancer ``i`` (id ``lb-<i>``)
is the processes ``haproxy-<i>`` and ``proxysync-<i>``, the Procfile's ``{lb}`` lines
started once per load balancer. It serves users' traffic on ``GREENLIGHT_LB_PORT + i``,
its stats page on the HAProxy stats port + ``i``, and keeps its configuration, master
socket and pid file in a folder of its own.

Everything under the var dir is private to its owner: folders 0700, files 0600. The
files Greenlight writes itself are created with those modes, and every process of the
stack starts with umask 077, so what redis, etcd, HAProxy, Celery and SQLite create
(the database's -wal and -shm files take the database's mode) is private from birth.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from deployer.lbconfig import render_config
from launcher.env import BASE_DIR, env_int, env_optional, env_path

MAX_LOAD_BALANCERS = 16
# Processes of which the stack runs one per load balancer ("haproxy-0", "proxysync-1", ...).
PER_LOAD_BALANCER = ("haproxy", "proxysync")
# Deploys one worker runs at once (each a thread); more wait in the queue.
WORKER_THREADS = 64


@dataclass(frozen=True)
class LoadBalancerSlot:
    """Load balancer ``index`` of the stack: its id, ports and HAProxy folder."""

    index: int
    port: int
    stats_port: int
    haproxy_dir: Path

    @property
    def id(self) -> str:
        """The id its proxysync registers under (``GREENLIGHT_LB_ID``)."""
        return f"lb-{self.index}"

    @property
    def address(self) -> str:
        """Where users' traffic enters it (``GREENLIGHT_LB_ADDRESS``)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def config(self) -> Path:
        """The haproxy.cfg its proxysync renders."""
        return self.haproxy_dir / "haproxy.cfg"

    @property
    def master_socket(self) -> Path:
        """HAProxy's master CLI socket."""
        return self.haproxy_dir / "master.sock"

    @property
    def pid_file(self) -> Path:
        """HAProxy's pid file."""
        return self.haproxy_dir / "haproxy.pid"


@dataclass(frozen=True)
class StackConfig:
    """Every port and path of one stack; a second stack differs by web port and var dir.

    Building one whose ports collide (say, a load balancer's port on the web port + 1)
    raises ImproperlyConfigured naming both uses of the port.
    """

    var_dir: Path
    web_port: int
    lb_port: int
    redis_port: int
    etcd_port: int
    etcd_peer_port: int
    etcd_metrics_port: int
    cluster_port: int
    haproxy_stats_port: int
    nodes: int
    db_path: Path
    lb_count: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.lb_count <= MAX_LOAD_BALANCERS:
            raise ImproperlyConfigured(
                f"GREENLIGHT_LB_COUNT must be between 1 and {MAX_LOAD_BALANCERS}, "
                f"got {self.lb_count}"
            )
        uses: dict[int, str] = {}
        for use, port in self.ports().items():
            if not 1 <= port <= 65535:
                raise ImproperlyConfigured(f"{use} would be port {port}, outside 1..65535")
            if port in uses:
                raise ImproperlyConfigured(
                    f"port {port} would serve both {uses[port]} and {use}; "
                    "choose GREENLIGHT_WEB_PORT, GREENLIGHT_LB_PORT, GREENLIGHT_LB_COUNT "
                    "(or the port of either) so that they differ"
                )
            uses[port] = use

    @classmethod
    def from_env(cls) -> StackConfig:
        """Read the stack from the environment; auxiliary ports follow the web port."""
        web = env_int("GREENLIGHT_WEB_PORT", 8000, minimum=1, maximum=65535)
        var_dir = env_path("GREENLIGHT_VAR_DIR", BASE_DIR / "var")
        return cls(
            var_dir=var_dir,
            web_port=web,
            lb_port=env_int("GREENLIGHT_LB_PORT", 8080, minimum=1, maximum=65535),
            redis_port=env_int("GREENLIGHT_REDIS_PORT", web + 1, minimum=1, maximum=65535),
            etcd_port=env_int("GREENLIGHT_ETCD_PORT", web + 2, minimum=1, maximum=65535),
            etcd_peer_port=env_int("GREENLIGHT_ETCD_PEER_PORT", web + 3, minimum=1, maximum=65535),
            etcd_metrics_port=env_int(
                "GREENLIGHT_ETCD_METRICS_PORT", web + 4, minimum=1, maximum=65535
            ),
            cluster_port=env_int("GREENLIGHT_CLUSTER_PORT", web + 5, minimum=1, maximum=65535),
            haproxy_stats_port=env_int(
                "GREENLIGHT_HAPROXY_STATS_PORT", web + 6, minimum=1, maximum=65535
            ),
            nodes=env_int("GREENLIGHT_CLUSTER_NODES", 3, minimum=1, maximum=50),
            db_path=env_path("GREENLIGHT_DB_PATH", var_dir / "greenlight.sqlite3"),
            # Bounds are checked with the ports, in __post_init__.
            lb_count=env_int("GREENLIGHT_LB_COUNT", 1),
        )

    @property
    def haproxy_dir(self) -> Path:
        """Directory holding haproxy.cfg, the master socket and the pid file of ``lb-0``."""
        return self.var_dir / "haproxy"

    @property
    def load_balancers(self) -> list[LoadBalancerSlot]:
        """Every load balancer of the stack: ``lb-0`` in ``haproxy/``, ``lb-<i>`` in ``haproxy-<i>/``."""
        return [
            LoadBalancerSlot(
                index=index,
                port=self.lb_port + index,
                stats_port=self.haproxy_stats_port + index,
                haproxy_dir=self.haproxy_dir if index == 0 else self.var_dir / f"haproxy-{index}",
            )
            for index in range(self.lb_count)
        ]

    def ports(self) -> dict[str, int]:
        """Every port the stack listens on, by what listens there."""
        ports = {
            "the dashboard (GREENLIGHT_WEB_PORT)": self.web_port,
            "redis (GREENLIGHT_REDIS_PORT)": self.redis_port,
            "etcd (GREENLIGHT_ETCD_PORT)": self.etcd_port,
            "etcd's peers (GREENLIGHT_ETCD_PEER_PORT)": self.etcd_peer_port,
            "etcd's metrics (GREENLIGHT_ETCD_METRICS_PORT)": self.etcd_metrics_port,
            "localcluster (GREENLIGHT_CLUSTER_PORT)": self.cluster_port,
        }
        for slot in self.load_balancers:
            ports[f"load balancer {slot.id} (GREENLIGHT_LB_PORT + {slot.index})"] = slot.port
            ports[f"{slot.id}'s HAProxy stats (GREENLIGHT_HAPROXY_STATS_PORT + {slot.index})"] = (
                slot.stats_port
            )
        return ports

    @property
    def kubeconfig(self) -> Path:
        """Kubeconfig that localcluster writes for itself."""
        return self.var_dir / "localcluster" / "kubeconfig"


def redis_command(port: int, data_dir: Path) -> list[str]:
    """Command line of a loopback-only redis-server without persistence."""
    return [
        "redis-server",
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(data_dir),
        "--save", "",
        "--appendonly", "no",
        "--protected-mode", "yes",
    ]  # fmt: skip


def etcd_command(port: int, peer_port: int, metrics_port: int, data_dir: Path) -> list[str]:
    """Command line of a single-member etcd bound to loopback, serving gRPC only.

    The gRPC gateway (HTTP/JSON on the client port) is off: a web page could reach it
    with a cross-site POST, and the etcd3 client speaks gRPC.
    """
    peer = f"http://127.0.0.1:{peer_port}"
    client = f"http://127.0.0.1:{port}"
    return [
        "etcd",
        "--name", "greenlight",
        "--data-dir", str(data_dir),
        "--listen-client-urls", client,
        "--advertise-client-urls", client,
        "--listen-peer-urls", peer,
        "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"greenlight={peer}",
        "--listen-metrics-urls", f"http://127.0.0.1:{metrics_port}",
        "--enable-grpc-gateway=false",
        "--log-level", "warn",
    ]  # fmt: skip


def haproxy_command(config: Path, master_socket: Path, pid_file: Path) -> list[str]:
    """Command line of HAProxy in master-worker mode with a master CLI socket."""
    return [
        "haproxy", "-W", "-db",
        "-S", f"{master_socket},mode,600",
        "-p", str(pid_file),
        "-f", str(config),
    ]  # fmt: skip


def initial_haproxy_config(lb_port: int, stats_port: int) -> str:
    """A valid configuration with no frontend routes: every request gets a 503 page."""
    return render_config(lb_port=lb_port, stats_port=stats_port, backends={})


PRIVATE_UMASK = 0o077


def create_private(path: Path, text: str = "") -> bool:
    """Create ``path`` with mode 0600 holding ``text``; False (and no change) when it exists.

    The mode is given to open(2), so there is no moment when the file is readable by
    others (as there would be between a write and a chmod).
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return True


def _ensure_secret(path: Path) -> str:
    create_private(path, secrets.token_urlsafe(48))
    return path.read_text().strip()


def prepare(config: StackConfig) -> None:
    """Create the private var dir layout, the secret key, each HAProxy's initial config and the database file."""
    os.umask(PRIVATE_UMASK)
    config.var_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if config.var_dir.stat().st_mode & 0o077:
        # A var dir from before Greenlight kept it private: closing it closes everything in it.
        config.var_dir.chmod(0o700)
    for sub in ("redis", "etcd", "localcluster", "logs"):
        (config.var_dir / sub).mkdir(mode=0o700, exist_ok=True)
    for slot in config.load_balancers:
        slot.haproxy_dir.mkdir(mode=0o700, exist_ok=True)
        create_private(slot.config, initial_haproxy_config(slot.port, slot.stats_port))
    _ensure_secret(config.var_dir / "secret_key")
    # An empty file is an empty SQLite database; SQLite gives its -wal and -shm files its mode.
    config.db_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    create_private(config.db_path)


def process_names(config: StackConfig) -> list[str]:
    """Every process of the stack: one of each, and one haproxy and proxysync per load balancer."""
    single = ["redis", "etcd", "web", "worker", "scheduler", "localcluster"]
    per_lb = [
        f"{name}-{slot.index}" for name in PER_LOAD_BALANCER for slot in config.load_balancers
    ]
    return single + per_lb


def _load_balancer_of(name: str, config: StackConfig) -> tuple[str, LoadBalancerSlot] | None:
    """``("haproxy", slot 1)`` for ``haproxy-1``; None for a process that is not per load balancer."""
    base, _, index = name.rpartition("-")
    if base not in PER_LOAD_BALANCER or not index.isdigit():
        return None
    if int(index) >= config.lb_count:
        raise SystemExit(
            f"{name} names load balancer {index}, but GREENLIGHT_LB_COUNT={config.lb_count} "
            f"runs lb-0 to lb-{config.lb_count - 1}"
        )
    return base, config.load_balancers[int(index)]


def process_env(name: str, config: StackConfig) -> dict[str, str]:
    """Variables the process ``name`` needs on top of the stack's environment.

    A proxysync learns its load balancer's id, address, ports and HAProxy files: its
    settings then describe that one load balancer.
    """
    found = _load_balancer_of(name, config)
    if found is None or found[0] != "proxysync":
        return {}
    slot = found[1]
    return {
        "GREENLIGHT_LB_ID": slot.id,
        "GREENLIGHT_LB_ADDRESS": slot.address,
        "GREENLIGHT_LB_PORT": str(slot.port),
        "GREENLIGHT_LB_COUNT": "1",
        "GREENLIGHT_HAPROXY_STATS_PORT": str(slot.stats_port),
        "GREENLIGHT_HAPROXY_CONFIG": str(slot.config),
        "GREENLIGHT_HAPROXY_MASTER_SOCKET": str(slot.master_socket),
    }


def process_command(name: str, config: StackConfig) -> list[str]:
    """The command line of the stack process ``name`` (as the Procfile names it, ``{lb}`` filled in)."""
    python = sys.executable
    manage = str(BASE_DIR / "manage.py")
    found = _load_balancer_of(name, config)
    if found is not None:
        base, slot = found
        if base == "haproxy":
            return haproxy_command(slot.config, slot.master_socket, slot.pid_file)
        return [python, manage, "proxysync"]
    web_bind = ["-b", "127.0.0.1", "-p", str(config.web_port)]
    commands: dict[str, list[str]] = {
        "redis": redis_command(config.redis_port, config.var_dir / "redis"),
        "etcd": etcd_command(
            config.etcd_port,
            config.etcd_peer_port,
            config.etcd_metrics_port,
            config.var_dir / "etcd" / "data",
        ),
        # daphne, with webhook secrets redacted from its access log.
        "web": [python, "-m", "dashboard.webserver", *web_bind, "dashboard.asgi:application"],
        "worker": [
            python,
            "-m",
            "celery",
            "-A",
            "dashboard",
            "worker",
            "--loglevel",
            "INFO",
            # A workflow mostly waits (pods, health checks, load balancers): threads let
            # dozens of deploys run at once in one process instead of queueing behind 4.
            "--pool",
            "threads",
            "--concurrency",
            str(WORKER_THREADS),
            "--hostname",
            f"worker-{config.web_port}@%h",
        ],  # fmt: skip
        "scheduler": [
            python,
            "-m",
            "celery",
            "-A",
            "dashboard",
            "beat",
            "--loglevel",
            "INFO",
            "--schedule",
            str(config.var_dir / "celerybeat-schedule"),
        ],  # fmt: skip
        "localcluster": [
            python,
            "-m",
            "localcluster",
            "--host",
            "127.0.0.1",
            "--port",
            str(config.cluster_port),
            "--nodes",
            str(config.nodes),
            "--state-dir",
            str(config.var_dir / "localcluster" / "state"),
            "--kubeconfig",
            str(config.kubeconfig),
        ],  # fmt: skip
    }
    try:
        return commands[name]
    except KeyError:
        known = ", ".join(process_names(config))
        raise SystemExit(f"unknown stack process {name!r}; known: {known}") from None


def banner(config: StackConfig) -> str:
    """The lines ``make run`` prints before the processes start."""
    slots = config.load_balancers
    title = "Load balancer:  " if len(slots) == 1 else "Load balancers: "
    lines = [
        "",
        "Greenlight is starting.",
        f"  Dashboard:      http://127.0.0.1:{config.web_port}/",
    ]
    for number, slot in enumerate(slots):
        lead = f"  {title}" if number == 0 else " " * (2 + len(title))
        lines.append(
            f"{lead}{slot.address}/  ({slot.id}; the demo app: http://hello.localhost:{slot.port}/)"
        )
    lines += [
        f"  State:          {config.var_dir}",
        "  API token:      .venv/bin/python manage.py create_token --user admin --name cli "
        "--scopes read,deploy",
        "Press Ctrl-C to stop every process.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    """``python -m launcher.stack prepare|banner|<process>``: prepare the var dir or exec a process."""
    if len(argv) != 1:
        raise SystemExit("usage: python -m launcher.stack prepare|banner|<process>")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    # Inherited through exec: whatever the process creates under the var dir is private.
    os.umask(PRIVATE_UMASK)
    try:
        config = StackConfig.from_env()
    except ImproperlyConfigured as exc:
        raise SystemExit(f"greenlight: {exc}") from None
    if argv[0] == "prepare":
        prepare(config)
        return
    if argv[0] == "banner":
        print(banner(config), flush=True)
        return
    command = process_command(argv[0], config)
    if shutil.which(command[0]) is None and not Path(command[0]).exists():
        raise SystemExit(f"{command[0]} is not installed; run `make run` to install it")
    os.environ.update(process_env(argv[0], config))
    os.execvp(command[0], command)


def secret_key_from_var_dir() -> str | None:
    """The generated development secret key, when ``make run`` has written one."""
    path = env_path("GREENLIGHT_VAR_DIR", BASE_DIR / "var") / "secret_key"
    return path.read_text().strip() if path.exists() else None


def admin_password() -> str | None:
    """The demo user's password from ``GREENLIGHT_ADMIN_PASSWORD``, if set."""
    return env_optional("GREENLIGHT_ADMIN_PASSWORD")


if __name__ == "__main__":
    main(sys.argv[1:])
