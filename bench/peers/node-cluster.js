// node:cluster + Hono: the primary accepts every connection and hands it to a worker (round robin).
import cluster from "node:cluster";
import process from "node:process";

const workers = Number(process.env.WORKERS ?? 1);
if (cluster.isPrimary) {
  for (let i = 0; i < workers; i++) cluster.fork();
  process.on("SIGTERM", () => {
    for (const worker of Object.values(cluster.workers ?? {})) worker?.kill();
    process.exit(0);
  });
} else {
  await import("./cluster-worker.js");
}
