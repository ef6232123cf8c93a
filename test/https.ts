/**
 * HTTPS and HTTP/2 (--tls-cert, --tls-key), per runtime: test/https/<runtime>.test.ts each call
 * httpsSuite(). Certificates are made at test time with openssl; no private key is committed.
 * @module
 */
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import {
  chmodSync,
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import http2 from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import tls from "node:tls";
import { parseAllDocuments } from "yaml";
import {
  assertNoneLost,
  childrenOf,
  chiSquaredUniformP,
  eventually,
  freshPort,
  get,
  isAlive,
  killLeftovers,
  load,
  portIsFree,
  ROOT,
  RUNTIMES,
  type RuntimeUnderTest,
  run,
  shardPids,
  spread,
  start,
} from "./helpers.ts";

/** The PEM files one test run uses, in a fresh temporary folder. */
export interface TestCerts {
  dir: string;
  /** A leaf for localhost/127.0.0.1 signed by `ca`, with its chain (leaf + CA) in one file. */
  chain: string;
  leafKey: string;
  ca: string;
  /** A second self-signed pair, for rotation and for a key that matches nothing else. */
  other: string;
  otherKey: string;
  expired: string;
  expiredKey: string;
  encryptedKey: string;
  notPem: string;
  /** A file in the same folder as the key, which a Deno shard must not read. */
  sibling: string;
}

const EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

/** Makes every certificate and key the TLS tests need with openssl (about 0.2 s). */
export function makeCerts(): TestCerts {
  const dir = mkdtempSync(join(tmpdir(), "shardport-tls-"));
  const at = (name: string) => join(dir, name);
  const openssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
  openssl(
    "req",
    "-x509",
    ...EC,
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
    "-days",
    "2",
    "-subj",
    "/CN=shardport test CA",
  );
  openssl("req", "-new", ...EC, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=localhost");
  writeFileSync(at("leaf.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
  signLeaf(dir, "chain.pem");
  openssl(
    "req",
    "-x509",
    ...EC,
    "-keyout",
    "other.key",
    "-out",
    "other.pem",
    "-days",
    "2",
    "-subj",
    "/CN=localhost",
  );
  // An expired (v3) certificate: `openssl ca` is the one command that takes explicit dates.
  writeFileSync(at("index.txt"), "");
  writeFileSync(at("serial"), "01\n");
  writeFileSync(
    at("ca.cnf"),
    "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\ndefault_md = sha256\npolicy = p\nx509_extensions = v3\n[p]\ncommonName = supplied\n[v3]\nsubjectAltName = DNS:localhost,IP:127.0.0.1\n",
  );
  openssl("req", "-new", ...EC, "-keyout", "expired.key", "-out", "expired.csr", "-subj", "/CN=localhost");
  openssl(
    "ca",
    "-batch",
    "-config",
    "ca.cnf",
    "-selfsign",
    "-keyfile",
    "expired.key",
    "-in",
    "expired.csr",
    "-out",
    "expired.pem",
    "-startdate",
    "20200101000000Z",
    "-enddate",
    "20200102000000Z",
    "-notext",
  );
  openssl("pkey", "-in", "leaf.key", "-aes256", "-passout", "pass:secret", "-out", "encrypted.key");
  writeFileSync(at("not-pem.txt"), "this is not a certificate\n");
  writeFileSync(at("sibling.txt"), "private\n");
  for (const key of ["ca.key", "leaf.key", "other.key", "expired.key", "encrypted.key"])
    chmodSync(at(key), 0o600);
  return {
    dir,
    chain: at("chain.pem"),
    leafKey: at("leaf.key"),
    ca: at("ca.pem"),
    other: at("other.pem"),
    otherKey: at("other.key"),
    expired: at("expired.pem"),
    expiredKey: at("expired.key"),
    encryptedKey: at("encrypted.key"),
    notPem: at("not-pem.txt"),
    sibling: at("sibling.txt"),
  };
}

/**
 * Signs the leaf's request (leaf.csr, key leaf.key) with the test CA again, with a new serial: a
 * renewed certificate for the same key, written to `name` in `dir` as a chain (leaf, then CA).
 */
export function signLeaf(dir: string, name: string): string {
  execFileSync(
    "openssl",
    [
      "x509",
      "-req",
      "-in",
      "leaf.csr",
      "-CA",
      "ca.pem",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-days",
      "2",
      "-extfile",
      "leaf.ext",
      "-out",
      "leaf.pem",
    ],
    { cwd: dir, stdio: "pipe" },
  );
  const path = join(dir, name);
  writeFileSync(
    path,
    readFileSync(join(dir, "leaf.pem"), "utf8") + readFileSync(join(dir, "ca.pem"), "utf8"),
  );
  return path;
}

/** Replaces `path` in one rename, as a deploy should: `make` writes the new file (or symlink) beside it. */
function replaceBy(path: string, make: (next: string) => void): void {
  const next = `${path}.next`;
  make(next);
  renameSync(next, path);
}

/** Replaces `target` with a copy of `source` the way a deploy should: written beside it, moved over it. */
export const replaceFile = (source: string, target: string) =>
  replaceBy(target, (next) => copyFileSync(source, next));

/**
 * Starts `rt` with `shards` on a fresh port (and `args`), serving copies of the test pair
 * (served.pem and served.key, in a fresh folder), which the test may replace.
 */
export async function startOnCopies(
  rt: RuntimeUnderTest,
  certs: TestCerts,
  shards: number,
  args: string[] = [],
) {
  const dir = mkdtempSync(join(certs.dir, `served-${rt.name}-`));
  const [cert, key] = [join(dir, "served.pem"), join(dir, "served.key")];
  copyFileSync(certs.chain, cert);
  copyFileSync(certs.leafKey, key);
  const tls = ["--tls-cert", cert, "--tls-key", key];
  const app = await start(rt, ["--shards", String(shards), "--port", String(freshPort()), ...args, ...tls]);
  return { app, cert, key };
}

/** The certificates `n` fresh TLS connections got (each a handshake of its own), counted by fingerprint. */
async function fingerprints(url: string, n: number): Promise<Record<string, number>> {
  const seen: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const { fingerprint = "?" } = await get(url);
    seen[fingerprint] = (seen[fingerprint] ?? 0) + 1;
  }
  return seen;
}

/** SHA-256 fingerprint of a PEM certificate file, as Node prints it (`AB:CD:…`). */
export const fingerprintOf = (path: string) => new X509Certificate(readFileSync(path)).fingerprint256;

/** The body of a PEM key (its base64 lines), to look for in logs. */
const keyBody = (path: string) =>
  readFileSync(path, "utf8")
    .split("\n")
    .filter((line) => line && !line.startsWith("-----"));

const shardportLines = (output: string) => output.split("\n").filter((line) => line.startsWith("shardport:"));

/** curl's HTTP version for one request, or undefined when curl or its HTTP/2 is missing. */
function curlVersion(url: string, flag: "--http2" | "--http1.1"): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile("curl", ["-sk", flag, "-o", "/dev/null", "-w", "%{http_version}", url], (error, stdout) =>
      error ? reject(error) : resolve(stdout.trim()),
    ),
  );
}

function curlHttp2(): string | undefined {
  try {
    const version = execFileSync("curl", ["--version"], { encoding: "utf8" });
    return /\bHTTP2\b/.test(version) ? undefined : "curl has no HTTP2 feature";
  } catch {
    return "curl is missing (.ci/run installs it)";
  }
}

/** GET `path` over HTTP/2 with node:http2's client; says which ALPN protocol was agreed. */
async function h2get(url: string, path: string): Promise<{ status: number; body: string; alpn?: string }> {
  const session = http2.connect(url, { rejectUnauthorized: false });
  try {
    return await new Promise((resolve, reject) => {
      session.once("error", reject);
      const request = session.request({ ":path": path });
      let status = 0;
      let body = "";
      request.setEncoding("utf8");
      request.on("response", (headers) => {
        status = Number(headers[":status"]);
      });
      request.on("data", (chunk) => {
        body += chunk;
      });
      request.on("end", () => resolve({ status, body, alpn: session.alpnProtocol }));
      request.on("error", reject);
      request.end();
    });
  } finally {
    session.close();
  }
}

/**
 * One HTTP/2 client that keeps its session, as browsers and gRPC clients do: `concurrency`
 * requests at a time on it, a new session only once the server sent GOAWAY or closed it. Each
 * request carries an `x-id` (test/fixtures/h2-ids.ts logs the ones it ran). Counts apart: streams
 * the server refused (RST_STREAM REFUSED_STREAM, which RFC 9113 8.7 lets a client retry), streams
 * that never left (their new session failed before it opened them: no stream id), and other
 * failures, whose ids are kept. Stops by itself after `maxMs`.
 */
function h2Client(url: string, { concurrency = 2, maxMs = 60_000 } = {}) {
  const stats = {
    ok: 0,
    refused: 0,
    unsent: 0,
    failed: 0,
    sessions: 0,
    errors: [] as string[],
    failedIds: [] as number[],
  };
  let session: http2.ClientHttp2Session;
  const connect = () => {
    const next = http2.connect(url, { rejectUnauthorized: false });
    stats.sessions++;
    next.on("error", () => {});
    const replace = () => {
      if (session === next && !stopped) session = connect();
    };
    next.on("goaway", replace);
    next.on("close", replace);
    return next;
  };
  let stopped = false;
  let ids = 0;
  session = connect();
  const deadline = Date.now() + maxMs;
  const request = (on: http2.ClientHttp2Session) =>
    new Promise<"ok" | "refused" | "unsent">((resolve, reject) => {
      const id = ++ids;
      const stream = on.request({ ":path": "/", "x-id": String(id) });
      let status = 0;
      stream.on("response", (headers) => {
        status = Number(headers[":status"]);
      });
      stream.resume();
      stream.on("error", () => {});
      stream.on("close", () => {
        if (stream.rstCode === http2.constants.NGHTTP2_REFUSED_STREAM) resolve("refused");
        else if (status === 200) resolve("ok");
        else if (stream.id === undefined) resolve("unsent");
        else reject(Object.assign(new Error(`status ${status}, RST_STREAM ${stream.rstCode}`), { id }));
      });
      stream.end();
    });
  const worker = async () => {
    while (!stopped && Date.now() < deadline) {
      try {
        stats[await request(session)]++;
      } catch (error) {
        stats.failed++;
        stats.failedIds.push((error as { id: number }).id);
        if (stats.errors.length < 5) stats.errors.push((error as Error).message);
      }
    }
  };
  const workers = Promise.all(Array.from({ length: concurrency }, worker));
  return {
    stats,
    stop: async () => {
      stopped = true;
      await workers;
      session.close();
      return stats;
    },
  };
}

/** One HTTP/1.1 request on a new TLS connection offering `session`; which shard, and was it resumed. */
export function tlsRequest(
  port: number,
  session?: Buffer,
): Promise<{ shard: string; reused: boolean; session?: Buffer }> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: "127.0.0.1",
      port,
      rejectUnauthorized: false,
      ALPNProtocols: ["http/1.1"],
      session,
    });
    let ticket: Buffer | undefined;
    let text = "";
    socket.setTimeout(5000, () => socket.destroy(new Error("timeout")));
    socket.on("session", (value: Buffer) => {
      ticket = value;
    });
    socket.on("secureConnect", () =>
      socket.write("GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"),
    );
    socket.on("data", (chunk: Buffer) => {
      text += chunk;
    });
    socket.on("end", () => {
      const match = /Hello from PID (\d+) \(shard (\d+)/.exec(text);
      resolve({
        shard: match ? `${match[1]}/${match[2]}` : "?",
        reused: socket.isSessionReused(),
        session: ticket,
      });
    });
    socket.on("error", reject);
  });
}

