// The nftables rulesets netslot applies, rendered as `nft -f` script text. Pure functions:
// the kernel side is src/kernel/nft.ts (nftRun). Every script is one transaction and
// idempotent: `add table` (a no-op when it exists) + `delete table` + the full definition
// gives the same end state on a fresh namespace and on one a tenant has modified.
import {
  GUEST_IP,
  GUEST_IP6,
  GUEST_MAC,
  METADATA_IP,
  METADATA_IP6,
  SLOT_TABLE,
  SLOT_UPLINK_NAME,
  TAP_NAME,
  VXLAN_NAME,
  assertPrefix,
  formatCidr,
  intToIp,
  ipToInt,
  linkRange,
  outsideRange,
  parseCidr,
  parseCidr6,
  formatCidr6,
} from "./topology.js";
import { hostIntervalElements, type SetElements } from "../kernel/nftsets.js";
import { ADMITTED_MARK } from "../kernel/bpfmaps.js";

const hex = (n: number) => `0x${n.toString(16).padStart(8, "0")}`;

export type NftFamily = "ip" | "ip6" | "inet" | "arp" | "bridge" | "netdev";

const FAMILIES: ReadonlySet<string> = new Set<NftFamily>(["ip", "ip6", "inet", "arp", "bridge", "netdev"]);

/** A table as `nft -j list tables` reports it; `handle` lets odd names be deleted safely. */
export interface NftTableRef {
  family: NftFamily;
  name: string;
  handle?: number;
}

export interface SlotRulesetOptions {
  /** The daemon's --link-cidr: every slot's link and outside address and the host-side veths. */
  linkCidr: string;
  /**
   * The host end of this slot's veth. The host talks to its guest from this address, so the
   * guest's answers to it must pass; the root table's input chain admits only replies
   * from slots, which keeps the host itself closed to the guest.
   */
  hostAddress?: string;
  /**
   * The namespace has no netslot tables yet (slot build): `create table` instead of the
   * add+delete reset, so it fails (EEXIST) rather than duplicating rules if they exist.
   * Committing no deletion avoids kernel destroy work, which makes the context's socket
   * close and the next transaction in that namespace wait for an RCU grace period.
   */
  fresh?: boolean;
  /** --link-cidr6: the slot carries the guest's IPv6 (rules below); without it IPv6 is dropped on tap0. */
  linkCidr6?: string;
}

export interface RootRulesetOptions {
  prefix: string;
  linkCidr: string;
  /** Root-namespace interface whose traffic from the outside range is masqueraded. */
  uplink: string;
  /** VXLAN tunnel endpoint allowed to send UDP to the slots, if tunnels are used. */
  vtepRemote?: string;
  vxlanPort: number;
  /** The daemon's DNS forwarder port, when it runs (see rootRuleset). */
  dnsPort?: number;
  /** --link-cidr6: the slots' outside IPv6 addresses, masqueraded out of the uplink like the IPv4 ones. */
  linkCidr6?: string;
}

/** Interface names go into quoted nft strings: no quotes, blanks, wildcards or slashes. */
const IFNAME = /^[A-Za-z0-9_.:@+-]{1,15}$/;

function assertIfname(name: string): void {
  if (!IFNAME.test(name)) throw new Error(`interface name "${name}" is not usable in a ruleset`);
}

function formatIp(text: string): string {
  return intToIp(ipToInt(text));
}

function canonicalCidr(text: string): string {
  return formatCidr(parseCidr(text));
}

function idempotentTable(family: NftFamily, name: string): string {
  return `add table ${family} ${name}\ndelete table ${family} ${name}\n`;
}

function tableHeader(family: NftFamily, name: string, fresh: boolean | undefined): string {
  return fresh ? `create table ${family} ${name}\n` : idempotentTable(family, name);
}

/**
 * The slot namespace's firewall: `table netdev netslot` (L2 anti-spoofing on tap0) and
 * `table inet netslot` (forwarding policy). Stateless: no `ct` expression and no NAT, so
 * nothing here loads conntrack in the slot namespace (the 1:1 NAT is eBPF on eth0).
 * The netdev chain needs tap0 to exist when the script is applied.
 */
