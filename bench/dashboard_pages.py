"""Render time and query count of the app list and the history pages with 10,000 deployments.

Usage: .venv/bin/python bench/dashboard_pages.py [--deployments 10000] [--runs 30]

Builds a throwaway SQLite database under a temporary var dir, seeds one app with
``--deployments`` deployments (plus 19 smaller apps), then times full requests
through Django's test client (middleware, view, queries, template) and prints
p50/p95/max and the number of SQL queries per page. The cluster is not reachable
here, so the live pod state is "unknown" (the list pays no cluster round trip).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    """Seed, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()

    var = tempfile.mkdtemp(prefix="greenlight-bench-")
    (Path(var) / "staticfiles").mkdir()
    os.environ.update(
        DJANGO_SETTINGS_MODULE="dashboard.settings",
        GREENLIGHT_VAR_DIR=var,
        GREENLIGHT_KUBECONFIG=str(Path(var) / "no-kubeconfig"),
        SECRET_KEY="bench",
        GREENLIGHT_LOG_LEVEL="ERROR",
    )
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from deployer.models import Deployment
    from tests.history import add_apps, numbered

    settings.ALLOWED_HOSTS = ["*"]
    call_command("migrate", verbosity=0)
    admin = get_user_model().objects.create_superuser("bench", password="bench")
    apps = add_apps(admin, ["hello"], args.deployments, replicas=1)
    apps += add_apps(admin, numbered(0, 19), 50, replicas=1)
    total = Deployment.objects.count()

    client = Client()
    client.force_login(admin)
    pages = {
        "app list  /": "/",
        "history   /apps/<hello>/history/": f"/apps/{apps[0].pk}/history/",
        "history   page 100": f"/apps/{apps[0].pk}/history/?page=100",
        "all deployments /deployments/": "/deployments/",
        "app page  /apps/<hello>/": f"/apps/{apps[0].pk}/",
    }
    print(f"{total} deployments ({args.deployments} of hello), {len(apps)} apps, SQLite")
    print(f"{'page':38} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'queries':>8}")
    for label, url in pages.items():
        client.get(url)  # warm caches and templates
        times = []
        for _ in range(args.runs):
            started = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, (url, response.status_code)
        with CaptureQueriesContext(connection) as queries:
            client.get(url)
        times.sort()
        p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
        print(
            f"{label:38} {statistics.median(times):8.1f} {p95:8.1f} {times[-1]:8.1f} "
            f"{len(queries.captured_queries):8d}"
        )


if __name__ == "__main__":
    main()