const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/**
 * `rt` run as a user who cannot read a mode-000 file: this user, or, for root, root without the
 * capabilities that bypass file permissions (setpriv drops them from the bounding set, so the
 * launcher and everything it runs lack them; no other user has to reach the checkout). A string
 * says why that cannot be done here.
 */
function asUser(rt: RuntimeUnderTest, unreadable: string): RuntimeUnderTest | string {
  if (process.getuid?.() !== 0) return rt;
  const drop = ["--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"];
  try {
    execFileSync("setpriv", [...drop, "--", "cat", unreadable], { stdio: "pipe" });
    return "root still reads a mode-000 file after setpriv dropped CAP_DAC_OVERRIDE";
  } catch (error) {
    const stderr = String((error as { stderr?: Buffer }).stderr ?? "");
    if (!/^cat: .*: Permission denied$/m.test(stderr))
      return `setpriv cannot drop capabilities here: ${stderr.trim() || (error as Error).message}`;
  }
  return { ...rt, command: (args) => ["setpriv", ...drop, "--", ...rt.command(args)] };
}

export function httpsSuite(rt: RuntimeUnderTest): void {
  describe(`https on ${rt.name}`, () => {
    let certs: TestCerts;
    before(() => {
      certs = makeCerts();
    });
    after(() => {
      killLeftovers();
      rmSync(certs.dir, { recursive: true, force: true });
    });
    const tlsArgs = () => ["--tls-cert", certs.chain, "--tls-key", certs.leafKey];
    /** shardport with `args` must exit 2 with one `shardport:` line matching `message`, and log no key. */
    const refuses = async (
      runner: RuntimeUnderTest,
      port: string,
      args: string[],
      message: RegExp,
      env?: Record<string, string>,
    ) => {
      const proc = run(runner, ["--shards", "2", "--port", port, ...args], env);
      const code = await proc.exited;
      const lines = shardportLines(proc.output());
      assert.equal(code, 2, `${args.join(" ")}: exit 2\n${proc.output()}`);
      assert.equal(lines.length, 1, `${args.join(" ")}: one line\n${proc.output()}`);
      assert.match(lines[0], message);
      for (const line of keyBody(certs.leafKey)) assert.ok(!proc.output().includes(line), "no key material");
    };

    test("4 shards serve HTTPS: fresh TLS connections spread evenly, h2 by ALPN (curl, node:http2), the chain served whole, key never logged", async (t) => {
      const port = freshPort();
      const app = await start(rt, ["--shards", "4", "--port", String(port), ...tlsArgs()]);
      assert.equal(app.url, `https://127.0.0.1:${port}`, "the listening line says https://");

      const total = 800;
      const counts = await spread(app.url, total);
      const shares = [...counts.values()];
      assert.equal(shares.length, 4, `4 shards answer over TLS: ${JSON.stringify([...counts])}`);
      const { chi2, p } = chiSquaredUniformP(shares);
      assert.ok(
        p > 0.001,
        `uniform spread of TLS connections: counts ${shares}, chi2 ${chi2.toFixed(2)}, p ${p}`,
      );
      for (const share of shares)
        assert.ok(share >= total / 4 / 2, `each shard gets half its fair share: ${shares}`);

      const h2 = await h2get(app.url, "/");
      assert.equal(h2.alpn, "h2");
      assert.equal(h2.status, 200);
      assert.match(h2.body, /Hello from PID \d+ \(shard \d/);
      for (const path of ["/livez", "/readyz"]) {
        assert.equal((await h2get(app.url, path)).status, 200, `${path} over HTTP/2`);
        assert.equal((await get(`${app.url}${path}`)).status, 200, `${path} over HTTPS/1.1`);
      }
      const noCurl = curlHttp2();
      if (noCurl) t.diagnostic(`curl checks skipped: ${noCurl}`);
      else {
        assert.equal(await curlVersion(app.url, "--http2"), "2");
        assert.equal(await curlVersion(app.url, "--http1.1"), "1.1");
      }

      // The whole chain reaches the client: the leaf, then the CA that signed it.
      const peer = await new Promise<tls.DetailedPeerCertificate>((resolve, reject) => {
        const socket = tls.connect({ host: "127.0.0.1", port, rejectUnauthorized: false }, () => {
          resolve(socket.getPeerCertificate(true));
          socket.end();
        });
        socket.on("error", reject);
      });
      assert.equal(peer.fingerprint256, fingerprintOf(certs.chain));
      assert.equal(peer.issuerCertificate?.fingerprint256, fingerprintOf(certs.ca));
      // And a client that trusts only the CA verifies the server (no -k).
      const verified = await new Promise<boolean>((resolve, reject) => {
        const socket = tls.connect(
          { host: "127.0.0.1", port, servername: "localhost", ca: readFileSync(certs.ca) },
          () => {
            resolve(socket.authorized);
            socket.end();
          },
        );
        socket.on("error", reject);
      });
      assert.ok(verified, "the chain verifies against the CA");

      // No key material in any log line, nor in a shard's environment (only the two paths).
      for (const line of keyBody(certs.leafKey))
        assert.ok(!app.output().includes(line), "the key is never logged");
      for (const pid of childrenOf(app.launcherPid)) {
        const environ = readFileSync(`/proc/${pid}/environ`, "utf8");
        assert.doesNotMatch(environ, /PRIVATE KEY|ticket/i, "no key or ticket key in a shard's environment");
        assert.ok(environ.includes(certs.leafKey), "the shard is told the key's path");
      }
      process.kill(app.launcherPid, "SIGTERM");
      assert.equal(await app.exited, 0);
      assert.ok(await portIsFree(port));
    });

    test("over TLS: status, plain-HTTP metrics on their own port, `reload` to new shards", async () => {
      const port = freshPort();
      const metricsPort = freshPort();
      const app = await start(rt, [
        "--shards",
        "2",
        "--port",
        String(port),
        "--metrics-port",
        String(metricsPort),
        ...tlsArgs(),
      ]);
      const before = await shardPids(app.url, 2);
      assert.equal(before.size, 2);
      const status = run(rt, ["status", "--port", String(port)]);
      assert.equal(await status.exited, 0, status.output());
      assert.match(status.output(), /^https:\/\/127\.0\.0\.1:\d+: /m);
      assert.equal(
        status
          .output()
          .split("\n")
          .filter((line) => /^\d+\s+pid \d+\s+ready/.test(line)).length,
        2,
      );
      const metrics = await get(`http://127.0.0.1:${metricsPort}/metrics`);
      assert.equal(metrics.status, 200, "metrics stay plain HTTP");
      assert.match(metrics.body, /^shardport_requests_total\{shard="\d+",status="200"\} \d+$/m);
      const reload = run(rt, ["reload", "--port", String(port)]);
      assert.equal(await reload.exited, 0, reload.output());
      assert.match(reload.output(), /^shardport: reloaded https:\/\/127\.0\.0\.1:\d+ \(launcher pid \d+\)/m);
      await app.waitFor(/reload done: 2 shards replaced/);
      const after = await shardPids(app.url, 2);
      assert.ok(
        [...after].every((pid) => !before.has(pid)),
        "new shards after reload, serving HTTPS",
      );
      process.kill(app.launcherPid, "SIGTERM");
      assert.equal(await app.exited, 0);
    });

    test("a pair changed on disk without a reload reaches no shard: crash restarts and scale-ups (processes, threads) serve their generation's pair; a reload brings the new one", async () => {
      const [old, next] = [fingerprintOf(certs.chain), fingerprintOf(certs.other)];
      const { app, cert, key } = await startOnCopies(rt, certs, 2);
      const restarts = () => (app.output().match(/shard \d+ restarted as/g) ?? []).length;
      assert.deepEqual(await fingerprints(app.url, 10), { [old]: 10 });
      // A new matching pair on disk, no reload: a crash restart still serves the old one.
      replaceFile(certs.otherKey, key);
      replaceFile(certs.other, cert);
      assert.deepEqual(await fingerprints(app.url, 10), { [old]: 10 }, "before the restart");
      process.kill(childrenOf(app.launcherPid)[0], "SIGKILL");
      assert.ok(await eventually(() => restarts() === 1, 20_000), `restarted\n${app.output()}`);
      assert.equal((await shardPids(app.url, 2)).size, 2, "both shards serve");
      assert.deepEqual(await fingerprints(app.url, 30), { [old]: 30 }, `after the restart\n${app.output()}`);
      process.kill(app.launcherPid, "SIGTTIN");
      await app.waitFor(/scale done: 2 -> 3 shards/);
      assert.deepEqual(await fingerprints(app.url, 30), { [old]: 30 }, `after the scale-up\n${app.output()}`);
      // The reload serves the new pair; the old one back on disk then reaches no restarted shard.
      process.kill(app.launcherPid, "SIGHUP");
      await app.waitFor(/reload done: 3 shards replaced in \d+ ms \(generation 1\)/);
      assert.ok(await eventually(() => childrenOf(app.launcherPid).length === 3, 10_000), "old shards gone");
      assert.deepEqual(await fingerprints(app.url, 20), { [next]: 20 }, "after the reload");
      replaceFile(certs.leafKey, key);
      replaceFile(certs.chain, cert);
      process.kill(childrenOf(app.launcherPid)[2], "SIGKILL");
      assert.ok(await eventually(() => restarts() === 2, 20_000), `restarted\n${app.output()}`);
      assert.equal((await shardPids(app.url, 3)).size, 3, "every shard serves");
      assert.deepEqual(await fingerprints(app.url, 30), { [next]: 30 }, `after a restart\n${app.output()}`);
      process.kill(app.launcherPid, "SIGTERM");
      assert.equal(await app.exited, 0);

      // Threads mode: no shard can be killed alone, but a scale-up starts one.
      const threads = await startOnCopies(rt, certs, 1, ["--mode", "threads"]);
      replaceFile(certs.otherKey, threads.key);
      replaceFile(certs.other, threads.cert);
      process.kill(threads.app.launcherPid, "SIGTTIN");
      await threads.app.waitFor(/scale done: 1 -> 2 shards/);
      assert.deepEqual(
        await fingerprints(threads.app.url, 30),
        { [old]: 30 },
        `threads, after the scale-up\n${threads.app.output()}`,
      );
      process.kill(threads.app.launcherPid, "SIGTERM");
      assert.equal(await threads.app.exited, 0);
    });

    test("half a deploy (the certificate replaced, not yet its key): a crashed shard restarts and serves the old pair, no slot is lost; the reload is refused until the key follows", async () => {
      const [old, next] = [fingerprintOf(certs.chain), fingerprintOf(certs.other)];
      const { app, cert, key } = await startOnCopies(rt, certs, 2);
      replaceFile(certs.other, cert);
      process.kill(childrenOf(app.launcherPid)[0], "SIGKILL");
      assert.ok(
        await eventually(() => /shard \d+ restarted as/.test(app.output()), 20_000),
        `restarted\n${app.output()}`,
      );
      assert.equal((await shardPids(app.url, 2)).size, 2, "both shards serve");
      assert.deepEqual(await fingerprints(app.url, 30), { [old]: 30 }, `after the restart\n${app.output()}`);
      process.kill(app.launcherPid, "SIGHUP");
      await app.waitFor(/reload refused: TLS key .*served\.key does not match the certificate/);
      assert.deepEqual(await fingerprints(app.url, 10), { [old]: 10 }, "after the refused reload");
      replaceFile(certs.otherKey, key);
      process.kill(app.launcherPid, "SIGHUP");
      await app.waitFor(/reload done: 2 shards replaced in \d+ ms \(generation 1\)/);
      assert.ok(await eventually(() => childrenOf(app.launcherPid).length === 2, 10_000), "old shards gone");
      assert.deepEqual(await fingerprints(app.url, 20), { [next]: 20 }, "after the reload");
      assert.doesNotMatch(app.output(), /mismatch|failed to start|giving up/i);
      process.kill(app.launcherPid, "SIGTERM");
      assert.equal(await app.exited, 0);
    });

    test("--watch: a renewed certificate (a Kubernetes Secret's swap, certbot's symlink, a file moved over it, a link to a link swapped) reloads the shards; every new TLS connection then gets it", async (t) => {
      // The key stays; each renewal is a certificate with a new serial. First, laid out as the
      // kubelet mounts a Secret: tls.crt -> ..data/tls.crt, ..data -> ..v0, updated by swapping ..data.
      const secret = mkdtempSync(join(certs.dir, `secret-${rt.name}-`));
      const version = (n: number) => {
        mkdirSync(join(secret, `..v${n}`));
        copyFileSync(signLeaf(certs.dir, `renewed-${rt.name}-${n}.pem`), join(secret, `..v${n}`, "tls.crt"));
        return `..v${n}`;
      };
      symlinkSync(version(0), join(secret, "..data"));
      const cert = join(secret, "tls.crt");
      symlinkSync("..data/tls.crt", cert);
      const live = `${secret}-live`;
      const archive = `${secret}-archive`;
      mkdirSync(archive);
      for (const n of [4, 5])
        copyFileSync(signLeaf(certs.dir, `renewed-${rt.name}-${n}.pem`), join(archive, `${n}.pem`));
      const app = await start(rt, [
        "--shards",
        "2",
        "--port",
        String(freshPort()),
        "--tls-cert",
        cert,
        "--tls-key",
        certs.leafKey,
        "--watch",
      ]);
      assert.match(app.output(), /watching .*, .*tls\.crt, .*leaf\.key for changes/);
      const renewals: [string, () => void][] = [
        [
          "Secret updated",
          () => {
            replaceBy(join(secret, "..data"), (next) => symlinkSync(version(1), next));
            rmSync(join(secret, "..v0"), { recursive: true }); // as the kubelet does
          },
        ],
        // certbot: live/…/cert.pem is a symlink, pointed at a new file in archive/.
        [
          "symlink swapped",
          () => replaceBy(cert, (next) => symlinkSync(signLeaf(certs.dir, `renewed-${rt.name}-2.pem`), next)),
        ],
        // As the README says: a new file written beside it, moved over the path.
        [
          "file moved over",
          () =>
            replaceBy(cert, (next) => copyFileSync(signLeaf(certs.dir, `renewed-${rt.name}-3.pem`), next)),
        ],
        // Two links in two other folders, as a copy of certbot's layout is linked into an app's
        // folder (cert -> live/fullchain.pem -> archive file): then only the link in live/ changes.
        [
          "linked to certbot's live/",
          () => {
            mkdirSync(live);
            symlinkSync(join(archive, "4.pem"), join(live, "fullchain.pem"));
            replaceBy(cert, (next) => symlinkSync(join(live, "fullchain.pem"), next));
          },
        ],
        // Only live/ sees this one (archive/5.pem was written before the start).
        [
          "live/ link swapped",
          () => replaceBy(join(live, "fullchain.pem"), (next) => symlinkSync(join(archive, "5.pem"), next)),
        ],
      ];
      const traffic = load(app.url, { concurrency: 2 });
      try {
        for (const [index, [how, renew]] of renewals.entries()) {
          const old = fingerprintOf(cert);
          renew();
          const fresh = fingerprintOf(cert);
          assert.notEqual(fresh, old);
          const served = async () => (await get(app.url).catch(() => undefined))?.fingerprint === fresh;
          assert.ok(
            await eventually(served, 10_000),
            `${how}: a new TLS connection gets the new certificate within 10 s\n${app.output()}`,
          );
          await app.waitFor(
            new RegExp(`reload done: 2 shards replaced in \\d+ ms \\(generation ${index + 1}\\)`),
          );
          // Once the old shards are gone, no connection can reach one (nor be reset as it closes).
          assert.ok(
            await eventually(() => childrenOf(app.launcherPid).length === 2, 10_000),
            "old shards gone",
          );
          for (let i = 0; i < 10; i++)
            assert.equal(
              (await get(app.url)).fingerprint,
              fresh,
              `${how}: every new connection after the reload`,
            );
        }
      } finally {
        await traffic.stop();
      }
      const reloads = app.output().match(/watch: .*tls\.crt changed, reloading/g) ?? [];
      assert.equal(reloads.length, renewals.length, "one reload per renewal");
      // Without tcp_migrate_req=1 (the fault suite's namespace sets it), a closing listener's
      // queue may be reset: counted, checked only where the kernel migrates it.
      const { stats } = traffic;
      const migrates = readFileSync("/proc/sys/net/ipv4/tcp_migrate_req", "utf8").trim() === "1";
      t.diagnostic(
        `${rt.name}: ${stats.ok} ok, ${stats.failed} failed during ${renewals.length} reloads by --watch (tcp_migrate_req ${migrates ? 1 : 0})`,
      );
      if (migrates) assertNoneLost(stats);
      assert.equal(stats.non2xx, 0);
      process.kill(app.launcherPid, "SIGTERM");
      assert.equal(await app.exited, 0);
    });

    // Node 20 too: before 24, Node's server.close() sent HTTP/2 sessions no GOAWAY.
    const servers = {
      node: [
        { name: "node", on: rt, extra: [] },
        { name: "node20", on: RUNTIMES.node20, extra: [] },
      ],
      deno: [
        { name: "deno", on: rt, extra: [] },
        { name: "deno --http node", on: rt, extra: ["--http", "node"] },
      ],
      bun: [{ name: "bun", on: rt, extra: [] }],
    }[rt.runtime];
    for (const server of servers) {
      test(`${server.name}: an HTTP/2 client that keeps its session does not hold a reload to --drain-timeout: each old shard closes its sessions (GOAWAY); every stream is answered, or refused or failed before the app saw it (to retry)`, async (t) => {
        const app = await start(server.on, [
          "--shards",
          "2",
          "--port",
          String(freshPort()),
          "--drain-timeout",
          "15000",
          ...server.extra,
          ...tlsArgs(),
          "test/fixtures/h2-ids.ts",
        ]);
        const client = h2Client(app.url);
        try {
          assert.ok(await eventually(() => client.stats.ok >= 100, 10_000), "the session serves");
          const old = childrenOf(app.launcherPid);
          const started = Date.now();
          process.kill(app.launcherPid, "SIGHUP");
          await app.waitFor(/reload done: 2 shards replaced/, 30_000);
          // The old shards exit once their connections are gone: the client's session too.
          assert.ok(await eventually(() => !old.some(isAlive), 30_000), "the old shards exit");
          const drained = Date.now() - started;
          const mark = client.stats.ok;
          assert.ok(await eventually(() => client.stats.ok >= mark + 100, 10_000), "served after the reload");
          const stats = await client.stop();
          t.diagnostic(
            `${server.name}: reload of 2 shards with one h2 client: old shards gone ${drained} ms after SIGHUP; ${stats.ok} ok, ${stats.refused} refused, ${stats.unsent} unsent, ${stats.failed} failed (${stats.errors.join("; ")}), ${stats.sessions} sessions`,
          );
          assert.ok(
            drained < 5000,
            `old shards gone after ${drained} ms, --drain-timeout is 15000\n${app.output()}`,
          );
          assert.doesNotMatch(app.output(), /drain timeout/);
          assert.ok(stats.sessions >= 2, "the client was told to reconnect");
          // Streams on their way as the GOAWAY left are refused, unprocessed (RFC 9113 8.7); a
          // stream on a new session that failed to open (a connection reset as an old listener
          // closed: no tcp_migrate_req here) never left. A client may send both again.
          assert.ok(stats.refused + stats.unsent <= 10, `${stats.refused} refused, ${stats.unsent} unsent`);
          // Deno's own server admits the streams that arrive between its first GOAWAY and its
          // last (last-stream-id covers them) but never runs them, then closes the connection:
          // the client sees them cancelled. They must be ones the app never saw.
          // A shard's log line may reach the launcher's output after its response: wait for all.
          const ran = () => new Set(app.output().match(/seen \d+/g));
          assert.ok(await eventually(() => ran().size >= stats.ok, 5000), "each stream answered was run");
          const seen = ran();
          for (const id of stats.failedIds) assert.ok(!seen.has(`seen ${id}`), `failed stream ${id} was run`);
          // At most the streams in flight (2) on each session an old shard sent away.
          if (server.name === "deno")
            assert.ok(stats.failed <= 2 * (stats.sessions - 1), stats.errors.join("\n"));
          else assert.equal(stats.failed, 0, stats.errors.join("\n"));
        } finally {
          await client.stop();
        }
        process.kill(app.launcherPid, "SIGTERM");
        assert.equal(await app.exited, 0);
      });
    }

    test("session resumption across shards (Node: shared ticket keys; Bun, Deno: per process)", async (t) => {
      const port = freshPort();
      const app = await start(rt, ["--shards", "2", "--port", String(port), ...tlsArgs()]);
      // TLS 1.3 tickets arrive after the handshake: wait for the first response before reusing.
      const first = await tlsRequest(port);
      assert.ok(first.session, "the server issued a session ticket");
      const byShard = new Map<string, { reused: number; full: number }>();
      for (let i = 0; i < 40; i++) {
        const next = await tlsRequest(port, first.session);
        const entry = byShard.get(next.shard) ?? { reused: 0, full: 0 };
        entry[next.reused ? "reused" : "full"]++;
        byShard.set(next.shard, entry);
      }
      t.diagnostic(`${rt.name}: resumption by shard ${JSON.stringify([...byShard])}`);
      assert.equal(byShard.size, 2, "both shards answered");
      if (rt.runtime === "node") {
        for (const [shard, { full }] of byShard)
          assert.equal(full, 0, `every connection to shard ${shard} resumed the first shard's session`);
      }
      process.kill(app.launcherPid, "SIGTERM");
      assert.equal(await app.exited, 0);
    });

    test("threads mode serves HTTPS and h2; an expired certificate warns and still serves; a key others can read warns", async () => {
      chmodSync(certs.expiredKey, 0o644);
      try {
        const app = await start(rt, [
          "--shards",
          "2",
          "--port",
          String(freshPort()),
          "--mode",
          "threads",
          "--tls-cert",
          certs.expired,
          "--tls-key",
          certs.expiredKey,
        ]);
        assert.match(app.output(), /TLS certificate .*expired\.pem expired on Jan {1,2}2 00:00:00 2020 GMT/);
        assert.match(app.output(), /TLS key .*expired\.key is readable by every user \(mode 644\)/);
        const h2 = await h2get(app.url, "/");
        assert.equal(h2.alpn, "h2");
        assert.equal(h2.status, 200);
        const reply = await get(app.url);
        assert.equal(reply.fingerprint, fingerprintOf(certs.expired));
        if (rt.runtime === "node") {
          // Shard threads share the ticket keys too: a session one thread made resumes on both.
          const port = Number(new URL(app.url).port);
          const first = await tlsRequest(port);
          const resumedOn = new Set<string>();
          for (let i = 0; i < 40 && resumedOn.size < 2; i++) {
            const next = await tlsRequest(port, first.session);
            assert.ok(next.reused, `shard ${next.shard} did not resume the session`);
            resumedOn.add(next.shard);
          }
          assert.equal(resumedOn.size, 2, "both shard threads resumed it");
        }
        process.kill(app.launcherPid, "SIGTERM");
        assert.equal(await app.exited, 0);
      } finally {
        chmodSync(certs.expiredKey, 0o600);
      }
      const quiet = await start(rt, ["--shards", "1", "--port", String(freshPort()), ...tlsArgs()]);
      assert.doesNotMatch(
        quiet.output(),
        /readable by every user|expired/,
        "no warning for a 0600 key in date",
      );
      process.kill(quiet.launcherPid, "SIGTERM");
      assert.equal(await quiet.exited, 0);
    });

    test("bad TLS input: one line naming the file and the problem, exit 2, nothing listening", async () => {
      const port = String(freshPort());
      const missing = join(certs.dir, "missing.pem");
      const cases: [string[], RegExp, Record<string, string>?][] = [
        [
          ["--tls-cert", certs.chain],
          /--tls-cert needs --tls-key \(or TLS_KEY\): give both files or neither/,
        ],
        [[], /TLS_KEY needs --tls-cert \(or TLS_CERT\)/, { TLS_KEY: certs.leafKey }],
        [["--tls-cert", missing, "--tls-key", certs.leafKey], /TLS certificate .*missing\.pem: not found/],
        [["--tls-cert", certs.chain, "--tls-key", certs.dir], /TLS key .* is a directory, not a file/],
        [
          ["--tls-cert", certs.notPem, "--tls-key", certs.leafKey],
          /TLS certificate .*not-pem\.txt is not PEM/,
        ],
        [["--tls-cert", certs.chain, "--tls-key", certs.notPem], /TLS key .*not-pem\.txt is not PEM/],
        [
          ["--tls-cert", certs.chain, "--tls-key", certs.chain],
          /TLS key .*chain\.pem is not PEM: it holds no private key/,
        ],
        [
          ["--tls-cert", certs.leafKey, "--tls-key", certs.leafKey],
          /TLS certificate .*leaf\.key is not PEM: it holds no CERTIFICATE block/,
        ],
        [
          ["--tls-cert", certs.chain, "--tls-key", certs.otherKey],
          /TLS key .*other\.key does not match the certificate .*chain\.pem/,
        ],
        [
          ["--tls-cert", certs.chain, "--tls-key", certs.encryptedKey],
          /TLS key .*encrypted\.key is encrypted/,
        ],
        [
          [],
          /TLS key .*other\.key does not match the certificate .*chain\.pem/,
          { TLS_CERT: certs.chain, TLS_KEY: certs.otherKey },
        ],
      ];
      await Promise.all(cases.map(([args, message, env]) => refuses(rt, port, args, message, env)));
      assert.ok(await portIsFree(Number(port)), "no shard started");
    });

    test("files the launcher cannot read (as root: with CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH dropped): one line naming the file, exit 2, nothing listening", async (t) => {
      const dir = mkdtempSync(join(certs.dir, "unreadable-"));
      const key = join(dir, "unreadable.key");
      const cert = join(dir, "unreadable.pem");
      const closed = join(dir, "closed");
      writeFileSync(key, readFileSync(certs.leafKey), { mode: 0o000 });
      writeFileSync(cert, readFileSync(certs.chain), { mode: 0o000 });
      mkdirSync(closed);
      copyFileSync(certs.leafKey, join(closed, "leaf.key"));
      chmodSync(closed, 0o000);
      try {
        const user = asUser(rt, key);
        if (typeof user === "string") return t.skip(user);
        const port = String(freshPort());
        const cases: [string, string, string][] = [
          [certs.chain, key, `TLS key ${key}`],
          [cert, certs.leafKey, `TLS certificate ${cert}`],
          [certs.chain, join(closed, "leaf.key"), `TLS key ${closed}/leaf.key`],
        ];
        await Promise.all(
          cases.map(([certFile, keyFile, what]) =>
            refuses(
              user,
              port,
              ["--tls-cert", certFile, "--tls-key", keyFile],
              new RegExp(`^${escapeRegExp(`shardport: error: ${what}: not readable (permission denied)`)}$`),
            ),
          ),
        );
        assert.ok(await portIsFree(Number(port)), "no shard started");
      } finally {
        chmodSync(closed, 0o700);
      }
    });

    test("deploy/: the container entrypoint serves HTTPS from TLS_CERT and TLS_KEY, probes answer over TLS", async () => {
      const entry: RuntimeUnderTest = { ...rt, command: (args) => ["deploy/entrypoint.sh", ...args] };
      const port = freshPort();
      const app = await start(entry, ["--shards", "2"], {
        RUNTIME: rt.runtime,
        HOST: "127.0.0.1",
        PORT: String(port),
        TLS_CERT: certs.chain,
        TLS_KEY: certs.leafKey,
      });
      assert.equal(app.url, `https://127.0.0.1:${port}`);
      for (const path of ["/readyz", "/livez"]) assert.equal((await get(`${app.url}${path}`)).status, 200);
      process.kill(app.launcherPid, "SIGTERM");
      assert.equal(await app.exited, 0);
      if (rt.runtime !== "node") return;
      // The manifests (checked once): the Secret as files, HTTPS probes, no key material.
      const yaml = readFileSync(join(ROOT, "deploy", "kubernetes-tls.yaml"), "utf8");
      assert.doesNotMatch(yaml, /BEGIN|tls\.key:\s*\S{20}/, "no PEM in the manifest");
      const docs = parseAllDocuments(yaml).map((doc) => doc.toJS());
      const pod = docs.find((doc) => doc.kind === "Deployment").spec.template.spec;
      const container = pod.containers[0];
      const env = new Map(container.env.map((e: { name: string; value: string }) => [e.name, e.value]));
      const mount = container.volumeMounts.find((m: { name: string }) => m.name === "tls");
      const volume = pod.volumes.find((v: { name: string }) => v.name === "tls");
      assert.ok(volume.secret.secretName);
      assert.equal(volume.secret.defaultMode & 0o004, 0, "the key is not readable by every user");
      assert.equal(env.get("TLS_CERT"), `${mount.mountPath}/tls.crt`);
      assert.equal(env.get("TLS_KEY"), `${mount.mountPath}/tls.key`);
      for (const probe of [container.readinessProbe, container.livenessProbe])
        assert.equal(probe.httpGet.scheme, "HTTPS");
      const dropIn = readFileSync(join(ROOT, "deploy", "shardport-tls.conf"), "utf8");
      const credentials = [...dropIn.matchAll(/^LoadCredential=([\w.]+):(\S+)$/gm)].map((m) => m[1]);
      assert.deepEqual(credentials, ["tls.crt", "tls.key"]);
      assert.match(dropIn, /^Environment=TLS_CERT=%d\/tls\.crt TLS_KEY=%d\/tls\.key /m);
    });

    if (rt.runtime === "deno") {
      for (const extra of [[], ["--http", "node"], ["--mode", "threads"]]) {
        test(`deno ${extra.join(" ") || "native"}: h2 over TLS; a shard may read neither TLS file (the launcher hands it the PEM), nor their folder`, async () => {
          const app = await start(
            rt,
            [
              "--shards",
              "2",
              "--port",
              String(freshPort()),
              ...extra,
              ...tlsArgs(),
              "test/fixtures/deno-tls-read.ts",
            ],
            { PROBE_FILES: [certs.chain, certs.leafKey, certs.sibling].join(",") },
          );
          const h2 = await h2get(app.url, "/");
          assert.equal(h2.alpn, "h2");
          assert.deepEqual(JSON.parse(h2.body), {
            [certs.chain]: "NotCapable",
            [certs.leafKey]: "NotCapable",
            [certs.sibling]: "NotCapable",
          });
          process.kill(app.launcherPid, "SIGTERM");
          assert.equal(await app.exited, 0);
        });
      }
    }
  });
}
