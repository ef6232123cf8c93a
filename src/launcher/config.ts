/**
 * Command line and environment → a validated Config. Every problem is a UsageError whose message
 * is the one line the launcher prints before it exits 2.
 * @module
 */
import { dirname, resolve as resolveFrom } from "node:path";
import { parseArgs } from "node:util";
import { nodeProc } from "../proc.ts";
import type { HttpServer, Proc } from "../types.ts";
import { defaultShardCount, type ReadText } from "./cpus.ts";

export const MAX_SHARDS = 1024;

export interface Config {
  /** `serve` (the default) starts shards; `reload` and `stop` signal the launcher on host:port. */
  command: "serve" | "reload" | "stop" | "status" | "top" | "scale";
  /** `scale N`: the shard count asked for. */
  scaleTo?: number;
  shards: number;
  port: number;
  host: string;
  /** Absolute path of the user's app module. */
  app: string;
  /** `process`: a shard is a child process; `threads`: a worker thread of the launcher. */
  mode: "process" | "threads";
  /** The HTTP server each shard runs. */
  http: HttpServer;
  /** Exit 1 instead of falling back when SO_REUSEPORT cannot be used. */
  strict: boolean;
  /** Port of the launcher's Prometheus endpoint (and the dashboard at `/`), or undefined (off). */
  metricsPort?: number;
  /** Port of the launcher's dashboard page alone, or undefined (off). */
  dashboardPort?: number;
  /** One log line per request. */
  accessLog: boolean;
  /** How long a shard may take to finish in-flight requests before they are cut. */
  drainTimeoutMs: number;
  /** How long a new shard may take to load the app and listen. */
  readyTimeoutMs: number;
  /** Folders or files whose changes cause a rolling reload (`--watch`); empty: off. */
  watch: string[];
  /** Recycle a shard whose RSS stays above this many MB (`--max-memory`); undefined: off. */
  maxMemoryMb?: number;
  /** Recycle a shard after this many requests plus a random 0..maxRequestsJitter; undefined: off. */
  maxRequests?: number;
  maxRequestsJitter: number;
  /** PEM certificate (chain) and private key files (absolute paths): the shards serve HTTPS. */
  tls?: { cert: string; key: string };
  /** What to do about listeners already on the port (src/launcher/guard.ts): refuse by default. */
  join: boolean;
  takeover: boolean;
  /** `--canary`: compare with the old launcher this long before the takeover completes. */
  canary?: Canary;
  help: boolean;
}

/** A takeover's canary: how long, and what the new shards may do worse than the old ones. */
export interface Canary {
  seconds: number;
  /** Percentage points of 5xx answers the new shards may have above the old ones. */
  max5xxPoints: number;
  /** How many times the old shards' p99 latency the new ones' may be. */
  maxP99Ratio: number;
}

export class UsageError extends Error {}

