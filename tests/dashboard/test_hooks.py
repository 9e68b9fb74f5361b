"""Registry webhooks: Docker Hub push payloads and the signed generic hook."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import subprocess
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from dashboard.api.hooks import signature
from dashboard.models import HookDelivery
from deployer import services
from deployer.models import Deployment


def dockerhub(tag: str = "2", repo: str = "demo/hello") -> dict[str, Any]:
    return {
        "callback_url": "https://registry.hub.docker.com/u/demo/hello/hook/x/",
        "push_data": {"pushed_at": 1700000000, "pusher": "ci", "tag": tag},
        "repository": {"repo_name": repo, "name": repo.split("/")[-1], "namespace": "demo"},
    }


def test_it_queues_a_deploy_of_the_pushed_tag(app: Any) -> None:
    response = APIClient().post(
        f"/api/hooks/dockerhub/{app.webhook_secret}/", dockerhub(), format="json"
    )
    assert response.status_code == 202
    deployment = Deployment.objects.get(pk=response.json()["id"])
    assert deployment.image == "demo/hello:2"
    assert deployment.trigger == Deployment.Trigger.WEBHOOK
    assert "Docker Hub push of demo/hello:2" in deployment.trigger_detail


def test_it_answers_404_for_an_unknown_secret(app: Any) -> None:
    response = APIClient().post("/api/hooks/dockerhub/not-a-secret/", dockerhub(), format="json")
    assert response.status_code == 404
    assert not Deployment.objects.exists()


def test_it_refuses_another_repository_with_the_reason(app: Any) -> None:
    response = APIClient().post(
        f"/api/hooks/dockerhub/{app.webhook_secret}/", dockerhub(repo="evil/app"), format="json"
    )
    assert response.status_code == 400
    assert "evil/app is not the repository of hello" in response.json()["repository"][0]
    assert not Deployment.objects.exists()


def test_it_matches_official_images_with_and_without_library(make_app: Any) -> None:
    app = make_app(image="nginx:1.25")
    response = APIClient().post(
        f"/api/hooks/dockerhub/{app.webhook_secret}/",
        dockerhub(tag="1.27", repo="library/nginx"),
        format="json",
    )
    assert response.status_code == 202
    assert Deployment.objects.get().image == "nginx:1.27"


def test_it_does_not_deploy_the_same_tag_twice_within_a_minute(app: Any) -> None:
    url = f"/api/hooks/dockerhub/{app.webhook_secret}/"
    first = APIClient().post(url, dockerhub(), format="json")
    again = APIClient().post(url, dockerhub(), format="json")
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert again.json()["id"] == first.json()["id"]
    assert Deployment.objects.count() == 1
    assert APIClient().post(url, dockerhub(tag="3"), format="json").status_code == 202


def test_it_deploys_the_same_tag_again_after_a_minute(app: Any) -> None:
    url = f"/api/hooks/dockerhub/{app.webhook_secret}/"
    APIClient().post(url, dockerhub(), format="json")
    Deployment.objects.update(created_at=timezone.now() - timedelta(seconds=61))
    assert APIClient().post(url, dockerhub(), format="json").status_code == 202
    assert Deployment.objects.count() == 2


def test_it_puts_missing_payload_fields_on_their_names(app: Any) -> None:
    url = f"/api/hooks/dockerhub/{app.webhook_secret}/"
    response = APIClient().post(url, {"push_data": {"tag": "bad tag!"}}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert "tag" in body["push_data"]
    assert "repository" in body


def signed(
    app: Any, body: dict[str, Any], secret: str | None = None, *, at: float | None = None
) -> Any:
    raw = json.dumps(body).encode()
    stamp = str(int(time.time() if at is None else at))
    return APIClient().post(
        f"/api/hooks/generic/{app.pk}/",
        raw,
        content_type="application/json",
        HTTP_X_GREENLIGHT_TIMESTAMP=stamp,
        HTTP_X_GREENLIGHT_SIGNATURE=signature(secret or app.webhook_secret, raw, stamp),
    )


def test_it_deploys_a_tag_from_a_signed_generic_hook(app: Any) -> None:
    response = signed(app, {"tag": "7"})
    assert response.status_code == 202
    assert Deployment.objects.get().image == "demo/hello:7"
    # Another delivery (a new timestamp) of the same tag within a minute: no second deploy.
    assert signed(app, {"tag": "7"}, at=time.time() + 1).status_code == 200


def test_it_accepts_a_full_image_of_the_same_repository(app: Any) -> None:
    assert signed(app, {"image": "docker.io/demo/hello:8"}).status_code == 202
    response = signed(app, {"image": "other/app:1"})
    assert response.status_code == 400
    assert "not the repository" in response.json()["image"][0]


def test_it_refuses_a_wrong_or_missing_signature(app: Any) -> None:
    assert signed(app, {"tag": "7"}, secret="guess").status_code == 403
    response = APIClient().post(f"/api/hooks/generic/{app.pk}/", {"tag": "7"}, format="json")
    assert response.status_code == 403
    assert "X-Greenlight-Signature" in response.json()["detail"]
    assert not Deployment.objects.exists()


def test_it_refuses_a_signature_of_the_body_alone(app: Any) -> None:
    raw = b'{"tag": "7"}'
    body_only = "sha256=" + hmac.new(app.webhook_secret.encode(), raw, hashlib.sha256).hexdigest()
    response = APIClient().post(
        f"/api/hooks/generic/{app.pk}/",
        raw,
        content_type="application/json",
        HTTP_X_GREENLIGHT_TIMESTAMP=str(int(time.time())),
        HTTP_X_GREENLIGHT_SIGNATURE=body_only,
    )
    assert response.status_code == 403
    assert "<timestamp>.<body>" in response.json()["detail"]


def test_it_refuses_a_signed_delivery_without_a_timestamp(app: Any) -> None:
    raw = b'{"tag": "7"}'
    response = APIClient().post(
        f"/api/hooks/generic/{app.pk}/",
        raw,
        content_type="application/json",
        HTTP_X_GREENLIGHT_SIGNATURE=signature(app.webhook_secret, raw, ""),
    )
    assert response.status_code == 403
    assert "X-Greenlight-Timestamp" in response.json()["detail"]


def test_it_refuses_a_delivery_older_than_five_minutes(app: Any) -> None:
    response = signed(app, {"tag": "7"}, at=time.time() - 301)
    assert response.status_code == 403
    assert "older than 300 s are refused" in response.json()["detail"]
    assert signed(app, {"tag": "7"}, at=time.time() - 290).status_code == 202


def test_it_refuses_a_delivery_stamped_more_than_five_minutes_ahead(app: Any) -> None:
    response = signed(app, {"tag": "7"}, at=time.time() + 400)
    assert response.status_code == 403
    assert "in the future" in response.json()["detail"]
    assert not Deployment.objects.exists()


def test_it_refuses_a_replayed_delivery_after_the_dedupe_minute(app: Any) -> None:
    raw = b'{"tag": "7"}'
    stamp = str(int(time.time()))
    headers = {
        "HTTP_X_GREENLIGHT_TIMESTAMP": stamp,
        "HTTP_X_GREENLIGHT_SIGNATURE": signature(app.webhook_secret, raw, stamp),
    }
    url = f"/api/hooks/generic/{app.pk}/"
    first = APIClient().post(url, raw, content_type="application/json", **headers)
    assert first.status_code == 202
    Deployment.objects.update(created_at=timezone.now() - timedelta(minutes=2))
    replay = APIClient().post(url, raw, content_type="application/json", **headers)
    assert replay.status_code == 409
    assert "received before" in replay.json()["detail"]
    assert Deployment.objects.count() == 1


def test_it_forgets_deliveries_whose_timestamps_can_no_longer_be_accepted(app: Any) -> None:
    assert signed(app, {"tag": "7"}).status_code == 202
    HookDelivery.objects.update(received_at=timezone.now() - timedelta(minutes=11))
    assert signed(app, {"tag": "8"}).status_code == 202
    assert HookDelivery.objects.count() == 1


def test_it_refuses_a_webhook_body_over_64_kib(app: Any) -> None:
    response = signed(app, {"tag": "7", "padding": "x" * 70_000})
    assert response.status_code == 413
    assert "at most 65536 bytes" in response.json()["detail"]
    big = {**dockerhub(), "padding": "x" * 70_000}
    pushed = APIClient().post(f"/api/hooks/dockerhub/{app.webhook_secret}/", big, format="json")
    assert pushed.status_code == 413
    assert not Deployment.objects.exists()


def readme_hook_example() -> str:
    """The shell block of README's "Registry webhooks" section that signs a generic delivery."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Registry webhooks", 1)[1]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    return next(block for block in blocks if "X-Greenlight-Signature" in block)


