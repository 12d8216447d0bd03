"""One converge step for `apply` and `serve`: prepare secrets and TLS, render, plan, write, start and stop.

The config comes in validated (`config.load` raised ConfigError before anything was touched).
What writes the mirrors' files and starts and stops them is a `Runtime`: systemd units for
`apply`, the `serve` process's own runners; the order of writing and stopping is theirs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Protocol, TextIO

from registry_cache import secure, shared, upstream, written
from registry_cache.config import CacheConfig
from registry_cache.plan import Plan, make_plan
from registry_cache.render import RenderedMirror, render
from registry_cache.written import Owner


@dataclass(frozen=True)
class Step:
    """A valid config made ready: each mirror's files rendered, and the plan against those on disk."""

    config: CacheConfig  # with the generated TLS files among its inputs
    wanted: dict[str, RenderedMirror]
    plan: Plan
    owner: Optional[Owner] = None  # the account the mirrors run as; None on a dry run


class Runtime(Protocol):
    """What runs the mirrors: systemd units (`apply`) or the runners of the `serve` process."""

    # True when the metrics endpoint is a unit this runtime restarts when its address changes
    restarts_metrics: bool

    def carry_out(self, root: str, step: Step, out: TextIO) -> None:
        """Write the rendered files of `step` under `root`; start, restart and stop mirrors to match."""


def prepare(config: CacheConfig, root: str, *, dry_run: bool = False) -> Step:
    """Make the cache folders and TLS material, hash client passwords, render and plan.

    A dry run creates and writes nothing: no cache folder, no certificate.
    """
    current = written.read_rendered(root)
    owner = None
    ids = None
    if not dry_run:
        owner = written.prepare_cache(config.storage, [m.storage for m in config.mirrors])
        ids = (owner.uid, owner.gid) if os.geteuid() == 0 else None
        if config.s3 is not None:
            shared.node_name(root)  # this node's name in the cluster, chosen once, before any runner
    # the generated certificate and the client passwords' hashes, before rendering
    config, security = secure.prepare(config, root, ids, current, write=not dry_run)
    wanted = render(config, security)
    return Step(config=config, wanted=wanted, plan=make_plan(wanted, current), owner=owner)


def converge(
    config: CacheConfig,
    root: str,
    runtime: Runtime,
    out: TextIO,
    *,
    dry_run: bool = False,
    check_upstreams: bool = False,
) -> Step:
    """Make the mirrors under `root` match `config`: prepare, then let `runtime` write, start and stop.

    Then record where the metrics endpoint listens (config.yml's `listen` and `metrics_port`)
    for `registry-cache metrics`. `check_upstreams`: first say plainly when a new or changed
    mirror's upstream cannot be proxied now. A dry run only plans.
    """
    step = prepare(config, root, dry_run=dry_run)
    if dry_run:
        return step
    if check_upstreams:
        warn_about_upstreams(step.wanted, step.plan, out)
    runtime.carry_out(root, step, out)
    from registry_cache import metrics  # only when something changed: apply's no-op path stays light

    metrics.apply_settings(root, step.config, out, restart=runtime.restarts_metrics)
    return step


def warn_about_upstreams(wanted: dict[str, RenderedMirror], plan: Plan, out: TextIO) -> None:
    """Say plainly, for new or changed mirrors, when an upstream cannot be proxied right now."""
    for name, mirror in wanted.items():
        if name not in plan.add + plan.update:
            continue
        url = mirror.record.upstream
        result = upstream.check(url, credentials=mirror.credentials)
        if result.login_missing:
            print(f"WARNING: mirror {name}: {upstream.login_problem(url)}", file=out)
        elif result.credentials_rejected and mirror.credentials is not None:
            print(f"WARNING: mirror {name}: "
                  f"{upstream.credentials_problem(url, mirror.credentials.username)}", file=out)
        elif not result.reachable:
            print(f"note: mirror {name}: upstream {url} is unreachable "
                  f"({result.error}); the mirror serves its cache read-only until it answers",
                  file=out)
