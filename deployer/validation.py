"""Validation of app descriptors: plain functions raising field-keyed ValidationError."""

from __future__ import annotations

import functools
import importlib.resources
import json
import math
import re
import shlex
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import kubernetes_validate
from django.conf import settings
from django.core.exceptions import ValidationError
from jsonschema import Draft202012Validator
from kubernetes.utils import parse_quantity as kubernetes_quantity
from referencing import Registry, Resource

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
# The grammar of a Kubernetes quantity (apimachinery's resource.Quantity): a signed decimal
# with at most one suffix, binary (Ki to Ei), decimal SI (n to E) or an exponent (e3, E-2).
# kubernetes.utils.parse_quantity computes the value but also takes what the API server
# refuses ("NaN", "Infinity", " 1", "1_000", non-ASCII digits, "1e3Ki"), so the text is
# matched against the grammar first.
_QUANTITY_SYNTAX = re.compile(
    r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?"
)


@dataclass(frozen=True)
class QuantityBounds:
    """The smallest and largest amount of one resource an app may ask for, and how to say so."""

    minimum: Decimal
    maximum: Decimal
    example: str
    too_small: str
    too_large: str


QUANTITY_BOUNDS = {
    "cpu": QuantityBounds(
        minimum=Decimal("0.001"),
        maximum=Decimal(1024),
        example="e.g. '250m' or '0.5'",
        too_small="Enter at least 1m (a thousandth of a core).",
        too_large="Enter at most 1024 cores.",
    ),
    "memory": QuantityBounds(
        minimum=Decimal(1),
        maximum=Decimal(16 * 2**40),
        example="e.g. '64Mi' or '1Gi'",
        # "64m" is 0.064 bytes: the usual slip for "64Mi".
        too_small="Enter at least 1 byte; mebibytes are 'Mi' (e.g. '64Mi'), not 'm'.",
        too_large="Enter at most 16Ti.",
    ),
}
HEALTH_PATH_MAX = 200
# RFC 3986 path characters, without the quote ("'"), which HAProxy's configuration parser
# reads as quoting in "option httpchk", and without "?" and "#", which end a path.
_HEALTH_PATH = re.compile(r"/(?:[A-Za-z0-9._~!$&()*+,;=:@/-]|%[0-9A-Fa-f]{2})*")
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
    """A namespace is a DNS-1123 label of at most 63 characters, in settings.ALLOWED_NAMESPACES."""
    if not value or len(value) > 63 or not _DNS_1123_LABEL.match(value):
        raise ValidationError(
            {"namespace": "Use at most 63 lowercase letters, digits and '-' (e.g. 'default')."}
        )
    allowed = list(settings.ALLOWED_NAMESPACES)
    if value not in allowed:
        raise ValidationError(
            {
                "namespace": f"Apps may not run in namespace '{value}'. Allowed: "
                f"{', '.join(allowed) or 'none'} (an administrator sets GREENLIGHT_NAMESPACES)."
            }
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
    """A Kubernetes resource quantity as a Decimal; ValueError when it is not one."""
    if not isinstance(value, str) or not _QUANTITY_SYNTAX.fullmatch(value):
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    try:
        return kubernetes_quantity(value)
    except (ValueError, ArithmeticError) as exc:  # an exponent past what a Decimal holds
        raise ValueError(f"not a Kubernetes quantity: {value!r}") from exc


def validate_quantity(value: str, field: str, *, kind: str) -> None:
    """Empty, or a quantity within QUANTITY_BOUNDS[kind] ("cpu" or "memory")."""
    if not value:
        return
    bounds = QUANTITY_BOUNDS[kind]
    try:
        amount = parse_quantity(value)
    except ValueError:
        raise ValidationError({field: f"Enter a Kubernetes quantity ({bounds.example})."}) from None
    if amount <= 0:
        raise ValidationError({field: f"Enter a quantity above zero ({bounds.example})."})
    if amount < bounds.minimum:
        raise ValidationError({field: bounds.too_small})
    if amount > bounds.maximum:
        raise ValidationError({field: bounds.too_large})


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


def validate_frontend_free(app: App) -> None:
    """No other app already answers at ``app``'s hostname (case-insensitively)."""
    value, exclude_pk = app.frontend, app.pk
    others = type(app).objects.filter(frontend__iexact=value)
    if exclude_pk is not None:
        others = others.exclude(pk=exclude_pk)
    other = others.first()
    if other is not None:
        raise ValidationError(
            {"frontend": f"'{value}' is already the frontend of app {other}; choose another."}
        )
    owner = type(app).serving_at(value)
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


# PodSpec fields that hand the node's namespaces to the pod, and what each one exposes.
_HOST_NAMESPACES = {
    "hostNetwork": "the node's network (every interface and port of the host)",
    "hostPID": "the node's processes (the pod could see and signal all of them)",
    "hostIPC": "the node's shared memory and semaphores",
}
_CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")
POD_SPEC_SCHEMA_ERRORS_SHOWN = 5


@dataclass(frozen=True)
class PodSpecProblem:
    """One refused part of a pod spec: the top-level field it is in and what to fix."""

    field: str
    message: str


def _is_root(uid: Any) -> bool:
    return isinstance(uid, int | float) and not isinstance(uid, bool) and uid == 0


def _security_context_problems(context: Any, where: str, field: str) -> list[PodSpecProblem]:
    """Privileged, escalating, root or Windows host-process settings of one securityContext."""
    if not isinstance(context, dict):
        return []
    found: list[str] = []
    if context.get("privileged") is True:
        found.append(f"{where}.privileged: a privileged container controls the node; remove it.")
    if context.get("allowPrivilegeEscalation") is True:
        found.append(
            f"{where}.allowPrivilegeEscalation: processes could gain more privileges than "
            "their parent; set it to false or leave it out."
        )
    if _is_root(context.get("runAsUser")):
        found.append(f"{where}.runAsUser: 0 runs as root; use a non-zero user id.")
    windows = context.get("windowsOptions")
    if isinstance(windows, dict) and windows.get("hostProcess") is True:
        found.append(f"{where}.windowsOptions.hostProcess: runs on the node itself; remove it.")
    return [PodSpecProblem(field, message) for message in found]


def pod_spec_problems(spec: dict[str, Any]) -> list[PodSpecProblem]:
    """Parts of a pod spec that would reach past the pod (node, root, any service account)."""
    problems = [
        PodSpecProblem(key, f"{key}: shares {what} with the pod; remove it.")
        for key, what in _HOST_NAMESPACES.items()
        if spec.get(key) is True
    ]
    volumes = spec.get("volumes")
    for index, volume in enumerate(volumes if isinstance(volumes, list) else []):
        if isinstance(volume, dict) and volume.get("hostPath") is not None:
            problems.append(
                PodSpecProblem(
                    "volumes",
                    f"volumes[{index}].hostPath: mounts a directory of the node; "
                    "use another volume type.",
                )
            )
    problems += _security_context_problems(
        spec.get("securityContext"), "securityContext", "securityContext"
    )
    for kind in _CONTAINER_LISTS:
        containers = spec.get(kind)
        for index, container in enumerate(containers if isinstance(containers, list) else []):
            if isinstance(container, dict):
                problems += _security_context_problems(
                    container.get("securityContext"), f"{kind}[{index}].securityContext", kind
                )
    tolerations = spec.get("tolerations")
    for index, toleration in enumerate(tolerations if isinstance(tolerations, list) else []):
        if (
            isinstance(toleration, dict)
            and toleration.get("operator") == "Exists"
            and not toleration.get("key")
        ):
            problems.append(
                PodSpecProblem(
                    "tolerations",
                    f"tolerations[{index}]: 'Exists' without a key tolerates every taint, "
                    "including the control plane's; name the taint's key.",
                )
            )
    allowed = list(settings.ALLOWED_SERVICE_ACCOUNTS)
    # serviceAccount is the deprecated spelling of serviceAccountName; both pick the account.
    for key in ("serviceAccountName", "serviceAccount"):
        account = spec.get(key)
        if isinstance(account, str) and account and account not in allowed:
            problems.append(
                PodSpecProblem(
                    key,
                    f"{key}: '{account}' is not allowed. Allowed: {', '.join(allowed) or 'none'} "
                    "(an administrator sets GREENLIGHT_SERVICE_ACCOUNTS).",
                )
            )
    return problems


@functools.cache
def _pod_spec_validator() -> Draft202012Validator:
    """PodSpec's strict JSON schema, read once from kubernetes-validate's bundled files."""
    version = kubernetes_validate.latest_version()
    folder = (
        importlib.resources.files("kubernetes_validate")
        / "kubernetes-json-schema"
        / f"v{version}-local-strict"
    )
    definitions = json.loads((folder / "_definitions.json").read_text())
    # Every $ref resolves inside the registry: validation never reaches for the network.
    registry: Registry[Any] = Resource.from_contents(definitions) @ Registry()
    pod_spec = {"$ref": f"{definitions['$id']}#/$defs/io.k8s.api.core.v1.PodSpec"}
    return Draft202012Validator(pod_spec, registry=registry)


def _schema_path(path: Any) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".")


