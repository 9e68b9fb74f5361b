"""The answer of a ``logs`` endpoint: one page of an owner's stored live-log lines."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rest_framework.response import Response


def log_page(lines: Sequence[dict[str, Any]], after: int, limit: int, status: str) -> Response:
    """200 with the first ``limit`` of ``lines`` (read after ``after``, one more than ``limit``).

    ``last_seq`` is where the next page starts (``after`` when none came) and ``has_more``
    says whether the extra line was there.
    """
    page = list(lines[:limit])
    return Response(
        {
            "results": page,
            "last_seq": page[-1]["seq"] if page else after,
            "has_more": len(lines) > limit,
            "status": status,
        }
    )
