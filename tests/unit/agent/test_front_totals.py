"""The front's counters as the mirror keeps them and `status` shows them."""

import dataclasses

from registry_cache import status
from registry_cache.state import MirrorState


def test_front_totals_add_the_running_front_to_earlier_runs():
    state = MirrorState(
        name="hub",
        front_before={"bytes_from_upstream": 1000, "blob_transfers": 2},
        front_now={"upstream_bytes": 500, "blob_transfers": 1, "blob_joins": 3, "blobs_in_flight": 1,
                   "updated": 12.0},
    )
    data = state.as_dict()
    assert data["bytes_from_upstream"] == 1500
    assert (data["blob_transfers"], data["blob_joins"], data["blobs_in_flight"]) == (3, 3, 1)
    assert data["blob_failures"] == 0 and data["upstream_requests"] == 0


def _mirror(**counters: int) -> status.MirrorStatus:
    return status.MirrorStatus(
        name="hub", upstream="https://registry-1.docker.io", port=5000, healthy=True, mode="proxy",
        hits=0, misses=4, bytes_served=0, storage="/cache/hub", storage_bytes=0, restarts=0,
        problem=None, **{"bytes_from_upstream": 0, **counters},
    )


def test_status_names_the_upstream_traffic_and_the_requests_that_joined_a_transfer():
    mirror = _mirror(bytes_from_upstream=3_000_000, blob_transfers=4, blob_joins=28)
    table = status.format_table([mirror])
    assert "hub: 3.0 MB from its upstream in 4 blob transfer(s); 28 request(s) joined a transfer" in table


def test_status_says_nothing_of_upstream_traffic_before_there_is_any():
    assert "from its upstream" not in status.format_table([_mirror()])


def test_status_shows_a_cap_in_the_units_config_yml_takes_it_in():
    mirror = dataclasses.replace(_mirror(), storage_bytes=1_500_000_000, max_size=50 * 1000**3)
    assert "1.5 GB / 50.0 GB" in status.format_table([mirror])
