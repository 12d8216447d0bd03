"""How the agent writes a mirror's address, and the one probe that says whether a mirror serves."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Callable

# A registry serves once /v2/ answers: 200 when open, 401 when it asks clients to log in.
SERVING_STATUSES = (200, 401)
PROBE_TIMEOUT = 2.0


def host_port(host: str, port: int) -> str:
    """Join an address and a port the way Go and registry clients want them ([::1]:5000)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def connect_host(listen: str) -> str:
    """The address to reach a mirror listening on `listen` from this machine."""
    if listen in ("0.0.0.0", ""):
        return "127.0.0.1"
    if listen == "::":
        return "::1"
    return listen


def local_url(listen: str, port: int) -> str:
    """The base URL of a mirror listening on `listen`:`port`, as reached from this machine."""
    return f"http://{host_port(connect_host(listen), port)}"


def serving(url: str) -> bool:
    """True when the registry at base URL `url` serves: its /v2/ answers 200 or 401."""
    import requests  # not imported by `apply` with nothing changed

    try:
        return requests.get(url.rstrip("/") + "/v2/", timeout=PROBE_TIMEOUT).status_code in SERVING_STATUSES
    except requests.RequestException:
        return False


def wait_until_serving(
    urls: Mapping[str, str],
    timeout: float,
    *,
    interval: float = 0.5,
    give_up: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], object] = time.sleep,
) -> list[str]:
    """Probe every mirror (name -> base URL) until all serve, `timeout` passes or `give_up()`.

    Returns the names of the mirrors that do not serve yet (empty: every one serves).
    """
    pending = dict(urls)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline and not give_up():
        for name, url in list(pending.items()):
            if serving(url):
                del pending[name]
        if pending:
            sleep(interval)
    return sorted(pending)
