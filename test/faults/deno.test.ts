import { faultSuite } from "../faults.ts";
import { RUNTIMES } from "../helpers.ts";

faultSuite(RUNTIMES.deno);
