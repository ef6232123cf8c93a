/**
 * Certificate rotation by rolling reload, under load, inside the fault tests' private network
 * namespace (tcp_migrate_req=1, test/netns.sh). Called from test/faults/<runtime>.test.ts.
 * @module
 */
import assert from "node:assert/strict";
import { renameSync, rmSync, writeFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { assertNoneLost, eventually, get, killLeftovers, load, type RuntimeUnderTest } from "./helpers.ts";
import { fingerprintOf, makeCerts, replaceFile, startOnCopies, type TestCerts } from "./https.ts";

const noNetns = process.env.SHARDPORT_NO_NETNS;

export function tlsRotationSuite(rt: RuntimeUnderTest): void {
  describe(`certificate rotation on ${rt.name}`, {
    skip: noNetns ? `no private network namespace: ${noNetns}` : false,
  }, () => {
    let certs: TestCerts;
    before(() => {
      certs = makeCerts();
    });
    after(() => {
      killLeftovers();
      rmSync(certs.dir, { recursive: true, force: true });
    });

    test("new files + SIGHUP under HTTPS load (each runtime's own server): 0 failed, every new TLS connection after it gets the new certificate; bad files refuse the reload", async () => {
      const { app, cert, key } = await startOnCopies(rt, certs, 4);
      assert.doesNotMatch(app.output(), /tcp_migrate_req is 0/);
      const [before, next] = [fingerprintOf(certs.chain), fingerprintOf(certs.other)];
      assert.equal((await get(app.url)).fingerprint, before);

      const traffic = load(app.url, { concurrency: 8 });
      for (const [generation, [newCert, newKey]] of [
        [certs.other, certs.otherKey],
        [certs.chain, certs.leafKey],
        [certs.other, certs.otherKey],
      ].entries()) {
        const mark = traffic.stats.ok;
        assert.ok(await eventually(() => traffic.stats.ok >= mark + 300, 20_000), "the load is flowing");
        replaceFile(newKey, key);
        replaceFile(newCert, cert);
        process.kill(app.launcherPid, "SIGHUP");
        await app.waitFor(
          new RegExp(`reload done: 4 shards replaced in \\d+ ms \\(generation ${generation + 1}\\)`),
        );
      }
      const mark = traffic.stats.ok;
      assert.ok(
        await eventually(() => traffic.stats.ok >= mark + 300, 20_000),
        "the load flows after the reloads",
      );
      const stats = await traffic.stop();
      console.log(
        `${rt.name}: 3 certificate rotations of 4 shards under HTTPS load, ${stats.ok} requests ok, ${stats.failed} failed, ${stats.non2xx} non-2xx`,
      );
      assertNoneLost(stats);
      assert.equal(stats.non2xx, 0);
      for (let i = 0; i < 40; i++)
        assert.equal((await get(app.url)).fingerprint, next, "every new connection gets the new certificate");

      // A reload with a broken key is refused before any shard is replaced: the service goes on.
      writeFileSync(`${key}.new`, "not a key\n");
      renameSync(`${key}.new`, key);
      process.kill(app.launcherPid, "SIGHUP");
      await app.waitFor(/reload refused: TLS key .*served\.key is not PEM; the running shards keep serving/);
      assert.equal((await get(app.url)).fingerprint, next);
      process.kill(app.launcherPid, "SIGTERM");
      assert.equal(await app.exited, 0);
    });
  });
}