export function slotRuleset(opts: SlotRulesetOptions): string {
  const link = canonicalCidr(opts.linkCidr);
  const tap = `"${TAP_NAME}"`;
  const out = `{ "${SLOT_UPLINK_NAME}", "${VXLAN_NAME}" }`;
  const c = (what: string) => `comment "netslot: ${what}"`;
  const host = opts.hostAddress
    ? `    iifname ${tap} ip daddr ${formatIp(opts.hostAddress)} accept ${c("answers to the host (root admits replies only)")}\n`
    : "";
  const v6 = slotIpv6Rules(opts, c);
  return (
    tableHeader("netdev", SLOT_TABLE, opts.fresh) +
    tableHeader("inet", SLOT_TABLE, opts.fresh) +
    `table netdev ${SLOT_TABLE} {
  chain ingress {
    type filter hook ingress device ${tap} priority -500; policy accept;
    ether saddr != ${GUEST_MAC} drop ${c("guest source MAC only")}
    ether type != { ip, arp${v6.types} } drop ${c(v6.types ? "IPv4, ARP and IPv6 only" : "IPv4 and ARP only")}
    ether type arp arp htype != 1 drop ${c("ARP over Ethernet only")}
    ether type arp arp ptype != ip drop ${c("ARP for IPv4 only")}
    ether type arp arp hlen != 6 drop ${c("ARP Ethernet address length")}
    ether type arp arp plen != 4 drop ${c("ARP IPv4 address length")}
    ether type arp arp saddr ether != ${GUEST_MAC} drop ${c("ARP sender MAC is the guest")}
    ether type arp arp saddr ip != ${GUEST_IP} drop ${c("ARP sender IP is the guest")}
    ether type ip ip saddr != ${GUEST_IP} drop ${c("guest source IP only")}
${v6.netdev}  }
}
table inet ${SLOT_TABLE} {
  set ${EGRESS_ADMIT_SET} {
    type ipv4_addr; flags interval, timeout; size ${ADMIT_SET_SIZE};
  }
  set ${EGRESS_ADMIT6_SET} {
    type ipv6_addr; flags interval, timeout; size ${ADMIT_SET_SIZE};
  }
  chain forward {
    type filter hook forward priority 0; policy drop;
    iifname ${tap} ip daddr ${METADATA_IP} drop ${c("no metadata service")}
${host}    iifname ${tap} ip daddr ${link} drop ${c("no other slots or host link addresses")}
    iifname ${tap} ip daddr @${EGRESS_ADMIT_SET} meta mark set ${hex(ADMITTED_MARK)} ${c("admitted by DNS: the eBPF egress policy passes it")}
    iifname ${tap} ip6 daddr @${EGRESS_ADMIT6_SET} meta mark set ${hex(ADMITTED_MARK)} ${c("admitted by DNS (IPv6)")}
${v6.forward}    iifname ${tap} oifname ${out} accept ${c("guest egress")}
    iifname ${out} oifname ${tap} accept ${c("guest ingress")}
  }
  chain input {
    type filter hook input priority 0; policy accept;
${v6.input}    iifname ${tap} drop ${c("the guest talks to nothing in the slot namespace")}
  }
  chain output {
    type filter hook output priority 0; policy accept;
  }
}
`
  );
}

/**
 * The IPv6 part of the slot's firewall (with --link-cidr6). On tap0: the guest's address
 * or link-local sources only (link-local never leaves the link: the kernel does not forward
 * it), no router advertisements, redirects or DHCPv6 answers from the guest. Neighbour
 * discovery is link-scoped: it reaches tap0's own table (flushed at release) and nothing
 * beyond; the slot's routed eth0 shares no link with the guest. Forwarded: not to the metadata address, not
 * to any slot's outside IPv6 address (under an allow-list, only to egress_admit6: what
 * AAAA answers admit, like every slot). Input: neighbour discovery only (the gateway is tap0's address).
 * A lease without IPv6 has no `slots6` entry: eth0's eBPF drops what gets that far.
 */
