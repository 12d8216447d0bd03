"""Holds a mirror's ports itself, so its registry can be swapped with no pull ever refused.

Distribution cannot hand a listening socket to a successor, and two processes cannot listen on
one port: restarting the registry in another mode (read-only for gc, proxy again after it)
closes the port for as long as the new process takes to start, and a pull arriving then fails.
So the runner holds the mirror's port (and its debug port) and hands each new connection to
the registry on duty on a private port. A switch starts the next registry on new private ports,
waits until it serves, points new connections at it, and stops the previous one only once the
connections it was serving have ended.

Two ways to hold a port. Where it can (nft installed, CAP_NET_ADMIN: the systemd unit), the
runner lets the kernel do it (kernel.py): an nftables redirect from the public port to the
registry on duty, switched in one transaction; conntrack keeps each established connection with
its registry, which drains them itself when retired (it closes idle keep-alives at once). No
byte passes through Python: measured at 1.03x a plain Distribution, the relay at 0.53-0.72x.
Elsewhere, and always behind the kernel's rules as a safety net, the relay (relay.py, loop.py)
takes the connections and copies the bytes.

The relay never stops taking connections, the way nginx's workers work: one event loop per
port (no thread per connection); the bytes go socket -> pipe -> socket with splice(2), never
through Python; an idle keep-alive connection costs two file
descriptors and no pipe. When the process runs out of file descriptors (or the kernel of
memory) the loop says so, stops accepting for a moment and accepts again: connections wait in
the listen backlog meanwhile. Client connections carry TCP keepalive, and one where nothing
moves for too long is closed, so a CI machine destroyed mid-connection holds nothing for ever.
"""

from registry_cache.handover.relay import Relay, free_port, raise_fd_limit

__all__ = ["Relay", "free_port", "raise_fd_limit"]
