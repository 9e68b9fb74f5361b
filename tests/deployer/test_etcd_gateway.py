"""etcd serves gRPC only: its HTTP/JSON gateway, which a cross-site POST can reach, is off."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import yaml

from deployer.etcdstore import EtcdStore
from launcher.stack import etcd_command
from tests.servers import Server

REPO = Path(__file__).resolve().parents[2]


def b64(text: str) -> str:
    """The base64 form the gateway's JSON carries keys and values in."""
    return base64.b64encode(text.encode()).decode()


def http_post(url: str, body: bytes) -> int:
    """POST ``body`` as a web page could without a preflight; the status, or 0 when refused."""
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "text/plain"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0


def test_etcd_refuses_an_http_put_while_the_grpc_client_works(etcd: Server) -> None:
    prefix = f"/gateway-{uuid.uuid4().hex[:8]}"
    planted = f"{prefix}/backends/planted"
    body = json.dumps({"key": b64(planted), "value": b64('{"servers": []}')}).encode()
    for path in ("/v3/kv/put", "/v3beta/kv/put", "/v3alpha/kv/put"):
        status = http_post(f"http://127.0.0.1:{etcd.port}{path}", body)
        assert status == 0 or 400 <= status < 500, (path, status)
    with EtcdStore(str(etcd.extra["endpoint"]), prefix) as store:
        assert store.get(planted) == (None, 0)
        store.put_backend("written", {"servers": [], "version": 1})
        assert store.get_backend("written") == {"servers": [], "version": 1}


def test_every_etcd_the_stack_starts_has_its_gateway_off(tmp_path: Path) -> None:
    # `make run` and tests.servers share etcd_command; docker-compose has its own.
    assert "--enable-grpc-gateway=false" in etcd_command(2379, 2380, 2381, tmp_path)
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert "--enable-grpc-gateway=false" in compose["services"]["etcd"]["command"]
