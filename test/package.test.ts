// The package as an app author gets it: packed from a clean clone, installed into a fresh project
// that has only hono and an app, and run there through `npx shardport`, `bunx shardport` and
// `deno run ... npm:shardport`; library use from the project's own entry files; its types under
// TypeScript's bundler and nodenext resolution; the JSR package's ./deno export.
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import {
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { after, before, describe, test } from "node:test";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";
import {
  chiSquaredUniformP,
  ENV,
  freshPort,
  get,
  killLeftovers,
  portIsFree,
  ROOT,
  type RuntimeUnderTest,
  run,
  shardPids,
  spread,
  start,
} from "./helpers.ts";

const DENO_FLAGS = JSON.parse(readFileSync(join(ROOT, "deno.json"), "utf8"))
  .tasks.start.split(" ")
  .filter((word: string) => word.startsWith("--"));
const HONO = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).devDependencies.hono;

const tmp = mkdtempSync(join(tmpdir(), "shardport-package-"));
const clone = join(tmp, "clone");
const project = join(tmp, "project");
// npx must find everything in the project: nothing comes from a registry at test time.
const OFFLINE = {
  npm_config_offline: "true",
  npm_config_update_notifier: "false",
  DENO_NO_UPDATE_CHECK: "1",
};

after(() => {
  killLeftovers();
  rmSync(tmp, { recursive: true, force: true });
});

const sh = (command: string, args: string[], cwd: string) =>
  execFileSync(command, args, { cwd, env: { ...ENV, ...OFFLINE }, encoding: "utf8", stdio: "pipe" });

/** What a fresh clone holds: the tracked files and the new ones git does not ignore, no dist/. */
function cleanClone(): void {
  const files = sh("git", ["ls-files", "-z", "--cached", "--others", "--exclude-standard"], ROOT)
    .split("\0")
    .filter((file) => file && existsSync(join(ROOT, file)));
  for (const file of files) cpSync(join(ROOT, file), join(clone, file));
  // The installs a fresh clone gets from `npm ci` (the build's esbuild and tsc).
  symlinkSync(join(ROOT, "node_modules"), join(clone, "node_modules"));
  symlinkSync(join(ROOT, "tools", "node_modules"), join(clone, "tools", "node_modules"));
}

interface LockEntry {
  version?: string;
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  [key: string]: unknown;
}

/**
 * The fresh project's package-lock.json: the tarball, and for every dependency below it the very
 * versions the repository's lock pins. `npm ci --offline` then takes each package from the npm
 * cache that the repository's own `npm ci` filled (`npm install` would ask the registry for each
 * package's full metadata, which that cache does not hold).
 */
function freshLock(dependencies: Record<string, string>, tarball: string): object {
  const pinned: Record<string, LockEntry> = JSON.parse(
    readFileSync(join(ROOT, "package-lock.json"), "utf8"),
  ).packages;
  const packed = JSON.parse(sh("tar", ["-xzOf", tarball, "package/package.json"], tmp));
  const packages: Record<string, LockEntry> = {
    "": { name: "fresh-app", dependencies },
    "node_modules/shardport": {
      version: packed.version,
      resolved: dependencies.shardport,
      license: packed.license,
      dependencies: packed.dependencies,
      peerDependencies: packed.peerDependencies,
      peerDependenciesMeta: packed.peerDependenciesMeta,
      bin: packed.bin,
      engines: packed.engines,
    },
  };
  /** Node's lookup: `from`/node_modules/name, then each folder above. */
  const place = (from: string, deps: Record<string, string> = {}) => {
    for (const name of Object.keys(deps)) {
      for (let dir = from; ; dir = dir.slice(0, Math.max(0, dir.lastIndexOf("/node_modules/")))) {
        const path = `${dir ? `${dir}/` : ""}node_modules/${name}`;
        const entry = pinned[path];
        if (entry) {
          if (!packages[path]) {
            const { dev: _dev, devOptional: _devOptional, peer: _peer, ...rest } = entry;
            packages[path] = rest;
            place(path, { ...entry.dependencies, ...entry.optionalDependencies });
          }
          break;
        }
        if (!dir) throw new Error(`${name} (needed by ${from || "the project"}) is not in package-lock.json`);
      }
    }
  };
  place("node_modules/shardport", packed.dependencies);
  place("", { hono: HONO });
  return { name: "fresh-app", lockfileVersion: 3, requires: true, packages };
}

