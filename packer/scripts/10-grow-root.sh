#!/bin/sh
# Grows the root partition and its ext4 filesystem to fill the disk Packer resized to the
# box's disk size. Idempotent: on a partition that already fills the disk nothing changes.
set -eux

root_part=$(findmnt --noheadings --output SOURCE /)
disk=/dev/$(lsblk --noheadings --nodeps --output PKNAME "$root_part")
part_number=$(cat "/sys/class/block/$(basename "$root_part")/partition")

# ', +' keeps the start and type and grows the size to the end of the disk
echo ', +' | sfdisk --force --no-reread --no-tell-kernel -N "$part_number" "$disk"
# tell the running kernel the new size (BLKPG: works on a mounted partition)
partx --update --nr "$part_number" "$disk"
resize2fs "$root_part"
df -h /