function slotIpv6Rules(opts: SlotRulesetOptions, c: (what: string) => string): { types: string; netdev: string; forward: string; input: string } {
  const tap = `"${TAP_NAME}"`;
  if (opts.linkCidr6 === undefined) {
    return { types: "", netdev: `    ether type ip6 drop ${c("no IPv6")}\n`, forward: "", input: "" };
  }
  const link6 = formatCidr6(parseCidr6(opts.linkCidr6));
  return {
    types: ", ip6",
    netdev:
      `    ether type ip6 ip6 saddr != { ${GUEST_IP6}, fe80::/10, :: } drop ${c("guest source IPv6 only (link-local for neighbour discovery)")}\n` +
      `    ether type ip6 icmpv6 type { nd-router-advert, nd-redirect, 138 } drop ${c("no router advertisements, redirects or renumbering from the guest")}\n` +
      `    ether type ip6 udp sport 547 drop ${c("no DHCPv6 server in the guest")}\n`,
    forward:
      `    iifname ${tap} ip6 daddr ${METADATA_IP6} drop ${c("no IPv6 metadata service")}\n` +
      `    iifname ${tap} ip6 daddr ${link6} drop ${c("no slot's outside IPv6 address")}\n`,
    input: `    iifname ${tap} icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept ${c("neighbour discovery with the gateway")}\n`,
  };
}

/*
 * A lease's egress policy is judged by the eBPF program on eth0 (bpf/lib/policy.h): every
 * profile's CIDRs in one trie, the lease's profile in one map entry. Applying a profile
 * touches no nftables: any nftables commit that changes a set waits for an RCU grace
 * period (~11 ms here, measured by bench/policy-cost.ts), the whole request otherwise
 * takes less. What stays here are the addresses DNS answers admitted (egress.allowDomains):
 * the forward chain marks the guest's frames to them, and the program lets marked frames
 * pass a restricted policy. The sets are empty in a fresh slot; the scrub flushes them.
 *
 * Admitted addresses (egress.allowDomains), IPv4 and IPv6, each carry a kernel
 * timeout of TTL + grace: expiry needs no timer in the daemon, survives its crash and a
 * live handover, and the state is the kernel's. Interval sets (rbtree) because the kernel
 * collects their expired elements on the next change, with no periodic work per slot
 * (a hash set with a timeout runs a GC worker every second per set), and a `size` on a
 * hash set preallocates its buckets (~50 KiB each, measured), a rbtree's does not.
 */
export const EGRESS_ADMIT_SET = "egress_admit";
export const EGRESS_ADMIT6_SET = "egress_admit6";
/** Addresses per admission set (a host interval counts once; measured), a hostile guest's bound. */
export const ADMIT_SET_SIZE = 4096;

/** A host address a DNS answer admitted: its bytes (4 or 16) and for how long. */
export interface Admission {
  key: Buffer;
  timeoutMs: number;
}

/** Admissions as elements of the admission sets (host intervals with kernel timeouts). */
export function admittedElements(admissions: readonly Admission[]): SetElements[] {
  const out: SetElements[] = [];
  for (const [set, len] of [
    [EGRESS_ADMIT_SET, 4],
    [EGRESS_ADMIT6_SET, 16],
  ] as const) {
    const mine = admissions.filter((a) => a.key.length === len);
    if (mine.length > 0) out.push({ table: SLOT_TABLE, set, elements: hostIntervalElements(mine) });
  }
  return out;
}

/** Empties the admission sets: the slot is back to no admitted address. */
export function clearEgressPolicyScript(): string {
  return [EGRESS_ADMIT_SET, EGRESS_ADMIT6_SET].map((name) => `flush set inet ${SLOT_TABLE} ${name}\n`).join("");
}

/** The tables slotRuleset owns inside a slot namespace. */
export function slotTables(): NftTableRef[] {
  return [
    { family: "netdev", name: SLOT_TABLE },
    { family: "inet", name: SLOT_TABLE },
  ];
}

