#!/bin/sh
# Provision a single-node Ceph with its S3 gateway (radosgw) for the cache cluster's example.
# One monitor, one OSD (bluestore in a file, so the cache survives a reboot of this VM), radosgw
# on port 7480, no manager; `auth none` inside this VM's private network. For a team's real
# object store run a proper Ceph (cephadm, Rook) or any S3 service and point config.yml at it.
# Usage: ceph-node.sh IP ACCESS_KEY SECRET_FILE BUCKET
set -eux
IP=$1 ACCESS_KEY=$2 SECRET_FILE=$3 BUCKET=$4
DATA=/var/lib/rc-ceph
if [ -e "$DATA/ready" ]; then
  systemctl start rc-ceph-mon rc-ceph-osd rc-ceph-rgw
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends ceph-mon ceph-osd radosgw ceph-common curl
FSID=$(cat /proc/sys/kernel/random/uuid)
mkdir -p "$DATA/mon" "$DATA/osd" "$DATA/rgw" "$DATA/run" "$DATA/log"
cat > /etc/ceph/ceph.conf <<CONF
[global]
fsid = $FSID
mon host = v2:$IP:3300
public addr = $IP
auth cluster required = none
auth service required = none
auth client required = none
# without it radosgw waits forever for the monitor under auth none
ms_mon_client_mode = crc
run dir = $DATA/run
log file = $DATA/log/\$name.log
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
[mon.a]
mon data = $DATA/mon
[osd.0]
osd data = $DATA/osd
osd objectstore = bluestore
# outside the OSD folder: mkfs wants that folder to itself
bluestore block path = $DATA/osd-block
bluestore block create = true
bluestore block size = 21474836480
[client.rgw]
rgw frontends = beast endpoint=$IP:7480 tcp_nodelay=1
rgw data = $DATA/rgw
CONF
monmaptool --create --fsid "$FSID" --addv a "[v2:$IP:3300]" "$DATA/monmap"
ceph-mon --mkfs -i a --monmap "$DATA/monmap"
unit() {  # NAME COMMAND...: a systemd unit that keeps one daemon running
  name=$1; shift
  cat > "/etc/systemd/system/$name.service" <<UNIT
[Unit]
Description=registry-cache example: $name
After=network-online.target
[Service]
ExecStart=$*
Restart=always
[Install]
WantedBy=multi-user.target
UNIT
}
unit rc-ceph-mon /usr/bin/ceph-mon -f -i a
unit rc-ceph-osd /usr/bin/ceph-osd -f -i 0
unit rc-ceph-rgw /usr/bin/radosgw -f -n client.rgw
systemctl daemon-reload
systemctl enable --now rc-ceph-mon
ceph --connect-timeout 30 osd create
ceph-osd -i 0 --mkfs --osd-uuid "$(cat /proc/sys/kernel/random/uuid)"
systemctl enable --now rc-ceph-osd rc-ceph-rgw
for _ in $(seq 60); do curl -fs "http://$IP:7480/" >/dev/null && break; sleep 1; done
radosgw-admin user create --uid registry-cache --display-name registry-cache \
  --access-key "$ACCESS_KEY" --secret-key "$(cat "$SECRET_FILE")"
# the bucket, created with the cache's own keys (s3cmd is not needed)
curl -fsS -X PUT --aws-sigv4 "aws:amz:us-east-1:s3" -u "$ACCESS_KEY:$(cat "$SECRET_FILE")" \
  -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
  "http://$IP:7480/$BUCKET"
touch "$DATA/ready"
