// The slot topology on the kernel: build, adopt, scrub and destroy slots, and keep the
// root namespace's fixed table. The pool decides *when*; this module knows *how*.
import { threadCpuMs } from "../kernel/libc.js";
import { createNetns, deleteNetns, homeNetnsFd, isNetnsMounted, listNetns, netnsPath, withNetns } from "../kernel/netns.js";
import { Rtnl, type Link } from "../kernel/netlink/rtnl.js";
import { conntrackFlush } from "../kernel/netlink/conntrack.js";
import { createPersistentTap, resetTap } from "../kernel/tap.js";
import { readInterfaceSysctl, writeInterfaceSysctl, writeNetSysctls } from "../kernel/sysctl.js";
import * as fs from "node:fs";
import { nftJson, nftRun, runRetryingEintr, withNft } from "../kernel/nft.js";
import { loadDataplane, openPinnedDataplane, removePinned, type Dataplane as BpfDataplane } from "../kernel/bpf.js";
import { addSetElements, NFPROTO_INET } from "../kernel/nftsets.js";
import { admittedElements, type Admission, clearEgressPolicyScript, deleteRootScript, foreignTables, resetScript, rootRuleCount, rootRuleset, slotRuleset, type SlotRulesetOptions } from "./ruleset.js";
import {
  GATEWAY_IP,
  GATEWAY_IP6,
  GUEST_IP,
  GUEST_IP6,
  GUEST_NETWORK6,
  HOST_LINK_IP6,
  SLOT_LINK_IP6,
  outsideAddress6,
  type Cidr6,
  NETSLOT_RTPROT,
  SLOT_UPLINK_NAME,
  TAP_MAC,
  TAP_NAME,
  VXLAN_NAME,
  DUMMY_VNI,
  PREFIX_PATTERN,
  cidrsOverlap,
  cidrs6Overlap,
  parseCidr6Loose,
  formatCidr,
  formatCidr6,
  ipToInt,
  parseSlotName,
  slotAddressing,
  tapProbeFrame,
  bpfPinDir,
  type Cidr,
  type SlotAddressing,
} from "./topology.js";
import type { TenantNetwork } from "../core/types.js";
import type { Bandwidth, PolicyCidr, ProfilePolicy } from "../core/profiles.js";
import { faultPoint } from "../core/faults.js";
import { slotFingerprint, type Fingerprint, type ProofShortcuts } from "./fingerprint.js";
import { upgradeDataplane } from "./upgrade.js";

const TAP_PROBE = tapProbeFrame();

/** A slot without IPv6 (no --link-cidr6): off before any device exists, so no device gets IPv6 state. */
const NO_IPV6_SLOT_SYSCTLS: Array<[string, number]> = [
  ["conf/all/disable_ipv6", 1],
  ["conf/default/disable_ipv6", 1],
];
/**
 * A slot with IPv6: off on lo (writing "all" also sets "default"), then on for the devices
 * created next (tap0, eth0), with no automatic link-local address (so no DAD, no router
 * solicitation, nothing the kernel adds when a VMM first brings tap0's carrier up), and
 * forwarding for the namespace.
 */
const IPV6_SLOT_SYSCTLS: Array<[string, number]> = [
  ["conf/all/disable_ipv6", 1],
  ["conf/default/disable_ipv6", 0],
  ["conf/default/addr_gen_mode", 1],
  ["conf/all/forwarding", 1],
];

/** Slot devices route IPv4 (IPv6 is off in the slot namespace). */
const ROUTED_DEVICE = { ipv4Forwarding: true } as const;
/** Host ends route IPv4 and carry no IPv6 link-local address (no DAD/RS work per device). */
const ROUTED_HOST_DEVICE = { ipv4Forwarding: true, ipv6LinkLocal: false } as const;

export interface DataplaneOptions {
  prefix: string;
  linkCidr: Cidr;
  uplink: string;
  vtepRemote: string | undefined;
  vtepPort: number;
  /** UDP port of the daemon's DNS forwarder: the root table redirects the guests' port 53 on the host link to it. */
  dnsPort?: number | undefined;
  /** Compiled eBPF object (bpf/nat.o). */
  bpfObject: string;
  /** MTU of tap0 (the guest's); the uplink's when not given. Part of the slot layout. */
  guestMtu?: number | undefined;
  /**
   * --link-cidr6: slots carry IPv6 for leases whose profile asks for it (outside address
   * base + 1 + index). Part of the slot layout: every slot gets the IPv6 plumbing at build,
   * a lease only its `slots6` map entry.
   */
  linkCidr6?: Cidr6 | undefined;
}

