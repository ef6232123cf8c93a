/**
 * The README's set-up: after `npm run setup`, `npm start` serves the demo with nothing on PATH but
 * the system's node and npm (the pinned runtimes come from the install, not from the user).
 * @module
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { delimiter, resolve } from "node:path";
import { after, test } from "node:test";
import { freshPort, get, killLeftovers, ROOT, type RuntimeUnderTest, start } from "./helpers.ts";

after(killLeftovers);

/** PATH as the user's shell has it: no node_modules/.bin of this project. */
const systemPath = (process.env.PATH ?? "")
  .split(delimiter)
  .filter((dir) => !resolve(ROOT, dir).startsWith(`${ROOT}/`))
  .join(delimiter);

const npmStart: RuntimeUnderTest = {
  name: "npm start",
  runtime: "bun",
  command: (args) => ["npm", "start", "--", ...args],
};

test("npm start serves the demo on the pinned Bun, with only the system's node and npm on PATH", async (t) => {
  try {
    execFileSync("bun", ["--version"], { env: { ...process.env, PATH: systemPath }, stdio: "ignore" });
    t.diagnostic("a bun is on the system PATH too; npm start still picks the pinned one first");
  } catch {}
  const app = await start(npmStart, ["--shards", "2", "--port", String(freshPort())], { PATH: systemPath });
  const reply = await get(app.url);
  assert.equal(reply.status, 200);
  assert.match(reply.body, /^Hello from PID \d+ \(shard \d, bun\)/);
  assert.match(app.output(), /\(bun 1\.4\.5, launcher pid \d+\)/, "the pinned Bun");
  process.kill(app.launcherPid, "SIGTERM");
  assert.equal(await app.exited, 0, app.output());
});
