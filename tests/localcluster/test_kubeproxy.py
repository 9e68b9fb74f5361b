"""localcluster's kube-proxy: Services answer on loopback and forward to their ready endpoints.

Source: https://kubernetes.io/docs/reference/networking/virtual-ips/ (a connection to a
Service's cluster IP or node port goes to one of its ready endpoints; established
connections keep theirs; a Service without endpoints rejects connections).
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import socket
import time
from collections.abc import Callable

import pytest
from kubernetes import client

from localcluster.kubeproxy import endpoints_of

from .conftest import api_only
from .runtime_support import deployment, running_and_ready, watch_until

pytestmark = pytest.mark.skipif(api_only(), reason="the kube-proxy is part of the runtime")


def get(address: str, port: int, path: str = "/", timeout: float = 3) -> tuple[int, dict]:
    """GET on a new connection; (status, JSON body)."""
    connection = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def run_versions(
    apps: client.AppsV1Api, core: client.CoreV1Api, namespace: str, *tags: str
) -> None:
    """One Deployment ``web-<tag>`` (demo/hello:<tag>, labels app=web, tag=<tag>) per tag, ready."""
    for tag in tags:
        body = deployment(f"web-{tag}", image=f"demo/hello:{tag}", replicas=1)
        labels = {"app": "web", "tag": tag}
        body["metadata"]["labels"] = labels
        body["spec"]["selector"] = {"matchLabels": labels}
        body["spec"]["template"]["metadata"]["labels"] = labels
        apps.create_namespaced_deployment(namespace, body)
    watch_until(
        core.list_namespaced_pod,
        running_and_ready(len(tags)),
        namespace=namespace,
        label_selector="app=web",
    )


def service(name: str, selector: dict[str, str], **spec: object) -> dict:
    """A Service of port 80 to the pods' 8080."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "selector": selector,
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
            **spec,
        },
    }


