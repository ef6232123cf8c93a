#!/bin/sh
# Starts shardport on the runtime the image was built for; arguments pass through.
set -e
case "$RUNTIME" in
  bun) exec bun runtimes/bun.ts "$@" ;;
  deno) exec deno run --unstable-net --unstable-worker-options --no-prompt --allow-net --allow-run --allow-ffi --allow-env --allow-read \
    --allow-write --allow-sys=uid,hostname runtimes/deno.ts "$@" ;;
  *) exec node dist/node.js "$@" ;;
esac
