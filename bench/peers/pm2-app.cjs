// PM2 cluster mode loads its apps with require(); the worker itself is an ES module.
import("./cluster-worker.js");
