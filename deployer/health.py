"""HTTP health checks of pods and the check through the load balancer after a switch."""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from deployer.bounds import cut_text
from deployer.pods import PodInfo

# The version a pod's health answer names, as stored and logged: the pod chooses it.
VERSION_CHARS = 128


@dataclass(frozen=True)
class HealthResult:
    """One check of one pod: healthy or not, with the HTTP status and a short detail."""

    pod: str
    ip: str
    healthy: bool
    status: int
    detail: str
    seconds: float
    version: str = ""

    def as_json(self) -> dict[str, Any]:
        """The shape stored in Deployment.health_results."""
        return asdict(self)


def _get(
    host: str, port: int, path: str, timeout: float, headers: dict[str, str]
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Connection": "close", **headers})
        response = connection.getresponse()
        return response.status, response.read(65536)
    finally:
        connection.close()


def judge(status: int, body: bytes, health_type: str) -> tuple[bool, str, str]:
    """(healthy, detail, version) for a response: 2xx and, for http-json, ``healthy`` not false."""
    if not 200 <= status < 300:
        return False, f"HTTP {status}", ""
    version = ""
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        version = cut_text(str(data.get("version", "")), VERSION_CHARS)
        if health_type == "http-json" and "healthy" in data and data["healthy"] is not True:
            return False, f"HTTP {status}, healthy: {json.dumps(data['healthy'])}", version
    elif health_type == "http-json" and body.strip().startswith(b"{"):
        return False, f"HTTP {status}, body is not valid JSON", ""
    return True, f"HTTP {status}", version


class HttpHealthChecker:
    """Checks pods over HTTP and the new version through each load balancer."""

    def check(self, pod: PodInfo, health: dict[str, Any]) -> HealthResult:
        """GET ``http://<podIP>:<port><path>`` once."""
        started = time.monotonic()
        try:
            status, body = _get(
                pod.ip, int(health["port"]), health["path"], float(health["timeout"]), {}
            )
        except (OSError, http.client.HTTPException) as exc:
            return HealthResult(
                pod.name, pod.ip, False, 0, f"no answer: {exc}", time.monotonic() - started
            )
        healthy, detail, version = judge(status, body, health["type"])
        return HealthResult(
            pod.name, pod.ip, healthy, status, detail, time.monotonic() - started, version
        )

    def through_lb(
        self, address: str, hostname: str, path: str, timeout: float = 2.0
    ) -> tuple[int, bytes]:
        """One GET with ``Host: hostname`` on a new connection to the load balancer at ``address``.

        ``address`` is ``http://host:port``; OSError when it is not, as when it cannot be
        reached.
        """
        parts = urlsplit(address)
        if parts.scheme != "http" or not parts.hostname:
            raise OSError(f"load balancer address {address!r} is not an http://host:port URL")
        try:
            return _get(parts.hostname, parts.port or 80, path, timeout, {"Host": hostname})
        except http.client.HTTPException as exc:
            raise OSError(f"bad answer from {address}: {exc!r}") from exc
