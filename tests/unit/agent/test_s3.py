"""The agent's S3 client: SigV4 signatures as AWS computes them, S3 error codes named, no secret shown."""

from __future__ import annotations

import datetime
import hashlib

from registry_cache import s3

# The example of AWS's "Signature Version 4: GET Object" documentation, with its published signature.
_AWS_ACCESS = "AKIAIOSFODNN7EXAMPLE"
_AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def test_a_get_is_signed_exactly_as_aws_documents_it():
    headers = s3.sign_v4(
        method="GET", host="examplebucket.s3.amazonaws.com", path="/test.txt", query={},
        headers={"Range": "bytes=0-9"}, payload_sha256=hashlib.sha256(b"").hexdigest(),
        region="us-east-1", access_key=_AWS_ACCESS, secret_key=_AWS_SECRET,
        now=datetime.datetime(2013, 5, 24, tzinfo=datetime.timezone.utc),
    )
    assert headers["authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )


def test_a_list_with_a_query_is_signed_as_aws_documents_it():
    headers = s3.sign_v4(
        method="GET", host="examplebucket.s3.amazonaws.com", path="/",
        query={"max-keys": "2", "prefix": "J"}, headers={},
        payload_sha256=hashlib.sha256(b"").hexdigest(), region="us-east-1",
        access_key=_AWS_ACCESS, secret_key=_AWS_SECRET,
        now=datetime.datetime(2013, 5, 24, tzinfo=datetime.timezone.utc),
    )
    assert headers["authorization"].endswith(
        "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
    )


def test_path_style_puts_the_bucket_in_the_path_and_virtual_hosts_in_the_name():
    path_style = s3.Bucket("http://rgw:7480", "us-east-1", "cache", "AK", "SK")
    assert path_style._url("a b/c")[0] == "http://rgw:7480/cache/a%20b/c"
    virtual = s3.Bucket("https://s3.example.com", "eu-west-1", "cache", "AK", "SK", path_style=False)
    assert virtual._url("x")[:2] == ("https://cache.s3.example.com/x", "cache.s3.example.com")


def test_an_s3_error_names_endpoint_bucket_and_code_but_never_the_secret():
    bucket = s3.Bucket("http://rgw:7480", "us-east-1", "cache", "AK", "very-secret-key")

    class Response:
        status_code = 403
        content = b"<?xml version='1.0'?><Error><Code>SignatureDoesNotMatch</Code></Error>"

    error = s3.S3Error(bucket.endpoint, bucket.bucket, s3._error_code(Response()), "HTTP 403")
    assert str(error) == "S3 endpoint http://rgw:7480, bucket cache: SignatureDoesNotMatch (HTTP 403)"
    assert "very-secret-key" not in repr(bucket)
