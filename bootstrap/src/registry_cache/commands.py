"""What each `registry-cache` command does once its flags are parsed (cli.py), and the exit code it returns.

Each command imports what it needs when it runs: `status` and `run-mirror` start sooner on a
slow (TCG) box without the config reader, YAML and the TLS libraries.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from typing import Optional, Union

from registry_cache import paths

DEFAULT_CONFIG = "/vagrant/config.yml"
# Exit codes (README "Exit codes"; the --help epilog says the same).
EXIT_OK = 0
EXIT_FAILURE = 1  # the command ran and something is wrong: a mirror down, apply failed
EXIT_USAGE = 2  # argparse's own: the command line is wrong (unknown flag, no such mirror)
EXIT_INVALID = 3  # the config is invalid (or its file is missing): nothing was changed


def _config_source(args: argparse.Namespace) -> tuple[str, bool]:
    """The config file a command reads, and whether its absence means the embedded default."""
    if args.config is not None:
        return args.config, False
    return args.config_if_exists or DEFAULT_CONFIG, True


def _root(args: argparse.Namespace) -> str:
    return args.root or paths.default_root()


def check_command(args: argparse.Namespace) -> int:
    """`check`: validate a config file and name its mirrors; a ConfigError lists every problem."""
    from registry_cache import config as configmod

    path, default_if_missing = _config_source(args)
    cfg = configmod.load(path, default_if_missing=default_if_missing)
    if cfg.source == configmod.EMBEDDED_DEFAULT:
        print(f"{path} does not exist: checking the embedded default")
    names = ", ".join(f"{m.name} (port {m.port} -> {m.upstream})" for m in cfg.mirrors)
    print(f"{cfg.source}: OK: {len(cfg.mirrors)} mirror(s): {names}")
    return 0


def apply_command(args: argparse.Namespace) -> int:
    """`apply` (or `apply --boot`): make the running mirrors match the config."""
    from registry_cache import apply as applymod
    from registry_cache import proc

    try:
        if args.boot:
            applymod.apply_at_boot(_root(args), sys.stdout)
        else:
            path, default_if_missing = _config_source(args)
            applymod.apply(path, _root(args), sys.stdout, dry_run=args.dry_run,
                           default_if_missing=default_if_missing)
    except (applymod.ApplyError, proc.CommandError, OSError) as exc:
        print(f"registry-cache apply: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return 0


def serve_command(args: argparse.Namespace) -> int:
    """`serve`: run the mirrors in the foreground until stopped."""
    from registry_cache.serve import Server

    path, default_if_missing = _config_source(args)
    server = Server(path, _root(args), sys.stderr, default_if_missing=default_if_missing)
    server.start()
    server.run_forever()
    return 0


def status_command(args: argparse.Namespace) -> int:
    """`status`: each mirror's health, mode and counters; exit 0 only when all are healthy."""
    from registry_cache import status

    if args.config is None and args.config_if_exists is None:
        statuses = status.collect(_root(args), rate_limit=args.rate_limit)
    else:
        from registry_cache import config as configmod

        path, default_if_missing = _config_source(args)
        cfg = configmod.load(path, check_storage=False, default_if_missing=default_if_missing)
        statuses = status.collect_config(cfg, _root(args), rate_limit=args.rate_limit)
    if args.json:
        print(json.dumps([s.as_dict() for s in statuses], indent=2))
    else:
        print(status.format_table(statuses))
    return EXIT_OK if statuses and all(s.healthy for s in statuses) else EXIT_FAILURE


def logs_command(args: argparse.Namespace) -> int:
    """`logs`: hand the terminal to journalctl for one mirror's logs or all of them."""
    from registry_cache import journal, record

    if not journal.available():
        print(f"registry-cache logs: {journal.ABSENT}", file=sys.stderr)
        return EXIT_FAILURE
    if args.mirror is not None:
        applied = [r.name for r in record.read_all(_root(args))]
        if args.mirror not in applied:
            print(f"registry-cache logs: no mirror '{args.mirror}' is applied "
                  f"(applied: {', '.join(applied) or 'none'})", file=sys.stderr)
            return EXIT_USAGE
    argv = journal.command(args.mirror, follow=args.follow, lines=args.lines)
    sys.stdout.flush()
    os.execvp(argv[0], argv)  # journalctl takes over the terminal (pager, -f, Ctrl-C)
    return EXIT_FAILURE  # not reached