/**
 * A setting of the root namespace that the daemon changes (and purge puts back): recorded
 * with its value from before the first change, in the store, before it is changed.
 */
export interface RootChange {
  kind: "interface-sysctl";
  family: "ipv4" | "ipv6";
  device: string;
  name: string;
  before: string;
  after: string;
}

export interface ScrubOutcome {
  ok: boolean;
  /** Why the slot cannot go back to the pool, when !ok. */
  reason?: string;
  /** tap0's fd-only settings read back right after the reset (for the proof that follows). */
  tap?: Record<string, string>;
}

export { bpfPinDir };

/** Finds the device of the main table's default route (`ip route show default`). */
export function defaultRouteDevice(): string | undefined {
  const rtnl = Rtnl.open();
  try {
    const route = rtnl.routes(4).find((r) => r.dst === "default" && r.table === 254);
    if (route?.oif === undefined) return undefined;
    return rtnl.links().find((l) => l.index === route.oif)?.name;
  } finally {
    rtnl.close();
  }
}

/**
 * Routes and addresses of the root namespace inside `linkCidr` (or, given `family` 6,
 * `--link-cidr6`) that are not this prefix's own (`ip route show table all`, `ip addr`):
 * another daemon's slots, or the host's own networks. A daemon started on such a CIDR would
 * fail every build (`File exists`) or, worse, shadow a host network. Covering routes (the
 * default route, a /8 a VPN adds) are fine: the slots' more specific routes win. Empty when
 * the CIDR is free.
 */
export function linkCidrConflicts(prefix: string, linkCidr: Cidr): string[] {
  return rootConflicts(prefix, 4, (text) => {
    const dst = parseCidrLoose(text);
    return dst.prefixLength >= linkCidr.prefixLength && cidrsOverlap(dst, linkCidr);
  });
}

export function linkCidr6Conflicts(prefix: string, linkCidr6: Cidr6): string[] {
  return rootConflicts(prefix, 6, (text) => {
    const dst = parseCidr6Loose(text);
    return dst.prefixLength >= linkCidr6.prefixLength && cidrs6Overlap(dst, linkCidr6);
  });
}

/** `inside(dst)`: whether a route to `dst` (or an address, as a host route) is in the link CIDR. */
function rootConflicts(prefix: string, family: 4 | 6, inside: (dst: string) => boolean): string[] {
  const root = Rtnl.open();
  try {
    const links = root.links();
    const ours = new Set(links.filter((l) => parseSlotName(prefix, l.name) !== undefined).map((l) => l.index));
    const nameOf = (index: number | undefined) => (index === undefined ? "no device" : (links.find((l) => l.index === index)?.name ?? `ifindex ${index}`));
    const conflicts: string[] = [];
    for (const r of root.routes(family)) {
      if (r.dst === "default" || (r.oif !== undefined && ours.has(r.oif)) || !inside(r.dst)) continue;
      conflicts.push(`route ${r.dst} (table ${r.table}, ${nameOf(r.oif)})`);
    }
    for (const a of root.addresses()) {
      if (a.family !== family || ours.has(a.index) || !inside(a.address)) continue;
      conflicts.push(`address ${a.address}/${a.prefixLength} on ${nameOf(a.index)}`);
    }
    return conflicts;
  } finally {
    root.close();
  }
}

/** "a.b.c.d/n" or "a.b.c.d" (host bits allowed) as a network. */
function parseCidrLoose(text: string): Cidr {
  const [ip, len] = text.split("/");
  const prefixLength = len === undefined ? 32 : Number(len);
  const size = 2 ** (32 - prefixLength);
  return { base: ipToInt(ip!) - (ipToInt(ip!) % size), prefixLength, size };
}

export class SlotDataplane {
  readonly uplinkMtu: number;
  /** tap0's MTU in slots built by this daemon (--guest-mtu, else the uplink's). */
  readonly tapMtu: number;
  private readonly root: Rtnl;
  private readonly bpf: BpfDataplane;

  private constructor(
    readonly options: DataplaneOptions,
    uplink: Link,
    root: Rtnl,
    bpf: BpfDataplane,
  ) {
    this.uplinkMtu = uplink.mtu;
    this.tapMtu = options.guestMtu ?? uplink.mtu;
    this.root = root;
    this.bpf = bpf;
  }

