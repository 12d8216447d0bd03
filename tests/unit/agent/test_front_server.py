"""The front's aiohttp app against an in-process upstream on 127.0.0.1: timing and failure paths.

No process is started: the upstream and the front are aiohttp apps on one event loop, so each
test can hold the upstream mid-body and look at what the readers got meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request

import aiohttp
import pytest
from aiohttp import web
from registry_cache.front import start_front
from registry_cache.front.transfer import HOLDBACK
from registry_cache.record import Credentials

from tests.unit.agent.front_harness import (
    BLOB,
    BODY,
    DIGEST,
    HALF,
    Handler,
    emptied,
    first_half,
    run_front,
    serve,
    whole_blob,
)


def test_readers_stream_while_the_upstream_still_sends_and_only_one_transfer_runs(tmp_path):
    gate = asyncio.Event()

    async def slow(request):
        response = await first_half(request)
        await gate.wait()
        await response.write(BODY[HALF:])
        return response

    async def scenario(url, upstream, front, client):
        first = await client.get(url + BLOB)
        second = await client.get(url + BLOB)
        # both have the first half while the upstream is still sending, bar the held-back end:
        # the front has that byte but keeps it until the whole blob matched its digest
        assert await first.content.readexactly(HALF - HOLDBACK) == BODY[: HALF - HOLDBACK]
        assert await second.content.readexactly(HALF - HOLDBACK) == BODY[: HALF - HOLDBACK]
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(second.content.readexactly(HOLDBACK), 0.3)
        first.close()  # the requester that started the transfer goes away: the others carry on
        gate.set()
        assert BODY[: HALF - HOLDBACK] + await second.read() == BODY
        assert second.headers["Docker-Content-Digest"] == DIGEST
        assert upstream.gets() == 1
        assert front.counters.blob_transfers == 1 and front.counters.blob_joins == 1

    run_front(scenario, tmp_path, slow)


def test_a_digest_mismatch_cuts_the_reader_and_the_next_request_fetches_again(tmp_path):
    answers = [bytes(len(BODY)), BODY]  # wrong bytes of the right length, then the right ones

    async def handler(request):
        return web.Response(body=answers.pop(0))

    async def scenario(url, upstream, front, client):
        async with client.get(url + BLOB) as response:
            assert response.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
        async with client.get(url + BLOB) as response:
            assert await response.read() == BODY
        assert upstream.gets() == 2
        assert front.counters.blob_failures == 1

    run_front(scenario, tmp_path, handler)


def test_a_short_body_cuts_the_reader_mid_body(tmp_path):
    async def short(request):
        response = await first_half(request)
        request.transport.close()
        return response

    async def scenario(url, upstream, front, client):
        async with client.get(url + BLOB) as response:
            got = b""
            with pytest.raises(aiohttp.ClientPayloadError):
                async for chunk in response.content.iter_any():
                    got += chunk
        assert len(got) < len(BODY)
        assert front.counters.blob_failures == 1
        assert await emptied(tmp_path / "spool")  # the broken spool is gone

    run_front(scenario, tmp_path, short)


def test_a_non_200_blob_answer_passes_back_and_is_not_kept(tmp_path):
    async def missing(request):
        return web.json_response({"errors": [{"code": "BLOB_UNKNOWN"}]}, status=404)

    async def scenario(url, upstream, front, client):
        for _ in range(2):
            async with client.get(url + BLOB) as response:
                assert response.status == 404
                assert (await response.json())["errors"][0]["code"] == "BLOB_UNKNOWN"
        assert upstream.gets() == 2

    run_front(scenario, tmp_path, missing)


def test_a_late_get_is_served_from_the_finished_spool(tmp_path):
    async def scenario(url, upstream, front, client):
        for _ in range(3):
            async with client.get(url + BLOB) as response:
                assert await response.read() == BODY
        assert upstream.gets() == 1
        assert front.counters.blob_joins == 2

    run_front(scenario, tmp_path, whole_blob)


def test_a_finished_spool_is_deleted_after_its_keep_time(tmp_path):
    async def scenario(url, upstream, front, client):
        async with client.get(url + BLOB) as response:
            assert await response.read() == BODY
        await asyncio.sleep(0.3)
        assert await emptied(tmp_path / "spool")
        async with client.get(url + BLOB) as response:
            assert await response.read() == BODY
        assert upstream.gets() == 2

    run_front(scenario, tmp_path, whole_blob, keep_seconds=0.1)


def test_a_blob_head_is_answered_by_an_upstream_head(tmp_path):
    async def scenario(url, upstream, front, client):
        async with client.head(url + BLOB) as response:
            assert response.status == 200
            assert response.headers["Content-Length"] == str(len(BODY))
        assert [method for method, _, _ in upstream.seen] == ["HEAD"]
        assert front.counters.upstream_bytes == 0

    run_front(scenario, tmp_path, whole_blob)


def test_manifests_pass_through_with_the_requesters_headers(tmp_path):
    manifest = json.dumps({"schemaVersion": 2}).encode()

    async def handler(request):
        assert request.headers.getall("Accept") == ["a/b", "c/d"]
        return web.Response(body=manifest, content_type="application/vnd.oci.image.manifest.v1+json")

    async def scenario(url, upstream, front, client):
        headers = [("Accept", "a/b"), ("Accept", "c/d")]
        async with client.get(url + "/v2/team/app/manifests/v1", headers=headers) as response:
            assert response.status == 200
            assert await response.read() == manifest
            assert response.content_type == "application/vnd.oci.image.manifest.v1+json"
        assert front.counters.upstream_bytes == len(manifest)
        assert front.counters.blob_transfers == 0

    run_front(scenario, tmp_path, handler)


def test_the_front_answers_a_basic_challenge_with_its_credentials(tmp_path):
    creds = Credentials("alice", "s3cr3t")

    async def basic(request):
        if request.headers.get("Authorization") != creds.authorization():
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        return web.Response(body=BODY)

    async def scenario(url, upstream, front, client):
        async with client.get(url + "/v2/") as response:
            assert response.status == 200
        async with client.get(url + BLOB) as response:
            assert await response.read() == BODY
        # one challenge taught the front: the blob GET carried basic auth from the start
        assert [auth is not None for _, _, auth in upstream.seen] == [False, True, True]

    run_front(scenario, tmp_path, basic, credentials=creds)


def test_a_bearer_challenge_and_the_requesters_token_pass_through_untouched(tmp_path):
    challenge = 'Bearer realm="https://auth.example/token",service="registry"'

    async def bearer(request):
        if request.headers.get("Authorization") != "Bearer t0k3n":
            return web.Response(status=401, headers={"WWW-Authenticate": challenge})
        return web.Response(body=BODY)

    async def scenario(url, upstream, front, client):
        async with client.get(url + "/v2/") as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"] == challenge
        async with client.get(url + BLOB, headers={"Authorization": "Bearer t0k3n"}) as response:
            assert await response.read() == BODY

    run_front(scenario, tmp_path, bearer, credentials=Credentials("alice", "s3cr3t"))


def test_a_redirect_to_another_server_is_followed_without_authorization(tmp_path):
    cdn_seen: list[str | None] = []

    async def cdn(request):
        cdn_seen.append(request.headers.get("Authorization"))
        return web.Response(body=BODY)

    async def scenario(url, upstream, front, client):
        cdn_runner, cdn_url = await serve(_app(cdn))
        try:
            upstream.handler = _redirect_to(cdn_url + "/blob?sig=1")
            async with client.get(url + BLOB, headers={"Authorization": "Bearer t0k3n"}) as response:
                assert await response.read() == BODY
        finally:
            await cdn_runner.cleanup()
        assert cdn_seen == [None]
        assert upstream.seen[0][2] == "Bearer t0k3n"
        assert front.counters.upstream_requests == 2

    run_front(scenario, tmp_path, whole_blob)


def test_an_unreachable_upstream_is_a_bad_gateway(tmp_path):
    async def scenario(url, upstream, front, client):
        front.client.upstream = front.client.upstream.with_port(1)
        async with client.get(url + "/v2/") as response:
            assert response.status == 502
        async with client.get(url + BLOB) as response:
            assert response.status == 502

    run_front(scenario, tmp_path, whole_blob)


def _app(handler: Handler) -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


def _redirect_to(location: str) -> Handler:
    async def redirect(request):
        return web.Response(status=307, headers={"Location": location})

    return redirect


def test_start_front_serves_on_a_free_port_and_its_counters_stay_readable_once_stopped(tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "sha256-ab.1.spool").write_bytes(b"left by a crash")

    handle = start_front("http://127.0.0.1:1", None, str(spool))
    try:
        assert handle.url == f"http://127.0.0.1:{handle.port}"
        assert list(spool.iterdir()) == []
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(handle.url + "/v2/", timeout=10)
        assert answer.value.code == 502
        assert handle.counters()["upstream_requests"] == 1
    finally:
        handle.stop()
    assert handle.counters()["upstream_requests"] == 1  # still readable once stopped


def test_start_front_raises_its_start_error_in_the_callers_thread(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):
            start_front("http://127.0.0.1:1", None, str(tmp_path / "spool"), port=taken.getsockname()[1])


def test_a_spool_that_cannot_be_opened_fails_the_blob_instead_of_hanging_it(tmp_path):
    async def scenario(front_url, upstream, front, client):
        # the spool folder is gone (a full or broken disk, no file handle left)
        for path in (tmp_path / "spool").iterdir():
            path.unlink()
        (tmp_path / "spool").rmdir()
        for _ in range(2):  # and the next request does not join a dead transfer
            async with client.get(front_url + BLOB) as answer:
                assert answer.status == 502
        assert front.board.in_flight() == 0

    run_front(scenario, tmp_path, whole_blob)
