import { controlsSuite } from "../controls.ts";
import { RUNTIMES } from "../helpers.ts";

controlsSuite(RUNTIMES.node);
