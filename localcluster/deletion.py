"""Deletion as kube-apiserver does it: graceful pods, finalizers, propagation finalizers.

After staging/src/k8s.io/apiserver/pkg/registry/generic/registry/store.go
(Delete, updateForGracefulDeletionAndFinalizers), .../registry/rest/delete.go
(BeforeDelete) and pkg/registry/core/pod/strategy.go (CheckGracefulDelete).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import TypedDict

from .errors import Forbidden, conflict
from .records import Entry, Obj, now_rfc3339
from .resources import Resource, ResourceRef, lookup

IMMORTAL_NAMESPACES = frozenset({"default", "kube-system", "kube-public"})


def _refuse_immortal_namespace(res: Resource, name: str) -> None:
    """NamespaceLifecycle admission (plugin/pkg/admission/namespace/lifecycle)."""
    if res.key == "namespaces" and name in IMMORTAL_NAMESPACES:
        raise Forbidden(
            f'namespaces "{name}" is forbidden: this namespace may not be deleted',
            name=name,
            kind="namespaces",
        )


def _check_preconditions(
    res: Resource, name: str, old: Obj, preconditions: Mapping[str, str]
) -> None:
    """Conflict unless the stored object has the uid and resourceVersion the caller expects."""
    for field, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
        expected = preconditions.get(field)
        actual = old["metadata"].get(field)
        if expected and expected != actual:
            message = f"Precondition failed: {label} in precondition: {expected}, {label} in object meta: {actual}"
            raise conflict(res.plural, res.group, name, message)


def _finalizers_after(meta: Obj, propagation_policy: str | None) -> list[str]:
    """The object's finalizers with the one its propagation policy asks for (never both)."""
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
        finalizers.remove("orphan" if propagation_policy == "Foreground" else "foregroundDeletion")
    return finalizers


def _pod_grace_period(pod: Obj, grace_period_seconds: int | None) -> int:
    """CheckGracefulDelete: unscheduled and finished pods go at once, a negative period is 1."""
    if grace_period_seconds is not None:
        period = int(grace_period_seconds)
    else:
        period = int(pod.get("spec", {}).get("terminationGracePeriodSeconds", 30) or 0)
    if not pod.get("spec", {}).get("nodeName"):
        return 0
    if pod.get("status", {}).get("phase") in ("Failed", "Succeeded"):
        return 0
    return 1 if period < 0 else period


def _namespace_needs_finalizing(namespace: Obj, finalizers: list[str]) -> bool:
    return "kubernetes" in (namespace.get("spec", {}).get("finalizers") or []) or bool(finalizers)


class DeleteOptions(TypedDict, total=False):
    """How a delete proceeds (the API's DeleteOptions): grace, propagation, preconditions."""

    grace_period_seconds: int | None
    propagation_policy: str | None
    preconditions: Mapping[str, str] | None


class DeletionMixin:
    """The delete half of the Store (it supplies ``_entry`` and ``_commit``)."""

    _entry: Callable[[Resource, str | None, str], Entry]
    _commit: Callable[[Resource, str, Obj, Obj | None], Entry]

    def delete_sync(
        self,
        resource: ResourceRef,
        namespace: str | None,
        name: str,
        grace_period_seconds: int | None = None,
        propagation_policy: str | None = None,
        preconditions: Mapping[str, str] | None = None,
    ) -> tuple[Obj, bool]:
        """Delete or mark for deletion; returns (stored object, removed_now) without copying it."""
        res = lookup(resource)
        old = self._entry(res, namespace, name).obj
        _refuse_immortal_namespace(res, name)
        if preconditions:
            _check_preconditions(res, name, old, preconditions)
        new = copy.deepcopy(old)
        if propagation_policy is None and res.key == "jobs.batch":
            # batch/v1 Jobs orphan their pods unless told otherwise (DefaultGarbageCollectionPolicy).
            propagation_policy = "Orphan"
        finalizers = _finalizers_after(new["metadata"], propagation_policy)
        if res.key == "namespaces" and _namespace_needs_finalizing(new, finalizers):
            return self._terminate_namespace(res, new, old, finalizers), False
        period = _pod_grace_period(new, grace_period_seconds) if res.key == "pods" else 0
        repeated = self._repeated_delete(res, new, old, period, finalizers)
        if repeated is not None:
            return repeated
        if period > 0:
            return self._delete_gracefully(res, new, old, period, finalizers), False
        if finalizers:
            return self._await_finalizers(res, new, old, finalizers), False
        if res.key == "pods":
            new["metadata"].setdefault("deletionTimestamp", now_rfc3339())
            new["metadata"]["deletionGracePeriodSeconds"] = 0
        return self._commit(res, "DELETED", new, old).obj, True

    def _terminate_namespace(self, res: Resource, new: Obj, old: Obj, finalizers: list[str]) -> Obj:
        """Mark a namespace Terminating; the namespace controller empties and removes it."""
        meta = new["metadata"]
        if not meta.get("deletionTimestamp"):
            meta["deletionTimestamp"] = now_rfc3339()
            meta["deletionGracePeriodSeconds"] = 0
        new.setdefault("status", {})["phase"] = "Terminating"
        if finalizers:
            meta["finalizers"] = finalizers
        if new == old:
            return new
        return self._commit(res, "MODIFIED", new, old).obj

    def _repeated_delete(
        self, res: Resource, new: Obj, old: Obj, period: int, finalizers: list[str]
    ) -> tuple[Obj, bool] | None:
        """The answer to deleting an object already being deleted at least as fast, else None."""
        meta = new["metadata"]
        current = meta.get("deletionGracePeriodSeconds")
        if (
            not meta.get("deletionTimestamp")
            or current is None
            or period < int(current)
            or finalizers != (meta.get("finalizers") or [])
        ):
            return None
        if not finalizers and int(current) == 0:
            return self._commit(res, "DELETED", new, old).obj, True
        return new, False

    def _delete_gracefully(
        self, res: Resource, new: Obj, old: Obj, period: int, finalizers: list[str]
    ) -> Obj:
        """Set (or shorten) the deletion deadline; the kubelet removes the pod once it stopped."""
        meta = new["metadata"]
        if not meta.get("deletionTimestamp") or period < int(
            meta.get("deletionGracePeriodSeconds") or 0
        ):
            meta["deletionTimestamp"] = now_rfc3339(period)
            meta["deletionGracePeriodSeconds"] = period
            if res.has_generation or "generation" in meta:
                meta["generation"] = int(meta.get("generation", 0)) + 1
        if finalizers:
            meta["finalizers"] = finalizers
        return self._commit(res, "MODIFIED", new, old).obj

    def _await_finalizers(self, res: Resource, new: Obj, old: Obj, finalizers: list[str]) -> Obj:
        """Mark the object deleted; it goes once its finalizers are removed."""
        meta = new["metadata"]
        if not meta.get("deletionTimestamp"):
            meta["deletionTimestamp"] = now_rfc3339()
            if "generation" in meta:
                meta["generation"] = int(meta["generation"]) + 1
        meta["deletionGracePeriodSeconds"] = 0
        meta["finalizers"] = finalizers
        if new == old:
            return new
        return self._commit(res, "MODIFIED", new, old).obj