def until(check: Callable[[], bool], timeout: float = 10.0) -> float:
    """Ask ``check`` until it holds; the seconds it took (AssertionError at the timeout)."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not reached within {timeout}s")
        time.sleep(0.002)
    return time.monotonic() - started


def answers(address: str, port: int, version: str) -> bool:
    """True when a new connection gets an answer from ``version``."""
    try:
        return get(address, port, timeout=1)[1].get("version") == version
    except OSError:
        return False


def test_it_gives_services_a_cluster_ip_of_the_clusters_own_loopback_range(
    core: client.CoreV1Api, namespace: str
) -> None:
    first = core.create_namespaced_service(namespace, service("a", {"app": "none"}))
    second = core.create_namespaced_service(namespace, service("b", {"app": "none"}))

    ips = [ipaddress.ip_address(s.spec.cluster_ip) for s in (first, second)]
    assert all(ip in ipaddress.ip_network("127.0.0.0/8") for ip in ips)
    assert ips[0] != ips[1]
    # The .0 subnet of the pod block: no node's pod range (127.<block>.<1-254>.0/24) has it.
    assert {str(ip).split(".")[2] for ip in ips} == {"0"}
    assert first.spec.cluster_ips == [first.spec.cluster_ip]


def test_it_refuses_a_cluster_ip_outside_loopback(core: client.CoreV1Api, namespace: str) -> None:
    with pytest.raises(client.ApiException) as caught:
        core.create_namespaced_service(
            namespace, service("outside", {"app": "web"}, clusterIP="10.96.0.10")
        )

    assert caught.value.status == 422
    body = json.loads(caught.value.body)
    assert body["details"]["causes"][0]["field"] == "spec.clusterIP"
    assert "not in the valid range" in body["message"]


def test_it_forwards_the_cluster_ip_and_every_node_port_to_the_ready_pods(
    apps: client.AppsV1Api, core: client.CoreV1Api, namespace: str
) -> None:
    run_versions(apps, core, namespace, "1")
    svc = core.create_namespaced_service(namespace, service("web", {"app": "web"}, type="NodePort"))
    node_port = svc.spec.ports[0].node_port
    assert 30000 <= node_port <= 32767

    until(lambda: answers(svc.spec.cluster_ip, 80, "1"))
    nodes = [
        a.address
        for n in core.list_node().items
        for a in n.status.addresses
        if a.type == "InternalIP"
    ]
    assert nodes
    for address in nodes:
        until(lambda address=address: answers(address, node_port, "1"))


def test_it_spreads_new_connections_over_the_ready_endpoints(
    apps: client.AppsV1Api, core: client.CoreV1Api, namespace: str
) -> None:
    run_versions(apps, core, namespace, "1", "2")
    svc = core.create_namespaced_service(namespace, service("web", {"app": "web"}))
    until(lambda: answers(svc.spec.cluster_ip, 80, "1"))

    seen = {get(svc.spec.cluster_ip, 80)[1]["version"] for _ in range(6)}

    assert seen == {"1", "2"}


def test_it_follows_a_selector_change_within_100_ms(
    apps: client.AppsV1Api, core: client.CoreV1Api, namespace: str
) -> None:
    run_versions(apps, core, namespace, "1", "2")
    svc = core.create_namespaced_service(namespace, service("web", {"app": "web", "tag": "1"}))
    ip = svc.spec.cluster_ip
    until(lambda: answers(ip, 80, "1"))

    core.patch_namespaced_service("web", namespace, {"spec": {"selector": {"tag": "2"}}})
    took = until(lambda: answers(ip, 80, "2"), timeout=5)

    assert took < 0.1, f"the new endpoints answered {took * 1000:.0f} ms after the change"
    assert all(get(ip, 80)[1]["version"] == "2" for _ in range(10))


def test_an_open_connection_keeps_its_endpoint_when_the_endpoints_change(
    apps: client.AppsV1Api, core: client.CoreV1Api, namespace: str
) -> None:
    run_versions(apps, core, namespace, "1", "2")
    svc = core.create_namespaced_service(namespace, service("web", {"app": "web", "tag": "1"}))
    ip = svc.spec.cluster_ip
    until(lambda: answers(ip, 80, "1"))
    kept = http.client.HTTPConnection(ip, 80, timeout=10)
    kept.request("GET", "/")
    first = kept.getresponse()
    assert json.loads(first.read())["version"] == "1"
    in_flight = http.client.HTTPConnection(ip, 80, timeout=10)
    in_flight.request("GET", "/sleep?seconds=0.5")

    core.patch_namespaced_service("web", namespace, {"spec": {"selector": {"tag": "2"}}})
    until(lambda: answers(ip, 80, "2"))

    response = in_flight.getresponse()
    assert (response.status, json.loads(response.read())) == (200, {"version": "1", "slept": 0.5})
    kept.request("GET", "/")
    again = kept.getresponse()
    assert (again.status, json.loads(again.read())["version"]) == (200, "1")
    kept.close()
    in_flight.close()


def test_a_service_without_ready_endpoints_resets_connections(
    core: client.CoreV1Api, namespace: str
) -> None:
    svc = core.create_namespaced_service(namespace, service("empty", {"app": "nothing"}))

    def reset() -> bool:
        try:
            with socket.create_connection((svc.spec.cluster_ip, 80), timeout=2) as sock:
                sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
                return sock.recv(100) == b""
        except (ConnectionResetError, ConnectionRefusedError):
            return True

    until(reset)


def test_a_deleted_service_stops_answering(
    apps: client.AppsV1Api, core: client.CoreV1Api, namespace: str
) -> None:
    run_versions(apps, core, namespace, "1")
    svc = core.create_namespaced_service(namespace, service("web", {"app": "web"}))
    until(lambda: answers(svc.spec.cluster_ip, 80, "1"))

    core.delete_namespaced_service("web", namespace)

    def refused() -> bool:
        try:
            socket.create_connection((svc.spec.cluster_ip, 80), timeout=1).close()
        except ConnectionRefusedError:
            return True
        return False

    until(refused)


def _slice(*endpoints: tuple[str, bool, bool, bool], port: int = 8080) -> dict:
    """An EndpointSlice of (address, ready, serving, terminating) endpoints on port ``http``."""
    return {
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": [
            {
                "addresses": [address],
                "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
            }
            for address, ready, serving, terminating in endpoints
        ],
    }


def test_it_forwards_to_the_ready_endpoints_only_while_there_are_some() -> None:
    slices = [
        _slice(
            ("127.130.1.2", True, True, False),
            ("127.130.1.3", False, True, True),
            ("127.130.1.4", False, False, False),
        )
    ]

    assert endpoints_of(slices, "http") == (("127.130.1.2", 8080),)
    assert endpoints_of(slices, "metrics") == ()


def test_it_falls_back_to_serving_terminating_endpoints_when_none_is_ready() -> None:
    slices = [
        _slice(("127.130.1.3", False, True, True), ("127.130.1.4", False, False, True)),
    ]

    assert endpoints_of(slices, "http") == (("127.130.1.3", 8080),)


def test_it_never_forwards_outside_loopback() -> None:
    slices = [_slice(("10.0.0.5", True, True, False), ("127.130.1.2", True, True, False))]

    assert endpoints_of(slices, "http") == (("127.130.1.2", 8080),)
