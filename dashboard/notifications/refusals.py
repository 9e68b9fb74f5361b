"""Announce each configuration a load balancer refused, once (the lb_refused_config event).

proxysync has no database: it records a refusal in its acknowledgement
(``applied/<id>``: ``{"rejected": {"revision", "error"}}``) and in its registration's
``error``. The periodic sweep reads the fleet and emits the event for each (load
balancer, revision) it has not seen, remembering it in a SeenRefusal row, so a refusal
is announced once however many processes run the sweep.
"""

from __future__ import annotations

from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from dashboard.notifications.models import SeenRefusal
from deployer.etcdstore import EtcdStore
from deployer.events import emit

# Rows older than this are forgotten (a revision is never refused twice by one balancer).
KEEP = timedelta(days=30)


def announce_refusals(store: EtcdStore) -> list[tuple[str, int]]:
    """Emit lb_refused_config for each refusal in the fleet not announced before; those emitted."""
    announced = []
    for balancer in store.load_balancers():
        rejected = (balancer.applied or {}).get("rejected")
        if not isinstance(rejected, dict):
            continue
        revision = rejected.get("revision")
        if not isinstance(revision, int) or isinstance(revision, bool) or revision <= 0:
            continue
        error = str(rejected.get("error") or "no error given")
        try:
            with transaction.atomic():
                SeenRefusal.objects.create(balancer=balancer.id, revision=revision)
        except IntegrityError:
            continue
        emit(
            "lb_refused_config",
            f"Load balancer {balancer.id} refused the configuration of etcd revision "
            f"{revision} and keeps serving its last good one: {error}",
            details={"balancer": balancer.id, "revision": revision, "reason": error},
        )
        announced.append((balancer.id, revision))
    SeenRefusal.objects.filter(seen_at__lt=timezone.now() - KEEP).delete()
    return announced
