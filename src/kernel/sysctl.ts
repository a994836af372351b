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
 * Lookups of a top-level directory (net.ipv6, …) made through the current private procfs
 * before it is replaced by a fresh one.
 */
const PRIVATE_PROC_LOOKUPS = 64;
let privateNet: { fd: number; lookups: number } | undefined;

/**
 * Opens /proc/sys/net/`top` of the current namespace, through a procfs instance of this
 * thread's own. Each namespace's /proc/sys/net/ipv6 (ipv4, core, …) is a dentry of its
 * own under the one shared /proc/sys/net, all with the same name: a lookup from a new
 * namespace walks (and locks) every one of them that is cached, and they stay cached
 * while their namespace lives, so on the host's /proc a build's sysctl write slowed down
 * linearly with the pool (0.3 ms per slot at 100 slots, 2.5–28 ms at 3,000). A detached
 * procfs mount (no mount point, nothing left by a crash) holds only the dentries looked
 * up through it; it is replaced after PRIVATE_PROC_LOOKUPS, dropping them with it.
 */
function openNetTop(top: string): number {
  if (privateNet && privateNet.lookups >= PRIVATE_PROC_LOOKUPS) {
    libc.close(privateNet.fd);
    privateNet = undefined;
  }
  if (!privateNet) {
    let root: number;
    try {
      root = libc.detachedMount("proc");
    } catch {
      // No procfs of our own (e.g. a user namespace without a fully visible /proc): the
      // host's, slower as the pool grows, but right.
      root = libc.open("/proc", libc.O_RDONLY | O_DIRECTORY);
    }
    try {
      privateNet = { fd: libc.openAt(root, "sys/net", libc.O_RDONLY | O_DIRECTORY), lookups: 0 };
    } finally {
      libc.close(root);
    }
  }
  privateNet.lookups++;
  return libc.openAt(privateNet.fd, top, libc.O_RDONLY | O_DIRECTORY);
}

/**
 * Writes several sysctls under one top-level directory, e.g. ("ipv6", [["conf/all/disable_ipv6", 1]]),
 * with a single lookup of that directory, through a private procfs (see openNetTop).
 */
