"""`registry-cache apply`: make the running mirrors match config.yml, changing only what changed."""

from __future__ import annotations

import logging
import os
import time
from typing import Optional, TextIO

from registry_cache import config as configmod
from registry_cache import layout, systemd, upstream
from registry_cache.plan import Plan, make_plan
from registry_cache.render import STORAGE_MARKER, RenderedMirror, connect_host, host_port, render

log = logging.getLogger(__name__)

READY_TIMEOUT = 120.0


class ApplyError(RuntimeError):
    """Applying went wrong after validation (a mirror did not start); the message says what to do."""


def apply(
    config_path: Optional[str],
    root: str,
    out: TextIO,
    *,
    dry_run: bool = False,
) -> Plan:
    """Validate, then render and (re)start only the mirrors whose config changed.

    An invalid config raises ConfigError before anything is touched: the running
    mirrors keep serving and the cache stays.
    """
    fingerprint = configmod.input_fingerprint(config_path)
    unchanged = None if dry_run else _unchanged_since_last_apply(fingerprint, root)
    if unchanged is not None:
        plan = Plan(keep=unchanged)
        stopped = [n for n in unchanged if not systemd.is_active(n)] if systemd.running() else []
        if stopped:
            systemd.systemctl("enable", "--now", *(systemd.unit(n) for n in stopped))
        for line in plan.lines():
            print(line, file=out)
        return plan
    cfg = configmod.load(config_path)
    if cfg.source == configmod.EMBEDDED_DEFAULT:
        print(f"{config_path or 'no config file'} does not exist: using the embedded default "
              "(one Docker Hub mirror on port 5000)", file=out)
    wanted = render(cfg)
    plan = make_plan(wanted, layout.read_rendered(root))
    if dry_run:
        for line in plan.lines():
            print(line, file=out)
        return plan
    _warn_about_upstreams(cfg, plan, out)
    owner = layout.prepare_cache(cfg.storage, [m.storage for m in cfg.mirrors])
    _carry_out(plan, wanted, root, owner, cfg, out)
    text = None
    if cfg.source != configmod.EMBEDDED_DEFAULT:
        with open(cfg.source, encoding="utf-8") as handle:
            text = handle.read()
    # taken again now that the storage exists: its owner is one of the inputs
    layout.save_last_good(root, cfg.source, text, sorted(wanted), configmod.input_fingerprint(config_path))
    for line in plan.lines():
        print(line, file=out)
    return plan


def _unchanged_since_last_apply(fingerprint: Optional[str], root: str) -> Optional[list[str]]:
    """The mirrors, when the config's inputs and the rendered files are exactly as last applied."""
    record = layout.applied_record(root)
    if fingerprint is None or record.get("fingerprint") != fingerprint:
        return None
    if record.get("rendered") != layout.rendered_fingerprint(root):
        return None  # someone edited or deleted a rendered file: render again
    for info in layout.rendered_infos(root):
        if not os.path.exists(os.path.join(info["storage"], STORAGE_MARKER)):
            return None  # the cache folder was reset: create it again
    return sorted(record.get("mirrors", []))


def apply_at_boot(root: str, out: TextIO) -> None:
    """At boot, start the mirrors of the last good config (the embedded default the first time).

    /vagrant is not mounted yet, so nothing is read from it and no storage is created:
    each mirror waits for its cache folder until Vagrant mounts it.
    """
    names = layout.applied_mirrors(root)
    if names is None:
        cfg = configmod.load(None)
        wanted = render(cfg)
        plan = make_plan(wanted, layout.read_rendered(root))
        owner = layout.storage_owner(layout.SYSTEM_ROOT if os.geteuid() == 0 else root)
        _carry_out(plan, wanted, root, owner, cfg, out, at_boot=True)
        layout.save_last_good(root, cfg.source, None, sorted(wanted))
        names = sorted(wanted)
        print("first boot: started the embedded default config", file=out)
    elif systemd.running() and names:
        systemd.systemctl("start", "--no-block", *(systemd.unit(n) for n in names))
    print("started mirrors: " + ", ".join(names), file=out)


