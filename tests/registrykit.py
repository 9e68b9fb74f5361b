"""A real registry for tests: Debian's docker-registry on a free loopback port, and pushes to it.

Images are pushed through the distribution API (a config blob, an empty layer, a Docker v2
manifest); no Docker is needed.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import secrets
import shutil
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import yaml

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt  # bcrypt hashes for the registry's htpasswd file (libxcrypt's $2b$)

from tests.servers import Server, free_port, spawn

REGISTRY = shutil.which("docker-registry")
EMPTY_LAYER = b""


def require_registry() -> str:
    if REGISTRY is None:
        pytest.fail("docker-registry is not installed (apt-get install docker-registry; make deps)")
    return REGISTRY


@contextlib.contextmanager
def registry_server(workdir: Path, users: dict[str, str] | None = None) -> Iterator[Server]:
    """docker-registry with filesystem storage under ``workdir``; htpasswd auth when ``users``."""
    binary = require_registry()
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    config: dict = {
        "version": 0.1,
        "log": {"level": "warn"},
        "storage": {"filesystem": {"rootdirectory": str(workdir / "storage")}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": "test-secret"},
    }
    if users:
        lines = [
            f"{name}:{crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))}"
            for name, password in users.items()
        ]
        (workdir / "htpasswd").write_text("\n".join(lines) + "\n")
        config["auth"] = {
            "htpasswd": {"realm": "greenlight-test", "path": str(workdir / "htpasswd")}
        }
    (workdir / "config.yml").write_text(yaml.safe_dump(config))
    server = spawn("docker-registry", [binary, "serve", str(workdir / "config.yml")], workdir, port)
    server.extra["host"] = f"127.0.0.1:{port}"
    server.extra["url"] = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        server.stop()


def _upload(session: requests.Session, url: str, name: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    if session.head(f"{url}/v2/{name}/blobs/{digest}", timeout=10).status_code == 200:
        return digest
    started = session.post(f"{url}/v2/{name}/blobs/uploads/", timeout=10)
    started.raise_for_status()
    location = started.headers["Location"]
    if location.startswith("/"):
        location = url + location
    joiner = "&" if "?" in location else "?"
    done = session.put(
        f"{location}{joiner}digest={digest}",
        data=data,
        headers={"Content-Type": "application/octet-stream"},
        timeout=10,
    )
    done.raise_for_status()
    return digest


def push_image(
    url: str,
    name: str,
    tag: str,
    *,
    created: str = "2026-01-01T00:00:00Z",
    auth: tuple[str, str] | None = None,
) -> str:
    """Push ``name:tag`` (a config blob with ``created`` and one empty layer); the manifest digest."""
    session = requests.Session()
    session.auth = auth
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": created,
            "config": {"Labels": {"tag": tag}},
            "rootfs": {
                "type": "layers",
                "diff_ids": ["sha256:" + hashlib.sha256(EMPTY_LAYER).hexdigest()],
            },
        }
    ).encode()
    config_digest = _upload(session, url, name, config)
    layer_digest = _upload(session, url, name, EMPTY_LAYER)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": len(config),
                "digest": config_digest,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": len(EMPTY_LAYER),
                    "digest": layer_digest,
                }
            ],
        }
    ).encode()
    answer = session.put(
        f"{url}/v2/{name}/manifests/{tag}",
        data=manifest,
        headers={"Content-Type": "application/vnd.docker.distribution.manifest.v2+json"},
        timeout=10,
    )
    answer.raise_for_status()
    return answer.headers.get("Docker-Content-Digest", "")


@dataclass
class BearerProxy:
    """What a test reads back from :func:`bearer_proxy`."""

    host: str
    tokens_issued: list[str] = field(default_factory=list)
    pages_served: int = 0


@contextlib.contextmanager
def bearer_proxy(
    upstream: str,
    *,
    upstream_auth: tuple[str, str] | None,
    users: dict[str, str],
    page: int,
) -> Iterator[BearerProxy]:
    """A front of ``upstream`` that demands RFC 6750 bearer tokens from its own token endpoint
    (Docker's token protocol: basic auth at the realm, ``{"token": ...}`` back) and serves tag
    lists ``page`` tags at a time with ``Link: rel="next"``, as registries behind token
    services (Docker Hub, GHCR, Harbor) do.
    """
    port = free_port()
    state = BearerProxy(host=f"127.0.0.1:{port}")
    tokens: set[str] = set()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: object) -> None:
            pass

        def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            if parts.path == "/token":
                given = self.headers.get("Authorization", "")
                wanted = {
                    "Basic " + base64.b64encode(f"{u}:{p}".encode()).decode()
                    for u, p in users.items()
                }
                if given not in wanted:
                    self._send(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {})
                    return
                token = secrets.token_hex(16)
                tokens.add(token)
                state.tokens_issued.append(query.get("scope", [""])[0])
                self._send(200, json.dumps({"token": token}).encode(), {})
                return
            name = parts.path.removeprefix("/v2/").rsplit("/", 2)[0]
            bearer = self.headers.get("Authorization", "").removeprefix("Bearer ")
            if bearer not in tokens:
                challenge = (
                    f'Bearer realm="http://{state.host}/token",service="test",'
                    f'scope="repository:{name}:pull"'
                )
                self._send(401, b"{}", {"WWW-Authenticate": challenge})
                return
            if parts.path.endswith("/tags/list"):
                every = requests.get(
                    f"{upstream}/v2/{name}/tags/list", auth=upstream_auth, timeout=10
                ).json()["tags"]
                every.sort()
                last = query.get("last", [""])[0]
                rest = [t for t in every if t > last]
                chunk, more = rest[:page], rest[page:]
                headers = {"Content-Type": "application/json"}
                if more:
                    headers["Link"] = (
                        f'</v2/{name}/tags/list?n={page}&last={chunk[-1]}>; rel="next"'
                    )
                state.pages_served += 1
                self._send(200, json.dumps({"name": name, "tags": chunk}).encode(), headers)
                return
            answer = requests.get(
                upstream + self.path,
                auth=upstream_auth,
                headers={"Accept": self.headers.get("Accept", "*/*")},
                timeout=10,
            )
            self._send(
                answer.status_code,
                answer.content,
                {"Content-Type": answer.headers.get("Content-Type", "application/json")},
            )

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
