// deploy/ as a user runs it: the Docker build context and image settings, the Kubernetes pod's
// security fields, the systemd unit's sandbox (verify, security score, the launcher inside it),
// the CI job that builds and smoke-tests the images, and the container-aware migration warning.
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { parse, parseAllDocuments } from "yaml";
import { type Host, migrateWarning } from "../src/launcher/migrate-warning.ts";
import {
  eventually,
  freshPort,
  get,
  killLeftovers,
  listenAddresses,
  ROOT,
  type RuntimeUnderTest,
  run,
} from "./helpers.ts";

after(killLeftovers);

// A CommonJS module whose types declare a default export: required, with those types.
const ignore: typeof import("@balena/dockerignore").default = createRequire(import.meta.url)(
  "@balena/dockerignore",
);

const read = (path: string) => readFileSync(join(ROOT, path), "utf8");
const succeeds = (command: string, args: string[]) =>
  spawnSync(command, args, { stdio: "ignore" }).status === 0;
const isRoot = process.getuid?.() === 0;

/** The unit's [Service] settings, in order (a key may repeat). */
function serviceSettings(text: string): [string, string][] {
  const settings: [string, string][] = [];
  let section = "";
  for (const line of text.split("\n").map((l) => l.trim())) {
    if (line.startsWith("[")) section = line;
    const match = /^(\w+)=(.*)$/.exec(line);
    if (section === "[Service]" && match) settings.push([match[1], match[2]]);
  }
  return settings;
}

const LAUNCHER_READY = /listening on (\S+) with (\d+) shards \((\w+) [\d.]+, launcher pid (\d+)\)/;

/** Starts, reloads (SIGHUP) and stops (SIGTERM) a launcher already running under `proc`. */
async function serveReloadStop(proc: ReturnType<typeof run>, signal: (sig: "SIGHUP" | "SIGTERM") => void) {
  const [, url, , runtime] = await proc.waitFor(LAUNCHER_READY, 60_000);
  assert.match((await get(`${url}/`)).body, new RegExp(`Hello from PID \\d+ \\(shard \\d, ${runtime}\\)`));
  signal("SIGHUP");
  await proc.waitFor(/reload done: 2 shards replaced/, 60_000);
  // The last old shard is still closing its listener: outside a namespace with tcp_migrate_req=1,
  // a connection queued there at that moment is reset. Ask once only the 2 new listeners remain.
  const port = Number(new URL(url).port);
  assert.ok(await eventually(() => listenAddresses(port).length === 2, 10_000), "the old listeners closed");
  assert.equal((await get(`${url}/readyz`)).status, 200);
  signal("SIGTERM");
  assert.equal(await proc.exited, 0, proc.output());
  assert.match(proc.output(), /"message":"stopped"/);
}

