// What /proc says about one network namespace: the sockets open in it, the processes
// (and threads) living in it, and the processes holding one of its tun/tap devices open.
// Read-only; nothing here spawns a process. Socket tables follow the calling thread's
// namespace (/proc/thread-self/net), so call namespaceSockets() inside withNetns; the
// process scans look at every /proc/<pid> and work from any namespace.
import * as fs from "node:fs";
import * as libc from "./libc.js";
import { bytesToIpv6 } from "./netlink/codec.js";
import type { ProcessTree } from "../core/types.js";

/** TUNGETDEVNETNS, _IO('T', 227): a new descriptor of the namespace the tun device lives in (Linux 5.2+). */
const TUNGETDEVNETNS = 0x54e3;

/** The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), to tell a reused pid apart. */
export function processStartTime(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "latin1");
    // comm may contain spaces and parentheses: fields start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return Number(fields[19]);
  } catch {
    return undefined;
  }
}

/** A namespace's identity: the nsfs device and inode (`stat -L /run/netns/NAME`). */
export interface NsId {
  dev: number;
  ino: number;
}

/** `stat -L PATH` of a namespace file (/run/netns/NAME, /proc/PID/ns/net). */
export function nsIdOf(path: string): NsId {
  const st = fs.statSync(path);
  return { dev: st.dev, ino: st.ino };
}

function sameNs(a: NsId, b: NsId): boolean {
  return a.dev === b.dev && a.ino === b.ino;
}

