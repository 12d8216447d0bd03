"""How the agent writes a mirror's address, and the one probe that says whether a mirror serves."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

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


def local_url(listen: str, port: int, *, tls: bool = False) -> str:
    """The base URL of a mirror listening on `listen`:`port`, as reached from this machine."""
    return f"{'https' if tls else 'http'}://{host_port(connect_host(listen), port)}"


@dataclass(frozen=True)
class Endpoint:
    """A mirror as reached from this machine: its base URL and, with TLS, how to trust it.

    The one place that knows the scheme and the CA: the probe, `status` and `warm` all talk
    to a mirror through `get`, which checks its certificate against the mirror's CA (never
    switched off).
    """

    url: str
    ca_file: Optional[str] = None
    # the name the certificate is checked against, when it does not cover the address dialled
    server_name: Optional[str] = None

    def get(self, path: str, *, timeout: float = PROBE_TIMEOUT, **kwargs: Any) -> Any:
        """GET `path` (e.g. /v2/) from the mirror; requests' exceptions pass through."""
        with self.session() as session:
            return session.get(self.url.rstrip("/") + path, timeout=timeout, **kwargs)

    def session(self) -> Any:
        """A requests session that trusts the mirror as `get` does, for many requests (warm)."""
        import requests  # not imported by `apply` with nothing changed

        verify: Union[str, bool] = self.ca_file if self.ca_file is not None else True

        class _Session(requests.Session):
            # given per request: a session's own `verify` loses to $REQUESTS_CA_BUNDLE
            def request(self, *args: Any, **kwargs: Any) -> Any:
                kwargs.setdefault("verify", verify)
                return super().request(*args, **kwargs)

        session = _Session()
        if self.server_name is not None:
            session.mount(self.url.rstrip("/") + "/", _server_name_adapter(self.server_name))
        return session


def _server_name_adapter(name: str) -> Any:
    """A requests adapter that checks the certificate against `name` and sends it as SNI."""
    from requests.adapters import HTTPAdapter

    class _Adapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            kwargs["assert_hostname"] = name
            kwargs["server_hostname"] = name
            super().init_poolmanager(*args, **kwargs)

    return _Adapter()


def serving(target: Union[str, Endpoint]) -> bool:
    """True when the registry at `target` (a base URL or an Endpoint) serves: /v2/ answers 200 or 401."""
    import requests  # not imported by `apply` with nothing changed

    endpoint = target if isinstance(target, Endpoint) else Endpoint(target)
    try:
        return endpoint.get("/v2/").status_code in SERVING_STATUSES
    except requests.RequestException:
        return False


def wait_until_serving(
    urls: Mapping[str, Union[str, Endpoint]],
    timeout: float,
    *,
    interval: float = 0.5,
    give_up: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], object] = time.sleep,
) -> list[str]:
    """Probe every mirror (name -> base URL or Endpoint) until all serve, `timeout` passes or `give_up()`.

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
