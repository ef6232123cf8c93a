import app from "./src/app.ts";
Deno.serve({ port: Number(Deno.env.get("PORT")), hostname: "127.0.0.1", reusePort: true, onListen() {} }, app.fetch);
