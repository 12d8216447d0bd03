"""The spool's window rule (pure): what may be released, how far the fill may run, who waits."""

from __future__ import annotations

import pytest
from registry_cache.front.window import (
    FILL_AHEAD,
    JOIN_GRACE,
    READER_PATIENCE,
    RELEASE_STEP,
    STORE_PATIENCE,
    checkpoints,
    keeps_waiting_for_store,
    lowest_needed,
    may_fill,
    release_point,
)

MiB = 1024 * 1024


def test_the_spool_is_released_up_to_the_last_step_below_its_slowest_reader():
    assert release_point([int(3.5 * MiB), 9 * MiB], 10 * MiB, 0, joined=2, age=0.1) == 3 * MiB


def test_what_was_released_stays_released():
    assert release_point([MiB // 2], 10 * MiB, 2 * MiB, joined=3, age=1.0) == 2 * MiB


def test_nothing_is_released_until_distributions_second_get_has_joined_or_the_grace_is_over():
    assert release_point([5 * MiB], 6 * MiB, 0, joined=1, age=0.5) == 0
    assert release_point([5 * MiB], 6 * MiB, 0, joined=1, age=JOIN_GRACE) == 5 * MiB
    assert release_point([5 * MiB], 6 * MiB, 0, joined=2, age=0.0) == 5 * MiB


def test_with_no_reader_left_all_that_is_written_goes_but_the_last_partial_step():
    assert lowest_needed([], int(5.5 * MiB)) == int(5.5 * MiB)
    assert release_point([], int(5.5 * MiB), MiB, joined=2, age=3.0) == 5 * MiB


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