describe("Docker", () => {
  test(".dockerignore keeps node_modules, dist, .git, bench results and test output out of the context", () => {
    const rules = ignore().add(read(".dockerignore"));
    for (const path of [
      "node_modules/hono/package.json",
      "tools/node_modules/deno/package.json",
      "dist/node.js",
      ".git/HEAD",
      "bench/results/latest.json",
      "test/.tmp/run.log",
      "npm-debug.log",
    ]) {
      assert.ok(rules.ignores(path), `${path} stays out of the image`);
    }
    const dockerfile = read("deploy/Dockerfile");
    const copied = [...dockerfile.matchAll(/^COPY (?!--from=)(.+) \S+$/gm)].flatMap((m) => m[1].split(" "));
    for (const path of [
      ...copied.filter((p) => p !== "."),
      "deploy/entrypoint.sh",
      "runtimes/bun.ts",
      "src/app.ts",
    ]) {
      assert.ok(!rules.ignores(path), `${path} is in the build context`);
    }
  });

  test("Dockerfile: a numeric non-root USER; what it writes goes to /tmp", () => {
    const dockerfile = read("deploy/Dockerfile");
    const user = /^USER (\d+):(\d+)$/m.exec(dockerfile);
    assert.ok(user && Number(user[1]) > 0, "a numeric user, not root (runAsNonRoot can check it)");
    assert.match(dockerfile, /DENO_DIR=\/tmp\/deno/);
    assert.doesNotMatch(dockerfile, /XDG_RUNTIME_DIR/, "the control files go to the writable /tmp");
    const pod = kubernetesPod();
    assert.equal(String(pod.securityContext.runAsUser), user[1], "the pod runs as the image's user");
  });

  test("CI builds and smoke-tests the image of every runtime", () => {
    const workflow = parse(read(".github/workflows/ci.yml"));
    const job = workflow.jobs.image;
    assert.deepEqual(job.strategy.matrix.runtime, ["bun", "deno", "node"]);
    const script = job.steps.map((step: { run?: string }) => step.run ?? "").join("\n");
    assert.match(
      script,
      /docker build -f deploy\/Dockerfile --build-arg RUNTIME=\$\{\{ matrix\.runtime \}\}/,
    );
    assert.match(script, /test\/image-smoke\.sh shardport:\$\{\{ matrix\.runtime \}\}/);
    const smoke = read("test/image-smoke.sh");
    for (const part of [
      /docker run -d .*--read-only --tmpfs \/tmp/,
      /--sysctl net\.ipv4\.tcp_migrate_req=1/,
      /Hello from PID/,
      /\/readyz/,
      /docker stop/,
      /stopping: draining/,
    ]) {
      assert.match(smoke, part);
    }
    execFileSync("bash", ["-n", join(ROOT, "test", "image-smoke.sh")]);
    // The test job runs this file too.
    assert.match(
      workflow.jobs.test.steps.map((s: { run?: string }) => s.run ?? "").join("\n"),
      /test\/deploy\.test\.ts/,
    );
  });
});

function kubernetesPod(file = "deploy/kubernetes.yaml") {
  const docs = parseAllDocuments(read(file)).map((d) => d.toJS());
  return docs.find((d) => d.kind === "Deployment").spec.template.spec;
}

describe("Kubernetes", () => {
  for (const file of ["deploy/kubernetes.yaml", "deploy/kubernetes-tls.yaml"])
    test(`${file}: the pod passes Pod Security Standards "restricted" and asks for tcp_migrate_req=1`, () => {
      const pod = kubernetesPod(file);
      assert.equal(pod.securityContext.runAsNonRoot, true);
      assert.ok(pod.securityContext.runAsUser > 0);
      assert.equal(pod.securityContext.seccompProfile.type, "RuntimeDefault");
      assert.deepEqual(pod.securityContext.sysctls, [{ name: "net.ipv4.tcp_migrate_req", value: "1" }]);
      assert.match(read(file), /--allowed-unsafe-sysctls=net\.ipv4\.tcp_migrate_req/);
      assert.ok(!pod.hostNetwork && !pod.hostPID && !pod.hostIPC);
      for (const container of [...pod.containers, ...(pod.initContainers ?? [])]) {
        const context = container.securityContext;
        assert.equal(context.allowPrivilegeEscalation, false);
        assert.equal(context.readOnlyRootFilesystem, true);
        assert.deepEqual(context.capabilities, { drop: ["ALL"] });
        assert.notEqual(context.privileged, true);
        assert.notEqual(context.runAsUser, 0);
        // The one writable place, where the launcher puts its pid file and control socket.
        const tmp = container.volumeMounts.find((m: { mountPath: string }) => m.mountPath === "/tmp");
        const volume = pod.volumes.find((v: { name: string }) => v.name === tmp.name);
        assert.ok(volume.emptyDir, "an emptyDir");
      }
      // Only the volume types "restricted" allows.
      for (const volume of pod.volumes) {
        const [kind] = Object.keys(volume).filter((k) => k !== "name");
        assert.ok(["emptyDir", "configMap", "secret", "projected", "persistentVolumeClaim"].includes(kind));
      }
    });
});

