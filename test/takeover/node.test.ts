import { RUNTIMES } from "../helpers.ts";
import { takeoverChain, takeoverSuite } from "../takeover.ts";

takeoverSuite(RUNTIMES.node);
takeoverChain();
