"""Chooses the Debian mirror and the HTTP proxy the base disk is built through (as this machine's apt)."""

from __future__ import annotations

import os
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Callable

from box.run import output


def apt_mirrors(sources: Iterable[str]) -> list[str]:
    """Return the Debian archive URLs (not security) found in apt sources texts, in order."""
    found: list[str] = []
    for text in sources:
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            urls: list[str] = []
            one_line = re.match(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)", line)
            if one_line:
                urls = [one_line.group(1)]
            elif line.lower().startswith("uris:"):
                urls = line.split(":", 1)[1].split()
            for url in urls:
                url = url.rstrip("/")
                if url.startswith("http") and url.endswith("/debian") and url not in found:
                    found.append(url)
    return found


def host_apt_mirrors() -> list[str]:
    """Return the Debian mirrors this machine's apt uses (/etc/apt/sources.list*)."""
    paths = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    texts = [p.read_text(errors="replace") for p in paths if p.is_file()]
    return apt_mirrors(texts)


def mirror_reachable(mirror: str, suite: str, timeout: float = 5.0) -> bool:
    """Tell whether the mirror serves the suite's Release file (through http_proxy if set)."""
    url = f"{mirror.rstrip('/')}/dists/{suite}/Release"
    request = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return 200 <= response.status < 400
    except (urllib.error.URLError, OSError, ValueError):
        return False


def choose_mirror(
    configured: str,
    suite: str,
    candidates: Iterable[str],
    reachable: Callable[[str, str], bool] = mirror_reachable,
) -> str | None:
    """Return the configured mirror if reachable, else the first reachable candidate, or None."""
    for mirror in dict.fromkeys([configured, *candidates]):
        if reachable(mirror, suite):
            return mirror
    return None


def apt_proxy() -> str:
    """Return apt's configured HTTP proxy (Acquire::http::Proxy) or ''."""
    if shutil.which("apt-config") is None:
        return ""
    text = output(["apt-config", "shell", "PROXY", "Acquire::http::Proxy"], check=False)
    match = re.match(r"^PROXY='(.*)'$", text)
    return match.group(1) if match else ""


def proxy_env() -> dict[str, str]:
    """Return the environment for debootstrap and apt: http_proxy from the env or from apt."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C.UTF-8"}
    if not env.get("http_proxy"):
        proxy = env.get("HTTP_PROXY") or apt_proxy()
        if proxy:
            env["http_proxy"] = proxy
    return env
