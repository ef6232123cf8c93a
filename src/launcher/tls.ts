/**
 * `--tls-cert` and `--tls-key`: the launcher reads and checks both files before any shard starts
 * and again when a reload is asked for. What it checked is what every shard of that generation
 * serves: the launcher hands the PEM (and the session-ticket keys the Node shards share) to each
 * one over its launcher channel, crash restarts, recycles and scale-ups included. No shard reads
 * the files, so a pair changed on disk reaches the shards only through a reload.
 * Key material never reaches a log line or an error message: only paths and what is wrong.
 * @module
 */
import { createPrivateKey, randomBytes, X509Certificate } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import type { LauncherMessage } from "../protocol.ts";
import type { ShardHandle } from "../types.ts";

/** A certificate or key file that cannot be served; the message names the file and the problem. */
export class TlsFileError extends Error {}

/** The certificate chain and key as read and checked, PEM. */
export interface TlsPem {
  cert: string;
  key: string;
}

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
 * TlsFileError; returns what the launcher may log, and apart from it the PEM read.
 */
export function checkTlsFiles(
  { cert, key }: { cert: string; key: string },
  now = Date.now(),
): { summary: TlsSummary; pem: TlsPem } {
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
  const summary = {
    subject: leaf.subject.replace(/\n/g, ", "),
    validTo: leaf.validTo,
    fingerprint256: leaf.fingerprint256,
    chainLength: chain.length,
    warnings,
  };
  return { summary, pem: { cert: certText, key: keyText } };
}

/** What the shards of one generation serve: the checked pair, and the session-ticket keys they share. */
interface Generation extends TlsPem {
  ticketKeys: string;
}

const newTicketKeys = () => randomBytes(48).toString("base64");

/**
 * The TLS material of each generation that some shard may still be started for. Generation 0
 * serves the pair checked at start. A reload's check hands over the pair it read (`checked`);
 * the rolling reload, when it begins (reloads wait and coalesce), makes it the new generation's,
 * with new session-ticket keys (Node uses them; Bun and Deno make their own per process). A shard
 * asks for its generation's with `tls?` over its launcher channel (never in its environment or
 * on its command line): a crash restart, recycle or scale-up serves what its generation's other
 * shards serve, whatever lies on disk meanwhile. Held only in this process's memory.
 */
export class TlsGenerations {
  private readonly generations = new Map<number, Generation>();
  private latest = 0;
  /** The pair the last successful check read: the next generation's. */
  private next: TlsPem;

  constructor(pem: TlsPem) {
    this.next = pem;
    this.generations.set(0, { ...pem, ticketKeys: newTicketKeys() });
  }

  /** A reload's check passed: the reload, when it begins, serves `pem`. */
  checked(pem: TlsPem): void {
    this.next = pem;
  }

  /** A rolling reload of `generation` begins; generations no shard runs or will start are dropped. */
  begin = (generation: number, inUse: ReadonlySet<number>): void => {
    this.generations.set(generation, { ...this.next, ticketKeys: newTicketKeys() });
    this.latest = generation;
    for (const known of this.generations.keys())
      if (known !== generation && !inUse.has(known)) this.generations.delete(known);
  };

  /** Answers the `tls?` of a new shard of `generation` with that generation's material. */
  serve = (child: ShardHandle, generation: number): void => {
    child.on("message", (message: { type?: unknown } | null) => {
      if (message?.type !== "tls?") return;
      const material = this.generations.get(generation) ?? this.generations.get(this.latest);
      if (material) child.send({ type: "tls", ...material } satisfies LauncherMessage);
    });
  };
}
