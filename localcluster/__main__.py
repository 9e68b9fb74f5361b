"""``python -m localcluster``: serve the API on loopback and, if present, start the runtime.

The runtime hook: when ``localcluster.runtime`` exists (and ``--no-runtime`` is not
given), ``await runtime.start(store, args)`` runs once the store is loaded, before the
API starts listening (``args`` is the argparse Namespace, so ``--nodes`` and
``--images`` reach it), and ``await <returned object>.stop()`` runs on SIGTERM/SIGINT
before the server and the store are closed. The kubeconfig is written once the API
listens, so its presence means the cluster is ready.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from .gc import GarbageCollector
from .server import build_app
from .store import Store

log = logging.getLogger("localcluster")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(prog="python -m localcluster", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=6443)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--state-dir", default="var/localcluster")
    p.add_argument(
        "--kubeconfig", default=None, help="where to write a kubeconfig for this cluster"
    )
    p.add_argument("--images", default=None, help="image catalog file (read by the runtime)")
    p.add_argument(
        "--no-runtime",
        action="store_true",
        help="serve the API only: no nodes, controllers or kubelets",
    )
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def kubeconfig(server: str) -> dict[str, Any]:
    """A kubeconfig with one cluster, user and context named ``localcluster``."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "localcluster", "cluster": {"server": server}}],
        "users": [{"name": "localcluster", "user": {"token": "localcluster"}}],
        "contexts": [
            {
                "name": "localcluster",
                "context": {
                    "cluster": "localcluster",
                    "user": "localcluster",
                    "namespace": "default",
                },
            }
        ],
        "current-context": "localcluster",
        "preferences": {},
    }


async def serve(args: argparse.Namespace) -> None:
    """Run until SIGTERM/SIGINT, then stop the runtime, the server and the store."""
    store = Store(args.state_dir)
    store.load()
    gc = GarbageCollector(store)
    gc.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runtime = None
    if not args.no_runtime and importlib.util.find_spec("localcluster.runtime") is not None:
        module = importlib.import_module("localcluster.runtime")
        # Started before the API listens, so a ready server already has its nodes.
        runtime = await module.start(store, args)
    address = f"{args.host}:{args.port}"
    app = build_app(store, address)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port, reuse_address=True)
    await site.start()
    port = args.port
    if port == 0:
        port = runner.addresses[0][1]
    if args.kubeconfig:
        path = Path(args.kubeconfig)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(kubeconfig(f"http://{args.host}:{port}")))
        tmp.replace(path)
    log.info("localcluster serving on http://%s:%d", args.host, port)
    await stop.wait()
    log.info("shutting down")
    if runtime is not None:
        try:
            await runtime.stop()
        except Exception:
            log.exception("runtime stop failed")
    store.shutdown_watchers()
    await gc.stop()
    await runner.cleanup()
    store.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
