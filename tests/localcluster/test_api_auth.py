"""Only callers holding a token, naming this server in Host, with a typed body, are served.

Sources: staging/src/k8s.io/apiserver/pkg/endpoints/filters/authentication.go
(401 with the Status "Unauthorized" and no details), .../authentication/token/tokenfile
(the --token-auth-file CSV), .../endpoints/handlers/negotiation (415 for a body
media type the server does not decode), and the public-info-viewer role
(/livez, /readyz and /version answer anonymous users).
"""

from __future__ import annotations

import json
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
import yaml

from localcluster.auth import host_allowed, read_token_file
from tests.servers import LocalCluster, start_localcluster, tls_context

from .conftest import KUBECTL, validate

EXTRA_TOKEN = "a-token-from-the-file"
UNAUTHORIZED = {
    "kind": "Status",
    "apiVersion": "v1",
    "metadata": {},
    "status": "Failure",
    "message": "Unauthorized",
    "reason": "Unauthorized",
    "code": 401,
}
POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "planted"},
    "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["id"]}]},
}
PODS = "/api/v1/namespaces/default/pods"


@pytest.fixture(scope="module")
def guarded(
    cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    """An API-only localcluster of this module's own, with one more identity in a token file."""
    if cluster.process is None:
        pytest.skip("checks the files and flags of a localcluster of its own")
    workdir = tmp_path_factory.mktemp("guarded")
    tokens = workdir / "tokens.csv"
    tokens.write_text(f'{EXTRA_TOKEN},alice,1001,"developers,viewers"\n')
    lc = start_localcluster(
        workdir, nodes=1, extra_args=["--no-runtime", "--token-auth-file", str(tokens)]
    )
    try:
        yield lc
    finally:
        lc.stop()


def kubeconfig_token(lc: LocalCluster) -> str:
    """The bearer token the cluster's kubeconfig carries."""
    return str(yaml.safe_load(lc.kubeconfig.read_text())["users"][0]["user"]["token"])


def send(
    lc: LocalCluster,
    method: str,
    path: str,
    *,
    token: str | None = None,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    """One request to ``lc`` (over TLS, trusting its CA) with exactly these credentials and headers."""
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    pool = urllib3.PoolManager(ssl_context=tls_context(lc.kubeconfig))
    return pool.request(
        method,
        f"https://127.0.0.1:{lc.port}{path}",
        body=body,
        headers=hdrs,
        timeout=10,
        retries=False,
    )


def pod_names(lc: LocalCluster) -> list[str]:
    """Names of the pods in ``default``, listed with the kubeconfig's token."""
    r = send(lc, "GET", PODS, token=kubeconfig_token(lc))
    assert r.status == 200, r.data
    return [item["metadata"]["name"] for item in r.json()["items"]]


def test_a_request_without_a_token_is_a_401_and_creates_nothing(guarded: LocalCluster) -> None:
    body = json.dumps(POD).encode()
    r = send(guarded, "POST", PODS, body=body, headers={"Content-Type": "application/json"})
    assert r.status == 401
    assert r.json() == UNAUTHORIZED
    validate(r.json())
    assert "planted" not in pod_names(guarded)


def test_every_verb_without_a_token_is_a_401(guarded: LocalCluster) -> None:
    for method, path in [
        ("GET", "/api"),
        ("GET", "/apis"),
        ("GET", "/api/v1/namespaces"),
        ("GET", f"{PODS}?watch=1"),
        ("GET", "/healthz"),
        ("GET", "/openapi/v3"),
        ("DELETE", "/api/v1/namespaces/default"),
        ("PATCH", "/api/v1/namespaces/default"),
    ]:
        r = send(guarded, method, path)
        assert (r.status, r.json()) == (401, UNAUTHORIZED), (method, path)


def test_a_wrong_token_is_a_401_even_where_no_token_is_needed(guarded: LocalCluster) -> None:
    for token in ("wrong", kubeconfig_token(guarded) + "x", kubeconfig_token(guarded)[:-1]):
        for path in (PODS, "/readyz"):
            r = send(guarded, "GET", path, token=token)
            assert (r.status, r.json()) == (401, UNAUTHORIZED), (token, path)


def test_a_basic_or_empty_authorization_header_is_no_credential(guarded: LocalCluster) -> None:
    for header in ("Basic YWRtaW46YWRtaW4=", "Bearer", "Bearer  "):
        r = send(guarded, "GET", PODS, headers={"Authorization": header})
        assert (r.status, r.json()) == (401, UNAUTHORIZED), header
        assert send(guarded, "GET", "/readyz", headers={"Authorization": header}).status == 200


def test_the_kubeconfig_token_is_accepted(guarded: LocalCluster) -> None:
    r = send(guarded, "GET", PODS, headers={"Authorization": f"bearer {kubeconfig_token(guarded)}"})
    assert r.status == 200
    assert r.json()["kind"] == "PodList"


def test_a_token_from_the_token_auth_file_is_accepted(guarded: LocalCluster) -> None:
    body = json.dumps({"metadata": {"name": "from-alice"}}).encode()
    created = send(
        guarded,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        token=EXTRA_TOKEN,
        body=body,
        headers={"Content-Type": "application/json"},
    )
    assert created.status == 201, created.data
    assert send(guarded, "GET", PODS, token=EXTRA_TOKEN).status == 200


def test_health_and_version_answer_without_a_token(guarded: LocalCluster) -> None:
    for path in ("/livez", "/readyz", "/version"):
        r = send(guarded, "GET", path)
        assert r.status == 200, path
    assert send(guarded, "GET", "/version").json()["major"] == "1"


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "*/*"],
)
def test_a_pod_posted_as_a_cross_site_body_type_is_a_415_and_not_created(
    guarded: LocalCluster, content_type: str
) -> None:
    # The three body types a web page may send cross-site without a preflight, and a wildcard.
    r = send(
        guarded,
        "POST",
        PODS,
        token=kubeconfig_token(guarded),
        body=json.dumps(POD).encode(),
        headers={"Content-Type": content_type},
    )
    assert r.status == 415
    assert r.json()["reason"] == "UnsupportedMediaType"
    validate(r.json())
    assert "planted" not in pod_names(guarded)


