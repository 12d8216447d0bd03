#!/bin/sh
# Runs inside the debootstrapped chroot: turns a bare Debian into a Vagrant-ready base disk.
# Inputs (environment): ROOT_UUID (the root filesystem), BOX_HOSTNAME.
set -eux

: "${ROOT_UUID:?}" "${BOX_HOSTNAME:?}"

# The root filesystem by UUID: the disk is /dev/vda under virtio, /dev/sda under AHCI.
cat > /etc/fstab <<FSTAB
UUID=${ROOT_UUID} / ext4 errors=remount-ro 0 1
FSTAB

echo "${BOX_HOSTNAME}" > /etc/hostname
cat > /etc/hosts <<HOSTS
127.0.0.1 localhost
127.0.1.1 ${BOX_HOSTNAME}
::1 localhost ip6-localhost ip6-loopback
HOSTS

# DHCP on every NIC, whatever the hypervisor names it (enp0s3, ens5, eth0...). IPv4 only:
# VirtualBox NAT and libvirt's default network offer no IPv6, and an IPv6 link-local
# address (its duplicate detection) would hold network-online.target, which the mirrors
# wait for, about a second longer at every boot under TCG.
mkdir -p /etc/systemd/network
cat > /etc/systemd/network/80-dhcp.network <<NET
[Match]
Name=en* eth*

[Network]
DHCP=ipv4
LinkLocalAddressing=no
NET
systemctl enable systemd-networkd.service systemd-resolved.service
# "online" once any NIC is up: a second NIC (Vagrant's private network, configured later by
# Vagrant, no DHCP on a VirtualBox host-only network) must not hold the boot for 2 minutes
mkdir -p /etc/systemd/system/systemd-networkd-wait-online.service.d
cat > /etc/systemd/system/systemd-networkd-wait-online.service.d/any.conf <<UNIT
[Service]
ExecStart=
ExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=30
UNIT

# The vagrant user: password vagrant, passwordless sudo, Vagrant's well-known insecure keys.
id vagrant >/dev/null 2>&1 || useradd --create-home --shell /bin/bash --user-group vagrant
echo 'vagrant:vagrant' | chpasswd
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/vagrant
chmod 0440 /etc/sudoers.d/vagrant
install -d -m 0700 -o vagrant -g vagrant /home/vagrant/.ssh
install -m 0600 -o vagrant -g vagrant /tmp/vagrant-insecure-keys.pub /home/vagrant/.ssh/authorized_keys

# No root login with a password; vagrant's sudo is the way in.
passwd --lock root

# Debian's own registry service would bind :5000 as one instance; the agent runs its own.
systemctl disable docker-registry.service

# Apt inside the box: no recommends, like the build.
echo 'APT::Install-Recommends "false";' > /etc/apt/apt.conf.d/90no-recommends

# An appliance: nothing downloads package lists or scrubs disks behind the user's back.
for unit in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service; do
    if [ -e "/lib/systemd/system/$unit" ]; then
        systemctl disable "$unit"
    fi
done

# Modules systemd loads at every boot for what these VMs do not have (DRM graphics, device
# mapper, EFI pstore): each modprobe costs a second of CPU early in the boot under TCG.
systemctl mask modprobe@drm.service modprobe@dm_mod.service modprobe@efi_pstore.service

# Files dpkg excluded from minbase's packages too (base-image installed the excludes late).
find /usr/share/doc -mindepth 1 ! -name copyright ! -type d -delete
find /usr/share/man /usr/share/info /usr/share/lintian -mindepth 1 -delete 2>/dev/null || true
find /usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
