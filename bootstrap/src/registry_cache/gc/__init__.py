"""`registry-cache gc`: keep each mirror's cache under its size cap, least recently pulled images first.

Pure planning apart from side effects: `scan.scan` reads a Distribution filesystem storage into
an `Inventory` (images, their manifests and blobs, when each was last pulled),
`eviction.plan` decides what to evict from a high watermark down to a low one, and
`flow.enforce_caps` carries it out:

1. it asks the mirror's runner to serve read-only (hold.py) and waits until the runner says so
   (handshake.py): from then on nothing is written into the cache, and pulls of cached images
   keep being served (the runner hands its port over without closing it, see handover/);
2. it scans and plans again on the quiet cache, deletes the evicted images' tag, revision and
   layer links (a blob any kept manifest uses keeps its links), then runs Distribution's own
   `docker-registry garbage-collect`, which removes every blob no manifest references;
3. it lets the mirror go back to proxy mode and records what it freed beside the cache
   (result.py, which `status` reads without loading the rest of gc).

Nothing is imported here: `status` reads the last result (gc.result) and nothing else of gc.
"""


class GcError(RuntimeError):
    """A mirror could not be collected; the message says why and what to do."""
