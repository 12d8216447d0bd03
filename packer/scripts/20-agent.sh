#!/bin/sh
# Installs the registry-cache agent (a wheel built on the host: no PyPI inside the box), its
# system user and directories, and its systemd units. Re-running it reinstalls the same.
set -eux
: "${PAYLOAD:?}"

# the payload tar (wheel/ and systemd/) that Packer uploaded
payload_dir=$(mktemp -d)
tar -xf "$PAYLOAD" -C "$payload_dir"

# the mirrors run as this user; group vagrant lets them write a synced folder owned by vagrant
if ! id registry-cache >/dev/null 2>&1; then
    useradd --system --user-group --home-dir /var/lib/registry-cache --no-create-home \
        --shell /usr/sbin/nologin registry-cache
fi
usermod --append --groups vagrant registry-cache
# `registry-cache logs` (journalctl) works for the vagrant user without sudo
usermod --append --groups systemd-journal vagrant
install -d -m 0755 -o root -g root /etc/registry-cache
install -d -m 0750 -o registry-cache -g registry-cache /var/lib/registry-cache

# the agent and its console script /usr/local/bin/registry-cache; its libraries are Debian's
pip3 install --no-index --no-deps --break-system-packages --force-reinstall \
    --disable-pip-version-check --root-user-action=ignore \
    "$payload_dir"/wheel/registry_cache-*.whl
test -x /usr/local/bin/registry-cache
registry-cache --version

# the units (there may be none yet): boot-time apply and every timer enabled
for unit in "$payload_dir"/systemd/*.service "$payload_dir"/systemd/*.timer; do
    [ -e "$unit" ] || continue
    install -m 0644 "$unit" /etc/systemd/system/
done
# no daemon-reload here: `enable` reads the unit files (apply below reloads once)
for service in registry-cache-boot.service registry-cache-metrics.service; do
    if [ -e "/etc/systemd/system/$service" ]; then systemctl enable "$service"; fi
done
for timer in "$payload_dir"/systemd/*.timer; do
    [ -e "$timer" ] || continue
    systemctl enable "$(basename "$timer")"
done

# The embedded default config applied now, as the first boot would, and so validated on the
# Debian libraries the agent runs on: its mirror's config rendered, its unit enabled. The
# box's first boot then starts that mirror like any later boot (registry-cache-boot.service
# is skipped) and needs no daemon-reload. The mirror it starts only waits for /vagrant here:
# stopped at once.
registry-cache --root /etc/registry-cache apply --boot
systemctl stop 'registry-cache-mirror@*.service'
test -e /etc/registry-cache/applied.json

# Debian's own single registry stays off (the base disk disabled it): the agent runs one
# instance per upstream. A check, not `systemctl disable`: that runs update-rc.d (slow in TCG).
test ! -e /etc/systemd/system/multi-user.target.wants/docker-registry.service
echo "box ${BOX_NAME:-?} ${BOX_VERSION:-?}" > /etc/registry-cache/box-release
rm -rf "$payload_dir" "$PAYLOAD"
