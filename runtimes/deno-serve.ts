/**
 * A Deno shard's listener: `Deno.serve({ reusePort: true })` (needs `--unstable-net`), or node:http
 * with `--http node`. Shared by shard processes (runtimes/deno.ts) and shard threads
 * (runtimes/deno-thread.ts); imports nothing of Deno's Node compatibility layer, which costs a few
 * MB in every thread that loads it.
 * @module
 */
import { readAccepted } from "../src/listening-socket.ts";
import { ListenError, type Listener, type ListenOptions } from "../src/types.ts";

/** Deno's error classes → the errno codes the launcher reports. */
const CODES: Record<string, string> = {
  AddrInUse: "EADDRINUSE",
  AddrNotAvailable: "EADDRNOTAVAIL",
  PermissionDenied: "EACCES",
  NotCapable: "EACCES",
};

export async function listenDeno(options: ListenOptions): Promise<Listener> {
  if (options.http === "node") {
    const { listenNodeHttp } = await import("./node-http.ts");
    return listenNodeHttp(options);
  }
  const { port, host, fetch, tls } = options;
  let server: Deno.HttpServer;
  let listening: () => void = () => {};
  const listened = new Promise<void>((resolve) => {
    listening = resolve;
  });
  try {
    // HTTPS: the PEM the launcher checked for this generation. Deno offers h2 and http/1.1 by
    // ALPN by itself when given cert and key.
    const secure = tls && { cert: tls.cert, key: tls.key };
    server = Deno.serve(
      { port, hostname: host, reusePort: true, onListen: () => listening(), ...secure },
      fetch as Deno.ServeHandler,
    );
  } catch (error) {
    const { message, name } = error as Error;
    throw new ListenError(message, CODES[name] ?? "EUNKNOWN");
  }
  // Once the launcher has stopped the listening socket (shutdown(SHUT_RD), runtimes/
  // deno-listener.ts), Deno's accept loop fails with EINVAL and `finished` rejects: unhandled,
  // that would end the shard before its drain. The server serves what it has on. Any other
  // failure stays unhandled, as before.
  server.finished.catch((error) => {
    if (!/\(os error 22\)/.test(String((error as Error)?.message))) throw error;
  });
  // Ready means listening: only then may the launcher count on this shard (and drain it).
  await listened;
  return {
    close: async (listenerStopped) => {
      if (listenerStopped) await readAccepted();
      await server.shutdown();
    },
    // The cut comes after close() has begun, and then Deno has no way to cut a connection
    // (aborting the server's signal throws BadResource inside Deno, an uncaught error): the
    // shard's exit, a moment later, closes them (src/shard.ts).
    closeAll: () => {},
  };
}

/** The process's memory, without Deno's `process` global (see above). */
export function denoMemory(): { rss: number; heapUsed: number } {
  const { rss, heapUsed } = Deno.memoryUsage();
  return { rss, heapUsed };
}