  /**
   * What `open` will change in the root namespace beyond its own objects (which purge
   * removes by name), with the current values: the caller records them before `open`.
   */
  static rootChanges(options: Pick<DataplaneOptions, "uplink" | "linkCidr6">): RootChange[] {
    const settings: Array<Omit<RootChange, "before">> = [{ kind: "interface-sysctl", family: "ipv4", device: options.uplink, name: "forwarding", after: "1" }];
    // IPv6 forwarding is decided by the input device too, but only through force_forwarding
    // (net.ipv6.conf.all.forwarding would turn the whole host into a router).
    if (options.linkCidr6 !== undefined) settings.push({ kind: "interface-sysctl", family: "ipv6", device: options.uplink, name: "force_forwarding", after: "1" });
    return settings.map((setting) => ({ ...setting, before: readInterfaceSysctl(setting.family, setting.device, setting.name) }));
  }

  /**
   * Puts back what a daemon of `prefix` changed (`netslot purge`), unless it was changed
   * again since, or another netslot daemon's root table still uses the device. Returns
   * one line per setting, restored or left.
   */
  static restoreRootChanges(prefix: string, changes: readonly RootChange[]): string[] {
    const out: string[] = [];
    const key = (c: RootChange) => `net.${c.family}.conf.${c.device}.${c.name}`;
    for (const c of changes) {
      let now: string;
      try {
        now = readInterfaceSysctl(c.family, c.device, c.name);
      } catch {
        out.push(`${key(c)}: device gone, nothing to restore`);
        continue;
      }
      if (now === c.before) continue;
      if (now !== c.after) {
        out.push(`${key(c)} left at ${now}: changed by someone else since (netslot set ${c.after})`);
        continue;
      }
      const user = otherPrefixesUsing(prefix, c.device);
      if (user.length > 0) {
        out.push(`${key(c)} left at ${now}: netslot prefix ${user.join(", ")} still uses ${c.device}`);
        continue;
      }
      writeInterfaceSysctl(c.family, c.device, c.name, c.before);
      out.push(`${key(c)} restored to ${c.before}`);
    }
    return out;
  }

  /**
   * Loads (or adopts) the eBPF programs and maps, installs the root table and enables
   * forwarding on the uplink. Idempotent: a restarted daemon calls it again.
   */
  static open(
    options: DataplaneOptions,
    log: (msg: string) => void = () => undefined,
    /** Each slot's tenant VNI (its lease's), for migrating NAT entries to a new map layout. */
    vniOf?: (index: number) => number,
  ): SlotDataplane {
    // A new netslot version brings new eBPF programs: switch every existing slot's filters
    // to them over the pinned maps (entries kept) before anything uses the old ones.
    const existing = listNetns(`${options.prefix}-`)
      .map((n) => parseSlotName(options.prefix, n))
      .filter((i): i is number => i !== undefined);
    const upgrade = upgradeDataplane(options, existing, log, vniOf);
    if (upgrade.upgraded) log(`eBPF data path upgraded in place on ${upgrade.slotsSwitched} slots in ${upgrade.ms.toFixed(0)} ms`);
    const dataplane = SlotDataplane.attach(options);
    try {
      dataplane.bpf.setConfig({ guestAddress: GUEST_IP, vxlanPort: options.vtepPort, dummyVni: DUMMY_VNI });
      nftRun(
        rootRuleset({
          prefix: options.prefix,
          linkCidr: formatCidr(options.linkCidr),
          uplink: options.uplink,
          vtepRemote: options.vtepRemote,
          vxlanPort: options.vtepPort,
          ...(options.dnsPort !== undefined ? { dnsPort: options.dnsPort } : {}),
          ...(options.linkCidr6 !== undefined ? { linkCidr6: formatCidr6(options.linkCidr6) } : {}),
        }),
      );
      // Forwarding is decided per input device: the uplink for replies, each host veth for egress.
      writeInterfaceSysctl("ipv4", options.uplink, "forwarding", 1);
      if (options.linkCidr6 !== undefined) writeInterfaceSysctl("ipv6", options.uplink, "force_forwarding", 1);
      return dataplane;
    } catch (err) {
      dataplane.close();
      throw err;
    }
  }

  /**
   * Binds to a data path another thread has set up with `open` (same prefix): loads or
   * adopts the pinned eBPF objects, changes nothing in the root namespace. The scrub
   * worker thread uses this.
   */
  static attach(options: DataplaneOptions): SlotDataplane {
    const root = Rtnl.open();
    try {
      const uplink = root.linkByName(options.uplink);
      if (!uplink) throw new Error(`uplink device "${options.uplink}" does not exist`);
      const bpf = loadDataplane(options.bpfObject, bpfPinDir(options.prefix));
      return new SlotDataplane(options, uplink, root, bpf);
    } catch (err) {
      root.close();
      throw err;
    }
  }

