"""The store's files in --state-dir: a snapshot plus an append-only journal.

``state.json`` holds every object and the resourceVersion counter;
``journal.jsonl`` holds each change since, one JSON line per write, flushed to
the OS at once so a SIGKILL loses nothing the API acknowledged. Loading replays
the journal over the snapshot; a new snapshot is written at start-up, every
COMPACT_EVERY writes, and at shutdown.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from .records import Entry, Event, ObjKey, dumps

COMPACT_EVERY = 5000


class StateFiles:
    """Snapshot and journal of one store."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.snap = state_dir / "state.json"
        self.journal_path = state_dir / "journal.jsonl"
        self._journal: IO[bytes] | None = None
        self._count = 0

    def load(
        self,
        put: Callable[[str, dict[str, Any]], Any],
        drop: Callable[[str, ObjKey], Any],
        known: set[str],
    ) -> int:
        """Replay snapshot then journal through ``put``/``drop``; return the resourceVersion reached."""
        rv = 0
        if self.snap.exists():
            data = json.loads(self.snap.read_text())
            rv = int(data.get("resourceVersion", 0))
            for key, items in data.get("objects", {}).items():
                if key in known:
                    for obj in items:
                        put(key, obj)
        if self.journal_path.exists():
            with self.journal_path.open("rb") as fh:
                for line in fh:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        break  # a torn last line after a crash
                    rv = max(rv, int(rec["rv"]))
                    key = rec["r"]
                    if key not in known:
                        continue
                    if rec["op"] == "put":
                        put(key, rec["obj"])
                    else:
                        drop(key, (rec["ns"], rec["name"]))
        return rv

    def snapshot(self, rv: int, objects: Mapping[str, Mapping[ObjKey, Entry]]) -> None:
        """Write every object atomically and start an empty journal."""
        if self._journal is not None:
            self._journal.close()
        tmp = self.snap.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            fh.write(b'{"resourceVersion":' + str(rv).encode() + b',"objects":{')
            first = True
            for key, entries in objects.items():
                if not first:
                    fh.write(b",")
                first = False
                fh.write(dumps(key) + b":[" + b",".join(e.raw for e in entries.values()) + b"]")
            fh.write(b"}}")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.snap)
        self._journal = self.journal_path.open("wb")
        self._count = 0

    def append(self, ev: Event, key: ObjKey) -> bool:
        """Journal one change; return True when it is time to compact into a snapshot."""
        if self._journal is None:
            return False
        if ev.type == "DELETED":
            line = dumps({"rv": ev.rv, "op": "del", "r": ev.resource, "ns": key[0], "name": key[1]})
        else:
            line = b'{"rv":%d,"op":"put","r":%s,"obj":%s}' % (ev.rv, dumps(ev.resource), ev.raw)
        self._journal.write(line + b"\n")
        self._journal.flush()
        self._count += 1
        return self._count >= COMPACT_EVERY

    def close(self) -> None:
        """Close the journal."""
        if self._journal is not None:
            self._journal.close()
            self._journal = None