function readComm(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/comm`, "latin1").trim();
  } catch {
    return "?";
  }
}

function numericEntries(dir: string): number[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return [];
  }
  const out: number[] = [];
  for (const n of names) if (/^\d+$/.test(n)) out.push(Number(n));
  return out;
}

/** The parent of `pid` (field 4 of /proc/PID/stat), or undefined when it is gone. */
export function parentPid(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "latin1");
    // comm may contain spaces and parentheses: fields start after the last ')'.
    const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ", 2)[1]);
    return Number.isInteger(ppid) ? ppid : undefined;
  } catch {
    return undefined;
  }
}

/** Whether `pid` is `ancestor` or one of its descendants (walks parents; pids of our namespace). */
export function isSelfOrDescendant(pid: number, ancestor: number): boolean {
  if (ancestor <= 0) return false;
  // A parent chain is short; the bound only guards against a loop through a reused pid.
  for (let current: number | undefined = pid, depth = 0; current !== undefined && current > 0 && depth < 4096; depth++) {
    if (current === ancestor) return true;
    current = parentPid(current);
  }
  return false;
}

/** The process tree as the API's owner checks see it. */
export const processTree: ProcessTree = {
  exists: (pid) => parentPid(pid) !== undefined,
  isSelfOrDescendant,
};

export interface NsProcess {
  pid: number;
  comm: string;
  /** Threads of `pid` that are in the namespace while the process's main thread is not. */
  threads?: number[];
}

/**
 * Processes with a thread in namespace `ns` (what `ip netns pids NAME` finds, plus
 * processes of which only a thread has entered, like a VMM's or our own withNetns).
 * Call it outside withNetns, or the caller's own thread counts.
 */
export function processesInNetns(ns: NsId): NsProcess[] {
  const out: NsProcess[] = [];
  for (const pid of numericEntries("/proc")) {
    let leaderIn: boolean;
    try {
      leaderIn = sameNs(nsIdOf(`/proc/${pid}/ns/net`), ns);
    } catch {
      continue; // gone, or a kernel thread without a namespace link we may read
    }
    if (leaderIn) {
      out.push({ pid, comm: readComm(pid) });
      continue;
    }
    const threads: number[] = [];
    for (const tid of numericEntries(`/proc/${pid}/task`)) {
      if (tid === pid) continue;
      try {
        if (sameNs(nsIdOf(`/proc/${pid}/task/${tid}/ns/net`), ns)) threads.push(tid);
      } catch {
        // thread exited
      }
    }
    if (threads.length > 0) out.push({ pid, comm: readComm(pid), threads });
  }
  return out.sort((a, b) => a.pid - b.pid);
}

/**
 * One scan of every process and thread for all namespaces at once: namespace ("dev:ino")
 * → the processes with a thread in it, as processesInNetns gives them for one. Several
 * slots released before the scan started are answered by the same scan. A thread is only
 * looked at when its process has more than one (/proc/PID/task's link count is two plus
 * the thread count).
 */
export function netnsProcesses(): Map<string, NsProcess[]> {
  const out = new Map<string, NsProcess[]>();
  // readlink of /proc/PID/ns/net ("net:[INODE]") through libc: a third of fs.statSync's cost,
  // and there is one per thread on the host.
  const buf = Buffer.allocUnsafe(64);
  const nsOf = (path: string): string | undefined => {
    const n = libc.readlinkRaw(path, buf);
    return n < 0 ? undefined : buf.toString("latin1", 0, n);
  };
  // Processes of our own (the host's) namespace are most of them and never a slot's: skipped.
  const home = nsOf(`/proc/${process.pid}/ns/net`);
  for (const pid of numericEntries("/proc")) {
    const leader = nsOf(`/proc/${pid}/ns/net`);
    if (leader === undefined) continue; // gone, or a kernel thread without a namespace link we may read
    let threadCount: number;
    try {
      threadCount = fs.statSync(`/proc/${pid}/task`).nlink - 2;
    } catch {
      continue;
    }
    const others = new Map<string, number[]>();
    if (threadCount > 1) {
      for (const tid of numericEntries(`/proc/${pid}/task`)) {
        if (tid === pid) continue;
        const k = nsOf(`/proc/${pid}/task/${tid}/ns/net`);
        if (k !== undefined && k !== leader && k !== home) others.set(k, [...(others.get(k) ?? []), tid]);
      }
    }
    if (leader === home && others.size === 0) continue;
    const comm = readComm(pid);
    const add = (k: string, p: NsProcess) => out.set(k, [...(out.get(k) ?? []), p]);
    if (leader !== home) add(leader, { pid, comm });
    for (const [k, threads] of others) add(k, { pid, comm, threads });
  }
  return out;
}

/** The key of namespace `ns` in netnsProcesses' answer. */
export function netnsKey(ns: NsId): string {
  return `net:[${ns.ino}]`;
}

export interface TunHolder {
  pid: number;
  comm: string;
  fd: number;
  /**
   * "device": the descriptor's tun device was checked to live in the namespace
   * (pidfd_getfd + TUNGETDEVNETNS); "process": only the holder's own namespace matched
   * (older kernels, or the descriptor could not be borrowed).
   */
  matchedBy: "device" | "process";
}

/**
 * Processes holding tun/tap device `name` of namespace `ns` open (`iff:` in
 * /proc/PID/fdinfo). The name repeats in every slot, so each candidate descriptor is
 * borrowed with pidfd_getfd and asked which namespace its device lives in; when that is
 * not possible the holder's own namespace decides. Scans every process's descriptors:
 * call it only when the device reports attached queues.
 */
export function tunHolders(name: string, ns: NsId): TunHolder[] {
  const out: TunHolder[] = [];
  for (const pid of numericEntries("/proc")) {
    if (pid === process.pid) continue;
    for (const fd of numericEntries(`/proc/${pid}/fd`)) {
      let info: string;
      try {
        if (fs.readlinkSync(`/proc/${pid}/fd/${fd}`) !== "/dev/net/tun") continue;
        info = fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, "latin1");
      } catch {
        continue;
      }
      const iff = /^iff:\s*(\S+)/m.exec(info);
      if (!iff || iff[1] !== name) continue;
      const device = deviceNetns(pid, fd);
      if (device !== undefined) {
        if (sameNs(device, ns)) out.push({ pid, comm: readComm(pid), fd, matchedBy: "device" });
        continue;
      }
      try {
        if (sameNs(nsIdOf(`/proc/${pid}/ns/net`), ns)) out.push({ pid, comm: readComm(pid), fd, matchedBy: "process" });
      } catch {
        // gone
      }
    }
  }
  return out;
}

/** The namespace of the tun device behind descriptor `fd` of process `pid`, or undefined when it cannot be asked. */
function deviceNetns(pid: number, fd: number): NsId | undefined {
  const pidfd = libc.pidfdOpenRaw(pid);
  if (pidfd < 0) return undefined;
  try {
    const copy = libc.pidfdGetfdRaw(pidfd, fd);
    if (copy < 0) return undefined;
    try {
      const nsfd = libc.ioctlIntRaw(copy, TUNGETDEVNETNS, 0);
      if (nsfd < 0) return undefined;
      try {
        const st = fs.fstatSync(nsfd);
        return { dev: st.dev, ino: st.ino };
      } finally {
        libc.close(nsfd);
      }
    } finally {
      libc.close(copy);
    }
  } finally {
    libc.close(pidfd);
  }
}

// ───────────────────────────── socket tables ─────────────────────────────

const INET_PROTOS = ["tcp", "tcp6", "udp", "udp6", "udplite", "udplite6", "raw", "raw6"] as const;
type InetProto = (typeof INET_PROTOS)[number];
export type SocketProto = InetProto | "unix" | "packet";

export interface NsSocket {
  proto: SocketProto;
  /** "addr:port" for inet sockets (raw: port is the IP protocol), the path for unix ("@…" abstract, "" unnamed), the device index for packet sockets (0: any). */
  local: string;
  /** "addr:port" of the peer (inet only). */
  remote?: string;
  /** TCP state name, "unconnected"/"connected" for udp/raw, unix socket state, or packet socket type. */
  state: string;
  /** unix: stream/dgram/seqpacket; packet: raw/dgram with its ethertype. */
  detail?: string;
}

const TCP_STATES = ["", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV"];
const UNIX_TYPES: Record<number, string> = { 1: "stream", 2: "dgram", 5: "seqpacket" };
const UNIX_STATES = ["free", "unconnected", "connecting", "connected", "disconnecting"];
const UNIX_ACCEPTCON = 0x10000;

/** /proc/net/tcp addresses: IPv4 as one host-order u32, IPv6 as four host-order u32 words. */
function procAddress(hex: string): string {
  if (hex.length === 8) {
    const v = parseInt(hex, 16);
    return [v & 255, (v >>> 8) & 255, (v >>> 16) & 255, v >>> 24].join(".");
  }
  const b = Buffer.alloc(16);
  for (let i = 0; i < 4; i++) b.writeUInt32LE(parseInt(hex.slice(i * 8, i * 8 + 8), 16) >>> 0, i * 4);
  if (b.subarray(0, 10).every((x) => x === 0) && b.readUInt16BE(10) === 0xffff) return `::ffff:${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  return bytesToIpv6(b);
}

function endpoint(text: string): string {
  const [addr, port] = text.split(":");
  return `${procAddress(addr!)}:${parseInt(port!, 16)}`;
}

const tableBuf = { b: Buffer.allocUnsafe(16 * 1024) };

function readTable(name: string): string[] {
  // Plain open/read/close: several of these are read on every proof.
  const text = libc.readSmallFile(`/proc/thread-self/net/${name}`, tableBuf);
  if (text === undefined) return []; // e.g. tcp6 without IPv6 support
  return text.split("\n").slice(1).filter((l) => l.trim() !== "");
}

/** /proc/net/sockstat{,6} of the calling thread's namespace: "TCP.inuse" → 3, "TCP.tw" → 0, … */
function sockstat(): Map<string, number> | undefined {
  const out = new Map<string, number>();
  try {
    for (const file of ["sockstat", "sockstat6"]) {
      const text = libc.readSmallFile(`/proc/thread-self/net/${file}`, tableBuf);
      if (text === undefined) return undefined;
      for (const line of text.split("\n")) {
        const m = /^(\w+):\s+(.*)$/.exec(line);
        if (!m) continue;
        const f = m[2]!.split(/\s+/);
        for (let i = 0; i + 1 < f.length; i += 2) out.set(`${m[1]}.${f[i]}`, Number(f[i + 1]));
      }
    }
  } catch {
    return undefined;
  }
  return out;
}

/**
 * Every socket open in the calling thread's namespace (`ss -a -t -u -w -x -0` without
 * counters, queues, timers, inodes or owners): /proc/thread-self/net/{tcp,tcp6,udp,udp6,
 * udplite,udplite6,raw,raw6,unix,packet}. Netlink sockets are left out (our own would be
 * among them). The inet tables walk the host-wide hash tables (milliseconds each), so a
 * table whose per-namespace count in sockstat is zero is not read.
 */
export function namespaceSockets(): NsSocket[] {
  const out: NsSocket[] = [];
  const counts = sockstat();
  const has = (...keys: string[]) => counts === undefined || keys.some((k) => (counts.get(k) ?? 1) > 0);
  const wanted: Record<InetProto, boolean> = {
    tcp: has("TCP.inuse", "TCP.tw"),
    tcp6: has("TCP6.inuse", "TCP.tw"),
    udp: has("UDP.inuse"),
    udp6: has("UDP6.inuse"),
    udplite: has("UDPLITE.inuse"),
    udplite6: has("UDPLITE6.inuse"),
    raw: has("RAW.inuse"),
    raw6: has("RAW6.inuse"),
  };
  for (const proto of INET_PROTOS) {
    if (!wanted[proto]) continue;
    for (const line of readTable(proto)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 4) continue;
      const st = parseInt(f[3]!, 16);
      const isTcp = proto.startsWith("tcp");
      out.push({
        proto,
        local: endpoint(f[1]!),
        remote: endpoint(f[2]!),
        state: isTcp ? TCP_STATES[st] ?? `state ${st}` : st === 1 ? "connected" : "unconnected",
      });
    }
  }
  for (const line of readTable("unix")) {
    // Num RefCount Protocol Flags Type St Inode [Path]
    const f = line.trim().split(/\s+/);
    if (f.length < 7) continue;
    const flags = parseInt(f[3]!, 16);
    const type = parseInt(f[4]!, 16);
    const st = parseInt(f[5]!, 16);
    out.push({
      proto: "unix",
      local: f.slice(7).join(" "),
      state: flags & UNIX_ACCEPTCON ? "listening" : UNIX_STATES[st] ?? `state ${st}`,
      detail: UNIX_TYPES[type] ?? `type ${type}`,
    });
  }
  for (const line of readTable("packet")) {
    // sk RefCnt Type Proto Iface R Rmem User Inode
    const f = line.trim().split(/\s+/);
    if (f.length < 5) continue;
    const type = Number(f[2]);
    out.push({
      proto: "packet",
      local: String(Number(f[4])),
      state: type === 3 ? "raw" : type === 2 ? "dgram" : `type ${type}`,
      detail: `proto 0x${parseInt(f[3]!, 16).toString(16).padStart(4, "0")}`,
    });
  }
  return out;
}

/** This boot of the kernel (a random UUID drawn at boot): leases do not outlive it. */
export function kernelBootId(): string {
  return fs.readFileSync("/proc/sys/kernel/random/boot_id", "latin1").trim();
}