def pod_spec_schema_errors(fields: dict[str, Any]) -> list[str]:
    """Where ``fields`` break the Kubernetes PodSpec schema (types, enums, unknown keys)."""
    # The schema requires containers; Greenlight adds the app's own, so a stand-in is given.
    candidate = {**fields, "containers": [{"name": "app", "image": "app"}]}
    errors = sorted(
        _pod_spec_validator().iter_errors(candidate), key=lambda error: list(map(str, error.path))
    )
    messages = []
    for error in errors[:POD_SPEC_SCHEMA_ERRORS_SHOWN]:
        # The message quotes the offending value, which can be as long as the body.
        detail = error.message if len(error.message) <= 200 else error.message[:200] + "…"
        messages.append(f"{_schema_path(error.path) or 'spec'}: {detail}")
    return messages


def nul_path(value: Any, path: str) -> str | None:
    """Where in ``value`` (JSON: dicts, lists, text) a NUL character is, or None.

    PostgreSQL refuses NUL in JSON text and Kubernetes in names and values, so a NUL is
    refused where the user typed it.
    """
    pending: list[tuple[Any, str]] = [(value, path)]
    while pending:
        item, where = pending.pop()
        if isinstance(item, str) and "\0" in item:
            return where
        if isinstance(item, dict):
            for key, child in item.items():
                if "\0" in str(key):
                    return f"a key of {where}"
                pending.append((child, f"{where}.{key}"))
        elif isinstance(item, list):
            pending += [(child, f"{where}[{index}]") for index, child in enumerate(item)]
    return None


