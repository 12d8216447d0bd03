"""`python -m registry_cache.front`: a front in the foreground, for manual runs and the memory bench."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import Any, Optional

from registry_cache.front.hosting import start_front
from registry_cache.front.transfer import KEEP_SECONDS
from registry_cache.fsutil import write_file
from registry_cache.record import Credentials

log = logging.getLogger(__name__)

PASSWORD_ENV = "REGISTRY_CACHE_UPSTREAM_PASSWORD"
STATS_INTERVAL = 1.0


def read_credentials(username: Optional[str], password_file: Optional[str]) -> Optional[Credentials]:
    """Credentials from a username and a password file (or the password in `PASSWORD_ENV`)."""
    if not username:
        return None
    if password_file:
        with open(password_file, encoding="utf-8") as handle:
            password = handle.read().strip()
    else:
        password = os.environ.get(PASSWORD_ENV, "")
    if not password:
        raise SystemExit(f"a username needs a password: --password-file or ${PASSWORD_ENV}")
    return Credentials(username, password)


def write_stats(path: str, counters: dict[str, Any]) -> None:
    """Write the front's counters to `path` atomically (only the counters decide whether it changes)."""
    data = {k: v for k, v in counters.items() if k != "updated"}
    try:
        write_file(path, json.dumps(data, sort_keys=True) + "\n")
    except OSError as exc:
        log.warning("front: cannot write %s: %s", path, exc)


def keep_stats(
    counters: Callable[[], dict[str, Any]], path: Optional[str], stop: threading.Event
) -> None:
    """Write the counters to `path` every `STATS_INTERVAL` until `stop` is set (nothing without a path)."""
    while not stop.wait(STATS_INTERVAL if path else None):
        if path:
            write_stats(path, counters())


def main(argv: Optional[list[str]] = None) -> int:
    """`python -m registry_cache.front`: run a front in the foreground until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m registry_cache.front", description=main.__doc__)
    parser.add_argument("--upstream", required=True, help="the real upstream, e.g. https://registry-1.docker.io")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free one)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--spool", required=True, help="folder for blobs in transfer (emptied at start)")
    parser.add_argument("--stats", help="JSON file the counters are written to every second")
    parser.add_argument("--username", help="for upstreams that want basic auth")
    parser.add_argument("--password-file", help=f"file holding the password (or set ${PASSWORD_ENV})")
    keep_help = "seconds a finished spool is kept (a front run by hand does not see it stored)"
    parser.add_argument("--keep", type=float, default=KEEP_SECONDS, help=keep_help)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    handle = start_front(
        args.upstream,
        read_credentials(args.username, args.password_file),
        args.spool,
        host=args.host,
        port=args.port,
        keep_seconds=args.keep,
    )
    print(handle.url, flush=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    keep_stats(handle.counters, args.stats, stop)
    handle.stop()
    if args.stats:
        write_stats(args.stats, handle.counters())  # the last word: counters once stopped
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
