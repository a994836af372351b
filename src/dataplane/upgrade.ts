// In-place upgrade of the eBPF data path: when bpf/nat.o changed (a new netslot version),
// a restarted daemon loads the new programs over the pinned maps, switches every slot's
// two tc filters to them, then re-pins them. Map contents (NAT entries, VNIs) are kept,
// no slot is rebuilt, and no frame meets a missing filter.
//
// Crash-safe by ordering: the pins are moved last, so a daemon that dies midway still
// finds the old programs pinned, upgrades again on its next start and replaces every
// filter once more (replacing a filter with the same program is harmless).
import { upgradePrograms, type ProgramUpgrade } from "../kernel/bpf.js";
import { isNetnsMounted, withNetns } from "../kernel/netns.js";
import { Rtnl, type TcDirection } from "../kernel/netlink/rtnl.js";
import { MAP_SLOTS, PROG_EGRESS, PROG_INGRESS } from "../kernel/bpfmaps.js";
import type { DataplaneOptions } from "./dataplane.js";
import { DUMMY_VNI, SLOT_UPLINK_NAME, bpfPinDir, slotAddressing } from "./topology.js";

/** The filters buildSlot attaches (addBpfFilter's defaults): a replace must name the same ones. */
const FILTER = { priority: 1, handle: 1 } as const;

export interface DataplaneUpgrade {
  /** True when new programs were loaded, attached and pinned. */
  upgraded: boolean;
  /** Slots whose two filters now run the new programs. */
  slotsSwitched: number;
  /** Whole upgrade: load, verify, every slot, re-pin. */
  ms: number;
  /** Per-slot switch time (enter namespace, check, two replaces), when any slot was switched. */
  slotMs?: { mean: number; median: number; max: number };
  /** Slots left alone because they are not whole (no namespace, no eth0, no filter); a rebuild fixes them. */
  skipped: Array<{ index: number; reason: string }>;
  /** Program tags now pinned (the new ones when upgraded). */
  tags?: { egress: string; ingress: string };
}

/**
 * Upgrades the pinned NAT programs of `options.prefix` to `options.bpfObject` when they
 * differ: for each slot in `slots`, inside its namespace, `tc filter replace dev eth0
 * ingress|egress prio 1 handle 1 bpf da fd NEW`, then the new programs are pinned in the
 * old ones' place. Returns upgraded=false when the pinned programs are already the
 * object's (or nothing is pinned yet). Throws when the map layouts changed (no in-place
 * upgrade possible) or a filter replace fails (the pins then still name the old
 * programs: the next start retries).
 *
 * Call before anything opens the pinned programs (SlotDataplane.attach), so that slots
 * built afterwards get the new programs too.
 */
export function upgradeDataplane(
  options: DataplaneOptions,
  slots: number[],
  log?: (msg: string) => void,
  vniOf: (index: number) => number = () => DUMMY_VNI,
): DataplaneUpgrade {
  const start = performance.now();
  const upgrade = upgradePrograms(options.bpfObject, bpfPinDir(options.prefix));
  if (!upgrade) return { upgraded: false, slotsSwitched: 0, ms: performance.now() - start, skipped: [] };
  if (upgrade.newMaps.has(MAP_SLOTS)) {
    // A new layout of the NAT map: every slot's entry is written into the new map, in the
    // new encoding, before any filter switches to the programs that read it.
    try {
      for (const index of slots) {
        const a = slotAddressing(options.prefix, options.linkCidr, index);
        // ifindex 0 (bound to no device) until switchSlot reads the slot's real eth0.
        upgrade.putNewSlot(a.slotMac, { outsideAddress: a.outsideAddress, vni: vniOf(index), ifindex: 0 });
      }
    } catch (err) {
      upgrade.abandon();
      throw err;
    }
    log?.(`eBPF map layout changed: ${slots.length} NAT entries migrated to the new map`);
  }
  for (const name of upgrade.newMaps.keys()) {
    // config is written whole by open(); other maps (rates) hold per-lease settings that
    // the next grant on each slot writes again.
    if (name !== MAP_SLOTS) log?.(`eBPF map ${name} changed layout: a new, empty map replaces it`);
  }
  log?.(
    `eBPF programs changed (egress ${upgrade.previousEgressTag} -> ${upgrade.egressTag}, ` +
      `ingress ${upgrade.previousIngressTag} -> ${upgrade.ingressTag}): switching ${slots.length} slots`,
  );
  const skipped: Array<{ index: number; reason: string }> = [];
  const times: number[] = [];
  try {
    for (const index of slots) {
      const t0 = performance.now();
      const reason = switchSlot(options, index, upgrade);
      if (reason === undefined) times.push(performance.now() - t0);
      else skipped.push({ index, reason });
    }
    upgrade.commit();
  } catch (err) {
    upgrade.abandon();
    throw err;
  }
  for (const s of skipped) log?.(`slot ${s.index} not switched to the new eBPF programs: ${s.reason}`);
  const result: DataplaneUpgrade = {
    upgraded: true,
    slotsSwitched: times.length,
    ms: performance.now() - start,
    skipped,
    tags: { egress: upgrade.egressTag, ingress: upgrade.ingressTag },
  };
  if (times.length > 0) {
    const sorted = [...times].sort((x, y) => x - y);
    result.slotMs = {
      mean: times.reduce((x, y) => x + y, 0) / times.length,
      median: sorted[sorted.length >> 1]!,
      max: sorted[sorted.length - 1]!,
    };
  }
  log?.(
    `eBPF programs upgraded: ${result.slotsSwitched} slots in ${result.ms.toFixed(1)} ms` +
      (result.slotMs ? ` (per slot median ${result.slotMs.median.toFixed(3)} ms, max ${result.slotMs.max.toFixed(3)} ms)` : ""),
  );
  return result;
}

/** Replaces slot `index`'s two filters; returns why it was skipped, or undefined when switched. */
function switchSlot(options: DataplaneOptions, index: number, upgrade: ProgramUpgrade): string | undefined {
  const a = slotAddressing(options.prefix, options.linkCidr, index);
  if (!isNetnsMounted(a.name)) return "namespace missing";
  return withNetns(a.netnsPath, () => {
    const rtnl = Rtnl.open();
    try {
      const eth0 = rtnl.linkByName(SLOT_UPLINK_NAME);
      if (!eth0) return `${SLOT_UPLINK_NAME} missing`;
      const hooks: Array<[TcDirection, number, string]> = [
        ["ingress", upgrade.ingressProgFd, PROG_INGRESS],
        ["egress", upgrade.egressProgFd, PROG_EGRESS],
      ];
      // Only a filter that is there is replaced: a replace would otherwise create one, or
      // add a second program next to a filter at another priority.
      for (const [direction, , name] of hooks) {
        const ours = rtnl.filters(eth0.index, direction).some((f) => f.kind === "bpf" && f.priority === FILTER.priority && f.handle === FILTER.handle);
        if (!ours) return `no ${name} filter (prio ${FILTER.priority} handle ${FILTER.handle}) on ${SLOT_UPLINK_NAME} ${direction}`;
      }
      // The new programs pass only frames of the entry's eth0: slots built before entries
      // were bound (ifindex 0, the kernel's own index) are bound to what eth0 is now.
      upgrade.bindSlot(a.slotMac, eth0.index);
      // Same priority and handle: the kernel swaps the program of the existing filter.
      for (const [direction, fd, name] of hooks) rtnl.replaceBpfFilter(eth0.index, direction, fd, name, FILTER);
      return undefined;
    } finally {
      rtnl.close();
    }
  });
}
