/**
 * `--watch`: a change under the watched folders asks for a rolling reload. chokidar (loaded only
 * with --watch) sits on the runtime's own fs.watch (inotify on Linux) and follows the files that
 * editors and `sed -i` replace by renaming, which a bare recursive fs.watch loses track of. A burst
 * of writes (an editor's save, a `git checkout`) makes one reload: the reload waits until the
 * files have been quiet for `quietMs`. A broken edit is refused like any failed reload: the new
 * shard fails its load handshake, the running shards keep serving, and the next good edit reloads.
 * @module
 */
import { basename, relative } from "node:path";
import { watch } from "chokidar";

/** node_modules, .git and every other dotfile or dot-folder are not the app's own files. */
export function isIgnored(path: string): boolean {
  return path.split(/[\\/]/).some((part) => part === "node_modules" || /^\.[^./]/.test(part));
}

export interface Watching {
  close(): Promise<void>;
}

/**
 * Watches each folder (or file) in `paths` and calls `onChange` with the first changed path of a
 * burst, once the burst has been quiet for `quietMs`. Resolves once the watchers are in place.
 */
export async function watchForChanges(
  paths: string[],
  onChange: (changed: string) => void,
  quietMs = 300,
): Promise<Watching> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let first: string | undefined;
  const watcher = watch(paths, {
    ignoreInitial: true,
    persistent: false,
    // Judge only what lies below a watched root, so that a root inside a dot-folder still works.
    ignored: (path) => paths.every((root) => isIgnored(relative(root, path)) || isIgnored(basename(path))),
  });
  watcher.on("all", (_event, path) => {
    first ??= relative(process.cwd(), path) || path;
    clearTimeout(timer);
    timer = setTimeout(() => {
      const changed = first as string;
      first = undefined;
      onChange(changed);
    }, quietMs);
  });
  await new Promise<void>((resolve, reject) => {
    watcher.once("ready", resolve);
    watcher.once("error", reject);
  });
  return {
    close() {
      clearTimeout(timer);
      return watcher.close();
    },
  };
}