def test_a_delete_with_a_text_plain_body_is_a_415(guarded: LocalCluster) -> None:
    r = send(
        guarded,
        "DELETE",
        "/api/v1/namespaces/default/configmaps/anything",
        token=kubeconfig_token(guarded),
        body=b'{"gracePeriodSeconds": 0}',
        headers={"Content-Type": "text/plain"},
    )
    assert r.status == 415


def test_a_yaml_body_is_still_read(guarded: LocalCluster) -> None:
    r = send(
        guarded,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        token=kubeconfig_token(guarded),
        body=b"metadata:\n  name: from-yaml\ndata:\n  a: b\n",
        headers={"Content-Type": "application/yaml"},
    )
    assert r.status == 201, r.data
    assert r.json()["data"] == {"a": "b"}


@pytest.mark.parametrize(
    "host",
    [
        "evil.example:{port}",
        "evil.example",
        "127.0.0.1.nip.io:{port}",
        "127.0.0.1:1",
        "0.0.0.0:{port}",
    ],
)
def test_a_foreign_host_header_is_a_400_even_with_a_token(guarded: LocalCluster, host: str) -> None:
    r = send(
        guarded,
        "POST",
        PODS,
        token=kubeconfig_token(guarded),
        body=json.dumps(POD).encode(),
        headers={"Content-Type": "application/json", "Host": host.format(port=guarded.port)},
    )
    assert r.status == 400
    assert r.json()["reason"] == "BadRequest"
    assert "Host" in r.json()["message"]
    assert "planted" not in pod_names(guarded)


def test_localhost_and_the_listening_address_are_accepted_hosts(guarded: LocalCluster) -> None:
    for host in (
        f"127.0.0.1:{guarded.port}",
        f"localhost:{guarded.port}",
        f"LOCALHOST:{guarded.port}",
    ):
        r = send(guarded, "GET", PODS, token=kubeconfig_token(guarded), headers={"Host": host})
        assert r.status == 200, host


