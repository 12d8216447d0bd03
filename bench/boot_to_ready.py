"""Benchmark of the box: power-on to every mirror answering /v2/, `vagrant up` time, idle memory.

Prints its figures; asserts nothing. Run as root from the repo root, after `./invoke build-box`:

    .venv/bin/python -m bench.boot_to_ready [--dist dist] [--memory 512] [--no-vagrant]

Everything runs inside a network namespace of its own (lab/netns.py), like `test-box`,
with the same boot steps (lab/boot.py):
an upstream registry, the VMs, libvirtd. For each disk (the libvirt box's qcow2 with virtio,
the VirtualBox box's VMDK with AHCI + E1000, both in QEMU with the accelerator that really
works here), a first boot applies a two-mirror config with its cache on the VM's disk and
powers off; the second boot is timed: power-on -> sshd greets, and power-on -> every
mirror answers `GET /v2/` on its forwarded port. That boot runs with `--memory` MiB (the
target: the box is comfortable in 512), and the guest's memory is read once it has idled.
Then `vagrant box add` and `vagrant up` of the libvirt box with the drop-in Vagrantfile.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from box.buildinfo import BuildMetadata, load_build_metadata
from box.qemu import choose_accelerator
from lab import boot, netns
from lab.procs import http_status
from lab.qemuvm import BoxMachine, libvirt_machine, read_box, unpack_box
from lab.registry import start_registry

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SSH_PORT = 2222
MIRROR_PORTS = (5000, 5001)


def answers_v2(port: int) -> bool:
    """Whether a mirror answers `GET /v2/` with 200 on its forwarded port."""
    return http_status(f"http://127.0.0.1:{port}/v2/") == 200


def bench_disk(label: str, machine: BoxMachine, work: Path, accel: str, upstream_port: int,
               memory: int) -> dict:
    """Boot once to apply a config, then time the second boot; return the figures."""
    config = {
        "listen": "0.0.0.0",
        "storage": "/var/lib/registry-cache-bench",
        "mirrors": {f"m{p}": {"upstream": f"http://{boot.QEMU_NAT_HOST}:{upstream_port}", "port": p}
                    for p in MIRROR_PORTS},
    }
    qemu = boot.QemuBox.prepare(label, work, machine, accel, ssh_port=SSH_PORT,
                                ports={p: p for p in MIRROR_PORTS}, config=config)
    vm, guest = qemu.vm, qemu.guest
    figures: dict = {"disk": label}
    try:
        figures["first_boot_ssh_s"] = qemu.boot()
        start = time.monotonic()
        boot.apply_config(guest, "/srv/bench", config, {})
        figures["first_apply_s"] = time.monotonic() - start
        guest.ssh("sudo systemctl poweroff", check=False)
        vm.wait_exit(timeout=180)

        vm.machine = replace(machine, memory_mib=memory)
        vm.start(fresh=False)
        ready = set()
        deadline = vm.powered_on + 600
        while len(ready) < len(MIRROR_PORTS) and time.monotonic() < deadline:
            ready |= {p for p in MIRROR_PORTS if p not in ready and answers_v2(p)}
            time.sleep(0.2)
        figures["boot_to_ready_s"] = time.monotonic() - vm.powered_on
        figures["all_mirrors_ready"] = len(ready) == len(MIRROR_PORTS)
        figures["boot_ssh_s"] = vm.wait_for_ssh(SSH_PORT)
        guest.wait_for_ssh()
        time.sleep(30)  # let the boot settle before reading memory
        free = guest.ssh("free -m").split()
        figures["memory_mib"] = memory
        figures["guest_used_mib"] = int(free[free.index("Mem:") + 2])
        figures["guest_available_mib"] = int(free[free.index("Mem:") + 6])
        status = json.loads(guest.ssh("sudo registry-cache status --json --no-rate-limit"))
        figures["modes"] = {m["name"]: m["mode"] for m in status}
        units = guest.ssh("systemctl show -p MemoryCurrent "
                          + " ".join(f"registry-cache-mirror@m{p}.service" for p in MIRROR_PORTS))
        figures["mirror_unit_memory_mib"] = [
            round(int(v) / 2**20, 1) for v in
            (line.split("=", 1)[1] for line in units.splitlines() if "=" in line) if v.isdigit()]
    finally:
        vm.stop()
    return figures


def bench_vagrant(meta: BuildMetadata, dist: Path, work: Path, ns: netns.NetworkNamespace, accel: str,
                  upstream_port: int) -> dict:
    """`vagrant box add` + `vagrant up` of the libvirt box with the drop-in Vagrantfile."""
    config = {
        "listen": "0.0.0.0", "storage": "/vagrant/data",
        "mirrors": {"team": {"upstream": f"http://{boot.LIBVIRT_HOST_SIDE}:{upstream_port}",
                             "port": 5000}},
    }
    project = boot.drop_in_project(work / "project", config, {})
    figures: dict = {}
    with boot.libvirt_box_added(work, project, ns, meta, dist, accel) as added:
        figures["vagrant_box_add_s"] = added.box_add_seconds
        start = time.monotonic()
        added.vagrant("up", "--provider=libvirt")
        figures["vagrant_up_s"] = time.monotonic() - start
        start = time.monotonic()
        added.vagrant("destroy", "--force")
        figures["vagrant_destroy_s"] = time.monotonic() - start
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", default="dist", help="folder with build.json and the boxes")
    parser.add_argument("--memory", type=int, default=512, help="guest MiB for the timed boot")
    parser.add_argument("--no-vagrant", action="store_true", help="skip the vagrant up figure")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root (network namespace, libvirtd)", file=sys.stderr)
        return 2
    dist = Path(args.dist).resolve()
    meta = load_build_metadata(dist / "build.json")
    accel = choose_accelerator()
    results = []
    netns.remove_stale()
    ns = netns.NetworkNamespace.create()
    work = Path(tempfile.mkdtemp(prefix="bench-boot-", dir=PROJECT_ROOT / "build"))
    try:
        with ns.entered():
            upstream = start_registry(work / "upstream", "upstream", bind_host="0.0.0.0")
            try:
                for box in meta.boxes:
                    unpacked = unpack_box(dist / box.file, work / box.provider / "box")
                    if box.provider == "virtualbox":
                        machine = read_box(unpacked)
                    else:
                        machine = libvirt_machine(unpacked / "box.img")
                    results.append(bench_disk(box.provider, machine, work / box.provider, accel,
                                              upstream.port, args.memory))
                    shutil.rmtree(unpacked, ignore_errors=True)
                vagrant = {} if args.no_vagrant else bench_vagrant(meta, dist, work / "vagrant", ns,
                                                                   accel, upstream.port)
            finally:
                upstream.stop()
    finally:
        ns.delete()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nbox {meta.name} {meta.version} ({meta.git_revision[:12]}), accelerator {accel}, "
          f"{os.cpu_count()} host cores")
    for r in results:
        verdict = "" if r["all_mirrors_ready"] else " NOT READY"
        print(f"  {r['disk']:>10} disk: power-on -> every mirror answers /v2/ "
              f"{r['boot_to_ready_s']:.1f} s (target <= 20 s){verdict}; "
              f"sshd {r['boot_ssh_s']:.1f} s; first boot sshd {r['first_boot_ssh_s']:.1f} s, "
              f"first apply {r['first_apply_s']:.1f} s")
        print(f"  {'':>10}       idle in {r['memory_mib']} MiB: used {r['guest_used_mib']} MiB, "
              f"available {r['guest_available_mib']} MiB; mirror units {r['mirror_unit_memory_mib']} MiB; "
              f"modes {r['modes']}")
    for key, value in vagrant.items():
        print(f"  {key}: {value:.1f} s" + (" (target <= 45 s)" if key == "vagrant_up_s" else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
