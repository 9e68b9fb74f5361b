"""kube-proxy for localcluster: ClusterIP and NodePort Services answer on loopback addresses.

Every TCP port of a Service with a cluster IP gets a listener on ``clusterIP:port``; a
NodePort (or LoadBalancer) Service also gets one on ``<node address>:nodePort`` of every
node. Each accepted connection is forwarded to one endpoint of the Service's EndpointSlices
(round robin): the ready ones, or, when none is ready, the serving ones that are
terminating, as kube-proxy does. A connection keeps its endpoint until either side closes
it; a change of the endpoints only affects the connections accepted after it. A Service
without endpoints resets the connections it accepts, as kube-proxy's REJECT rule does.

The proxy is a controller on the store's change listener: a Service, EndpointSlice or Node
change reaches it inside the commit that made it, and its new endpoints are in force for
the next connection as soon as the event loop gets to it (well under a millisecond), with
no polling.

Addresses: Services get ``127.<block>.0.<n>``, the ``.0`` subnet of the cluster's pod
block (node pod ranges are ``127.<block>.<1-254>.0/24``), so clusters side by side never
share a cluster IP. Nodes answer on their InternalIP ``127.100.0.<i>``. Nothing outside
127.0.0.0/8 is ever bound or connected to.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .controllers.base import Controller, Key, obj_key
from .controllers.endpoints import SERVICE_NAME_LABEL
from .controllers.events import EventRecorder
from .store import Event, Store

log = logging.getLogger(__name__)

SLICES = "endpointslices.discovery.k8s.io"
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
NODE_PORT_TYPES = ("NodePort", "LoadBalancer")
LISTEN_BACKLOG = 1024

Address = tuple[str, int]


def service_ip_base(block: int) -> str:
    """The first three octets of the Service range of the cluster holding pod block ``block``."""
    return f"127.{block}.0"


def is_loopback(address: str) -> bool:
    """True for an IPv4 address in 127.0.0.0/8."""
    try:
        return ipaddress.ip_address(address) in LOOPBACK
    except ValueError:
        return False


@dataclass
class Frontend:
    """One listening address of a Service port and the endpoints its new connections go to."""

    address: Address
    owner: Key
    backends: tuple[Address, ...] = ()
    server: asyncio.base_events.Server | None = None
    _turn: itertools.count[int] = field(default_factory=itertools.count)

    def order(self) -> list[Address]:
        """The endpoints to try for a new connection: round robin, then the others in turn."""
        backends = self.backends
        if not backends:
            return []
        start = next(self._turn) % len(backends)
        return list(backends[start:] + backends[:start])


class _Side(asyncio.Protocol):
    """One socket of a forwarded connection; it writes what it reads to its peer."""

    def __init__(self, connection: _Connection) -> None:
        self.connection = connection
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        if peer is None or peer.transport is None:
            return False
        if peer.eof:
            self.connection.close()
            return False
        if peer.transport.can_write_eof():
            peer.transport.write_eof()
        return True  # half-closed: the other direction goes on

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.connection.lost(self, exc)

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class _ClientSide(_Side):
    """The accepted socket of a forwarded connection."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self.connection.accepted(self.transport)


class _Connection:
    """An accepted connection and the endpoint it was forwarded to."""

    def __init__(self, proxy: KubeProxy, frontend: Frontend) -> None:
        self.proxy = proxy
        self.frontend = frontend
        self.client: _Side = _ClientSide(self)
        self.upstream: _Side | None = None
        self.closed = False
        self.task: asyncio.Task[None] | None = None

    def accepted(self, transport: asyncio.Transport) -> None:
        """The client's socket is open: pick its endpoint now and connect to it."""
        self.proxy.connections.add(self)
        order = self.frontend.order()
        if not order:
            self.reset()
            return
        # Nothing is read from the client until its endpoint is connected.
        transport.pause_reading()
        self.task = asyncio.get_running_loop().create_task(self._connect(order))

    async def _connect(self, order: list[Address]) -> None:
        loop = asyncio.get_running_loop()
        for host, port in order:
            if self.closed:
                return
            if not is_loopback(host):
                continue
            upstream = _Side(self)
            try:
                await loop.create_connection(lambda upstream=upstream: upstream, host, port)
            except OSError as exc:
                log.debug("kube-proxy: %s:%d refused a connection: %s", host, port, exc)
                continue
            if self.closed or self.client.transport is None:
                if upstream.transport is not None:
                    upstream.transport.close()
                return
            self.upstream = upstream
            upstream.peer, self.client.peer = self.client, upstream
            if self.client.eof and upstream.transport is not None:
                upstream.transport.write_eof()
            self.client.transport.resume_reading()
            return
        self.reset()

    def reset(self) -> None:
        """Refuse the client: close its socket with a reset."""
        transport = self.client.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        self.close()

    def close(self) -> None:
        """Close both sockets, after what was written to them has gone out."""
        self.closed = True
        for side in (self.client, self.upstream):
            if side is not None and side.transport is not None:
                side.transport.close()
        self.proxy.connections.discard(self)

    def lost(self, side: _Side, exc: Exception | None) -> None:
        """One socket is gone: close the other (abort it when this one was reset)."""
        self.closed = True  # a connect still under way gives up
        other = self.upstream if side is self.client else self.client
        if other is not None and other.transport is not None:
            if exc is not None:
                other.transport.abort()
            else:
                other.transport.close()
            return
        self.proxy.connections.discard(self)

    def abort(self) -> None:
        """Drop both sockets at once (the cluster stops)."""
        self.closed = True
        for side in (self.client, self.upstream):
            if side is not None and side.transport is not None:
                side.transport.abort()
        if self.task is not None:
            self.task.cancel()


