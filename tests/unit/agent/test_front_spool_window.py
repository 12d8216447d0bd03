"""The spool's window in a running front: released behind its readers, the fill paced, late readers served."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os

import aiohttp
from aiohttp import web
from registry_cache.cachelayout import blob_path
from registry_cache.front import spool as spool_module
from registry_cache.front import window
from registry_cache.front.answers import CHUNK
from registry_cache.front.spool import NoRoom, SpoolDisk, punch_hole

from tests.unit.agent.front_harness import run_front

MiB = 1024 * 1024
BIG = bytes(range(256)) * (32 * 4096) + b"tail"  # 32 MiB and a bit: not a whole number of steps
BIG_DIGEST = "sha256:" + hashlib.sha256(BIG).hexdigest()
BIG_BLOB = f"/v2/team/app/blobs/{BIG_DIGEST}"


async def _big(request: web.Request) -> web.StreamResponse:
    """The big blob, or its tail from the byte a `Range: bytes=N-` asks for."""
    wanted = request.headers.get("Range")
    if not wanted:
        return web.Response(body=BIG)
    start = int(wanted.removeprefix("bytes=").rstrip("-"))
    return web.Response(
        status=206, body=BIG[start:], headers={"Content-Range": f"bytes {start}-{len(BIG) - 1}/{len(BIG)}"}
    )


async def _read(client, url: str, pause: float = 0.0) -> bytes:
    async with client.get(url) as response:
        assert response.status == 200
        parts = []
        async for chunk in response.content.iter_chunked(CHUNK):
            parts.append(chunk)
            if pause:
                await asyncio.sleep(pause)
        return b"".join(parts)


async def _read_twice(client, url: str) -> list[bytes]:
    """Two readers of the big blob at once (as Distribution's store and its client's stream)."""
    return list(await asyncio.gather(_read(client, url + BIG_BLOB), _read(client, url + BIG_BLOB)))


def _allocated(path) -> int:
    return os.stat(path).st_blocks * 512


def _spool_file(tmp_path):
    (spool,) = (tmp_path / "spool").iterdir()
    return spool


def test_a_hole_punched_in_a_spool_gives_its_blocks_back_and_keeps_the_rest(tmp_path):
    spool = tmp_path / "blob.spool"
    data = os.urandom(4 * MiB)
    spool.write_bytes(data)
    os.sync()
    before = _allocated(spool)

    punch_hole(str(spool), MiB, 2 * MiB)

    assert before - _allocated(spool) >= 2 * MiB - 4096
    content = spool.read_bytes()
    assert len(content) == len(data)  # the length stays: readers' offsets mean the same
    assert content[:MiB] == data[:MiB] and content[3 * MiB :] == data[3 * MiB :]
    punch_hole(str(tmp_path / "gone.spool"), 0, MiB)  # deleted meanwhile: nothing to give back


def test_once_its_readers_have_read_it_a_spool_waiting_for_its_store_holds_less_than_a_step(tmp_path):
    async def scenario(url, upstream, front, client):
        first, second = await asyncio.gather(_read(client, url + BIG_BLOB), _read(client, url + BIG_BLOB))
        assert first == BIG and second == BIG
        spool = _spool_file(tmp_path)  # kept: Distribution has not stored the blob (no one does here)
        assert os.path.getsize(spool) == len(BIG)
        assert _allocated(spool) <= window.RELEASE_STEP

    run_front(scenario, tmp_path, _big, storage=str(tmp_path / "storage"))


def test_the_fill_stays_within_its_window_of_the_slowest_reader(tmp_path):
    async def scenario(url, upstream, front, client):
        widest = 0
        reading = asyncio.gather(_read(client, url + BIG_BLOB), _read(client, url + BIG_BLOB, pause=0.002))
        while not reading.done():
            for transfer in front.board.all():
                offsets = transfer.reader_offsets()
                if offsets and not transfer.done:
                    widest = max(widest, transfer.written - min(offsets))
            await asyncio.sleep(0.001)
        assert (await reading) == [BIG, BIG]
        assert 0 < widest <= window.FILL_AHEAD + CHUNK

    run_front(scenario, tmp_path, _big, storage=str(tmp_path / "storage"))


def test_without_the_mirrors_storage_the_spool_is_kept_whole_for_later_readers(tmp_path):
    async def scenario(url, upstream, front, client):
        assert await _read_twice(client, url) == [BIG, BIG]
        assert _allocated(_spool_file(tmp_path)) >= len(BIG) - 4096
        assert await _read(client, url + BIG_BLOB) == BIG
        assert upstream.gets(BIG_BLOB) == 1 and front.counters.blob_late == 0

    run_front(scenario, tmp_path, _big)


def test_a_late_reader_is_served_from_the_blob_distribution_stored(tmp_path):
    storage = tmp_path / "storage"

    async def scenario(url, upstream, front, client):
        assert await _read_twice(client, url) == [BIG, BIG]
        late = asyncio.ensure_future(_read(client, url + BIG_BLOB))
        await asyncio.sleep(0.5)
        assert not late.done()  # it waits for the stored blob
        stored = blob_path(str(storage), BIG_DIGEST)
        os.makedirs(os.path.dirname(stored))
        with open(stored, "wb") as handle:  # as Distribution commits it
            handle.write(BIG)
        assert await late == BIG
        assert upstream.gets(BIG_BLOB) == 1
        assert (front.counters.blob_late, front.counters.blob_late_upstream) == (1, 0)

    run_front(scenario, tmp_path, _big, storage=str(storage), keep_seconds=60)


def test_late_readers_whose_blob_is_never_stored_share_one_new_transfer(tmp_path, monkeypatch):
    monkeypatch.setattr(window, "STORE_PATIENCE", 0.3)

    async def scenario(url, upstream, front, client):
        assert await _read_twice(client, url) == [BIG, BIG]
        assert await _read_twice(client, url) == [BIG, BIG]  # as Distribution asks again, twice at once
        assert upstream.gets(BIG_BLOB) == 2
        assert front.counters.blob_transfers == 2
        assert front.counters.blob_late_upstream >= 1
        # kept whole: if the late one was Distribution's store, every later reader joins it
        assert [t.windowed for t in front.board.all()] == [False]

    run_front(scenario, tmp_path, _big, storage=str(tmp_path / "storage"), keep_seconds=60)


def test_a_full_disk_once_the_spool_start_is_released_still_gives_every_reader_the_whole_blob(
    tmp_path, monkeypatch
):
    real_write = SpoolDisk.write

    async def write_until_full(self, fd, data, offset):
        if offset >= 20 * MiB:
            raise NoRoom("no space left on the spool's disk")
        await real_write(self, fd, data, offset)

    monkeypatch.setattr(SpoolDisk, "write", write_until_full)

    async def scenario(url, upstream, front, client):
        # each reader's own Range request carries on where it was; its digest is checked over
        # the whole blob from the state kept at the last release step below it
        assert await _read_twice(client, url) == [BIG, BIG]
        assert front.counters.blob_unshared == 2 and front.counters.blob_failures == 0
        assert front.board.all() == [] or front.board.all()[0].released > 0

    run_front(scenario, tmp_path, _big, storage=str(tmp_path / "storage"))


def test_on_a_file_system_that_cannot_punch_holes_spools_are_kept_whole_and_blobs_still_arrive(
    tmp_path, monkeypatch
):
    def unsupported(path, offset, length):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported", path)

    monkeypatch.setattr(spool_module, "punch_hole", unsupported)

    async def scenario(url, upstream, front, client):
        assert await _read_twice(client, url) == [BIG, BIG]
        assert not front.disk.releases
        other = f"/v2/team/app/blobs/sha256:{hashlib.sha256(BIG[:-1]).hexdigest()}"
        async with client.get(url + other) as response:  # the next transfer does not try again
            await response.read()
        assert [t.windowed for t in front.board.all() if t.digest != BIG_DIGEST] == [False]

    async def either(request):
        if request.path.endswith(BIG_DIGEST):
            return await _big(request)
        return web.Response(body=BIG[:-1])

    run_front(scenario, tmp_path, either, storage=str(tmp_path / "storage"))


def test_a_windowed_transfer_whose_connection_drops_is_resumed_with_range_and_every_reader_gets_it_whole(
    tmp_path,
):
    calls: list[str] = []

    async def drop_after_20_mib(request):
        calls.append(request.headers.get("Range", ""))
        if request.headers.get("Range") or len(calls) > 1:
            return await _big(request)
        response = web.StreamResponse()
        response.content_length = len(BIG)
        await response.prepare(request)
        await response.write(BIG[: 20 * MiB])  # past the kept start: part of the spool is released
        request.transport.close()
        return response

    async def scenario(url, upstream, front, client):
        assert await _read_twice(client, url) == [BIG, BIG]
        assert front.counters.blob_resumes == 1 and front.counters.blob_failures == 0
        assert calls[0] == "" and calls[1].startswith("bytes=")
        (transfer,) = front.board.all()
        assert transfer.released > 0

    run_front(scenario, tmp_path, drop_after_20_mib, storage=str(tmp_path / "storage"), keep_seconds=60)


def test_a_windowed_transfer_whose_upstream_stalls_cuts_its_readers_after_the_stall_timeout(tmp_path):
    async def stall_after_20_mib(request):
        response = web.StreamResponse()
        response.content_length = len(BIG)
        await response.prepare(request)
        await response.write(BIG[: 20 * MiB])
        await asyncio.sleep(30)
        return response

    async def scenario(url, upstream, front, client):
        started = asyncio.get_running_loop().time()
        results = await asyncio.gather(
            _read(client, url + BIG_BLOB), _read(client, url + BIG_BLOB), return_exceptions=True
        )
        assert all(isinstance(r, aiohttp.ClientPayloadError) for r in results), results
        assert asyncio.get_running_loop().time() - started < 5
        assert front.counters.blob_failures == 1

    run_front(scenario, tmp_path, stall_after_20_mib, storage=str(tmp_path / "storage"), stall_timeout=0.5)
