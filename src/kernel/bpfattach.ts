// eBPF programs attached to a namespace's devices and to the namespace itself in ways no
// rtnetlink dump shows: tcx (BPF_TCX_INGRESS/EGRESS, Linux 6.6), netkit, the flow
// dissector and sk_lookup. BPF_PROG_ATTACH-mode attachments live on without any fd, so a
// VMM that exits leaves them behind; links live while an fd or a bpffs pin holds them.
// One BPF_PROG_QUERY per device and hook (target_ifindex, in the calling thread's
// namespace) and per namespace hook (the namespace's fd) lists them; the programs'
// names and tags are read only when a hook has any (never in a clean slot).
//
// Raw bpf(2) rather than libbpf: the query is a 64-byte attr, read on every proof.
import * as libc from "./libc.js";

const BPF_PROG_GET_FD_BY_ID = 13;
const BPF_OBJ_GET_INFO_BY_FD = 15;
const BPF_PROG_QUERY = 16;

/** enum bpf_attach_type values (include/uapi/linux/bpf.h). */
export const BPF_FLOW_DISSECTOR = 17;
export const BPF_SK_LOOKUP = 36;
export const BPF_TCX_INGRESS = 46;
export const BPF_TCX_EGRESS = 47;
export const BPF_NETKIT_PRIMARY = 54;
export const BPF_NETKIT_PEER = 55;

const HOOK_NAMES: Record<number, string> = {
  [BPF_FLOW_DISSECTOR]: "flow_dissector",
  [BPF_SK_LOOKUP]: "sk_lookup",
  [BPF_TCX_INGRESS]: "tcx ingress",
  [BPF_TCX_EGRESS]: "tcx egress",
  [BPF_NETKIT_PRIMARY]: "netkit primary",
  [BPF_NETKIT_PEER]: "netkit peer",
};

/** The device hooks queried on every device, and the extra ones of netkit devices. */
const DEVICE_HOOKS = [BPF_TCX_INGRESS, BPF_TCX_EGRESS] as const;
const NETKIT_HOOKS = [BPF_NETKIT_PRIMARY, BPF_NETKIT_PEER] as const;
const NETNS_HOOKS = [BPF_FLOW_DISSECTOR, BPF_SK_LOOKUP] as const;

/**
 * A hook's state. `revision` (mprog hooks: tcx, netkit) counts every attach and detach for
 * as long as the hook's entry lives (on a device with a clsact qdisc, as long as the qdisc):
 * a tenant can set it and the next one read it, so it is part of the state.
 */
export interface HookQuery {
  programs: Array<{ id: number; viaLink: boolean }>;
  revision: bigint;
}

// Reused buffers: the query runs on every proof (one thread per module instance).
const attr = Buffer.alloc(64);
let ids = Buffer.alloc(4 * 16);
let linkIds = Buffer.alloc(4 * 16);

/**
 * BPF_PROG_QUERY of one hook: `target` is an ifindex in the calling thread's namespace
 * (device hooks) or a namespace fd (namespace hooks). Undefined when the kernel lacks the
 * hook. Throws on any other error (ENODEV: the device went away meanwhile).
 */
export function queryHook(target: number, attachType: number): HookQuery | undefined {
  for (;;) {
    attr.fill(0);
    attr.writeUInt32LE(target, 0); // target_fd / target_ifindex
    attr.writeUInt32LE(attachType, 4);
    attr.writeBigUInt64LE(libc.addressOf(ids), 16); // prog_ids
    attr.writeUInt32LE(ids.length / 4, 24); // prog_cnt
    attr.writeBigUInt64LE(libc.addressOf(linkIds), 40); // link_ids (mprog hooks only)
    try {
      libc.bpf(BPF_PROG_QUERY, attr, `bpf(BPF_PROG_QUERY) ${HOOK_NAMES[attachType] ?? attachType}`);
    } catch (err) {
      if (err instanceof libc.SyscallError && err.errno === libc.ENOSPC) {
        // More programs than room (the count is set): again with enough.
        const count = attr.readUInt32LE(24);
        ids = Buffer.alloc(4 * count);
        linkIds = Buffer.alloc(4 * count);
        continue;
      }
      // A kernel without the hook (before 6.6 for tcx, without CONFIG_NETKIT): nothing
      // can be attached there. Not remembered: one odd EINVAL must not stop the checks.
      if (err instanceof libc.SyscallError && err.errno === libc.EINVAL) return undefined;
      throw err;
    }
    const count = attr.readUInt32LE(24);
    const mprog = attachType !== BPF_FLOW_DISSECTOR && attachType !== BPF_SK_LOOKUP;
    const programs: HookQuery["programs"] = [];
    for (let i = 0; i < count; i++) programs.push({ id: ids.readUInt32LE(4 * i), viaLink: mprog && linkIds.readUInt32LE(4 * i) !== 0 });
    return { programs, revision: mprog ? attr.readBigUInt64LE(56) : 0n };
  }
}

