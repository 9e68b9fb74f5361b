"""A client of the Docker/OCI distribution API (``/v2/``): tags of a repository, an image's age.

A registry that answers 401 is asked again with the credentials kept for its host
(:class:`deployer.models.RegistryCredential`): with HTTP basic auth when its challenge is
``Basic``, or with a token from its realm when the challenge is ``Bearer`` (RFC 6750, as the
Docker token protocol uses it). Tags come newest first: tags that are versions (``1.2.3``,
``v1.2``) in semantic-version order, then the others newest first by their image config's
``created``. Lookups are cached for :data:`CACHE_SECONDS`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import ipaddress
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import requests
import semver
from django.core.cache import cache

CACHE_SECONDS = 30
# A failed lookup is remembered briefly too, so that a registry that is down is not asked
# on every keystroke of the form.
ERROR_CACHE_SECONDS = 10
TIMEOUT_SECONDS = 3.0
# Pages of tags followed at most (the registry's Link: rel="next").
MAX_PAGES = 20
# Tags that are not versions whose image config is read for its age; the rest come after.
MAX_DATED = 25
# Their configs are read this many at a time.
DATING_THREADS = 8
DOCKER_HUB = "registry-1.docker.io"
MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)
_LINK_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')
_CHALLENGE_PARAM = re.compile(r'([A-Za-z_]+)=(?:"([^"]*)"|([^\s,]+))')
_VERSION = re.compile(
    r"^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$"
)


class RegistryError(Exception):
    """The registry could not be asked, refused, or answered something unreadable."""


@dataclass(frozen=True)
class Repository:
    """Where an image's repository lives: registry host and the repository's name there."""

    host: str
    name: str

    @property
    def base_url(self) -> str:
        return f"{scheme_for(self.host)}://{self.host}"


def parse(image: str) -> Repository:
    """``127.0.0.1:5000/demo/hello:1`` -> (``127.0.0.1:5000``, ``demo/hello``); Docker Hub's otherwise."""
    name = image.strip().split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name = name[:colon]
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        host = first
        name = rest
    else:
        host = DOCKER_HUB
        if "/" not in name:
            name = f"library/{name}"
    if host in ("docker.io", "index.docker.io"):
        host = DOCKER_HUB
    return Repository(host=host.lower(), name=name)


def tag_of(image: str) -> str:
    """The tag of an image reference (``latest`` when it names none)."""
    name = image.strip().split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[colon + 1 :] if colon > slash else "latest"


def scheme_for(host: str) -> str:
    """Plain HTTP for loopback registries and the hosts whose credentials say so; HTTPS otherwise."""
    from deployer.models import RegistryCredential

    hostname = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if hostname == "localhost":
        return "http"
    try:
        if ipaddress.ip_address(hostname.strip("[]")).is_loopback:
            return "http"
    except ValueError:
        pass
    plain = RegistryCredential.objects.filter(host=host, plain_http=True).exists()
    return "http" if plain else "https"


def version_of(tag: str) -> semver.Version | None:
    """A tag as a semantic version: ``1.2.3``, ``v1.2.3``, ``1.2`` (1.2.0); None when it is none."""
    match = _VERSION.match(tag)
    if match is None:
        return None
    major, minor, patch, pre = match.groups()
    try:
        return semver.Version(int(major), int(minor or 0), int(patch or 0), prerelease=pre)
    except ValueError:
        return None


def matches_glob(tag: str, pattern: str) -> bool:
    """fnmatch, case-sensitive as tags are."""
    return fnmatch.fnmatchcase(tag, pattern)