def validate_extra_pod_spec(value: Any) -> None:
    """Allowed pod-spec fields (scheduling and security), valid by the PodSpec schema and safe."""
    if not isinstance(value, dict):
        raise ValidationError({"extra_pod_spec": "Enter pod spec fields as a JSON object."})
    nul = nul_path(value, "extra_pod_spec")
    if nul is not None:
        raise ValidationError({"extra_pod_spec": f"{nul} contains a NUL character; remove it."})
    problems = pod_spec_problems(value)
    messages = [problem.message for problem in problems]
    unknown = sorted(set(value) - ALLOWED_POD_SPEC_KEYS - {problem.field for problem in problems})
    if unknown:
        messages.append(
            f"Not allowed here: {', '.join(map(str, unknown))}. Allowed: "
            f"{', '.join(sorted(ALLOWED_POD_SPEC_KEYS))}."
        )
    allowed_fields = {key: item for key, item in value.items() if key in ALLOWED_POD_SPEC_KEYS}
    if allowed_fields:
        messages += pod_spec_schema_errors(allowed_fields)
    if messages:
        raise ValidationError({"extra_pod_spec": messages})


def health_path_problem(value: str) -> str:
    """What is wrong with a health path, or "" for a path HAProxy and probes can carry as is."""
    if not value.startswith("/"):
        return "Enter a path starting with '/' (e.g. '/health')."
    if len(value) > HEALTH_PATH_MAX:
        return f"Use at most {HEALTH_PATH_MAX} characters (got {len(value)})."
    if not _HEALTH_PATH.fullmatch(value):
        return (
            "Use ASCII letters, digits, '/', '-', '.', '_', '~', '%XX' escapes and "
            "! $ & ( ) * + , ; = : @ only: no spaces, quotes, '?', '#', '\\' or control "
            "characters (e.g. '/health')."
        )
    return ""


def validate_health(app: App) -> None:
    """Health path well formed (health_path_problem), port valid, timeout and deadline bounded."""
    errors: dict[str, str] = {}
    problem = health_path_problem(app.health_path)
    if problem:
        errors["health_path"] = problem
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


