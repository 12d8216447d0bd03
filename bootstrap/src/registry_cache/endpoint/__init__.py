"""The one endpoint: the first mirror's port answers for every configured upstream.

The runner of the mirror that owns the endpoint (the first one in config.yml) listens on its
port with this HTTP router instead of the plain byte relay (handover.Relay), with the same
handover interface (`point_to`, `wait_idle`, `close`). Each request is routed by routing.py —
containerd's `ns` parameter, else a registry prefix in the path, else the endpoint's own
mirror — and sent on to that mirror: its own registry on duty (a private loopback port the
runner points it at) or another mirror's own port on this machine. So every upstream keeps its
own single-flight front, size cap, TLS, client login, counters, status and metrics; the
endpoint adds none of its own and never dials anything but the configured mirrors.

Blob bytes stay off the hop (each byte through it costs a second trip through the TCP stack):
its own mirror's warm blobs are sent from the cache by sendfile, as Distribution would send
them and counted as if it had (blobs.py); other mirrors' blob GETs get a 307 to their own port
(protocol.redirect), unless config.yml turns that off or clients log in.

What changes on the way: the registry prefix leaves the path (and `ns` the query) going in,
and comes back into `Location` and `Link` URLs coming out. The client's `Host` and
`Authorization` pass unchanged: a mirror's client login (htpasswd) answers with a `Basic`
challenge, which names a realm but no URL, so a client logs in to the endpoint's address as it
would to the mirror's. With TLS the endpoint serves the mirrors' certificate and reaches them
over TLS, checked against their CA.
"""

from registry_cache.endpoint.blobs import CachedBlobs
from registry_cache.endpoint.protocol import read_table
from registry_cache.endpoint.server import Endpoint

__all__ = ["CachedBlobs", "Endpoint", "read_table"]
