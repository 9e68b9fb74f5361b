"""The web process imports its views and freezes its startup heap before it serves."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dashboard.startup import freeze_startup_heap

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """The test process's collector as it was, whatever the test froze."""
    yield
    gc.unfreeze()


def test_it_imports_every_view_and_freezes_what_is_alive(unfrozen: None) -> None:
    frozen = freeze_startup_heap()

    assert frozen == gc.get_freeze_count() > 0
    assert "dashboard.views.apps" in sys.modules


def test_the_asgi_application_starts_with_a_frozen_heap() -> None:
    check = (
        "import gc, dashboard.asgi, sys; "
        "print(gc.get_freeze_count(), 'dashboard.views.apps' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", check],
        cwd=REPO,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    count, imported = done.stdout.split()
    assert int(count) > 0
    assert imported == "True"