  addressing(index: number): SlotAddressing {
    return slotAddressing(this.options.prefix, this.options.linkCidr, index);
  }

  /**
   * Builds slot `index` from nothing: namespace, tap0, veth with its peer created directly
   * in the root namespace, VXLAN, sysctls, firewall, eBPF NAT, host side and route.
   * Undoes itself on failure.
   */
  buildSlot(index: number, timings?: Record<string, number>): void {
    const a = this.addressing(index);
    const step = stepTimer(timings);
    try {
      const hostIndex = createNetns(a.name, () => {
        step("netns");
        return this.buildInside(a, step);
      });
      faultPoint("build.after-netns");
      this.buildHostSide(a, hostIndex);
      step("host side");
      faultPoint("build.after-host-side");
      this.bpf.putSlot(a.slotMac, { outsideAddress: a.outsideAddress, vni: 0, ifindex: a.slotIfindex });
      step("nat entry");
    } catch (err) {
      this.destroySlot(index);
      throw err;
    }
  }

  /** Builds the slot's inside; returns the host veth's ifindex in the root namespace. */
  private buildInside(a: SlotAddressing, step: (name: string) => void): number {
    // IPv6 off before any device exists (no device gets IPv6 state). Forwarding is set per
    // device over netlink: each /proc/sys/net/<dir> lookup walks one dentry per namespace
    // on the host, so the one lookup here is all the build pays for.
    // IPv6 state on devices: with --link-cidr6, only tap0 and eth0 (the devices that carry
    // the guest's IPv6) have IPv6 on; lo and vx0 stay off as without it.
    const v6 = this.options.linkCidr6 !== undefined;
    writeNetSysctls("ipv6", v6 ? IPV6_SLOT_SYSCTLS : NO_IPV6_SLOT_SYSCTLS);
    step("sysctl");
    const rtnl = Rtnl.open();
    try {
      rtnl.setLink(1, { up: true });
      step("lo");
      createPersistentTap(TAP_NAME);
      const tap = rtnl.linkByName(TAP_NAME)!;
      rtnl.setLink(tap.index, { mac: TAP_MAC, mtu: this.tapMtu, up: true, ...ROUTED_DEVICE });
      rtnl.addAddress(tap.index, GATEWAY_IP, 30);
      if (v6) {
        rtnl.addAddress(tap.index, GATEWAY_IP6, 64, { nodad: true });
        rtnl.addRoute({ dst: GUEST_NETWORK6, oif: tap.index });
      }
      step("tap0");
      // eth0 stays down until its clsact qdisc and filters are in: grafting a qdisc on a
      // running device deactivates it and waits for an RCU grace period.
      rtnl.createVeth({
        name: SLOT_UPLINK_NAME,
        index: a.slotIfindex,
        mac: a.slotMac,
        mtu: this.uplinkMtu,
        peerName: a.hostVeth,
        peerNetnsFd: homeNetnsFd(),
        peerMtu: this.uplinkMtu,
        // One queue per end (the default is one per possible CPU): a queue is sysfs
        // directories and per-queue state in the kernel, ~4 KiB each, for no throughput a
        // single guest's link can use (the veth rx path runs on the sending CPU anyway).
        queues: 1,
      });
      step("veth");
      const eth0 = rtnl.linkByName(SLOT_UPLINK_NAME)!;
      rtnl.addAddress(eth0.index, a.slotAddress, 31);
      // IPv6 routes need an IPv6 next hop: fixed link-local addresses on the veth pair.
      if (v6) rtnl.addAddress(eth0.index, SLOT_LINK_IP6, 64, { nodad: true });
      rtnl.addQdiscClsact(eth0.index);
      rtnl.addBpfFilter(eth0.index, "ingress", this.bpf.ingressProgFd, "nat_ingress");
      rtnl.addBpfFilter(eth0.index, "egress", this.bpf.egressProgFd, "nat_egress");
      step("eth0 tc");
      rtnl.setLink(eth0.index, { up: true, ...ROUTED_DEVICE });
      rtnl.addRoute({ dst: "default", gateway: a.hostAddress, oif: eth0.index });
      if (v6) rtnl.addRoute({ dst: "::/0", gateway: HOST_LINK_IP6, oif: eth0.index });
      step("eth0 up");
      if (this.options.vtepRemote !== undefined) {
        rtnl.createVxlan({
          name: VXLAN_NAME,
          vni: DUMMY_VNI,
          remote: this.options.vtepRemote,
          local: a.slotAddress,
          port: this.options.vtepPort,
          linkIndex: eth0.index,
          learning: false,
          mac: a.vxlanMac,
        });
        rtnl.setLink(rtnl.linkByName(VXLAN_NAME)!.index, { up: true, ...ROUTED_DEVICE });
        if (v6) writeNetSysctls("ipv6", [[`conf/${VXLAN_NAME}/disable_ipv6`, 1]]);
        step("vx0");
      }
      nftRun(slotRuleset({ ...this.rulesetOptions(a), fresh: true }));
      step("nft");
      if (eth0.linkIndex === undefined) throw new Error(`eth0 of ${a.name} reports no peer`);
      return eth0.linkIndex;
    } finally {
      rtnl.close();
    }
  }

