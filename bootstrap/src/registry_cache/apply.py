"""`registry-cache apply`: make the running mirrors match config.yml, changing only what changed."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Optional, TextIO

from registry_cache import config as configmod
from registry_cache import net, paths, record, secure, systemd, written
from registry_cache.plan import Plan, make_plan

if TYPE_CHECKING:
    from registry_cache.converge import Step
    from registry_cache.render import RenderedMirror

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
    default_if_missing: bool = False,
) -> Plan:
    """Validate, then render and (re)start only the mirrors whose config changed.

    An invalid config raises ConfigError before anything is touched: the running
    mirrors keep serving and the cache stays.
    """
    missing = config_path is not None and not os.path.exists(config_path)
    # a missing file is an error unless allowed: only a full load says so
    fast = not dry_run and (default_if_missing or not missing)
    unchanged = _unchanged_since_last_apply(config_path, root) if fast else None
    if unchanged is not None:
        plan = Plan(keep=unchanged)
        stopped = [n for n in unchanged if not systemd.is_active(n)] if systemd.running() else []
        if stopped:
            systemd.systemctl("enable", "--now", *(systemd.unit(n) for n in stopped))
        for line in plan.lines():
            print(line, file=out)
        return plan
    # past the fast path: the config reader, YAML and the renderer load only now
    from registry_cache.converge import converge

    cfg = configmod.load(config_path, default_if_missing=default_if_missing)
    if cfg.source == configmod.EMBEDDED_DEFAULT:
        print(f"{config_path or 'no config file'} does not exist: using the embedded default "
              "(one Docker Hub mirror on port 5000)", file=out)
    step = converge(cfg, root, SYSTEMD, out, dry_run=dry_run, check_upstreams=True)
    if dry_run:
        for line in step.plan.lines():
            print(line, file=out)
        return step.plan
    cfg = step.config
    text = None
    if cfg.source != configmod.EMBEDDED_DEFAULT:
        with open(cfg.source, encoding="utf-8") as handle:
            text = handle.read()
    # taken now that the storage exists: its owner is one of the inputs
    written.save_last_good(root, cfg, text, sorted(step.wanted), cfg.fingerprint())
    for line in step.plan.lines():
        print(line, file=out)
    _queue_warming(cfg, out)
    return step.plan


class _Systemd:
    """The mirrors as systemd units (in the box); where systemd is not running, only their files."""

    restarts_metrics = True

    def carry_out(self, root: str, step: Step, out: TextIO) -> None:
        """Write the rendered files, then stop, start and restart the units that changed."""
        assert step.owner is not None
        _carry_out(step.plan, step.wanted, root, step.owner, step.config, out)


SYSTEMD = _Systemd()


def _queue_warming(cfg: configmod.CacheConfig, out: TextIO) -> None:
    """Start pulling the `warm:` images in the background (warm.py); never fails apply."""
    if not any(m.warm for m in cfg.mirrors) or not systemd.running():
        return  # without systemd, `registry-cache serve` warms once its mirrors serve
    try:
        systemd.systemctl("start", "--no-block", paths.WARM_UNIT)
    except (OSError, RuntimeError) as exc:
        print(f"note: could not queue warming ({exc}); run `registry-cache warm`", file=out)
        return
    print(f"warming queued: `journalctl -u {paths.WARM_UNIT}`, `registry-cache status`", file=out)


def _unchanged_since_last_apply(config_path: Optional[str], root: str) -> Optional[list[str]]:
    """The mirrors, when the config's inputs and the rendered files are exactly as last applied.

    Nothing is parsed: the last apply recorded which files the config was read from, so
    their bytes (and the cache owner) are compared as they are, whatever the config format.
    """
    applied = written.read_applied(root)
    if applied is None or applied.fingerprint is None or applied.storage is None:
        return None
    if config_path is not None and os.path.exists(config_path):
        if applied.source != config_path or os.path.abspath(config_path) not in applied.inputs:
            return None  # another config file (the same relative name seen from elsewhere, too)
    elif applied.source != configmod.EMBEDDED_DEFAULT:
        return None  # config.yml went away: the embedded default applies now
    if configmod.fingerprint_now(applied.inputs, applied.storage) != applied.fingerprint:
        return None
    if applied.rendered != written.rendered_fingerprint(root):
        return None  # someone edited or deleted a rendered file: render again
    records = record.read_all(root)
    if not all(r.storage_ready for r in records):
        return None  # a cache folder was reset: create it again
    if secure.renewal_due(records):
        return None  # a generated certificate nears its end, or the box's address changed
    return sorted(applied.mirrors)


def apply_at_boot(root: str, out: TextIO) -> None:
    """At boot, start the mirrors of the last good config (the embedded default the first time).

    /vagrant is not mounted yet, so nothing is read from it and no storage is created:
    each mirror waits for its cache folder until Vagrant mounts it.
    """
    applied = written.read_applied(root)
    names = list(applied.mirrors) if applied is not None else None
    if names is None:
        from registry_cache.render import render

        cfg = configmod.load(None)
        wanted = render(cfg)
        plan = make_plan(wanted, written.read_rendered(root))
        owner = written.storage_owner(paths.SYSTEM_ROOT if os.geteuid() == 0 else root)
        _carry_out(plan, wanted, root, owner, cfg, out, at_boot=True)
        written.save_last_good(root, cfg, None, sorted(wanted))
        names = sorted(wanted)
        print("first boot: started the embedded default config", file=out)
    elif systemd.running() and names:
        systemd.systemctl("start", "--no-block", *(systemd.unit(n) for n in names))
    print("started mirrors: " + ", ".join(names), file=out)


def _carry_out(
    plan: Plan,
    wanted: dict[str, RenderedMirror],
    root: str,
    owner: written.Owner,
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
    for name in plan.add + plan.update + plan.refresh:
        written.write_rendered(root, wanted[name], owner)
    if not systemd.running():
        for name in plan.remove:
            written.remove_rendered(root, name)
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
            if mirror.name in plan.keep + plan.refresh:
                # it must run as the cache's (new) owner, who must own its 0600 files too
                written.write_rendered(root, wanted[mirror.name], owner)
                restart.append(mirror.name)
    if plan.remove:
        systemd.systemctl("disable", "--now", "--no-reload", *queue,
                          *(systemd.unit(n) for n in plan.remove))
        for name in plan.remove:
            systemd.remove_dropin(name)
            written.remove_rendered(root, name)
        reload_needed = True
    start = plan.add + [n for n in plan.keep + plan.refresh if n not in restart and not systemd.is_active(n)]
    if start:
        systemd.systemctl("enable", "--no-reload", *(systemd.unit(n) for n in start))
    if reload_needed:
        systemd.systemctl("daemon-reload")
    if start:
        systemd.systemctl("start", *queue, *(systemd.unit(n) for n in start))
    if restart:
        systemd.systemctl("restart", *queue, *(systemd.unit(n) for n in restart))
    if not at_boot:
        _wait_until_serving(wanted, out)


def _wait_until_serving(wanted: dict[str, RenderedMirror], out: TextIO) -> None:
    pending = net.wait_until_serving({n: m.record.endpoint for n, m in wanted.items()}, READY_TIMEOUT)
    if pending:
        units = " ".join(systemd.unit(n) for n in pending)
        raise ApplyError(
            f"mirror(s) {', '.join(pending)} did not answer /v2/ within "
            f"{READY_TIMEOUT:.0f} s; see `registry-cache status` and `journalctl -u {units}`"
        )
    print("every mirror answers /v2/", file=out)
