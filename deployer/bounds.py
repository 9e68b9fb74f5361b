"""Bounds on text that comes from outside (pod logs, events, status messages) before it is kept.

A pod can print megabytes on one line and an event can carry any message; what
Greenlight stores in a log row and sends to browsers is cut to these sizes, with a
marker that says so. A NUL character, which PostgreSQL cannot store in text, becomes
U+FFFD, as undecodable bytes do.
"""

from __future__ import annotations

# The last output of a failing pod, as read from the Kubernetes API.
LOG_TAIL_BYTES = 8 * 1024
# One Kubernetes event's or pod status's message.
EVENT_MESSAGE_CHARS = 1024
# One stored log line of a deployment or a scaling run.
LOG_LINE_CHARS = 16 * 1024

REPLACEMENT = "\N{REPLACEMENT CHARACTER}"


def cut_text(text: str, limit: int) -> str:
    """``text`` (NULs replaced), or its first ``limit`` characters and a marker when longer."""
    text = text.replace("\0", REPLACEMENT)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… (cut: {len(text) - limit} more characters)"


def cut_bytes(data: bytes, limit: int) -> str:
    """``data`` as UTF-8 (bad bytes and NULs replaced), cut after ``limit`` bytes with a marker.

    ``data`` may hold one byte more than ``limit``: the reader asks for that many to learn
    whether there was more.
    """
    text = data[:limit].decode("utf-8", errors="replace").replace("\0", REPLACEMENT)
    if len(data) > limit:
        return f"{text}… (cut at {limit} bytes)"
    return text