function isSlotTable(t: NftTableRef): boolean {
  return t.name === SLOT_TABLE && (t.family === "netdev" || t.family === "inet");
}

function deleteTableCommand(t: NftTableRef): string {
  if (!FAMILIES.has(t.family)) throw new Error(`unknown nftables family "${t.family}"`);
  if (t.handle !== undefined) {
    if (!Number.isSafeInteger(t.handle) || t.handle < 0) throw new Error(`bad table handle ${t.handle}`);
    return `delete table ${t.family} handle ${t.handle}\n`;
  }
  // Without a handle the name must be a plain nft identifier (no quoting games).
  if (!/^[A-Za-z_][A-Za-z0-9_./-]*$/.test(t.name)) {
    throw new Error(`table name "${t.name}" needs a handle to be deleted`);
  }
  return `delete table ${t.family} ${t.name}\n`;
}

/**
 * One transaction that deletes the `extraTables` (tables a tenant added; netslot's own are
 * skipped if listed) and reapplies slotRuleset, so the slot's ruleset equals a fresh one.
 */
export function resetScript(opts: SlotRulesetOptions, extraTables: readonly NftTableRef[]): string {
  const again = { ...opts, fresh: false };
  return extraTables.filter((t) => !isSlotTable(t)).map(deleteTableCommand).join("") + slotRuleset(again);
}

function nftObjects(json: unknown): Array<Record<string, unknown>> {
  if (typeof json !== "object" || json === null) throw new Error("not an nft JSON document");
  const list = (json as { nftables?: unknown }).nftables;
  if (!Array.isArray(list)) throw new Error("not an nft JSON document (no nftables array)");
  return list.filter((o): o is Record<string, unknown> => typeof o === "object" && o !== null);
}

/** The tables in `nft -j list tables` (or list ruleset) output that are not netslot's own. */
export function foreignTables(json: unknown): NftTableRef[] {
  const tables: NftTableRef[] = [];
  for (const o of nftObjects(json)) {
    const t = o["table"] as { family?: unknown; name?: unknown; handle?: unknown } | undefined;
    if (!t || typeof t.family !== "string" || typeof t.name !== "string" || !FAMILIES.has(t.family)) continue;
    const ref: NftTableRef = { family: t.family as NftFamily, name: t.name };
    if (typeof t.handle === "number") ref.handle = t.handle;
    if (!isSlotTable(ref)) tables.push(ref);
  }
  return tables;
}

/**
 * The one table netslot owns in the root namespace, `table inet <prefix>`. Its rules match
 * slot interfaces by the wildcard `"<prefix>-*"`, so the rule count is the same whatever
 * the pool size. Filter chains keep policy accept: other host forwarding is not ours.
 */
