#!/usr/bin/env bash
# Runs a command inside an approximation of deploy/shardport.service's sandbox, for machines
# with no systemd manager to run it under `systemd-run` (containers): a private mount namespace
# where every mount is read-only (ProtectSystem=strict), /home, /root and /run/user are empty
# (ProtectHome), /tmp is private (PrivateTmp), /dev holds only null, zero, random and urandom
# (PrivateDevices), /proc/sys and /sys are read-only (ProtectKernelTunables), the project is at
# /srv/shardport (WorkingDirectory) and only /run/shardport is writable (RuntimeDirectory). The
# command then runs as nobody (DynamicUser), with no capabilities (CapabilityBoundingSet=),
# no_new_privs (NoNewPrivileges), umask 077 (UMask) and, through filter.py, the unit's own
# SystemCallFilter, SystemCallErrorNumber and RestrictAddressFamilies.
# Usage (as root): test/sandbox/run.sh UNIT_FILE PROJECT_DIR COMMAND...
set -euo pipefail
unit=$(realpath "$1") project=$(realpath "$2")
shift 2
if [ -z "${SHARDPORT_IN_SANDBOX:-}" ]; then
  SHARDPORT_IN_SANDBOX=1 exec unshare --mount --propagation private "$0" "$unit" "$project" "$@"
fi
here=$(dirname "$(realpath "$0")")
# Copies of what the last step needs, before /home (where a checkout may be) disappears.
mount -t tmpfs -o mode=0755 tmpfs /srv
mkdir /srv/shardport /srv/.sandbox
mount --bind "$project" /srv/shardport
cp "$unit" "$here/filter.py" /srv/.sandbox/
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir /run/shardport && mount -t tmpfs -o mode=0700,uid=65534,gid=65534 tmpfs /run/shardport
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=1777 tmpfs /var/tmp
for dir in /home /root /run/user; do
  [ -d "$dir" ] && mount -t tmpfs -o mode=0755,ro tmpfs "$dir"
done
mount -t tmpfs -o mode=0755 tmpfs /dev
mknod -m 0666 /dev/null c 1 3 && mknod -m 0666 /dev/zero c 1 5
mknod -m 0666 /dev/random c 1 8 && mknod -m 0666 /dev/urandom c 1 9
ln -s /proc/self/fd /dev/fd
# Read-only everywhere but the runtime directory, the private /tmp and /dev (deepest first).
mount -o remount,ro,bind /srv/shardport
while read -r target; do
  case "$target" in
    /run/shardport | /tmp | /var/tmp | /dev | /dev/* | /proc) ;;
    *) mount -o remount,ro,bind "$target" 2>/dev/null || true ;;
  esac
done < <(awk '{print $5}' /proc/self/mountinfo | sort -r)
mount --bind /proc/sys /proc/sys && mount -o remount,ro,bind /proc/sys
cd /srv/shardport
umask 077
exec setpriv --reuid=65534 --regid=65534 --clear-groups --no-new-privs --inh-caps=-all \
  --bounding-set=-all env HOME=/ XDG_RUNTIME_DIR=/run/shardport \
  /usr/bin/python3 /srv/.sandbox/filter.py "/srv/.sandbox/$(basename "$unit")" "$@"