export const USAGE = `Usage: shardport [options] [app-module]
       shardport reload|stop|status|top [--host H] [--port N]
       shardport scale N [--host H] [--port N]

Serves the app module's default export (a Hono app or any { fetch }) from N processes that
share one port with SO_REUSEPORT; the Linux kernel spreads connections between them.

  bun run start -- [options] [app]     deno task start [options] [app]     node dist/node.js [options] [app]

reload: a rolling restart of the launcher on host:port that loads the app anew (as SIGHUP does),
answered once done; stop: drain and exit (as SIGTERM does), answered once it has exited;
status: a table of its shards; top: that table live, with requests/s, shares, latency and
recent events (q quits); scale N: run N shards from now on, 1-${MAX_SHARDS} (as SIGTTIN adds one
and SIGTTOU removes one), answered once the added shards are ready. They talk to it over its
control socket.

Options (flags beat environment variables):
  --shards N           shards to start, 1-${MAX_SHARDS} (env SHARDS; default: CPUs this process may use)
  --port N             TCP port, 1-65535 (env PORT; default 8080)
  --host H             address to bind (env HOST; default 127.0.0.1)
  --app PATH           the app module (or give it as the argument; default: the demo app)
  --mode process|threads  shards as processes (default) or as worker threads of one process
  --http native|node   the shards' HTTP server: the runtime's own (default), or node:http, whose
                       drain loses nothing on Deno at about half Deno.serve's throughput
  --metrics-port N     serve Prometheus metrics of all shards from the launcher on host:N (off),
                       at /metrics, and the dashboard page at /
  --dashboard-port N   serve the dashboard page alone from the launcher on host:N (off)
  --access-log         log one line per request
  --drain-timeout MS   time a stopping shard has to finish its requests (default 10000)
  --ready-timeout MS   time a new shard has to load and listen (default 10000)
  --watch[=PATHS]      reload when a file under the app's folder (or under PATHS, comma-separated)
                       changes; node_modules, .git and dotfiles are ignored (for development)
  --max-memory MB      replace a shard whose RSS stays above MB (checked once a second)
  --max-requests N     replace a shard once it has served N requests (plus the jitter)
  --max-requests-jitter J  add a random 0..J to each shard's --max-requests (default 0)
  --tls-cert PATH      PEM certificate (with its chain) to serve HTTPS and HTTP/2 (env TLS_CERT)
  --tls-key PATH       PEM private key of that certificate (env TLS_KEY); both or neither
  --strict             exit 1 rather than fall back to node:cluster where reusePort is missing
  --takeover           replace the shardport launcher serving host:port with this one, with no gap:
                       start, wait until every shard is ready, then tell the old one to drain
  --canary SECONDS     with --takeover: serve beside the old launcher this long first, then complete
                       only if the new shards' 5xx rate and p99 latency are no worse (else exit 1)
  --canary-5xx POINTS  percentage points of 5xx the new shards may have above the old (default 1)
  --canary-p99 RATIO   times the old shards' p99 latency the new ones' may reach (default 2)
  --join               add shards to whatever listens on host:port already (refused by default)
  -h, --help           print this and exit 0

Exit codes: 0 stopped cleanly; 1 could not serve (port conflict, a shard failed to start,
another launcher on host:port, a failed canary), or a stop had to kill a stuck shard; 2 bad
command line or app module; 130 a second Ctrl-C, 1 s or more after the first.`;

/** `--watch`: the app module's folder; `--watch=a,b`: those paths, each of which must exist. */
function watchPaths(on: boolean, list: string | undefined, app: string, proc: Proc): string[] {
  if (!on) return [];
  if (list === undefined) return [dirname(app)];
  const paths = list.split(",").filter(Boolean);
  if (paths.length === 0) throw new UsageError("--watch= needs at least one path");
  return paths.map((path) => {
    if (!proc.exists(path)) throw new UsageError(`--watch: no such file or folder: ${path}`);
    return resolveFrom(proc.cwd(), path);
  });
}

const VALUE_FLAGS = [
  "shards",
  "port",
  "host",
  "app",
  "mode",
  "http",
  "metrics-port",
  "dashboard-port",
  "drain-timeout",
  "ready-timeout",
  "tls-cert",
  "tls-key",
  "max-memory",
  "max-requests",
  "max-requests-jitter",
  "canary",
  "canary-5xx",
  "canary-p99",
];

function integer(name: string, raw: string, min: number, max: number, hint = ""): number {
  const value = /^\d+$/.test(raw.trim()) ? Number(raw) : Number.NaN;
  if (!(value >= min && value <= max)) {
    throw new UsageError(`${name} must be an integer from ${min} to ${max}, got '${raw}'${hint}`);
  }
  return value;
}

/** Lets `--shards -1` reach validation as a value instead of failing as an unknown flag. */
function joinNegativeValues(args: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const flag = args[i].slice(2);
    if (args[i].startsWith("--") && VALUE_FLAGS.includes(flag) && /^-\d/.test(args[i + 1] ?? "")) {
      out.push(`${args[i]}=${args[++i]}`);
    } else out.push(args[i]);
  }
  return out;
}

/**
 * `--watch` takes its paths only as `--watch=PATHS`: a bare `--watch` followed by a word would be
 * ambiguous with the app module (`--watch app.ts`).
 */
function splitWatchPaths(args: string[]): string[] {
  return args.flatMap((arg) =>
    arg.startsWith("--watch=") ? ["--watch", "--watch-paths", arg.slice("--watch=".length)] : [arg],
  );
}

/**
 * node:util's parser, strict: an unknown flag or a missing value is refused, in one line. (On
 * Deno, node:util loads without booting the Node layer: the early start stays free of it.)
 */
