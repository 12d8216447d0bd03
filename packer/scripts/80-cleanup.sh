#!/bin/sh
# Makes the disk generic: every box made from it gets its own identity, and nothing of the
# build (packages, logs, payload, history) is left. Safe to run twice.
set -eux

# SSH host keys: removed here, made at first boot before sshd starts. Ed25519 and ECDSA only:
# an RSA key takes most of a minute to generate on an emulated (TCG) CPU.
cat > /etc/ssh/sshd_config.d/10-host-keys.conf <<'CONF'
HostKey /etc/ssh/ssh_host_ed25519_key
HostKey /etc/ssh/ssh_host_ecdsa_key
CONF
cat > /etc/systemd/system/ssh-host-keys.service <<'UNIT'
[Unit]
Description=Generate the SSH host keys on first boot
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStartPre=/bin/rm -f /etc/ssh/ssh_host_ecdsa_key /etc/ssh/ssh_host_ecdsa_key.pub
ExecStart=/usr/bin/ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key
ExecStart=/usr/bin/ssh-keygen -q -t ecdsa -N "" -f /etc/ssh/ssh_host_ecdsa_key

[Install]
WantedBy=multi-user.target
UNIT
systemctl enable ssh-host-keys.service
rm -f /etc/ssh/ssh_host_*

# an empty machine-id: systemd makes a new one at boot (and it is not a "first boot")
truncate -s 0 /etc/machine-id
rm -f /var/lib/dbus/machine-id

# pip installed the agent's wheel (20-agent.sh); nothing in the box runs it or its helpers
dpkg --purge python3-pip python3-setuptools python3-wheel

# packages: caches and indexes (apt-get update brings them back)
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
rm -rf /root/.cache

# logs, payload, shell history
find /var/log -type f -exec truncate -s 0 {} +
rm -rf /var/log/journal/*
find /tmp /var/tmp -mindepth 1 -maxdepth 1 ! -name 'systemd-private-*' -exec rm -rf {} +
rm -f /root/.bash_history /home/vagrant/.bash_history
