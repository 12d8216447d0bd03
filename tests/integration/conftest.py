"""Fixtures for integration tests: real registries, a token server and test images on 127.0.0.1.

Every process a fixture starts is stopped when the test ends, pass or fail; whatever a test
left running is stopped at the end of the session.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from registry_cache.front import FrontHandle, start_front
from registry_cache.record import Credentials
from registry_cache.s3 import Bucket

from box.run import stop_all
from lab import images, nft
from lab.agent import Cache
from lab.ceph import CephCluster, S3Account, start_cluster
from lab.images import TestImages, push_test_images
from lab.registry import REGISTRY_BIN, Registry, htpasswd_auth, start_registry
from lab.tokenauth import TokenServer

_TOOLS = {"docker-registry": REGISTRY_BIN, "skopeo": images.SKOPEO}


@pytest.fixture(scope="session", autouse=True)
def _integration_tools() -> None:
    missing = [name for name, path in _TOOLS.items() if shutil.which(path) is None]
    if missing:
        pytest.fail(
            f"integration tests need {', '.join(missing)}: "
            "run `./invoke install-deps --groups test`",
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def _no_stale_port_tables() -> Iterator[None]:
    """After each test: no nftables table of a runner that is gone redirects a port a later test may pick."""
    yield
    stale = nft.sweep_stale()
    if stale:
        print(f"\nintegration lab: deleted nftables tables of runners gone: {', '.join(stale)}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leftovers = stop_all()
    if leftovers:
        print(f"\nintegration lab: stopped processes a test left running: {leftovers}")


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[Cache]:
    """A `registry-cache serve` under tmp_path, not yet configured or started; stopped after the test."""
    c = Cache(tmp_path / "cache-host")
    c.workdir.mkdir()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def ceph() -> Iterator[CephCluster]:
    """A single-node Ceph cluster with its S3 gateway on 127.0.0.1, shared by one test module's tests.

    Per module, not per session: it starts in about a second, and a cluster left running past its
    module would be found by the tests that check the lab leaves no process behind.
    """
    cluster = start_cluster()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def s3_account(ceph: CephCluster) -> S3Account:
    """An account (access key and secret) on the module's Ceph S3 gateway."""
    return ceph.create_account("registry-cache-tests")


@pytest.fixture
def s3_bucket(s3_account: S3Account, request: pytest.FixtureRequest) -> Bucket:
    """A new, empty bucket of the test's own on the module's Ceph S3 gateway."""
    name = f"t-{secrets.token_hex(4)}-{request.node.name[:40]}".lower().replace("_", "-").strip("-")
    bucket = Bucket(s3_account.endpoint, s3_account.region, name,
                    s3_account.access_key, s3_account.secret_key)
    bucket.create()
    return bucket


@pytest.fixture
def registry_factory(tmp_path: Path) -> Iterator[Callable[..., Registry]]:
    """Start registries with `factory(name, **start_registry kwargs)`; all stop after the test."""
    started: list[Registry] = []

    def factory(name: str = "upstream", **kwargs: Any) -> Registry:
        workdir = kwargs.pop("workdir", tmp_path / name)
        reg = start_registry(workdir, name, **kwargs)
        started.append(reg)
        return reg

    yield factory
    for reg in reversed(started):
        reg.stop()


@pytest.fixture
def upstream(registry_factory: Callable[..., Registry]) -> Registry:
    """A plain upstream registry (no auth) on 127.0.0.1."""
    return registry_factory("upstream")


@pytest.fixture
def test_images(upstream: Registry, tmp_path: Path) -> TestImages:
    """The three test images, pushed to `upstream`."""
    return push_test_images(tmp_path / "layouts", upstream.host)


@pytest.fixture
def upstream_credentials() -> Credentials:
    """A fresh username and random password for the authenticated upstreams."""
    return Credentials("alice", secrets.token_urlsafe(16))


@pytest.fixture
def token_server(tmp_path: Path, upstream_credentials: Credentials) -> Iterator[TokenServer]:
    """A token server on 127.0.0.1 that knows `upstream_credentials`."""
    server = TokenServer(
        tmp_path / "token-server",
        users={upstream_credentials.username: upstream_credentials.password},
    )
    with server:
        yield server


@pytest.fixture
def token_upstream(
    registry_factory: Callable[..., Registry], token_server: TokenServer
) -> Registry:
    """An upstream registry with `auth: token`, as Docker Hub and ghcr.io work."""
    return registry_factory("token-upstream", auth=token_server.registry_auth())


@pytest.fixture
def token_test_images(
    token_upstream: Registry, upstream_credentials: Credentials, tmp_path: Path
) -> TestImages:
    """The three test images, pushed to `token_upstream` with `upstream_credentials`."""
    return push_test_images(
        tmp_path / "token-layouts", token_upstream.host, creds=upstream_credentials.pair()
    )


@pytest.fixture
def htpasswd_upstream(
    registry_factory: Callable[..., Registry], tmp_path: Path, upstream_credentials: Credentials
) -> Registry:
    """An upstream registry with `auth: htpasswd` (HTTP basic auth)."""
    auth = htpasswd_auth(
        tmp_path / "htpasswd-upstream",
        {upstream_credentials.username: upstream_credentials.password},
    )
    return registry_factory("htpasswd-upstream", auth=auth)


@pytest.fixture
def front_factory(tmp_path: Path) -> Iterator[Callable[..., FrontHandle]]:
    """Start fronts in this process with `factory(upstream_url, credentials=None, **start_front kwargs)`.

    Each spools under tmp_path unless `spool_dir` says where; all stop after the test.
    """
    started: list[FrontHandle] = []

    def factory(upstream_url: str, credentials: Credentials | None = None, **kwargs: Any) -> FrontHandle:
        spool = kwargs.pop("spool_dir", None) or str(tmp_path / f"front-{len(started)}" / "spool")
        handle = start_front(upstream_url, credentials, spool, **kwargs)
        started.append(handle)
        return handle

    yield factory
    for handle in started:
        handle.stop()