function parseStrict(args: string[]) {
  try {
    return parseArgs({ args, allowPositionals: true, strict: true, options: OPTIONS });
  } catch (error) {
    const message = (error as Error).message;
    const unknown = /Unknown option '([^']+)'/.exec(message);
    if (unknown) throw new UsageError(`unknown flag ${unknown[1]} (see --help)`);
    throw new UsageError(message.split("\n")[0]);
  }
}

/** `--canary` and its thresholds; they need --takeover (and the thresholds need --canary). */
function canaryOf(values: Record<string, string | boolean | undefined>): Canary | undefined {
  const given = ["canary-5xx", "canary-p99"].find((flag) => values[flag] !== undefined);
  if (values.canary === undefined) {
    if (given) throw new UsageError(`--${given} needs --canary SECONDS`);
    return undefined;
  }
  if (!values.takeover)
    throw new UsageError("--canary needs --takeover: it compares with the launcher taken over");
  const decimal = (flag: string, fallback: number, min: number, max: number) => {
    const raw = values[flag] as string | undefined;
    if (raw === undefined) return fallback;
    const value = /^\d+(\.\d+)?$/.test(raw.trim()) ? Number(raw) : Number.NaN;
    if (!(value >= min && value <= max)) {
      throw new UsageError(`--${flag} must be a number from ${min} to ${max}, got '${raw}'`);
    }
    return value;
  };
  return {
    seconds: integer("--canary", values.canary as string, 1, 3600),
    max5xxPoints: decimal("canary-5xx", 1, 0, 100),
    maxP99Ratio: decimal("canary-p99", 2, 1, 1000),
  };
}

const OPTIONS = {
  shards: { type: "string" },
  port: { type: "string" },
  host: { type: "string" },
  app: { type: "string" },
  http: { type: "string", default: "native" },
  mode: { type: "string", default: "process" },
  "metrics-port": { type: "string" },
  "dashboard-port": { type: "string" },
  "access-log": { type: "boolean", default: false },
  "drain-timeout": { type: "string" },
  "ready-timeout": { type: "string" },
  "tls-cert": { type: "string" },
  "tls-key": { type: "string" },
  "max-memory": { type: "string" },
  "max-requests": { type: "string" },
  "max-requests-jitter": { type: "string" },
  strict: { type: "boolean", default: false },
  join: { type: "boolean", default: false },
  takeover: { type: "boolean", default: false },
  canary: { type: "string" },
  "canary-5xx": { type: "string" },
  "canary-p99": { type: "string" },
  watch: { type: "boolean", default: false },
  "watch-paths": { type: "string" },
  help: { type: "boolean", short: "h", default: false },
} as const;

