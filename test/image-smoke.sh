#!/usr/bin/env bash
# Smoke test of a built image where a Docker engine runs (the CI "image" job): starts the
# container as the README's "Deploying" shows (read-only root, a tmpfs /tmp, the migration
# sysctl, no capabilities), waits for the demo app on / and readiness on /readyz, stops it, and
# checks that it drained and exited 0.
# Usage: test/image-smoke.sh IMAGE [HOST_PORT]
set -euo pipefail
image=$1 port=${2:-18080}
name=shardport-smoke-$$
fail() {
  echo "image-smoke: $image: $*" >&2
  docker logs "$name" >&2 || true
  exit 1
}
trap 'docker rm -f "$name" >/dev/null 2>&1 || true' EXIT

# The image holds production dependencies and its one runtime, no dev dependency.
for dev in typescript pm2 playwright-core esbuild @biomejs; do
  if docker run --rm --entrypoint sh "$image" -c "test -e /app/node_modules/$dev"; then
    fail "the dev dependency $dev is in the image"
  fi
done

docker run -d --name "$name" --read-only --tmpfs /tmp --cap-drop ALL \
  --security-opt no-new-privileges --sysctl net.ipv4.tcp_migrate_req=1 \
  -p "127.0.0.1:$port:8080" "$image" --shards 2 >/dev/null

deadline=$((SECONDS + 90))
body=""
until [[ $body == *"Hello from PID"* ]]; do
  [ "$(docker inspect -f '{{.State.Running}}' "$name")" = true ] || fail "the container exited"
  ((SECONDS < deadline)) || fail "no 'Hello from PID' from / within 90 s"
  sleep 1
  body=$(curl -fsS --max-time 5 "http://127.0.0.1:$port/" 2>/dev/null || true)
done
echo "GET / -> $body"
status=$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")
[ "$status" = 200 ] || fail "GET /readyz -> $status"
echo "GET /readyz -> $status"
[ "$(docker exec "$name" id -u)" != 0 ] || fail "runs as root"
docker exec "$name" sh -c 'touch /app/x' 2>/dev/null && fail "the root file system is writable"
docker logs "$name" 2>&1 | grep -q 'tcp_migrate_req is 0' && fail "--sysctl did not reach the container"

docker stop -t 30 "$name" >/dev/null
code=$(docker inspect -f '{{.State.ExitCode}}' "$name")
logs=$(docker logs "$name" 2>&1)
[ "$code" = 0 ] || fail "exit code $code after docker stop"
grep -q 'stopping: draining 2 shards' <<<"$logs" || fail "no drain in the logs"
grep -q '"message":"stopped"' <<<"$logs" || fail "no 'stopped' in the logs"
echo "docker stop -> drained, exit 0"
