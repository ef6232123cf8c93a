/**
 * `--tls-cert` and `--tls-key`: the launcher reads and checks both files before any shard starts
 * (and again before a reload), and keeps the session-ticket keys the Node shards share. The
 * shards read the files themselves when they start, so a rolling reload serves a new certificate.
 * Key material never reaches a log line or an error message: only paths and what is wrong.
 * @module
 */
import { createPrivateKey, randomBytes, X509Certificate } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import type { LauncherMessage } from "../protocol.ts";
import type { ShardHandle } from "../types.ts";

/** A certificate or key file that cannot be served; the message names the file and the problem. */
export class TlsFileError extends Error {}

export interface TlsSummary {
  subject: string;
  validTo: string;
  /** SHA-256 fingerprint of the leaf certificate, as `AB:CD:…`. */
  fingerprint256: string;
  /** Certificates in the file (the leaf and its chain). */
  chainLength: number;
  /** Things worth saying that do not stop the start: an expired certificate, a key others can read. */
  warnings: string[];
}

const CERT_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

function readPem(label: string, path: string): string {
  let text: string;
  try {
    if (statSync(path).isDirectory()) throw new TlsFileError(`${label} ${path} is a directory, not a file`);
    text = readFileSync(path, "utf8");
  } catch (error) {
    if (error instanceof TlsFileError) throw error;
    const code = (error as NodeJS.ErrnoException).code;
    const why =
      code === "ENOENT"
        ? "not found"
        : code === "EACCES" || code === "EPERM"
          ? "not readable (permission denied)"
          : `not readable (${code ?? (error as Error).message})`;
    throw new TlsFileError(`${label} ${path}: ${why}`);
  }
  if (!/-----BEGIN [A-Z0-9 ]+-----/.test(text)) throw new TlsFileError(`${label} ${path} is not PEM`);
  return text;
}

/**
 * Reads and checks the pair: both readable PEM, every certificate of the chain parses, the key
 * is an unencrypted private key that matches the first (leaf) certificate. Throws a
 * TlsFileError; returns what the launcher may log.
 */
export function checkTlsFiles({ cert, key }: { cert: string; key: string }, now = Date.now()): TlsSummary {
  const certText = readPem("TLS certificate", cert);
  const keyText = readPem("TLS key", key);
  const blocks = certText.match(CERT_BLOCK) ?? [];
  if (blocks.length === 0)
    throw new TlsFileError(`TLS certificate ${cert} is not PEM: it holds no CERTIFICATE block`);
  const chain = blocks.map((block, index) => {
    try {
      return new X509Certificate(block);
    } catch {
      throw new TlsFileError(`TLS certificate ${cert}: certificate ${index + 1} of the file does not parse`);
    }
  });
  let privateKey: ReturnType<typeof createPrivateKey>;
  try {
    privateKey = createPrivateKey({ key: keyText, format: "pem" });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ERR_MISSING_PASSPHRASE" || /ENCRYPTED/.test(keyText))
      throw new TlsFileError(`TLS key ${key} is encrypted: give the key without a passphrase`);
    throw new TlsFileError(`TLS key ${key} is not PEM: it holds no private key`);
  }
  const leaf = chain[0];
  if (!leaf.checkPrivateKey(privateKey))
    throw new TlsFileError(`TLS key ${key} does not match the certificate ${cert}`);

  const warnings: string[] = [];
  const validTo = Date.parse(leaf.validTo);
  const validFrom = Date.parse(leaf.validFrom);
  if (validTo < now)
    warnings.push(`TLS certificate ${cert} expired on ${leaf.validTo}: clients will refuse it`);
  else if (validFrom > now)
    warnings.push(`TLS certificate ${cert} is not valid before ${leaf.validFrom}: clients will refuse it`);
  const mode = statSync(key).mode;
  if (mode & 0o004)
    warnings.push(
      `TLS key ${key} is readable by every user (mode ${(mode & 0o777).toString(8)}): chmod 600 (or 640 for a group such as ssl-cert)`,
    );
  return {
    subject: leaf.subject.replace(/\n/g, ", "),
    validTo: leaf.validTo,
    fingerprint256: leaf.fingerprint256,
    chainLength: chain.length,
    warnings,
  };
}

/**
 * The session-ticket keys the shards of this launcher share (Node uses them; Bun and Deno make
 * their own per process). Made here, held only in this process's memory, handed to each shard
 * over its launcher channel when it asks (never in its environment or on its command line), and
 * made anew at every reload.
 */
export class TicketKeys {
  private keys = randomBytes(48).toString("base64");

  rotate(): void {
    this.keys = randomBytes(48).toString("base64");
  }

  /** Answers a shard's `ticket-keys?` with the current keys. */
  serve = (child: ShardHandle): void => {
    child.on("message", (message: { type?: unknown } | null) => {
      if (message?.type === "ticket-keys?")
        child.send({ type: "ticket-keys", keys: this.keys } satisfies LauncherMessage);
    });
  };
}
