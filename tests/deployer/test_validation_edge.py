"""Validation at the edge: health paths, quantities, namespaces and pod specs a user may set."""

from __future__ import annotations

import socket
from decimal import Decimal
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from deployer import validation
from deployer.models import App
from deployer.validation import parse_quantity, pod_spec_problems, validate_extra_pod_spec


def _app(**fields: Any) -> App:
    defaults: dict[str, Any] = {
        "name": "hello",
        "image": "demo/hello:1",
        "replicas": 2,
        "frontend": "hello.localhost",
    }
    return App(**{**defaults, **fields})


def _errors(**fields: Any) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as caught:
        _app(**fields).full_clean()
    return caught.value.message_dict


def _pod_spec_errors(spec: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        validate_extra_pod_spec(spec)
    return " ".join(caught.value.message_dict["extra_pod_spec"])


@pytest.mark.parametrize(
    "path",
    [
        "/health'",  # rendered into HAProxy's "option httpchk", a quote breaks the file
        '/health"',
        "/hé",
        "/health check",
        "/health#top",
        "/health?full=1",
        "/a\\b",
        "/health\n",
        "/health\x00",
        "/health\t",
        "/%zz",
        "health",
        "/" + "a" * 200,
    ],
)
def test_it_refuses_a_health_path_outside_the_path_grammar(db: None, path: str) -> None:
    assert "health_path" in _errors(health_path=path)


@pytest.mark.parametrize(
    "path", ["/", "/health", "/api/v1/healthz", "/a-b_c.d~e", "/%7Euser/ok", "/x;y=1,z:@!$&*+()"]
)
def test_it_accepts_a_health_path_of_plain_path_characters(db: None, path: str) -> None:
    _app(health_path=path).full_clean()


def test_a_health_path_says_how_long_it_may_be(db: None) -> None:
    assert (
        "at most 200 characters (got 201)" in _errors(health_path="/" + "a" * 200)["health_path"][0]
    )


@pytest.mark.parametrize(
    ("fields", "field", "fragment"),
    [
        ({"cpu_request": "1e9999999"}, "cpu_request", "at most 1024 cores"),
        ({"cpu_limit": "1e9999999"}, "cpu_limit", "at most 1024 cores"),
        ({"memory_request": "1e9999999"}, "memory_request", "at most 16Ti"),
        ({"memory_limit": "17Ti"}, "memory_limit", "at most 16Ti"),
        ({"cpu_request": "1025"}, "cpu_request", "at most 1024 cores"),
        ({"cpu_request": "1e-9999999"}, "cpu_request", "at least 1m"),
        ({"cpu_request": "0.5m"}, "cpu_request", "at least 1m"),
        ({"memory_request": "64m"}, "memory_request", "'Mi'"),
        ({"cpu_request": "NaN"}, "cpu_request", "Kubernetes quantity"),
        ({"cpu_request": "Infinity"}, "cpu_request", "Kubernetes quantity"),
        ({"cpu_request": " 1"}, "cpu_request", "Kubernetes quantity"),
        ({"cpu_request": "1_000m"}, "cpu_request", "Kubernetes quantity"),
        ({"cpu_request": "١"}, "cpu_request", "Kubernetes quantity"),
        ({"memory_request": "1e3Ki"}, "memory_request", "Kubernetes quantity"),
        ({"memory_request": "1" + "0" * 25 + "Ei"}, "memory_request", "at most 16Ti"),
        ({"cpu_request": "-1"}, "cpu_request", "above zero"),
        ({"cpu_request": "0"}, "cpu_request", "above zero"),
    ],
)
def test_it_refuses_a_quantity_out_of_bounds_or_grammar_on_its_field(
    db: None, fields: dict[str, Any], field: str, fragment: str
) -> None:
    assert fragment in " ".join(_errors(**fields)[field])


def test_a_quantity_too_large_for_a_decimal_is_a_message_not_an_overflow() -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        parse_quantity("9" * 20 + "e" + "9" * 20)  # grammar-valid, but not as a Decimal * 10**n
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        parse_quantity("1" + "0" * 1_000_000 + "Ei")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("250m", "0.25"),
        ("1", "1"),
        ("+1", "1"),
        ("64Mi", str(64 * 2**20)),
        ("1e3", "1000"),
        ("1E3", "1000"),
        ("1k", "1000"),
        (".5", "0.5"),
        ("5.", "5"),
        ("100n", "0.0000001"),
        ("1Gi", str(2**30)),
    ],
)
def test_it_parses_quantities_by_the_kubernetes_rules(text: str, value: str) -> None:
    assert parse_quantity(text) == Decimal(value)


def test_it_compares_limits_and_requests_in_every_notation(db: None) -> None:
    assert "at least the request" in " ".join(
        _errors(cpu_request="1500m", cpu_limit="1")["cpu_limit"]
    )
    _app(
        cpu_request="1e0", cpu_limit="1000m", memory_request="1Gi", memory_limit="1073741824"
    ).full_clean()


def test_it_refuses_a_namespace_outside_the_allow_list_naming_the_allowed_ones(
    db: None, settings: Any
) -> None:
    settings.ALLOWED_NAMESPACES = ["default", "team-a"]
    message = " ".join(_errors(namespace="kube-system")["namespace"])
    assert "'kube-system'" in message and "default, team-a" in message
    _app(namespace="team-a").full_clean()


