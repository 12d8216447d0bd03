"""How much of a blob's spool its readers still need (pure): what may be released, how far the fill may run.

The spool sits on the cache's disk beside Distribution's own upload file of the same blob: kept
whole, a cold pull would need twice the blob on disk. Every reader reads the spool front to
back, so the bytes below the lowest offset every reader has sent on are needed by none of them:
they are released (a hole punched) in `RELEASE_STEP` steps, and the fill runs at most
`FILL_AHEAD` bytes ahead of the slowest reader. A blob in flight then holds at most about
`RELEASE_STEP + FILL_AHEAD` (plus a chunk) of spool besides Distribution's copy.

A reader that arrives once the start of the spool is released cannot join it: it is "late"
(served from the blob Distribution stores, see `readers`), and a late Distribution store would
wait for itself. So the start is kept while the readers that start together may still be coming:
Distribution asks for every blob it misses twice (its store, which first creates its upload, and
its client's stream), and clients pulling one image together ask within a fraction of a second.
Nothing is released before a second reader has joined (or `JOIN_GRACE` has passed) and until no
new reader has joined for `JOIN_QUIET`, as long as the spool holds no more than half the blob
(`HOLD_MIN` at least): until then the spool and Distribution's upload together take no more
than the blob will once stored. A reader that stops moving does not hold the fill back for more
than `READER_PATIENCE`: the spool then grows (as much as the blob at most).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Optional

MiB = 1024 * 1024
RELEASE_STEP = 1 * MiB  # released in aligned steps of this size (a multiple of any file system's block)
FILL_AHEAD = 1 * MiB  # the fill waits when it is this far ahead of its slowest reader
JOIN_READERS = 2  # Distribution's two GETs of a blob it misses: its store and its client's stream
JOIN_GRACE = 5.0  # seconds: with fewer readers than that, nothing is released before this age
JOIN_QUIET = 0.5  # seconds without a new reader before the start of a spool is released
HOLD_MIN = 16 * MiB  # the start of a spool may be kept this long at least (a small blob whole)
# seconds the fill waits for a slowest reader that does not move before it goes on: Distribution's
# store pauses for seconds on a busy machine (2 s let a loaded CI run spool a whole layer twice);
# below the front's STALL_TIMEOUT, so a stuck reader holds the others back once, briefly
READER_PATIENCE = 10.0
STORE_PATIENCE = 3.0  # seconds a late reader waits for the stored blob once no reader is left reading


def lowest_needed(reader_offsets: Collection[int], written: int) -> int:
    """The lowest spool offset a reader still needs: the slowest reader's, or all written when none reads."""
    return min(reader_offsets, default=written)


def keeps_start(*, joined: int, age: float, since_join: float, written: int, size: Optional[int]) -> bool:
    """Whether the start of a spool is kept for readers that start together and may still come.

    `age` is how long the transfer runs, `since_join` how long ago its last reader joined, in
    seconds; `size` the blob's (None when the upstream did not say).
    """
    if written >= max(HOLD_MIN, (size or 0) // 2):
        return False
    return since_join < JOIN_QUIET or (joined < JOIN_READERS and age < JOIN_GRACE)


def most_on_disk(size: int) -> int:
    """The most a blob of `size` bytes takes on disk while it is spooled and stored: spool + upload.

    A blob up to `HOLD_MIN` may be kept whole beside Distribution's copy; a larger one takes at
    most `2 * HOLD_MIN` while its start is kept, then its size and the window.
    """
    if size <= HOLD_MIN:
        return 2 * size
    return max(2 * HOLD_MIN, size + FILL_AHEAD + RELEASE_STEP)


def release_point(
    reader_offsets: Collection[int],
    written: int,
    released: int,
    *,
    keep_start: bool = False,
    step: int = RELEASE_STEP,
) -> int:
    """Up to which offset the spool may be released now (never less than `released`).

    Below the slowest reader, aligned down to `step`; nothing while its start is kept
    (`keeps_start`).
    """
    if keep_start and released == 0:
        return 0
    low = lowest_needed(reader_offsets, written)
    return max(released, low - low % step)


def may_fill(written: int, reader_offsets: Collection[int], *, slowest_idle: float,
             ahead: int = FILL_AHEAD) -> bool:
    """Whether the fill may write more now: less than `ahead` past its slowest reader, or that reader stopped.

    `slowest_idle` is how long the lowest reader offset has not moved, in seconds.
    """
    if not reader_offsets or slowest_idle >= READER_PATIENCE:
        return True
    return written - min(reader_offsets) < ahead


def checkpoints(start: int, end: int, step: int = RELEASE_STEP) -> Iterator[int]:
    """The `step` boundaries in (start, end]: where the fill keeps the digest state of the bytes before."""
    first = start - start % step + step
    return iter(range(first, end + 1, step))


def keeps_waiting_for_store(
    *, failed: bool, done: bool, reading: int, idle: float, since_done: float, keep_seconds: float
) -> bool:
    """Whether a late reader still waits for Distribution to store the blob (else it fetches its own).

    While the transfer runs; once it is done, while readers still read (Distribution's store is
    one of them) and for `STORE_PATIENCE` after the last left (`idle`), `keep_seconds` at most.
    """
    if failed:
        return False
    if not done:
        return True
    if since_done >= keep_seconds:
        return False
    return reading > 0 or idle < STORE_PATIENCE
