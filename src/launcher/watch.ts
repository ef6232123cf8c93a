/**
 * `--watch`: a change under the watched folders asks for a rolling reload. chokidar (loaded only
 * with --watch) sits on the runtime's own fs.watch (inotify on Linux) and follows the files that
 * editors and `sed -i` replace by renaming, which a bare recursive fs.watch loses track of. A burst
 * of writes (an editor's save, a `git checkout`) makes one reload: the reload waits until the
 * files have been quiet for `quietMs`. A broken edit is refused like any failed reload: the new
 * shard fails its load handshake, the running shards keep serving, and the next good edit reloads.
 *
 * A watched file (the TLS certificate and key, or a file named in --watch=PATHS) is watched through
 * its folder instead, and counts as changed when what its path resolves to changes (device, inode,
 * size, mtime): a watch on the file itself follows its old inode, so it misses a symlink swapped
 * to a renewed file (certbot's live/ folder, a Kubernetes Secret's `..data`), and on Deno it went
 * deaf after the first file moved over the path.
 * @module
 */
import { type FSWatcher, readlinkSync, realpathSync, statSync, watch as watchFolder } from "node:fs";
import { basename, dirname, isAbsolute, relative, resolve } from "node:path";
import { log } from "../log.ts";

/** node_modules, .git and every other dotfile or dot-folder are not the app's own files. */
export function isIgnored(path: string): boolean {
  return path.split(/[\\/]/).some((part) => part === "node_modules" || /^\.[^./]/.test(part));
}

export interface Watching {
  close(): Promise<void>;
}

/** What a file's path resolves to, and its size and mtime; or why it cannot be read. */
function signature(path: string): string {
  try {
    const stat = statSync(path);
    return `${stat.dev}:${stat.ino}:${stat.size}:${stat.mtimeMs}`;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code ?? "unreadable";
  }
}

/** Which folder a path is (device and inode; its mtime changes with every file in it). */
function identity(path: string): string {
  try {
    const stat = statSync(path);
    return `${stat.dev}:${stat.ino}`;
  } catch {
    return "missing";
  }
}

/** A path as a log line shows it: relative to the working folder when it lies below it. */
function shown(path: string): string {
  const below = relative(process.cwd(), path);
  return below && !below.startsWith("..") && !isAbsolute(below) ? below : path;
}

/**
 * Watches each folder in `paths` (recursively, with chokidar) and each file in it (through its
 * folder, and the folder of the file a symlink points to), and calls `onChange` with the first
 * changed path of a burst, once the burst has been quiet for `quietMs`. Resolves once the
 * watchers are in place.
 */
export async function watchForChanges(
  paths: string[],
  onChange: (changed: string) => void,
  quietMs = 300,
): Promise<Watching> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let first: string | undefined;
  const changed = (path: string) => {
    first ??= shown(path);
    clearTimeout(timer);
    timer = setTimeout(() => {
      const what = first as string;
      first = undefined;
      onChange(what);
    }, quietMs);
  };

  const files = paths.map((path) => resolve(path)).filter(isFile);
  const folders = paths.map((path) => resolve(path)).filter((path) => !files.includes(path));
  const seen = new Map(files.map((file) => [file, signature(file)]));
  /** Each watched folder's watcher, and what the folder's path resolved to when it was watched. */
  const folderWatchers = new Map<string, { watcher: FSWatcher; at: string }>();
  /** Looks at every watched file after an event in one of their folders; watches new targets' folders. */
  const look = () => {
    for (const file of files) {
      const now = signature(file);
      if (now === seen.get(file)) continue;
      seen.set(file, now);
      changed(file);
    }
    watchFolders();
  };
  const watchFolders = () => {
    const wanted = new Set(files.flatMap(chainFolders));
    for (const [folder, { watcher, at }] of folderWatchers) {
      // A folder no file's chain goes through any more (an old Secret version), or one replaced
      // since (removed and made anew, renamed into place): its watch is of the old one.
      if (wanted.has(folder) && identity(folder) === at) continue;
      watcher.close();
      folderWatchers.delete(folder);
    }
    for (const folder of wanted) {
      if (folderWatchers.has(folder)) continue;
      try {
        const watcher = watchFolder(folder, { persistent: false }, look);
        const entry = { watcher, at: identity(folder) };
        // A folder that went away: its files read as missing, and the next look watches anew.
        watcher.on("error", () => {
          watcher.close();
          if (folderWatchers.get(folder) === entry) folderWatchers.delete(folder);
        });
        folderWatchers.set(folder, entry);
      } catch {}
    }
  };
  watchFolders();

  let watcher: { close(): Promise<void> } | undefined;
  if (folders.length > 0) {
    const { watch } = await import("chokidar");
    const chokidar = watch(folders, {
      ignoreInitial: true,
      persistent: false,
      // Judge only what lies below a watched root, so that a root inside a dot-folder still works.
      ignored: (path) =>
        folders.every((root) => isIgnored(relative(root, path)) || isIgnored(basename(path))),
    });
    chokidar.on("all", (_event, path) => changed(path));
    // An error (a symbolic link loop, a folder that cannot be read, the inotify limit) is said
    // once per kind and the rest is watched on; chokidar is ready after it. Without a
    // listener for every error, node:events would throw the second one out of chokidar.
    const said = new Set<string>();
    chokidar.on("error", (error) => {
      // Once per kind (ELOOP, EACCES, ENOSPC...): the inotify limit would say it for every folder.
      const { message, code } = error as NodeJS.ErrnoException;
      if (said.has(code ?? message)) return;
      said.add(code ?? message);
      log.warn(`--watch: ${message}: changes there are not seen`);
    });
    await new Promise<void>((resolve) => chokidar.once("ready", resolve));
    watcher = chokidar;
  }
  return {
    close() {
      clearTimeout(timer);
      for (const { watcher: folderWatcher } of folderWatchers.values()) folderWatcher.close();
      return watcher?.close() ?? Promise.resolve();
    },
  };
}

function isFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/**
 * The folders a file's path goes through, link by link: its own, that of each symlink's target
 * (certs/cert.pem -> /etc/letsencrypt/live/x/fullchain.pem -> ../../archive/x/fullchain3.pem:
 * certs, live/x and archive/x; certbot renews by swapping the link in live/x), and the folder of
 * what it finally resolves to.
 */
function chainFolders(file: string): string[] {
  const folders = [dirname(file)];
  let path = file;
  for (let hop = 0; hop < 40; hop++) {
    let target: string;
    try {
      target = readlinkSync(path);
    } catch {
      break; // not a link (or gone): the chain ends here
    }
    path = resolve(dirname(path), target);
    folders.push(dirname(path));
  }
  folders.push(dirname(realpathOr(file)));
  return [...new Set(folders)];
}

function realpathOr(path: string): string {
  try {
    return realpathSync(path);
  } catch {
    return path;
  }
}
