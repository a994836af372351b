// net.* sysctls of the current thread's namespace. /proc/sys/net resolves the namespace
// when the file is opened, so synchronous reads and writes here follow withNetns blocks.
import * as fs from "node:fs";
import * as libc from "./libc.js";

function pathOf(key: string): string {
  if (!/^net\.[A-Za-z0-9_.-]+$/.test(key)) throw new Error(`not a net.* sysctl: ${key}`);
  // Interface names may contain dots; callers pass them already in slash form when needed.
  return `/proc/sys/${key.replace(/\./g, "/")}`;
}

/** `sysctl -w KEY=VALUE` in the current namespace. */
export function writeSysctl(key: string, value: string | number): void {
  fs.writeFileSync(pathOf(key), `${value}\n`);
}

/** `sysctl -n KEY` in the current namespace. */
export function readSysctl(key: string): string {
  return fs.readFileSync(pathOf(key), "latin1").trim();
}

/** Sets a per-interface IPv4 sysctl, e.g. forwarding on one device (`sysctl -w net.ipv4.conf.DEV.forwarding=1`). */
export function writeInterfaceSysctl(family: "ipv4" | "ipv6", device: string, name: string, value: string | number): void {
  fs.writeFileSync(`/proc/sys/net/${family}/conf/${device}/${name}`, `${value}\n`);
}

/** Reads a per-interface sysctl (`sysctl -n net.ipv4.conf.DEV.forwarding`). */
export function readInterfaceSysctl(family: "ipv4" | "ipv6", device: string, name: string): string {
  return fs.readFileSync(`/proc/sys/net/${family}/conf/${device}/${name}`, "latin1").trim();
}

/**
 * Writes several sysctls under one top-level directory, e.g. ("ipv6", [["conf/all/disable_ipv6", 1]]),
 * with a single lookup of that directory (see readAllNetSysctls for why that matters).
 */
export function writeNetSysctls(top: "ipv4" | "ipv6" | "core", entries: Array<[string, string | number]>): void {
  const dirFd = libc.open(`/proc/sys/net/${top}`, libc.O_RDONLY | O_DIRECTORY);
  try {
    for (const [rel, value] of entries) {
      if (rel.split("/").some((part) => part === ".." || part === "")) throw new Error(`bad sysctl path ${rel}`);
      fs.writeFileSync(`/proc/thread-self/fd/${dirFd}/${rel}`, `${value}\n`);
    }
  } finally {
    libc.close(dirFd);
  }
}

/**
 * Every readable net.* sysctl of the current namespace, as key → value (`sysctl -a -r ^net`).
 *
 * Two costs shape this. Each top-level directory (/proc/sys/net/ipv4, …) has one dentry
 * per network namespace on the host, all under the same parent, so looking one up walks
 * a chain as long as the number of namespaces: it is done once per directory here, and
 * everything below is reached through the open directory (/proc/thread-self/fd/N/…),
 * whose children are this namespace's own. And plain open/read/close calls (no fstat, no
 * exceptions for write-only entries) are several times cheaper than fs.readFileSync.
 */
export function readAllNetSysctls(
  skip: (key: string) => boolean = () => false,
  opts: { readOnly?: (key: string) => boolean } = {},
): Map<string, string> {
  const out = new Map<string, string>();
  const buf = Buffer.allocUnsafe(4096);
  const walk = (dir: string, key: string) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const childKey = `${key}.${entry.name}`;
      if (skip(childKey)) continue;
      const childPath = `${dir}/${entry.name}`;
      if (entry.isDirectory()) {
        walk(childPath, childKey);
        continue;
      }
      // Entries the namespace cannot write mirror a host-wide value (or a state of their
      // own): the caller decides per key whether to keep them.
      if (opts.readOnly && !writable(childKey, childPath) && !opts.readOnly(childKey)) continue;
      const fd = libc.openRaw(childPath, libc.O_RDONLY);
      if (fd < 0) continue; // write-only entries (e.g. route flush)
      const n = libc.readRaw(fd, buf);
      libc.close(fd);
      if (n >= 0) out.set(childKey, buf.toString("latin1", 0, n).trim());
    }
  };
  for (const top of fs.readdirSync("/proc/sys/net", { withFileTypes: true })) {
    const key = `net.${top.name}`;
    if (skip(key)) continue;
    if (!top.isDirectory()) continue; // /proc/sys/net holds directories only
    const dirFd = libc.openRaw(`/proc/sys/net/${top.name}`, libc.O_RDONLY | O_DIRECTORY);
    if (dirFd < 0) continue;
    try {
      walk(`/proc/thread-self/fd/${dirFd}`, key);
    } finally {
      libc.close(dirFd);
    }
  }
  return out;
}

const O_DIRECTORY = 0o200000;
const O_WRONLY = 1;

/**
 * Whether root in this namespace can write a sysctl: entries a child namespace only
 * mirrors from the host (net.netfilter.nf_conntrack_max, net.core.rmem_max, …) are
 * read-only there. Cached per key: a key's mode does not change, and opening every entry
 * twice would double the walk.
 */
const writableCache = new Map<string, boolean>();
function writable(key: string, file: string): boolean {
  let w = writableCache.get(key);
  if (w === undefined) {
    const fd = libc.openRaw(file, O_WRONLY);
    w = fd >= 0;
    if (fd >= 0) libc.close(fd);
    writableCache.set(key, w);
  }
  return w;
}
