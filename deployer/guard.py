"""The guard after the switch: bake the new version under users' traffic, swap back on a breach.

For the app's bake time (``guard.bake_seconds`` of the descriptor) after the switch was
verified, the guard reads HAProxy's counters of the new version's backend and of the
previous (warm) one on every live load balancer of the fleet, about once a second, summed
across them as deltas from the bake's start, across reloads (deployer.guardcounters).
Response times are weighted by each load balancer's requests.

The new version *breaches* when, over at least ``min_requests`` requests, more than
``max_error_percent`` % of them answered 5xx, or, when ``max_response_ms`` is set, their
average response time (``rtime``) is above it; or when the app's PromQL query
(``guard.promql``, asked of ``settings.GREENLIGHT_PROMETHEUS_URL`` at ``/api/v1/query``)
returns any sample whose value is non-zero (a NaN is no data, never a breach). An
unreachable or failing Prometheus, or load balancer, is logged and never swaps back. The
first breach ends the bake: the guard raises StopDeployment with a reason that starts with
``guard:`` and quotes the figures, and the workflow's rollback points the frontend back at
the previous backend, whose pods still run (retirement comes after the guard).

In traffic mode ``service`` each version's backend record has one server, the app's
stable Service. The guard starts after the switch was verified, when that Service selects
only the new version's pods (deployer.traffic), and the frontend points at the new
version's backend: that backend's counters during the bake are the new version's. The
previous version's backend, which nothing routes to after the switch, shows what it
counted before the switch, through the stable Service while it selected the previous
version (and the moments between the selector's move and the frontend's, which the
switch's own checks cover). A swap back moves the selector back with the frontend.

Skipped, with a log line: a bake of 0 s, no previous version to swap back to. Fewer than
``min_requests`` requests by the end of the bake pass it, saying so.

While it bakes, the guard's reading is written to ``Deployment.guard`` (one UPDATE about
every WRITE_SECONDS) and published to the deployment's live socket as a
``deployment.guard`` message, so the page shows both versions' figures and the outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from deployer import events, logsink, traffic
from deployer.collaborators import StopDeployment
from deployer.guardcounters import Figures, FleetCounters
from deployer.models import Deployment
from deployer.promql import PrometheusError, breaching, query_prometheus

if TYPE_CHECKING:
    from deployer.workflow import Workflow

STEP = "guard"
# How often the counters are read, and how often the reading is written for the page.
SAMPLE_SECONDS = 1.0
WRITE_SECONDS = 2.0


@dataclass(frozen=True)
class Thresholds:
    """The app's guard settings as snapshotted with the deployment (App.snapshot()["guard"])."""

    bake_seconds: int = 0
    max_error_percent: float = 5.0
    min_requests: int = 20
    max_response_ms: int | None = None
    promql: str = ""

    @classmethod
    def of(cls, descriptor: dict[str, Any]) -> Thresholds:
        """The descriptor's guard; none (a bake of 0) in a snapshot older than the guard."""
        guard = descriptor.get("guard")
        if not isinstance(guard, dict):
            return cls()
        limit = guard.get("max_response_ms")
        return cls(
            bake_seconds=int(guard.get("bake_seconds") or 0),
            max_error_percent=float(guard.get("max_error_percent", 5.0)),
            min_requests=int(guard.get("min_requests", 20)),
            max_response_ms=int(limit) if limit else None,
            promql=str(guard.get("promql") or ""),
        )

    def describe(self) -> str:
        """What breaches, in words: ``more than 5% of at least 20 requests answer 5xx, ...``."""
        parts = [
            f"more than {self.max_error_percent:g}% of at least {self.min_requests} requests "
            "answer 5xx"
        ]
        if self.max_response_ms:
            parts.append(f"their average response time passes {self.max_response_ms} ms")
        if self.promql:
            parts.append("the PromQL query returns a non-zero sample")
        return ", or ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        """The thresholds as the page shows them."""
        return {
            "bake_seconds": self.bake_seconds,
            "max_error_percent": self.max_error_percent,
            "min_requests": self.min_requests,
            "max_response_ms": self.max_response_ms,
            "promql": self.promql,
        }


class Guard:
    """One bake of one deployment; see the module docstring."""

    def __init__(self, workflow: Workflow) -> None:
        self.workflow = workflow
        self.thresholds = Thresholds.of(workflow.descriptor)
        self.version = workflow.deployment.version
        self.previous = workflow.previous_version
        # Read in both traffic modes; ``service`` changes what the log says they measure.
        self.counted = True
        self.service = traffic.is_service_mode(workflow.descriptor)
        self.counters = FleetCounters(
            backends={"new": workflow.new_backend(), "previous": workflow.previous_backend or ""},
            versions={"new": self.version, "previous": self.previous},
        )
        self.started = 0.0
        self.started_at = ""
        self.prometheus: dict[str, Any] = {}
        self.warned: set[str] = set()

    def log(self, message: str, level: logsink.Level = "info") -> None:
        """One line of the guard step."""
        self.workflow.log(message, level=level, step=STEP)

    def skip_reason(self) -> str:
        """Why this deploy is not baked ("" when it is)."""
        bake = self.thresholds.bake_seconds
        if bake <= 0:
            return "Guard skipped: the app's bake time is 0 s."
        workflow = self.workflow
        if not self.previous or not workflow.previous_backend:
            return "Guard skipped: there is no previous version to swap back to."
        if workflow.lb.get_backend(workflow.previous_backend) is None:
            return (
                f"Guard skipped: v{self.previous}'s backend {workflow.previous_backend} is gone, "
                "so there is nothing to swap back to."
            )
        return ""

    def run(self) -> None:
        """Bake the new version; StopDeployment (``guard: ...``) on the first breach."""
        if reason := self.skip_reason():
            self.log(reason)
            return
        self.started = self.workflow.clock.monotonic()
        self.started_at = timezone.now().isoformat()
        self.counters.sample(self.workflow.lb.load_balancers())
        self.log(self.start_line())
        self.write("baking")
        written = self.workflow.clock.monotonic()
        deadline = self.started + self.thresholds.bake_seconds
        while True:
            now = self.workflow.clock.monotonic()
            if now >= deadline:
                break
            self.workflow.clock.sleep(min(SAMPLE_SECONDS, deadline - now))
            self.workflow.check_step()
            if self.counted:
                self.counters.sample(self.workflow.lb.load_balancers())
                self.warn_unreadable()
            breach = self.breach()
            if breach:
                self.swap_back(breach)
            if self.workflow.clock.monotonic() - written >= WRITE_SECONDS:
                self.write("baking")
                written = self.workflow.clock.monotonic()
        self.finish()

    def elapsed(self) -> float:
        """Seconds since the bake started."""
        return max(0.0, self.workflow.clock.monotonic() - self.started)

    def start_line(self) -> str:
        """The bake's first line: what is watched, what breaches, the counters at the start."""
        line = (
            f"Baking v{self.version} for {self.thresholds.bake_seconds}s under users' traffic; "
            f"swapping back to v{self.previous} if {self.thresholds.describe()}."
        )
        before = self.counters.figures_before("previous")
        read = ", ".join(self.counters.balancers) or "none"
        if self.service:
            backends = self.counters.backends
            line += (
                f" Counters read from load balancers: {read}. In traffic mode service v"
                f"{self.version}'s figures are those of its backend {backends['new']}, whose "
                f"one server is the stable Service {self.workflow.name}, which selects only "
                f"v{self.version}'s pods since the verified switch; v{self.previous}'s backend "
                f"{backends['previous']} answered 5xx to {before.counts()} requests before the "
                f"switch, through the stable Service while it selected v{self.previous}."
            )
        else:
            line += (
                f" Counters read from load balancers: {read}; v{self.previous} answered 5xx to "
                f"{before.counts()} requests before the switch."
            )
        return line

    def warn_unreadable(self) -> None:
        """Name each load balancer whose counters cannot be read, once per bake."""
        for lb_id, problem in sorted(self.counters.problems.items()):
            if lb_id not in self.warned:
                self.warned.add(lb_id)
                self.log(
                    f"Cannot read the counters of load balancer {lb_id} ({problem}); the "
                    "guard judges by the others.",
                    level="warning",
                )

    def breach(self) -> str:
        """The reason to swap back now ("" when none), starting with ``guard:``."""
        elapsed = self.elapsed()
        if self.counted:
            new, previous = self.counters.figures("new"), self.counters.figures("previous")
            if new.requests >= self.thresholds.min_requests:
                if new.error_percent > self.thresholds.max_error_percent:
                    return (
                        f"guard: v{self.version} answered 5xx to {new.counts()} requests "
                        f"({new.error_percent:.1f}%) in {elapsed:.0f}s, above "
                        f"{self.thresholds.max_error_percent:g}%; {self.previous_counts(previous)}"
                    )
                limit = self.thresholds.max_response_ms
                if limit and new.rtime_ms is not None and new.rtime_ms > limit:
                    return (
                        f"guard: v{self.version} took {new.rtime_ms:.0f} ms on average to "
                        f"answer {new.requests} requests in {elapsed:.0f}s, above {limit} ms; "
                        f"v{self.previous} {self._ms(previous.rtime_ms)}"
                    )
        if self.thresholds.promql:
            return self.promql_breach(elapsed)
        return ""

    def previous_counts(self, during: Figures) -> str:
        """The previous version's 5xx counts: during the bake if it had requests, else before."""
        if during.requests:
            return f"v{self.previous} {during.counts()}"
        before = self.counters.figures_before("previous")
        return f"v{self.previous} {before.counts()} before the switch"

    @staticmethod
    def _ms(value: float | None) -> str:
        return "no figure" if value is None else f"{value:.0f} ms"

    def promql_breach(self, elapsed: float) -> str:
        """Ask Prometheus; the reason when a sample is non-zero. Failures are logged once."""
        url = str(getattr(settings, "GREENLIGHT_PROMETHEUS_URL", "") or "")
        if not url:
            if "prometheus" not in self.warned:
                self.warned.add("prometheus")
                self.log(
                    "The app has a PromQL query but no Prometheus is configured "
                    "(GREENLIGHT_PROMETHEUS_URL); the query is not checked.",
                    level="warning",
                )
            return ""
        try:
            samples = query_prometheus(url, self.thresholds.promql)
        except PrometheusError as exc:
            self.prometheus = {"error": str(exc)}
            if "prometheus" not in self.warned:
                self.warned.add("prometheus")
                self.log(
                    f"Prometheus could not answer the guard's query ({exc}); this does not "
                    "swap back.",
                    level="warning",
                )
            return ""
        bad = breaching(samples)
        self.prometheus = {
            "samples": len(samples),
            "breaching": [s.describe() for s in bad[:5]],
        }
        if not bad:
            return ""
        return (
            f"guard: the PromQL query {self.thresholds.promql!r} returned {len(bad)} non-zero "
            f"sample{'s' if len(bad) != 1 else ''} in {elapsed:.0f}s ({bad[0].describe()})"
        )

    def payload(self, state: str, reason: str = "") -> dict[str, Any]:
        """Deployment.guard as the page shows it."""
        payload: dict[str, Any] = {
            "state": state,
            "bake_seconds": self.thresholds.bake_seconds,
            "elapsed": round(self.elapsed(), 1),
            "started_at": self.started_at,
            "thresholds": self.thresholds.as_dict(),
            "counted": self.counted,
            "traffic": "service" if self.service else "haproxy",
            "reason": reason,
        }
        if self.counted:
            payload.update(
                new=self.counters.figures("new").as_dict(),
                previous=self.counters.figures("previous").as_dict(),
                previous_before=self.counters.figures_before("previous").as_dict(),
                balancers=self.counters.balancers,
                unreadable=dict(self.counters.problems),
                resets=self.counters.resets,
            )
        if self.thresholds.promql:
            payload["prometheus"] = dict(self.prometheus)
        return payload

    def write(self, state: str, reason: str = "") -> dict[str, Any]:
        """Store the reading in Deployment.guard (one UPDATE) and publish it after commit."""
        payload = self.payload(state, reason)
        pk = self.workflow.deployment.pk
        self.workflow.deployment.guard = payload

        def store() -> None:
            Deployment.objects.filter(pk=pk).update(guard=payload)
            message = {"type": "deployment.guard", "deployment": pk, "guard": payload}
            transaction.on_commit(lambda: logsink.publish(logsink.group_name(pk), message))

        self.workflow.write(store)
        return payload

    def figures_line(self) -> str:
        """Both versions' figures of the bake, for its last line."""
        new, previous = self.counters.figures("new"), self.counters.figures("previous")
        line = (
            f"v{self.version} answered 5xx to {new.counts()} requests ({new.error_percent:.1f}%), "
            f"average response {self._ms(new.rtime_ms)}; {self.previous_counts(previous)}"
        )
        if self.service:
            line += f" (through the stable Service {self.workflow.name})"
        if self.counters.resets:
            line += f"; counted across {self.counters.resets} counter reset(s)"
        return line

    def finish(self) -> None:
        """The bake passed: say so with the figures, and store the outcome."""
        new = self.counters.figures("new")
        if self.counted and new.requests < self.thresholds.min_requests:
            note = (
                f"v{self.version} passed the bake of {self.thresholds.bake_seconds}s without "
                f"judgement on its counters: {new.requests} requests, fewer than the "
                f"{self.thresholds.min_requests} needed ({self.figures_line()})."
            )
        else:
            note = (
                f"v{self.version} passed the bake of {self.thresholds.bake_seconds}s: "
                f"{self.figures_line()}."
            )
        self.log(note)
        self.write("passed", note)

    def swap_back(self, reason: str) -> None:
        """Store and announce the breach; raise StopDeployment so the rollback swaps back."""
        payload = self.write("swapped_back", reason)
        self.log(
            f"Breach after {self.elapsed():.0f}s of the bake; swapping back to "
            f"v{self.previous}. {self.figures_line()}.",
            level="error",
        )
        events.emit(
            "guard_swap_back",
            f"{self.workflow.name}: {reason}; swapped back to v{self.previous}.",
            deployment=self.workflow.deployment,
            details=payload,
        )
        raise StopDeployment(reason)


def watch(workflow: Workflow) -> None:
    """The deploy's guard step (after verify, before retire); see the module docstring."""
    Guard(workflow).run()
