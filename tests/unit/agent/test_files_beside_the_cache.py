"""The files a mirror keeps beside its cache read back as their owners wrote them, typed."""

import json

from registry_cache import paths
from registry_cache.counters import Counts
from registry_cache.gc.result import GcResult, last_result
from registry_cache.state import READ_ONLY, UNKNOWN, MirrorState, read_state, write_state
from registry_cache.warmresult import WarmOutcome, last_outcome


def test_a_state_written_by_the_runner_reads_back_with_its_counters_and_front_totals(tmp_path):
    state = MirrorState(name="hub", mode=READ_ONLY, restarts=2, pid=4242, hold="gc",
                        counts=Counts(hits=3, misses=1, bytes_served=99),
                        front_before={"bytes_from_upstream": 1000},
                        front_now={"upstream_bytes": 24, "blobs_in_flight": 1})
    write_state(str(tmp_path), state.snapshot())
    got = read_state(str(tmp_path))
    assert got is not None and got.updated is not None
    assert got.as_dict() == {**state.as_dict(), "updated": got.updated}
    # a new run carries the totals on, not the running front's in-flight count
    resumed = MirrorState.resumed("hub", got)
    assert resumed.counts == Counts(hits=3, misses=1, bytes_served=99)
    assert resumed.front_totals()["bytes_from_upstream"] == 1024
    assert resumed.front_totals()["blobs_in_flight"] == 0


def test_a_state_file_with_wrong_types_or_missing_keys_reads_as_defaults(tmp_path):
    assert read_state(str(tmp_path)) is None
    (tmp_path / paths.STATE_FILE).write_text(json.dumps({"mode": 5, "hits": "many", "pid": True}))
    got = read_state(str(tmp_path))
    assert (got.mode, got.counts.hits, got.pid) == (UNKNOWN, 0, None)
    (tmp_path / paths.STATE_FILE).write_text("[1, 2]")
    assert read_state(str(tmp_path)) is None


def test_the_last_gc_and_warm_results_read_back_as_written(tmp_path):
    assert last_result(str(tmp_path)) is None and last_outcome(str(tmp_path)) is None
    result = GcResult(mirror="hub", started=10.0, duration=1.5, bytes_freed=2048, images_evicted=2,
                      used=4096, evicted=["a:1", "b:2"], error=None)
    result.save(str(tmp_path))
    assert last_result(str(tmp_path)) == result
    outcome = WarmOutcome(mirror="hub", started=20.0, duration=3.0, images=2, blobs=9, bytes=77,
                          failures=["c:3: not found"])
    outcome.save(str(tmp_path))
    assert last_outcome(str(tmp_path)) == outcome