@pytest.mark.django_db(transaction=True)
def test_the_readme_curl_example_deploys_through_a_live_server(
    live_server: Any, make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    queued: list[int] = []
    monkeypatch.setattr(services, "enqueue", queued.append)
    app = make_app()
    script = readme_hook_example()
    assert "http://127.0.0.1:8000/api/hooks/generic/1/" in script
    script = script.replace(
        "http://127.0.0.1:8000/api/hooks/generic/1/",
        f"{live_server.url}/api/hooks/generic/{app.pk}/",
    )
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env={**os.environ, "SECRET": app.webhook_secret},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "queued"
    assert Deployment.objects.get(app=app).image == "demo/hello:2"
    assert queued == [Deployment.objects.get(app=app).pk]
    # The same command, run again a second later, is a new delivery of the same tag.
    again = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", "sleep 1\n" + script],
        env={**os.environ, "SECRET": app.webhook_secret},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["duplicate"] is True


def test_it_needs_exactly_one_of_tag_and_image(app: Any) -> None:
    response = signed(app, {})
    assert response.status_code == 400
    assert "either tag or image" in response.json()["tag"][0]
    assert signed(app, {"tag": "../x"}).status_code == 400


def test_it_answers_404_for_an_unknown_app(db: Any) -> None:
    assert APIClient().post("/api/hooks/generic/999/", {}, format="json").status_code == 404


@pytest.mark.both_databases
@pytest.mark.django_db(transaction=True)
def test_concurrent_replays_of_one_signed_delivery_deploy_once(make_app: Any) -> None:
    app = make_app()
    raw = b'{"tag": "9"}'
    stamp = str(int(time.time()))
    headers = {
        "HTTP_X_GREENLIGHT_TIMESTAMP": stamp,
        "HTTP_X_GREENLIGHT_SIGNATURE": signature(app.webhook_secret, raw, stamp),
    }
    barrier = threading.Barrier(4)
    codes: list[int] = []

    def deliver() -> None:
        barrier.wait()
        try:
            response = APIClient().post(
                f"/api/hooks/generic/{app.pk}/", raw, content_type="application/json", **headers
            )
            codes.append(response.status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(codes) == [202, 409, 409, 409]
    assert Deployment.objects.filter(app=app).count() == 1


@pytest.mark.both_databases
@pytest.mark.django_db(transaction=True)
def test_concurrent_deliveries_of_one_push_deploy_once(make_app: Any) -> None:
    app = make_app()
    url = f"/api/hooks/dockerhub/{app.webhook_secret}/"
    barrier = threading.Barrier(4)
    codes: list[int] = []

    def deliver() -> None:
        barrier.wait()
        try:
            codes.append(APIClient().post(url, dockerhub(), format="json").status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(codes) == [200, 200, 200, 202]
    assert Deployment.objects.filter(app=app).count() == 1
