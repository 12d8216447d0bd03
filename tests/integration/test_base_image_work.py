"""A killed base-image build leaves mounts in its work folder; cleaning it up must not follow them."""

import os
import subprocess

import pytest

from box.base_image import remove_work

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts need root"),
]


def test_a_left_work_folder_is_removed_without_deleting_what_is_mounted_in_it(tmp_path):
    host_dev = tmp_path / "host-dev"  # stands for the host's /dev, bind-mounted into the chroot
    host_dev.mkdir()
    (host_dev / "sda").write_text("a device node")
    work = tmp_path / "tmp-0123456789abcdef"
    (work / "root" / "dev").mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(host_dev), str(work / "root" / "dev")], check=True)
    try:
        remove_work(work)
    finally:
        subprocess.run(["umount", str(work / "root" / "dev")], check=False, capture_output=True)
    assert not work.exists()
    assert (host_dev / "sda").read_text() == "a device node"
