import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { test } from "node:test";
import { Emitter } from "../src/launcher/emitter.ts";

// The supervisor treats every shard handle alike: Emitter (threads, Bun and Deno shard processes)
// must do what node:events does (a ChildProcess) where it relies on it. Each case runs on both.
for (const [name, make] of [
  ["node:events", () => new EventEmitter()],
  ["Emitter", () => new Emitter()],
] as const) {
  test(`${name}: once() runs once, even when an earlier listener emits again; off() during an emit; an unheard error throws`, () => {
    const events = make();
    const heard: string[] = [];
    events.on("exit", (code: number) => {
      heard.push(`first ${code}`);
      if (code === 1) events.emit("exit", 2);
    });
    events.once("exit", (code: number) => heard.push(`once ${code}`));
    events.emit("exit", 1);
    assert.deepEqual(heard, ["first 1", "first 2", "once 2"]);

    const calls: string[] = [];
    const second = () => calls.push("second");
    events.on("close", () => {
      calls.push("first");
      events.off("close", second);
    });
    events.on("close", second);
    events.emit("close");
    events.emit("close");
    assert.deepEqual(calls, ["first", "second", "first"], "removed during an emit: still called in it");

    assert.throws(() => events.emit("error", new Error("unheard")), /unheard/);
  });
}
