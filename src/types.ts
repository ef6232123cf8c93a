/**
 * The contract between the runtime-neutral code in src/ and the adapters in runtimes/.
 * @module
 */
import type { ChildProcess } from "node:child_process";
import type { LauncherMessage, ShardSpec } from "./protocol.ts";

/** What the supervisor uses of a handle's events: node:events's EventEmitter has them. */
export interface HandleEvents {
  // biome-ignore lint/suspicious/noExplicitAny: as node:events types its listeners
  on(event: string, listener: (...args: any[]) => void): this;
  // biome-ignore lint/suspicious/noExplicitAny: as node:events types its listeners
  once(event: string, listener: (...args: any[]) => void): this;
  // biome-ignore lint/suspicious/noExplicitAny: as node:events types its listeners
  off(event: string, listener: (...args: any[]) => void): this;
  emit(event: string, ...args: unknown[]): boolean;
}

/** A shard's process or thread, as the supervisor drives it (a ChildProcess or a thread handle). */
export type ShardHandle = HandleEvents &
  Pick<ChildProcess, "pid" | "connected" | "kill"> & {
    send(message: LauncherMessage): boolean;
    label?: string;
  };

/** What a shard serves: a Hono app or any object with a WHATWG `fetch` handler. */
export interface FetchApp {
  fetch(request: Request, ...rest: unknown[]): Response | Promise<Response>;
}

/** Which HTTP server a shard runs: the runtime's own, or node:http (see --http). */
export type HttpServer = "native" | "node";

export interface ListenOptions {
  port: number;
  host: string;
  http: HttpServer;
  /** Called for every request, straight from the runtime's server: nothing crosses a process. */
  fetch: FetchApp["fetch"];
  /** HTTPS with HTTP/2 and HTTP/1.1 by ALPN: the PEM the launcher checked, and the shared ticket keys. */
  tls?: ListenTls;
}

export interface ListenTls {
  /** The certificate (chain) and key, PEM text, as the launcher read and checked them. */
  cert: string;
  key: string;
  /** 48 bytes of session-ticket keys, base64, shared by a generation's shards (used by Node). */
  ticketKeys?: string;
}

/** One shard's listening socket, as the adapter hands it to src/shard.ts. */
export interface Listener {
  /**
   * Stops accepting, lets in-flight requests finish, closes idle keep-alive connections.
   * Resolves once no connection is left. `listenerStopped`: the launcher has already stopped
   * the listening socket (runtimes/deno-listener.ts), so what was accepted can be read first.
   */
  close(listenerStopped?: boolean): Promise<void>;
  /**
   * Cuts every connection still open (the drain timeout ran out), where the runtime can; the
   * shard exits a second later in any case, which closes what is left.
   */
  closeAll(): void;
  /** Connections accepted so far, where the server tells (node:http); for `top` and the dashboard. */
  connections?(): number;
}

/** A listen failure, with the errno-style code the launcher reports (`EADDRINUSE`...). */
export class ListenError extends Error {
  readonly code: string;
  constructor(message: string, code: string) {
    super(message);
    this.code = code;
  }
}

/** What differs between Bun, Deno and Node; everything else is written once in src/. */
export interface Runtime {
  readonly name: "bun" | "deno" | "node";
  readonly version: string;
  /** This runtime's entry module: what a shard thread runs in threads mode. */
  readonly entry: string;
  /**
   * Starts one shard: this runtime's entry in a child process with an IPC channel (node:child_process's
   * fd 3, or Bun.spawn's on Bun; Deno: a handle of its own, runtimes/deno-process.ts). `env`
   * carries the shard's spec (see protocol.ts).
   */
  spawnShard(env: NodeJS.ProcessEnv, access: ShardAccess): ShardHandle;
  /** Binds host:port with SO_REUSEPORT and serves `fetch`. Throws a ListenError. */
  listen(options: ListenOptions): Promise<Listener>;
  /**
   * Set where this runtime cannot share a port with SO_REUSEPORT, saying why; the launcher then
   * warns and falls back to what `spawnShard` does instead (node:cluster on old Node).
   */
  readonly reusePortGap?: string;
  /** Why a --http choice cannot work on this runtime, for each one that cannot. */
  readonly refusesHttp?: Partial<Record<HttpServer, string>>;
  /** What is wrong with the environment for this runtime's shards (a variable it reads), if anything. */
  environmentProblem?(): string | undefined;
  /**
   * Whether a listener without SO_REUSEPORT could bind host:port now (then nothing listens
   * there), through the runtime's own sockets; without it, node:net answers.
   */
  canBind?(host: string, port: number): Promise<boolean>;
  /** Reads a /proc or /sys file where the runtime's fs cannot (Deno guards them behind -A). */
  readProc?(path: string): string;
  /** Pid and inode of every socket in /proc/PID/fd, where the runtime's fs cannot read them (Deno). */
  socketLinks?(): { pid: number; inode: number }[];
  /**
   * Starts one shard as a thread of the launcher where the runtime has a leaner thread than
   * node:worker_threads (Deno's own Worker); without it, threads mode runs `entry` in a
   * node:worker_threads Worker.
   */
  spawnThread?(spec: ShardSpec): ShardHandle;
  /** The process's memory where `process.memoryUsage()` is not the cheapest way (Deno threads). */
  memoryUsage?(): { rss: number; heapUsed: number };
  /** Makes `import()` of a .ts module work where the runtime cannot strip types itself. */
  loadTypeScript?(): Promise<void>;
  /**
   * The process, as the launcher's way to its first shards asks it (src/main.ts,
   * src/launcher/signals.ts, early.ts, config.ts, spawn.ts), where `process` and node: modules
   * cost the start (Deno: its Node layer); without it, they answer (src/proc.ts).
   */
  readonly proc?: Proc;
}

/** A signal the launcher catches (src/launcher/signals.ts). */
export type CaughtSignal = "SIGHUP" | "SIGINT" | "SIGTERM" | "SIGTTIN" | "SIGTTOU";

/** What the launcher's start asks of its process: see Runtime.proc. */
export interface Proc {
  /** The command line's words after the script. */
  args(): string[];
  env(): Record<string, string | undefined>;
  pid(): number;
  platform(): string;
  cwd(): string;
  /** The CPUs this process may use (its affinity), as node:os's availableParallelism() says. */
  cpus(): number;
  /** True where `path` is a file (not a folder), false where it is none or cannot be read. */
  isFile(path: string): Promise<boolean>;
  exists(path: string): boolean;
  onSignal(signal: CaughtSignal, listener: () => void): void;
  offSignal(signal: CaughtSignal, listener: () => void): void;
  exit(code: number): never;
}

/** What a shard needs to reach: the Deno adapter turns it into the narrowest permissions. */
export interface ShardAccess {
  host: string;
  port: number;
  /** The user's app module (absolute path). */
  app: string;
}
