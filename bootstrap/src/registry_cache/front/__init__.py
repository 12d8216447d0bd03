"""A loopback HTTP front between a mirror's Distribution and its upstream: one upstream transfer per blob.

Distribution 2.8 in proxy mode fetches every missed blob twice (one GET to store it, one to
stream to the client) and N clients pulling one cold image make N+1 upstream transfers. With
its `remoteurl` pointing here, every GET of one blob digest joins a single upstream transfer:
the body is spooled to a file and checked against the digest while it streams, every requester
reads the growing spool at link speed, and the last byte is held back until the digest is
verified. Only the part of the spool its readers still need stays on the disk (`window`): a
cold pull takes about what it stores, not twice that. A failed, short or wrong transfer cuts
every reader mid-body, so Distribution stores nothing and the next pull starts afresh. The
front also follows the upstream's redirects (Docker Hub sends blobs to a CDN), answers a blob
HEAD with the upstream's HEAD, does HTTP basic auth for upstreams that want it (Distribution
only speaks token auth) and passes everything else (manifests, tags, `/v2/`, token challenges)
through unchanged, streamed.

Modules, by job: `protocol` (header, redirect and auth rules, pure), `transfer` (one transfer
per digest: who joins, who starts, the counters), `client` (requests to the upstream), `spool`
(the spool files, read, written and released off the event loop), `window` (how much of a spool
its readers still need, pure), `fill` (the one upstream transfer into the spool), `readers`
(each requester, from the spool, the stored blob or the upstream), `server` (the aiohttp
handlers), `hosting` (a front on its own loop in a thread, for the mirror runner) and
`__main__` (`python -m registry_cache.front`, for manual runs).
"""

from registry_cache.front.hosting import FrontHandle, start_front
from registry_cache.front.server import Front

__all__ = ["Front", "FrontHandle", "start_front"]
