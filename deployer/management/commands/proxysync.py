"""``manage.py proxysync``: keep HAProxy's configuration equal to the records in etcd."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from deployer.endpointsync import EndpointSync
from deployer.errors import StoreError
from deployer.etcdstore import EtcdStore
from deployer.lbregistration import Identity
from deployer.proxysync import HAProxyTarget, ProxySync, ReloadError


class Command(BaseCommand):
    """Watch the etcd prefix; on change, update HAProxy's map at runtime or reload it hitlessly.

    The pair of this proxysync and its HAProxy is load balancer ``GREENLIGHT_LB_ID`` of the
    fleet, reached at ``GREENLIGHT_LB_ADDRESS`` (deployer.lbregistration).

    Unless ``--no-endpoints``, a second thread keeps live backends' servers equal to
    their pods (deployer.endpointsync).
    """

    help = "Watch etcd and keep HAProxy's configuration in sync (hitless reloads)."

    def add_arguments(self, parser: CommandParser) -> None:
        """``--once`` applies the current state and exits; ``--forget ID`` forgets a member."""
        parser.add_argument("--once", action="store_true", help="apply once and exit")
        parser.add_argument(
            "--forget",
            metavar="ID",
            help="delete the membership of load balancer ID, gone for good (its proxysync "
            "must not run), so that the Load balancer page no longer lists it, and exit",
        )
        parser.add_argument(
            "--no-endpoints",
            action="store_true",
            help="do not keep live backends' servers in sync with their pods",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Run until SIGTERM or SIGINT (or forget a member and exit)."""
        if options.get("forget") is not None:
            self.forget(str(options["forget"]))
            return
        target = HAProxyTarget(
            config=settings.HAPROXY_CONFIG,
            master_socket=settings.HAPROXY_MASTER_SOCKET,
            lb_port=settings.LB_PORT,
            stats_port=settings.HAPROXY_STATS_PORT,
            haproxy_bin=settings.HAPROXY_BIN,
            bind_host=settings.HAPROXY_BIND,
        )
        store = EtcdStore()
        identity = Identity(
            settings.LB_ID,
            settings.LB_ADDRESS,
            settings.LB_LEASE_SECONDS,
            stats_address=settings.LB_STATS_ADDRESS,
        )
        sync = ProxySync(store, target, identity=identity)
        try:
            if options["once"]:
                try:
                    sync.apply(store.snapshot())
                except ReloadError as exc:
                    raise CommandError(str(exc)) from exc
                finally:
                    # Nothing keeps HAProxy in step once this returns: no switch may wait for it.
                    sync.registration.leave("proxysync --once is done")
                return
            endpoints = None
            if not options["no_endpoints"]:
                # One proxysync of the fleet at a time keeps the servers in sync: the leader.
                endpoints = EndpointSync(
                    store, settings.LB_LEASE_SECONDS, holder=f"{identity.id}:{os.getpid()}"
                )
            if endpoints is not None:
                threading.Thread(target=endpoints.run, name="endpoint-sync", daemon=True).start()

            def stop(*_: object) -> None:
                sync.stop()
                if endpoints is not None:
                    endpoints.stop()

            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, stop)
            self.stdout.write(
                f"proxysync {identity.id} ({identity.address}): "
                f"{settings.ETCD_ENDPOINT}{settings.ETCD_PREFIX} -> {target.config}"
            )
            sync.run()
            if endpoints is not None:
                endpoints.release()  # another proxysync's endpoint sync takes over at once
        finally:
            store.close()

    def forget(self, lb_id: str) -> None:
        """Delete ``members/<lb_id>``: refused while it is registered, an error if unknown."""
        if not lb_id.strip():
            raise CommandError("--forget needs the id of a load balancer, e.g. lb-1")
        with EtcdStore() as store:
            try:
                forgotten = store.forget_member(lb_id)
            except StoreError as exc:
                raise CommandError(f"cannot forget {lb_id}: {exc}") from exc
        if not forgotten:
            raise CommandError(f"no load balancer {lb_id} is a member of the fleet")
        self.stdout.write(f"forgot load balancer {lb_id}; nothing waits for it any more")
