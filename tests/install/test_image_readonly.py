"""The image's processes on a read-only root filesystem, as the manifests start them.

No container engine runs here, so each container of the example overlay runs on this machine
the way the kubelet would start it from the Dockerfile: its command and environment (the
Dockerfile's ENV, the ConfigMap, the Secret, the pod's own variables), as the Dockerfile's
USER, in a mount namespace where every mount is read-only but the container's emptyDir
volumes, with HOME and the working directory unwritable. PostgreSQL, Redis, etcd and the
Kubernetes API are this machine's test servers; HAProxy and daphne listen on loopback ports
instead of the pod's. Each probe of the manifests is then asked as the kubelet would.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.servers import (
    LocalCluster,
    Server,
    etcd_server,
    free_port,
    localcluster_server,
    postgres_server,
    redis_server,
    stack_database,
    stop_process,
)

from .manifests import EXAMPLE, REPO, Manifest, containers, environment, kustomize, named

VENV_BIN = Path(sys.executable).parent
TOOLS = ("unshare", "setpriv", "findmnt", "mount", "etcdctl", "haproxy")

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces need root"),
    pytest.mark.skipif(
        any(shutil.which(tool) is None for tool in TOOLS), reason=f"needs {', '.join(TOOLS)}"
    ),
]

# Runs "$@" after `--` in a private mount namespace: every mount read-only, /run a fresh
# read-only tmpfs, then each `host:target` pair before `--` bind-mounted writable (the
# emptyDirs) or, with a trailing `:ro`, read-only; then as the image's user, without
# privileges. When the interpreter sits under a folder the image's user cannot enter
# ($HIDDEN, say /root of a pyenv install), that folder is replaced by an empty one holding
# only the interpreter ($INTERPRETER), as the image's /usr/local is open to every user.
# The code ($WORKDIR, the image's /app) stays visible, read-only, even when it lies under a
# volume's target (a checkout under /tmp, which the /tmp emptyDir hides).
CONTAINER = r"""
set -e
umask 022
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir /run/.workdir
mount --bind "$WORKDIR" /run/.workdir
if [ -n "$HIDDEN" ]; then
  mkdir /run/.interpreter
  mount --bind "$INTERPRETER" /run/.interpreter
  mount -t tmpfs -o mode=0755 tmpfs "$HIDDEN"
  mkdir -p "$INTERPRETER"
  mount --bind /run/.interpreter "$INTERPRETER"
fi
for pair in "$@"; do
  [ "$pair" = -- ] && break
  rest=${pair#*:}; mkdir -p "${rest%%:*}" 2>/dev/null || true
done
for m in $(findmnt -rn -o TARGET | grep -v -e '^/proc' -e '^/sys' -e '^/dev'); do
  mount -o remount,bind,ro "$m" 2>/dev/null || true
done
while [ "$1" != -- ]; do
  host=${1%%:*}; rest=${1#*:}; target=${rest%%:*}
  mount --bind "$host" "$target"
  case "$rest" in
    *:ro) mount -o remount,bind,ro "$target" ;;
    *) mount -o remount,bind,rw "$target" ;;
  esac
  shift
done
shift
if [ ! -e "$WORKDIR/pyproject.toml" ]; then
  mkdir -p "$WORKDIR"
  mount --bind /run/.workdir "$WORKDIR"
  mount -o remount,bind,ro "$WORKDIR"
fi
cd "$WORKDIR"
exec setpriv --reuid "$UID_GID" --regid "$UID_GID" --clear-groups --no-new-privs \
  env -u WORKDIR -u UID_GID -u HIDDEN -u INTERPRETER "$@"
