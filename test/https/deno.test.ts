import { RUNTIMES } from "../helpers.ts";
import { httpsSuite } from "../https.ts";

httpsSuite(RUNTIMES.deno);
