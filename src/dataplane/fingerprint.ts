// A slot fingerprint: everything a tenant can change or leave behind in a slot namespace,
// read through the kernel and put in a canonical form in which two identical slots are
// equal whatever their index. The pool compares a scrubbed slot's fingerprint with the
// golden one of a freshly built slot: equal → free; different → rebuild or quarantine.
//
// Canonical form: link references are names (ifindexes repeat across namespaces and
// differ between builds), counters, timers, kernel-assigned ids and carrier-dependent
// state are left out, and per-slot values are replaced by placeholders (<slot-mac>,
// <slot-addr>, <host-addr>, <outside-addr>, <link-net>, <slot>). Every section is sorted
// except the nftables ruleset, whose order is its meaning.
//
// The rtnetlink sections come rendered from src/kernel/netlink/inspect.ts; this file
// composes them with the other sections, puts in the placeholders, and compares.
import { createHash } from "node:crypto";
import { withNetns } from "../kernel/netns.js";
import { inspectNamespace, type InspectedLink } from "../kernel/netlink/inspect.js";
import { bpfAttachments } from "../kernel/bpfattach.js";
import { conntrackEntries, conntrackTableCount, type ConntrackEntry } from "../kernel/netlink/conntrack.js";
import { nftJson } from "../kernel/nft.js";
import { dumpedSysctls, readAllNetSysctls, type DeviceConf } from "../kernel/sysctl.js";
import { xfrmPolicies, xfrmStates, type XfrmSelector } from "../kernel/xfrm.js";
import { tapState } from "../kernel/tap.js";
import { namespaceSockets, nsIdOf, processesInNetns, tunHolders, type NsProcess } from "../kernel/procfs.js";
import { ipToInt, type SlotAddressing } from "./topology.js";

export const FINGERPRINT_VERSION = 6;

export interface FingerprintContext {
  /** The slot namespace, /run/netns/P-n. */
  netnsPath: string;
  addressing: SlotAddressing;
  /** The slot's entry in the eBPF `slots` map, or undefined when it has none. */
  bpfEntry?: { mac: string; outsideAddress: string; vni: number; ifindex: number } | undefined;
  /** The slot's entry in the eBPF `rates` map (a lease's bandwidth), if any. */
  rateEntry?: string;
  /** The slot's entry in the eBPF `policies` map (a lease's egress policy), if any. */
  policyEntry?: string;
  /** The slot's entry in the eBPF `slots6` map (a lease's IPv6 translation), if any: a fresh slot has none. */
  ipv6Entry?: string;
  /**
   * Links whose MAC the kernel draws at random when the slot is built: recorded as
   * "<random-mac>". Default: the VXLAN device, which the dataplane creates without a MAC.
   */
  randomMacLinks?: readonly string[];
  /**
   * When to scan every process's descriptors for holders of the slot's tun/tap devices:
   * "attached" (default) only when a device reports carrier or attached queues, which a
   * tun device has while a descriptor is attached, unless the holder turned it off with
   * TUNSETCARRIER; "always" scans anyway (about 5-10 ms with a few hundred processes).
   */
  tapHolderScan?: "attached" | "always";
  /**
   * A frame addressed to the guest: sent out of each tap and looked for on the tap's fd,
   * so that a filter a VMM left on the tap (which the kernel has no getter for) shows.
   */
  tapProbe?: Buffer;
}

/**
 * What the proof of a slot may take from its reference instead of reading it: sections
 * proven unchanged since the slot last equalled `from` (the golden fingerprint), and
 * answers shared with other slots. See docs/architecture.md ("Proving a slot clean").
 */
