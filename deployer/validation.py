"""Validation of app descriptors: plain functions raising field-keyed ValidationError."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ValidationError

from deployer.envvars import value_problem

if TYPE_CHECKING:
    from deployer.models import App

# Object names are "<app>-v<N>": 53 characters leave room for the suffix within 63.
NAME_MAX = 53
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
# A Docker reference: [registry[:port]/]path[:tag][@digest], lowercase path components.
_IMAGE = re.compile(
    r"^(?:(?P<registry>[a-zA-Z0-9.-]+(?::[0-9]{1,5})?)/)?"
    r"(?P<path>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>[a-z0-9]+:[a-fA-F0-9]{32,}))?$"
)
_QUANTITY = re.compile(
    r"^(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
)
_SUFFIX = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Injected by the workflow; a user value would silently lose.
RESERVED_ENV = frozenset({"APP_NAME", "APP_VERSION", "POD_NAME", "POD_NAMESPACE", "PORT"})
ALLOWED_POD_SPEC_KEYS = frozenset(
    {
        "nodeSelector",
        "tolerations",
        "affinity",
        "terminationGracePeriodSeconds",
        "priorityClassName",
        "serviceAccountName",
        "securityContext",
        "imagePullSecrets",
        "topologySpreadConstraints",
    }
)


def validate_name(value: str) -> None:
    """An app name is a DNS-1035 label of at most 53 characters."""
    if not value:
        raise ValidationError({"name": "Enter a name."})
    if len(value) > NAME_MAX:
        raise ValidationError({"name": f"Use at most {NAME_MAX} characters (got {len(value)})."})
    if not _DNS_1035.match(value):
        raise ValidationError(
            {
                "name": "Use lowercase letters, digits and '-', starting with a letter and "
                "ending with a letter or digit (e.g. 'my-app')."
            }
        )


def validate_namespace(value: str) -> None:
    """A namespace is a DNS-1123 label of at most 63 characters."""
    if not value or len(value) > 63 or not _DNS_1123_LABEL.match(value):
        raise ValidationError(
            {"namespace": "Use at most 63 lowercase letters, digits and '-' (e.g. 'default')."}
        )


def is_object_name(value: str) -> bool:
    """Whether ``value`` can name a Kubernetes object such as a Node (a DNS-1123 subdomain)."""
    return 0 < len(value) <= 253 and bool(_DNS_1123_SUBDOMAIN.match(value))


def validate_image(value: str, field: str = "image") -> None:
    """An image is a Docker reference such as ``demo/hello:2`` or ``registry:5000/team/app@sha256:...``."""
    if not value or len(value) > 255 or not _IMAGE.match(value):
        raise ValidationError(
            {
                field: "Enter an image reference such as 'demo/hello:1' or "
                "'registry.example.com/team/app:1.2' (lowercase, no spaces or scheme)."
            }
        )


def validate_port(value: int | None, field: str = "container_port") -> None:
    """A TCP port between 1 and 65535."""
    if value is None or isinstance(value, bool) or not 1 <= int(value) <= 65535:
        raise ValidationError({field: "Enter a port between 1 and 65535."})


def validate_replicas(value: int | None, *, minimum: int = 1, field: str = "replicas") -> None:
    """Replicas within ``minimum`` and settings.MAX_REPLICAS."""
    cap = int(settings.MAX_REPLICAS)
    if value is None or isinstance(value, bool) or not minimum <= int(value) <= cap:
        raise ValidationError({field: f"Enter a number of replicas between {minimum} and {cap}."})


def parse_quantity(value: str) -> Decimal:
    """A Kubernetes resource quantity as a Decimal; ValueError when malformed."""
    match = _QUANTITY.match(value.strip()) if value else None
    if match is None:
        raise ValueError(value)
    number = Decimal(match["number"])
    suffix = match["suffix"] or ""
    if suffix[:1] in {"e", "E"}:
        try:
            return number * (Decimal(10) ** int(suffix[1:]))
        except (InvalidOperation, ValueError) as exc:
            raise ValueError(value) from exc
    return number * _SUFFIX[suffix]


def validate_quantity(value: str, field: str, *, kind: str) -> None:
    """Empty, or a non-negative quantity (``kind`` is "cpu" or "memory", for the hint)."""
    if not value:
        return
    hint = "e.g. '250m' or '0.5'" if kind == "cpu" else "e.g. '64Mi' or '1Gi'"
    try:
        amount = parse_quantity(value)
    except ValueError:
        raise ValidationError({field: f"Enter a Kubernetes quantity ({hint})."}) from None
    if amount <= 0:
        raise ValidationError({field: f"Enter a quantity above zero ({hint})."})


def validate_frontend(value: str) -> None:
    """A bare hostname: no scheme, port or path (e.g. ``hello.example.com``)."""
    if not value:
        raise ValidationError({"frontend": "Enter a hostname such as 'hello.example.com'."})
    if "://" in value or "/" in value:
        raise ValidationError({"frontend": "Enter only the hostname, without 'http://' or a path."})
    if ":" in value:
        raise ValidationError({"frontend": "Enter only the hostname, without a port."})
    if len(value) > 253 or not all(
        _DNS_1123_LABEL.match(label) and len(label) <= 63 for label in value.split(".")
    ):
        raise ValidationError(
            {
                "frontend": "Enter a lowercase hostname made of letters, digits, '-' and '.' "
                "(e.g. 'hello.example.com')."
            }
        )


def validate_frontend_free(value: str, *, exclude_pk: int | None) -> None:
    """No other app already answers at this hostname (case-insensitively)."""
    from deployer.models import App

    others = App.objects.filter(frontend__iexact=value)
    if exclude_pk is not None:
        others = others.exclude(pk=exclude_pk)
    other = others.first()
    if other is not None:
        raise ValidationError(
            {"frontend": f"'{value}' is already the frontend of app {other}; choose another."}
        )
    owner = App.serving_at(value)
    if owner is not None and owner.pk != exclude_pk:
        raise ValidationError(
            {
                "frontend": f"'{value}' still routes to app {owner}, which serves it until it "
                "deploys on its new frontend or is undeployed; choose another."
            }
        )


def validate_env(value: Any) -> None:
    """A mapping of variable names to values (text or a Secret's key), none of them reserved."""
    if not isinstance(value, dict):
        raise ValidationError({"env": "Enter environment variables as name/value pairs."})
    for name, item in value.items():
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise ValidationError(
                {"env": f"'{name}' is not a valid variable name (letters, digits, '_')."}
            )
        if name in RESERVED_ENV:
            raise ValidationError({"env": f"'{name}' is set by Greenlight; use another name."})
        problem = value_problem(name, item)
        if problem:
            raise ValidationError({"env": problem})


def validate_extra_pod_spec(value: Any) -> None:
    """A mapping of allowed pod-spec fields (scheduling and security, not containers)."""
    if not isinstance(value, dict):
        raise ValidationError({"extra_pod_spec": "Enter pod spec fields as a JSON object."})
    unknown = sorted(set(value) - ALLOWED_POD_SPEC_KEYS)
    if unknown:
        raise ValidationError(
            {
                "extra_pod_spec": f"Not allowed here: {', '.join(unknown)}. Allowed: "
                f"{', '.join(sorted(ALLOWED_POD_SPEC_KEYS))}."
            }
        )


def validate_health(app: App) -> None:
    """Health path starts with '/', port valid, timeout and deadline positive and bounded."""
    errors: dict[str, str] = {}
    if not app.health_path.startswith("/") or any(c.isspace() for c in app.health_path):
        errors["health_path"] = "Enter a path starting with '/' (e.g. '/health')."
    if app.health_port is not None and not 1 <= app.health_port <= 65535:
        errors["health_port"] = "Enter a port between 1 and 65535, or leave it empty."
    if not 0 < app.health_timeout <= 60:
        errors["health_timeout"] = "Enter a timeout between 0 and 60 seconds."
    if not 1 <= app.health_deadline <= 3600:
        errors["health_deadline"] = "Enter a deadline between 1 and 3600 seconds."
    if errors:
        raise ValidationError(errors)


STOP_DELAY_MAX = 120
# Left for SIGTERM after the preStop delay when the pod spec sets no grace period.
TERMINATION_GRACE_AFTER_STOP = 30


def termination_grace_seconds(stop_delay: int, extra_pod_spec: dict[str, Any]) -> int:
    """The pod's terminationGracePeriodSeconds: the app's own, else the delay plus 30 s."""
    own = extra_pod_spec.get("terminationGracePeriodSeconds")
    if isinstance(own, int) and not isinstance(own, bool):
        return own
    return stop_delay + TERMINATION_GRACE_AFTER_STOP


def validate_rollout(app: App) -> None:
    """The stop delay fits in the grace period; at least one pod may be down during a drain."""
    errors: dict[str, str] = {}
    if not 0 <= app.stop_delay_seconds <= STOP_DELAY_MAX:
        errors["stop_delay_seconds"] = f"Enter a delay between 0 and {STOP_DELAY_MAX} seconds."
    elif isinstance(app.extra_pod_spec, dict):
        grace = termination_grace_seconds(app.stop_delay_seconds, app.extra_pod_spec)
        if app.stop_delay_seconds and app.stop_delay_seconds >= grace:
            errors["stop_delay_seconds"] = (
                f"The stop delay must be shorter than terminationGracePeriodSeconds ({grace}s), "
                "or the pod is killed before it has finished its requests."
            )
    if not 1 <= app.max_unavailable <= settings.MAX_REPLICAS:
        errors["max_unavailable"] = (
            f"Enter a number of pods between 1 and {settings.MAX_REPLICAS}; with 0 no node "
            "running the app could ever be drained."
        )
    if errors:
        raise ValidationError(errors)


def _check_limit(request: str, limit: str) -> bool:
    if not request or not limit:
        return True
    try:
        return parse_quantity(request) <= parse_quantity(limit)
    except ValueError:
        return True  # reported by validate_quantity


def validate_app(app: App) -> None:
    """Every field of ``app``; raise one ValidationError holding every field's message."""
    errors: dict[str, list[str]] = {}

    def collect(check: Any, *args: Any, **kwargs: Any) -> None:
        try:
            check(*args, **kwargs)
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                errors.setdefault(field, []).extend(messages)

    collect(validate_name, app.name)
    collect(validate_namespace, app.namespace)
    collect(validate_image, app.image)
    collect(validate_replicas, app.replicas)
    collect(validate_port, app.container_port)
    collect(validate_frontend, app.frontend)
    if "frontend" not in errors:
        collect(validate_frontend_free, app.frontend, exclude_pk=app.pk)
    collect(validate_health, app)
    collect(validate_quantity, app.cpu_request, "cpu_request", kind="cpu")
    collect(validate_quantity, app.cpu_limit, "cpu_limit", kind="cpu")
    collect(validate_quantity, app.memory_request, "memory_request", kind="memory")
    collect(validate_quantity, app.memory_limit, "memory_limit", kind="memory")
    if not _check_limit(app.cpu_request, app.cpu_limit):
        errors.setdefault("cpu_limit", []).append("The limit must be at least the request.")
    if not _check_limit(app.memory_request, app.memory_limit):
        errors.setdefault("memory_limit", []).append("The limit must be at least the request.")
    collect(validate_env, app.env)
    collect(validate_extra_pod_spec, app.extra_pod_spec)
    if "extra_pod_spec" not in errors:
        collect(validate_rollout, app)
    if errors:
        raise ValidationError(errors)