class KubeProxy(Controller):
    """Keeps one listener per Service port address, each forwarding to its current endpoints."""

    name = "kube-proxy"
    component = "kube-proxy"
    owns = "services"

    def __init__(self, store: Store, recorder: EventRecorder, block: int) -> None:
        super().__init__(store, recorder)
        self.block = block
        self.frontends: dict[Address, Frontend] = {}
        self.by_service: dict[Key, set[Address]] = {}
        self.connections: set[_Connection] = set()

    def start(self) -> None:
        """Allocate cluster IPs from this cluster's range, then serve every Service."""
        self.store.cluster_ip_base = service_ip_base(self.block)
        log.info("kube-proxy: Services get %s.0/24", self.store.cluster_ip_base)
        super().start()

    async def stop(self) -> None:
        """Stop listening and drop every forwarded connection."""
        await super().stop()
        for frontend in list(self.frontends.values()):
            self._close(frontend)
        self.frontends.clear()
        self.by_service.clear()
        for connection in list(self.connections):
            connection.abort()
        self.connections.clear()

    def related_keys(self, event: Event) -> Iterable[Key]:
        """The Service of a changed EndpointSlice; every node-port Service on a Node change."""
        if event.resource == SLICES:
            service = (event.obj["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL)
            return [(event.obj["metadata"]["namespace"], service)] if service else []
        if event.resource == "nodes":
            return [
                obj_key(entry.obj)
                for entry in self.store.select("services")
                if (entry.obj.get("spec") or {}).get("type") in NODE_PORT_TYPES
            ]
        return []

    async def reconcile(self, key: Key) -> None:
        """Bring the listeners and endpoints of one Service in line with the store."""
        svc = self.store.peek("services", key[0], key[1])
        wanted = self.desired(svc) if svc is not None else {}
        for address in self.by_service.get(key, set()) - set(wanted):
            frontend = self.frontends.pop(address, None)
            if frontend is not None:
                self._close(frontend)
        owned = set()
        for address, backends in wanted.items():
            frontend = self.frontends.get(address)
            if frontend is not None and frontend.owner != key:
                log.warning(
                    "kube-proxy: %s:%d is %s/%s's; %s/%s cannot use it",
                    *address,
                    *frontend.owner,
                    *key,
                )
                continue
            if frontend is None:
                frontend = Frontend(address, key)
                try:
                    frontend.server = await self._listen(frontend)
                except OSError as exc:
                    log.warning(
                        "kube-proxy: cannot listen on %s:%d for %s/%s: %s", *address, *key, exc
                    )
                    continue
                self.frontends[address] = frontend
            frontend.backends = backends
            owned.add(address)
        if owned:
            self.by_service[key] = owned
        else:
            self.by_service.pop(key, None)

    def desired(self, svc: dict[str, Any]) -> dict[Address, tuple[Address, ...]]:
        """Each listening address of a Service and the endpoints behind it."""
        spec = svc.get("spec") or {}
        if spec.get("type") == "ExternalName":
            return {}
        cluster_ip = str(spec.get("clusterIP") or "")
        node_addresses = self._node_addresses() if spec.get("type") in NODE_PORT_TYPES else []
        slices = [
            entry.obj
            for entry in self.store.select(
                SLICES, svc["metadata"]["namespace"], {SERVICE_NAME_LABEL: svc["metadata"]["name"]}
            )
        ]
        wanted: dict[Address, tuple[Address, ...]] = {}
        for port in spec.get("ports") or []:
            if port.get("protocol", "TCP") != "TCP" or not isinstance(port.get("port"), int):
                continue
            backends = endpoints_of(slices, str(port.get("name") or ""))
            if is_loopback(cluster_ip):
                wanted[(cluster_ip, port["port"])] = backends
            node_port = port.get("nodePort")
            if isinstance(node_port, int):
                for address in node_addresses:
                    wanted[(address, node_port)] = backends
        return wanted

    def _node_addresses(self) -> list[str]:
        addresses = []
        for entry in self.store.select("nodes"):
            for item in (entry.obj.get("status") or {}).get("addresses") or []:
                if item.get("type") == "InternalIP" and is_loopback(str(item.get("address"))):
                    addresses.append(str(item["address"]))
        return addresses

    async def _listen(self, frontend: Frontend) -> asyncio.base_events.Server:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(frontend.address)
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        loop = asyncio.get_running_loop()
        return await loop.create_server(
            lambda: _Connection(self, frontend).client, sock=sock, backlog=LISTEN_BACKLOG
        )

    def _close(self, frontend: Frontend) -> None:
        # Only the listener: connections already forwarded keep their endpoint.
        if frontend.server is not None:
            frontend.server.close()
            frontend.server = None


def endpoints_of(slices: list[dict[str, Any]], port_name: str) -> tuple[Address, ...]:
    """The endpoints of a Service port: the ready ones, else the serving terminating ones."""
    ready: list[Address] = []
    serving: list[Address] = []
    for item in slices:
        if item.get("addressType", "IPv4") != "IPv4":
            continue
        target = next(
            (
                p.get("port")
                for p in item.get("ports") or []
                if str(p.get("name") or "") == port_name and p.get("protocol", "TCP") == "TCP"
            ),
            None,
        )
        if not isinstance(target, int):
            continue
        for endpoint in item.get("endpoints") or []:
            conditions = endpoint.get("conditions") or {}
            for address in endpoint.get("addresses") or []:
                if not is_loopback(str(address)):
                    continue
                if conditions.get("ready") is not False:
                    ready.append((str(address), target))
                elif conditions.get("serving") and conditions.get("terminating"):
                    serving.append((str(address), target))
    return tuple(sorted(set(ready or serving)))
