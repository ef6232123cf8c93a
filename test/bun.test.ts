import { RUNTIMES } from "./helpers.ts";
import { shardSuite } from "./suite.ts";

shardSuite(RUNTIMES.bun);

import assert from "node:assert/strict";
import { test } from "node:test";
import { run } from "./helpers.ts";

test("bun: --http node is refused (exit 2): Bun's node:http drops reusePort", async () => {
  const proc = run(RUNTIMES.bun, ["--http", "node"]);
  assert.equal(await proc.exited, 2);
  assert.match(proc.output(), /--http node is not available on bun: .*drops reusePort/);
});