const APP = `import { Hono } from "hono";
import { health } from "shardport/health";
import { currentPid, currentShard, runtimeName } from "shardport/shard";

const app = new Hono();
app.use(health());
app.get("/", (c) => c.text(\`Hello from PID \${currentPid()} (shard \${currentShard()?.index}, \${runtimeName()})\`));
export default app;
`;

/** The project's own entry file that starts shardport as a library on `runtime`. */
const libraryEntry = (runtime: string) => `import process from "node:process";
import { start } from "shardport/${runtime}";

const server = await start({ app: new URL("./app.ts", import.meta.url), shards: 2, port: Number(process.argv[2]) });
console.log(\`LIBRARY-READY \${server.url} \${server.shards}\`);
`;

/** Every export, typed: an \`any\` anywhere would leave the @ts-expect-error unused (an error). */
const CONSUMER = `import { Hono } from "hono";
import { start as startBun } from "shardport/bun";
import { start as startDeno } from "shardport/deno";
import { health, isDraining } from "shardport/health";
import { start as startNode } from "shardport/node";
import { currentPid, currentShard, runtimeName } from "shardport/shard";

const options = { app: new URL("./app.ts", import.meta.url), shards: 2, port: 8080, host: "127.0.0.1" };
export const servers: Promise<{ url: string; shards: number; reload(): Promise<void>; stop(): Promise<void> }>[] = [
  startBun(options),
  startDeno(options),
  startNode(options),
];
export const app = new Hono().use(health()).get("/", (c) => c.text(String(isDraining())));
export const where: [number | undefined, number, "bun" | "deno" | "node"] = [
  currentShard()?.index,
  currentPid(),
  runtimeName(),
];
// @ts-expect-error shards is a number
export const wrong = startNode({ shards: "2" });
`;

/** What packing and installing found, for the tests below to judge. */
const found = {
  cleanBeforePublish: false,
  cleanBeforePack: false,
  packed: [] as string[],
  size: 0,
  unpacked: 0,
};

