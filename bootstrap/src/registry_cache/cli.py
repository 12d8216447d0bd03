"""The `registry-cache` command: check, apply, serve, status, logs, metrics, client-config, ca, gc, warm.

And run-mirror, what each mirror's systemd unit runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional

from registry_cache import __version__, commands
from registry_cache.commands import (
    DEFAULT_CONFIG,
    EXIT_FAILURE,
    EXIT_INVALID,
    EXIT_OK,
    EXIT_USAGE,
)

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
    check.set_defaults(func=commands.check_command)

    apply = command("apply", help="make the running mirrors match the config")
    _config_arg(apply)
    apply.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    apply.add_argument(
        "--boot", action="store_true",
        help="start the mirrors of the last good config (used at boot, before /vagrant is mounted)",
    )
    apply.set_defaults(func=commands.apply_command, changes_mirrors=True)

    serve = command("serve", help="run the mirrors in the foreground (hosts without systemd)")
    _config_arg(serve)
    serve.set_defaults(func=commands.serve_command)

    status = command("status", help="show each mirror's health, mode, hits and misses")
    _config_arg(status, applied=True)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument(
        "--no-rate-limit", dest="rate_limit", action="store_false",
        help="do not ask Docker Hub for the remaining pull allowance",
    )
    status.set_defaults(func=commands.status_command)

    logs = command("logs", help="show the mirrors' logs from journald (journalctl)",
                   description="Show the logs of one mirror, or of every mirror and the metrics "
                   "endpoint, from journald.")
    logs.add_argument("mirror", nargs="?", default=None, help="one mirror's name (default: all)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument("-n", "--lines", type=int, default=200, help="how many past lines (default 200)")
    logs.set_defaults(func=commands.logs_command)

    metrics = command(
        "metrics", help="serve the Prometheus endpoint /metrics and /status JSON (what its unit runs)",
        description="Serve every applied mirror's health and counters: /metrics (Prometheus) and "
        "/status (JSON). Listens where the last apply said (config.yml's listen and metrics_port).",
    )
    metrics.add_argument("--listen", default=None, help="address to bind (default: the applied listen)")
    metrics.add_argument("--port", type=int, default=None,
                         help="port (default: the applied metrics_port, 9110 unless config.yml says)")
    metrics.set_defaults(func=commands.metrics_command)

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
    client.set_defaults(func=commands.client_config_command)

    ca = command("ca", help="print the CA certificate clients trust the mirrors with (TLS)",
                        description="Print the CA certificate (PEM) of the applied mirrors, or of "
                        "--config's tls: section. Never a key.")
    ca.add_argument("--config", default=None,
                    help="take the CA from this config file instead of the applied mirrors")
    ca.set_defaults(func=commands.ca_command)

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
    gc.set_defaults(func=commands.gc_command)

    warm = command("warm", help="pull each mirror's `warm:` images through it, with progress")
    warm.add_argument("mirror", nargs="?", help="only this mirror")
    warm.set_defaults(func=commands.warm_command)

    run_mirror = command(
        "run-mirror", help="run one rendered mirror in the foreground (what its systemd unit runs)"
    )
    run_mirror.add_argument("name", help="the mirror's name in config.yml")
    run_mirror.set_defaults(func=commands.run_mirror_command)
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


def _client_formats() -> tuple[str, ...]:
    from registry_cache.clientconfig import FORMATS

    return FORMATS


if __name__ == "__main__":
    sys.exit(main())
