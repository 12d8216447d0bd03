"""box.ovf describes the VirtualBox box's own files: disk, capacity, controller and MAC agree."""

import re
import shutil
import subprocess
import tarfile
import xml.etree.ElementTree as ET

import pytest

from box import ovf, package

NS = {
    "ovf": "http://schemas.dmtf.org/ovf/envelope/1",
    "rasd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData",
    "vbox": "http://www.virtualbox.org/ovf/machine",
}
OVF = "{" + NS["ovf"] + "}"
VBOX = "{" + NS["vbox"] + "}"


def machine(**overrides):
    values = dict(name="registry-cache", version="1.2.3", disk_file="box-disk001.vmdk",
                  disk_file_size=123456, disk_capacity=21474836480, cpus=2, memory=1024)
    values.update(overrides)
    return ovf.OvfMachine(**values)


def items(root):
    found = {}
    for item in root.iterfind(".//ovf:VirtualHardwareSection/ovf:Item", NS):
        found.setdefault(item.findtext("rasd:ResourceType", namespaces=NS), []).append(item)
    return found


def test_disk_reference_and_capacity_agree():
    root = ET.fromstring(ovf.render_ovf(machine()))
    file_ = root.find("ovf:References/ovf:File", NS)
    disk = root.find("ovf:DiskSection/ovf:Disk", NS)
    assert file_.get(OVF + "href") == "box-disk001.vmdk"
    assert file_.get(OVF + "size") == "123456"
    assert disk.get(OVF + "fileRef") == file_.get(OVF + "id")
    assert disk.get(OVF + "capacity") == "21474836480"
    assert disk.get(OVF + "format").endswith("#streamOptimized")
    disk_item = items(root)["17"][0]
    host_resource = disk_item.findtext("rasd:HostResource", namespaces=NS)
    assert host_resource == "/disk/" + disk.get(OVF + "diskId")


def test_disk_hangs_on_the_one_sata_ahci_controller():
    root = ET.fromstring(ovf.render_ovf(machine()))
    found = items(root)
    (controller,) = found["20"]
    assert controller.findtext("rasd:ResourceSubType", namespaces=NS) == "AHCI"
    (disk_item,) = found["17"]
    parent = disk_item.findtext("rasd:Parent", namespaces=NS)
    assert parent == controller.findtext("rasd:InstanceID", namespaces=NS)
    vbox_controller = root.find(".//vbox:Machine/ovf:StorageControllers/ovf:StorageController", NS)
    assert vbox_controller.get("type") == "AHCI"
    image = vbox_controller.find("ovf:AttachedDevice/ovf:Image", NS)
    assert image.get("uuid") == root.find("ovf:DiskSection/ovf:Disk", NS).get(VBOX + "uuid")


def test_machine_is_debian_64_with_its_cpus_memory_and_one_nat_e1000():
    root = ET.fromstring(ovf.render_ovf(machine(cpus=3, memory=2048)))
    found = items(root)
    assert root.find(".//ovf:OperatingSystemSection", NS).get(OVF + "id") == "96"
    assert root.findtext(".//vbox:OSType", namespaces=NS) == "Debian_64"
    assert found["3"][0].findtext("rasd:VirtualQuantity", namespaces=NS) == "3"
    assert found["4"][0].findtext("rasd:VirtualQuantity", namespaces=NS) == "2048"
    (nic,) = found["10"]
    assert nic.findtext("rasd:ResourceSubType", namespaces=NS) == "E1000"
    assert nic.findtext("rasd:Connection", namespaces=NS) == "NAT"


def test_nat_adapter_mac_is_the_vagrantfile_base_mac():
    spec = machine(mac="080027ABCDEF")
    root = ET.fromstring(ovf.render_ovf(spec))
    (adapter,) = root.iterfind(".//vbox:Machine/ovf:Hardware/ovf:Network/ovf:Adapter", NS)
    assert adapter.get("MACAddress") == "080027ABCDEF"
    assert adapter.get("type") == "82540EM"  # VirtualBox's name for the E1000 (Intel PRO/1000 MT)
    assert adapter.find("ovf:NAT", NS) is not None
    assert re.search(r'config\.vm\.base_mac = "080027ABCDEF"', ovf.render_vagrantfile(spec))


def test_uuids_are_stable_for_the_same_box():
    assert machine().disk_uuid() == machine().disk_uuid()
    assert machine().disk_uuid() != machine(version="1.2.4").disk_uuid()


@pytest.mark.parametrize("mac", ["08:00:27:AB:CD:EF", "080027abcdef", "0800"])
def test_malformed_mac_is_refused(mac):
    with pytest.raises(ValueError, match="MAC"):
        machine(mac=mac)


@pytest.mark.allow_subprocess
def test_virtualbox_box_files_agree_with_its_ovf(tmp_path):
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img is not installed (invoke install-deps --groups build)")
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    target = tmp_path / "vb.box"
    package.make_virtualbox_box(disk, tmp_path / "work", target,
                                {"name": "t", "version": "1.0.0", "cpus": 2, "memory": 1024})
    with tarfile.open(target, "r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {"metadata.json", "Vagrantfile", "box.ovf", "box-disk001.vmdk"}
        tar.extractall(tmp_path / "out")
    out = tmp_path / "out"
    root = ET.fromstring((out / "box.ovf").read_text())
    file_ = root.find("ovf:References/ovf:File", NS)
    vmdk = out / file_.get(OVF + "href")
    assert int(file_.get(OVF + "size")) == vmdk.stat().st_size
    info = subprocess.run(["qemu-img", "info", "--output=json", str(vmdk)], check=True,
                          capture_output=True, text=True).stdout
    assert '"virtual-size": 67108864' in info
    assert '"create-type": "streamOptimized"' in info
    assert root.find("ovf:DiskSection/ovf:Disk", NS).get(OVF + "capacity") == "67108864"
    mac = root.find(".//vbox:Machine/ovf:Hardware/ovf:Network/ovf:Adapter", NS).get("MACAddress")
    assert f'config.vm.base_mac = "{mac}"' in (out / "Vagrantfile").read_text()
    assert (out / "metadata.json").read_text().strip() == '{"provider": "virtualbox"}'
