"""The OpenAPI schema at /api/schema/ says what the API answers (schemathesis checks it all)."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient


@pytest.fixture
def schema(db: Any) -> dict[str, Any]:
    return APIClient().get("/api/schema/?format=json").json()


def answer(schema: dict[str, Any], path: str, method: str, code: str) -> dict[str, Any]:
    body = schema["paths"][path][method]["responses"][code]
    return body.get("content", {}).get("application/json", {}).get("schema", {})


def component(schema: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    return schema["components"]["schemas"][ref["$ref"].rsplit("/", 1)[1]]


def test_a_runs_logs_are_described_as_a_page_of_log_lines(schema: dict[str, Any]) -> None:
    page = component(schema, answer(schema, "/api/scaling/runs/{id}/logs/", "get", "200"))
    assert set(page["properties"]) == {"results", "last_seq", "has_more", "status"}
    line = component(schema, page["properties"]["results"]["items"])
    assert set(line["properties"]) == {"seq", "time", "level", "step", "message"}


def test_wall_clock_times_are_described_as_hh_mm_text(schema: dict[str, Any]) -> None:
    properties = component(schema, {"$ref": "#/components/schemas/Schedule"})["properties"]
    for name in ("at_time", "until_time"):
        assert properties[name]["type"] == "string"
        assert "format" not in properties[name]  # OpenAPI's "time" carries a UTC offset
        assert properties[name]["nullable"] is True
        assert properties[name]["pattern"].startswith("^")
    runs = properties["next_runs"]
    assert set(component(schema, runs["items"])["properties"]) == {"local", "utc", "event", "note"}


def test_the_write_twins_are_in_the_schema_with_their_errors(schema: dict[str, Any]) -> None:
    paths = schema["paths"]
    assert {"get", "post"} <= set(paths["/api/scaling/schedules/"])
    assert {"get", "put", "patch", "delete"} <= set(paths["/api/scaling/schedules/{id}/"])
    assert {"get", "post"} <= set(paths["/api/scaling/node-groups/"])
    assert {"put", "patch", "delete"} <= set(paths["/api/scaling/node-groups/{id}/"])
    swap = paths["/api/apps/{id}/swap-back/"]["post"]["responses"]
    assert {"202", "403", "404", "409"} <= set(swap)
    created = paths["/api/scaling/schedules/"]["post"]["responses"]
    assert {"201", "400", "403", "415"} <= set(created)
    detail = component(schema, answer(schema, "/api/apps/{id}/swap-back/", "post", "409"))
    assert detail["properties"] == {"detail": {"type": "string"}}
