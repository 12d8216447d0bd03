"""The `registry-cache` command: check, apply, serve, status, logs, metrics, client-config, ca, gc, warm.

And run-mirror, what each mirror's systemd unit runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from typing import Optional, Union

from registry_cache import __version__, paths

DEFAULT_CONFIG = "/vagrant/config.yml"
# Exit codes (README "Exit codes"; the --help epilog says the same).
EXIT_OK = 0
EXIT_FAILURE = 1  # the command ran and something is wrong: a mirror down, apply failed
EXIT_USAGE = 2  # argparse's own: the command line is wrong (unknown flag, no such mirror)
EXIT_INVALID = 3  # the config is invalid (or its file is missing): nothing was changed
EXIT_CODES_HELP = f"""\
exit codes:
  {EXIT_OK}  success (status: every mirror healthy)
  {EXIT_FAILURE}  failure: a mirror is down or did not start, journald is absent, ...
  {EXIT_USAGE}  usage error: unknown command or flag, no such mirror
  {EXIT_INVALID}  invalid config (or a --config file that does not exist); nothing was changed
"""

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
        return EXIT_USAGE
    try:
        return args.func(args)
    except Exception as exc:
        if not _is_config_error(exc):
            raise
        print(exc, file=sys.stderr)
        found = f"{len(exc.problems)} problem(s) found"
        if getattr(args, "changes_mirrors", False):
            found += "; nothing was changed: running mirrors keep serving and the cache stays"
        print(found + ".", file=sys.stderr)
        return EXIT_INVALID


def _is_config_error(exc: BaseException) -> bool:
    # the config module (and YAML with it) is imported only by the commands that read a
    # config: `status` and `run-mirror` start a third of a second sooner under TCG without it
    configmod = sys.modules.get("registry_cache.config")
    return configmod is not None and isinstance(exc, configmod.ConfigError)


def _parser() -> argparse.ArgumentParser:
    # The global options, accepted before and after the command (`status -v`, `apply --root R`).
    # Each parser gets actions of its own (argparse shares a parent's action objects), and a
    # command's default SUPPRESS keeps it from resetting what was given before the command.
    def global_options(parser: argparse.ArgumentParser, default: object) -> argparse.ArgumentParser:
        parser.add_argument("-v", "--verbose", action="store_true",
                            default=False if default is None else default, help="log debug details")
        parser.add_argument(
            "--root",
            default=default,
            help="where rendered mirror configs and the last good config live "
            "(default: $REGISTRY_CACHE_ROOT, /etc/registry-cache as root)",
        )
        return parser

    common = global_options(argparse.ArgumentParser(add_help=False), argparse.SUPPRESS)
    parser = global_options(argparse.ArgumentParser(
        prog="registry-cache",
        description="Pull-through cache for Docker/OCI images: one mirror per upstream registry.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ), None)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(metavar="COMMAND")

    def command(name: str, **kwargs: object) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kwargs)  # type: ignore[arg-type]

    check = command("check", help=f"validate a config file; exit 0, or {EXIT_INVALID} listing every problem")
    _config_arg(check)
    check.set_defaults(func=_check)

    apply = command("apply", help="make the running mirrors match the config")
    _config_arg(apply)
    apply.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    apply.add_argument(
        "--boot", action="store_true",
        help="start the mirrors of the last good config (used at boot, before /vagrant is mounted)",
    )
    apply.set_defaults(func=_apply, changes_mirrors=True)

    serve = command("serve", help="run the mirrors in the foreground (hosts without systemd)")
    _config_arg(serve)
    serve.set_defaults(func=_serve)

    status = command("status", help="show each mirror's health, mode, hits and misses")
    _config_arg(status, applied=True)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument(
        "--no-rate-limit", dest="rate_limit", action="store_false",
        help="do not ask Docker Hub for the remaining pull allowance",
    )
    status.set_defaults(func=_status)

    logs = command("logs", help="show the mirrors' logs from journald (journalctl)",
                   description="Show the logs of one mirror, or of every mirror and the metrics "
                   "endpoint, from journald.")
    logs.add_argument("mirror", nargs="?", default=None, help="one mirror's name (default: all)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument("-n", "--lines", type=int, default=200, help="how many past lines (default 200)")
    logs.set_defaults(func=_logs)

    metrics = command(
        "metrics", help="serve the Prometheus endpoint /metrics and /status JSON (what its unit runs)",
        description="Serve every applied mirror's health and counters: /metrics (Prometheus) and "
        "/status (JSON). Listens where the last apply said (config.yml's listen and metrics_port).",
    )
    metrics.add_argument("--listen", default=None, help="address to bind (default: the applied listen)")
    metrics.add_argument("--port", type=int, default=None,
                         help="port (default: the applied metrics_port, 9110 unless config.yml says)")
    metrics.set_defaults(func=_metrics)

    client = command(
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
    client.add_argument("--output-dir", default=None, metavar="DIR",
                        help="write the files (with the cache's CA) under DIR at their paths on the "
                        "client, ready to copy, instead of printing them")
    client.set_defaults(func=_client_config)

    ca = command("ca", help="print the CA certificate clients trust the mirrors with (TLS)",
                        description="Print the CA certificate (PEM) of the applied mirrors, or of "
                        "--config's tls: section. Never a key.")
    ca.add_argument("--config", default=None,
                    help="take the CA from this config file instead of the applied mirrors")
    ca.set_defaults(func=_ca)

    gc = command(
        "gc", help="evict the least recently pulled images of mirrors above their max_size",
        description="Evict the least recently pulled images of every mirror (or MIRROR) above 90 %% "
        "of its max_size (or the cache above 90 %% of the whole max_size) down to 80 %%, while the "
        "mirror serves read-only; print what it frees and how long it took.",
    )
    gc.add_argument("mirror", nargs="?", help="only this mirror")
    gc.add_argument("--dry-run", action="store_true", help="print what would be evicted, change nothing")
    gc.add_argument("--keep-recent", type=float, default=None, metavar="SECONDS",
                    help="never evict an image pulled within this many seconds (default 600)")
    gc.set_defaults(func=_gc)

    warm = command("warm", help="pull each mirror's `warm:` images through it, with progress")
    warm.add_argument("mirror", nargs="?", help="only this mirror")
    warm.set_defaults(func=_warm)

    run_mirror = command(
        "run-mirror", help="run one rendered mirror in the foreground (what its systemd unit runs)"
    )
    run_mirror.add_argument("name", help="the mirror's name in config.yml")
    run_mirror.set_defaults(func=_run_mirror)
    return parser


def _config_arg(parser: argparse.ArgumentParser, *, applied: bool = False) -> None:
    """--config FILE (must exist) or --config-if-exists FILE (missing: the embedded default)."""
    default = "the applied mirrors" if applied else \
        f"{DEFAULT_CONFIG}, or the embedded default when it does not exist"
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--config", default=None, metavar="FILE",
                       help=f"config file; it must exist (default: {default})")
    group.add_argument("--config-if-exists", default=None, metavar="FILE",
                       help="config file, or the embedded default (one Docker Hub mirror on "
                       "port 5000) when it does not exist")


def _config_source(args: argparse.Namespace) -> tuple[str, bool]:
    """The config file a command reads, and whether its absence means the embedded default."""
    if args.config is not None:
        return args.config, False
    return args.config_if_exists or DEFAULT_CONFIG, True


def _root(args: argparse.Namespace) -> str:
    return args.root or paths.default_root()


def _check(args: argparse.Namespace) -> int:
    from registry_cache import config as configmod

    path, default_if_missing = _config_source(args)
    cfg = configmod.load(path, default_if_missing=default_if_missing)
    if cfg.source == configmod.EMBEDDED_DEFAULT:
        print(f"{path} does not exist: checking the embedded default")
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
            path, default_if_missing = _config_source(args)
            applymod.apply(path, _root(args), sys.stdout, dry_run=args.dry_run,
                           default_if_missing=default_if_missing)
    except (applymod.ApplyError, proc.CommandError, OSError) as exc:
        print(f"registry-cache apply: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return 0


def _serve(args: argparse.Namespace) -> int:
    from registry_cache.serve import Server

    path, default_if_missing = _config_source(args)
    server = Server(path, _root(args), sys.stderr, default_if_missing=default_if_missing)
    server.start()
    server.run_forever()
    return 0


def _status(args: argparse.Namespace) -> int:
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


def _logs(args: argparse.Namespace) -> int:
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


def _metrics(args: argparse.Namespace) -> int:
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


def _client_formats() -> tuple[str, ...]:
    from registry_cache.clientconfig import FORMATS

    return FORMATS


def _client_config(args: argparse.Namespace) -> int:
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


def _gc(args: argparse.Namespace) -> int:
    import time

    from registry_cache import gc

    records = _chosen_records(args, "gc")
    if isinstance(records, int):
        return records
    keep = gc.DEFAULT_KEEP_RECENT if args.keep_recent is None else args.keep_recent
    # a stop (systemctl, vagrant halt) mid-run still withdraws gc's read-only request
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    begun = time.monotonic()
    try:
        gc.collect(records, sys.stdout, dry_run=args.dry_run, keep_recent=keep)
    except (gc.GcError, OSError) as exc:
        print(f"registry-cache gc: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"gc {'planned' if args.dry_run else 'done'} in {time.monotonic() - begun:.1f} s")
    return 0


def _warm(args: argparse.Namespace) -> int:
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


def _ca(args: argparse.Namespace) -> int:
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


def _run_mirror(args: argparse.Namespace) -> int:
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


if __name__ == "__main__":
    sys.exit(main())
