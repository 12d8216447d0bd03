"""True hit/miss counting from Distribution's JSON log lines."""

import json

from registry_cache import cachelayout, counters

DIGEST = "sha256:069da45192d2845f7b69f48aa35fd858da6792bafa5ea642fb501bbd95e2420c"
# A real line logged by docker-registry 2.8.2 (log.formatter: json) for a blob download.
BLOB_LINE = (
    '{"go.version":"go1.19.8","http.request.host":"127.0.0.1:5901","http.request.id":"b3e1064c",'
    '"http.request.method":"GET","http.request.remoteaddr":"127.0.0.1:51042","http.request.uri":'
    f'"/v2/test/app/blobs/{DIGEST}","http.request.useragent":"skopeo/1.9.3",'
    '"http.response.contenttype":"application/octet-stream","http.response.duration":"45.880174ms",'
    '"http.response.status":200,"http.response.written":200249,"level":"info",'
    '"msg":"response completed","time":"2026-11-28T13:39:03.457263858Z"}'
)


def entry(**changes):
    data = json.loads(BLOB_LINE)
    data.update(changes)
    return data


def test_first_download_of_a_blob_is_a_miss_and_the_second_a_hit():
    counter = counters.HitCounter(set())
    assert counter.observe(counters.parse_log_line(BLOB_LINE)) == "miss"
    assert counter.observe(counters.parse_log_line(BLOB_LINE)) == "hit"
    # what came from the upstream is the front's count, not the registry's (see runner/frontkeeper.py)
    assert counter.counts.as_dict() == {"hits": 1, "misses": 1, "bytes_served": 400498}


def test_a_blob_already_in_storage_is_a_hit():
    counter = counters.HitCounter({DIGEST})
    assert counter.observe(entry()) == "hit"


def test_head_requests_errors_and_manifests_are_not_blob_downloads():
    counter = counters.HitCounter(set())
    assert counter.observe(entry(**{"http.request.method": "HEAD"})) is None
    assert counter.observe(entry(**{"http.response.status": 404})) is None
    assert counter.observe(entry(**{"http.request.uri": "/v2/test/app/manifests/v1"})) is None
    assert counter.counts.as_dict() == {"hits": 0, "misses": 0, "bytes_served": 0}


def test_non_json_lines_are_ignored():
    assert counters.parse_log_line('time="x" level=warning msg="plain text"') is None
    assert counters.parse_log_line("{not json") is None


def test_cached_blobs_lists_the_digests_in_a_storage_tree(tmp_path):
    hexd = DIGEST.split(":")[1]
    blob = tmp_path / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd
    blob.mkdir(parents=True)
    (blob / "data").write_bytes(b"x")
    (tmp_path / "docker/registry/v2/blobs/sha256/ab/abcd").mkdir(parents=True)  # upload in progress
    assert cachelayout.cached_blobs(str(tmp_path)) == {DIGEST}
