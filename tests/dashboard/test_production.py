"""Production: HTTPS settings from the environment, a clean `check --deploy`, compose's HAProxy."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command

from deployer.management.commands import proxysync
from launcher.env import proxy_ssl_header

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = [
    "DEBUG",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "SECURE_SSL_REDIRECT",
    "SECURE_PROXY_SSL_HEADER",
]


def documented_production_environment() -> str:
    """The shell block of README's "Production settings" section."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Production settings", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)[0]


def run_with(script: str, tmp_path: Path, command: str) -> subprocess.CompletedProcess[str]:
    """``command`` in a shell that exported ``script``'s variables, with nothing else of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GREENLIGHT_", "DJANGO_"))}
    env.pop("SECRET_KEY", None)
    env.pop("DATABASE_URL", None)
    env.update(GREENLIGHT_VAR_DIR=str(tmp_path / "var"), PATH=os.environ["PATH"])
    return subprocess.run(
        ["bash", "-euc", f"set -a\n{script}\nset +a\n{command}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_reports_nothing_under_the_documented_production_environment(
    tmp_path: Path,
) -> None:
    result = run_with(
        documented_production_environment(),
        tmp_path,
        f"exec {sys.executable} manage.py check --deploy --fail-level WARNING",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "System check identified no issues" in output
    assert "WARNING" not in output


def test_the_documented_production_environment_turns_every_https_setting_on(
    tmp_path: Path,
) -> None:
    show = tmp_path / "show.py"
    show.write_text(
        "import json, django\n"
        "django.setup()\n"
        "from django.conf import settings\n"
        f"print(json.dumps({{name: getattr(settings, name) for name in {SETTINGS!r}}}))\n"
    )
    result = run_with(
        "DJANGO_SETTINGS_MODULE=dashboard.settings\n" + documented_production_environment(),
        tmp_path,
        f"exec {sys.executable} {show}",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "DEBUG": False,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_HSTS_SECONDS": 31536000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SECURE_HSTS_PRELOAD": True,
        "SECURE_SSL_REDIRECT": True,
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
    }


def test_plain_http_stays_the_default(settings: Any) -> None:
    assert not settings.SESSION_COOKIE_SECURE and not settings.CSRF_COOKIE_SECURE
    assert settings.SECURE_HSTS_SECONDS == 0 and not settings.SECURE_SSL_REDIRECT
    assert settings.SECURE_PROXY_SSL_HEADER is None
    assert settings.HAPROXY_BIND == "127.0.0.1"


def test_the_proxy_ssl_header_is_read_as_a_header_name_and_value() -> None:
    assert proxy_ssl_header("V", None) is None
    assert proxy_ssl_header("V", "X-Forwarded-Proto") == ("HTTP_X_FORWARDED_PROTO", "https")
    assert proxy_ssl_header("V", "X-Forwarded-Ssl=on") == ("HTTP_X_FORWARDED_SSL", "on")
    with pytest.raises(ImproperlyConfigured, match="V must be a header name"):
        proxy_ssl_header("V", "X Forwarded: https")


def test_proxysync_binds_haproxy_where_the_settings_say(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    targets: list[Any] = []

    class Store:
        def snapshot(self) -> str:
            return "snapshot"

        def close(self) -> None:
            pass

    class Registration:
        def leave(self, why: str) -> None:
            pass

    class Sync:
        def __init__(self, store: Any, target: Any, **options: Any) -> None:
            targets.append(target)
            self.registration = Registration()

        def apply(self, snapshot: str) -> None:
            pass

    monkeypatch.setattr(proxysync, "EtcdStore", Store)
    monkeypatch.setattr(proxysync, "ProxySync", Sync)
    settings.HAPROXY_BIND = "0.0.0.0"
    call_command("proxysync", "--once")
    assert targets[0].bind_host == "0.0.0.0"


def compose_config() -> dict[str, Any]:
    compose = shutil.which("docker-compose")
    assert compose is not None, "make test installs Debian's docker-compose"
    result = subprocess.run(
        [compose, "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        env={**os.environ, "SECRET_KEY": "compose-check"},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_haproxy_listens_where_its_published_port_and_proxysync_reach_it() -> None:
    services = compose_config()["services"]
    published_ports = []
    for index in (0, 1):
        proxysync_service = services[f"proxysync-{index}"]
        haproxy = services[f"haproxy-{index}"]
        environment = proxysync_service["environment"]
        assert environment["GREENLIGHT_HAPROXY_BIND"] == "0.0.0.0"
        # One network namespace per load balancer: the port published for its proxysync is
        # its HAProxy's, and the revision check on the stats port reaches HAProxy there.
        assert haproxy["network_mode"] == f"service:proxysync-{index}"
        assert "ports" not in haproxy
        published = proxysync_service["ports"]
        assert [str(port["target"]) for port in published] == ["8080"], published
        published_ports.append(str(published[0]["published"]))
        assert "GREENLIGHT_LB_PORT" not in environment  # 8080, as published
        # Each its own id, the address the worker verifies through, and its own config.
        assert environment["GREENLIGHT_LB_ID"] == f"lb-{index}"
        assert environment["GREENLIGHT_LB_ADDRESS"] == f"http://proxysync-{index}:8080"
        volumes = {volume.split(":")[0] for volume in haproxy["volumes"]}
        assert volumes == {f"haproxy-{index}-config", f"haproxy-{index}-run"}
        assert volumes < {volume.split(":")[0] for volume in proxysync_service["volumes"]}
    assert published_ports == ["80", "8081"]
    assert "haproxy" not in services and "proxysync" not in services
    # Only compose binds every address; make run keeps HAProxy on loopback.
    assert "GREENLIGHT_HAPROXY_BIND" not in (ROOT / "Procfile").read_text()
