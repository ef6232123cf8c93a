// `deno serve --parallel`: Deno's built-in alternative (N isolates in one process, DENO_JOBS=N).
import app from "../../src/app.ts";

export default { fetch: app.fetch };