export interface ProofShortcuts {
  from: Fingerprint;
  /** No sysctl of the slot was opened or written since (SysctlWatches). */
  sysctls?: boolean;
  /** The slot's nftables generation id is the one read before its last clean proof. */
  nftables?: boolean;
  /**
   * Leave out the tap probe frame: the scrub reset every filter it looks for just before
   * (resetTap: each with an ioctl that fails loudly), and its getters are still read.
   */
  noProbe?: boolean;
  /** Tap name → its fd-only settings as the scrub's reset read them back a moment ago (no attach of our own). */
  taps?: Readonly<Record<string, Record<string, string>>>;
  /** The namespace's processes from a scan of every namespace that started after the slot's release. */
  processes?: NsProcess[];
}

export interface Fingerprint {
  version: number;
  /** Link name → attribute → value. */
  links: Record<string, Record<string, string>>;
  addresses: string[];
  routes: string[];
  rules: string[];
  nexthops: string[];
  /** ARP/ND entries, proxy entries and the bridge FDB (VXLAN remotes). */
  neighbours: string[];
  qdiscs: string[];
  tcFilters: string[];
  /**
   * tc actions in the namespace's tables (`tc actions ls`), standalone ones included: bound
   * to no filter they act on nothing, but stay, cookie and all, for the next root in the
   * namespace to read. None in a fresh slot (netslot's filters are direct-action).
   */
  tcActions: string[];
  /** `nft -j list ruleset`, one object per line, in kernel order. */
  nftables: string[];
  bpf: string[];
  /**
   * eBPF programs at hooks no rtnetlink dump shows: tcx (and netkit) on every device, the
   * flow dissector and sk_lookup on the namespace; a hook's revision once attachments
   * came and went. Empty in a fresh slot (see bpfAttachmentLines).
   */
  bpfAttachments: string[];
  conntrack: { count: number; entries: string[] };
  /** net.* sysctl → value, volatile ones excluded (SYSCTL_EXCLUSIONS). */
  sysctls: Record<string, string>;
  xfrm: { states: string[]; policies: string[] };
  sockets: string[];
  processes: string[];
  tapHolders: string[];
}

/**
 * net.* sysctls that differ between two identical fresh slots, or that cannot say
 * anything about a tenant (found by fingerprinting fresh slots and diffing).
 */
export const SYSCTL_EXCLUSIONS: ReadonlyArray<{ pattern: RegExp; reason: string }> = [
  { pattern: /^net\.netfilter\.nf_conntrack_count$/, reason: "a statistic (entries come and go with traffic); the entries themselves are the conntrack section" },
];

/**
 * Sysctls a slot namespace cannot write are host-wide values it only mirrors (an operator
 * raising nf_conntrack_max or rmem_max changes them in every slot at once): they are not
 * what a tenant changed, and are left out. Except these, which are read-only but show a
 * state of the namespace itself (a multicast routing socket open in it).
 */
const NAMESPACE_READ_ONLY = /\.mc_forwarding$/;

/** Sysctls whose value is a secret: recorded as a digest so that diffs and logs do not carry it. */
const SECRET_SYSCTLS = /^net\.ipv4\.tcp_fastopen_key$|^net\.ipv6\.conf\.[^.]+\.stable_secret$/;

function sysctlValue(key: string, value: string): string {
  if (!SECRET_SYSCTLS.test(key) || /^[0-]*$/.test(value)) return value;
  return `secret sha256:${createHash("sha256").update(value).digest("hex").slice(0, 16)}`;
}

function sysctlExcluded(key: string): boolean {
  return SYSCTL_EXCLUSIONS.some((e) => e.pattern.test(key));
}

// ───────────────────────────── placeholders ─────────────────────────────

type Placeholder = (text: string) => string;

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}

/**
 * Replaces the slot's own values by placeholders, as whole tokens only: 10.0.0.1 is not
 * replaced inside 10.0.0.10. An address followed by a prefix length is replaced only when
 * it is not the network address of that prefix: "<slot-addr>/31" is an interface address,
 * but 10.200.0.0/16 (slot 0's host address is the link CIDR's base) is a network and stays.
 */
