"""A live dashboard (daphne), worker, proxysync, HAProxy and localcluster for the CLI tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from tests.servers import Server, Stack, running_stack

GREENLIGHT = Path(sys.executable).with_name("greenlight")


@pytest.fixture(scope="module")
def cli_stack(
    tmp_path_factory: pytest.TempPathFactory,
    django_db_setup: None,
    redis: Server,
    etcd: Server,
    kubeconfig: Path,
) -> Iterator[Stack]:
    """The whole stack with a web server, sharing the test database, for one module."""
    with running_stack(
        tmp_path_factory.mktemp("cli-stack"),
        redis_url=str(redis.extra["url"]),
        etcd_endpoint=str(etcd.extra["endpoint"]),
        kubeconfig=kubeconfig,
        web=True,
        label="cli",
    ) as stack:
        yield stack


@dataclass
class Run:
    """One finished ``greenlight`` run."""

    code: int
    stdout: str
    stderr: str


@pytest.fixture
def ci_token(transactional_db: None) -> str:
    """A read+deploy token made as CI makes it: ``manage.py create_token``."""
    get_user_model().objects.create_superuser("admin", "admin@example.com", "admin")
    out = StringIO()
    call_command(
        "create_token",
        "--user=admin",
        "--name=ci-cli",
        "--scopes=read,deploy",
        "--expires-in=1d",
        stdout=out,
    )
    return out.getvalue().strip()


@pytest.fixture
def greenlight(cli_stack: Stack, ci_token: str, tmp_path: Path) -> Callable[..., Run]:
    """Run the installed console script with GREENLIGHT_URL and GREENLIGHT_TOKEN, as CI does."""
    assert GREENLIGHT.exists(), f"{GREENLIGHT} is missing: pip install -e ."

    def run(*args: str, token: str | None = None, timeout: float = 150) -> Run:
        env = {
            **os.environ,
            "GREENLIGHT_URL": cli_stack.web_url,
            "GREENLIGHT_TOKEN": ci_token if token is None else token,
            # No saved login of the machine's user takes part.
            "XDG_CONFIG_HOME": str(tmp_path / "config"),
        }
        done = subprocess.run(
            [str(GREENLIGHT), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        return Run(done.returncode, done.stdout, done.stderr)

    return run
