#!/bin/sh
':' //; case "$npm_lifecycle_event:$npm_config_user_agent" in bunx:*|*:bun/*) command -v bun >/dev/null && exec bun "$0" "$@" ;; esac; exec node "$0" "$@"
/**
 * The package's `shardport` command: runs the launcher on the runtime that executes it.
 *
 * Line 2 is for the shell and a comment for JavaScript. npx runs this file through `/bin/sh`, which
 * starts Node on it; bunx would start Node for a `#!/usr/bin/env node` file, so the shell starts Bun
 * where Bun's package runner asked for it: bunx sets `npm_lifecycle_event` to `bunx` (it keeps an
 * `npm_config_user_agent` that an npm script above it set), and `bun run` sets a user agent that
 * begins with `bun/`.
 * `deno run npm:shardport` loads this file as JavaScript, skipping both lines. `exec` keeps one
 * process: signals reach the launcher itself.
 *
 * Each runtime then runs its own bundled entry (dist/), built by `npm run build` before packing.
 */
const entry = globalThis.Bun
  ? await import("../dist/bun.js")
  : globalThis.Deno
    ? await import("../dist/deno.js")
    : await import("../dist/node.js");
await entry.cli();
