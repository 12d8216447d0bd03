"""The front's fill and readers when things go wrong: stalls, drops, no room, another repository, storage."""

from __future__ import annotations

import asyncio
import os

import aiohttp
import pytest
from aiohttp import web
from registry_cache.cachelayout import blob_path, layer_dir
from registry_cache.front import fill as fill_module
from registry_cache.front.fill import StallClock, UpstreamStalled
from registry_cache.front.spool import NoRoom, SpoolDisk, fits

from tests.unit.agent.front_harness import (
    BLOB,
    BODY,
    DIGEST,
    HALF,
    REPO,
    emptied,
    first_half,
    run_front,
    whole_blob,
)


async def _ranged(request: web.Request) -> web.Response:
    """The blob, or its tail from the byte a `Range: bytes=N-` asks for."""
    wanted = request.headers.get("Range")
    if not wanted:
        return web.Response(body=BODY)
    start = int(wanted.removeprefix("bytes=").rstrip("-"))
    return web.Response(
        status=206, body=BODY[start:], headers={"Content-Range": f"bytes {start}-{len(BODY) - 1}/{len(BODY)}"}
    )


def test_the_stall_clock_fails_work_the_upstream_has_gone_silent_on():
    async def main():
        clock = StallClock(0.2)
        assert await clock.guard(asyncio.sleep(0.05, result="done")) == "done"
        with pytest.raises(UpstreamStalled):
            await clock.guard(asyncio.sleep(30))

    asyncio.run(asyncio.wait_for(main(), 5))


def test_a_stalled_upstream_cuts_the_reader_after_the_stall_timeout(tmp_path):
    async def stall(request):
        response = await first_half(request)
        await asyncio.sleep(30)
        return response

    async def scenario(url, upstream, front, client):
        started = asyncio.get_running_loop().time()
        async with client.get(url + BLOB) as response:
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
        assert asyncio.get_running_loop().time() - started < 5
        assert front.counters.blob_failures == 1
        assert front.board.in_flight() == 0

    run_front(scenario, tmp_path, stall, stall_timeout=0.5)


def test_a_redirect_to_an_impossible_port_is_a_bad_gateway_not_a_hang(tmp_path):
    async def bad_redirect(request):
        return web.Response(status=307, headers={"Location": "http://127.0.0.1:99999/blob?sig=1"})

    async def scenario(url, upstream, front, client):
        for _ in range(2):
            async with client.get(url + BLOB) as response:
                assert response.status == 502
        assert front.board.in_flight() == 0

    run_front(scenario, tmp_path, bad_redirect)


def test_a_dropped_connection_is_carried_on_with_a_range_request(tmp_path):
    async def drop_once(request):
        if request.headers.get("Range") or upstream_calls:
            return await _ranged(request)
        upstream_calls.append(1)
        response = await first_half(request)
        request.transport.close()
        return response

    upstream_calls: list[int] = []

    async def scenario(url, upstream, front, client):
        async with client.get(url + BLOB) as response:
            assert await response.read() == BODY
        assert front.counters.blob_resumes == 1 and front.counters.blob_failures == 0
        assert upstream.gets() == 2

    run_front(scenario, tmp_path, drop_once)


def test_no_room_for_the_spool_streams_the_blob_unshared_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(fill_module, "fits", lambda free, size, **_: False)

    async def scenario(url, upstream, front, client):
        async with client.get(url + BLOB) as response:
            assert await response.read() == BODY
        assert front.counters.blob_unshared == 1 and front.counters.blob_failures == 0
        assert "no room to spool" in front.stats()["disk_problem"]
        assert await emptied(tmp_path / "spool")

    run_front(scenario, tmp_path, whole_blob)


def test_a_full_disk_mid_blob_carries_the_reader_on_with_its_own_range_request(tmp_path, monkeypatch):
    real_write = SpoolDisk.write

    async def write_until_full(self, fd, data, offset):
        if offset >= HALF:
            raise NoRoom("no space left on the spool's disk")
        await real_write(self, fd, data, offset)

    monkeypatch.setattr(SpoolDisk, "write", write_until_full)

    async def scenario(url, upstream, front, client):
        async with client.get(url + BLOB) as response:
            assert await response.read() == BODY
        assert front.counters.blob_unshared == 1 and front.counters.blob_failures == 0

    run_front(scenario, tmp_path, _ranged)


def test_a_request_for_another_repository_gets_the_upstreams_own_refusal(tmp_path):
    release = asyncio.Event()

    async def owner_only(request):
        if "/team/app/" not in request.path:
            return web.json_response({"errors": [{"code": "BLOB_UNKNOWN"}]}, status=404)
        if request.method == "HEAD":
            return web.Response(headers={"Content-Length": str(len(BODY))})
        response = await first_half(request)
        await release.wait()
        await response.write(BODY[HALF:])
        return response

    async def scenario(url, upstream, front, client):
        owner = await client.get(url + BLOB)
        await owner.content.readexactly(1024)  # the transfer is under way
        async with client.get(url + f"/v2/team/other/blobs/{DIGEST}") as stranger:
            assert stranger.status == 404
        release.set()
        assert BODY[:1024] + await owner.read() == BODY
        assert front.counters.blob_joins == 0

    run_front(scenario, tmp_path, owner_only)


def test_a_spool_goes_as_soon_as_distribution_has_stored_its_blob_and_linked_it(tmp_path):
    storage = tmp_path / "storage"

    async def scenario(url, upstream, front, client):
        async with client.get(url + BLOB) as response:
            assert await response.read() == BODY
        await asyncio.sleep(0.3)
        assert list((tmp_path / "spool").iterdir())  # kept: Distribution may still ask for it
        stored = blob_path(str(storage), DIGEST)
        os.makedirs(os.path.dirname(stored))
        with open(stored, "wb") as handle:
            handle.write(BODY)
        await asyncio.sleep(0.5)
        # the data alone: Distribution still sends the repository's GETs upstream until it links it
        assert list((tmp_path / "spool").iterdir())
        link = os.path.join(layer_dir(str(storage), REPO, DIGEST), "link")
        os.makedirs(os.path.dirname(link))
        with open(link, "w") as handle:
            handle.write(DIGEST)
        assert await emptied(tmp_path / "spool", within=1.5)

    run_front(scenario, tmp_path, whole_blob, storage=str(storage), keep_seconds=60)


@pytest.mark.parametrize(("free", "size", "fit"), [(100, 10, False), (40 * 2**20, 10 * 2**20, True)])
def test_a_blob_is_spooled_only_with_room_for_it_and_its_stored_copy(free, size, fit):
    assert fits(free, size) is fit


def test_a_spool_with_its_window_needs_room_for_a_few_mib_beside_the_stored_copy_not_a_second_blob():
    size = 1024 * 2**20
    assert not fits(1100 * 2**20, size)
    assert fits(1100 * 2**20, size, windowed=True)
    assert not fits(size, size, windowed=True)
