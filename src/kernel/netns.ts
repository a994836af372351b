// Named network namespaces, the way iproute2 keeps them: a bind mount of the namespace
// file at /run/netns/<name>, under a shared mount so other mount namespaces see it.
// Entering a namespace is one synchronous block that always switches back: sockets opened
// inside stay bound to that namespace after the thread leaves it.
import * as fs from "node:fs";
import * as libc from "./libc.js";

export const NETNS_DIR = "/run/netns";

/** The namespace this process started in; every block returns here. */
const homeFd = libc.open("/proc/thread-self/ns/net", libc.O_RDONLY);
let depth = 0;

function ensureNetnsDir(): void {
  fs.mkdirSync(NETNS_DIR, { recursive: true, mode: 0o755 });
  try {
    libc.mount("none", NETNS_DIR, "none", libc.MS_SHARED | libc.MS_REC);
  } catch (err) {
    if (!(err instanceof libc.SyscallError) || err.errno !== libc.EINVAL) throw err;
    // Not yet a mount point: bind it onto itself first (as `ip netns add` does).
    libc.mount(NETNS_DIR, NETNS_DIR, "none", libc.MS_BIND | libc.MS_REC);
    libc.mount("none", NETNS_DIR, "none", libc.MS_SHARED | libc.MS_REC);
  }
}

let dirReady = false;

export function netnsPath(name: string): string {
  return `${NETNS_DIR}/${name}`;
}

/**
 * Creates the named namespace and runs `inside` in it before returning to the home
 * namespace (`ip netns add NAME` plus whatever `inside` does, with no extra setns).
 * On failure of `inside` the namespace is removed again.
 */
export function createNetns<T>(name: string, inside: () => T): T {
  if (!dirReady) {
    ensureNetnsDir();
    dirReady = true;
  }
  const path = netnsPath(name);
  libc.close(libc.open(path, libc.O_RDONLY | libc.O_CREAT | libc.O_EXCL, 0o444));
  if (depth !== 0) throw new Error("createNetns inside another namespace block");
  depth++;
  let mounted = false;
  try {
    libc.unshare(libc.CLONE_NEWNET);
    libc.mount(`/proc/self/task/${libc.gettid()}/ns/net`, path, "none", libc.MS_BIND);
    mounted = true;
    return inside();
  } catch (err) {
    if (mounted) safeUnmount(path);
    fs.rmSync(path, { force: true });
    throw err;
  } finally {
    libc.setns(homeFd, libc.CLONE_NEWNET);
    depth--;
  }
}

/** Runs `fn` inside the namespace at `path` (or an open namespace fd), then returns home. */
export function withNetns<T>(target: string | number, fn: () => T): T {
  // One level only: a nested block would return "home" too early.
  if (depth !== 0) throw new Error("withNetns must not be nested");
  const fd = typeof target === "number" ? target : libc.open(target, libc.O_RDONLY);
  try {
    libc.setns(fd, libc.CLONE_NEWNET);
    depth++;
    try {
      return fn();
    } finally {
      depth--;
      libc.setns(homeFd, libc.CLONE_NEWNET);
    }
  } finally {
    if (typeof target !== "number") libc.close(fd);
  }
}

function safeUnmount(path: string): void {
  try {
    libc.umount2(path, libc.MNT_DETACH);
  } catch (err) {
    if (!(err instanceof libc.SyscallError) || (err.errno !== libc.EINVAL && err.errno !== libc.ENOENT)) throw err;
  }
}

/** `ip netns delete NAME`; a missing namespace is success. */
export function deleteNetns(name: string): void {
  const path = netnsPath(name);
  if (!fs.existsSync(path)) return;
  safeUnmount(path);
  fs.rmSync(path, { force: true });
}

/** Names under /run/netns, optionally only those starting with `startsWith`. */
export function listNetns(startsWith = ""): string[] {
  try {
    return fs.readdirSync(NETNS_DIR).filter((n) => n.startsWith(startsWith));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw err;
  }
}

/** Opens a namespace for later `withNetns(fd, …)` calls. Caller closes it. */
export function openNetns(name: string): number {
  return libc.open(netnsPath(name), libc.O_RDONLY);
}

/** True when `path` is a mounted namespace (not a stale empty file left by a crash). */
export function isNetnsMounted(name: string): boolean {
  try {
    const fd = libc.open(netnsPath(name), libc.O_RDONLY);
    try {
      // A bind-mounted nsfs file reports the nsfs magic; a plain file fails setns-style checks.
      return fs.fstatSync(fd).dev !== fs.statSync(NETNS_DIR).dev;
    } finally {
      libc.close(fd);
    }
  } catch {
    return false;
  }
}

export function homeNetnsFd(): number {
  return homeFd;
}