/** A loaded program's type, name and tag (BPF_PROG_GET_FD_BY_ID, BPF_OBJ_GET_INFO_BY_FD); undefined when it is gone. */
export function programById(id: number): { type: number; name: string; tag: string } | undefined {
  const a = Buffer.alloc(16);
  a.writeUInt32LE(id, 0);
  let fd: number;
  try {
    fd = libc.bpf(BPF_PROG_GET_FD_BY_ID, a, "bpf(BPF_PROG_GET_FD_BY_ID)");
  } catch (err) {
    if (err instanceof libc.SyscallError && err.errno === libc.ENOENT) return undefined;
    throw err;
  }
  try {
    // struct bpf_prog_info up to name[16] (offset 64).
    const info = Buffer.alloc(80);
    const q = Buffer.alloc(16);
    q.writeUInt32LE(fd, 0);
    q.writeUInt32LE(info.length, 4);
    q.writeBigUInt64LE(libc.addressOf(info), 8);
    libc.bpf(BPF_OBJ_GET_INFO_BY_FD, q, "bpf(BPF_OBJ_GET_INFO_BY_FD)");
    const name = info.subarray(64, 80);
    const end = name.indexOf(0);
    return { type: info.readUInt32LE(0), name: name.toString("latin1", 0, end < 0 ? 16 : end), tag: info.subarray(8, 16).toString("hex") };
  } finally {
    libc.close(fd);
  }
}

/** The hook state of a fresh device or namespace: nothing attached, no change ever made. */
function pristine(q: HookQuery | undefined): boolean {
  return q === undefined || (q.programs.length === 0 && q.revision <= 1n);
}

function describeHook(where: string, attachType: number, q: HookQuery): string[] {
  const hook = `${HOOK_NAMES[attachType]} ${where}`;
  const out = q.programs.map((p) => {
    const info = programById(p.id);
    const what = info ? `${info.name || "(unnamed)"} tag ${info.tag} type ${info.type}` : "a program that just went away";
    return `${hook}: ${what}${p.viaLink ? " (link)" : ""}`;
  });
  if (q.revision > 1n) out.push(`${hook}: revision ${q.revision}`);
  return out;
}

/**
 * Everything attached at the tcx (and, on netkit devices, netkit) hooks of `devices` (in
 * the calling thread's namespace) and at the flow dissector and sk_lookup hooks of the
 * namespace `netns` (a path or an open fd), one line per program ("tcx ingress eth0: NAME tag TAG type 3"),
 * plus a hook's revision when attachments came and went. Empty for a clean slot: netslot
 * attaches its own programs with cls_bpf filters, which the tc filter dump shows.
 */
export function bpfAttachments(devices: ReadonlyArray<{ index: number; name: string; kind?: string | undefined }>, netns: string | number): string[] {
  const netnsFd = typeof netns === "number" ? netns : libc.open(netns, libc.O_RDONLY);
  try {
    return attachments(devices, netnsFd);
  } finally {
    if (typeof netns !== "number") libc.close(netnsFd);
  }
}

function attachments(devices: ReadonlyArray<{ index: number; name: string; kind?: string | undefined }>, netnsFd: number): string[] {
  const out: string[] = [];
  for (const d of devices) {
    for (const type of d.kind === "netkit" ? [...DEVICE_HOOKS, ...NETKIT_HOOKS] : DEVICE_HOOKS) {
      const q = queryHook(d.index, type);
      if (!pristine(q)) out.push(...describeHook(d.name, type, q!));
    }
  }
  for (const type of NETNS_HOOKS) {
    const q = queryHook(netnsFd, type);
    if (!pristine(q)) out.push(...describeHook("netns", type, q!));
  }
  return out;
}
