// A hostile VMM's eBPF leftovers: run inside a slot's namespace (nsenter --net=…), it loads
// a trivial program with raw bpf(2) and attaches it where nothing but BPF_PROG_QUERY sees
// it, then exits. What it attaches outlives it:
//   tcx-ingress DEV | tcx-egress DEV   BPF_PROG_ATTACH at the device's tcx hook (no fd needed)
//   tcx-churn DEV                      attaches and detaches at tcx ingress: only the hook's revision changes
//   flow-dissector                     BPF_PROG_ATTACH of a flow dissector to the namespace
//   sk-lookup-pin PATH                 BPF_LINK_CREATE of an sk_lookup program on the namespace,
//                                      the link pinned at PATH (a bpffs path) so it lives on
import * as libc from "../../src/kernel/libc.js";
import { Rtnl } from "../../src/kernel/netlink/rtnl.js";
import { BPF_FLOW_DISSECTOR, BPF_SK_LOOKUP, BPF_TCX_EGRESS, BPF_TCX_INGRESS } from "../../src/kernel/bpfattach.js";
import { BPF_PROG_TYPE_FLOW_DISSECTOR, BPF_PROG_TYPE_SCHED_CLS, BPF_PROG_TYPE_SK_LOOKUP, loadTrivialProgram as load } from "./bpf-prog.js";

const BPF_OBJ_PIN = 6;
const BPF_PROG_ATTACH = 8;
const BPF_PROG_DETACH = 9;
const BPF_LINK_CREATE = 28;


function progAttach(cmd: number, target: number, progFd: number, attachType: number): void {
  const attr = Buffer.alloc(32);
  attr.writeUInt32LE(target, 0); // target_fd / target_ifindex
  attr.writeUInt32LE(progFd, 4); // attach_bpf_fd
  attr.writeUInt32LE(attachType, 8);
  libc.bpf(cmd, attr, cmd === BPF_PROG_ATTACH ? "bpf(BPF_PROG_ATTACH)" : "bpf(BPF_PROG_DETACH)");
}

/** The device's ifindex in this namespace (sysfs may be another namespace's). */
function ifindex(dev: string): number {
  const rtnl = Rtnl.open();
  try {
    const link = rtnl.linkByName(dev);
    if (!link) throw new Error(`no device ${dev}`);
    return link.index;
  } finally {
    rtnl.close();
  }
}

const [what, arg] = process.argv.slice(2);
switch (what) {
  case "tcx-ingress":
  case "tcx-egress":
    // TCX_PASS (0): the tenant's program lets everything through; it is there all the same.
    progAttach(BPF_PROG_ATTACH, ifindex(arg!), load(BPF_PROG_TYPE_SCHED_CLS, "tenant_tcx", 0), what === "tcx-ingress" ? BPF_TCX_INGRESS : BPF_TCX_EGRESS);
    break;
  case "tcx-churn": {
    const prog = load(BPF_PROG_TYPE_SCHED_CLS, "tenant_churn", 0);
    for (let i = 0; i < 3; i++) {
      progAttach(BPF_PROG_ATTACH, ifindex(arg!), prog, BPF_TCX_INGRESS);
      progAttach(BPF_PROG_DETACH, ifindex(arg!), prog, BPF_TCX_INGRESS);
    }
    break;
  }
  case "flow-dissector":
    // BPF_FLOW_DISSECTOR_CONTINUE (129): the kernel's own dissector carries on.
    progAttach(BPF_PROG_ATTACH, 0, load(BPF_PROG_TYPE_FLOW_DISSECTOR, "tenant_flow", 129), BPF_FLOW_DISSECTOR);
    break;
  case "sk-lookup-pin": {
    const prog = load(BPF_PROG_TYPE_SK_LOOKUP, "tenant_lookup", 1 /* SK_PASS */, BPF_SK_LOOKUP);
    const netns = libc.open("/proc/self/ns/net", libc.O_RDONLY);
    const attr = Buffer.alloc(64);
    attr.writeUInt32LE(prog, 0); // prog_fd
    attr.writeUInt32LE(netns, 4); // target_fd
    attr.writeUInt32LE(BPF_SK_LOOKUP, 8);
    const link = libc.bpf(BPF_LINK_CREATE, attr, "bpf(BPF_LINK_CREATE)");
    const pin = Buffer.from(`${arg!}\0`);
    const pinAttr = Buffer.alloc(16);
    pinAttr.writeBigUInt64LE(libc.addressOf(pin), 0);
    pinAttr.writeUInt32LE(link, 8);
    libc.bpf(BPF_OBJ_PIN, pinAttr, "bpf(BPF_OBJ_PIN)");
    break;
  }
  default:
    console.error(`usage: bpf-tenant tcx-ingress|tcx-egress|tcx-churn DEV | flow-dissector | sk-lookup-pin PATH`);
    process.exit(2);
}
