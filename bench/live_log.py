"""Latency of a deployment log line from the worker's append to the browser's DOM.

Usage: .venv/bin/python bench/live_log.py [--lines 300] [--interval 0.02]

Starts a throwaway redis-server and the ASGI web server (daphne) on free loopback
ports with a temporary SQLite database, opens a running deployment's page in
headless Chromium, then appends log lines exactly as the worker does
(``deployer.logsink.append``: stored, committed, published to the Channels group).
A MutationObserver in the page stamps each line as it enters the DOM; the script
prints p50/p95/max of (DOM time - append time). Both clocks are this host's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OBSERVER = """
() => {
  window.__seen = {};
  window.__since = Date.now();
  const log = document.getElementById("log");
  new MutationObserver((records) => {
    const now = Date.now();
    for (const r of records) for (const n of r.addedNodes) {
      if (n.dataset && n.dataset.seq) window.__seen[n.dataset.seq] = now;
    }
  }).observe(log, { childList: true });
}
"""


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted ``values``."""
    return values[min(len(values) - 1, int(round(fraction * (len(values) - 1))))]


def main() -> None:
    """Start redis and daphne, open the page, emit lines, print the latency figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=300)
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between lines")
    args = parser.parse_args()

    from tests.servers import free_port, redis_server, wait_for_port

    var = Path(tempfile.mkdtemp(prefix="greenlight-bench-"))
    (var / "staticfiles").mkdir()
    with redis_server(var / "redis") as redis:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "dashboard.settings",
            "GREENLIGHT_VAR_DIR": str(var),
            "GREENLIGHT_REDIS_URL": str(redis.extra["url"]),
            "GREENLIGHT_KUBECONFIG": str(var / "no-kubeconfig"),
            "GREENLIGHT_LOG_LEVEL": "WARNING",
            "SECRET_KEY": "bench",
        }
        os.environ.update(env)
        import django

        django.setup()
        from django.contrib.auth import get_user_model
        from django.core.management import call_command
        from django.utils import timezone

        from deployer import logsink
        from deployer.models import App, Deployment

        call_command("migrate", verbosity=0)
        get_user_model().objects.create_superuser("bench", password="bench-password")
        app = App.objects.create(
            name="hello", image="demo/hello:1", frontend="hello.localhost", guard_bake_seconds=0
        )
        deployment = Deployment.objects.create(
            app=app, image=app.image, status="running", started_at=timezone.now(), version=1
        )

        port = free_port()
        web = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
             "dashboard.asgi:application"],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        try:
            wait_for_port(port, process=web)
            latencies = measure(f"http://127.0.0.1:{port}", deployment, args, logsink)
        finally:
            web.terminate()
            web.wait(10)

    latencies.sort()
    print(f"{len(latencies)} lines, one every {args.interval * 1000:.0f} ms")
    print(
        f"append -> DOM: p50 {percentile(latencies, 0.5):.1f} ms, "
        f"p95 {percentile(latencies, 0.95):.1f} ms, max {latencies[-1]:.1f} ms "
        f"(target p95 < 100 ms)"
    )


def measure(
    base: str, deployment: object, args: argparse.Namespace, logsink: object
) -> list[float]:
    """Open the deployment page signed in, emit lines, return per-line latency in ms."""
    from playwright.sync_api import sync_playwright

    from tests.servers import launch_chromium

    emitted: dict[int, float] = {}
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page()
        page.goto(base + "/login/")
        page.fill("#id_username", "bench")
        page.fill("#id_password", "bench-password")
        page.click("button[type=submit]")
        page.wait_for_url(base + "/")
        page.goto(f"{base}/deployments/{deployment.pk}/")  # type: ignore[attr-defined]
        page.wait_for_selector("#live-indicator.on")
        page.evaluate(OBSERVER)

        # Playwright's sync API owns an event loop in this thread; Django's ORM runs elsewhere.
        def emit() -> None:
            for i in range(args.lines):
                emitted_at = time.time() * 1000
                line = logsink.append(deployment, f"bench line {i}", step="bench")  # type: ignore[attr-defined]
                emitted[line.seq] = emitted_at
                time.sleep(args.interval)

        worker = threading.Thread(target=emit)
        worker.start()
        while worker.is_alive():
            page.wait_for_timeout(100)
        worker.join()
        deadline = time.monotonic() + 10
        seen: dict[str, float] = {}
        while time.monotonic() < deadline:
            seen = page.evaluate("() => window.__seen")
            if len(seen) >= len(emitted):
                break
            time.sleep(0.1)
        browser.close()
    missing = len(emitted) - len(seen)
    if missing:
        print(f"warning: {missing} lines never reached the DOM")
    return [seen[str(seq)] - at for seq, at in emitted.items() if str(seq) in seen]


if __name__ == "__main__":
    main()
