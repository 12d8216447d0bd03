"""The base disk's inputs: mirror choice, cache key, extlinux config."""

import dataclasses

from box import aptmirror, base_image

SOURCES_ONE_LINE = """\
# a comment
deb http://mirror.example/debian bookworm main
deb [arch=amd64] http://mirror.example/debian-security bookworm-security main
deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main
"""
SOURCES_DEB822 = """\
Types: deb
URIs: http://deb.debian.org/debian/
Suites: bookworm bookworm-updates

Types: deb
URIs: http://deb.debian.org/debian-security
"""


def test_apt_mirrors_finds_debian_archives_in_both_formats_and_skips_security():
    found = aptmirror.apt_mirrors([SOURCES_ONE_LINE, SOURCES_DEB822])
    assert found == ["http://mirror.example/debian", "http://deb.debian.org/debian"]


def test_configured_mirror_wins_when_reachable():
    chosen = aptmirror.choose_mirror("http://a/debian", "bookworm", ["http://b/debian"],
                                     reachable=lambda mirror, suite: True)
    assert chosen == "http://a/debian"


def test_unreachable_mirror_falls_back_to_the_hosts_apt_mirror():
    chosen = aptmirror.choose_mirror("http://a/debian", "bookworm", ["http://b/debian"],
                                     reachable=lambda mirror, suite: mirror == "http://b/debian")
    assert chosen == "http://b/debian"


def test_no_reachable_mirror_gives_none():
    assert aptmirror.choose_mirror("http://a/debian", "bookworm", [],
                                   reachable=lambda mirror, suite: False) is None


def test_cache_key_is_stable_and_changes_with_every_input():
    spec = base_image.BaseImageSpec()
    assert spec.key() == base_image.BaseImageSpec().key()
    changed = [
        dataclasses.replace(spec, suite="trixie"),
        dataclasses.replace(spec, mirror="http://other/debian"),
        dataclasses.replace(spec, packages=(*spec.packages, "vim")),
        dataclasses.replace(spec, assets={**spec.assets, "base-image-setup.sh": "echo changed"}),
        dataclasses.replace(spec, builder="another way of making the disk"),
    ]
    assert len({spec.key(), *(c.key() for c in changed)}) == 1 + len(changed)


def test_image_path_names_suite_and_key(tmp_path):
    spec = base_image.BaseImageSpec()
    path = base_image.image_path(tmp_path, spec)
    assert path == tmp_path / "base" / f"debian-bookworm-{spec.key()}.raw"


def test_base_packages_carry_what_the_box_needs():
    needed = {"linux-image-amd64", "openssh-server", "sudo", "rsync", "docker-registry",
              "python3-pip", "python3-yaml", "python3-jinja2", "python3-requests",
              "python3-jsonschema", "python3-aiohttp", "python3-prometheus-client",
              "python3-cryptography", "python3-bcrypt", "systemd-sysv", "ca-certificates", "curl"}
    assert needed <= set(base_image.BASE_PACKAGES)


def test_extlinux_config_boots_the_kernel_by_root_uuid_on_the_serial_console():
    spec = base_image.BaseImageSpec()
    text = base_image.render_extlinux(spec.assets["extlinux.conf.j2"], kernel="/boot/vmlinuz-6",
                                      initrd="/boot/initrd.img-6", root_uuid="1234",
                                      cmdline=spec.kernel_cmdline, timeout=1)
    assert "LINUX /boot/vmlinuz-6" in text
    assert "INITRD /boot/initrd.img-6" in text
    assert "root=UUID=1234" in text
    assert "console=ttyS0" in text
    assert "TIMEOUT 1" in text


def test_vagrant_keys_are_the_well_known_insecure_ones():
    keys = base_image.default_assets()["vagrant-insecure-keys.pub"].splitlines()
    assert [k.split()[0] for k in keys] == ["ssh-ed25519", "ssh-rsa"]
    assert all(k.endswith("vagrant insecure public key") for k in keys)


def test_prune_keeps_only_the_newest_base_images(tmp_path):
    import os

    base = tmp_path / "base"
    base.mkdir()
    for age, name in enumerate(["c", "b", "a"]):
        disk = base / f"debian-bookworm-{name}.raw"
        disk.write_bytes(b"")
        disk.with_suffix(".json").write_text("{}")
        os.utime(disk, (1000 - age, 1000 - age))
    removed = base_image.prune(tmp_path, keep=2)
    assert [p.name for p in removed] == ["debian-bookworm-a.raw"]
    assert sorted(p.name for p in base.iterdir()) == [
        "debian-bookworm-b.json", "debian-bookworm-b.raw",
        "debian-bookworm-c.json", "debian-bookworm-c.raw"]


def test_building_the_base_image_without_root_is_a_clear_error(monkeypatch):
    import pytest
    from invoke.exceptions import Exit

    from box.tasks import build

    monkeypatch.setattr(build.os, "geteuid", lambda: 1000)
    with pytest.raises(Exit, match=r"needs root.*sudo"):
        build._require_root("invoke base-image")
