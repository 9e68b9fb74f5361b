"""``python -m localcluster``: serve the API on loopback and, if present, start the runtime.

The runtime hook: when ``localcluster.runtime`` exists (and ``--no-runtime`` is not
given), ``await runtime.start(store, args)`` runs once the store is loaded, before the
API starts listening (``args`` is the argparse Namespace, so ``--nodes`` and
``--images`` reach it), and ``await <returned object>.stop()`` runs on SIGTERM/SIGINT
before the server and the store are closed. The kubeconfig is written once the API
listens, so its presence means the cluster is ready. The API is served over
https (``tls``); the kubeconfig carries the CA to trust and the state dir's
bearer token (``auth.state_token``), which every request but /livez, /readyz and
/version needs; ``--token-auth-file`` adds identities. ``--authorization-mode=RBAC``
then decides what each may do from the stored Roles, ClusterRoles and bindings
(``rbac``); the kubeconfig's identity is in ``system:masters``. The default,
AlwaysAllow, lets every identity do anything.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib
import importlib.util
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from . import auth, private_files, rbac, tls
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
        "--token-auth-file",
        default=None,
        help="more bearer tokens, in kube-apiserver's static token CSV: token,user,uid[,groups]",
    )
    p.add_argument(
        "--authorization-mode",
        default="AlwaysAllow",
        choices=rbac.MODES,
        help="AlwaysAllow (every caller with a token may do anything) or RBAC (Roles, "
        "ClusterRoles and their bindings decide; system:masters may do anything)",
    )
    p.add_argument(
        "--no-runtime",
        action="store_true",
        help="serve the API only: no nodes, controllers or kubelets",
    )
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def kubeconfig(server: str, ca_pem: bytes, token: str) -> dict[str, Any]:
    """A kubeconfig (cluster, user and context all named ``localcluster``) trusting ``ca_pem``, sending ``token``."""
    cluster = {"server": server, "certificate-authority-data": base64.b64encode(ca_pem).decode()}
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "localcluster", "cluster": cluster}],
        "users": [{"name": "localcluster", "user": {"token": token}}],
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


def load_guard(args: argparse.Namespace) -> tuple[auth.Guard, str]:
    """The Guard admitting the state dir's token and the token file's; and the state dir's token."""
    token = auth.state_token(Path(args.state_dir))
    tokens = [(token, auth.ADMIN)]
    if args.token_auth_file:
        try:
            tokens += auth.read_token_file(Path(args.token_auth_file)).items()
        except (OSError, ValueError) as exc:
            raise SystemExit(f"--token-auth-file: {exc}") from None
    return auth.Guard(tokens), token


async def serve(args: argparse.Namespace) -> None:
    """Run until SIGTERM/SIGINT, then stop the runtime, the server and the store."""
    guard, token = load_guard(args)
    ssl_context, ca_pem = tls.server_context(Path(args.state_dir), args.host)
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
    app = build_app(store, address, guard, args.authorization_mode)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port, ssl_context=ssl_context, reuse_address=True)
    await site.start()
    port = args.port
    if port == 0:
        port = runner.addresses[0][1]
    if args.kubeconfig:
        host = f"[{args.host}]" if ":" in args.host else args.host
        config = kubeconfig(f"https://{host}:{port}", ca_pem, token)
        private_files.replace(Path(args.kubeconfig), yaml.safe_dump(config).encode())
    log.info("localcluster serving on https://%s:%d", args.host, port)
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
