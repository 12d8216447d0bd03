"""Which mode a mirror serves in: proxy while its upstream answers and its front runs, else read-only."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Optional

from registry_cache import upstream
from registry_cache.record import Credentials, MirrorRecord
from registry_cache.state import PROXY, READ_ONLY

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Choice:
    """The mode due, whether the upstream answered, and what `status` should say of it."""

    mode: str
    reachable: bool
    problem: Optional[str] = None


def choose(record: MirrorRecord, start_front: Callable[[Optional[Credentials]], bool]) -> Choice:
    """Probe the upstream (with the mirror's login) and pick the mode; the front starts for proxy mode."""
    credentials = record.credentials()
    result = upstream.check(record.upstream, credentials=credentials)
    problem = None
    if not result.reachable:
        problem = f"upstream unreachable ({result.error}); serving the cache read-only"
        log.warning("mirror %s: %s", record.name, problem)
    elif result.login_missing:
        problem = upstream.login_problem(record.upstream)
        log.error("mirror %s: %s", record.name, problem)
    elif result.credentials_rejected and credentials is not None:
        problem = upstream.credentials_problem(record.upstream, credentials.username)
        log.error("mirror %s: %s", record.name, problem)
    mode = PROXY if result.reachable else READ_ONLY
    if mode == PROXY and not start_front(credentials):
        problem = "its front cannot start (see the log); serving the cache read-only"
        mode = READ_ONLY
    return Choice(mode, result.reachable, problem)


def upstream_back(record: MirrorRecord, start_front: Callable[[Optional[Credentials]], bool]) -> bool:
    """True when a read-only mirror may go back to proxy mode: the upstream answers and the front runs."""
    return upstream.check(record.upstream).reachable and start_front(record.credentials())
