"""An instant PromQL query (Prometheus' ``/api/v1/query``) and which of its samples breach."""

from __future__ import annotations

import http.client
import json
import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

# How long Prometheus may take to answer a query.
PROMETHEUS_TIMEOUT = 3.0


class PrometheusError(Exception):
    """Prometheus could not be asked, or did not answer a query."""


@dataclass(frozen=True)
class Sample:
    """One sample of a query's result: its labels and value."""

    labels: dict[str, str]
    value: float

    def describe(self) -> str:
        """``{job="web"} = 3``."""
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(self.labels.items()))
        return f"{{{labels}}} = {self.value:g}"


def query_prometheus(
    base_url: str, promql: str, timeout: float = PROMETHEUS_TIMEOUT
) -> list[Sample]:
    """The samples of an instant query (``/api/v1/query``); PrometheusError when it fails.

    A vector gives one sample per series, a matrix its last value per series, a scalar one
    sample without labels.
    """
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PrometheusError(f"GREENLIGHT_PROMETHEUS_URL {base_url!r} is not an http:// URL")
    connection_class = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_class(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request(
            "POST",
            f"{parts.path.rstrip('/')}/api/v1/query",
            body=urlencode({"query": promql}),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        response = connection.getresponse()
        raw = response.read(4 * 1024 * 1024)
    except (OSError, http.client.HTTPException) as exc:
        raise PrometheusError(f"{base_url} does not answer: {exc}") from exc
    finally:
        connection.close()
    try:
        answer = json.loads(raw)
    except ValueError as exc:
        raise PrometheusError(f"{base_url} answered {response.status} without JSON") from exc
    if not isinstance(answer, dict) or answer.get("status") != "success":
        error = answer.get("error") if isinstance(answer, dict) else None
        raise PrometheusError(f"the query failed ({response.status}): {error or raw[:200]!r}")
    return _samples(answer.get("data") or {})


def _samples(data: dict[str, Any]) -> list[Sample]:
    kind, result = data.get("resultType"), data.get("result")
    try:
        if kind == "scalar":
            return [Sample({}, float(result[1]))]  # type: ignore[index]
        if kind == "vector":
            return [Sample(dict(s.get("metric") or {}), float(s["value"][1])) for s in result]  # type: ignore[union-attr]
        if kind == "matrix":
            return [
                Sample(dict(s.get("metric") or {}), float(s["values"][-1][1]))
                for s in result  # type: ignore[union-attr]
                if s.get("values")
            ]
    except (TypeError, KeyError, IndexError, ValueError) as exc:
        raise PrometheusError(f"an answer of type {kind} that cannot be read: {exc}") from exc
    raise PrometheusError(f"an answer of type {kind!r}, not a vector, matrix or scalar")


def breaching(samples: list[Sample]) -> list[Sample]:
    """The samples that breach: every non-zero value (NaN is no data)."""
    return [s for s in samples if s.value != 0 and not math.isnan(s.value)]
