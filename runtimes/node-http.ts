/**
 * node:http through @hono/node-server's `createAdaptorServer` + `listen({ reusePort: true })`:
 * Node's server, and Deno's `--http node`. Closing it stops accepting first and then lets every
 * accepted connection deliver and finish its request, which is what makes drains lossless.
 * @module
 */
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { createAdaptorServer } from "@hono/node-server";
import { ListenError, type Listener, type ListenOptions } from "../src/types.ts";

export async function listenNodeHttp({ port, host, fetch }: ListenOptions): Promise<Listener> {
  const server = createAdaptorServer({ fetch }) as Server;
  // Each connection's latest response: once draining, a response not finished yet must close its
  // connection after it is sent, or a keep-alive client holds the shard until Node's keep-alive
  // timeout (5 s). Per request this costs one Map.set; the listener is per connection.
  const latest = new Map<Socket, ServerResponse>();
  let draining = false;
  const closeAfter = (res: ServerResponse) => {
    if (!res.headersSent) res.setHeader("Connection", "close");
    // Headers already out with keep-alive: end the connection once this response is written.
    else if (!res.writableFinished) res.once("finish", () => res.socket?.end());
  };
  let connections = 0;
  server.on("connection", (socket: Socket) => {
    connections++;
    socket.once("close", () => latest.delete(socket));
  });
  // Before the adaptor's own listener (added by createAdaptorServer), so it runs first.
  server.prependListener("request", (req: IncomingMessage, res: ServerResponse) => {
    if (draining) closeAfter(res);
    else latest.set(req.socket, res);
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
        draining = true;
        for (const res of latest.values()) closeAfter(res);
        latest.clear();
        server.close(() => resolve());
        server.closeIdleConnections();
      }),
    closeAll: () => server.closeAllConnections(),
    connections: () => connections,
  };
}