export function rootRuleset(opts: RootRulesetOptions): string {
  assertPrefix(opts.prefix);
  assertIfname(opts.uplink);
  const link = parseCidr(opts.linkCidr);
  if (link.prefixLength > 30) throw new Error(`link CIDR ${opts.linkCidr} is too small`);
  if (!Number.isInteger(opts.vxlanPort) || opts.vxlanPort < 1 || opts.vxlanPort > 65535) {
    throw new Error(`bad VXLAN port ${opts.vxlanPort}`);
  }
  const p = opts.prefix;
  const slots = `"${p}-*"`;
  if (opts.dnsPort !== undefined && (!Number.isInteger(opts.dnsPort) || opts.dnsPort < 1 || opts.dnsPort > 65535)) {
    throw new Error(`bad DNS port ${opts.dnsPort}`);
  }
  const c = (what: string) => `comment "netslot ${p}: ${what}"`;
  const vtepIp = opts.vtepRemote === undefined ? undefined : intToIp(ipToInt(opts.vtepRemote));
  // Tunnel traffic is the slot's own (from its link address, lower half); a guest appears
  // only as an outside address (upper half) and must not reach the VTEP at all, or it
  // could hand-craft VXLAN with another tenant's VNI.
  const guestToVtep =
    vtepIp === undefined ? "" : `    iifname ${slots} ip saddr ${outsideRange(link)} ip daddr ${vtepIp} drop ${c("guests do not talk to the VTEP")}\n`;
  const vtep =
    vtepIp === undefined
      ? ""
      : `    oifname ${slots} ip saddr ${vtepIp} ip daddr ${linkRange(link)} udp dport ${opts.vxlanPort} accept ${c("VXLAN from the VTEP to slot tunnels")}\n`;
  // guest.dns is the slot's host link address: a guest's query to its port 53 (UDP or TCP)
  // goes to the daemon's forwarder (one UDP socket and one TCP listener on one port), which knows the slot by the source (its outside address
  // after the eBPF NAT). The slot firewall passes guest packets to that address.
  const dnsFrom = `iifname ${slots} ip saddr ${outsideRange(link)}`;
  const dnsRedirect =
    opts.dnsPort === undefined
      ? ""
      : `  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    ${dnsFrom} ip daddr ${linkRange(link)} meta l4proto { tcp, udp } th dport 53 redirect to :${opts.dnsPort} ${c("guest DNS (UDP and TCP) to the forwarder")}
  }
`;
  const dnsInput = opts.dnsPort === undefined ? "" : `    ${dnsFrom} meta l4proto { tcp, udp } th dport ${opts.dnsPort} ct status dnat accept ${c("guest DNS to the forwarder")}
`;
  // IPv6 as IPv4: the outside IPv6 addresses are masqueraded to the uplink's, so guests
  // reach the internet on any host with an IPv6 address, routed prefix or not. The rest of
  // the table (no slot to slot, host and inbound only as replies) matches both families.
  const link6 = opts.linkCidr6 === undefined ? undefined : formatCidr6(parseCidr6(opts.linkCidr6));
  const masquerade6 = link6 === undefined ? "" : `    oifname "${opts.uplink}" ip6 saddr ${link6} masquerade ${c("slot outside IPv6 addresses to the uplink")}\n`;
  const metadata6 = link6 === undefined ? "" : `    iifname ${slots} ip6 daddr ${METADATA_IP6} drop ${c("no IPv6 metadata service")}\n`;
  // Neighbour discovery across the veth pairs (the IPv6 routes' link-local next hops): conntrack leaves it untracked.
  const nd6 = link6 === undefined ? "" : `    iifname ${slots} icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept ${c("neighbour discovery with the host ends")}\n`;
  return (
    idempotentTable("inet", p) +
    `table inet ${p} {
${dnsRedirect}  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "${opts.uplink}" ip saddr ${outsideRange(link)} masquerade ${c("slot outside addresses to the uplink")}
${masquerade6}  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname ${slots} oifname ${slots} drop ${c("no slot to slot")}
${guestToVtep}    oifname ${slots} ct state established,related accept ${c("replies to slots")}
${vtep}    oifname ${slots} drop ${c("nothing else to slots")}
    iifname ${slots} ip daddr ${METADATA_IP} drop ${c("no metadata service")}
${metadata6}  }
  chain input {
    type filter hook input priority filter; policy accept;
    iifname ${slots} ct state established,related accept ${c("replies from slots")}
${nd6}${dnsInput}    iifname ${slots} drop ${c("slots reach the host only as replies")}
  }
}
`
  );
}

/** Removes the root table (idempotent: a missing table is not an error). */
export function deleteRootScript(prefix: string): string {
  assertPrefix(prefix);
  return idempotentTable("inet", prefix);
}

/**
 * Rules in `nft -j list table inet <prefix>` (or list ruleset) output; with `prefix`, only
 * those of netslot's root table.
 */
export function rootRuleCount(json: unknown, prefix?: string): number {
  let count = 0;
  for (const o of nftObjects(json)) {
    const r = o["rule"] as { family?: unknown; table?: unknown } | undefined;
    if (!r) continue;
    if (prefix !== undefined && (r.family !== "inet" || r.table !== prefix)) continue;
    count++;
  }
  return count;
}
