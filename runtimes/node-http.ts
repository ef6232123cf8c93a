/**
 * node:http through @hono/node-server's `createAdaptorServer` + `listen({ reusePort: true })`:
 * Node's server, and Deno's `--http node`. Closing it stops accepting first and then lets every
 * accepted connection deliver and finish its request, which is what makes drains lossless.
 * @module
 */
import type { Server } from "node:http";
import { createAdaptorServer } from "@hono/node-server";
import { ListenError, type Listener, type ListenOptions } from "../src/types.ts";

export async function listenNodeHttp({ port, host, fetch }: ListenOptions): Promise<Listener> {
  const server = createAdaptorServer({ fetch }) as Server;
  let connections = 0;
  server.on("connection", () => {
    connections++;
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen({ port, host, reusePort: true }, resolve);
    });
  } catch (error) {
    const { message, code } = error as NodeJS.ErrnoException;
    throw new ListenError(message, code ?? "EUNKNOWN");
  }
  return {
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      }),
    closeAll: () => server.closeAllConnections(),
    connections: () => connections,
  };
}
