#!/usr/bin/env bash
# Runs a command as root inside a private network namespace with loopback up and
# net.ipv4.tcp_migrate_req=1, so fault tests can change the namespace's sysctls and load its
# loopback without touching the host's. Where that is impossible, runs it with
# SHARDPORT_NO_NETNS=<reason> so the tests skip and print why; in CI (CI=true) that is an error
# instead (exit 1 with the reason), so that a CI run cannot pass without the fault suite.
set -u
if [ -n "${SHARDPORT_IN_NETNS:-}" ]; then
  ip link set lo up && echo 1 > /proc/sys/net/ipv4/tcp_migrate_req && exec "$@"
  exit 1
fi
reason=""
if [ "$(id -u)" != 0 ]; then reason="needs root for unshare -n"
elif ! command -v unshare >/dev/null; then reason="unshare (util-linux) is missing"
elif ! command -v ip >/dev/null; then reason="ip (iproute2) is missing"
elif ! unshare -n true 2>/dev/null; then reason="unshare -n is not permitted here"
elif [ ! -e /proc/sys/net/ipv4/tcp_migrate_req ]; then reason="the kernel has no tcp_migrate_req (Linux < 5.14)"
fi
if [ -n "$reason" ] && [ "${CI:-}" = true ]; then
  echo "fault tests cannot run in CI: $reason" >&2
  exit 1
fi
if [ -n "$reason" ]; then
  echo "fault tests skipped: $reason" >&2
  SHARDPORT_NO_NETNS="$reason" exec "$@"
fi
SHARDPORT_IN_NETNS=1 exec unshare -n "$0" "$@"
