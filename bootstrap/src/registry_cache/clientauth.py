"""Client authentication: the htpasswd file (bcrypt) Distribution checks every client against.

Users come from config.yml's `auth.users`: a bcrypt hash made elsewhere, or a password file
the agent hashes. bcrypt salts every hash, so a password already hashed in the previous file
keeps its hash (checked with bcrypt): an apply with the same users writes the same file, and
no mirror restarts for nothing. Passwords never reach a log, an error or a repr.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

# Distribution checks the hash on every request (a pull is one per blob): cost 10 keeps that
# near 50 ms on a small box, well above htpasswd -B's default of 5.
BCRYPT_ROUNDS = 10
BCRYPT_HASH = re.compile(r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$")
REALM = "registry-cache"


@dataclass(frozen=True)
class ClientUser:
    """One account clients log in to the mirrors with: a bcrypt hash, or a password to hash."""

    name: str
    bcrypt_hash: Optional[str] = field(default=None, repr=False)
    password: Optional[str] = field(default=None, repr=False)


def hash_problem(text: str) -> Optional[str]:
    """Say why `text` is not a bcrypt hash Distribution accepts (never echoing it), or None."""
    if BCRYPT_HASH.match(text):
        return None
    return ("is not a bcrypt hash ($2y$ / $2b$, 60 characters); make one with "
            "`htpasswd -nB USER` or put the password in password_file instead")


def _previous_hashes(text: Optional[str]) -> dict[str, str]:
    hashes = {}
    for line in (text or "").splitlines():
        user, sep, hashed = line.partition(":")
        if sep:
            hashes[user] = hashed
    return hashes


def _same_password(password: str, hashed: Optional[str]) -> bool:
    import bcrypt

    if not hashed or not BCRYPT_HASH.match(hashed):
        return False
    try:
        return bcrypt.checkpw(password.encode(), hashed.encode())
    except ValueError:
        return False


def htpasswd_text(users: Sequence[ClientUser], previous: Optional[str] = None) -> str:
    """The htpasswd file for `users`, keeping each unchanged password's hash from `previous`."""
    import bcrypt

    old = _previous_hashes(previous)
    lines = []
    for user in users:
        if user.bcrypt_hash is not None:
            hashed = user.bcrypt_hash
        elif user.password is not None and _same_password(user.password, old.get(user.name)):
            hashed = old[user.name]
        elif user.password is not None:
            hashed = bcrypt.hashpw(user.password.encode(), bcrypt.gensalt(BCRYPT_ROUNDS)).decode()
        else:
            continue
        lines.append(f"{user.name}:{hashed}")
    return "\n".join(lines) + "\n"
