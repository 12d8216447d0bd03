"""Benchmark of the box against a bare box: power-on to ready, `vagrant up`, and their ratio.

Prints its figures; asserts nothing. Run as root from the repo root, after `./invoke build-box`:

    .venv/bin/python -m bench.boot_to_ready [--dist dist] [--memory 512] [--no-vagrant] [--explain]
        [--arch arm64]

The anchor is a bare box (bench/bare_box.py): the base disk build-box starts from, with no
agent and no mirror, packaged the way Packer packages the appliance, with the same box
Vagrantfile. Both run side by side in one run, in a network namespace of their own
(lab/netns.py), like `test-box`, with the same boot steps (lab/boot.py).

For each disk (the libvirt box's qcow2 with virtio, the VirtualBox box's VMDK with AHCI +
E1000, both in QEMU with the accelerator that really works here), a first boot applies a
two-mirror config with its cache on the VM's disk and powers off; the second boot is timed:
power-on -> sshd greets, and power-on -> every mirror answers `GET /v2/` on its forwarded
port ("ready"). The bare disk boots twice too, under both presentations; it is ready when
sshd greets (it has nothing else to start). The timed boot runs with `--memory` MiB, and
the guest's memory is read once it has idled. Then `vagrant box add` + `vagrant up` of both
libvirt boxes with the drop-in Vagrantfile (the bare one `--no-provision`: it has no agent),
and `vagrant provision` of the appliance with nothing changed. `--explain` prints where the
timed boots spent their time (systemd-analyze, the kernel's own timestamps).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench import bare_box
from box import arch as arches
from box import emulation
from box.buildinfo import BuildMetadata, load_build_metadata
from box.qemu import choose_accelerator
from box.wait import WaitTimeout, wait_until
from lab import boot, netns
from lab.machines import Machine
from lab.procs import v2_status
from lab.qemuvm import BoxMachine, read_box, read_libvirt_box, unpack_box
from lab.registry import start_registry

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SSH_PORT = 2222
MIRROR_PORTS = (5000, 5001)
TARGETS = {"boot_to_ready_s": 20.0, "vagrant_up_s": 60.0, "vagrant_provision_s": 5.0, "ratio": 1.5}
# where a timed boot went, read in the guest (--explain)
EXPLAIN = (
    "systemd-analyze time",
    "systemd-analyze critical-chain {unit}",
    "systemd-analyze blame --no-pager | head -n 15",
    "dmesg | grep -E 'Run /init|Freeing unused kernel|EXT4-fs|Linux version' | head -n 12",
)


def answers_v2(port: int) -> bool:
    """Whether a mirror answers `GET /v2/` with 200 on its forwarded port."""
    return v2_status(f"http://127.0.0.1:{port}") == 200


def explain(guest: Machine, unit: str) -> str:
    """What the guest says about its last boot: systemd-analyze and the kernel's timestamps."""
    parts = []
    for command in EXPLAIN:
        command = command.format(unit=unit)
        parts.append(f"$ {command}\n{guest.ssh('sudo sh -c ' + repr(command), check=False)}")
    return "\n".join(parts)


def bench_disk(label: str, machine: BoxMachine, work: Path, accel: str, upstream_port: int,
               memory: int, *, want_explain: bool = False) -> dict:
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
        ready: set[int] = set()

        def all_ready() -> bool:
            ready.update(p for p in MIRROR_PORTS if p not in ready and answers_v2(p))
            return len(ready) == len(MIRROR_PORTS)

        with contextlib.suppress(WaitTimeout):  # the figures say which mirrors never answered
            wait_until(all_ready, "every mirror answering /v2/",
                       timeout=vm.powered_on + 600 - time.monotonic(), interval=0.2)
        figures["boot_to_ready_s"] = time.monotonic() - vm.powered_on
        figures["all_mirrors_ready"] = len(ready) == len(MIRROR_PORTS)
        figures["boot_ssh_s"] = vm.wait_for_ssh(SSH_PORT)
        guest.wait_for_ssh()
        if want_explain:
            figures["explain"] = explain(guest, f"registry-cache-mirror@m{MIRROR_PORTS[-1]}.service")
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


