// Traffic control: the clsact qdisc and its bpf filters (`tc qdisc`, `tc filter`).
import * as libc from "../../libc.js";
import { NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, attrNested, attrString, attrU32, encodeMessage } from "../codec.js";
import { isNetlinkErrno, type NetlinkSocket } from "../socket.js";
import { RTM_NEWQDISC, RTM_DELQDISC, RTM_GETQDISC, RTM_NEWTFILTER, RTM_DELTFILTER, RTM_GETTFILTER, TCA_KIND, TCA_OPTIONS, TCA_CHAIN, TCA_BPF_FD, TCA_BPF_NAME, TCA_BPF_FLAGS, TCA_BPF_TAG, TCA_BPF_ID, TCA_BPF_FLAG_ACT_DIRECT, TC_H_CLSACT, CLSACT_HANDLE, TC_H_MIN_INGRESS, TC_H_MIN_EGRESS, ETH_P_ALL } from "./consts.js";
import { tcmsg, decodeTcmsg, type TcMsg } from "./headers.js";

export interface Qdisc {
  index: number;
  kind: string;
  handle: number;
  parent: number;
}

export type TcDirection = "ingress" | "egress";

export interface TcFilter {
  kind: string;
  priority: number;
  /** Ethertype in host order (ETH_P_ALL = 3). */
  protocol: number;
  handle: number;
  chain?: number;
  bpf?: { name?: string; id?: number; tag?: string; directAction: boolean };
}

/** `tc qdisc add dev INDEX clsact`; an existing clsact is success. */
export function addQdiscClsact(sock: NetlinkSocket, index: number): void {
  const msg = encodeMessage(RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL, [tcmsg(index, CLSACT_HANDLE, TC_H_CLSACT), attrString(TCA_KIND, "clsact")]);
  sock.request(msg, `RTM_NEWQDISC clsact dev ${index}`, [libc.EEXIST]);
}

/** `tc qdisc del dev INDEX clsact` (removes its filters too); a missing one is success. */
export function deleteQdiscClsact(sock: NetlinkSocket, index: number): void {
  // Without clsact the kernel answers ENOENT, or EINVAL "Invalid handle" once the device
  // has had an ingress queue: both mean there is nothing to delete.
  const msg = encodeMessage(RTM_DELQDISC, 0, [tcmsg(index, CLSACT_HANDLE, TC_H_CLSACT), attrString(TCA_KIND, "clsact")]);
  sock.request(msg, `RTM_DELQDISC clsact dev ${index}`, [libc.ENOENT, libc.ENODEV, libc.EINVAL]);
}

/** `tc qdisc show` */
export function qdiscs(sock: NetlinkSocket): Qdisc[] {
  return dumpQdiscs(sock).map((m) => ({ index: m.index, kind: m.attrs.str(TCA_KIND) ?? "", handle: m.handle, parent: m.parent }));
}

/** Every qdisc of the namespace, decoded. */
export function dumpQdiscs(sock: NetlinkSocket): TcMsg[] {
  return sock.dump(encodeMessage(RTM_GETQDISC, 0, [tcmsg(0, 0, 0)]), "RTM_GETQDISC dump").map(decodeTcmsg);
}

/** `tc filter add dev INDEX ingress|egress [prio P] [handle H] protocol all bpf direct-action fd FD name NAME` */
export function addBpfFilter(sock: NetlinkSocket, index: number, direction: TcDirection, progFd: number, name: string, opts: { priority?: number; handle?: number } = {}): void {
  bpfFilter(sock, index, direction, progFd, name, opts, NLM_F_CREATE | NLM_F_EXCL);
}

/**
 * `tc filter replace dev INDEX ingress|egress prio P handle H protocol all bpf da fd FD name NAME`:
 * with the same priority and handle the new program takes over atomically.
 */
export function replaceBpfFilter(sock: NetlinkSocket, index: number, direction: TcDirection, progFd: number, name: string, opts: { priority?: number; handle?: number } = {}): void {
  bpfFilter(sock, index, direction, progFd, name, opts, NLM_F_CREATE | NLM_F_REPLACE);
}

