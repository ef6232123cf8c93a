/**
 * The launcher's warning when the kernel will not migrate a closing shard's queued connections
 * (net.ipv4.tcp_migrate_req, Linux 5.14+, per network namespace): reloads and crash restarts
 * depend on it. Inside a container the fix is the container's, not the host's `sysctl -w`.
 * @module
 */

/** What the checks read; the launcher passes the real file system, tests pass their own. */
export interface Host {
  /** A file's text; throws if it cannot be read. */
  readText(path: string): string;
  exists(path: string): boolean;
  env: Record<string, string | undefined>;
}

export type Container = "kubernetes" | "container" | undefined;

const CONTAINER_CGROUP = /\b(docker|kubepods|containerd|libpod|crio|lxc)\b/;

/** Which kind of container this process runs in, as far as files and environment tell. */
export function detectContainer(host: Host): Container {
  const read = (path: string) => {
    try {
      return host.readText(path);
    } catch {
      return "";
    }
  };
  const cgroup = read("/proc/self/cgroup");
  // Docker and containerd bind-mount /etc/hostname and friends from their state directories:
  // this still tells where a private cgroup namespace shows the cgroup as "/".
  const mounts = read("/proc/self/mountinfo");
  if (host.env.KUBERNETES_SERVICE_HOST || /kubepods/.test(cgroup) || /\/kubelet\/pods\//.test(mounts)) {
    return "kubernetes";
  }
  if (
    host.exists("/.dockerenv") ||
    host.exists("/run/.containerenv") ||
    CONTAINER_CGROUP.test(cgroup) ||
    /\/(docker\/containers|containerd|libpod|containers\/storage)\//.test(mounts)
  ) {
    return "container";
  }
  return undefined;
}

const SYSCTL = "net.ipv4.tcp_migrate_req";
const RISK = "a reload or crash can reset connections queued on the closing shard";

/** The warning to log, or undefined when migration is on. */
export function migrateWarning(host: Host): string | undefined {
  let value: string | undefined;
  try {
    value = host.readText(`/proc/sys/${SYSCTL.replaceAll(".", "/")}`).trim();
  } catch {}
  if (value === undefined || value === "") {
    return `this kernel has no ${SYSCTL} (Linux < 5.14): a reload can reset queued connections`;
  }
  if (value !== "0") return undefined;
  switch (detectContainer(host)) {
    case "kubernetes":
      return `${SYSCTL} is 0 in this pod's network namespace: ${RISK}; set it in the pod spec, securityContext.sysctls: [{ name: ${SYSCTL}, value: "1" }] (the kubelet must allow it: --allowed-unsafe-sysctls=${SYSCTL})`;
    case "container":
      return `${SYSCTL} is 0 in this container's network namespace: ${RISK}; start the container with \`--sysctl ${SYSCTL}=1\` (docker/podman run; \`sysctls:\` in compose, securityContext.sysctls in a Kubernetes pod)`;
    default:
      return `${SYSCTL} is 0: ${RISK}; enable it with \`sysctl -w ${SYSCTL}=1\``;
  }
}