  /**
   * The host end, by the ifindex eth0 reports for its peer: asking the root namespace for
   * a veth by name makes the kernel look up the peer's namespace id, a linear scan over
   * every namespace the root has an id for.
   */
  private buildHostSide(a: SlotAddressing, hostIndex: number): void {
    // No IPv6 on the host end: brought up with IPv6 on, a device gets a multicast route
    // (ff00::/8) in the root's local table, inserted into a list of one per device, and
    // every IPv6 route of the root namespace is walked (rt6_sync_up): both grow with the pool.
    // With --link-cidr6 the host end carries the guests' IPv6 and pays that: IPv6 stays on,
    // with forwarding (force_forwarding: per device as IPv4's; IPv6 has no netlink setter).
    const cidr6 = this.options.linkCidr6;
    writeNetSysctls("ipv6", [[`conf/${a.hostVeth}/${cidr6 === undefined ? "disable_ipv6" : "force_forwarding"}`, 1]]);
    // Forwarding on, and no IPv6 link-local (hence no DAD or router solicitation work under
    // the RTNL lock, which would grow with the pool), in the request that brings it up.
    this.root.setLink(hostIndex, { up: true, ...ROUTED_HOST_DEVICE });
    this.root.addAddress(hostIndex, a.hostAddress, 31);
    this.root.addRoute({ dst: `${a.outsideAddress}/32`, gateway: a.slotAddress, oif: hostIndex, protocol: NETSLOT_RTPROT });
    if (cidr6 !== undefined) {
      // A fixed link-local next hop (no DAD), the route to the slot's outside IPv6 address.
      this.root.addAddress(hostIndex, HOST_LINK_IP6, 64, { nodad: true });
      this.root.addRoute({ dst: `${outsideAddress6(cidr6, a.index)}/128`, gateway: SLOT_LINK_IP6, oif: hostIndex, protocol: NETSLOT_RTPROT });
    }
  }

  /** What the slot's firewall is rendered from (build and reset alike). */
  private rulesetOptions(a: SlotAddressing): SlotRulesetOptions {
    return {
      linkCidr: formatCidr(this.options.linkCidr),
      hostAddress: a.hostAddress,
      ...(this.options.linkCidr6 !== undefined ? { linkCidr6: formatCidr6(this.options.linkCidr6) } : {}),
    };
  }

  /**
   * Gives the lease on slot `index` IPv6 (one map update: the slot already has the
   * plumbing), or takes it away. Refused on a daemon without --link-cidr6.
   */
  setIpv6(index: number, on: boolean): void {
    const a = this.addressing(index);
    const cidr6 = this.options.linkCidr6;
    if (on && cidr6 === undefined) throw new Error("IPv6 needs --link-cidr6");
    this.bpf.setSlot6(a.slotIfindex, on && cidr6 ? { outsideAddress6: outsideAddress6(cidr6, index), guestAddress6: GUEST_IP6, outsideAddress: a.outsideAddress } : undefined);
  }

  /** The slot's outside IPv6 address, undefined on a daemon without --link-cidr6. */
  outsideAddress6(index: number): string | undefined {
    return this.options.linkCidr6 === undefined ? undefined : outsideAddress6(this.options.linkCidr6, index);
  }

  /** Removes every kernel object of slot `index`; a missing object is success. */
  destroySlot(index: number): void {
    const a = this.addressing(index);
    const host = this.root.linkByName(a.hostVeth);
    // Deleting the host end takes the pair (and its routes) down synchronously; the
    // namespace itself is freed by the kernel later.
    if (host) this.root.deleteLink(host.index);
    deleteNetns(a.name);
    this.bpf.deleteSlot(a.slotMac);
  }