describe("systemd", () => {
  const unitText = read("deploy/shardport.service");
  const settings = serviceSettings(unitText);
  const haveAnalyze = succeeds("systemd-analyze", ["--version"]);
  const noAnalyze = haveAnalyze ? false : "systemd-analyze is missing (Debian package systemd)";

  /** The unit with its executables and directory rewritten to this checkout. */
  function localUnit(): string {
    const dir = mkdtempSync(join(tmpdir(), "shardport-unit-"));
    const node = realpathSync(join(ROOT, "node_modules", ".bin", "node"));
    const path = join(dir, "shardport.service");
    writeFileSync(
      path,
      unitText
        .replace(/^WorkingDirectory=.*$/m, `WorkingDirectory=${ROOT}`)
        .replace("/srv/shardport/node_modules/.bin/node", node),
    );
    return path;
  }

  test("systemd-analyze verify accepts the unit, executables rewritten to this checkout", {
    skip: noAnalyze,
  }, () => {
    const path = localUnit();
    try {
      const verify = spawnSync("systemd-analyze", ["verify", path], { encoding: "utf8" });
      assert.equal(verify.status, 0, verify.stderr);
      assert.equal(verify.stderr.trim(), "", "no warning either (unknown keys, bad values)");
    } finally {
      rmSync(join(path, ".."), { recursive: true, force: true });
    }
  });

  test("systemd-analyze security --offline=true rates the sandbox at most 3.0", { skip: noAnalyze }, () => {
    const out = execFileSync(
      "systemd-analyze",
      ["security", "--offline=true", "--no-pager", join(ROOT, "deploy", "shardport.service")],
      { encoding: "utf8", env: { ...process.env, SYSTEMD_COLORS: "0" } },
    );
    const score = Number(/Overall exposure level for shardport\.service: ([\d.]+)/.exec(out)?.[1]);
    assert.ok(score <= 3.0, `exposure ${score}\n${out}`);
    const set = new Set(settings.map(([key]) => key));
    assert.ok(!set.has("MemoryDenyWriteExecute"), "the runtimes' JIT compilers need W+X memory");
    for (const key of [
      "ProtectSystem",
      "ProtectHome",
      "ProtectKernelTunables",
      "PrivateDevices",
      "SystemCallFilter",
    ]) {
      assert.ok(set.has(key), key);
    }
    assert.deepEqual(
      settings.filter(([key]) => key === "RestrictAddressFamilies").map(([, value]) => value),
      ["AF_INET AF_INET6 AF_UNIX"],
    );
    assert.equal(settings.find(([key]) => key === "CapabilityBoundingSet")?.[1], "");
  });

  // Under the real systemd: a transient service with the unit's own sandbox settings.
  const systemdReason = !isRoot
    ? "needs root to start a system service"
    : !existsSync("/run/systemd/system")
      ? "no systemd manager runs here (a container); the emulated sandbox below runs instead"
      : !succeeds("systemd-run", ["--version"])
        ? "systemd-run is missing"
        : false;
  const LIFECYCLE = new Set([
    "Type",
    "WorkingDirectory",
    "Environment",
    "ExecStart",
    "ExecReload",
    "ExecStartPre",
    "Restart",
    "RestartSec",
    "RuntimeDirectory",
  ]);

  test("the launcher serves, reloads and drains under the unit's sandbox (systemd-run)", {
    skip: systemdReason,
  }, async () => {
    const port = freshPort();
    const unit = `shardport-test-${port}`;
    const sandbox = settings
      .filter(([key]) => !LIFECYCLE.has(key))
      .map(([key, value]) => `--property=${key}=${value}`);
    const proc = run(
      {
        name: "node",
        runtime: "node",
        command: () => [
          "systemd-run",
          "--quiet",
          "--wait",
          "--pipe",
          `--unit=${unit}`,
          ...sandbox,
          `--property=BindReadOnlyPaths=${ROOT}:/srv/shardport`,
          "--property=WorkingDirectory=/srv/shardport",
          `--property=RuntimeDirectory=${unit}`,
          `--setenv=XDG_RUNTIME_DIR=/run/${unit}`,
          "--setenv=HOST=127.0.0.1",
          `--setenv=PORT=${port}`,
          "/srv/shardport/node_modules/.bin/node",
          "dist/node.js",
          "--shards",
          "2",
        ],
      },
      [],
    );
    try {
      await serveReloadStop(proc, (signal) =>
        signal === "SIGHUP"
          ? execFileSync("systemctl", ["kill", "--kill-whom=main", "--signal=SIGHUP", unit])
          : execFileSync("systemctl", ["stop", unit]),
      );
    } finally {
      spawnSync("systemctl", ["stop", unit]);
    }
  });

  // Without a systemd manager: test/sandbox/run.sh builds the same walls by hand.
  /** Whether user nobody can run `path` (the sandbox runs the launcher as nobody, from here). */
  const nobodyReaches = (path: string) =>
    succeeds("/usr/bin/setpriv", [
      "--reuid=nobody",
      "--regid=nogroup",
      "--clear-groups",
      "/usr/bin/test",
      "-x",
      path,
    ]);
  const emulatedReason = !isRoot
    ? "needs root for a mount namespace"
    : !succeeds("unshare", ["--mount", "true"])
      ? "unshare --mount is not permitted here"
      : !succeeds("/usr/bin/python3", ["-c", "import seccomp"])
        ? "python3-seccomp is missing (Debian package python3-seccomp)"
        : !haveAnalyze
          ? "systemd-analyze is missing"
          : !nobodyReaches(join(ROOT, "node_modules", ".bin", "node"))
            ? "user nobody cannot reach this checkout (a folder above it is closed to others)"
            : false;
  const sandboxed = (command: string[]) => [
    "test/sandbox/run.sh",
    "deploy/shardport.service",
    ROOT,
    ...command,
  ];

  test("the emulated sandbox holds: read-only, no capabilities, nobody, seccomp, no netlink", {
    skip: emulatedReason,
  }, () => {
    const probe = [
      "id -u",
      "grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status | tr -s '\\t' ' '",
      "touch /srv/shardport/x 2>/dev/null && echo project-writable",
      "touch /var/lib/x 2>/dev/null && echo system-writable",
      "touch /run/shardport/x && echo runtime-writable",
      "ls -A /home",
      "/usr/bin/python3 -c 'import socket; socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)' 2>/dev/null || echo netlink-refused",
      "/usr/bin/python3 -c 'import socket; socket.socket()' && echo inet-allowed",
    ].join("; ");
    const [command, ...args] = sandboxed(["sh", "-c", probe]);
    const out = execFileSync(command, args, { cwd: ROOT, encoding: "utf8" });
    assert.equal(
      out,
      "65534\nCapEff: 0000000000000000\nCapBnd: 0000000000000000\nNoNewPrivs: 1\nSeccomp: 2\nruntime-writable\nnetlink-refused\ninet-allowed\n",
    );
  });

  test("the launcher serves, reloads and drains under the emulated sandbox, each runtime", {
    skip: emulatedReason,
  }, async () => {
    const deno = JSON.parse(read("deno.json")).tasks.start.split(" ").slice(1);
    const commands: Record<string, string[]> = {
      node: (settings.find(([key]) => key === "ExecStart")?.[1] ?? "").split(" ").slice(0, 2),
      bun: ["/srv/shardport/node_modules/.bin/bun", "runtimes/bun.ts"],
      deno: ["/srv/shardport/tools/node_modules/.bin/deno", ...deno],
    };
    for (const [runtime, command] of Object.entries(commands)) {
      const port = freshPort();
      const rt: RuntimeUnderTest = {
        name: runtime,
        runtime: runtime as RuntimeUnderTest["runtime"],
        command: () => sandboxed(["env", "HOST=127.0.0.1", `PORT=${port}`, ...command, "--shards", "2"]),
      };
      const proc = run(rt, []);
      await serveReloadStop(proc, (signal) => {
        const pid = Number(LAUNCHER_READY.exec(proc.output())?.[4]);
        process.kill(pid, signal);
      });
    }
  });
});

