// A node:cluster worker (node-cluster.js or PM2 cluster mode): listen() goes through the primary.
import process from "node:process";
import { createAdaptorServer } from "@hono/node-server";
import app from "../../src/app.ts";

createAdaptorServer({ fetch: app.fetch }).listen({ port: Number(process.env.PORT), host: "127.0.0.1" });
