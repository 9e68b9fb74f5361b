"""Writers at once: each a thread with its own database connection, released together at a
barrier, so that their transactions overlap as two workers' (or a worker's and a request's) do."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from django.db import connection

Result = TypeVar("Result")


def at_once(calls: list[Callable[[], Result]]) -> list[Result | BaseException]:
    """Run every call in a thread of its own, released together; each one's result or error."""
    barrier = threading.Barrier(len(calls))
    results: list[Result | BaseException] = [RuntimeError("never ran")] * len(calls)

    def run(index: int, call: Callable[[], Result]) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = call()
        except BaseException as exc:
            results[index] = exc
        finally:
            connection.close()  # this thread's own connection

    threads = [threading.Thread(target=run, args=item) for item in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "a writer is stuck"
    return results