export function placeholders(
  a: Pick<SlotAddressing, "name" | "slotMac" | "slotAddress" | "hostAddress" | "outsideAddress" | "linkNetwork"> & { vxlanMac?: string },
): Placeholder {
  const addrs = new Map<string, string>([
    [a.slotAddress, "<slot-addr>"],
    [a.hostAddress, "<host-addr>"],
    [a.outsideAddress, "<outside-addr>"],
  ]);
  const ipv4 = /(?<![0-9A-Za-z.:])(\d{1,3}(?:\.\d{1,3}){3})(?:\/(\d{1,2}))?(?![0-9A-Za-z]|\.[0-9])/g;
  const mac = new RegExp(`(?<![0-9A-Fa-f:])${escapeRegex(a.slotMac)}(?![0-9A-Fa-f:])`, "gi");
  const name = new RegExp(`(?<![A-Za-z0-9_-])${escapeRegex(a.name)}(?![A-Za-z0-9_-])`, "g");
  const vxlanMac = a.vxlanMac ? new RegExp(`(?<![0-9A-Fa-f:])${escapeRegex(a.vxlanMac)}(?![0-9A-Fa-f:])`, "gi") : undefined;
  return (text) =>
    (vxlanMac ? text.replace(vxlanMac, "<vxlan-mac>") : text)
      .replace(ipv4, (whole: string, ip: string, len: string | undefined) => {
        if (len !== undefined && `${ip}/${len}` === a.linkNetwork) return "<link-net>";
        const ph = addrs.get(ip);
        if (ph === undefined) return whole;
        if (len === undefined) return ph;
        const bits = Number(len);
        const host = bits >= 32 ? 0 : (ipToInt(ip) & (2 ** (32 - bits) - 1)) >>> 0;
        return bits === 32 || host !== 0 ? `${ph}/${len}` : whole;
      })
      .replace(mac, "<slot-mac>")
      .replace(name, "<slot>");
}

// ───────────────────────────── nftables ─────────────────────────────

/**
 * One nftables JSON value without handles, packet/byte counts, quota usage, `last used`
 * times or element expiry; prefixes become "addr/len" so placeholders see them whole.
 */
export function canonicalNft(v: unknown, parentKey = ""): unknown {
  if (Array.isArray(v)) return v.map((x) => canonicalNft(x, parentKey));
  if (v === null || typeof v !== "object") return v;
  const o = v as Record<string, unknown>;
  const keys = Object.keys(o);
  if (keys.length === 1 && keys[0] === "prefix") {
    const pre = o.prefix as { addr?: unknown; len?: unknown } | undefined;
    if (pre && typeof pre.addr === "string" && typeof pre.len === "number") return { prefix: `${pre.addr}/${pre.len}` };
  }
  const out: Record<string, unknown> = {};
  for (const k of keys.sort()) {
    if (k === "handle" || k === "expires") continue;
    if (parentKey === "counter" && (k === "packets" || k === "bytes")) continue;
    if (parentKey === "quota" && (k === "used" || k === "used_unit")) continue;
    if (parentKey === "last" && k === "used") continue;
    out[k] = canonicalNft(o[k], k);
  }
  return out;
}

function nftLines(): string[] {
  const doc = nftJson("list ruleset") as { nftables?: Array<Record<string, unknown>> };
  const out: string[] = [];
  for (const entry of doc.nftables ?? []) {
    const kind = Object.keys(entry)[0];
    if (kind === undefined || kind === "metainfo") continue;
    out.push(`${kind} ${JSON.stringify(canonicalNft(entry[kind], kind))}`);
  }
  return out;
}

// ───────────────────────────── eBPF attachments ─────────────────────────────

/**
 * What a VMM (root in the slot) can attach with bpf(2) that outlives it and that neither
 * the link dump (XDP) nor the tc filter dump (cls_bpf at clsact) shows: programs at the tcx
 * hooks of any device (BPF_PROG_ATTACH needs no fd to stay), netkit hooks, the namespace's
 * flow dissector, and sk_lookup links (kept by a bpffs pin). Read on every proof, full or
 * fast: one BPF_PROG_QUERY per device and hook and per namespace hook (tens of µs).
 * Called inside the slot's namespace (device hooks are looked up by ifindex there).
 */