TRAFFIC_MODES = {
    "haproxy": "HAProxy routes to the pods",
    "service": "the stable Service's selector moves",
}
TRAFFIC_CHOICES = "; ".join(f"{mode} ({what})" for mode, what in TRAFFIC_MODES.items())


def validate_traffic(value: str) -> None:
    """One of the traffic modes (deployer.traffic)."""
    if value not in TRAFFIC_MODES:
        raise ValidationError(
            {"traffic": f"Unknown traffic mode {str(value)[:40]!r}: choose {TRAFFIC_CHOICES}."}
        )


PROMOTION_MODES = {
    "automatic": "switch as soon as every pod is healthy",
    "manual": "wait for Promote or Reject after the health checks",
}
PROMOTION_CHOICES = "; ".join(f"{mode} ({what})" for mode, what in PROMOTION_MODES.items())
PROMOTION_TIMEOUT_MIN = 1
PROMOTION_TIMEOUT_MAX = 7 * 24 * 3600


def validate_promotion(mode: str, timeout: Any) -> None:
    """One of the promotion modes (deployer.promotion), and a timeout of 1 s to 7 days."""
    errors: dict[str, str] = {}
    if mode not in PROMOTION_MODES:
        errors["promotion"] = (
            f"Unknown promotion mode {str(mode)[:40]!r}: choose {PROMOTION_CHOICES}."
        )
    if (
        not isinstance(timeout, int)
        or isinstance(timeout, bool)
        or not PROMOTION_TIMEOUT_MIN <= timeout <= PROMOTION_TIMEOUT_MAX
    ):
        errors["promotion_timeout_seconds"] = (
            f"Enter a promotion timeout between {PROMOTION_TIMEOUT_MIN} second and "
            f"{PROMOTION_TIMEOUT_MAX} seconds (7 days): a deploy awaiting promotion is "
            "rejected once it has waited this long."
        )
    if errors:
        raise ValidationError(errors)


GUARD_BAKE_MAX = 3600
GUARD_MIN_REQUESTS_MAX = 1_000_000
GUARD_RESPONSE_MS_MAX = 600_000
GUARD_PROMQL_MAX = 2000
_PROMQL_PAIRS = {")": "(", "]": "[", "}": "{"}


def _whole_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def promql_problem(query: str) -> str:
    """What is wrong with a guard's PromQL query at a glance ("" when nothing).

    Prometheus parses it; this catches what is surely wrong before a deploy relies on it:
    its length, control characters, unbalanced brackets or quotes.
    """
    if len(query) > GUARD_PROMQL_MAX:
        return f"Use at most {GUARD_PROMQL_MAX} characters (got {len(query)})."
    if any(ord(c) < 32 and c not in "\t\n" or ord(c) == 127 for c in query):
        return "Remove the control characters from the query."
    stack: list[str] = []
    quote = ""
    escaped = False
    for char in query:
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
        elif char in "\"'`":
            quote = char
        elif char in "([{":
            stack.append(char)
        elif char in ")]}" and (not stack or stack.pop() != _PROMQL_PAIRS[char]):
            return f"The query closes a '{char}' that was not opened."
    if quote:
        return f"The query opens a {quote} quote that it does not close."
    if stack:
        return f"The query opens a '{stack[-1]}' that it does not close."
    return ""


