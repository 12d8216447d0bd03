"""Holds a mirror's ports itself, so its registry can be swapped with no pull ever refused.

Distribution cannot hand a listening socket to a successor, and two processes cannot listen on
one port: restarting the registry in another mode (read-only for gc, proxy again after it)
closes the port for as long as the new process takes to start, and a pull arriving then fails.
So the runner listens on the mirror's port (and its debug port) and relays each connection, as
bytes, to the registry on duty on a private loopback port. A switch starts the next registry on
new private ports, waits until it serves, points new connections at it, and stops the previous
one only once the connections it was serving have ended.

The relay costs next to nothing and never stops taking connections, the way nginx's workers
work: one event loop per port (no thread per connection); the bytes go socket -> pipe ->
socket with splice(2), never through Python; an idle keep-alive connection costs two file
descriptors and no pipe. When the process runs out of file descriptors (or the kernel of
memory) the loop says so, stops accepting for a moment and accepts again: connections wait in
the listen backlog meanwhile. Client connections carry TCP keepalive, and one where nothing
moves for too long is closed, so a CI machine destroyed mid-connection holds nothing for ever.
"""

from registry_cache.handover.relay import Relay, free_port, raise_fd_limit

__all__ = ["Relay", "free_port", "raise_fd_limit"]
