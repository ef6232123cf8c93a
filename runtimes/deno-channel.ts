/**
 * The channel between a Deno launcher and its shard processes, without Node's IPC (which needs
 * Deno's Node compatibility layer in the shard, about 20 ms of its start): a Unix socket in a
 * private folder of the launcher (runtimes/deno-process.ts), to which each shard connects
 * (runtimes/deno-shard.ts). The shard's first line names it by the token of its spec; then JSON
 * lines both ways. Shared by both sides; imports nothing.
 * @module
 */

/** Environment variable of a Deno shard process: a ChannelAddress as JSON. */
export const CHANNEL_ENV = "SHARDPORT_DENO_CHANNEL";

/** Where a shard finds its launcher, and how it says who it is. */
export interface ChannelAddress {
  /** The launcher's Unix socket. */
  path: string;
  /** This shard's random token: its first line is `{"token": ...}`. */
  token: string;
}

const encoder = new TextEncoder();

/** Writes one JSON line, all of it. */
export async function writeLine(conn: Deno.Conn, value: unknown): Promise<void> {
  const bytes = encoder.encode(`${JSON.stringify(value)}\n`);
  for (let written = 0; written < bytes.length; ) written += await conn.write(bytes.subarray(written));
}

/** Reads JSON lines until the other end closes (or the socket fails), one call of `onLine` each. */
export async function readLines(conn: Deno.Conn, onLine: (value: unknown) => void): Promise<void> {
  const decoder = new TextDecoder();
  const buffer = new Uint8Array(64 * 1024);
  let text = "";
  try {
    for (;;) {
      const read = await conn.read(buffer);
      if (read === null) return;
      text += decoder.decode(buffer.subarray(0, read), { stream: true });
      let end = text.indexOf("\n");
      while (end >= 0) {
        const line = text.slice(0, end);
        text = text.slice(end + 1);
        if (line) onLine(JSON.parse(line));
        end = text.indexOf("\n");
      }
    }
  } catch {
    // A reset or a closed socket ends the channel as an EOF does.
  }
}
