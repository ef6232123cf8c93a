/**
 * The events of a shard handle that is not a ChildProcess (a thread's, a Bun or Deno shard process's):
 * on, once, off and emit as node:events's EventEmitter has them (listeners in the order added, a
 * listener removed during an emit still called in it, "error" with no listener thrown), without
 * node:events, which would cost Deno its Node layer on the launcher's way to its first shards.
 * @module
 */
import type { HandleEvents } from "../types.ts";

// biome-ignore lint/suspicious/noExplicitAny: as node:events types its listeners
type Listener = (...args: any[]) => void;
/** A once() listener, with what it wraps (so that off() finds it by the listener given). */
type Wrapped = Listener & { listener?: Listener };

export class Emitter implements HandleEvents {
  private readonly listeners = new Map<string, Wrapped[]>();

  on(event: string, listener: Listener): this {
    const list = this.listeners.get(event);
    if (list) list.push(listener);
    else this.listeners.set(event, [listener]);
    return this;
  }

  once(event: string, listener: Listener): this {
    let fired = false;
    const wrapped: Wrapped = (...args) => {
      this.off(event, wrapped);
      // Once, even where a listener before it emits the same event again (as node:events does).
      if (fired) return;
      fired = true;
      listener.apply(this, args);
    };
    wrapped.listener = listener;
    return this.on(event, wrapped);
  }

  /** Removes the listener added last as `listener` (or as once(`listener`)). */
  off(event: string, listener: Listener): this {
    const list = this.listeners.get(event) ?? [];
    const index = list.findLastIndex((each) => each === listener || each.listener === listener);
    if (index >= 0) list.splice(index, 1);
    return this;
  }

  // biome-ignore lint/suspicious/noExplicitAny: as node:events types its arguments
  emit(event: string, ...args: any[]): boolean {
    const list = this.listeners.get(event);
    if (!list?.length) {
      if (event === "error") throw args[0];
      return false;
    }
    for (const listener of [...list]) listener.apply(this, args);
    return true;
  }
}