def metrics_command(args: argparse.Namespace) -> int:
    """`metrics`: serve /metrics and /status where the last apply or serve said (or the flags)."""
    from registry_cache import metrics

    applied = metrics.MetricsSettings.read(_root(args))
    settings = metrics.MetricsSettings(listen=args.listen or applied.listen, port=args.port or applied.port)
    try:
        metrics.serve(_root(args), settings)
    except OSError as exc:
        print(f"registry-cache metrics: cannot listen on {settings.listen}:{settings.port}: "
              f"{exc.strerror or exc}; set metrics_port in config.yml to a free port", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def client_config_command(args: argparse.Namespace) -> int:
    """`client-config`: print or write the client setup for the mirrors."""
    from registry_cache import clientconfig

    found = _mirrors_and_ca(args, "client-config")
    if isinstance(found, int):
        return found
    mirrors, ca_pem, auth = found
    try:
        setup = clientconfig.client_setup(mirrors, args.host, args.format, ca_pem=ca_pem, auth=auth)
    except clientconfig.ClientConfigError as exc:
        print(f"registry-cache client-config: {exc}", file=sys.stderr)
        return EXIT_FAILURE if isinstance(exc, clientconfig.CaNotMadeError) else EXIT_USAGE
    if args.output_dir is not None:
        for path in setup.write(args.output_dir):
            print(path)
    else:
        sys.stdout.write(setup.text())
    for note in setup.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def _chosen_records(args: argparse.Namespace, command: str) -> Union[int, list]:
    """The applied mirrors a command works on (all, or the one named); else say why, return the exit code."""
    from registry_cache import record

    applied = record.read_all(_root(args))
    if not applied:
        print(f"registry-cache {command}: no mirror is applied under {_root(args)}; "
              "run `registry-cache apply` first", file=sys.stderr)
        return EXIT_FAILURE
    if args.mirror is None:
        return applied
    chosen = [r for r in applied if r.name == args.mirror]
    if not chosen:
        print(f"registry-cache {command}: no mirror '{args.mirror}' is applied "
              f"(applied: {', '.join(r.name for r in applied)})", file=sys.stderr)
        return EXIT_USAGE
    return chosen


def gc_command(args: argparse.Namespace) -> int:
    """`gc`: evict the least recently pulled images of mirrors above their max_size."""
    import time

    from registry_cache import shared
    from registry_cache.gc import GcError, flow
    from registry_cache.s3 import S3Error

    records = _chosen_records(args, "gc")
    if isinstance(records, int):
        return records
    keep = flow.DEFAULT_KEEP_RECENT if args.keep_recent is None else args.keep_recent
    # a stop (systemctl, vagrant halt) mid-run still withdraws gc's read-only request
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    begun = time.monotonic()
    # a mirror in a bucket other nodes share is collected for all of them, under the cluster hold
    buckets = {r.name: b for r in records if (b := shared.read(r.directory)) is not None}
    try:
        if buckets:
            from registry_cache import cluster
            from registry_cache.gc import bucket

            lease = float(os.environ.get("REGISTRY_CACHE_HOLD_LEASE", cluster.DEFAULT_LEASE))
            bucket.collect([r for r in records if r.name in buckets], buckets, sys.stdout,
                             dry_run=args.dry_run, keep_recent=keep, lease=lease)
        local = [r for r in records if r.name not in buckets]
        if local or not buckets:
            flow.enforce_caps(local, sys.stdout, dry_run=args.dry_run, keep_recent=keep)
    except (GcError, OSError, S3Error) as exc:
        print(f"registry-cache gc: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"gc {'planned' if args.dry_run else 'done'} in {time.monotonic() - begun:.1f} s")
    return 0


def warm_command(args: argparse.Namespace) -> int:
    """`warm`: pull each mirror's `warm:` images through it."""
    from registry_cache import warm

    records = _chosen_records(args, "warm")
    if isinstance(records, int):
        return records
    outcomes = warm.warm(records, lambda line: print(line, flush=True))
    if not outcomes:
        print("no mirror has a `warm:` list")
    return EXIT_FAILURE if any(o.failures for o in outcomes) else EXIT_OK


def _mirrors_and_ca(args: argparse.Namespace, command: str) -> Union[int, tuple[list, Optional[str], bool]]:
    """The mirrors clients see, the CA they trust and whether they log in: from --config or as applied.

    On a problem, say it and return the exit code instead.
    """
    from registry_cache import clientconfig, record, secure
    from registry_cache import config as configmod

    if args.config is not None:
        cfg = configmod.load(args.config, check_storage=False)
        ca_pem = secure.client_ca(cfg.tls) if cfg.tls is not None else None
        return clientconfig.mirrors_from_config(cfg), ca_pem, cfg.auth is not None
    root = _root(args)
    try:
        records = record.read_all(root)
        chosen = args.root or os.environ.get("REGISTRY_CACHE_ROOT")
        if not records and not chosen and root != paths.SYSTEM_ROOT:
            # an unprivileged user in the box (`vagrant ssh -c ...`): the mirrors apply rendered
            root = paths.SYSTEM_ROOT
            records = record.read_all(root)
        ca_pem = secure.applied_ca(records)
    except PermissionError:
        print(f"registry-cache {command}: cannot read the applied mirrors under {root}: "
              "run it with sudo, or give --config config.yml", file=sys.stderr)
        return EXIT_FAILURE
    if not records:
        print(f"registry-cache {command}: no mirror is applied under {root}; run "
              "`registry-cache apply` first, or give --config config.yml", file=sys.stderr)
        return EXIT_FAILURE
    return clientconfig.mirrors_from_records(records), ca_pem, any(r.client_auth for r in records)


def ca_command(args: argparse.Namespace) -> int:
    """`ca`: print the CA certificate clients trust the mirrors with."""
    found = _mirrors_and_ca(args, "ca")
    if isinstance(found, int):
        return found
    _mirrors, ca_pem, _auth = found
    if ca_pem is None:
        print("registry-cache ca: the mirrors serve plain HTTP (or their CA is not made yet: run "
              "`registry-cache apply`); set 'tls: auto' in config.yml", file=sys.stderr)
        return EXIT_FAILURE
    sys.stdout.write(ca_pem)
    return 0


def run_mirror_command(args: argparse.Namespace) -> int:
    """`run-mirror`: supervise one rendered mirror in the foreground (its systemd unit)."""
    from registry_cache.record import RecordError
    from registry_cache.runner import MirrorRunner

    directory = paths.mirror_dir(_root(args), args.name)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        runner = MirrorRunner(directory, stop)
    except FileNotFoundError:
        print(f"no mirror '{args.name}' is rendered under {directory}: run `registry-cache apply`",
              file=sys.stderr)
        return EXIT_FAILURE
    except RecordError as exc:
        print(f"{exc}; run `registry-cache apply` to render it again", file=sys.stderr)
        return EXIT_FAILURE
    runner.run()
    return 0
