"""Invoke task modules, one per concern; tasks.py at the top assembles them."""

from invoke.exceptions import Exit

from box import deps


def ensure_packages(*groups: str) -> None:
    """Install the Debian packages the named groups need, or exit saying how to get them."""
    try:
        deps.ensure(*groups)
    except deps.MissingPackagesError as exc:
        raise Exit(str(exc)) from None
