"""`run-mirror`: keeps one mirror serving: proxy through its front while the upstream answers, else read-only.

In proxy mode the registry's `remoteurl` is the mirror's front (the `front` package, on an ephemeral
loopback port, `REGISTRY_PROXY_REMOTEURL`), which fetches each blob from the real upstream
once however many requests want it, and logs in to basic-auth upstreams. The front lives as
long as the runner; its counters are the mirror's upstream traffic in `status`.

The runner probes the upstream first: unreachable -> it starts the registry on the read-only
config (same storage, no proxy section), which serves every cached image, and switches to
proxy mode once the upstream answers. Why still read-only: Distribution 2.8.2 learns which
token service its credentials are for only at start (`getAuthURLs`), so a proxy started while
the upstream is away would pull anonymously ever after. (Behind the front it would at least
not panic.) A front that cannot start also leaves the cache read-only. The runner restarts a
registry that dies, counts true hits and misses from the registry's log, and keeps that state
beside the cache for `status`.

The runner holds the mirror's ports itself and relays connections to the registry on duty
(handover/), so switching modes never refuses a pull. `registry-cache gc` asks for read-only
mode with a request beside the cache (hold.py); the runner records each pull's time for gc's
LRU (usage.py) and says when the disk under the cache is full (disk.py).

Its parts, one job each:

- supervisor.py: the loop: wait for storage, choose the mode, start, switch, restart, stop;
- modes.py: which mode is due from the upstream's answer and the front (gc's request: hold.py);
- registry.py: one registry process on private ports, from the mirror's record;
- frontkeeper.py: the front's lifecycle and counters;
- keepers.py: the state and usage files, written at a bounded rate;
- logreader.py: each line the registry logs: hits, misses, pull times;
- diskwatch.py: a full disk under the cache, noticed and recovered from.
"""

from registry_cache.runner.supervisor import MirrorRunner

__all__ = ["MirrorRunner"]
