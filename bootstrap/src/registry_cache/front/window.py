"""How much of a blob's spool its readers still need (pure): what may be released, how far the fill may run.

The spool sits on the cache's disk beside Distribution's own upload file of the same blob: kept
whole, a cold pull would need twice the blob on disk. Every reader reads the spool front to
back, so the bytes below the lowest offset every reader has sent on are needed by none of them:
they are released (a hole punched) in `RELEASE_STEP` steps, and the fill runs at most
`FILL_AHEAD` bytes ahead of the slowest reader. A blob in flight then holds at most about
`RELEASE_STEP + FILL_AHEAD` (plus a chunk) of spool besides Distribution's copy.

A reader that arrives once the start of the spool is released cannot join it: it is "late"
(served from the blob Distribution stores, see `readers`). Distribution asks for every blob it
misses twice at once (its store and its client's stream), so nothing is released before a second
reader has joined, or `JOIN_GRACE` has passed. A reader that stops moving does not hold the
fill back for more than `READER_PATIENCE`: the spool then grows (as much as the blob at most).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator

MiB = 1024 * 1024
RELEASE_STEP = 1 * MiB  # released in aligned steps of this size (a multiple of any file system's block)
FILL_AHEAD = 1 * MiB  # the fill waits when it is this far ahead of its slowest reader
JOIN_READERS = 2  # Distribution's two GETs of a blob it misses: its store and its client's stream
JOIN_GRACE = 5.0  # seconds: with fewer readers than that, nothing is released before this age
READER_PATIENCE = 2.0  # seconds the fill waits for a slowest reader that does not move before it goes on
STORE_PATIENCE = 3.0  # seconds a late reader waits for the stored blob once no reader is left reading


def lowest_needed(reader_offsets: Collection[int], written: int) -> int:
    """The lowest spool offset a reader still needs: the slowest reader's, or all written when none reads."""
    return min(reader_offsets, default=written)


def release_point(
    reader_offsets: Collection[int],
    written: int,
    released: int,
    *,
    joined: int,
    age: float,
    step: int = RELEASE_STEP,
) -> int:
    """Up to which offset the spool may be released now (never less than `released`).

    Below the slowest reader, aligned down to `step`; nothing while the readers that start
    together may still be joining (fewer than `JOIN_READERS` so far, younger than `JOIN_GRACE`).
    """
    if joined < JOIN_READERS and age < JOIN_GRACE:
        return released
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
