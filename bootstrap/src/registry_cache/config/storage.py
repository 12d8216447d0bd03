"""The `storage:` mapping with `s3:`: a bucket that several caches share, checked and probed.

A bucket that cannot be reached, read or written is a problem at the key that is wrong
(`storage.s3.endpoint` when nothing answers, `.bucket` when it does not exist, `.access_key` or
`.secret_file` when S3 refuses the keys), worded with the endpoint and S3's own error code.
The secret never appears in a message or a repr.
"""

from __future__ import annotations

import os
from typing import Any, Optional
from urllib.parse import urlsplit

from registry_cache.config.document import Document, KeyPath
from registry_cache.config.files import read_secret
from registry_cache.config.fingerprint import digest
from registry_cache.config.model import DEFAULT_REGION, S3Storage

# Which key an S3 error code points at, and what to do about it.
_ERROR_KEYS: dict[str, tuple[str, str]] = {
    "ConnectionError": ("endpoint", "check the address and that the gateway runs"),
    "Timeout": ("endpoint", "check the address and that the gateway runs"),
    "TLSError": ("ca_file", "give the CA that signed the endpoint's certificate in ca_file"),
    "NoSuchBucket": ("bucket", "create the bucket first (s3cmd mb, aws s3 mb, radosgw-admin)"),
    "InvalidBucketName": ("bucket", "use 3-63 lower-case letters, digits, dots or dashes"),
    "InvalidAccessKeyId": ("access_key", "this access key is unknown to the endpoint"),
    "SignatureDoesNotMatch": ("secret_file", "the secret key does not match the access key"),
    "AccessDenied": ("access_key", "grant this account read, write and delete on the bucket"),
}


def endpoint_problem(url: str) -> Optional[str]:
    """Say what is wrong with an S3 endpoint URL, or None when it is one."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"'{url}' is not an http(s) URL; e.g. http://192.168.56.60:7480"
    if parts.username or parts.password:
        return "must not carry credentials; use access_key and secret_file"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return f"'{url}' has a path; give the endpoint's root ({parts.scheme}://{parts.netloc})"
    return None


def check_s3(doc: Document, spec: Any, base_dir: str, *, probe: bool) -> Optional[S3Storage]:
    """The bucket `storage.s3` names, or None (and why, to `doc`); with `probe`, it must take a write."""
    if not isinstance(spec, dict):
        return None  # the schema said what is wrong
    base: KeyPath = ("storage", "s3")
    known = len(doc.problems)
    endpoint = spec.get("endpoint")
    if isinstance(endpoint, str):
        problem = endpoint_problem(endpoint)
        if problem:
            doc.add((*base, "endpoint"), problem)
    secret = None
    if isinstance(spec.get("secret_file"), str) and spec["secret_file"]:
        secret = read_secret(doc, base_dir, (*base, "secret_file"), spec["secret_file"])
    ca_file = None
    if isinstance(spec.get("ca_file"), str) and spec["ca_file"]:
        ca_file = _read_ca(doc, (*base, "ca_file"), os.path.normpath(os.path.join(base_dir, spec["ca_file"])))
        if isinstance(endpoint, str) and endpoint.startswith("http://"):
            doc.add((*base, "ca_file"), "the endpoint is plain http://, so a CA checks nothing; "
                                        "use an https:// endpoint or drop ca_file")
    if len(doc.problems) > known or secret is None or not isinstance(endpoint, str):
        return None
    storage = S3Storage(
        endpoint=endpoint.rstrip("/"),
        bucket=spec["bucket"],
        access_key=spec["access_key"],
        secret_key=secret,
        region=spec.get("region", DEFAULT_REGION),
        path_style=spec.get("path_style", True),
        ca_file=ca_file,
        prefix=spec.get("prefix", "").strip("/"),
    )
    if probe:
        _probe(doc, base, storage)
    return storage


def _probe(doc: Document, base: KeyPath, storage: S3Storage) -> None:
    """Write, read back and delete an object in the bucket; report S3's answer at the key at fault."""
    from registry_cache.s3 import Bucket, S3Error

    try:
        Bucket(endpoint=storage.endpoint, region=storage.region, bucket=storage.bucket,
               access_key=storage.access_key, secret_key=storage.secret_key,
               path_style=storage.path_style, ca_file=storage.ca_file).probe_write(storage.prefix)
    except S3Error as exc:
        key, hint = _ERROR_KEYS.get(exc.code, ("bucket", "check the account's rights on the bucket"))
        doc.add((*base, key), f"the bucket cannot be used: {exc}; {hint}")


def _read_ca(doc: Document, key: KeyPath, path: str) -> Optional[str]:
    """The CA file's path once it holds a PEM certificate (an input of the config), else None."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        doc.add(key, f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}; fix the path "
                     "(relative to this file)")
        return None
    if b"-----BEGIN CERTIFICATE-----" not in raw:
        doc.add(key, f"{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
        return None
    doc.inputs[path] = digest(raw)
    return path