def test_the_kubeconfig_and_the_token_file_are_readable_by_their_owner_only(
    guarded: LocalCluster,
) -> None:
    assert guarded.state_dir is not None
    for path in (guarded.kubeconfig, guarded.state_dir / "token", guarded.state_dir / "ca.pem"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(guarded.state_dir.stat().st_mode) == 0o700
    assert kubeconfig_token(guarded) == (guarded.state_dir / "token").read_text().strip()
    assert len(kubeconfig_token(guarded)) >= 32


def test_the_token_is_kept_across_restarts_and_differs_per_state_dir(
    guarded: LocalCluster, tmp_path: Path
) -> None:
    first = start_localcluster(tmp_path, nodes=1, extra_args=["--no-runtime"])
    try:
        token = kubeconfig_token(first)
    finally:
        first.stop()
    old_kubeconfig = first.kubeconfig.rename(tmp_path / "old-kubeconfig")
    second = start_localcluster(tmp_path, port=first.port, nodes=1, extra_args=["--no-runtime"])
    try:
        assert kubeconfig_token(second) == token
        # The CA is kept too: a kubeconfig from before the restart still reaches the server.
        old = LocalCluster(old_kubeconfig, port=second.port)
        assert send(old, "GET", PODS, token=token).status == 200
        assert stat.S_IMODE(second.kubeconfig.stat().st_mode) == 0o600
    finally:
        second.stop()
    assert token != kubeconfig_token(guarded)


def test_plain_http_is_not_served(guarded: LocalCluster) -> None:
    # A token must never cross the wire in clear text (kubectl would not even send it).
    with pytest.raises(urllib3.exceptions.HTTPError):
        urllib3.request("GET", f"http://127.0.0.1:{guarded.port}/readyz", timeout=5, retries=False)


def test_kubectl_authenticates_with_the_kubeconfig(
    guarded: LocalCluster, kubectl_cache: Path
) -> None:
    # client-go sends a kubeconfig's token to https servers only.
    listed = subprocess.run(
        [KUBECTL, "--kubeconfig", str(guarded.kubeconfig), "--cache-dir", str(kubectl_cache)]
        + ["get", "namespaces", "-o", "name"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert "namespace/default" in listed.stdout.split()


def test_an_unreadable_token_auth_file_stops_the_server_with_a_message(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    if cluster.process is None:
        pytest.skip("starts a localcluster of its own")
    bad = tmp_path / "tokens.csv"
    bad.write_text("only-a-token,and-a-user\n")
    with pytest.raises(RuntimeError, match="at least 3 columns"):
        start_localcluster(
            tmp_path / "lc", nodes=1, extra_args=["--no-runtime", "--token-auth-file", str(bad)]
        )


def test_it_reads_token_files_as_kube_apiserver_does(tmp_path: Path) -> None:
    path = tmp_path / "tokens.csv"
    path.write_text('t1,alice,1001,"dev,ops"\nt2,bob,1002\n\n,nobody,0\nt3,carol,1003,solo\n')
    users = read_token_file(path)
    assert set(users) == {"t1", "t2", "t3"}
    assert (users["t1"].name, users["t1"].uid, users["t1"].groups) == (
        "alice",
        "1001",
        ("dev", "ops"),
    )
    assert users["t2"].groups == ()
    assert users["t3"].groups == ("solo",)


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1:6443", True),
        ("localhost:6443", True),
        ("127.0.0.1:6444", False),
        ("127.0.0.1", False),
        ("localhost", False),
        ("attacker.example:6443", False),
        ("localhost.:6443", False),
        ("user@127.0.0.1:6443", False),
        ("127.0.0.1:6443/x", False),
        ("127.0.0.1:notaport", False),
        ("[::1]:6443", False),
        ("", False),
    ],
)
def test_a_host_is_allowed_only_when_it_names_the_local_address(host: str, allowed: bool) -> None:
    assert host_allowed(host, "127.0.0.1", 6443) is allowed


def test_ipv6_loopback_hosts_are_allowed_on_an_ipv6_listener() -> None:
    assert host_allowed("[::1]:6443", "::1", 6443)
    assert host_allowed("localhost:6443", "::1", 6443)
    assert not host_allowed("127.0.0.1:6443", "::1", 6443)
    assert host_allowed("127.0.0.1:80", "127.0.0.1", 80)
    assert host_allowed("127.0.0.1", "127.0.0.1", 80)
