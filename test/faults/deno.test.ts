import { faultSuite } from "../faults.ts";
import { tlsRotationSuite } from "../faults-tls.ts";
import { RUNTIMES } from "../helpers.ts";

faultSuite(RUNTIMES.deno);
tlsRotationSuite(RUNTIMES.deno);
