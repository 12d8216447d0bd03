"""The nftables tables mirrors' runners leave behind: a test session sweeps away those of runners gone.

A runner holds its mirror's port with a table `inet registry_cache_<port>` (handover/kernel.py)
and deletes it when it stops; one that is killed leaves it, and the table would send a later
test's connections for that port number to a registry long gone. A runner keeps its relay
listening on the port as long as it runs, so a table whose port nobody listens on is stale.
"""

from __future__ import annotations

import json
import shutil
import subprocess

from registry_cache.handover import kernel


def port_tables() -> dict[int, str]:
    """The runners' tables in this network namespace, by public port."""
    nft = shutil.which("nft")
    if nft is None:
        return {}
    done = subprocess.run([nft, "--json", "list", "tables"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {}
    tables: dict[int, str] = {}
    for item in json.loads(done.stdout or "{}").get("nftables", []):
        name = item.get("table", {}).get("name", "")
        suffix = name[len(kernel.TABLE_PREFIX):]
        if name.startswith(kernel.TABLE_PREFIX) and suffix.isdigit():
            tables[int(suffix)] = name
    return tables


def sweep_stale() -> list[str]:
    """Delete the tables whose port no runner listens on any more; return their names."""
    listening = kernel.listening_ports()
    removed = []
    for port, name in port_tables().items():
        if port not in listening:
            kernel.apply(kernel.plan_removal(port))
            removed.append(name)
    return removed