def bench_bare_disk(label: str, machine: BoxMachine, work: Path, accel: str, memory: int, *,
                    want_explain: bool = False) -> dict:
    """The bare disk: a first boot, then the timed second one (ready = sshd greets)."""
    work.mkdir(parents=True, exist_ok=True)
    qemu = boot.QemuBox.prepare(label, work, machine, accel, ssh_port=SSH_PORT, ports={},
                                config={"mirrors": {}})
    vm, guest = qemu.vm, qemu.guest
    figures: dict = {"disk": label}
    try:
        figures["first_boot_ssh_s"] = qemu.boot()
        guest.ssh("sudo systemctl poweroff", check=False)
        vm.wait_exit(timeout=180)
        vm.machine = replace(machine, memory_mib=memory)
        vm.start(fresh=False)
        figures["boot_to_ready_s"] = figures["boot_ssh_s"] = vm.wait_for_ssh(SSH_PORT)
        if want_explain:
            guest.wait_for_ssh()
            figures["explain"] = explain(guest, "ssh.service")
    finally:
        vm.stop()
    return figures


def bench_vagrant(meta: BuildMetadata, dist: Path, work: Path, ns: netns.NetworkNamespace, accel: str,
                  upstream_port: int, *, provision: bool = True) -> dict:
    """`vagrant box add` + `vagrant up` of a libvirt box with the drop-in Vagrantfile.

    `provision`: the appliance's own provisioner runs at `up`, then `vagrant provision` with
    nothing changed is timed; without (the bare box has no agent), `up --no-provision`.
    """
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
        added.vagrant("up", "--provider=libvirt", *(() if provision else ("--no-provision",)))
        figures["vagrant_up_s"] = time.monotonic() - start
        if provision:
            start = time.monotonic()
            added.vagrant("provision")
            figures["vagrant_provision_s"] = time.monotonic() - start
        start = time.monotonic()
        added.vagrant("destroy", "--force")
        figures["vagrant_destroy_s"] = time.monotonic() - start
    return figures


def _brief(figures: dict) -> str:
    """One run's figures on one line, printed as soon as they are known."""
    return ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in figures.items() if k != "explain")


def _target(key: str, value: float) -> str:
    limit = TARGETS.get(key)
    if limit is None:
        return ""
    return f" (target <= {limit:g}{'x' if key == 'ratio' else ' s'}{'' if value <= limit else ': MISSED'})"


