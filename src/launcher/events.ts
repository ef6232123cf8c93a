/**
 * The launcher's events (start, reload steps, restarts, recycles, scaling, takeovers, stop): each
 * is one log line and one entry of a small ring that `top` and the dashboard show. Whatever
 * changes the set of shards reports it here, through `event()`.
 * @module
 */
import { log } from "../log.ts";

export type EventKind = "start" | "reload" | "restart" | "exit" | "recycle" | "scale" | "takeover" | "stop";

export interface LauncherEvent {
  /** Sequence number, from 1: a client asks for what came after the last one it saw. */
  seq: number;
  /** Epoch milliseconds. */
  time: number;
  kind: EventKind;
  level: "info" | "warn" | "error";
  message: string;
  /** The shard slot concerned, if one is. */
  shard?: number;
}

/** Events kept for clients that connect later. */
export const EVENTS_KEPT = 100;

const ring: LauncherEvent[] = [];
const listeners = new Set<(event: LauncherEvent) => void>();
let seq = 0;

/** Logs `message` at `level` and records it as an event of `kind`. */
export function event(
  kind: EventKind,
  message: string,
  { level = "info", shard }: { level?: LauncherEvent["level"]; shard?: number } = {},
): void {
  log[level](message);
  const entry: LauncherEvent = { seq: ++seq, time: Date.now(), kind, level, message, shard };
  ring.push(entry);
  if (ring.length > EVENTS_KEPT) ring.shift();
  for (const listener of listeners) listener(entry);
}

/** The events kept, oldest first; only those after `afterSeq` if given. */
export function recentEvents(afterSeq = 0): LauncherEvent[] {
  return ring.filter((entry) => entry.seq > afterSeq);
}

/** Calls `listener` for every event from now on; returns the function that stops it. */
export function onEvent(listener: (event: LauncherEvent) => void): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}