"""


def _hidden_interpreter() -> dict[str, str]:
    """HIDDEN and INTERPRETER when a folder above the interpreter is closed to other users."""
    prefix = Path(sys.base_prefix).resolve()
    for folder in reversed(prefix.parents):
        if folder != Path("/") and not folder.stat().st_mode & 0o001:
            return {"HIDDEN": str(folder), "INTERPRETER": str(prefix)}
    return {}


@dataclass(frozen=True)
class Image:
    """What the Dockerfile gives every container: its environment, user and working dir."""

    env: dict[str, str]
    user: int
    workdir: str

    @classmethod
    def from_dockerfile(cls) -> Image:
        """ENV, USER and WORKDIR of the Dockerfile (its stage's last ones)."""
        text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
        env: dict[str, str] = {}
        user, workdir = "", "/"
        for line in text.splitlines():
            keyword, _, rest = line.strip().partition(" ")
            if keyword == "ENV":
                env.update(pair.split("=", 1) for pair in rest.split())
            elif keyword == "USER":
                user = rest.strip()
            elif keyword == "WORKDIR":
                workdir = rest.strip()
        uid, _, gid = user.partition(":")
        assert uid.isdigit() and gid == uid, (
            f"USER {user!r}: a numeric uid:gid is what runAsNonRoot can check"
        )
        return cls(env, int(uid), workdir)

    def here(self, value: str) -> str:
        """``value`` with the image's working directory (where the code is) replaced by the repository."""
        return value.replace(self.workdir, str(REPO)) if value.startswith(self.workdir) else value


@dataclass
class Pod:
    """One Deployment's pod, its containers run on this machine."""

    name: str
    spec: Manifest
    volumes: dict[str, Path]
    env: dict[str, dict[str, str]] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    def container(self, name: str) -> Manifest:
        """The container ``name`` of the pod."""
        return next(c for c in containers(self.spec) if c["name"] == name)

    def binds(self, container: Manifest, extra: list[str]) -> list[str]:
        """``host:target`` for each of the container's volumes (/tmp last: it hides the others)."""
        pairs = [
            f"{self.volumes[mount['name']]}:{mount['mountPath']}"
            for mount in container.get("volumeMounts", [])
        ]
        return extra + sorted(pairs, key=lambda pair: pair.endswith(":/tmp"))


class Node:
    """Runs pods' containers as the kubelet would, read-only but for their emptyDirs."""

    def __init__(
        self,
        image: Image,
        objects: list[Manifest],
        workdir: Path,
        extra: dict[str, str],
        kube: Path,
    ):
        self.image = image
        self.objects = objects
        self.workdir = workdir
        self.extra = extra
        self.kube = kube
        self.pods: list[Pod] = []

    def pod(
        self, deployment: str, fields: dict[str, str], overrides: dict[str, str] | None = None
    ) -> Pod:
        """A pod of ``deployment``: its emptyDirs made, each container's environment worked out."""
        spec = named(self.objects, "Deployment", deployment)["spec"]["template"]["spec"]
        volumes = {}
        for volume in spec.get("volumes", []):
            assert "emptyDir" in volume, f"{deployment}: only emptyDir volumes are expected"
            path = self.workdir / fields["metadata.name"] / volume["name"]
            path.mkdir(parents=True)
            os.chown(path, self.image.user, self.image.user)
            path.chmod(0o700)
            volumes[volume["name"]] = path
        pod = Pod(fields["metadata.name"], spec, volumes)
        for container in containers(spec):
            env = {
                "PATH": f"{VENV_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                # A pod's host name is its name; here it is the machine's (Celery's worker
                # name, which the worker's probe asks for, comes from it).
                "HOSTNAME": socket.gethostname(),
                "HOME": "/var/lib/greenlight",
                **{k: self.image.here(v) for k, v in self.image.env.items()},
                **environment(self.objects, container, fields),
                **self.extra,
                **(overrides or {}),
            }
            pod.env[container["name"]] = env
        self.pods.append(pod)
        return pod

    def command(self, pod: Pod, container: Manifest, command: list[str]) -> list[str]:
        """``command`` as it runs in ``container``: unshared, read-only, as the image's user."""
        kube = f"{self.kube.parent}:/run/kube:ro"
        return [
            "unshare", "-m", "--propagation", "private", "sh", "-c", CONTAINER, "container",
            *pod.binds(container, [kube]), "--", *command,
        ]  # fmt: skip

    def environ(self, pod: Pod, name: str) -> dict[str, str]:
        """The container's environment, and what the namespace script needs."""
        return {
            **pod.env[name],
            "WORKDIR": str(REPO),
            "UID_GID": str(self.image.user),
            **_hidden_interpreter(),
        }

    def run(
        self, pod: Pod, name: str, command: list[str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run a container (an init container) or a probe's command in it, to completion."""
        container = pod.container(name)
        return subprocess.run(
            self.command(pod, container, command or container["command"]),
            env=self.environ(pod, name),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, pod: Pod, name: str, command: list[str] | None = None) -> None:
        """Start a container of ``pod``, its output in a log of its own."""
        container = pod.container(name)
        log = self.workdir / f"{pod.name}-{name}.log"
        with log.open("wb") as output:
            pod.processes[name] = subprocess.Popen(
                self.command(pod, container, command or container["command"]),
                env=self.environ(pod, name),
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        pod.logs[name] = log

    def stop(self) -> None:
        """Stop every container (SIGTERM, as the kubelet does)."""
        for pod in self.pods:
            for process in pod.processes.values():
                stop_process(process, 20)


@contextlib.contextmanager
def database_url() -> Iterator[str]:
    """A new PostgreSQL database: on the tests' server, or on a server of its own."""
    url = stack_database()
    if url is not None:
        yield url
        return
    with postgres_server() as server:
        yield str(server.extra["url"])


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, Server, Server, LocalCluster]]:
    """PostgreSQL, Redis, etcd and an API-only localcluster, the external servers of the pods."""
    workdir = tmp_path_factory.mktemp("servers")
    with (
        database_url() as database,
        redis_server(workdir / "redis") as redis,
        etcd_server(workdir / "etcd") as etcd,
        localcluster_server(workdir / "cluster", nodes=1, runtime=False) as cluster,
    ):
        yield database, redis, etcd, cluster


@pytest.fixture(scope="module")
def node(
    servers: tuple[str, Server, Server, LocalCluster], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Node]:
    """A node for the example overlay's Greenlight pods, pointed at the test servers."""
    database, redis, etcd, cluster = servers
    workdir = tmp_path_factory.mktemp("node")
    workdir.chmod(0o755)
    kube = workdir / "kube" / "kubeconfig"
    kube.parent.mkdir(mode=0o755)
    shutil.copy(cluster.kubeconfig, kube)
    kube.chmod(0o644)
    image = Image.from_dockerfile()
    extra = {
        "DATABASE_URL": database,
        "GREENLIGHT_REDIS_URL": str(redis.extra["url"]),
        "GREENLIGHT_ETCD_ENDPOINT": str(etcd.extra["endpoint"]),
        "GREENLIGHT_ETCD_PREFIX": f"/install-{uuid.uuid4().hex[:8]}",
        # The pods' service account is this cluster's kubeconfig, mounted read-only.
        "GREENLIGHT_KUBE_IN_CLUSTER": "false",
        "GREENLIGHT_KUBECONFIG": "/run/kube/kubeconfig",
    }
    running = Node(image, kustomize(EXAMPLE), workdir, extra, kube)
    try:
        yield running
    finally:
        running.stop()


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _until(check: object, what: str, pods: list[Pod], timeout: float = 60) -> None:
    """Wait for ``check()`` to be true; fail with the pods' logs when it is not within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if check():  # type: ignore[operator]
                return
        time.sleep(0.2)  # the processes are starting: nothing to watch but their ports
    logs = "\n".join(
        f"--- {path.name}\n{path.read_text()[-3000:]}" for pod in pods for path in pod.logs.values()
    )
    raise AssertionError(f"{what} within {timeout}s; the logs:\n{logs}")


def _http_probe(probe: Manifest, port: int) -> tuple[int, str]:
    headers = {h["name"]: h["value"] for h in probe["httpGet"].get("httpHeaders", [])}
    return _get(f"http://127.0.0.1:{port}{probe['httpGet']['path']}", headers)


WRITE_FAILURES = re.compile(r"Read-only file system|Permission denied|EROFS|EACCES|Traceback")


def test_the_namespace_leaves_only_the_volumes_writable(node: Node) -> None:
    pod = node.pod("greenlight-scheduler", {"metadata.name": "probe-check"})
    attempts = "; ".join(
        f"touch {path}/w 2>/dev/null && echo {label}"
        for label, path in [
            ("repo", REPO),
            ("home", "/var/lib/greenlight"),
            ("root", "/"),
            ("run", "/run"),
            ("tmp", "/tmp"),
            ("schedule", "/var/run/celery"),
        ]
    )
    done = node.run(pod, "scheduler", ["sh", "-c", f"id -u; {attempts}; true"])
    assert done.stdout.split() == [str(node.image.user), "tmp", "schedule"], done.stderr


def test_every_greenlight_process_runs_read_only_as_the_manifests_start_it(
    node: Node, servers: tuple[str, Server, Server, LocalCluster]
) -> None:
    _, _, etcd, _ = servers
    web_port, lb_port, stats_port = free_port(), free_port(), free_port()
    web = node.pod("greenlight-web", {"metadata.name": "greenlight-web-test"})
    migrated = node.run(web, "migrate")
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert "Applying" in migrated.stdout
    command = list(web.container("web")["command"])
    command[command.index("-b") + 1] = "127.0.0.1"
    command[command.index("-p") + 1] = str(web_port)
    node.start(web, "web", command)

    worker = node.pod("greenlight-worker", {"metadata.name": "greenlight-worker-test"})
    node.start(worker, "worker")
    scheduler = node.pod("greenlight-scheduler", {"metadata.name": "greenlight-scheduler-test"})
    node.start(scheduler, "scheduler")

    lb_name = "greenlight-lb-test"
    lb = node.pod(
        "greenlight-lb",
        {"metadata.name": lb_name, "status.podIP": "127.0.0.1"},
        {
            "GREENLIGHT_HAPROXY_BIND": "127.0.0.1",
            "GREENLIGHT_LB_PORT": str(lb_port),
            "GREENLIGHT_HAPROXY_STATS_PORT": str(stats_port),
            "GREENLIGHT_LB_ADDRESS": f"http://127.0.0.1:{lb_port}",
        },
    )
    node.start(lb, "haproxy")  # first, as the kubelet may: it waits for proxysync's config
    node.start(lb, "proxysync")
    pods = [web, worker, scheduler, lb]

    # The kubelet's probes, as the manifests ask them.
    web_probe = web.container("web")["readinessProbe"]
    _until(lambda: _http_probe(web_probe, web_port)[0] == 200, "the web's probe passed", pods)
    status, page = _http_probe(web.container("web")["livenessProbe"], web_port)
    assert status == 200 and "csrfmiddlewaretoken" in page
    for probe in ("readinessProbe", "livenessProbe"):
        haproxy_probe = lb.container("haproxy")[probe]
        _until(
            lambda p=haproxy_probe: _http_probe(p, stats_port)[0] == 200, "HAProxy answered", pods
        )
    # HAProxy serves proxysync's render: no app is deployed yet.
    assert _get(f"http://127.0.0.1:{lb_port}/", {"Host": "hello.example.com"}) == (
        503,
        "No application is deployed at this address.",
    )
    ready = lb.container("proxysync")["readinessProbe"]["exec"]["command"]
    assert node.run(lb, "proxysync", ready).returncode == 0
    prefix = node.extra["GREENLIGHT_ETCD_PREFIX"]

    def registered() -> bool:
        keys = subprocess.run(
            ["etcdctl", f"--endpoints={etcd.extra['endpoint']}", "get", "--prefix", "--keys-only", f"{prefix}/lbs/"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.split()  # fmt: skip
        return keys == [f"{prefix}/lbs/{lb_name}"]

    _until(registered, "the load balancer registered under its pod's name", pods)

    worker_probe = worker.container("worker")["livenessProbe"]["exec"]["command"]
    _until(
        lambda: node.run(worker, "worker", worker_probe).returncode == 0,
        "the worker answered its probe",
        pods,
        timeout=90,
    )
    beat_probe = scheduler.container("scheduler")["livenessProbe"]["exec"]["command"]
    assert node.run(scheduler, "scheduler", beat_probe).returncode == 0
    assert list(scheduler.volumes["schedule"].glob("celerybeat-schedule*"))

    for pod in pods:
        for name, process in pod.processes.items():
            assert process.poll() is None, (
                f"{pod.name}/{name} exited:\n{pod.logs[name].read_text()}"
            )
    node.stop()
    for pod in pods:
        for name, log in pod.logs.items():
            failures = [
                line for line in log.read_text().splitlines() if WRITE_FAILURES.search(line)
            ]
            assert failures == [], f"{pod.name}/{name}:\n{log.read_text()[-4000:]}"
