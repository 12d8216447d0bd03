"""Waits until something holds on the host side: one deadline loop for the build, the lab and the benches.

Every "poll until ready, fail after N seconds" of the host code is `wait_until`, so each wait has
a bounded deadline, a pause between tries, and on timeout a message that names what it awaited.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """What was awaited did not happen before the deadline; the message names it."""


def wait_until(
    ready: Callable[[], T],
    what: str,
    *,
    timeout: float,
    interval: float = 0.1,
    max_interval: float | None = None,
    detail: Callable[[], str] | None = None,
    error: Callable[[str], BaseException] = WaitTimeout,
) -> T:
    """Call `ready` until it returns something true and return that; give up after `timeout` s.

    `ready` is tried at once, then after each pause of `interval` s (doubling up to
    `max_interval` when given); it may raise to stop the wait early (a process died). On
    timeout raises `error` (default `WaitTimeout`) saying "`what`: not within N s", followed
    by `detail()` when given (a log's tail, the last status seen).
    """
    deadline = time.monotonic() + timeout
    pause = interval
    while True:
        result = ready()
        if result:
            return result
        left = deadline - time.monotonic()
        if left <= 0:
            message = f"{what}: not within {timeout:g} s"
            extra = detail() if detail is not None else ""
            raise error(f"{message}; {extra}" if extra else message)
        time.sleep(min(pause, left))
        if max_interval is not None:
            pause = min(pause * 2, max_interval)