function bpfFilter(sock: NetlinkSocket, index: number, direction: TcDirection, progFd: number, name: string, opts: { priority?: number; handle?: number }, flags: number): void {
  // Fixed defaults (prio 1, handle 1) so that a later replace finds the same filter.
  const priority = opts.priority ?? 1;
  const handle = opts.handle ?? 1;
  const info = ((priority << 16) | htons(ETH_P_ALL)) >>> 0;
  const msg = encodeMessage(RTM_NEWTFILTER, flags, [
    tcmsg(index, handle, tcParent(direction), info),
    attrString(TCA_KIND, "bpf"),
    attrNested(TCA_OPTIONS, [attrU32(TCA_BPF_FD, progFd), attrString(TCA_BPF_NAME, name), attrU32(TCA_BPF_FLAGS, TCA_BPF_FLAG_ACT_DIRECT)]),
  ]);
  sock.request(msg, `RTM_NEWTFILTER bpf ${name} dev ${index} ${direction}`);
}

/** `tc filter show dev INDEX ingress|egress` (the per-priority chain heads, handle 0, left out). */
export function filters(sock: NetlinkSocket, index: number, direction: TcDirection): TcFilter[] {
  const out: TcFilter[] = [];
  for (const m of dumpFilters(sock, index, direction)) {
    const { handle, info, attrs: a } = m;
    if (handle === 0) continue;
    const f: TcFilter = { kind: a.str(TCA_KIND) ?? "", priority: info >>> 16, protocol: htons(info & 0xffff), handle };
    const chain = a.u32(TCA_CHAIN);
    if (chain !== undefined) f.chain = chain;
    const o = a.nested(TCA_OPTIONS);
    if (f.kind === "bpf" && o) {
      const bpf: NonNullable<TcFilter["bpf"]> = { directAction: ((o.u32(TCA_BPF_FLAGS) ?? 0) & TCA_BPF_FLAG_ACT_DIRECT) !== 0 };
      const name = o.str(TCA_BPF_NAME);
      if (name !== undefined) bpf.name = name;
      const id = o.u32(TCA_BPF_ID);
      if (id !== undefined) bpf.id = id;
      const tag = o.get(TCA_BPF_TAG);
      if (tag !== undefined) bpf.tag = tag.toString("hex");
      f.bpf = bpf;
    }
    out.push(f);
  }
  return out;
}

/** The filters of device `index` on one clsact hook, decoded; [] without clsact or device. */
export function dumpFilters(sock: NetlinkSocket, index: number, direction: TcDirection): TcMsg[] {
  try {
    return sock.dump(encodeMessage(RTM_GETTFILTER, 0, [tcmsg(index, 0, tcParent(direction))]), `RTM_GETTFILTER dump dev ${index}`).map(decodeTcmsg);
  } catch (err) {
    if (isNetlinkErrno(err, libc.EINVAL, libc.ENOENT, libc.ENODEV)) return []; // no clsact / device
    throw err;
  }
}

/** `tc filter del dev INDEX ingress|egress`: every filter of that hook; none is success. */
export function deleteFilters(sock: NetlinkSocket, index: number, direction: TcDirection): void {
  // EINVAL is the kernel's "Parent Qdisc doesn't exists": no clsact, so no filters.
  sock.request(encodeMessage(RTM_DELTFILTER, 0, [tcmsg(index, 0, tcParent(direction))]), `RTM_DELTFILTER dev ${index} ${direction}`, [
    libc.ENOENT,
    libc.EINVAL,
    libc.ENODEV,
  ]);
}

function tcParent(direction: TcDirection): number {
  return ((TC_H_CLSACT & 0xffff0000) | (direction === "ingress" ? TC_H_MIN_INGRESS : TC_H_MIN_EGRESS)) >>> 0;
}

const htons = (v: number): number => ((v & 0xff) << 8) | ((v >> 8) & 0xff);
