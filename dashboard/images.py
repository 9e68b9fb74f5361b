"""Image references as registries name them: repository without tag or digest, normalised."""

from __future__ import annotations

DOCKER_HUB_HOSTS = ("docker.io/", "index.docker.io/", "registry-1.docker.io/")


def repository(image: str) -> str:
    """``registry:5000/team/app:1@sha256:..`` -> ``registry:5000/team/app``."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name = name[:colon]
    return name


def same_repository(a: str, b: str) -> bool:
    """True when two repositories name the same thing (Docker Hub's ``library/`` and host optional)."""
    return _canonical(a) == _canonical(b)


def _canonical(repo: str) -> str:
    repo = repository(repo.strip()).lower()
    for host in DOCKER_HUB_HOSTS:
        if repo.startswith(host):
            repo = repo[len(host) :]
            break
    if repo.startswith("library/") and repo.count("/") == 1:
        repo = repo[len("library/") :]
    return repo


def with_tag(image: str, tag: str) -> str:
    """The app's repository with ``tag``: ``demo/hello:1`` + ``2`` -> ``demo/hello:2``."""
    return f"{repository(image)}:{tag}"
