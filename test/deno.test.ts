import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, utimesSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { describe, test } from "node:test";
import {
  childrenOf,
  eventually,
  freshPort,
  get,
  isAlive,
  RUNTIMES,
  type RuntimeUnderTest,
  run,
  start,
} from "./helpers.ts";
import { shardSuite } from "./suite.ts";

shardSuite(RUNTIMES.deno);

describe("deno permissions", () => {
  for (const mode of ["process", "threads"]) {
    test(`a shard (${mode} mode) may serve its port and read the app, nothing more`, async () => {
      const args = ["--shards", "2", "--port", String(freshPort()), "--mode", mode];
      const app = await start(RUNTIMES.deno, [...args, "test/fixtures/deno-permissions.ts"]);
      assert.doesNotMatch(app.output(), /get the launcher's permissions/);
      for (let i = 0; i < 4; i++) {
        const reply = await get(app.url);
        assert.equal(reply.status, 200, reply.body);
        const { pid: _, ...allowed } = JSON.parse(reply.body);
        assert.deepEqual(allowed, {
          run: "NotCapable",
          write: "NotCapable",
          listen: "NotCapable",
          read: "NotCapable",
        });
      }
      process.kill(app.launcherPid, "SIGTERM");
      assert.equal(await app.exited, 0);
    });
  }

  test("SHARDPORT_DENO_FLAGS reaches a shard process; shard threads then keep the launcher's permissions", async () => {
    const asked = async (mode: string, flags = "--allow-read=/etc/hostname") => {
      const args = ["--shards", "1", "--port", String(freshPort()), "--mode", mode];
      const env = { SHARDPORT_DENO_FLAGS: flags };
      const app = await start(RUNTIMES.deno, [...args, "test/fixtures/deno-permissions.ts"], env);
      const reply = await get(app.url);
      process.kill(app.launcherPid, "SIGTERM");
      assert.equal(await app.exited, 0);
      const { pid, ...allowed } = JSON.parse(reply.body);
      rmSync(join(tmpdir(), `shardport-permission-probe-${pid}`), { force: true });
      return allowed;
    };
    assert.deepEqual(await asked("process"), {
      run: "NotCapable",
      write: "NotCapable",
      listen: "NotCapable",
      read: "allowed",
    });
    // The launcher's own: it may run programs and write files (its pid file).
    const thread = await asked("threads");
    assert.equal(thread.run, "allowed");
    assert.equal(thread.write, "allowed");
    assert.equal(thread.read, "allowed");
    // A bare flag widens its kind (Deno would keep the shard's own narrow list), long or short;
    // a list of a kind the shard has in full (env) would narrow it: the shard would not start.
    const net = await asked("process", "--allow-net --allow-env=HOME");
    assert.notEqual(net.listen, "NotCapable");
    assert.equal(net.run, "NotCapable");
    const short = await asked("process", "-NW");
    assert.notEqual(short.listen, "NotCapable");
    assert.equal(short.write, "allowed");
    assert.equal(short.run, "NotCapable");
    // -A: everything (listening on port 1 needs root besides: not NotCapable is Deno's yes).
    for (const [what, answer] of Object.entries(await asked("process", "-A")))
      assert.notEqual(answer, "NotCapable", what);
    // A flag's list without its '=' is refused before any shard starts.
    const spaced = run(RUNTIMES.deno, ["--port", String(freshPort())], {
      SHARDPORT_DENO_FLAGS: "--allow-read /srv",
    });
    assert.equal(await spaced.exited, 2, spaced.output());
    assert.match(
      spaced.output(),
      /^shardport: error: SHARDPORT_DENO_FLAGS: '\/srv' is not a flag; give a flag's list after '=', e\.g\. --allow-read=\/srv$/m,
    );
  });
});

describe("deno shard process", () => {
  test("listens without Deno's Node layer; its channel is a socket in a 0700 folder, removed at exit", async () => {
    const args = ["--shards", "1", "--port", String(freshPort()), "test/fixtures/deno-node-layer.ts"];
    const app = await start(RUNTIMES.deno, args);
    let socket: string | undefined;
    try {
      const first = JSON.parse((await get(app.url)).body);
      // The first request finds the layer not booted; the app's own touch of `process` boots it.
      assert.deepEqual({ before: first.before, after: first.after }, { before: false, after: true });
      assert.equal(JSON.parse((await get(app.url)).body).before, true);
      assert.deepEqual(childrenOf(app.launcherPid), [first.pid]);
      const cmdline = readFileSync(`/proc/${first.pid}/cmdline`, "utf8").split("\0");
      const environ = readFileSync(`/proc/${first.pid}/environ`, "utf8");
      assert.doesNotMatch(environ, /NODE_CHANNEL_FD/);
      socket = cmdline.find((word) => word.startsWith("--allow-write="))?.slice("--allow-write=".length);
      assert.ok(socket && !socket.includes(","), `one path to write: ${cmdline.join(" ")}`);
      assert.equal(statSync(dirname(socket)).mode & 0o777, 0o700);
      assert.ok(statSync(socket).isSocket());
    } finally {
      process.kill(app.launcherPid, "SIGTERM");
    }
    assert.equal(await app.exited, 0);
    assert.equal(existsSync(dirname(socket ?? "")), false);
  });

  test("a launcher killed by SIGKILL: its shard exits; the next launcher removes the folder it left", async () => {
    const socketOf = (shardPid: number) => {
      const words = readFileSync(`/proc/${shardPid}/cmdline`, "utf8").split("\0");
      return words.find((word) => word.startsWith("--allow-write="))?.slice("--allow-write=".length) ?? "";
    };
    const args = (port: number) => [
      "--shards",
      "1",
      "--port",
      String(port),
      "test/fixtures/deno-node-layer.ts",
    ];
    const killed = await start(RUNTIMES.deno, args(freshPort()));
    const [shard] = childrenOf(killed.launcherPid);
    const left = dirname(socketOf(shard));
    process.kill(killed.launcherPid, "SIGKILL");
    await killed.exited;
    // The socket's end tells the shard that its launcher is gone: it drains and exits.
    assert.ok(await eventually(() => !isAlive(shard), 5000), "the shard of a SIGKILLed launcher exits");
    assert.ok(existsSync(left), "a SIGKILLed launcher cannot remove its folder");
    // Folders without a socket: one made 10 minutes ago (a launcher killed before it made its
    // socket) goes too, one just made (a launcher making its socket) stays.
    const [empty, fresh] = ["old", "new"].map(
      (age) => `${dirname(left)}/shardport-channel-test${age}${process.pid}`,
    );
    mkdirSync(empty);
    mkdirSync(fresh);
    const tenMinutesAgo = new Date(Date.now() - 600_000);
    utimesSync(empty, tenMinutesAgo, tenMinutesAgo);
    const next = await start(RUNTIMES.deno, args(freshPort()));
    try {
      assert.ok(await eventually(() => !existsSync(left), 10_000), "the folder of the killed launcher goes");
      assert.ok(await eventually(() => !existsSync(empty), 5_000), "an old folder without a socket goes");
      assert.ok(existsSync(dirname(socketOf(childrenOf(next.launcherPid)[0]))), "its own stays");
    } finally {
      process.kill(next.launcherPid, "SIGTERM");
    }
    assert.equal(await next.exited, 0);
    // Checked once the launcher is gone: its sweep, in whatever order it went, is over.
    const freshStayed = existsSync(fresh);
    rmSync(empty, { recursive: true, force: true });
    rmSync(fresh, { recursive: true, force: true });
    assert.ok(freshStayed, "a folder just made stays");
    assert.equal(await next.exited, 0);
  });
});

describe("deno launcher", () => {
  test("spawns its first shards before Deno's Node layer boots in it", async () => {
    // deno task start's own command line, with the watched entry in place of runtimes/deno.ts.
    const task: string[] = JSON.parse(readFileSync("deno.json", "utf8")).tasks.start.split(" ");
    const watched: RuntimeUnderTest = {
      ...RUNTIMES.deno,
      command: (args) => [
        ...task.map((word) => (word === "runtimes/deno.ts" ? "test/fixtures/deno-launcher-layer.ts" : word)),
        ...args,
      ],
    };
    const app = await start(watched, ["--shards", "2", "--port", String(freshPort()), "src/app.ts"]);
    try {
      assert.equal((await get(app.url)).status, 200);
    } finally {
      process.kill(app.launcherPid, "SIGTERM");
    }
    assert.equal(await app.exited, 0);
    assert.match(app.output(), /launcher node layer at first spawn: false /);
    // Its logger (pino) boots the layer later: the observable still tells.
    assert.match(app.output(), /launcher node layer at exit: true /);
  });
});

describe("deno shard threads take turns to listen", () => {
  test("a thread that ends while it waits for its turn does not hold the turns after it", async () => {
    const { ThreadHandle, Turns } = await import("../src/launcher/thread-handle.ts");
    class Thread extends ThreadHandle {
      readonly pid = process.pid;
      readonly label = "thread";
      protected post(): void {}
      protected terminate(): void {
        this.exited(null, "SIGKILL");
      }
    }
    const turns = new Turns();
    const [a, b, c] = [new Thread(), new Thread(), new Thread()];
    const started: string[] = [];
    const turnOf = (name: string, thread: Thread) =>
      new Promise<() => void>((resolve) => {
        const end = turns.take(thread, () => {
          started.push(name);
          resolve(end);
        });
      });
    const endA = await turnOf("a", a);
    const bStarted = turnOf("b", b);
    b.kill("SIGKILL"); // ends while a holds the turn
    endA();
    // c is started within a second, or never: b's turn must not wait for an exit already said.
    const cStarted = turnOf("c", c);
    const timeout = new Promise<string>((resolve) => setTimeout(() => resolve("timed out"), 1000).unref());
    assert.notEqual(await Promise.race([cStarted, timeout]), "timed out", `started: ${started.join(", ")}`);
    assert.deepEqual(started, ["a", "c"]);
    assert.equal(await Promise.race([bStarted.then(() => "b started"), Promise.resolve("no")]), "no");
  });
});