export function writeNetSysctls(top: "ipv4" | "ipv6" | "core", entries: Array<[string, string | number]>): void {
  const dirFd = openNetTop(top);
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
 * A device's configuration as rtnetlink reports it (IFLA_AF_SPEC of RTM_NEWLINK):
 * `ipv4[i]` is IPV4_DEVCONF i (index 0 unused), `ipv6[i]` is DEVCONF i.
 */
export interface DeviceConf {
  ipv4?: readonly number[];
  ipv6?: readonly number[];
}

// Which array entry backs which file of /proc/sys/net/ipv{4,6}/conf/DEV (the kernel's
// IPV4_DEVCONF_* and DEVCONF_* order, include/uapi/linux/ip.h and ipv6.h). Left out, and so
// read from their files: entries whose array holds another unit than the file (the
// router_solicitation_* and router_probe_interval timers: milliseconds in the array,
// seconds in the file), stable_secret (a string), and entries newer than this table.
const IPV4_DEVCONF = new Map<string, number>(
  ([
  [1, "forwarding"],
  [2, "mc_forwarding"],
  [3, "proxy_arp"],
  [4, "accept_redirects"],
  [5, "secure_redirects"],
  [6, "send_redirects"],
  [7, "shared_media"],
  [8, "rp_filter"],
  [9, "accept_source_route"],
  [10, "bootp_relay"],
  [11, "log_martians"],
  [12, "tag"],
  [13, "arp_filter"],
  [14, "medium_id"],
  [15, "disable_xfrm"],
  [16, "disable_policy"],
  [17, "force_igmp_version"],
  [18, "arp_announce"],
  [19, "arp_ignore"],
  [20, "promote_secondaries"],
  [21, "arp_accept"],
  [22, "arp_notify"],
  [23, "accept_local"],
  [24, "src_valid_mark"],
  [25, "proxy_arp_pvlan"],
  [26, "route_localnet"],
  [27, "igmpv2_unsolicited_report_interval"],
  [28, "igmpv3_unsolicited_report_interval"],
  [29, "ignore_routes_with_linkdown"],
  [30, "drop_unicast_in_l2_multicast"],
  [31, "drop_gratuitous_arp"],
  [32, "bc_forwarding"],
  [33, "arp_evict_nocarrier"],
  ] as Array<[number, string]>).map(([i, n]) => [n, i]),
);
/** u32 settings (proc_douintvec): the array carries them as s32. */
const UNSIGNED_DEVCONF = new Set(["ioam6_id", "ioam6_id_wide", "ra_defrtr_metric"]);
const IPV6_DEVCONF = new Map<string, number>(
  ([
  [0, "forwarding"],
  [1, "hop_limit"],
  [2, "mtu"],
  [3, "accept_ra"],
  [4, "accept_redirects"],
  [5, "autoconf"],
  [6, "dad_transmits"],
  [7, "router_solicitations"],
  [10, "use_tempaddr"],
  [11, "temp_valid_lft"],
  [12, "temp_prefered_lft"],
  [13, "regen_max_retry"],
  [14, "max_desync_factor"],
  [15, "max_addresses"],
  [16, "force_mld_version"],
  [17, "accept_ra_defrtr"],
  [18, "accept_ra_pinfo"],
  [19, "accept_ra_rtr_pref"],
  [21, "accept_ra_rt_info_max_plen"],
  [22, "proxy_ndp"],
  [23, "optimistic_dad"],
  [24, "accept_source_route"],
  [25, "mc_forwarding"],
  [26, "disable_ipv6"],
  [27, "accept_dad"],
  [28, "force_tllao"],
  [29, "ndisc_notify"],
  [30, "mldv1_unsolicited_report_interval"],
  [31, "mldv2_unsolicited_report_interval"],
  [32, "suppress_frag_ndisc"],
  [33, "accept_ra_from_local"],
  [34, "use_optimistic"],
  [35, "accept_ra_mtu"],
  [37, "use_oif_addrs_only"],
  [38, "accept_ra_min_hop_limit"],
  [39, "ignore_routes_with_linkdown"],
  [40, "drop_unicast_in_l2_multicast"],
  [41, "drop_unsolicited_na"],
  [42, "keep_addr_on_down"],
  [44, "seg6_enabled"],
  [45, "seg6_require_hmac"],
  [46, "enhanced_dad"],
  [47, "addr_gen_mode"],
  [48, "disable_policy"],
  [49, "accept_ra_rt_info_min_plen"],
  [50, "ndisc_tclass"],
  [51, "rpl_seg_enabled"],
  [52, "ra_defrtr_metric"],
  [53, "ioam6_enabled"],
  [54, "ioam6_id"],
  [55, "ioam6_id_wide"],
  [56, "ndisc_evict_nocarrier"],
  [57, "accept_untracked_na"],
  [58, "accept_ra_min_lft"],
  ] as Array<[number, string]>).map(([i, n]) => [n, i]),
);

/** For directory `key` (net.ipv4.conf.eth0, …): file name → its value from the link dump, or undefined (read the file). */
function dumpedValues(key: string, devices: ReadonlyMap<string, DeviceConf>): ((name: string) => string | undefined) | undefined {
  const m = /^net\.ipv([46])\.conf\.(.+)$/.exec(key);
  const dev = m && devices.get(m[2]!);
  if (!m || !dev) return undefined;
  const conf = m[1] === "4" ? dev.ipv4 : dev.ipv6;
  const slots = m[1] === "4" ? IPV4_DEVCONF : IPV6_DEVCONF;
  if (!conf) return undefined;
  return (name) => {
    const i = slots.get(name);
    if (i === undefined || i >= conf.length) return undefined;
    return String(UNSIGNED_DEVCONF.has(name) ? conf[i]! >>> 0 : conf[i]);
  };
}

/**
 * Of `keys` (net.* sysctl names), those the link dump carries (net.ipv{4,6}.conf.DEV.* of
 * a device in `devices`), with their values as the files would show them. For proving a
 * slot whose sysctl files were not touched: these can also be set over rtnetlink.
 */
export function dumpedSysctls(keys: Iterable<string>, devices: ReadonlyMap<string, DeviceConf>): Map<string, string> {
  const out = new Map<string, string>();
  const dirs = new Map<string, ((name: string) => string | undefined) | undefined>();
  for (const key of keys) {
    const cut = key.lastIndexOf(".");
    const dir = key.slice(0, cut);
    if (!dir.startsWith("net.ipv")) continue;
    let values = dirs.get(dir);
    if (!dirs.has(dir)) dirs.set(dir, (values = dumpedValues(dir, devices)));
    const v = values?.(key.slice(cut + 1));
    if (v !== undefined) out.set(key, v);
  }
  return out;
}

/** The names under net.ipv{4,6}.conf.DEV that readAllNetSysctls takes from a link dump (for tests). */
export function deviceConfNames(family: "ipv4" | "ipv6"): string[] {
  return [...(family === "ipv4" ? IPV4_DEVCONF : IPV6_DEVCONF).keys()];
}

/**
 * One buffer for directory listings and one for values, shared by every read (synchronous).
 * Values are short: the kernel allocates and zeroes a buffer of the size asked for on each
 * read, so asking for 256 bytes rather than 4096 saves about 0.4 µs a file (measured).
 */
const dents = Buffer.allocUnsafe(32 * 1024);
const value = Buffer.allocUnsafe(256);
const DT_DIR = 4;
const CONF_DIR = /^net\.ipv[46]\.conf$/;

/** The entries of the open directory `fd` (getdents64: no per-entry stat, no path walk), as [name, is a directory]. */
function listDir(fd: number): Array<[string, boolean]> {
  const out: Array<[string, boolean]> = [];
  for (;;) {
    const n = libc.getdents64Raw(fd, dents);
    if (n <= 0) return out; // 0: the end; an error (the directory went away): what was listed
    // struct linux_dirent64: u64 ino, s64 off, u16 reclen, u8 type, name (NUL-terminated).
    for (let off = 0; off < n; ) {
      const reclen = dents.readUInt16LE(off + 16);
      const type = dents[off + 18];
      const end = dents.indexOf(0, off + 19);
      const name = dents.toString("latin1", off + 19, end < 0 || end > off + reclen ? off + reclen : end);
      if (name !== "." && name !== "..") out.push([name, type === DT_DIR]);
      off += reclen;
    }
  }
}

/** Reads one sysctl file relative to directory `dirFd` into `buf`: its value, or undefined (write-only, gone). */
function readAt(dirFd: number, name: string, buf = value): string | undefined {
  const fd = libc.openAtRaw(dirFd, name, libc.O_RDONLY);
  if (fd < 0) return undefined; // write-only entries (e.g. route flush)
  const n = libc.readRaw(fd, buf);
  libc.close(fd);
  if (n < 0) return undefined;
  // A sysctl is read in one call (a second read at an offset gives nothing): a full buffer may have cut it short.
  if (n === buf.length) return readAt(dirFd, name, Buffer.allocUnsafe(buf.length * 16));
  return buf.toString("latin1", 0, n).trim();
}

/** What a read of the sysctls took: files opened and read, values taken from the link dump. */
export interface SysctlReadStats {
  files: number;
  dumped: number;
}

/**
 * Every readable net.* sysctl of the current namespace, as key → value (`sysctl -a -r ^net`).
 *
 * Two costs shape this. Each top-level directory (/proc/sys/net/ipv4, …) has one dentry
 * per network namespace on the host, all under the same parent, so looking one up walks
 * a chain as long as the number of namespaces: it is done once per directory here,
 * through this thread's private procfs (openNetTop), and everything below is reached
 * from open directory descriptors (listed with getdents64, each entry opened with openat
 * on its directory's descriptor: one path component, this namespace's own dentries).
 * And plain open/read/close calls into shared buffers (no fstat, no exceptions for
 * write-only entries, no per-file buffers) are several times cheaper than fs.readFileSync.
 *
 * `devices`, when given (link name → its rtnetlink configuration arrays), supplies the
 * values of net.ipv{4,6}.conf.DEV.* that one link dump carries, instead of a file each
 * (about 90 of them per device); the directory is still listed, so the keys are exactly
 * the files, and entries the arrays do not cover are read from their files.
 */
export function readAllNetSysctls(
  skip: (key: string) => boolean = () => false,
  opts: {
    readOnly?: (key: string) => boolean;
    devices?: ReadonlyMap<string, DeviceConf>;
    stats?: SysctlReadStats;
    /** Directories to read (top/sub, e.g. "ipv4/neigh") instead of the whole tree. */
    only?: readonly string[];
  } = {},
): Map<string, string> {
  const out = new Map<string, string>();
  const stats = opts.stats;
  // net.ipv{4,6}.conf → the entries of its "all" directory. Every directory under conf is
  // the same kernel table (devinet_sysctl, addrconf_sysctl), so the directory of a device
  // whose values come with the link dump is not listed again: its names are these (the
  // test comparing the dump with the files checks it on the host's kernel).
  const confTable = new Map<string, Array<[string, boolean]>>();
  const walk = (dirFd: number, key: string, entries: Array<[string, boolean]>) => {
    // net.ipv{4,6}.conf.DEV of a device whose settings came with the link dump.
    const fromDump = opts.devices && dumpedValues(key, opts.devices);
    const isConf = CONF_DIR.test(key);
    if (isConf) entries.sort(([a], [b]) => (a === "all" ? -1 : b === "all" ? 1 : 0));
    for (const [name, isDir] of entries) {
      const childKey = `${key}.${name}`;
      if (skip(childKey)) continue;
      if (isDir) {
        const sub = libc.openAtRaw(dirFd, name, libc.O_RDONLY | O_DIRECTORY);
        if (sub < 0) continue; // gone since the listing (a device deleted meanwhile)
        try {
          const table = isConf && name !== "all" && name !== "default" && opts.devices && dumpedValues(childKey, opts.devices) ? confTable.get(key) : undefined;
          const listed = table ?? listDir(sub);
          if (isConf && name === "all") confTable.set(key, listed);
          walk(sub, childKey, listed);
        } finally {
          libc.close(sub);
        }
        continue;
      }
      // Entries the namespace cannot write mirror a host-wide value (or a state of their
      // own): the caller decides per key whether to keep them.
      if (opts.readOnly && !writable(childKey, dirFd, name) && !opts.readOnly(childKey)) continue;
      const dumped = fromDump?.(name);
      if (dumped !== undefined) {
        out.set(childKey, dumped);
        if (stats) stats.dumped++;
        continue;
      }
      const v = readAt(dirFd, name);
      if (v === undefined) continue;
      out.set(childKey, v);
      if (stats) stats.files++;
    }
  };
  if (opts.only) {
    for (const subtree of opts.only) {
      const [top, rel] = subtree.split("/", 2) as [string, string];
      const topFd = openNetTop(top);
      try {
        const dirFd = libc.openAtRaw(topFd, rel, libc.O_RDONLY | O_DIRECTORY);
        if (dirFd < 0) continue;
        try {
          walk(dirFd, `net.${top}.${rel}`, listDir(dirFd));
        } finally {
          libc.close(dirFd);
        }
      } finally {
        libc.close(topFd);
      }
    }
    return out;
  }
  for (const top of fs.readdirSync("/proc/sys/net", { withFileTypes: true })) {
    const key = `net.${top.name}`;
    if (skip(key)) continue;
    if (!top.isDirectory()) continue; // /proc/sys/net holds directories only
    let dirFd: number;
    try {
      dirFd = openNetTop(top.name);
    } catch {
      continue;
    }
    try {
      walk(dirFd, key, listDir(dirFd));
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
function writable(key: string, dirFd: number, rel: string): boolean {
  let w = writableCache.get(key);
  if (w === undefined) {
    const fd = libc.openAtRaw(dirFd, rel, O_WRONLY);
    w = fd >= 0;
    if (fd >= 0) libc.close(fd);
    writableCache.set(key, w);
  }
  return w;
}
