"""In the box the kernel holds a mirror's own port (an nftables redirect); its registry has no CAP_NET_ADMIN.

libvirt box only (the mirror is added through `vagrant provision`, as a team would). The
first mirror's port is the one endpoint's; a second mirror gets a port of its own, which its
unit's runner hands to the kernel (CAP_NET_ADMIN, nft, the nat modules loaded on demand under
ProtectKernelModules=). A pull from the test's namespace reaches it over the VM's private
network: through the prerouting redirect. The mirror is removed again at the end.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from box.wait import wait_until
from lab import images
from lab.boot import LIBVIRT_HOST_SIDE
from lab.machines import MIRROR_UNIT, config_yaml
from tests.box.boxes import SECOND_PORT, LibvirtVM

pytestmark = [pytest.mark.box, pytest.mark.destructive]

CAP_NET_ADMIN = 1 << 12


def _caps(machine, pid: int) -> dict[str, int]:
    """CapInh/CapPrm/CapEff/CapBnd/CapAmb of a process in the guest, as numbers."""
    text = machine.host.check_output(f"grep ^Cap /proc/{pid}/status")
    return {key: int(value, 16) for key, value in re.findall(r"^(Cap\w+):\s+([0-9a-f]+)", text, re.M)}


def test_a_mirrors_own_port_is_a_kernel_redirect_and_its_registry_has_no_cap_net_admin(
    libvirt_vm: LibvirtVM, lab, tmp_path: Path
):
    machine = libvirt_vm.machine
    project_config = libvirt_vm.project / "config.yml"
    before = project_config.read_text()
    config = yaml.safe_load(before)
    added = "second" not in config["mirrors"]
    config["mirrors"]["second"] = {
        "upstream": f"http://{LIBVIRT_HOST_SIDE}:{lab.second_upstream.port}",
        "port": SECOND_PORT,
    }
    try:
        if added:
            project_config.write_text(config_yaml(config))
            machine.outputs.append(libvirt_vm.vagrant("provision").output)
            machine.config = config
        machine.wait_all_serving()
        assert machine.host.service(MIRROR_UNIT.format("second")).is_running

        out = machine.ssh("registry-cache status --json --no-rate-limit")
        status = {m["name"]: m for m in json.loads(out)}
        assert status["second"]["handover"] == "kernel", status["second"]
        assert status["team"]["handover"] == "endpoint", status["team"]
        table = machine.host.check_output(f"nft list table inet registry_cache_{SECOND_PORT}")
        private = int(re.search(r"redirect to :(\d+)", table).group(1))
        journal = machine.host.check_output(f"journalctl -b -o cat -u {MIRROR_UNIT.format('second')}")
        assert f"the kernel holds port {SECOND_PORT}" in journal, journal[-2000:]

        # the runner holds CAP_NET_ADMIN (its unit's ambient set); its registry child none at all
        runner = int(machine.unit("second")["MainPID"])
        assert _caps(machine, runner)["CapAmb"] & CAP_NET_ADMIN
        children = machine.host.check_output(f"pgrep -P {runner} -f docker-registry").split()
        assert children, "the runner has no docker-registry child"
        for child in children:
            caps = _caps(machine, int(child))
            assert caps["CapAmb"] == caps["CapEff"] == caps["CapPrm"] == 0, caps
            assert f":{private}" in machine.host.check_output(
                f"tr '\\0' '\\n' < /proc/{child}/environ | grep ^REGISTRY_HTTP_ADDR=")

        # a pull from outside the VM, over its private network: through the prerouting redirect
        pulled = images.pull(lab.second_image.ref(machine.mirror_host("second")), tmp_path / "pull",
                             timeout=300)
        assert pulled.digest == lab.second_image.digest
    finally:
        if added:
            project_config.write_text(before)
            machine.outputs.append(libvirt_vm.vagrant("provision").output)
            machine.config = yaml.safe_load(before)
    if added:  # the mirror is gone: so is its table
        wait_until(lambda: machine.host.run(f"nft list table inet registry_cache_{SECOND_PORT}").rc != 0,
                   "the stopped mirror's nft table is still there", timeout=30, error=AssertionError,
                   detail=lambda: machine.host.run(
                       f"journalctl -b -o cat -u {MIRROR_UNIT.format('second')} | tail -60"
                   ).stdout)
