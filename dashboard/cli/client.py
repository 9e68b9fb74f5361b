"""The REST API as the command line sees it: where it is, the token, and errors as exit codes.

Nothing here imports Django: the client talks to a dashboard over HTTP only.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import requests

# Exit codes: 0 success, 1 the operation failed (a failed, aborted or rolled back deploy,
# a 409), 2 the command could not run (usage, auth, unknown object, unreachable API).
FAILED = 1
USAGE = 2

TIMEOUT = 30


class CliError(Exception):
    """A message for the terminal and the exit code that goes with it."""

    def __init__(self, message: str, code: int = USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def config_path() -> Path:
    """``$XDG_CONFIG_HOME/greenlight/config.json``, or under ``~/.config`` without it."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "greenlight" / "config.json"


def save_config(url: str, token: str) -> Path:
    """Write the URL and token to the config file, readable by its owner only (0600)."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w") as handle:
        json.dump({"url": url, "token": token}, handle, indent=2)
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    return path


def load_config() -> dict[str, str]:
    """The saved URL and token, or nothing when ``greenlight login`` was never run."""
    path = config_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise CliError(f"Cannot read {path}: {exc}. Run `greenlight login` again.") from None
    return {key: str(data[key]) for key in ("url", "token") if data.get(key)}


def check_url(url: str) -> str:
    """``url`` without a trailing slash; a clear error when it is not an http(s) URL."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise CliError(
            f"{url!r} is not a dashboard URL: give http(s)://host[:port], "
            "e.g. http://127.0.0.1:8000."
        )
    return url.rstrip("/")


@dataclass
class Api:
    """One dashboard's API: ``url`` is the dashboard's root (``/api/`` is added)."""

    url: str
    token: str

    @classmethod
    def from_environment(cls, url: str | None, token: str | None) -> Api:
        """Options first, then GREENLIGHT_URL / GREENLIGHT_TOKEN, then the config file."""
        saved = load_config() if not (url and token) else {}
        url = url or saved.get("url")
        token = token or saved.get("token")
        if not url or not token:
            raise CliError(
                "No dashboard configured: set GREENLIGHT_URL and GREENLIGHT_TOKEN, "
                "or run `greenlight login`."
            )
        return cls(check_url(url), token)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON answer of ``method path`` (path under /api/); errors as ``CliError``."""
        target = path if path.startswith("http") else f"{self.url}/api/{path.lstrip('/')}"
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        try:
            answer = requests.request(method, target, headers=headers, timeout=TIMEOUT, **kwargs)
        except requests.ConnectionError as exc:
            raise CliError(f"Cannot reach {self.url}: {reason(exc)}") from None
        except requests.Timeout:
            raise CliError(f"{self.url} did not answer within {TIMEOUT}s.") from None
        except requests.RequestException as exc:
            raise CliError(f"Request to {target} failed: {exc}") from None
        if answer.status_code >= 400:
            raise refusal(answer, self.url)
        if answer.status_code == 204 or not answer.content:
            return None
        try:
            return answer.json()
        except ValueError:
            raise CliError(
                f"{target} answered {answer.status_code} with no JSON: is {self.url} "
                "a Greenlight dashboard?"
            ) from None

    def get(self, path: str, **params: Any) -> Any:
        """GET with query parameters."""
        return self.call("GET", path, params=params or None)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """POST a JSON body."""
        return self.call("POST", path, json=body if body is not None else {})

    def every(self, path: str, **params: Any) -> Iterator[dict[str, Any]]:
        """Every row of a paginated list, following ``next``."""
        page = self.get(path, **params)
        while True:
            yield from page["results"]
            if not page.get("next"):
                return
            page = self.call("GET", page["next"])


def reason(exc: requests.ConnectionError) -> str:
    """The innermost cause of a connection error, e.g. 'Connection refused'."""
    cause: BaseException = exc
    while cause.__cause__ is not None or cause.__context__ is not None:
        cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
    text = str(cause) or type(cause).__name__
    return text.split("] ", 1)[-1] if "] " in text else text


def detail(answer: requests.Response) -> str:
    """The API's own message: ``detail``, or each bad field by name."""
    try:
        body = answer.json()
    except ValueError:
        return answer.text.strip()[:200] or answer.reason
    if isinstance(body, dict):
        if "detail" in body:
            return str(body["detail"])
        return "; ".join(
            f"{field}: {' '.join(map(str, msgs)) if isinstance(msgs, list) else msgs}"
            for field, msgs in body.items()
        )
    return json.dumps(body)


def refusal(answer: requests.Response, url: str) -> CliError:
    """A 4xx/5xx answer as the error the command exits with."""
    status, message = answer.status_code, detail(answer)
    if status == 401:
        return CliError(f"Not signed in to {url} (401): {message}")
    if status == 403:
        return CliError(f"Not allowed (403): {message}")
    if status == 404:
        return CliError(f"Not found (404): {answer.request.path_url}")
    if status == 409:
        return CliError(message, FAILED)
    if status >= 500:
        return CliError(f"{url} failed ({status}): {message}", FAILED)
    return CliError(f"Refused ({status}): {message}")