describe("container awareness", () => {
  /** A host whose files are `files` (missing ones throw), with `env` for its environment. */
  const fakeHost = (files: Record<string, string>, env: Record<string, string> = {}): Host => ({
    readText(path) {
      if (!(path in files)) throw new Error(`ENOENT: ${path}`);
      return files[path];
    },
    exists: (path) => path in files,
    env,
  });
  const MIGRATE = "/proc/sys/net/ipv4/tcp_migrate_req";
  const HOST_FIX = /`sysctl -w net\.ipv4\.tcp_migrate_req=1`/;
  const DOCKER_FIX = /this container's network namespace.*`--sysctl net\.ipv4\.tcp_migrate_req=1`/;
  const POD_FIX = /this pod's network namespace.*securityContext\.sysctls.*--allowed-unsafe-sysctls/;

  test("the warning names the host's sysctl, a container's --sysctl or the pod's sysctls", () => {
    const off = { [MIGRATE]: "0\n", "/proc/self/cgroup": "0::/user.slice/session-2.scope\n" };
    const cases: [string, Host, RegExp | undefined][] = [
      ["migration on", fakeHost({ ...off, [MIGRATE]: "1\n", "/.dockerenv": "" }), undefined],
      ["a host", fakeHost(off), HOST_FIX],
      ["Docker's /.dockerenv", fakeHost({ ...off, "/.dockerenv": "" }), DOCKER_FIX],
      ["Podman's /run/.containerenv", fakeHost({ ...off, "/run/.containerenv": "" }), DOCKER_FIX],
      [
        "a docker cgroup (v1)",
        fakeHost({ ...off, "/proc/self/cgroup": "12:cpu,cpuacct:/docker/4f1a2b\n0::/docker/4f1a2b\n" }),
        DOCKER_FIX,
      ],
      [
        "a containerd scope (v2)",
        fakeHost({ ...off, "/proc/self/cgroup": "0::/system.slice/containerd-4f1a2b.scope\n" }),
        DOCKER_FIX,
      ],
      [
        "Docker's mounts behind a private cgroup namespace",
        fakeHost({
          ...off,
          "/proc/self/cgroup": "0::/\n",
          "/proc/self/mountinfo":
            "612 590 254:1 /var/lib/docker/containers/4f1a2b/hostname /etc/hostname rw,relatime - ext4 /dev/vda1 rw\n",
        }),
        DOCKER_FIX,
      ],
      ["Kubernetes' service variables", fakeHost(off, { KUBERNETES_SERVICE_HOST: "10.96.0.1" }), POD_FIX],
      [
        "a kubepods cgroup",
        fakeHost({
          ...off,
          "/.dockerenv": "",
          "/proc/self/cgroup": "0::/kubepods.slice/kubepods-pod12.slice/cri-containerd-9a.scope\n",
        }),
        POD_FIX,
      ],
    ];
    for (const [name, host, expected] of cases) {
      const warning = migrateWarning(host);
      if (!expected) {
        assert.equal(warning, undefined, name);
        continue;
      }
      assert.match(warning ?? "", expected, name);
      if (expected !== HOST_FIX)
        assert.doesNotMatch(warning ?? "", /sysctl -w/, `${name}: not the host's fix`);
    }
    assert.match(migrateWarning(fakeHost({}, {})) ?? "", /no net\.ipv4\.tcp_migrate_req \(Linux < 5\.14\)/);
  });

  const netnsReason = !isRoot
    ? "needs root for unshare -n"
    : !succeeds("unshare", ["-n", "true"])
      ? "unshare -n is not permitted here"
      : !existsSync(MIGRATE)
        ? "the kernel has no tcp_migrate_req"
        : false;

  test("in a fresh network namespace (tcp_migrate_req 0) of a pod, the launcher names the pod's fix", {
    skip: netnsReason,
  }, async () => {
    const port = freshPort();
    const rt: RuntimeUnderTest = {
      name: "node",
      runtime: "node",
      command: (args) => [
        "unshare",
        "-n",
        "sh",
        "-c",
        'ip link set lo up && exec "$@"',
        "sh",
        "node",
        "dist/node.js",
        ...args,
      ],
    };
    // KUBERNETES_SERVICE_HOST is what the kubelet sets in every container of a pod.
    const proc = run(rt, ["--shards", "1", "--port", String(port)], { KUBERNETES_SERVICE_HOST: "10.96.0.1" });
    await proc.waitFor(LAUNCHER_READY);
    assert.match(proc.output(), POD_FIX);
    assert.doesNotMatch(proc.output(), /sysctl -w/);
    process.kill(Number(LAUNCHER_READY.exec(proc.output())?.[4]), "SIGTERM");
    assert.equal(await proc.exited, 0);
  });
});

// The sandbox helper scripts must at least parse where the tests above skip.
test("test/sandbox scripts parse", () => {
  execFileSync("bash", ["-n", join(ROOT, "test", "sandbox", "run.sh")]);
  const filter = join(ROOT, "test", "sandbox", "filter.py");
  execFileSync("/usr/bin/python3", ["-c", "import ast, sys; ast.parse(open(sys.argv[1]).read())", filter]);
});
