"""Image catalog: maps a container image reference to the local command that stands for it."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEMO_APP = Path(__file__).with_name("demo_app.py")

# The demo images and the demo_app.py mode each one runs.
BUILTIN_DEMOS = {
    "demo/hello": "hello",
    "demo/broken": "broken",
    "demo/crash": "crash",
    "demo/slow": "slow",
    "demo/bad-release": "bad-release",
}


class ImageNotFound(Exception):
    """The catalog knows no command for an image; the kubelet reports ErrImagePull."""


@dataclass(frozen=True)
class ImageRef:
    """A parsed image reference: ``[registry/]repository[:tag][@digest]``."""

    registry: str
    repository: str
    tag: str
    digest: str

    @classmethod
    def parse(cls, image: str) -> ImageRef:
        """Split a reference the way container runtimes do (docker.io and :latest by default)."""
        rest, _, digest = image.partition("@")
        registry = ""
        first, slash, remainder = rest.partition("/")
        if slash and ("." in first or ":" in first or first == "localhost"):
            registry, rest = first, remainder
        repository, tag = rest, ""
        if ":" in rest.rsplit("/", 1)[-1]:
            repository, _, tag = rest.rpartition(":")
        if not tag and not digest:
            tag = "latest"
        return cls(registry or "docker.io", repository, tag, digest)

    @property
    def short(self) -> str:
        """The repository without the Docker Hub registry or library/ prefix."""
        name = self.repository
        if self.registry == "docker.io" and name.startswith("library/"):
            name = name[len("library/") :]
        return name if self.registry == "docker.io" else f"{self.registry}/{name}"

    @property
    def canonical(self) -> str:
        """The fully qualified name a real kubelet reports in containerStatuses[].image."""
        repository = self.repository
        if self.registry == "docker.io" and "/" not in repository:
            repository = f"library/{repository}"
        name = f"{self.registry}/{repository}"
        return f"{name}@{self.digest}" if self.digest and not self.tag else f"{name}:{self.tag}"

    @property
    def image_id(self) -> str:
        """A stable digest reference, as reported in containerStatuses[].imageID."""
        digest = self.digest or "sha256:" + hashlib.sha256(self.canonical.encode()).hexdigest()
        repository = self.canonical.rsplit("@", 1)[0].rsplit(":", 1)[0]
        return f"{repository}@{digest}"


@dataclass(frozen=True)
class Image:
    """What to run for an image: its entrypoint and default arguments, plus extra env."""

    ref: ImageRef
    entrypoint: list[str]
    cmd: list[str]
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None


class Catalog:
    """Resolves image references to local commands: built-in demo images, then user entries."""

    def __init__(self, entries: dict[str, dict[str, Any]] | None = None) -> None:
        self._entries = dict(entries or {})

    @classmethod
    def load(cls, path: str | Path | None) -> Catalog:
        """Read a user catalog file (YAML or JSON); ``None`` gives the built-in catalog only.

        The file maps an image name (``name``, ``name:tag`` or a glob such as ``myapp:*``) to
        ``{"command": [...], "args": [...], "env": {...}, "workingDir": "..."}`` or to a bare
        command list. ``{tag}`` in a command or env value is replaced by the image tag.
        """
        if path is None:
            return cls()
        text = Path(path).read_text()
        try:
            data = json.loads(text)
        except ValueError:
            import yaml  # only needed for user catalogs written in YAML

            data = yaml.safe_load(text)
        if isinstance(data, dict) and isinstance(data.get("images"), dict):
            data = data["images"]
        if not isinstance(data, dict):
            raise ValueError(f"{path}: an image catalog must map image names to commands")
        entries: dict[str, dict[str, Any]] = {}
        for name, entry in data.items():
            if isinstance(entry, list | str):
                entry = {"command": entry}
            if not isinstance(entry, dict) or not entry.get("command"):
                raise ValueError(f"{path}: image {name!r} needs a command")
            if isinstance(entry["command"], str):
                entry = {**entry, "command": ["/bin/sh", "-c", entry["command"]]}
            entries[str(name)] = entry
        return cls(entries)

    def resolve(self, image: str) -> Image:
        """Return the command for ``image`` or raise ImageNotFound."""
        ref = ImageRef.parse(image)
        entry = self._match(ref, image)
        if entry is not None:
            tag = ref.tag or ref.digest

            def fill(value: str) -> str:
                return value.replace("{tag}", tag)

            env = {str(k): fill(str(v)) for k, v in (entry.get("env") or {}).items()}
            return Image(
                ref,
                [fill(str(a)) for a in entry["command"]],
                [fill(str(a)) for a in entry.get("args") or []],
                env,
                entry.get("workingDir"),
            )
        mode = BUILTIN_DEMOS.get(ref.short)
        if mode is None:
            raise ImageNotFound(
                f'failed to pull and unpack image "{ref.canonical}": failed to resolve '
                f'reference "{ref.canonical}": {ref.canonical}: not found'
            )
        return Image(ref, [sys.executable, "-I", "-S", str(DEMO_APP), mode], ["--tag", ref.tag])

    def _match(self, ref: ImageRef, image: str) -> dict[str, Any] | None:
        candidates = [image, f"{ref.short}:{ref.tag}", ref.short, ref.canonical]
        for name in candidates:
            if name in self._entries:
                return self._entries[name]
        for pattern, entry in self._entries.items():
            if any(fnmatch.fnmatchcase(name, pattern) for name in candidates):
                return entry
        return None
