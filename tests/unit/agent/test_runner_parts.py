"""The runner's parts that need no registry process: its log reader and its disk watch."""

import io
import json

from registry_cache import counters
from registry_cache.record import MirrorRecord
from registry_cache.runner.diskwatch import DiskWatch
from registry_cache.runner.keepers import StateKeeper, UsageKeeper
from registry_cache.runner.logreader import LogReader

DIGEST = "sha256:" + "ab" * 32


def _reader(tmp_path):
    record = MirrorRecord(name="hub", upstream="https://registry-1.docker.io", listen="127.0.0.1",
                          port=5000, storage=str(tmp_path))
    keeper = StateKeeper(record)
    usage = UsageKeeper(record)
    out = io.StringIO()
    return LogReader(keeper, usage, DiskWatch(keeper), out), keeper, usage, out


def _line(uri, status=200, written=10):
    return json.dumps({"http.request.method": "GET", "http.request.uri": uri,
                       "http.response.status": status, "http.response.written": written}) + "\n"


def test_the_log_reader_counts_a_miss_then_a_hit_and_stamps_the_pull_for_gc(tmp_path):
    reader, keeper, usage, out = _reader(tmp_path)
    counter = counters.HitCounter(set(), keeper.state.counts)
    reader.line(_line(f"/v2/library/alpine/blobs/{DIGEST}"), counter)
    reader.line(_line(f"/v2/library/alpine/blobs/{DIGEST}"), counter)
    reader.line(_line("/v2/library/alpine/manifests/3.20"), counter)
    assert keeper.state.counts == counters.Counts(hits=1, misses=1, bytes_served=20)
    assert keeper.dirty
    assert set(usage.usage.blobs) == {DIGEST} and set(usage.usage.manifests) == {"library/alpine:3.20"}
    assert out.getvalue().startswith("[hub] {")


def test_a_registry_that_logs_a_full_disk_puts_the_problem_in_the_mirror_state(tmp_path):
    reader, keeper, _usage, _out = _reader(tmp_path)
    counter = counters.HitCounter(set(), keeper.state.counts)
    assert keeper.state.disk_problem is None
    reader.line('level=error msg="write /cache/x: no space left on device"\n', counter)
    assert "no space left on device" in keeper.state.disk_problem
    # the disk is not full in fact (a test folder): the next check says space is back
    reader.disk.check()
    assert keeper.state.disk_problem is None


def test_the_fronts_full_spool_disk_shows_in_the_mirror_state_until_a_blob_fits_again(tmp_path):
    _, keeper, _, _ = _reader(tmp_path)
    watch = DiskWatch(keeper)
    keeper.state.front_now = {"blob_unshared": 1, "disk_problem": "no room to spool a 1.0 GB blob"}
    watch.check()
    assert keeper.state.disk_problem == "no room to spool a 1.0 GB blob"
    assert keeper.state.as_dict()["blob_unshared"] == 1

    keeper.state.front_now = {"blob_unshared": 1, "disk_problem": None}
    watch.check()
    assert keeper.state.disk_problem is None
