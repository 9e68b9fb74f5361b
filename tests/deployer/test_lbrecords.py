"""Typed load balancer records: every bad shape is refused with its reason, never rendered."""

from __future__ import annotations

from typing import Any

import pytest

from deployer.lbrecords import RecordError, clean, parse_backend, parse_frontend

GOOD = {"servers": [{"name": "web-v1-a", "address": "127.1.0.2", "port": 8080}]}


def test_it_parses_a_good_backend_into_its_rendered_fields() -> None:
    record = parse_backend("default.web-v1", {**GOOD, "check_path": "/health", "version": 1})

    assert record.as_json() == {**GOOD, "check_path": "/health"}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("servers", "must be an object"),
        ({"servers": "web-v1-a"}, "servers must be a list"),
        ({"servers": [{"name": "a", "address": "127.0.0.1", "port": "8080"}]}, "port must be"),
        ({"servers": [{"name": "a", "address": "127.0.0.1", "port": True}]}, "port must be"),
        ({"servers": [{"name": "a", "address": "127.0.0.1", "port": 0}]}, "port must be"),
        ({"servers": [{"name": "a b", "address": "127.0.0.1", "port": 1}]}, "server name"),
        ({"servers": [{"name": "a", "address": "1.2.3.4 backup", "port": 1}]}, "neither an IP"),
        ({"servers": [["a"]]}, "a server must be an object"),
        ({**GOOD, "servers": GOOD["servers"] * 2}, "same name"),
        ({**GOOD, "check_path": "/it's"}, "not a plain path"),
        ({**GOOD, "check_path": "/a b"}, "not a plain path"),
        ({**GOOD, "check_port": "80"}, "check_port must be"),
        ({**GOOD, "timeout_server": "forever"}, "timeout_server must be"),
    ],
)
def test_it_refuses_a_backend_of_the_wrong_shape(value: Any, reason: str) -> None:
    with pytest.raises(RecordError, match=reason):
        parse_backend("default.web-v1", value)


def test_it_refuses_a_frontend_that_is_not_a_hostname_and_backend() -> None:
    assert (
        parse_frontend("Web.localhost", {"backend": "default.web-v1"}).hostname == "web.localhost"
    )
    with pytest.raises(RecordError, match="not a hostname"):
        parse_frontend("web localhost", {"backend": "default.web-v1"})
    with pytest.raises(RecordError, match="backend must be"):
        parse_frontend("web.localhost", {"backend": 3})


def test_it_keeps_the_good_records_and_names_each_one_skipped() -> None:
    frontends = {"web.localhost": {"backend": "default.web-v1"}, "bad.localhost": []}
    backends = {"default.web-v1": GOOD, "default.bad-v1": {"servers": {}}}

    good_frontends, good_backends, skipped = clean(frontends, backends)

    assert list(good_frontends) == ["web.localhost"]
    assert list(good_backends) == ["default.web-v1"]
    assert set(skipped) == {"frontends/bad.localhost", "backends/default.bad-v1"}
