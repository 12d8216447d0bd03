#!/bin/sh
# initramfs-tools hook of the registry-cache base disk: the drivers that mount the root disk
# on virtio (libvirt, QEMU), SATA/AHCI (VirtualBox) or IDE, and ext4. udev in the initrd
# loads them by device; the real root's udev loads the rest.
PREREQ=""
prereqs() { echo "$PREREQ"; }
case "$1" in
prereqs) prereqs; exit 0 ;;
esac
. /usr/share/initramfs-tools/hook-functions
for module in virtio_pci virtio_mmio virtio_blk virtio_scsi ahci ata_piix sd_mod ext4 crc32c_generic; do
    manual_add_modules "$module"
done
