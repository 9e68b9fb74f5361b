"""Deletion as kube-apiserver does it: graceful pods, finalizers, propagation finalizers.

After staging/src/k8s.io/apiserver/pkg/registry/generic/registry/store.go
(Delete, updateForGracefulDeletionAndFinalizers), .../registry/rest/delete.go
(BeforeDelete) and pkg/registry/core/pod/strategy.go (CheckGracefulDelete).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping

from .errors import Forbidden, conflict
from .records import Entry, Obj, now_rfc3339
from .resources import Resource

IMMORTAL_NAMESPACES = frozenset({"default", "kube-system", "kube-public"})


class DeletionMixin:
    """The delete half of the Store (it supplies ``_entry`` and ``_commit``)."""

    _entry: Callable[[Resource, str | None, str], Entry]
    _commit: Callable[[Resource, str, Obj, Obj | None], Entry]

    def _delete_sync(
        self,
        res: Resource,
        namespace: str | None,
        name: str,
        grace_period_seconds: int | None = None,
        propagation_policy: str | None = None,
        preconditions: Mapping[str, str] | None = None,
    ) -> tuple[Obj, bool]:
        """Delete or mark for deletion; returns (object, removed_now)."""
        entry = self._entry(res, namespace, name)
        old = entry.obj
        if res.key == "namespaces" and name in IMMORTAL_NAMESPACES:
            # NamespaceLifecycle admission (plugin/pkg/admission/namespace/lifecycle).
            raise Forbidden(
                f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                name=name,
                kind="namespaces",
            )
        if preconditions:
            if preconditions.get("uid") and preconditions["uid"] != old["metadata"].get("uid"):
                raise conflict(
                    res.plural,
                    res.group,
                    name,
                    f"Precondition failed: UID in precondition: {preconditions['uid']}, UID in object meta: {old['metadata'].get('uid')}",
                )
            if (
                preconditions.get("resourceVersion")
                and preconditions["resourceVersion"] != old["metadata"]["resourceVersion"]
            ):
                raise conflict(
                    res.plural,
                    res.group,
                    name,
                    f"Precondition failed: ResourceVersion in precondition: {preconditions['resourceVersion']}, ResourceVersion in object meta: {old['metadata']['resourceVersion']}",
                )
        new = copy.deepcopy(old)
        meta = new["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if propagation_policy == "Orphan" and "orphan" not in finalizers:
            finalizers.append("orphan")
        elif propagation_policy == "Foreground" and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
        if (
            propagation_policy in ("Orphan", "Foreground")
            and "orphan" in finalizers
            and "foregroundDeletion" in finalizers
        ):
            finalizers.remove(
                "orphan" if propagation_policy == "Foreground" else "foregroundDeletion"
            )
        period = 0
        if res.key == "pods":
            if grace_period_seconds is not None:
                period = int(grace_period_seconds)
            else:
                period = int(new.get("spec", {}).get("terminationGracePeriodSeconds", 30) or 0)
            if not new.get("spec", {}).get("nodeName"):
                period = 0
            if new.get("status", {}).get("phase") in ("Failed", "Succeeded"):
                period = 0
            if period < 0:
                period = 1
        elif res.key == "namespaces" and (
            "kubernetes" in (new.get("spec", {}).get("finalizers") or []) or finalizers
        ):
            if not meta.get("deletionTimestamp"):
                meta["deletionTimestamp"] = now_rfc3339()
                meta["deletionGracePeriodSeconds"] = 0
            new.setdefault("status", {})["phase"] = "Terminating"
            if finalizers:
                meta["finalizers"] = finalizers
            if new == old:
                return new, False
            return self._commit(res, "MODIFIED", new, old).obj, False
        if meta.get("deletionTimestamp"):
            current = meta.get("deletionGracePeriodSeconds")
            if (
                current is not None
                and period >= int(current)
                and finalizers == (meta.get("finalizers") or [])
            ):
                # Already being deleted at least as fast: nothing changes.
                if not finalizers and int(current) == 0:
                    return self._commit(res, "DELETED", new, old).obj, True
                return new, False
        if period > 0:
            if not meta.get("deletionTimestamp") or period < int(
                meta.get("deletionGracePeriodSeconds") or 0
            ):
                meta["deletionTimestamp"] = now_rfc3339(period)
                meta["deletionGracePeriodSeconds"] = period
                if res.has_generation or "generation" in meta:
                    meta["generation"] = int(meta.get("generation", 0)) + 1
            if finalizers:
                meta["finalizers"] = finalizers
            return self._commit(res, "MODIFIED", new, old).obj, False
        if finalizers:
            if not meta.get("deletionTimestamp"):
                meta["deletionTimestamp"] = now_rfc3339()
                if "generation" in meta:
                    meta["generation"] = int(meta["generation"]) + 1
            meta["deletionGracePeriodSeconds"] = 0
            meta["finalizers"] = finalizers
            if new == old:
                return new, False
            return self._commit(res, "MODIFIED", new, old).obj, False
        if res.key == "pods":
            meta.setdefault("deletionTimestamp", now_rfc3339())
            meta["deletionGracePeriodSeconds"] = 0
        return self._commit(res, "DELETED", new, old).obj, True