def _carry_out(
    plan: Plan,
    wanted: dict[str, RenderedMirror],
    root: str,
    owner: layout.Owner,
    cfg: configmod.CacheConfig,
    out: TextIO,
    *,
    at_boot: bool = False,
) -> None:
    """Write the rendered configs and drop-ins, then stop, start and restart the units that changed.

    At boot this runs inside registry-cache-boot.service, and the mirror units are ordered
    after it: their start jobs are only queued (--no-block), because waiting for them would
    be waiting for ourselves. Otherwise it waits until every mirror answers /v2/.
    """
    for name in plan.add + plan.update:
        layout.write_rendered(root, wanted[name], owner)
    if not systemd.running():
        for name in plan.remove:
            layout.remove_rendered(root, name)
        print("systemd is not running here: configs rendered under "
              f"{root}; run `registry-cache serve` to start the mirrors", file=out)
        return
    # One daemon-reload for the whole change: enable and disable reload systemd by themselves
    # unless told not to, and each reload takes seconds on a slow (TCG) machine.
    queue = ("--no-block",) if at_boot else ()
    reload_needed = False
    restart = list(plan.update)
    for mirror in cfg.mirrors:
        if systemd.write_dropin(mirror.name, owner, mirror.storage):
            reload_needed = True
            if mirror.name in plan.keep:
                restart.append(mirror.name)  # it must run as the cache's (new) owner
    if plan.remove:
        systemd.systemctl("disable", "--now", "--no-reload", *queue,
                          *(systemd.unit(n) for n in plan.remove))
        for name in plan.remove:
            systemd.remove_dropin(name)
            layout.remove_rendered(root, name)
        reload_needed = True
    start = plan.add + [n for n in plan.keep if n not in restart and not systemd.is_active(n)]
    if start:
        systemd.systemctl("enable", "--no-reload", *(systemd.unit(n) for n in start))
    if reload_needed:
        systemd.systemctl("daemon-reload")
    if start:
        systemd.systemctl("start", *queue, *(systemd.unit(n) for n in start))
    if restart:
        systemd.systemctl("restart", *queue, *(systemd.unit(n) for n in restart))
    if not at_boot:
        _wait_until_serving(cfg, out)


def _wait_until_serving(cfg: configmod.CacheConfig, out: TextIO) -> None:
    import requests

    pending = {m.name: f"http://{host_port(connect_host(cfg.listen), m.port)}/v2/" for m in cfg.mirrors}
    deadline = time.monotonic() + READY_TIMEOUT
    while pending and time.monotonic() < deadline:
        for name, url in list(pending.items()):
            try:
                if requests.get(url, timeout=2).status_code in (200, 401):
                    del pending[name]
            except requests.RequestException:
                pass
        if pending:
            time.sleep(0.5)
    if pending:
        units = " ".join(systemd.unit(n) for n in sorted(pending))
        raise ApplyError(
            f"mirror(s) {', '.join(sorted(pending))} did not answer /v2/ within "
            f"{READY_TIMEOUT:.0f} s; see `registry-cache status` and `journalctl -u {units}`"
        )
    print("every mirror answers /v2/", file=out)


def _warn_about_upstreams(cfg: configmod.CacheConfig, plan: Plan, out: TextIO) -> None:
    """Say plainly, for new or changed mirrors, when an upstream cannot be proxied right now."""
    for mirror in cfg.mirrors:
        if mirror.name not in plan.add + plan.update:
            continue
        credentials = (mirror.username, mirror.password) if mirror.username and mirror.password else None
        result = upstream.check(mirror.upstream, credentials=credentials)
        if result.needs_basic_auth:
            print(f"WARNING: mirror {mirror.name}: {upstream.basic_auth_problem(mirror.upstream)}",
                  file=out)
        elif result.credentials_rejected and mirror.username:
            print(f"WARNING: mirror {mirror.name}: "
                  f"{upstream.credentials_problem(mirror.upstream, mirror.username)}", file=out)
        elif not result.reachable:
            print(f"note: mirror {mirror.name}: upstream {mirror.upstream} is unreachable "
                  f"({result.error}); the mirror serves its cache read-only until it answers",
                  file=out)