def report(meta: BuildMetadata, accel: str, appliance: list[dict], bare: list[dict],
           vagrant: dict, bare_vagrant: dict) -> str:
    """The side-by-side table: each figure of the appliance, of the bare box, and their ratio."""
    lines = [f"box {meta.name} {meta.version} ({meta.git_revision[:12]}) against the bare base "
             f"disk, accelerator {accel}, {os.cpu_count()} host cores",
             f"  {'':34} {'appliance':>10} {'bare':>8} {'ratio':>6}"]
    bare_by_disk = {b["disk"]: b for b in bare}
    for r in appliance:
        b = bare_by_disk.get(r["disk"], {})
        ready, anchor = r["boot_to_ready_s"], b.get("boot_to_ready_s")
        ratio = ready / anchor if anchor else None
        verdict = "" if r["all_mirrors_ready"] else " NOT READY"
        lines.append(f"  {r['disk'] + ' disk: power-on -> ready':34} {ready:9.1f}s "
                     f"{anchor or 0:7.1f}s {ratio or 0:5.2f}x{verdict}"
                     + _target("boot_to_ready_s", ready) + (_target("ratio", ratio) if ratio else ""))
        lines.append(f"  {'   power-on -> sshd':34} {r['boot_ssh_s']:9.1f}s {b.get('boot_ssh_s', 0):7.1f}s")
        lines.append(f"  {'   first boot -> sshd':34} {r['first_boot_ssh_s']:9.1f}s "
                     f"{b.get('first_boot_ssh_s', 0):7.1f}s; first apply {r['first_apply_s']:.1f} s")
        lines.append(f"  {'   idle in ' + str(r['memory_mib']) + ' MiB':34} used {r['guest_used_mib']} MiB, "
                     f"available {r['guest_available_mib']} MiB; mirror units "
                     f"{r['mirror_unit_memory_mib']} MiB; modes {r['modes']}")
    for key in ("vagrant_box_add_s", "vagrant_up_s", "vagrant_provision_s", "vagrant_destroy_s"):
        if key not in vagrant:
            continue
        value, anchor = vagrant[key], bare_vagrant.get(key)
        ratio = value / anchor if anchor else None
        extra = _target(key, value) + (_target("ratio", ratio) if ratio and key == "vagrant_up_s" else "")
        anchor_text = f"{anchor:7.1f}s {ratio:5.2f}x" if ratio else f"{'-':>8} {'':>6}"
        lines.append(f"  {key.removesuffix('_s').replace('_', ' '):34} {value:9.1f}s {anchor_text}{extra}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", default="dist", help="folder with build.json and the boxes")
    parser.add_argument("--base", default="", help="the base disk of the bare box "
                        "(default: build/base/, the one build-box used)")
    parser.add_argument("--memory", type=int, default=512, help="guest MiB for the timed boot")
    parser.add_argument("--no-vagrant", action="store_true", help="skip the vagrant figures")
    parser.add_argument("--arch", default=arches.DEFAULT, choices=list(arches.ARCHITECTURES),
                        help="the boxes of this architecture (arm64: the libvirt box, booted "
                        "in qemu-system-aarch64 with UEFI; no vagrant figures unless native)")
    parser.add_argument("--explain", action="store_true",
                        help="print where each timed boot spent its time (systemd-analyze, dmesg)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root (network namespace, libvirtd)", file=sys.stderr)
        return 2
    dist = Path(args.dist).resolve()
    meta = load_build_metadata(dist / "build.json")
    architecture = arches.get(args.arch)
    boxes = [b for b in meta.boxes if b.architecture == architecture.name]
    if not boxes:
        print(f"{dist}/build.json has no {architecture.name} box: build it with "
              f"`./invoke build-box --arch {architecture.name}`", file=sys.stderr)
        return 2
    # another architecture's guest runs emulated, whatever KVM this machine has
    accel = choose_accelerator() if emulation.native(architecture) else "tcg"
    # vagrant-libvirt here runs amd64 guests; an emulated arm64 domain is a separate experiment
    want_vagrant = not args.no_vagrant and architecture.name == arches.DEFAULT
    appliance: list[dict] = []
    bare: list[dict] = []
    vagrant: dict = {}
    bare_vagrant: dict = {}
    netns.remove_stale()
    ns = netns.NetworkNamespace.create()
    work = Path(tempfile.mkdtemp(prefix="bench-boot-", dir=PROJECT_ROOT / "build"))
    try:
        anchor = bare_box.build(bare_box.base_disk(PROJECT_ROOT / "build", args.base,
                                                   architecture.name),
                                work / "bare", meta.version, arch=architecture.name)
        with ns.entered():
            upstream = start_registry(work / "upstream", "upstream", bind_host="0.0.0.0")
            try:
                for box in boxes:
                    unpacked = unpack_box(dist / box.file, work / box.provider / "box")
                    if box.provider == "virtualbox":
                        machine = read_box(unpacked)
                    else:
                        machine = read_libvirt_box(unpacked)
                    appliance.append(bench_disk(box.provider, machine, work / box.provider, accel,
                                                upstream.port, args.memory, want_explain=args.explain))
                    print(f"==> appliance, {box.provider} disk: {_brief(appliance[-1])}", flush=True)
                    shutil.rmtree(unpacked, ignore_errors=True)
                    # the same base disk, presented as that provider presents the box's
                    presented = replace(machine, disk=anchor.disk, disk_format="qcow2")
                    bare.append(bench_bare_disk(box.provider, presented, work / f"bare-{box.provider}",
                                                accel, args.memory, want_explain=args.explain))
                    print(f"==> bare box, {box.provider} disk: {_brief(bare[-1])}", flush=True)
                if want_vagrant:
                    bare_vagrant = bench_vagrant(anchor.meta, anchor.dist, work / "bare-vagrant", ns,
                                                 accel, upstream.port, provision=False)
                    print(f"==> bare box, vagrant: {_brief(bare_vagrant)}", flush=True)
                    vagrant = bench_vagrant(meta, dist, work / "vagrant", ns, accel, upstream.port)
                    print(f"==> appliance, vagrant: {_brief(vagrant)}", flush=True)
            finally:
                upstream.stop()
    finally:
        ns.delete()
        shutil.rmtree(work, ignore_errors=True)
    if args.explain:
        for label, runs in (("appliance", appliance), ("bare", bare)):
            for r in runs:
                print(f"\n### where the timed boot went: {label}, {r['disk']} disk\n{r.get('explain', '')}")
    print("\n" + report(meta, accel, appliance, bare, vagrant, bare_vagrant))
    return 0


if __name__ == "__main__":
    sys.exit(main())
