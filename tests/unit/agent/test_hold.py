"""gc's request that a mirror serve read-only, as the runner reads it."""

import os
import time

from registry_cache import hold, paths


def _ask(storage, *, pid=None, until=None):
    hold.ask(str(storage), hold.HoldRequest(by="test", pid=pid or os.getpid(),
                                            until=until or time.time() + 60))


def test_a_standing_request_holds_the_mirror_until_it_is_withdrawn(tmp_path):
    assert not hold.requested(str(tmp_path))
    _ask(tmp_path)
    assert hold.requested(str(tmp_path))
    hold.withdraw(str(tmp_path))
    assert not hold.requested(str(tmp_path))
    hold.withdraw(str(tmp_path))  # withdrawing twice is no error


def test_an_expired_request_or_one_left_by_a_dead_gc_holds_nothing(tmp_path):
    _ask(tmp_path, until=time.time() - 1)
    assert not hold.requested(str(tmp_path))
    _ask(tmp_path, pid=2**22 + 12345)  # above pid_max: no such process
    assert not hold.requested(str(tmp_path))


def test_a_request_being_written_holds_only_for_a_while(tmp_path):
    path = tmp_path / paths.READONLY_REQUEST
    path.write_text('{"by": "gc", "pi')
    assert hold.requested(str(tmp_path))
    later = time.time() + hold.REQUEST_WRITE_GRACE + 1
    assert not hold.requested(str(tmp_path), now=later)
