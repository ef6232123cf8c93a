/**
 * node:http through @hono/node-server's request listener + `listen({ reusePort: true })`:
 * Node's server, and Deno's `--http node`. Closing it stops accepting first and then lets every
 * accepted connection deliver and finish its request, which is what makes drains lossless.
 * @module
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createSecureServer, type Http2Session } from "node:http2";
import type { Socket } from "node:net";
import { getRequestListener, RequestError } from "@hono/node-server";
import { ListenError, type Listener, type ListenOptions, type ListenTls } from "../src/types.ts";

export async function listenNodeHttp({ port, host, fetch, tls }: ListenOptions): Promise<Listener> {
  const server = tls ? secureServer(fetch, tls) : createServer(adaptor(fetch));
  // Each HTTP/1.1 connection's latest response: once draining, a response not finished yet must
  // close its connection after it is sent, or a keep-alive client holds the shard until Node's
  // keep-alive timeout (5 s). Per request this costs one Map.set; the listener is per connection.
  // (HTTP/2 sessions get GOAWAY instead, and forbid a Connection header: see h2Sessions.)
  const latest = new Map<Socket, ServerResponse>();
  let draining = false;
  const closeAfter = (res: ServerResponse) => {
    if (!res.headersSent) res.setHeader("Connection", "close");
    // Headers already out with keep-alive: end the connection once this response is written.
    else if (!res.writableFinished) res.once("finish", () => res.socket?.end());
  };
  const sessions = tls ? h2Sessions(server) : undefined;
  let connections = 0;
  server.on(tls ? "secureConnection" : "connection", (socket: Socket) => {
    connections++;
    socket.once("close", () => latest.delete(socket));
  });
  // Before the adaptor's own listener (given to the server at its creation), so it runs first.
  server.prependListener("request", (req: IncomingMessage, res: ServerResponse) => {
    if (req.httpVersionMajor >= 2) return;
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
        sessions?.drain();
        server.close(() => resolve());
        server.closeIdleConnections();
      }),
    closeAll: () => (tls ? cutTlsSockets(server) : server.closeAllConnections()),
    connections: () => connections,
  };
}

/**
 * The HTTP/2 sessions of a secure server, each closed at a drain: a GOAWAY, then the session ends
 * once its open streams are done. Node 22.12 to 23 sends none at server.close() (nodejs/node#57586
 * came with 24): a client that kept its session held the old shard until --drain-timeout cut it.
 * A stream the client sent before it read the GOAWAY is refused (REFUSED_STREAM, never processed:
 * RFC 9113 8.7 lets the client retry it), as with Node 24's own close(). RFC 9113 6.8's gentler
 * way (a first GOAWAY admitting every stream, the final one a PING later) failed in a trial: the
 * PING's answer never came, as nghttp2 stops reading a session with no open stream after a GOAWAY.
 * Per session, not per request.
 */
function h2Sessions(server: Server) {
  const sessions = new Set<Http2Session>();
  let draining = false;
  server.on("session", (session: Http2Session) => {
    if (draining) return session.close();
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
  });
  return {
    drain: () => {
      draining = true;
      for (const session of sessions) session.close();
    },
  };
}

const tlsSockets = new WeakMap<Server, Set<Socket>>();

/** @hono/node-server's request listener (what its createAdaptorServer gives node:http) for `fetch`. */
const adaptor = (fetch: ListenOptions["fetch"]) => getRequestListener(fetch, { errorHandler: fetchFailed });

/**
 * What the adaptor answers when the app's fetch throws or rejects: as it does by itself (a bare
 * 500, 504 for a timeout, 400 for a request it could not make), but the error said on the shard's
 * stderr first, as Bun's and Deno's own servers do; without this a plain `{ fetch }` that throws
 * left no trace at all (a Hono app logs its errors itself). Called only on an error.
 */
function fetchFailed(error: unknown): Response {
  if (error instanceof RequestError) return new Response(null, { status: 400 });
  console.error(error);
  const timeout =
    error instanceof Error && (error.name === "TimeoutError" || error.constructor.name === "TimeoutError");
  return new Response(null, { status: timeout ? 504 : 500 });
}

/**
 * HTTPS: node:http2's secure server with HTTP/1.1 allowed, so ALPN offers h2 and http/1.1. Its
 * close() closes idle HTTP/1.1 connections; its HTTP/2 sessions are h2Sessions' to close.
 * `cert` and `key` are the PEM the launcher checked for this shard's generation.
 */
function secureServer(fetch: ListenOptions["fetch"], { cert, key, ...tls }: ListenTls): Server {
  const ticketKeys = tls.ticketKeys === undefined ? undefined : Buffer.from(tls.ticketKeys, "base64");
  // Seen as node:http's Server where both have the same calls (listen, close, connections).
  const server = createSecureServer(
    { allowHTTP1: true, cert, key, ticketKeys },
    adaptor(fetch),
  ) as unknown as Server;
  // A secure server has no closeAllConnections(): the drain timeout's cut destroys its sockets.
  const sockets = new Set<Socket>();
  server.on("secureConnection", (socket: Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  });
  tlsSockets.set(server, sockets);
  return server;
}

function cutTlsSockets(server: Server): void {
  for (const socket of tlsSockets.get(server) ?? []) socket.destroy();
}
