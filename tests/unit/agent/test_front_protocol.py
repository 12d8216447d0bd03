"""The front's protocol rules (pure): which paths are blobs, which headers go where, redirects, auth."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict
from registry_cache.front import protocol
from registry_cache.record import Credentials
from yarl import URL

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("path", "name"),
    [
        (f"/v2/library/alpine/blobs/{DIGEST}", "library/alpine"),
        (f"/v2/alpine/blobs/{DIGEST}", "alpine"),
        (f"/v2/a/b/c-d_e.f/blobs/{DIGEST}", "a/b/c-d_e.f"),
    ],
)
def test_blob_paths_name_the_repository_and_digest(path, name):
    blob = protocol.parse_blob_path(path)

    assert blob is not None
    assert (blob.name, blob.digest, blob.algorithm, blob.hex) == (name, DIGEST, "sha256", "ab" * 32)


@pytest.mark.parametrize(
    "path",
    [
        "/v2/",
        "/v2/library/alpine/manifests/latest",
        f"/v2/library/alpine/manifests/{DIGEST}",
        "/v2/library/alpine/blobs/uploads/",
        "/v2/library/alpine/blobs/sha256:abc",  # too short for sha256
        f"/v2/library/alpine/blobs/{DIGEST.upper()}",
        f"/prefix/v2/library/alpine/blobs/{DIGEST}",
        "/v2/library/alpine/tags/list",
    ],
)
def test_other_paths_are_not_blobs(path):
    assert protocol.parse_blob_path(path) is None


def test_sha512_blobs_are_recognised():
    digest = "sha512:" + "0" * 128
    assert protocol.parse_blob_path(f"/v2/x/blobs/{digest}").algorithm == "sha512"


def test_upstream_url_keeps_the_upstreams_path_and_the_query_as_sent():
    url = protocol.upstream_url(URL("https://host:8443/mirror/"), "/v2/x/tags/list?n=10&last=a%2Fb")

    assert str(url) == "https://host:8443/mirror/v2/x/tags/list?n=10&last=a%2Fb"


def test_requests_go_upstream_without_hop_by_hop_headers_or_host():
    headers = CIMultiDict(
        {"Host": "127.0.0.1:5001", "Connection": "keep-alive", "Authorization": "Bearer t", "Accept": "a/b"}
    )
    headers.add("Accept", "c/d")

    out = protocol.forward_request_headers(headers)

    assert "Host" not in out and "Connection" not in out
    assert out["Authorization"] == "Bearer t"
    assert out.getall("Accept") == ["a/b", "c/d"]


def test_blob_gets_ask_for_the_stored_bytes_not_a_re_encoding():
    out = protocol.forward_request_headers({"Accept-Encoding": "gzip"}, blob=True)

    assert out["Accept-Encoding"] == "identity"


def test_answers_go_back_without_hop_by_hop_headers_or_length():
    out = protocol.forward_response_headers(
        {"Transfer-Encoding": "chunked", "Content-Length": "5", "Docker-Content-Digest": DIGEST}
    )

    assert dict(out) == {"Docker-Content-Digest": DIGEST}


def test_authorization_is_dropped_once_a_redirect_leaves_the_upstream():
    upstream = URL("https://registry.example")
    headers = CIMultiDict({"Authorization": "Bearer t", "Accept": "*/*"})

    kept = protocol.headers_for_hop(headers, upstream, URL("https://registry.example/v2/x/blobs/y"))
    dropped = protocol.headers_for_hop(headers, upstream, URL("https://cdn.example/blob?sig=1"))
    other_port = protocol.headers_for_hop(headers, upstream, URL("https://registry.example:8443/b"))

    assert kept["Authorization"] == "Bearer t"
    assert "Authorization" not in dropped and dropped["Accept"] == "*/*"
    assert "Authorization" not in other_port
    assert headers["Authorization"] == "Bearer t"  # the requester's headers are left alone


@pytest.mark.parametrize(
    ("status", "location", "method", "expected"),
    [
        (307, "https://cdn.example/b?sig=1", "GET", "https://cdn.example/b?sig=1"),
        (302, "/other/path", "GET", "https://registry.example/other/path"),
        (308, "https://cdn.example/b", "HEAD", "https://cdn.example/b"),
        (307, "https://cdn.example/b", "POST", None),  # a body would have to be sent again
        (200, "https://cdn.example/b", "GET", None),
        (307, None, "GET", None),
    ],
)
def test_redirects_of_gets_and_heads_are_followed(status, location, method, expected):
    target = protocol.redirect_target(URL("https://registry.example/v2/x/blobs/y"), status, location, method)

    assert (str(target) if target else None) == expected


@pytest.mark.parametrize(
    ("values", "schemes"),
    [
        (['Basic realm="registry"'], {"basic"}),
        (
            ['Bearer realm="https://auth.example/token",service="r",scope="repository:a/b:pull,push"'],
            {"bearer"},
        ),
        (['Basic realm="a", Bearer realm="b"'], {"basic", "bearer"}),
        (["Negotiate", 'Basic realm="x"'], {"negotiate", "basic"}),
        ([], set()),
    ],
)
def test_challenge_schemes_are_read_from_www_authenticate(values, schemes):
    assert protocol.challenge_schemes(values) == schemes


def test_the_front_answers_a_basic_challenge_when_it_has_credentials():
    creds = Credentials("alice", "secret")
    basic = ['Basic realm="r"']

    assert protocol.should_answer_basic(401, basic, credentials=creds, sent_authorization=False)
    assert not protocol.should_answer_basic(401, basic, credentials=None, sent_authorization=False)
    assert not protocol.should_answer_basic(
        401, ['Bearer realm="x"'], credentials=creds, sent_authorization=False
    )
    # Distribution's own token is never replaced
    assert not protocol.should_answer_basic(401, basic, credentials=creds, sent_authorization=True)
    assert not protocol.should_answer_basic(403, basic, credentials=creds, sent_authorization=False)


def test_error_descriptions_leave_out_signed_query_strings():
    text = protocol.describe(ValueError("cannot reach https://cdn.example/b?X-Amz-Signature=abc&e=1 now"))

    assert "abc" not in text and "cdn.example/b" in text


@pytest.mark.parametrize(
    ("value", "start"),
    [
        ("bytes 100-199/200", 100),
        ("bytes 0-9/*", 0),
        (None, None),
        ("bytes */200", None),
        ("items 1-2/3", None),
    ],
)
def test_the_first_byte_of_a_partial_answer_is_read_from_content_range(value, start):
    assert protocol.content_range_start(value) == start


def test_a_resumed_request_asks_for_the_rest_of_the_body():
    assert protocol.range_header(1048576) == "bytes=1048576-"
