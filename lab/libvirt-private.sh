#!/bin/sh
# Starts virtlogd and libvirtd with private state, inside the network namespace that runs us.
# Usage (as root): ip netns exec NS unshare --mount --propagation private sh libvirt-private.sh DIR
#
# Why a private mount namespace: a root libvirtd keeps its state at fixed paths (/etc/libvirt,
# /run/libvirt, /var/lib/libvirt...). Bind-mounting our own folders over them, in a mount
# namespace that only these daemons (and the QEMU and dnsmasq they start) see, keeps the
# networks, domains and storage pool of the test out of this machine's libvirt, and a
# system libvirtd (if one runs) out of the test. Clients reach the daemon through the socket
# at DIR/run/libvirt/libvirt-sock (qemu:///system?socket=...).
set -eu
dir="$1"
# the daemons keep no pipe of our caller open
exec </dev/null >>"$dir/log/daemons.log" 2>&1
mount --bind "$dir/etc" /etc/libvirt
mount --bind "$dir/run" /run
mkdir -p /run/libvirt
mount --bind "$dir/lib" /var/lib/libvirt
mount --bind "$dir/cache" /var/cache/libvirt
mount --bind "$dir/log" /var/log/libvirt
virtlogd --daemon --pid-file /run/virtlogd.pid
libvirtd --daemon --pid-file /run/libvirtd.pid
