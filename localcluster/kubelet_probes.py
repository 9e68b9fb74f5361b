"""Container probes (httpGet, tcpSocket, exec) with the kubelet's thresholds and messages."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .kubelet_process import spawn_tied

# Defaults from the core/v1 Probe reference.
DEFAULTS = {"periodSeconds": 10, "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3}
# How much of a response a probe reads looking for its status line.
MAX_STATUS_LINE = 65536


@dataclass
class ProbeResult:
    """The outcome of one probe run; ``message`` is what the kubelet's Unhealthy event says."""

    ok: bool
    message: str = ""


def probe_setting(probe: dict[str, Any], name: str) -> int:
    """A probe's timing field with the API default applied."""
    value = probe.get(name)
    return int(value) if value is not None else DEFAULTS.get(name, 0)


def _local(source: str | None) -> tuple[str, int] | None:
    # Probes leave from the node's address, so an app sees the kubelet's IP as a real one would.
    return (source, 0) if source else None


def resolve_port(port: int | str, container: dict[str, Any]) -> int:
    """Turn a probe's port (number or container port name) into a number; ValueError if unknown."""
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise ValueError(f"unable to find port {port!r} in container {container.get('name')!r}")


@dataclass(frozen=True)
class ProbeTarget:
    """Where a network probe (or hook) goes: the pod, its container, from the node, how long."""

    pod_ip: str
    container: dict[str, Any]  # its ports name the port a probe may give by name
    timeout: float
    source: str | None = None  # the node's address, which probes leave from

    def address(self, action: dict[str, Any], default_port: int) -> tuple[str, int]:
        """The action's host (the pod's by default) and port number; ValueError if unknown."""
        port = resolve_port(action.get("port", default_port), self.container)
        return action.get("host") or self.pod_ip, port


async def http_get(action: dict[str, Any], target: ProbeTarget) -> ProbeResult:
    """GET the probe URL; success is a status in [200, 400) as in the kubelet."""
    scheme = str(action.get("scheme") or "HTTP").lower()
    try:
        host, port = target.address(action, 80)
    except ValueError as exc:
        return ProbeResult(False, str(exc))
    path = action.get("path") or "/"
    if not path.startswith("/"):
        path = "/" + path
    url = f"{scheme}://{host}:{port}{path}"
    headers = {"Host": f"{host}:{port}", "User-Agent": "kube-probe/1.32", "Accept": "*/*"}
    for header in action.get("httpHeaders") or []:
        headers[str(header.get("name"))] = str(header.get("value", ""))
    request = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request += "Connection: close\r\n\r\n"
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(target.timeout):
            if scheme == "http" and _is_ip(host):
                status_line = await _status_line(host, port, request.encode(), target.source)
            else:
                context = None
                if scheme == "https":
                    # The kubelet does not verify probe certificates.
                    context = ssl.create_default_context()
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=context, local_addr=_local(target.source)
                )
                writer.write(request.encode())
                await writer.drain()
                status_line = await reader.readline()
            parts = status_line.split()
            if len(parts) < 2 or not parts[1].isdigit():
                return ProbeResult(False, f'Get "{url}": malformed HTTP response {status_line!r}')
            code = int(parts[1])
    except TimeoutError:
        return ProbeResult(
            False,
            f'Get "{url}": context deadline exceeded (Client.Timeout exceeded while awaiting headers)',
        )
    except ConnectionRefusedError:
        return ProbeResult(
            False, f'Get "{url}": dial tcp {host}:{port}: connect: connection refused'
        )
    except OSError as exc:
        return ProbeResult(False, f'Get "{url}": dial tcp {host}:{port}: {exc.strerror or exc}')
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    if 200 <= code < 400:
        return ProbeResult(True)
    return ProbeResult(False, f"HTTP probe failed with statuscode: {code}")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _status_line(host: str, port: int, request: bytes, source: str | None) -> bytes:
    """Send ``request`` over a plain socket and return the response's first line.

    The loop's socket calls, not a stream transport: a pod probed every second costs
    the event loop a connection each time, and the probes of hundreds of pods add up.
    """
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if source:
            sock.bind((source, 0))
        await loop.sock_connect(sock, (host, port))
        await loop.sock_sendall(sock, request)
        data = b""
        while b"\n" not in data and len(data) < MAX_STATUS_LINE:
            chunk = await loop.sock_recv(sock, 4096)
            if not chunk:
                break
            data += chunk
        return data.partition(b"\n")[0]
    finally:
        sock.close()