// Pack, then install into the fresh project, once for every test of this file (a test alone, by
// --test-name-pattern, needs them too).
before(() => {
  cleanClone();
  found.cleanBeforePublish = !existsSync(join(clone, "dist"));
  sh("deno", ["publish", "--dry-run", "--allow-dirty"], clone);
  found.cleanBeforePack = !existsSync(join(clone, "dist"));
  const out = sh("npm", ["pack", "--json", "--pack-destination", tmp], clone);
  const [packed] = JSON.parse(out.slice(out.search(/^\[/m)));
  found.packed = packed.files.map((file: { path: string }) => file.path);
  found.size = packed.size;
  found.unpacked = packed.unpackedSize;

  mkdirSync(project);
  const tarball = join(tmp, packed.filename);
  const dependencies = { hono: HONO, shardport: `file:../${packed.filename}` };
  const manifest = { name: "fresh-app", private: true, type: "module", dependencies };
  writeFileSync(join(project, "package.json"), `${JSON.stringify(manifest, null, 2)}\n`);
  writeFileSync(
    join(project, "package-lock.json"),
    JSON.stringify(freshLock(dependencies, tarball), null, 2),
  );
  writeFileSync(join(project, "app.ts"), APP);
  for (const runtime of ["node", "bun", "deno"])
    writeFileSync(join(project, `start-${runtime}.ts`), libraryEntry(runtime));
  writeFileSync(join(project, "consumer.ts"), CONSUMER);
  sh("npm", ["ci", "--offline", "--no-audit", "--no-fund"], project);
});

describe("published packages, from a clean clone", () => {
  test("deno publish --dry-run passes (JSR)", () => {
    assert.ok(found.cleanBeforePublish, "a clean clone has no dist/");
  });

  test("npm pack runs prepack, which builds dist/: the tarball has the bin, every export and its types", () => {
    assert.ok(found.cleanBeforePack, "a clean clone has no dist/");
    const pkg = JSON.parse(readFileSync(join(clone, "package.json"), "utf8"));
    const wanted = ["LICENSE", "README.md", "package.json", pkg.bin.shardport.replace(/^\.\//, "")];
    for (const [name, conditions] of Object.entries<Record<string, string>>(pkg.exports)) {
      for (const path of Object.values(conditions)) wanted.push(path.replace(/^\.\//, ""));
      assert.ok(conditions.types?.endsWith(".d.ts"), `${name} has declarations`);
    }
    wanted.push(
      "dist/deno-thread.js",
      "dist/deno-shard.js",
      "dist/app.js",
      "src/launcher/dashboard-page/index.html",
    );
    for (const path of wanted) assert.ok(found.packed.includes(path), `${path} is in the npm package`);
    for (const path of found.packed)
      assert.match(
        path,
        /^(dist\/|bin\/|src\/launcher\/dashboard-page\/|LICENSE$|README\.md$|package\.json$)/,
      );
    for (const dev of ["pm2", "bun", "node", "esbuild", "tsx", "typescript"])
      assert.ok(!(dev in (pkg.dependencies ?? {})), `${dev} is no runtime dependency`);
    console.log(
      `packed ${(found.size / 1024).toFixed(1)} kB, unpacked ${(found.unpacked / 1024).toFixed(1)} kB, ${found.packed.length} files`,
    );
  });

  test("a fresh project with only hono and app.ts installs the tarball offline", () => {
    assert.ok(existsSync(join(project, "node_modules", ".bin", "shardport")));
    const size = Number(sh("du", ["-sk", "node_modules"], project).split("\t")[0]);
    console.log(
      `installed: node_modules ${(size / 1024).toFixed(1)} MB (hono and shardport with its dependencies)`,
    );
  });
});

/** A command run in the fresh project, `words` before the test's arguments. */
const inProject = (
  name: string,
  runtime: RuntimeUnderTest["runtime"],
  words: string[],
): RuntimeUnderTest => ({
  name,
  runtime,
  cwd: project,
  command: (args) => [...words, ...args],
});

/** The three commands of the README's Install section. */
const commands = [
  inProject("npx shardport", "node", ["npx", "shardport"]),
  inProject("bunx shardport", "bun", ["bunx", "shardport"]),
  inProject("deno run npm:shardport", "deno", ["deno", "run", ...DENO_FLAGS, "npm:shardport"]),
];

describe("the shardport command in the fresh project", () => {
  for (const rt of commands) {
    test(`${rt.name} app.ts: 4 ${rt.runtime} shards share the port evenly, status answers, SIGTERM drains and exits 0`, async () => {
      const port = freshPort();
      const dashboardPort = freshPort();
      const app = await start(
        rt,
        ["app.ts", "--shards", "4", "--port", String(port), "--dashboard-port", String(dashboardPort)],
        OFFLINE,
      );
      assert.match(app.output(), new RegExp(`with 4 shards \\(${rt.runtime} `));
      // The dashboard's page and uPlot come from the installed package.
      for (const path of ["/", "/uplot.js"]) {
        const reply = await get(`http://127.0.0.1:${dashboardPort}${path}`);
        assert.equal(reply.status, 200, `dashboard ${path}: ${reply.body.slice(0, 200)}`);
      }
      const total = 800;
      const counts = await spread(app.url, total);
      const shares = [...counts.values()];
      assert.equal(counts.size, 4, `4 shards answer: ${JSON.stringify([...counts])}`);
      const { chi2, p } = chiSquaredUniformP(shares);
      assert.ok(p > 0.001, `uniform spread: counts ${shares}, chi2 ${chi2.toFixed(2)}, p ${p}`);
      for (const share of shares)
        assert.ok(share >= total / 4 / 2, `each shard gets half its fair share: ${shares}`);
      // The app's shardport/shard and shardport/health, imported in each shard.
      assert.match(
        (await get(app.url)).body,
        new RegExp(`^Hello from PID \\d+ \\(shard [0-3], ${rt.runtime}\\)$`),
      );
      assert.equal((await get(`${app.url}/readyz`)).status, 200);

      const status = run(rt, ["status", "--port", String(port)], OFFLINE);
      assert.equal(await status.exited, 0, status.output());
      assert.match(
        status.output(),
        new RegExp(`${rt.runtime} [\\d.]+, 4 shards in process mode, launcher pid ${app.launcherPid}`),
      );

      process.kill(app.launcherPid, "SIGTERM");
      assert.equal(await app.exited, 0, app.output());
      assert.match(app.output(), /stopped/);
      assert.ok(await portIsFree(port), "the port is free after the launcher exits");
    });
  }

  test("npx shardport on Node 20: a .ts app asks for tsx (exit 2); a .js app gets the node:cluster fallback", async () => {
    const [npx] = commands;
    const env = { ...OFFLINE, PATH: [join(ROOT, "node_modules", "node20", "bin"), ENV.PATH].join(delimiter) };
    const port = freshPort();
    const refused = run(npx, ["app.ts", "--shards", "2", "--port", String(port)], env);
    assert.equal(await refused.exited, 2, refused.output());
    assert.match(
      refused.output(),
      /shardport: error: .*app\.ts is TypeScript: .*tsx is not installed: npm install tsx/,
    );
    copyFileSync(join(project, "app.ts"), join(project, "app.js"));
    const app = await start(npx, ["app.js", "--shards", "2", "--port", String(port)], env);
    assert.match(app.output(), /falling back to node:cluster/);
    assert.match(app.output(), /with 2 shards \(node 20\./);
    assert.equal((await shardPids(app.url, 2)).size, 2, "both shards answer");
    process.kill(app.launcherPid, "SIGTERM");
    assert.equal(await app.exited, 0, app.output());
  });

  test("npx shardport stop and bunx shardport reload find a launcher by its port", async () => {
    const port = freshPort();
    const [npx, bunx] = commands;
    const app = await start(bunx, ["app.ts", "--shards", "2", "--port", String(port)], OFFLINE);
    const reload = run(bunx, ["reload", "--port", String(port)], OFFLINE);
    assert.equal(await reload.exited, 0, reload.output());
    await app.waitFor(/reload done: 2 shards replaced/, 30_000);
    const stop = run(npx, ["stop", "--port", String(port)], OFFLINE);
    assert.equal(await stop.exited, 0, stop.output());
    assert.equal(await app.exited, 0, app.output());
  });
});

describe("library use from the fresh project's own entry file", () => {
  const entries = [
    inProject("node", "node", ["node", "start-node.ts"]),
    inProject("bun", "bun", ["bun", "start-bun.ts"]),
    inProject("deno", "deno", ["deno", "run", ...DENO_FLAGS, "start-deno.ts"]),
  ];
  for (const rt of entries) {
    test(`${rt.name}: import { start } from "shardport/${rt.name}" serves app.ts; SIGTERM exits 0`, async () => {
      const port = freshPort();
      const proc = run(rt, [String(port)], OFFLINE);
      const [, url] = await proc.waitFor(/LIBRARY-READY (\S+) 2/);
      assert.match(proc.output(), new RegExp(`with 2 shards \\(${rt.runtime} `));
      assert.equal((await shardPids(url, 2)).size, 2, "both shards answer");
      process.kill(proc.child.pid ?? 0, "SIGTERM");
      assert.equal(await proc.exited, 0, proc.output());
    });
  }
});

describe("types", () => {
  test("a consumer of every export type-checks under moduleResolution nodenext and bundler", async () => {
    const tsc = join(ROOT, "node_modules", ".bin", "tsc");
    const typeRoots = join(ROOT, "node_modules", "@types");
    const check = (module: string, resolution: string) =>
      promisify(execFile)(
        tsc,
        [
          "--noEmit",
          "--strict",
          "--target",
          "es2022",
          "--module",
          module,
          "--moduleResolution",
          resolution,
        ].concat(["--types", "node", "--typeRoots", typeRoots, "consumer.ts"]),
        { cwd: project, env: ENV },
      ).catch((error) => assert.fail(`${resolution}: ${error.stdout}${error.stderr}`));
    // Both at once: each spends most of its time reading @types/node.
    await Promise.all([check("nodenext", "nodenext"), check("esnext", "bundler")]);
  });
});

describe("JSR", () => {
  test("a Deno project importing the ./deno export (import map onto the local files) starts shards", async () => {
    const exported = JSON.parse(readFileSync(join(clone, "deno.json"), "utf8")).exports["./deno"];
    const dir = join(tmp, "jsr-project");
    mkdirSync(dir);
    const imports = { "@shardport/shardport/deno": pathToFileURL(join(clone, exported)).href };
    // The package's npm dependencies come from the clone's node_modules (the registry is off limits).
    writeFileSync(join(dir, "deno.json"), JSON.stringify({ imports, nodeModulesDir: "manual" }));
    writeFileSync(
      join(dir, "app.ts"),
      'export default { fetch: () => new Response("Hello from PID " + Deno.pid) };\n',
    );
    writeFileSync(
      join(dir, "main.ts"),
      `import { start } from "@shardport/shardport/deno";
const server = await start({ app: new URL("./app.ts", import.meta.url), shards: 2, port: Number(Deno.args[0]) });
console.log(\`JSR-READY \${server.url}\`);
`,
    );
    const port = freshPort();
    const rt: RuntimeUnderTest = {
      name: "deno",
      runtime: "deno",
      cwd: dir,
      command: (args) => ["deno", "run", ...DENO_FLAGS, "main.ts", ...args],
    };
    const proc = run(rt, [String(port)], OFFLINE);
    const [, url] = await proc.waitFor(/JSR-READY (\S+)/);
    assert.equal((await shardPids(url, 2)).size, 2, "both shards answer");
    process.kill(proc.child.pid ?? 0, "SIGTERM");
    assert.equal(await proc.exited, 0, proc.output());
  });
});