def test_the_namespace_allow_list_defaults_to_default(settings: Any) -> None:
    assert settings.ALLOWED_NAMESPACES == ["default"]
    assert settings.ALLOWED_SERVICE_ACCOUNTS == ["default"]


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"hostNetwork": True}, "hostNetwork: shares the node's network"),
        ({"hostPID": True}, "hostPID: shares the node's processes"),
        ({"hostIPC": True}, "hostIPC: shares the node's shared memory"),
        ({"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}, "volumes[0].hostPath"),
        ({"securityContext": {"runAsUser": 0}}, "securityContext.runAsUser: 0 runs as root"),
        ({"securityContext": {"runAsUser": 0.0}}, "runs as root"),
        (
            {"securityContext": {"windowsOptions": {"hostProcess": True}}},
            "windowsOptions.hostProcess",
        ),
        ({"tolerations": [{"operator": "Exists"}]}, "tolerations[0]: 'Exists' without a key"),
        (
            {
                "tolerations": [
                    {"key": "a", "operator": "Equal", "value": "b"},
                    {"operator": "Exists", "effect": "NoSchedule"},
                ]
            },
            "tolerations[1]",
        ),
        ({"serviceAccountName": "cluster-admin"}, "serviceAccountName: 'cluster-admin'"),
        ({"serviceAccount": "cluster-admin"}, "serviceAccount: 'cluster-admin'"),
        (
            {"containers": [{"name": "x", "securityContext": {"privileged": True}}]},
            "containers[0].securityContext.privileged",
        ),
    ],
)
def test_it_refuses_a_pod_spec_that_reaches_past_its_pod(
    spec: dict[str, Any], fragment: str
) -> None:
    assert fragment in _pod_spec_errors(spec)


def test_the_service_account_allow_list_comes_from_settings(settings: Any) -> None:
    settings.ALLOWED_SERVICE_ACCOUNTS = ["default", "reader"]
    validate_extra_pod_spec({"serviceAccountName": "reader"})
    assert "Allowed: default, reader" in _pod_spec_errors({"serviceAccountName": "admin"})


@pytest.mark.parametrize("kind", ["containers", "initContainers", "ephemeralContainers"])
def test_it_finds_privileged_escalating_and_root_containers_in_a_whole_pod_spec(
    kind: str,
) -> None:
    spec = {
        kind: [
            {"name": "ok", "securityContext": {"runAsUser": 1000}},
            {
                "name": "bad",
                "securityContext": {
                    "privileged": True,
                    "allowPrivilegeEscalation": True,
                    "runAsUser": 0,
                },
            },
        ]
    }
    messages = [problem.message for problem in pod_spec_problems(spec)]
    assert [m.split(":")[0] for m in messages] == [
        f"{kind}[1].securityContext.privileged",
        f"{kind}[1].securityContext.allowPrivilegeEscalation",
        f"{kind}[1].securityContext.runAsUser",
    ]


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"tolerations": "all"}, "tolerations: 'all' is not of type 'array'"),
        ({"tolerations": [{"keyy": "a"}]}, "tolerations[0]: Additional properties"),
        ({"securityContext": {"runAsUser": "0"}}, "securityContext.runAsUser: '0' is not of type"),
        ({"nodeSelector": {"disk": 1}}, "nodeSelector.disk: 1 is not of type 'string'"),
        ({"terminationGracePeriodSeconds": "30"}, "terminationGracePeriodSeconds"),
        ({"affinity": {"nodeAffinity": []}}, "affinity.nodeAffinity"),
    ],
)
def test_it_checks_allowed_fields_against_the_podspec_schema(
    spec: dict[str, Any], fragment: str
) -> None:
    assert fragment in _pod_spec_errors(spec)


def test_it_keeps_the_allow_list_for_fields_greenlight_sets_itself() -> None:
    message = _pod_spec_errors({"containers": [], "hostNetwork": False})
    assert "Not allowed here: containers, hostNetwork." in message


def test_it_accepts_a_safe_pod_spec() -> None:
    validate_extra_pod_spec(
        {
            "nodeSelector": {"disk": "ssd"},
            "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
            "securityContext": {"runAsUser": 1000, "runAsNonRoot": True, "fsGroup": 2000},
            "serviceAccountName": "default",
            "terminationGracePeriodSeconds": 45,
            "priorityClassName": "high",
            "imagePullSecrets": [{"name": "registry"}],
            "topologySpreadConstraints": [
                {
                    "maxSkew": 1,
                    "topologyKey": "kubernetes.io/hostname",
                    "whenUnsatisfiable": "ScheduleAnyway",
                }
            ],
        }
    )


def test_it_validates_pod_specs_without_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("pod spec validation opened a connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    validation._pod_spec_validator.cache_clear()
    assert "runAsUser" in _pod_spec_errors({"securityContext": {"runAsUser": "root"}})
    validate_extra_pod_spec({"nodeSelector": {"disk": "ssd"}})


def test_a_pod_spec_message_never_echoes_a_huge_value() -> None:
    message = _pod_spec_errors({"priorityClassName": ["x" * 100_000]})
    assert len(message) < 400