  /**
   * Cheap structural check of every slot at once, from the root namespace: namespace
   * mounted, host veth up with its address and route, NAT map entry present. Used at
   * restart to adopt slots without rebuilding them.
   */
  intactSlots(indices: number[]): Set<number> {
    const links = new Map(this.root.links().map((l) => [l.name, l]));
    const addresses = new Set(this.root.addresses().filter((x) => x.family === 4).map((x) => `${x.index}/${x.address}`));
    const routes = new Set(
      this.root
        .routes(4, 254)
        .filter((r) => r.protocol === NETSLOT_RTPROT)
        .map((r) => `${r.dst}|${r.gateway}|${r.oif}`),
    );
    const mapEntries = new Map(this.bpf.slotEntries().map((e) => [e.mac, e]));
    const intact = new Set<number>();
    for (const index of indices) {
      const a = this.addressing(index);
      const host = links.get(a.hostVeth);
      if (!host || !host.up) continue;
      if (!addresses.has(`${host.index}/${a.hostAddress}`)) continue;
      if (!routes.has(`${a.outsideAddress}/32|${a.slotAddress}|${host.index}`)) continue;
      if (mapEntries.get(a.slotMac)?.outsideAddress !== a.outsideAddress) continue;
      if (!isNetnsMounted(a.name)) continue;
      intact.add(index);
    }
    return intact;
  }

  /** Slot indices that have a namespace or host veth with this prefix in the kernel. */
  kernelSlotIndices(): Set<number> {
    const found = new Set<number>();
    for (const name of listNetns(`${this.options.prefix}-`)) {
      const index = parseSlotName(this.options.prefix, name);
      if (index !== undefined) found.add(index);
    }
    for (const link of this.root.links()) {
      const index = parseSlotName(this.options.prefix, link.name);
      if (index !== undefined) found.add(index);
    }
    return found;
  }

  /** Points the slot's tunnel at a tenant network, or clears it: a route and a map update, no device change. */
  setTenant(index: number, network: TenantNetwork | undefined, previous?: TenantNetwork): void {
    const a = this.addressing(index);
    if (network && this.options.vtepRemote === undefined) throw new Error("tenant networks need --vtep-remote");
    withNetns(a.netnsPath, () => {
      const rtnl = Rtnl.open();
      try {
        const vx = rtnl.linkByName(VXLAN_NAME);
        if (previous && vx) rtnl.deleteRoute({ dst: previous.cidr, oif: vx.index });
        if (network) {
          if (!vx) throw new Error(`slot ${index} has no ${VXLAN_NAME}`);
          rtnl.addRoute({ dst: network.cidr, oif: vx.index, replace: true });
        }
      } finally {
        rtnl.close();
      }
    });
    this.bpf.setSlotVni(a.slotMac, network ? network.vni : 0);
  }

  /**
   * Makes the shared eBPF trie hold every profile's CIDRs (once, at start: a profile's
   * lists are written here, not per lease). Returns how many stale entries were removed.
   */
  loadEgressPolicies(cidrs: readonly PolicyCidr[]): number {
    return this.bpf.syncPolicyCidrs(cidrs);
  }

  /**
   * Applies a lease's egress policy: one eBPF map update naming its profile, whatever
   * the size of the profile's lists (they are in the shared trie already). No nftables.
   * Undefined removes it.
   */
  setEgressPolicy(index: number, policy: ProfilePolicy | undefined): void {
    const a = this.addressing(index);
    this.bpf.setSlotPolicy(a.outsideAddress, policy && { profile: policy.id, hostAddress: a.hostAddress, restricted: policy.allow !== undefined });
  }

  /** Admits (or renews) addresses a DNS answer gave into the slot's admission sets; the kernel expires them. */
  admitAddresses(index: number, admissions: readonly Admission[]): void {
    if (admissions.length === 0) return;
    withNetns(this.addressing(index).netnsPath, () => addSetElements(NFPROTO_INET, admittedElements(admissions)));
  }

  /** Sets the lease's bandwidth (one eBPF map update: full token buckets), or removes it. */
  setBandwidth(index: number, bandwidth: Bandwidth | undefined): void {
    this.bpf.setRate(this.addressing(index).outsideAddress, bandwidth);
  }