def validate_guard(app: App) -> None:
    """The guard after the switch (deployer.guard): bake time, thresholds, PromQL query."""
    errors: dict[str, str] = {}
    bake = app.guard_bake_seconds
    if not _whole_number(bake) or not 0 <= bake <= GUARD_BAKE_MAX:
        errors["guard_bake_seconds"] = (
            f"Enter a bake time between 0 (no guard) and {GUARD_BAKE_MAX} seconds (an hour)."
        )
    percent = app.guard_max_error_percent
    if (
        not isinstance(percent, int | float)
        or isinstance(percent, bool)
        or math.isnan(percent)
        or not 0 <= percent <= 100
    ):
        errors["guard_max_error_percent"] = (
            "Enter a percentage of 5xx answers between 0 and 100 (e.g. 5): more than this "
            "swaps back."
        )
    minimum = app.guard_min_requests
    if not _whole_number(minimum) or not 1 <= minimum <= GUARD_MIN_REQUESTS_MAX:
        errors["guard_min_requests"] = (
            f"Enter at least 1 and at most {GUARD_MIN_REQUESTS_MAX} requests: fewer during "
            "the bake are too few to judge."
        )
    limit = app.guard_max_response_ms
    if limit is not None and (not _whole_number(limit) or not 1 <= limit <= GUARD_RESPONSE_MS_MAX):
        errors["guard_max_response_ms"] = (
            f"Enter a response time between 1 and {GUARD_RESPONSE_MS_MAX} ms, or leave it "
            "empty for no limit."
        )
    query = app.guard_promql
    if not isinstance(query, str):
        errors["guard_promql"] = "Enter a PromQL query as text, or leave it empty."
    elif query.strip():
        if problem := promql_problem(query):
            errors["guard_promql"] = problem
        elif not getattr(settings, "GREENLIGHT_PROMETHEUS_URL", ""):
            errors["guard_promql"] = (
                "No Prometheus is configured (GREENLIGHT_PROMETHEUS_URL) to ask this query; "
                "leave it empty or ask an administrator to set it."
            )
    if errors:
        raise ValidationError(errors)


def _check_limit(request: str, limit: str) -> bool:
    """Whether the limit is at least the request (True when either is empty or malformed)."""
    if not request or not limit:
        return True
    try:
        return parse_quantity(request) <= parse_quantity(limit)
    except ValueError:
        return True  # reported by validate_quantity


PRE_SWITCH_HOOK_MAX = 1024
PRE_SWITCH_HOOK_TIMEOUT_MAX = 86400


def hook_words(value: str) -> list[str]:
    """The pre-switch hook's arguments, split as a shell splits words (no shell runs them)."""
    return shlex.split(value)


def validate_pre_switch_hook(value: str, timeout: int | None) -> None:
    """The pre-switch hook: shell words (quotes closed), and a timeout of 1 s to a day."""
    errors: dict[str, str] = {}
    value = value or ""
    if len(value) > PRE_SWITCH_HOOK_MAX:
        errors["pre_switch_hook"] = (
            f"Use at most {PRE_SWITCH_HOOK_MAX} characters (got {len(value)})."
        )
    elif any(ord(ch) < 32 and ch not in "\t" for ch in value):
        errors["pre_switch_hook"] = "Write the command on one line, without control characters."
    elif value.strip().startswith("["):
        errors["pre_switch_hook"] = (
            "Write the command as shell words, such as: migrate --noinput "
            "(a JSON list is not accepted)."
        )
    else:
        try:
            hook_words(value)
        except ValueError as exc:
            errors["pre_switch_hook"] = f"The command does not split into words: {exc}."
    if timeout is None or not 1 <= timeout <= PRE_SWITCH_HOOK_TIMEOUT_MAX:
        errors["pre_switch_hook_timeout_seconds"] = (
            f"Enter a timeout between 1 and {PRE_SWITCH_HOOK_TIMEOUT_MAX} seconds."
        )
    if errors:
        raise ValidationError(errors)


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
        collect(validate_frontend_free, app)
    collect(validate_health, app)
    collect(validate_quantity, app.cpu_request, "cpu_request", kind="cpu")
    collect(validate_quantity, app.cpu_limit, "cpu_limit", kind="cpu")
    collect(validate_quantity, app.memory_request, "memory_request", kind="memory")
    collect(validate_quantity, app.memory_limit, "memory_limit", kind="memory")
    for resource in ("cpu", "memory"):
        request, limit = f"{resource}_request", f"{resource}_limit"
        # Compared only when both are valid: a request out of bounds says so, once.
        if request in errors or limit in errors:
            continue
        if not _check_limit(getattr(app, request), getattr(app, limit)):
            errors.setdefault(limit, []).append("The limit must be at least the request.")
    collect(validate_env, app.env)
    collect(validate_extra_pod_spec, app.extra_pod_spec)
    if "extra_pod_spec" not in errors:
        collect(validate_rollout, app)
    collect(validate_traffic, app.traffic)
    collect(validate_guard, app)
    collect(validate_promotion, app.promotion, app.promotion_timeout_seconds)
    collect(validate_pre_switch_hook, app.pre_switch_hook, app.pre_switch_hook_timeout_seconds)
    if errors:
        raise ValidationError(errors)