export function parseConfig(
  argv: string[],
  env: Record<string, string | undefined>,
  defaultApp: string,
  readText?: ReadText,
  proc: Proc = nodeProc,
): Config {
  // Against the runtime's cwd: node:path's resolve() would ask `process` for it (Deno: its Node layer).
  const resolve = (path: string) => resolveFrom(proc.cwd(), path);
  // `scale -1` would otherwise fail as an unknown flag.
  const negativeScale = argv.find((arg, i) => argv[i - 1] === "scale" && /^-\d/.test(arg));
  if (negativeScale !== undefined) integer("scale", negativeScale, 1, MAX_SHARDS);
  const parsed = parseStrict(splitWatchPaths(joinNegativeValues(argv)));
  const { values } = parsed;
  let positionals = parsed.positionals;
  let command: Config["command"] = "serve";
  let scaleTo: number | undefined;
  if (positionals[0] === "scale") {
    if (positionals[1] === undefined) throw new UsageError(`scale needs a shard count, 1-${MAX_SHARDS}`);
    scaleTo = integer("scale", positionals[1], 1, MAX_SHARDS);
    positionals = ["scale", ...positionals.slice(2)];
  }
  if (["reload", "stop", "status", "top", "scale"].includes(positionals[0])) {
    command = positionals[0] as Config["command"];
    positionals = positionals.slice(1);
    if (positionals.length > 0) throw new UsageError(`${command} takes no app module, got ${positionals[0]}`);
  }
  if (positionals.length > 1) {
    throw new UsageError(`one app module expected, got ${positionals.length}: ${positionals.join(" ")}`);
  }
  if (positionals.length === 1 && values.app !== undefined) {
    throw new UsageError(`give the app module once: --app ${values.app} or ${positionals[0]}`);
  }
  const pick = (flag: string | undefined, envName: string) =>
    flag !== undefined
      ? { name: `--${envName.toLowerCase().replace("_", "-")}`, raw: flag }
      : env[envName] !== undefined && env[envName] !== ""
        ? { name: envName, raw: env[envName] as string }
        : undefined;

  const shardsIn = pick(values.shards, "SHARDS");
  const portIn = pick(values.port, "PORT");
  const hostIn = pick(values.host, "HOST");
  const host = hostIn?.raw.trim() ?? "127.0.0.1";
  if (host === "") throw new UsageError(`${hostIn?.name} must not be empty`);
  const app = values.app ?? positionals[0];
  const metricsPort =
    values["metrics-port"] === undefined
      ? undefined
      : integer("--metrics-port", values["metrics-port"], 1, 65535);
  const dashboardPort =
    values["dashboard-port"] === undefined
      ? undefined
      : integer("--dashboard-port", values["dashboard-port"], 1, 65535);
  const mode = values.mode as Config["mode"];
  if (mode !== "process" && mode !== "threads") {
    throw new UsageError(`--mode must be process or threads, got '${values.mode}'`);
  }
  const http = values.http as HttpServer;
  if (http !== "native" && http !== "node") {
    throw new UsageError(`--http must be native or node, got '${values.http}'`);
  }
  const certIn = pick(values["tls-cert"], "TLS_CERT");
  const keyIn = pick(values["tls-key"], "TLS_KEY");
  if (Boolean(certIn) !== Boolean(keyIn)) {
    const [given, missing] = certIn
      ? [certIn.name, "--tls-key (or TLS_KEY)"]
      : [keyIn?.name, "--tls-cert (or TLS_CERT)"];
    throw new UsageError(`${given} needs ${missing}: give both files or neither`);
  }
  const optional = (flag: "max-memory" | "max-requests" | "max-requests-jitter", min: number, max: number) =>
    values[flag] === undefined ? undefined : integer(`--${flag}`, values[flag], min, max);
  const maxMemoryMb = optional("max-memory", 1, 1_048_576);
  if (maxMemoryMb !== undefined && mode === "threads") {
    throw new UsageError("--max-memory needs --mode process: threads share one process's RSS");
  }
  const maxRequests = optional("max-requests", 1, 1_000_000_000);
  const maxRequestsJitter = optional("max-requests-jitter", 0, 1_000_000_000) ?? 0;
  if (maxRequestsJitter > 0 && maxRequests === undefined) {
    throw new UsageError("--max-requests-jitter needs --max-requests");
  }
  if (values.join && values.takeover) {
    throw new UsageError("--join and --takeover exclude each other: share the port or replace its launcher");
  }
  return {
    command,
    scaleTo,
    join: values.join ?? false,
    takeover: values.takeover ?? false,
    canary: canaryOf(values),
    shards: shardsIn
      ? integer(shardsIn.name, shardsIn.raw, 1, MAX_SHARDS)
      : defaultShardCount(readText, proc),
    port: portIn
      ? integer(
          portIn.name,
          portIn.raw,
          1,
          65535,
          portIn.raw.trim() === "0" ? " (port 0 would give every shard a different random port)" : "",
        )
      : 8080,
    host,
    app: app === undefined ? defaultApp : resolve(app),
    mode,
    http,
    metricsPort,
    dashboardPort,
    accessLog: values["access-log"] ?? false,
    strict: values.strict ?? false,
    drainTimeoutMs: integer("--drain-timeout", values["drain-timeout"] ?? "10000", 0, 3_600_000),
    readyTimeoutMs: integer("--ready-timeout", values["ready-timeout"] ?? "10000", 1, 3_600_000),
    watch: watchPaths(
      values.watch ?? false,
      values["watch-paths"],
      app === undefined ? defaultApp : resolve(app),
      proc,
    ),
    maxMemoryMb,
    maxRequests,
    maxRequestsJitter,
    tls: certIn && keyIn ? { cert: resolve(certIn.raw), key: resolve(keyIn.raw) } : undefined,
    help: values.help ?? false,
  };
}