  /**
   * The cheap part of a scrub, always done on release: tenant route and VNI cleared,
   * conntrack and neighbours flushed. Refuses when a process still holds the tap: the
   * next tenant would share a live device.
   */
  scrub(index: number, tenant: TenantNetwork | undefined, admissions = false, timings?: Record<string, number>): ScrubOutcome {
    const a = this.addressing(index);
    const step = stepTimer(timings);
    this.bpf.setSlotVni(a.slotMac, 0);
    // A missing entry is a no-op: a map lookup's cost, whatever the lease had.
    this.bpf.setRate(a.outsideAddress, undefined);
    this.bpf.setSlotPolicy(a.outsideAddress, undefined);
    this.bpf.setSlot6(a.slotIfindex, undefined);
    step("map entries");
    const outcome = withNetns(a.netnsPath, (): ScrubOutcome => {
      step("enter netns");
      // Emptying the set deletes elements (kernel destroy work): only when a profile named domains.
      if (admissions) nftRun(clearEgressPolicyScript());
      step("admission sets");
      const rtnl = Rtnl.open();
      try {
        const tap = rtnl.linkByName(TAP_NAME);
        step("rtnl open, tap0 lookup");
        if (!tap) return { ok: false, reason: "tap0 is missing" };
        if (tap.lowerUp) return { ok: false, reason: "tap0 is still held open by a process" };
        // What the last VMM set through its fd outlives the fd: back to a fresh tap's.
        const tapSettings = resetTap(TAP_NAME);
        step("tap reset");
        if (!tapSettings) return { ok: false, reason: "tap0 is still held open by a process" };
        if (tenant) {
          // Only a lease with a tenant network had a route on vx0 (a lookup is ~0.1 ms of CPU).
          const vx = rtnl.linkByName(VXLAN_NAME);
          if (vx) rtnl.deleteRoute({ dst: tenant.cidr, oif: vx.index });
        }
        step("tenant route");
        conntrackFlush();
        step("conntrack flush");
        rtnl.flushNeighbours();
        step("neighbour flush");
        return { ok: true, tap: tapSettings };
      } finally {
        rtnl.close();
      }
    });
    step("leave netns");
    return outcome;
  }

  /**
   * Puts the slot's nftables back to baseline (tables a tenant added removed, netslot's
   * own re-created). Only when the fingerprint shows a difference: deleting tables makes
   * the next transaction in the namespace wait for an RCU grace period.
   */
  resetFirewall(index: number): void {
    const a = this.addressing(index);
    withNetns(a.netnsPath, () => {
      // One context for the listing and the reset: a second context would wait for the
      // first one's socket teardown under the commit lock.
      withNft((nft) =>
        runRetryingEintr(nft, resetScript(this.rulesetOptions(a), foreignTables(nft.json("list tables")))),
      );
    });
  }

  /** Runs a synchronous block inside slot `index`'s namespace (for checks and fingerprints). */
  inSlot<T>(index: number, fn: () => T): T {
    return withNetns(netnsPath(this.addressing(index).name), fn);
  }

  /** Tags of the loaded eBPF programs: they change when the programs do. */
  programTags(): { egress: string; ingress: string } {
    return { egress: this.bpf.egressProgTag, ingress: this.bpf.ingressProgTag };
  }

  /** The slot's hygiene fingerprint, read through the kernel (see fingerprint.ts). */
  fingerprint(index: number, timings?: Record<string, number>, shortcuts?: ProofShortcuts): Fingerprint {
    const a = this.addressing(index);
    const nat = this.bpf.getSlot(a.slotMac);
    const rate = this.bpf.getRate(a.outsideAddress);
    const policy = this.bpf.getSlotPolicy(a.outsideAddress);
    const nat6 = this.bpf.getSlot6(a.slotIfindex);
    return slotFingerprint({
      netnsPath: a.netnsPath,
      addressing: a,
      bpfEntry: nat && { mac: a.slotMac, ...nat },
      tapProbe: TAP_PROBE,
      ...(rate ? { rateEntry: JSON.stringify(rate) } : {}),
      ...(policy ? { policyEntry: JSON.stringify(policy) } : {}),
      ...(nat6 ? { ipv6Entry: JSON.stringify(nat6) } : {}),
    }, timings, shortcuts);
  }

  /** IPv4 frames the NAT dropped because no slot owns them (a MAC of no slot, or of another slot's eth0). */
  unattributedDrops(): bigint {
    return this.bpf.unattributedDrops();
  }

  bpfSlotEntries(): Array<{ mac: string; outsideAddress: string; vni: number; ifindex: number }> {
    return this.bpf.slotEntries();
  }

  close(): void {
    this.bpf.close();
    this.root.close();
  }

