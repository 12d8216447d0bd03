"""The `registry-cache` command: check, apply, serve, status, client-config, run-mirror."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from typing import Optional

from registry_cache import __version__, paths

DEFAULT_CONFIG = "/vagrant/config.yml"
EXIT_INVALID = 2

log = logging.getLogger("registry_cache")


def main(argv: Optional[list[str]] = None) -> int:
    """Run the registry-cache command line; return its exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_INVALID
    try:
        return args.func(args)
    except Exception as exc:
        if not _is_config_error(exc):
            raise
        print(exc, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) found; nothing was changed: running mirrors keep "
              "serving and the cache stays.", file=sys.stderr)
        return EXIT_INVALID


def _is_config_error(exc: BaseException) -> bool:
    # the config module (and YAML with it) is imported only by the commands that read a
    # config: `status` and `run-mirror` start a third of a second sooner under TCG without it
    configmod = sys.modules.get("registry_cache.config")
    return configmod is not None and isinstance(exc, configmod.ConfigError)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="registry-cache",
        description="Pull-through cache for Docker/OCI images: one mirror per upstream registry.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    parser.add_argument(
        "--root",
        default=None,
        help="where rendered mirror configs and the last good config live "
        "(default: $REGISTRY_CACHE_ROOT, /etc/registry-cache as root)",
    )
    sub = parser.add_subparsers(metavar="COMMAND")

    check = sub.add_parser("check", help="validate a config file; exit 0, or 2 listing every problem")
    _config_arg(check)
    check.set_defaults(func=_check)

    apply = sub.add_parser("apply", help="make the running mirrors match the config")
    _config_arg(apply)
    apply.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    apply.add_argument(
        "--boot", action="store_true",
        help="start the mirrors of the last good config (used at boot, before /vagrant is mounted)",
    )
    apply.set_defaults(func=_apply)

    serve = sub.add_parser("serve", help="run the mirrors in the foreground (hosts without systemd)")
    _config_arg(serve)
    serve.set_defaults(func=_serve)

    status = sub.add_parser("status", help="show each mirror's health, mode, hits and misses")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument(
        "--no-rate-limit", dest="rate_limit", action="store_false",
        help="do not ask Docker Hub for the remaining pull allowance",
    )
    status.set_defaults(func=_status)

    client = sub.add_parser(
        "client-config",
        help="print the setup that points Docker, containerd, k3s or podman at the mirrors",
        description="Print ready-to-paste client setup for the mirrors: from --config when given, "
        "else from the mirrors `apply` rendered under --root (what runs now). "
        "The files go to stdout, advice to stderr.",
    )
    client.add_argument("--host", required=True,
                        help="address clients reach the cache at, e.g. 192.168.56.50")
    client.add_argument("--format", default="docker", choices=_client_formats(),
                        help="client to configure (default: docker)")
    client.add_argument("--config", default=None,
                        help="take the mirrors from this config file instead of the applied ones")
    client.set_defaults(func=_client_config)

    run_mirror = sub.add_parser(
        "run-mirror", help="run one rendered mirror in the foreground (what its systemd unit runs)"
    )
    run_mirror.add_argument("name", help="the mirror's name in config.yml")
    run_mirror.set_defaults(func=_run_mirror)
    return parser


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", default=DEFAULT_CONFIG,
        help=f"config file (default {DEFAULT_CONFIG}; missing: the embedded default)",
    )


def _root(args: argparse.Namespace) -> str:
    return args.root or paths.default_root()


def _check(args: argparse.Namespace) -> int:
    from registry_cache import config as configmod

    cfg = configmod.load(args.config)
    names = ", ".join(f"{m.name} (port {m.port} -> {m.upstream})" for m in cfg.mirrors)
    print(f"{cfg.source}: OK: {len(cfg.mirrors)} mirror(s): {names}")
    return 0


def _apply(args: argparse.Namespace) -> int:
    from registry_cache import apply as applymod
    from registry_cache import proc

    try:
        if args.boot:
            applymod.apply_at_boot(_root(args), sys.stdout)
        else:
            applymod.apply(args.config, _root(args), sys.stdout, dry_run=args.dry_run)
    except (applymod.ApplyError, proc.CommandError, OSError) as exc:
        print(f"registry-cache apply: {exc}", file=sys.stderr)
        return 1
    return 0


def _serve(args: argparse.Namespace) -> int:
    from registry_cache.serve import Server

    server = Server(args.config, _root(args), sys.stderr)
    server.start()
    server.run_forever()
    return 0


def _status(args: argparse.Namespace) -> int:
    from registry_cache import status

    statuses = status.collect(_root(args), rate_limit=args.rate_limit)
    if args.json:
        print(json.dumps([s.as_dict() for s in statuses], indent=2))
    else:
        print(status.format_table(statuses))
    return 0 if statuses and all(s.healthy for s in statuses) else 1


def _client_formats() -> tuple[str, ...]:
    from registry_cache.clientconfig import FORMATS

    return FORMATS


def _client_config(args: argparse.Namespace) -> int:
    from registry_cache import clientconfig, record
    from registry_cache import config as configmod

    if args.config is not None:
        if not os.path.exists(args.config):
            print(f"registry-cache client-config: {args.config} does not exist", file=sys.stderr)
            return EXIT_INVALID
        mirrors = clientconfig.mirrors_from_config(configmod.load(args.config, check_storage=False))
    else:
        root = _root(args)
        try:
            mirrors = clientconfig.mirrors_from_records(record.read_all(root))
            chosen = args.root or os.environ.get("REGISTRY_CACHE_ROOT")
            if not mirrors and not chosen and root != paths.SYSTEM_ROOT:
                # an unprivileged user in the box (`vagrant ssh -c ...`): the mirrors apply rendered
                root = paths.SYSTEM_ROOT
                mirrors = clientconfig.mirrors_from_records(record.read_all(root))
        except PermissionError:
            print(f"registry-cache client-config: cannot read the applied mirrors under {root}: "
                  "run it with sudo, or give --config config.yml", file=sys.stderr)
            return EXIT_INVALID
        if not mirrors:
            print(f"registry-cache client-config: no mirror is applied under {root}; run "
                  "`registry-cache apply` first, or give --config config.yml", file=sys.stderr)
            return EXIT_INVALID
    try:
        setup = clientconfig.client_setup(mirrors, args.host, args.format)
    except clientconfig.ClientConfigError as exc:
        print(f"registry-cache client-config: {exc}", file=sys.stderr)
        return EXIT_INVALID
    sys.stdout.write(setup.text())
    for note in setup.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def _run_mirror(args: argparse.Namespace) -> int:
    from registry_cache.mirror import MirrorRunner
    from registry_cache.record import RecordError

    directory = paths.mirror_dir(_root(args), args.name)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        runner = MirrorRunner(directory, stop)
    except FileNotFoundError:
        print(f"no mirror '{args.name}' is rendered under {directory}: run `registry-cache apply`",
              file=sys.stderr)
        return EXIT_INVALID
    except RecordError as exc:
        print(f"{exc}; run `registry-cache apply` to render it again", file=sys.stderr)
        return EXIT_INVALID
    runner.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