function bpfAttachmentLines(links: readonly InspectedLink[], netnsPath: string): string[] {
  return bpfAttachments(links, netnsPath);
}

// ───────────────────────────── the rest ─────────────────────────────

/**
 * The namespace's conntrack entries. A ctnetlink dump walks the host-wide table (about
 * 9 ms here), so the namespace's own count (ctnetlink's statistics: one round trip, 0
 * while conntrack is not loaded) is asked first and the dump skipped when it is zero.
 */
function conntrackTuples(): ConntrackEntry[] {
  return conntrackTableCount() === 0 ? [] : conntrackEntries();
}

function names(map: Record<number, string>, value: number, fallback = String(value)): string {
  return map[value] ?? fallback;
}

const IP_PROTOS: Record<number, string> = { 1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp", 50: "esp", 51: "ah", 108: "comp" };
const XFRM_MODES: Record<number, string> = { 0: "transport", 1: "tunnel", 2: "ro", 3: "in_trigger", 4: "beet" };
const XFRM_DIRS: Record<number, string> = { 0: "in", 1: "out", 2: "fwd" };

function selectorText(s: XfrmSelector, ref: (i: number) => string): string {
  const parts = [`src ${s.src}`, `dst ${s.dst}`];
  if (s.proto) parts.push(`proto ${names(IP_PROTOS, s.proto)}`);
  if (s.sport) parts.push(`sport ${s.sport}`);
  if (s.dport) parts.push(`dport ${s.dport}`);
  if (s.ifindex) parts.push(`dev ${ref(s.ifindex)}`);
  return parts.join(" ");
}

function sortedRecord(entries: Iterable<[string, string]>): Record<string, string> {
  const list = [...entries].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const out: Record<string, string> = {};
  for (const [k, v] of list) out[k] = v;
  return out;
}

const sorted = (xs: string[]) => [...xs].sort();

/** Per reference fingerprint: device configuration dumps (deviceSignature) whose values all equal its sysctls. */
const matchingDumps = new WeakMap<Fingerprint, Set<string>>();
const MATCHING_DUMPS_KEPT = 64;

function deviceSignature(devices: ReadonlyMap<string, DeviceConf>): string {
  return JSON.stringify([...devices].map(([name, d]) => [name, d.ipv4, d.ipv6]));
}

/** The neighbour parameters' directories: RTM_SETNEIGHTBL sets them too. */
const NEIGH_DIRS = ["ipv4/neigh", "ipv6/neigh"];

/**
 * The canonical sysctls from `values` (as read), or `reference` itself when they are the
 * same, which spares a sorted copy and lets the comparison skip the section.
 */
function canonicalSysctls(values: ReadonlyMap<string, string>, reference: Record<string, string> | undefined): Record<string, string> {
  if (reference) {
    let same = 0;
    for (const [k, v] of values) {
      const r = reference[k];
      if (r === undefined || (r !== v && r !== sysctlValue(k, v))) break;
      same++;
    }
    if (same === values.size && same === Object.keys(reference).length) return reference;
  }
  return sortedRecord([...values].map(([k, v]): [string, string] => [k, sysctlValue(k, v)]));
}

/** `base` itself when `values` agree with it, else a copy with them (so that a diff shows them). */
function withValues(base: Record<string, string>, values: ReadonlyMap<string, string>): Record<string, string> {
  let out: Record<string, string> | undefined;
  for (const [k, v] of values) {
    const value = sysctlValue(k, v);
    if (base[k] === value) continue;
    out ??= { ...base };
    out[k] = value;
  }
  return out ?? base;
}

/** Remembers that `signature`'s dumps gave `reference`'s values. */
function rememberMatch(reference: Fingerprint, signature: string): void {
  let set = matchingDumps.get(reference);
  if (!set) matchingDumps.set(reference, (set = new Set()));
  if (set.size >= MATCHING_DUMPS_KEPT) set.clear();
  set.add(signature);
}

/**
 * Reads the slot's namespace through the kernel and returns its canonical fingerprint.
 * Synchronous: the namespace is entered once for all kernel reads; the process and tap
 * holder scans run from the home namespace. `timings`, when given, receives the
 * milliseconds each phase took ("PHASE": wall, "cpu PHASE": the process's CPU).
 */
export function slotFingerprint(ctx: FingerprintContext, timings?: Record<string, number>, shortcuts?: ProofShortcuts): Fingerprint {
  const ph = placeholders(ctx.addressing);
  let t = performance.now();
  let cpu = timings ? process.cpuUsage() : undefined;
  const lap = (phase: string) => {
    const now = performance.now();
    if (timings) {
      timings[phase] = (timings[phase] ?? 0) + (now - t);
      // Process CPU (user + system) as well: the tap probe waits, which wall time counts.
      const used = process.cpuUsage(cpu);
      timings[`cpu ${phase}`] = (timings[`cpu ${phase}`] ?? 0) + (used.user + used.system) / 1000;
      cpu = process.cpuUsage();
    }
    t = now;
  };
  const ns = nsIdOf(ctx.netnsPath);
  const inside = withNetns(ctx.netnsPath, () => {
    const { links, ref, addresses, routes, rules, nexthops, neighbours, qdiscs, tcFilters, tcActions } = inspectNamespace();
    lap("rtnetlink");
    const attachments = bpfAttachmentLines(links, ctx.netnsPath);
    lap("bpfAttachments");
    // Settings only a tap's fd shows (read after rtnetlink: attaching turns carrier on).
    for (const l of links) {
      if (l.kind !== "tun" || l.attrs["tun.type"] !== "2") continue;
      // Attaching to a tap a VMM holds fails (EBUSY), and attaching while one is about to
      // would make its attach fail: a tap that shows a holder is left alone.
      if (l.carrier || (l.tunQueues ?? 0) > 0) {
        l.attrs["tun.fd_state"] = "held";
        continue;
      }
      try {
        Object.assign(l.attrs, shortcuts?.taps?.[l.name] ?? tapState(l.name, l.index, shortcuts?.noProbe ? undefined : ctx.tapProbe));
      } catch (err) {
        l.attrs["tun.fd_state"] = (err as Error).message;
      }
    }
    lap("tapState");
    const nftables = shortcuts?.nftables ? undefined : nftLines();
    lap("nftables");
    const conntrack = conntrackTuples().map((e) => {
      const p = names(IP_PROTOS, e.proto);
      const port = (x: number | undefined) => (x === undefined ? "" : `:${x}`);
      return `${e.family === 6 ? "inet6 " : ""}${p} ${e.src}${port(e.sport)} → ${e.dst}${port(e.dport)}`;
    });
    lap("conntrack");
    // Per-device IPv4/IPv6 settings come with the link dump above (one message per device
    // instead of ~90 files); the rest are files.
    const devices = new Map(links.map((l) => [l.name, l.devconf]));
    // Files untouched: the per-device values that rtnetlink can also set are still compared:
    // the conf arrays from the dump (dumps identical to ones already found equal to the
    // reference are not converted again), the neighbour parameters from their files.
    let deviceSysctls: Map<string, string> | undefined;
    let signature: string | undefined;
    if (shortcuts?.sysctls) {
      signature = deviceSignature(devices);
      deviceSysctls = matchingDumps.get(shortcuts.from)?.has(signature) ? new Map() : dumpedSysctls(Object.keys(shortcuts.from.sysctls), devices);
      for (const [k, v] of readAllNetSysctls(sysctlExcluded, { only: NEIGH_DIRS })) deviceSysctls.set(k, v);
    }
    const sysctls = shortcuts?.sysctls ? undefined : readAllNetSysctls(sysctlExcluded, { readOnly: (key) => NAMESPACE_READ_ONLY.test(key), devices });
    lap("sysctls");
    const states = xfrmStates().map(
      (s) =>
        `${s.src} → ${s.dst} proto ${names(IP_PROTOS, s.proto)} spi 0x${s.spi.toString(16)} mode ${names(XFRM_MODES, s.mode)} reqid ${s.reqid} flags ${s.flags}` +
        ` sel ${selectorText(s.selector, ref)}${s.algorithms.length ? ` ${s.algorithms.join(" ")}` : ""}` +
        `${s.mark ? ` mark ${s.mark.value}/${s.mark.mask}` : ""}${s.ifId !== undefined ? ` if_id ${s.ifId}` : ""}`,
    );
    const policies = xfrmPolicies().map(
      (pl) =>
        `dir ${names(XFRM_DIRS, pl.dir)} ${pl.action ? "block" : "allow"} priority ${pl.priority} type ${pl.type ? "sub" : "main"} flags ${pl.flags} share ${pl.share}` +
        ` sel ${selectorText(pl.selector, ref)}` +
        pl.templates
          .map((tm) => ` tmpl ${tm.src} → ${tm.dst} proto ${names(IP_PROTOS, tm.proto)} spi 0x${tm.spi.toString(16)} mode ${names(XFRM_MODES, tm.mode)} reqid ${tm.reqid}${tm.optional ? " optional" : ""}`)
          .join("") +
        `${pl.mark ? ` mark ${pl.mark.value}/${pl.mark.mask}` : ""}${pl.ifId !== undefined ? ` if_id ${pl.ifId}` : ""}`,
    );
    lap("xfrm");
    const sockets = namespaceSockets().map((s) => {
      if (s.proto === "packet") return `packet dev ${s.local === "0" ? "any" : ref(Number(s.local))} ${s.state} ${s.detail ?? ""}`.trim();
      if (s.proto === "unix") return `unix ${s.detail ?? ""} ${s.state} ${s.local === "" ? "(unnamed)" : s.local}`;
      const remote = s.remote && !/^(0\.0\.0\.0|::):0$/.test(s.remote) ? ` → ${s.remote}` : "";
      return `${s.proto} ${s.local}${remote} ${s.state}`;
    });
    lap("sockets");
    return { links, addresses, routes, rules, nexthops, neighbours, qdiscs, tcFilters, tcActions, attachments, nftables, conntrack, sysctls, deviceSysctls, signature, states, policies, sockets };
  });
  t = performance.now();
  if (timings) cpu = process.cpuUsage();

  const processes = (shortcuts?.processes ?? processesInNetns(ns)).map((p) => `${p.pid} ${p.comm}${p.threads ? ` (threads ${p.threads.join(",")})` : ""}`);
  lap("processes");
  const holders: string[] = [];
  for (const l of inside.links) {
    if (l.kind !== "tun") continue;
    const attached = l.carrier || (l.tunQueues ?? 0) > 0;
    // Only scan descriptors when the device says someone is attached: the scan is costly.
    if (!attached && ctx.tapHolderScan !== "always") continue;
    const found = tunHolders(l.name, ns);
    if (found.length === 0 && attached) holders.push(`${l.name}: attached to a process that cannot be seen from here`);
    for (const h of found) holders.push(`${l.name}: held by ${h.pid} ${h.comm}`);
  }
  lap("tapHolders");

  const links: Record<string, Record<string, string>> = {};
  const randomMac = new Set(ctx.randomMacLinks ?? []);
  for (const l of [...inside.links].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    const attrs = Object.entries(l.attrs).map(([k, v]): [string, string] => [k, k === "address" && randomMac.has(l.name) ? "<random-mac>" : ph(v)]);
    const name = ph(l.name);
    // Without the probe, what it would show is what the reset just made it.
    const probed = shortcuts?.from.links[name]?.["tun.delivers_to_guest"];
    if (shortcuts?.noProbe && probed !== undefined && l.attrs["tun.fd_state"] === undefined) attrs.push(["tun.delivers_to_guest", probed]);
    links[name] = sortedRecord(attrs);
  }
  const list = (xs: string[]) => sorted(xs.map(ph));
  // The entry must be bound to this slot's own eth0 ifindex (per slot, so not rendered as such).
  const bound = (e: { ifindex: number }) => (e.ifindex === ctx.addressing.slotIfindex ? "eth0" : `ifindex ${e.ifindex}`);
  const bpf = ctx.bpfEntry
    ? [ph(`${ctx.bpfEntry.mac.toLowerCase()} outside ${ctx.bpfEntry.outsideAddress} vni ${ctx.bpfEntry.vni}`) + ` bound to ${bound(ctx.bpfEntry)}`]
    : ["no map entry"];
  if (ctx.rateEntry !== undefined) bpf.push(`rate limit ${ctx.rateEntry}`);
  if (ctx.policyEntry !== undefined) bpf.push(`egress policy ${ctx.policyEntry}`);
  if (ctx.ipv6Entry !== undefined) bpf.push(`ipv6 translation ${ctx.ipv6Entry}`);
  const conntrackList = list(inside.conntrack);
  const fp: Fingerprint = {
    version: FINGERPRINT_VERSION,
    links,
    addresses: list(inside.addresses),
    routes: list(inside.routes),
    rules: list(inside.rules),
    nexthops: list(inside.nexthops),
    neighbours: list(inside.neighbours),
    qdiscs: list(inside.qdiscs),
    tcFilters: list(inside.tcFilters),
    tcActions: list(inside.tcActions),
    nftables: inside.nftables?.map(ph) ?? shortcuts!.from.nftables,
    bpf,
    bpfAttachments: list(inside.attachments),
    conntrack: { count: conntrackList.length, entries: conntrackList },
    sysctls: inside.sysctls
      ? canonicalSysctls(inside.sysctls, shortcuts?.from.sysctls)
      : withValues(shortcuts!.from.sysctls, inside.deviceSysctls!),
    xfrm: { states: list(inside.states), policies: list(inside.policies) },
    sockets: list(inside.sockets),
    processes: sorted(processes.map(ph)),
    tapHolders: sorted(holders.map(ph)),
  };
  if (shortcuts && inside.signature !== undefined && fp.sysctls === shortcuts.from.sysctls) rememberMatch(shortcuts.from, inside.signature);
  lap("canonicalise");
  return fp;
}

// ───────────────────────────── comparing ─────────────────────────────

/** Canonical JSON: keys in the order the fingerprint was built with (already sorted). */
export function canonicalJson(f: Fingerprint): string {
  return JSON.stringify(f);
}

/** sha256 (hex) of the canonical JSON. */
export function fingerprintHash(f: Fingerprint): string {
  return createHash("sha256").update(canonicalJson(f)).digest("hex");
}

function listDiff(section: string, a: readonly string[], b: readonly string[], out: string[]): void {
  const count = (xs: readonly string[]) => {
    const m = new Map<string, number>();
    for (const x of xs) m.set(x, (m.get(x) ?? 0) + 1);
    return m;
  };
  const ca = count(a);
  const cb = count(b);
  const before = out.length;
  for (const [x, n] of ca) for (let i = cb.get(x) ?? 0; i < n; i++) out.push(`${section}: - ${x}`);
  for (const [x, n] of cb) for (let i = ca.get(x) ?? 0; i < n; i++) out.push(`${section}: + ${x}`);
  if (out.length === before && a.join("\n") !== b.join("\n")) out.push(`${section}: order changed`);
}

function recordDiff(label: (key: string) => string, a: Record<string, string>, b: Record<string, string>, out: string[]): void {
  const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
  for (const k of keys) {
    const va = a[k];
    const vb = b[k];
    if (va === vb) continue;
    if (va === undefined) out.push(`${label(k)}: + ${vb}`);
    else if (vb === undefined) out.push(`${label(k)}: - ${va}`);
    else out.push(`${label(k)}: ${va} → ${vb}`);
  }
}

/** Settings tapState reads through a tap's fd (see src/kernel/tap.ts). */
const TAP_FD_KEYS = /^tun\.(fd_state|vnet_hdr_sz|vnet_le|vnet_be|sndbuf|socket_filter_len|features|delivers_to_guest)$/;

function withoutFdState(attrs: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(attrs).filter(([k]) => !TAP_FD_KEYS.test(k)));
}