  /**
   * Removes every kernel object and pinned path of a prefix (`netslot purge`): host veths,
   * namespaces, the root table, pinned programs and maps. Idempotent.
   */
  static purge(prefix: string): { namespaces: number; links: number } {
    // Namespaces first: the kernel tears them down (and their veth pairs) in batches, where
    // deleting veths one by one waits ~30 ms each for in-flight packets.
    const names = listNetns(`${prefix}-`).filter((n) => parseSlotName(prefix, n) !== undefined);
    for (const name of names) deleteNetns(name);
    const root = Rtnl.open();
    let links = 0;
    try {
      // The kernel frees namespaces in batches on a workqueue: wait while it makes progress.
      let left = root.links().filter((l) => parseSlotName(prefix, l.name) !== undefined);
      let lastProgress = Date.now();
      while (left.length > 0 && names.length > 0 && Date.now() - lastProgress < 5_000) {
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
        const now = root.links().filter((l) => parseSlotName(prefix, l.name) !== undefined);
        if (now.length < left.length) lastProgress = Date.now();
        left = now;
      }
      // Host ends whose namespace was already gone (or never made) go one by one.
      for (const link of left) {
        root.deleteLink(link.index);
        links++;
      }
    } finally {
      root.close();
    }
    nftRun(deleteRootScript(prefix));
    removePinned(bpfPinDir(prefix));
    return { namespaces: names.length, links };
  }
}

/**
 * Adds the time since the previous call to `timings[name]` (ms, wall) and this thread's CPU
 * time to `timings["cpu " + name]`; without a name, only restarts the clock (time accounted
 * elsewhere); a no-op without `timings`.
 */
export function stepTimer(timings: Record<string, number> | undefined): (name?: string) => void {
  if (!timings) return () => undefined;
  let t = performance.now();
  let cpu = threadCpuMs();
  return (name) => {
    const now = performance.now();
    const nowCpu = threadCpuMs();
    if (name !== undefined) {
      timings[name] = (timings[name] ?? 0) + (now - t);
      timings[`cpu ${name}`] = (timings[`cpu ${name}`] ?? 0) + (nowCpu - cpu);
    }
    t = now;
    cpu = nowCpu;
  };
}

/** Other netslot daemons (pinned under /sys/fs/bpf/netslot) whose root table names `device`. */
function otherPrefixesUsing(prefix: string, device: string): string[] {
  let prefixes: string[];
  try {
    prefixes = fs.readdirSync(bpfPinDir("")).filter((p) => p !== prefix && PREFIX_PATTERN.test(p));
  } catch {
    return [];
  }
  return prefixes.filter((p) => {
    try {
      return JSON.stringify(nftJson(`list table inet ${p}`)).includes(JSON.stringify(device));
    } catch {
      return false;
    }
  });
}

/** What the kernel holds for a prefix, read without changing anything (`netslot check`). */
export interface KernelInventory {
  namespaces: Set<number>;
  hostLinks: Set<number>;
  rootTable: boolean;
  rootRules: number;
  pinned: boolean;
  mapEntries: Array<{ mac: string; outsideAddress: string; vni: number }>;
}

export function inventory(prefix: string): KernelInventory {
  const namespaces = new Set<number>();
  for (const name of listNetns(`${prefix}-`)) {
    const index = parseSlotName(prefix, name);
    if (index !== undefined) namespaces.add(index);
  }
  const hostLinks = new Set<number>();
  const root = Rtnl.open();
  try {
    for (const link of root.links()) {
      const index = parseSlotName(prefix, link.name);
      if (index !== undefined) hostLinks.add(index);
    }
  } finally {
    root.close();
  }
  let rootTable: boolean;
  let rootRules = 0;
  try {
    rootRules = rootRuleCount(nftJson(`list table inet ${prefix}`), prefix);
    rootTable = true;
  } catch {
    rootTable = false;
  }
  const bpf = openPinnedDataplane(bpfPinDir(prefix));
  const mapEntries = bpf ? bpf.slotEntries() : [];
  bpf?.close();
  return { namespaces, hostLinks, rootTable, rootRules, pinned: bpf !== undefined, mapEntries };
}

/** A slot's fingerprint read without a running daemon (`netslot check`, tests). */
export function fingerprintOf(prefix: string, linkCidr: Cidr, index: number): Fingerprint {
  const a = slotAddressing(prefix, linkCidr, index);
  const bpf = openPinnedDataplane(bpfPinDir(prefix));
  try {
    const nat = bpf?.getSlot(a.slotMac);
    const rate = bpf?.getRate(a.outsideAddress);
    const policy = bpf?.getSlotPolicy(a.outsideAddress);
    const nat6 = bpf?.getSlot6(a.slotIfindex);
    return slotFingerprint({
      netnsPath: a.netnsPath,
      addressing: a,
      bpfEntry: nat && { mac: a.slotMac, ...nat },
      tapProbe: TAP_PROBE,
      ...(rate ? { rateEntry: JSON.stringify(rate) } : {}),
      ...(policy ? { policyEntry: JSON.stringify(policy) } : {}),
      ...(nat6 ? { ipv6Entry: JSON.stringify(nat6) } : {}),
    });
  } finally {
    bpf?.close();
  }
}
