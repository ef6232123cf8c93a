// The floor of any supervisor that is a process of the app's own runtime: a process of that
// runtime that does nothing but start WORKERS processes serving the app (bench/peers/plain.js),
// through the runtime's cheapest way to spawn (Bun.spawn, Deno.Command, node:child_process), and
// ends them on SIGTERM. No IPC, no readiness, no restart: what a hand-written spawn loop does.
const workers = Number(globalThis.Deno ? Deno.env.get("WORKERS") : process.env.WORKERS) || 1;
const plain = new URL("./plain.js", import.meta.url).pathname;
const children = [];
for (let i = 0; i < workers; i++) {
  if (globalThis.Bun) {
    children.push(Bun.spawn([process.execPath, plain], { stdio: ["ignore", "inherit", "inherit"] }));
  } else if (globalThis.Deno) {
    const args = ["run", "--unstable-net", "--allow-net", "--allow-env", "--allow-read", plain];
    children.push(new Deno.Command(Deno.execPath(), { args, stdin: "null" }).spawn());
  } else {
    const { spawn } = process.getBuiltinModule("node:child_process");
    children.push(spawn(process.execPath, [plain], { stdio: ["ignore", "inherit", "inherit"] }));
  }
}
const stop = () => {
  for (const child of children) child.kill("SIGTERM");
};
if (globalThis.Deno) Deno.addSignalListener("SIGTERM", stop);
else process.on("SIGTERM", stop);