function describeLink(attrs: Record<string, string>): string {
  const pick = ["kind", "address", "mtu", "flags"].filter((k) => attrs[k] !== undefined).map((k) => `${k} ${attrs[k]}`);
  return pick.join(", ");
}

/**
 * Human-readable differences from `a` to `b` ("routes: + 10.9.0.0/16 dev eth0 …",
 * "sysctl net.ipv4.ip_forward: 1 → 0", "links eth0 mtu: 1500 → 1400"); empty when equal.
 */
export function diffFingerprints(a: Fingerprint, b: Fingerprint): string[] {
  const out: string[] = [];
  if (a.version !== b.version) out.push(`version: ${a.version} → ${b.version}`);
  const names = [...new Set([...Object.keys(a.links), ...Object.keys(b.links)])].sort();
  for (const n of names) {
    const la = a.links[n];
    const lb = b.links[n];
    if (!la) out.push(`links: + ${n} (${describeLink(lb!)})`);
    else if (!lb) out.push(`links: - ${n} (${describeLink(la)})`);
    else if (la["tun.fd_state"] === "held" || lb["tun.fd_state"] === "held") {
      // A held tap's fd-only settings cannot be read; the holder is what differs (tap holders).
      recordDiff((k) => `links ${n} ${k}`, withoutFdState(la), withoutFdState(lb), out);
    } else recordDiff((k) => `links ${n} ${k}`, la, lb, out);
  }
  listDiff("addresses", a.addresses, b.addresses, out);
  listDiff("routes", a.routes, b.routes, out);
  listDiff("rules", a.rules, b.rules, out);
  listDiff("nexthops", a.nexthops, b.nexthops, out);
  listDiff("neighbours", a.neighbours, b.neighbours, out);
  listDiff("qdiscs", a.qdiscs, b.qdiscs, out);
  listDiff("tc filters", a.tcFilters, b.tcFilters, out);
  listDiff("tc actions", a.tcActions, b.tcActions, out);
  listDiff("nftables", a.nftables, b.nftables, out);
  listDiff("bpf", a.bpf, b.bpf, out);
  listDiff("bpf attachments", a.bpfAttachments, b.bpfAttachments, out);
  if (a.conntrack.count !== b.conntrack.count) out.push(`conntrack count: ${a.conntrack.count} → ${b.conntrack.count}`);
  listDiff("conntrack", a.conntrack.entries, b.conntrack.entries, out);
  if (a.sysctls !== b.sysctls) recordDiff((k) => `sysctl ${k}`, a.sysctls, b.sysctls, out);
  listDiff("xfrm states", a.xfrm.states, b.xfrm.states, out);
  listDiff("xfrm policies", a.xfrm.policies, b.xfrm.policies, out);
  listDiff("sockets", a.sockets, b.sockets, out);
  listDiff("processes", a.processes, b.processes, out);
  listDiff("tap holders", a.tapHolders, b.tapHolders, out);
  return out;
}

/**
 * Why the slot cannot be scrubbed back to baseline, or undefined: a process lives in its
 * namespace, or holds its tap open (a VMM still attached). The pool quarantines these.
 */
export function liveHolders(f: Fingerprint): string | undefined {
  const reasons: string[] = [];
  if (f.processes.length > 0) reasons.push(`processes in the namespace: ${f.processes.join(", ")}`);
  if (f.tapHolders.length > 0) reasons.push(`tap held open: ${f.tapHolders.join(", ")}`);
  return reasons.length > 0 ? reasons.join("; ") : undefined;
}
