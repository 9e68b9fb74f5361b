"""Latency of log lines written by the real Celery worker during real deploys, to the DOM.

Usage: .venv/bin/python bench/live_log_stack.py [--deploys 5]

Starts the whole stack on free loopback ports (redis, etcd, localcluster, HAProxy,
proxysync, a Celery worker, daphne; see running_stack in tests/servers.py), then in headless
Chromium clicks Deploy ``--deploys`` times. On each deployment page a MutationObserver
stamps every log line as it enters the DOM; the latency of a line is that stamp minus
the line's ``time`` (set by the worker when it wrote the line, before commit). Lines
written before the page was following are left out (they come from the stored log).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.live_log import OBSERVER, percentile  # noqa: E402
from tests.servers import launch_chromium  # noqa: E402

PASSWORD = "bench-password"


def main() -> None:
    """Start the stack, deploy from the browser, print latency figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deploys", type=int, default=5)
    args = parser.parse_args()

    from tests.servers import etcd_server, localcluster_server, redis_server, running_stack

    var = Path(tempfile.mkdtemp(prefix="greenlight-bench-"))
    db = var / "bench.sqlite3"
    base_env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "SECRET_KEY": "bench",
        "GREENLIGHT_VAR_DIR": str(var),
        "GREENLIGHT_DB_PATH": str(db),
    }
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"], env=base_env, cwd=ROOT, check=True
    )
    with (
        redis_server(var / "redis") as redis,
        etcd_server(var / "etcd") as etcd,
        localcluster_server(var / "localcluster", nodes=2) as cluster,
        running_stack(
            var / "stack",
            db_path=db,
            redis_url=str(redis.extra["url"]),
            etcd_endpoint=str(etcd.extra["endpoint"]),
            kubeconfig=cluster.kubeconfig,
        ) as stack,
    ):
        os.environ.update(stack.env)
        import django

        django.setup()
        samples = run(stack.web_url, args.deploys)

    samples.sort()
    print(f"{len(samples)} live lines over {args.deploys} deploys of a 2-replica app")
    print(
        f"worker line -> DOM: p50 {percentile(samples, 0.5):.1f} ms, "
        f"p95 {percentile(samples, 0.95):.1f} ms, max {samples[-1]:.1f} ms "
        f"(target p95 < 100 ms)"
    )


def in_thread(function: Any) -> Any:
    """Run ``function`` in another thread: Playwright's sync API holds this one's event loop."""
    box: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: box.setdefault("value", function()))
    thread.start()
    thread.join()
    return box.get("value")


def run(base: str, deploys: int) -> list[float]:
    """Sign in, deploy ``deploys`` times, return the latency of every live line in ms."""
    from django.contrib.auth import get_user_model
    from playwright.sync_api import sync_playwright

    from deployer.models import App, DeploymentLog

    def seed() -> int:
        get_user_model().objects.create_superuser("bench", password=PASSWORD)
        app = App.objects.create(
            name="hello",
            image="demo/hello:1",
            replicas=2,
            frontend="hello.localhost",
            guard_bake_seconds=0,
        )
        return app.pk

    app_id = in_thread(seed)
    samples: list[float] = []
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page()
        page.set_default_timeout(120_000)
        page.goto(base + "/login/")
        page.fill("#id_username", "bench")
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(base + "/")
        for n in range(1, deploys + 1):
            page.goto(f"{base}/apps/{app_id}/")
            page.fill("#id_image", f"demo/hello:{n}")
            page.click("#deploy-button")
            page.wait_for_url("**/deployments/*/")
            page.evaluate(OBSERVER)
            page.wait_for_selector(
                "#status-banner.succeeded, #status-banner.failed, #status-banner.aborted"
            )
            page.wait_for_timeout(200)
            deployment_id = int(page.url.rstrip("/").rsplit("/", 1)[1])
            seen = page.evaluate("() => window.__seen")
            since = page.evaluate("() => window.__since")

            def lines(deployment_id: int = deployment_id) -> dict[int, float]:
                return {
                    line.seq: line.time.timestamp() * 1000
                    for line in DeploymentLog.objects.filter(deployment_id=deployment_id)
                }

            written = in_thread(lines)
            samples += [
                at - written[int(seq)]
                for seq, at in seen.items()
                if int(seq) in written and written[int(seq)] >= since
            ]
        browser.close()
    return samples


if __name__ == "__main__":
    main()