async def tcp_socket(action: dict[str, Any], target: ProbeTarget) -> ProbeResult:
    """Open a TCP connection to the port; success is a completed handshake."""
    try:
        host, port = target.address(action, 0)
    except ValueError as exc:
        return ProbeResult(False, str(exc))
    try:
        async with asyncio.timeout(target.timeout):
            _, writer = await asyncio.open_connection(host, port, local_addr=_local(target.source))
        writer.close()
        return ProbeResult(True)
    except TimeoutError:
        return ProbeResult(False, f"dial tcp {host}:{port}: i/o timeout")
    except OSError as exc:
        return ProbeResult(False, f"dial tcp {host}:{port}: connect: {exc.strerror or exc}".lower())


async def exec_command(
    action: dict[str, Any], env: dict[str, str], cwd: str, timeout: float
) -> ProbeResult:
    """Run the command in the container's environment; success is exit status 0."""
    command = [str(a) for a in action.get("command") or []]
    if not command:
        return ProbeResult(False, "exec probe has no command")
    try:
        # Like containers, probe commands die with localcluster.
        proc = await spawn_tied(
            command,
            env,
            cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as exc:
        return ProbeResult(False, f"exec: {exc.strerror or exc}")
    try:
        async with asyncio.timeout(timeout):
            output, _ = await proc.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return ProbeResult(
            False, f"command timed out: {' '.join(command)} timed out after {timeout:g}s"
        )
    if proc.returncode == 0:
        return ProbeResult(True)
    text = output.decode(errors="replace").strip()
    return ProbeResult(
        False, text or f"command {' '.join(command)!r} exited with {proc.returncode}"
    )


async def run_probe(
    probe: dict[str, Any],
    pod_ip: str,
    container: dict[str, Any],
    env: dict[str, str],
    cwd: str,
    source: str | None = None,
) -> ProbeResult:
    """Run one probe of any supported kind once; network probes come from ``source`` (the node)."""
    timeout = float(probe_setting(probe, "timeoutSeconds"))
    target = ProbeTarget(pod_ip, container, timeout, source)
    if "httpGet" in probe:
        return await http_get(probe["httpGet"], target)
    if "tcpSocket" in probe:
        return await tcp_socket(probe["tcpSocket"], target)
    if "exec" in probe:
        return await exec_command(probe["exec"], env, cwd, timeout)
    if "grpc" in probe:
        return ProbeResult(False, "grpc probes are not supported by localcluster")
    return ProbeResult(False, "probe has no handler")


# report(result, healthy, tripped) -> True to end the loop. ``tripped`` is set on the run that
# reaches failureThreshold, which is when the kubelet acts on a liveness or startup failure.
Reporter = Callable[[ProbeResult, bool, bool], Awaitable[bool]]


async def probe_loop(
    probe: dict[str, Any],
    run: Callable[[], Awaitable[ProbeResult]],
    report: Reporter,
    initial: bool,
    origin: float | None = None,
) -> None:
    """Probe every periodSeconds after initialDelaySeconds; report each run until told to stop.

    ``origin`` (``time.monotonic()``) is when the pod's worker began: a kubelet's probe
    worker ticks every period from then and skips the ticks before the container runs, so
    the first probe comes on the first tick after the container started, not at its exec
    (when a server has yet to listen, and the probe would fail for nothing).
    """
    period = max(probe_setting(probe, "periodSeconds"), 1)
    success_threshold = max(probe_setting(probe, "successThreshold"), 1)
    failure_threshold = max(probe_setting(probe, "failureThreshold"), 1)
    await asyncio.sleep(probe_setting(probe, "initialDelaySeconds"))
    if origin is not None:
        await asyncio.sleep(period - (time.monotonic() - origin) % period)
    healthy = initial
    successes = failures = 0
    while True:
        result = await run()
        tripped = False
        if result.ok:
            successes, failures = successes + 1, 0
            if successes >= success_threshold:
                healthy = True
        else:
            successes, failures = 0, failures + 1
            if failures >= failure_threshold:
                tripped = failures == failure_threshold
                healthy = False
        if await report(result, healthy, tripped):
            return
        await asyncio.sleep(period)
