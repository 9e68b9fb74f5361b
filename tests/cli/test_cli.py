"""``greenlight`` against the real stack, in CI style: a deploy-scoped token in the environment."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from dashboard.cli.main import cli, log_line
from deployer.models import App
from scaling.models import Schedule
from tests.cli.conftest import GREENLIGHT, Run
from tests.servers import Stack

pytestmark = pytest.mark.timeout(300)


def make_app(name: str) -> App:
    """A one-replica demo app that fails fast and has no bake after the switch."""
    return App.objects.create(
        name=name,
        image="demo/hello:1",
        replicas=1,
        frontend=f"{name}.localhost",
        health_deadline=10,
        guard_bake_seconds=0,
    )


def stored_log(stack: Stack, token: str, deployment: int) -> list[dict[str, object]]:
    """Every stored line of a deployment, as the API pages them."""
    lines: list[dict[str, object]] = []
    after = 0
    while True:
        page = requests.get(
            f"{stack.web_url}/api/deployments/{deployment}/logs/",
            params={"after": after},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        ).json()
        lines.extend(page["results"])
        after = page["last_seq"]
        if not page["has_more"]:
            return lines


def test_it_deploys_following_the_log_then_fails_a_broken_image_with_exit_1(
    greenlight: Callable[..., Run], cli_stack: Stack, ci_token: str
) -> None:
    app = make_app("clishop")

    followed = greenlight("deploy", "clishop", "--follow")

    assert followed.code == 0, f"{followed.stderr}\n{cli_stack.logs()}"
    history = greenlight("history", "clishop", "--output", "json")
    assert history.code == 0, history.stderr
    (first,) = json.loads(history.stdout)
    assert first["status"] == "succeeded"
    assert f"Deployment {first['id']} succeeded: clishop v1." in followed.stderr
    stored = stored_log(cli_stack, ci_token, first["id"])
    printed = followed.stdout.splitlines()
    # The followed log is the stored one, line for line (the retire step may add lines later).
    assert len(stored) >= len(printed) > 3
    assert printed == [log_line(line) for line in stored[: len(printed)]]

    broken = greenlight("deploy", str(app.pk), "--image", "demo/broken", "--wait", "-o", "json")

    assert broken.code == 1, f"{broken.stderr}\n{cli_stack.logs()}"
    result = json.loads(broken.stdout)
    assert (result["status"], result["image"]) == ("failed", "demo/broken")
    assert result["failure_reason"]
    status = greenlight("status", "default/clishop", "-o", "json")
    assert status.code == 0, status.stderr
    body = json.loads(status.stdout)
    assert body["app"]["live_version"] == 1
    assert body["latest_deployment"]["id"] == result["id"]
    for args in (("apps",), ("history", "clishop"), ("status", "clishop")):
        shown = greenlight(*args)
        assert shown.code == 0 and "clishop" in shown.stdout, shown.stderr
    logs = greenlight("logs", str(result["id"]), "-o", "json")
    assert [json.loads(row)["seq"] for row in logs.stdout.splitlines()] == [
        line["seq"] for line in stored_log(cli_stack, ci_token, result["id"])
    ]


def test_it_exits_2_for_a_bad_token_an_unknown_app_and_a_bad_image(
    greenlight: Callable[..., Run],
) -> None:
    make_app("clibad")

    bad_token = greenlight("apps", token="glt_" + "x" * 40)
    unknown = greenlight("deploy", "nosuchapp", "--wait")
    unknown_id = greenlight("status", "999999")
    bad_image = greenlight("deploy", "clibad", "--image", "Not An Image!")

    assert bad_token.code == 2 and "401" in bad_token.stderr, bad_token.stderr
    assert unknown.code == 2 and "No app named 'nosuchapp'" in unknown.stderr
    assert unknown_id.code == 2 and "No app with id 999999" in unknown_id.stderr
    assert bad_image.code == 2 and "image" in bad_image.stderr, bad_image.stderr
    assert not App.objects.get(name="clibad").deployments.exists()
    listed = greenlight("apps", "--output", "json")
    assert [row["name"] for row in json.loads(listed.stdout)] == ["clibad"]


def test_it_shows_schedules_and_refuses_a_scale_the_token_may_not_do(
    greenlight: Callable[..., Run],
) -> None:
    make_app("cliscale")
    Schedule.objects.create(name="nights", cron="0 21 * * *")

    listed = greenlight("schedules", "list", "-o", "json")
    shown = greenlight("schedules", "show", "nights")
    missing = greenlight("schedules", "show", "999999")

    assert listed.code == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert (row["name"], row["cron"]) == ("nights", "0 21 * * *")
    assert row["next_runs"]
    assert shown.code == 0, shown.stderr
    assert "nights" in shown.stdout and "cron 0 21 * * *" in shown.stdout
    assert shown.stdout.count("next:") == len(row["next_runs"])
    assert missing.code == 2 and "No schedule with id 999999" in missing.stderr

    scale = greenlight("scale", "cliscale", "3")

    assert scale.code == 2 and "403" in scale.stderr, scale.stderr
    assert App.objects.get(name="cliscale").replicas == 1
    down = CliRunner().invoke(cli, ["--url", "http://127.0.0.1:9", "--token", "t", "apps"])
    assert down.exit_code == 2
    assert "Cannot reach http://127.0.0.1:9" in down.output


def test_login_checks_the_token_then_saves_it_for_its_owner_only(
    cli_stack: Stack, ci_token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("GREENLIGHT_URL", raising=False)
    monkeypatch.delenv("GREENLIGHT_TOKEN", raising=False)
    runner = CliRunner()
    saved = tmp_path / "greenlight" / "config.json"

    refused = runner.invoke(cli, ["login", "--url", cli_stack.web_url, "--token", "glt_nope"])
    assert refused.exit_code == 2 and not saved.exists()

    signed_in = runner.invoke(cli, ["login", "--url", cli_stack.web_url], input=f"{ci_token}\n")

    assert signed_in.exit_code == 0, signed_in.output
    assert stat.S_IMODE(os.stat(saved).st_mode) == 0o600
    assert json.loads(saved.read_text()) == {"url": cli_stack.web_url, "token": ci_token}
    listed = runner.invoke(cli, ["apps", "-o", "json"])
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.output) == []


def test_a_followed_deploy_awaiting_promotion_says_so_and_exits_1_once_rejected(
    greenlight: Callable[..., Run], cli_stack: Stack, ci_token: str
) -> None:
    App.objects.filter(pk=make_app("climanual").pk).update(promotion="manual")
    env = {
        **os.environ,
        "GREENLIGHT_URL": cli_stack.web_url,
        "GREENLIGHT_TOKEN": ci_token,
        "XDG_CONFIG_HOME": str(cli_stack.workdir / "no-config"),
    }
    follower = subprocess.Popen(
        [str(GREENLIGHT), "deploy", "climanual", "--follow", "--timeout", "90"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stderr is not None
        queued = follower.stderr.readline()
        hint = follower.stderr.readline()
        number = queued.split()[1]
        assert f"Deployment {number} awaits promotion: `greenlight promote {number}`" in hint, (
            queued + hint + cli_stack.logs()
        )

        rejected = greenlight("reject", number, "-o", "json")

        assert rejected.code == 0, rejected.stderr
        assert json.loads(rejected.stdout)["promotion_decision"] == "reject"
        out, err = follower.communicate(timeout=60)
    finally:
        follower.kill()
        follower.wait()
    assert follower.returncode == 1, err
    assert f"Deployment {number} failed" in err or f"Deployment {number} aborted" in err, err
    again = greenlight("reject", number)
    assert again.code == 1 and again.stderr.startswith("Error: "), again.stderr
