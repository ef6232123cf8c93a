import { RUNTIMES } from "../helpers.ts";
import { lifecycleSuite } from "../lifecycle.ts";

lifecycleSuite(RUNTIMES.bun);
