// net.* sysctls of the current thread's namespace. /proc/sys/net resolves the namespace
// when the file is opened, so synchronous reads and writes here follow withNetns blocks.
import * as fs from "node:fs";
import * as libc from "./libc.js";

function pathOf(key: string): string {
  if (!/^net\.[A-Za-z0-9_.\-]+$/.test(key)) throw new Error(`not a net.* sysctl: ${key}`);
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

/**
 * Every readable net.* sysctl of the current namespace, as key → value (`sysctl -a -r ^net`).
 * A slot has some 600 of them: plain open/read/close calls (no fstat, no exceptions for the
 * write-only ones) make this several times cheaper than fs.readFileSync per file.
 */
export function readAllNetSysctls(skip: (key: string) => boolean = () => false): Map<string, string> {
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
      const fd = libc.openRaw(childPath, libc.O_RDONLY);
      if (fd < 0) continue; // write-only entries (e.g. route flush)
      const n = libc.readRaw(fd, buf);
      libc.close(fd);
      if (n >= 0) out.set(childKey, buf.toString("latin1", 0, n).trim());
    }
  };
  walk("/proc/sys/net", "net");
  return out;
}
