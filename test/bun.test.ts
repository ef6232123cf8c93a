import { RUNTIMES } from "./helpers.ts";
import { shardSuite } from "./suite.ts";

shardSuite(RUNTIMES.bun);