@dataclass
class Client:
    """One registry conversation; credentials come from the dashboard's per-host settings."""

    repository: Repository
    timeout: float = TIMEOUT_SECONDS
    session: requests.Session = field(default_factory=requests.Session)
    _authorization: str | None = None
    # Read once, at construction: the client's threads never touch the database.
    _login: tuple[str, str] | None = None
    _base_url: str = ""

    def __post_init__(self) -> None:
        from deployer.models import RegistryCredential

        credential = RegistryCredential.objects.filter(host=self.repository.host).first()
        if credential is not None and credential.username:
            self._login = (credential.username, credential.password)
        self._base_url = self.repository.base_url

    def _credentials(self) -> tuple[str, str] | None:
        return self._login

    def get(self, path_or_url: str, *, accept: str | None = None) -> requests.Response:
        """GET with the auth the registry asks for; RegistryError unless it answers 2xx."""
        url = urljoin(self._base_url + "/", path_or_url)
        headers = {"Accept": accept} if accept else {}
        response = self._send(url, headers)
        if response.status_code == 401:
            self._authorization = self._authorize(response)
            response = self._send(url, headers)
            if response.status_code == 401:
                raise RegistryError(
                    f"{self.repository.host} refused the credentials kept for it (401)."
                )
        if response.status_code == 404:
            raise RegistryError(f"{self.repository.host} has no repository {self.repository.name}.")
        if not 200 <= response.status_code < 300:
            raise RegistryError(
                f"{self.repository.host} answered {response.status_code} for {url_path(url)}."
            )
        return response

    def _send(self, url: str, headers: dict[str, str]) -> requests.Response:
        if self._authorization:
            headers = {**headers, "Authorization": self._authorization}
        try:
            return self.session.get(url, headers=headers, timeout=self.timeout)
        except requests.Timeout:
            raise RegistryError(
                f"{self.repository.host} did not answer within {self.timeout:g} s."
            ) from None
        except requests.RequestException as exc:
            raise RegistryError(
                f"{self.repository.host} cannot be reached: {_reason(exc)}"
            ) from None

    def _authorize(self, response: requests.Response) -> str:
        """The Authorization header that answers the registry's WWW-Authenticate challenge."""
        challenge = response.headers.get("WWW-Authenticate", "")
        scheme, _, params_text = challenge.partition(" ")
        params = {m[0].lower(): m[1] or m[2] for m in _CHALLENGE_PARAM.findall(params_text)}
        credentials = self._credentials()
        if scheme.lower() == "basic":
            if credentials is None:
                raise RegistryError(
                    f"{self.repository.host} requires a login; add its credentials on the "
                    "Registries page."
                )
            return requests.auth._basic_auth_str(*credentials)
        if scheme.lower() == "bearer" and params.get("realm"):
            return f"Bearer {self._token(params, credentials)}"
        raise RegistryError(
            f"{self.repository.host} asks for an unknown authentication: {challenge!r}."
        )

    def _token(self, params: dict[str, str], credentials: tuple[str, str] | None) -> str:
        query = {k: params[k] for k in ("service", "scope") if params.get(k)}
        query.setdefault("scope", f"repository:{self.repository.name}:pull")
        try:
            answer = self.session.get(
                params["realm"], params=query, auth=credentials, timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise RegistryError(
                f"The token service of {self.repository.host} cannot be reached: {_reason(exc)}"
            ) from None
        if answer.status_code in (401, 403):
            raise RegistryError(
                f"The token service of {self.repository.host} refused "
                + (
                    "the credentials kept for it."
                    if credentials
                    else "an anonymous login; add credentials on the Registries page."
                )
            )
        if answer.status_code != 200:
            raise RegistryError(
                f"The token service of {self.repository.host} answered {answer.status_code}."
            )
        try:
            body = answer.json()
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not token:
            raise RegistryError(f"The token service of {self.repository.host} sent no token.")
        return str(token)

    def tags(self) -> list[str]:
        """Every tag of the repository, following the ``Link: rel="next"`` pages."""
        found: list[str] = []
        url: str | None = f"/v2/{self.repository.name}/tags/list?n=1000"
        for _ in range(MAX_PAGES):
            if url is None:
                break
            response = self.get(url)
            try:
                found.extend(str(t) for t in response.json().get("tags") or [])
            except (ValueError, AttributeError):
                raise RegistryError(
                    f"{self.repository.host} sent an unreadable tag list."
                ) from None
            match = _LINK_NEXT.search(response.headers.get("Link", ""))
            url = match.group(1) if match else None
        return found

    def created(self, tag: str) -> str:
        """The image config's ``created`` (RFC 3339 text; "" when the config has none)."""
        manifest = self.get(
            f"/v2/{self.repository.name}/manifests/{tag}", accept=MANIFEST_TYPES
        ).json()
        if "manifests" in manifest:  # an index: the first platform's manifest
            if not manifest["manifests"]:
                return ""
            digest = manifest["manifests"][0]["digest"]
            manifest = self.get(
                f"/v2/{self.repository.name}/manifests/{digest}", accept=MANIFEST_TYPES
            ).json()
        config = (manifest.get("config") or {}).get("digest")
        if not config:
            return ""
        body = self.get(f"/v2/{self.repository.name}/blobs/{config}").json()
        return str(body.get("created") or "")


def url_path(url: str) -> str:
    return "/" + url.split("://", 1)[-1].split("/", 1)[-1]


def _reason(exc: Exception) -> str:
    text = str(exc)
    if "Connection refused" in text:
        return "connection refused."
    return text[:200]


def newest_first(tags: list[str], created: dict[str, str] | None = None) -> list[str]:
    """Versions in semantic-version order, newest first; then other tags by ``created``, newest first."""
    created = created or {}
    versions = [(v, t) for t in tags if (v := version_of(t)) is not None]
    versions.sort(key=lambda pair: (pair[0], pair[1]), reverse=True)
    others = [t for t in tags if version_of(t) is None]
    others.sort(key=lambda t: (created.get(t, ""), t), reverse=True)
    return [t for _, t in versions] + others


def _created_or_blank(client: Client, tag: str) -> str:
    try:
        return client.created(tag)
    except (RegistryError, ValueError, KeyError, TypeError, AttributeError):
        return ""


def _cache_key(repo: Repository) -> str:
    generation = cache.get(_generation_key(repo.host)) or 0
    digest = hashlib.sha256(f"{repo.host}/{repo.name}/{generation}".encode()).hexdigest()[:32]
    return f"greenlight:registry-tags:{digest}"


def forget_host(host: str) -> None:
    """Drop every cached lookup of a registry host (its login changed)."""
    cache.set(_generation_key(host), (cache.get(_generation_key(host)) or 0) + 1, None)


def _generation_key(host: str) -> str:
    return f"greenlight:registry-generation:{host}"


def forget(image: str) -> None:
    """Drop the cached lookup of an image's repository."""
    cache.delete(_cache_key(parse(image)))


def lookup(image: str, *, timeout: float | None = None) -> dict[str, Any]:
    """``{"repository", "tags" (newest first), "error", "cached"}`` for the image's repository."""
    repo = parse(image)
    key = _cache_key(repo)
    found = cache.get(key)
    if found is not None:
        return {**found, "cached": True}
    client = Client(repo, timeout=timeout or TIMEOUT_SECONDS)
    result: dict[str, Any] = {"repository": f"{repo.host}/{repo.name}", "tags": [], "error": ""}
    try:
        tags = client.tags()
        dated = [t for t in tags if version_of(t) is None][:MAX_DATED]
        with ThreadPoolExecutor(max_workers=DATING_THREADS) as pool:
            ages = pool.map(lambda t: _created_or_blank(client, t), dated)
            created = dict(zip(dated, ages, strict=True))
        result["tags"] = newest_first(tags, created)
        seconds = CACHE_SECONDS
    except RegistryError as exc:
        result["error"] = str(exc)
        seconds = ERROR_CACHE_SECONDS
    cache.set(key, result, seconds)
    return {**result, "cached": False}
