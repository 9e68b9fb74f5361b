"""Orphan reaper: kills every pod process group once localcluster is gone, however it died.

Run as a script with a pipe on stdin: the runtime writes ``+PGID`` when it starts a container
and ``-PGID`` when the container is gone. End of file on stdin means the runtime exited (the
kernel closes the pipe even after SIGKILL), so every group still listed gets SIGTERM, a short
grace, then SIGKILL. This covers grandchildren, which PR_SET_PDEATHSIG alone does not.
"""

from __future__ import annotations

import os
import signal
import sys
import time


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main() -> int:
    """Track process groups from stdin until end of file, then kill those still listed."""
    # The runtime's own SIGINT (a Ctrl-C on the terminal) must not take the reaper first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    groups: set[int] = set()
    for line in sys.stdin:
        line = line.strip()
        if len(line) < 2 or not line[1:].isdigit():
            continue
        pgid = int(line[1:])
        if line[0] == "+":
            groups.add(pgid)
        elif line[0] == "-":
            groups.discard(pgid)
    for sig, pause in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 0.0)):
        for pgid in list(groups):
            try:
                os.killpg(pgid, sig)
            except (ProcessLookupError, PermissionError):
                groups.discard(pgid)
        deadline = time.monotonic() + pause
        while groups and time.monotonic() < deadline:
            groups = {pgid for pgid in groups if _alive(pgid)}
            time.sleep(0.05)
    return 0


if __name__ == "__main__":
    sys.exit(main())
