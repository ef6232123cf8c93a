import { RUNTIMES } from "../helpers.ts";
import { takeoverSuite } from "../takeover.ts";

takeoverSuite(RUNTIMES.deno);
