"""The spool's window rule (pure): what may be released, how far the fill may run, who waits."""

from __future__ import annotations

import pytest
from registry_cache.front.window import (
    FILL_AHEAD,
    HOLD_MIN,
    JOIN_GRACE,
    JOIN_QUIET,
    READER_PATIENCE,
    RELEASE_STEP,
    STORE_PATIENCE,
    checkpoints,
    keeps_start,
    keeps_waiting_for_store,
    lowest_needed,
    may_fill,
    most_on_disk,
    release_point,
)

MiB = 1024 * 1024


def test_the_spool_is_released_up_to_the_last_step_below_its_slowest_reader():
    assert release_point([int(3.5 * MiB), 9 * MiB], 10 * MiB, 0) == 3 * MiB


def test_what_was_released_stays_released():
    assert release_point([MiB // 2], 10 * MiB, 2 * MiB) == 2 * MiB


def test_nothing_is_released_while_its_start_is_kept_for_readers_still_coming():
    assert release_point([5 * MiB], 6 * MiB, 0, keep_start=True) == 0
    assert release_point([5 * MiB], 6 * MiB, 2 * MiB, keep_start=True) == 5 * MiB  # too late to keep


def test_with_no_reader_left_all_that_is_written_goes_but_the_last_partial_step():
    assert lowest_needed([], int(5.5 * MiB)) == int(5.5 * MiB)
    assert release_point([], int(5.5 * MiB), MiB) == 5 * MiB


def _keeps(joined=2, age=1.0, since_join=1.0, written=MiB, size=64 * MiB):
    return keeps_start(joined=joined, age=age, since_join=since_join, written=written, size=size)


def test_the_start_is_kept_until_distributions_second_get_has_joined_or_the_grace_is_over():
    assert _keeps(joined=1, age=JOIN_GRACE - 0.1)
    assert not _keeps(joined=1, age=JOIN_GRACE)
    assert not _keeps(joined=2, age=0.6)


def test_the_start_is_kept_while_readers_keep_joining():
    assert _keeps(joined=5, since_join=JOIN_QUIET - 0.1)
    assert not _keeps(joined=5, since_join=JOIN_QUIET)


def test_the_start_is_kept_for_half_the_blob_at_most_so_the_spool_never_outgrows_what_will_be_stored():
    assert _keeps(since_join=0.0, written=32 * MiB - 1, size=64 * MiB)
    assert not _keeps(since_join=0.0, written=32 * MiB, size=64 * MiB)
    assert _keeps(since_join=0.0, written=2 * MiB, size=2 * MiB)  # a small blob: whole
    assert not _keeps(since_join=0.0, written=HOLD_MIN, size=None)


@pytest.mark.parametrize(
    ("written", "offsets", "idle", "may"),
    [
        (4 * MiB, [4 * MiB - FILL_AHEAD + 1, 8 * MiB], 0.0, True),  # less than FILL_AHEAD ahead
        (4 * MiB, [4 * MiB - FILL_AHEAD, 8 * MiB], 0.0, False),  # the slowest reader holds it
        (4 * MiB, [0], READER_PATIENCE, True),  # ... unless it stopped moving
        (4 * MiB, [], 0.0, True),  # nobody to wait for
    ],
)
def test_the_fill_waits_for_its_slowest_reader_only_while_that_reader_moves(written, offsets, idle, may):
    assert may_fill(written, offsets, slowest_idle=idle) is may


def test_the_digest_state_is_kept_at_every_release_step_a_chunk_crosses():
    assert list(checkpoints(0, 3 * MiB)) == [MiB, 2 * MiB, 3 * MiB]
    assert list(checkpoints(MiB + 5, 2 * MiB + 5)) == [2 * MiB]
    assert list(checkpoints(2 * MiB, 3 * MiB - 1)) == []
    assert RELEASE_STEP % 4096 == 0  # whole blocks of any file system: a hole frees them


@pytest.mark.parametrize(
    ("state", "waits"),
    [
        ({"failed": False, "done": False, "reading": 0, "idle": 100.0, "since_done": 0.0}, True),
        ({"failed": True, "done": False, "reading": 2, "idle": 0.0, "since_done": 0.0}, False),
        ({"failed": False, "done": True, "reading": 1, "idle": 100.0, "since_done": 5.0}, True),
        ({"failed": False, "done": True, "reading": 0, "idle": 0.5, "since_done": 5.0}, True),
        ({"failed": False, "done": True, "reading": 0, "idle": STORE_PATIENCE, "since_done": 5.0}, False),
        ({"failed": False, "done": True, "reading": 1, "idle": 0.0, "since_done": 60.0}, False),
    ],
    ids=["running", "failed", "still-read", "just-left", "nobody-stored-it", "kept-too-long"],
)
def test_a_late_reader_waits_for_the_stored_blob_while_it_can_still_come(state, waits):
    assert keeps_waiting_for_store(**state, keep_seconds=60.0) is waits


def test_a_small_blob_may_take_twice_its_size_on_disk_a_big_one_its_size_and_the_window():
    assert most_on_disk(MiB) == 2 * MiB
    assert most_on_disk(HOLD_MIN + MiB) == 2 * HOLD_MIN  # its start kept for the readers still coming
    assert most_on_disk(1024 * MiB) == 1024 * MiB + FILL_AHEAD + RELEASE_STEP
