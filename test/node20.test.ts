import { RUNTIMES } from "./helpers.ts";
import { shardSuite } from "./suite.ts";

shardSuite(RUNTIMES.node20);

import assert from "node:assert/strict";
import { test } from "node:test";
import { freshPort, run } from "./helpers.ts";

test("node20: threads mode has no node:cluster fallback: exit 1", async () => {
  const proc = run(RUNTIMES.node20, ["--mode", "threads", "--port", String(freshPort())]);
  assert.equal(await proc.exited, 1);
  assert.match(
    proc.output(),
    /ignores listen\(\{ reusePort \}\).*, and threads mode has no node:cluster fallback/,
  );
});

test("node20: --strict refuses the node:cluster fallback with exit 1", async () => {
  const proc = run(RUNTIMES.node20, ["--strict", "--port", String(freshPort())]);
  assert.equal(await proc.exited, 1);
  assert.match(proc.output(), /Node 20\.\d+\.\d+ silently ignores listen\(\{ reusePort \}\).*--strict/);
});
