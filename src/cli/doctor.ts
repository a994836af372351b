// `netslot doctor`: checks, on this host, everything the daemon needs — privileges, kernel
// features exercised for real in a throwaway namespace, libraries and the built eBPF
// object — and prints one line per check, with how to fix what is missing.
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { randomBytes } from "node:crypto";

const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const BPF_OBJECT = path.join(PACKAGE_ROOT, "bpf", "nat.o");

interface Check {
  name: string;
  required: boolean;
  /** Throws when the item is missing; a string it returns is shown as the detail. */
  run: () => unknown;
  fix: string;
}

export async function doctor(): Promise<number> {
  const scratch = `nsldoc${randomBytes(3).toString("hex")}`;
  // Kernel modules are imported lazily: a missing library must be a doctor line, not a crash.
  const checks: Check[] = [
    { name: "running as root", required: true, run: () => assert(process.getuid?.() === 0, "not root"), fix: "run netslot as root" },
    {
      name: "Node.js 20 or newer",
      required: true,
      run: () => assert(Number(process.versions.node.split(".")[0]) >= 20, process.versions.node),
      fix: "install Node.js 20",
    },
    { name: "/dev/net/tun", required: true, run: () => assert(fs.existsSync("/dev/net/tun"), "missing"), fix: "modprobe tun" },
    {
      name: "libnftables (FFI)",
      required: true,
      run: () => import("../kernel/nft.js"),
      fix: "apt-get install libnftables1",
    },
    { name: "libbpf (FFI)", required: true, run: () => import("../kernel/bpf.js"), fix: "apt-get install libbpf1" },
    {
      name: "eBPF object bpf/nat.o built",
      required: true,
      run: () => assert(fs.existsSync(BPF_OBJECT), `${BPF_OBJECT} missing`),
      fix: "npm run build (needs clang, libbpf-dev)",
    },
    {
      name: "bpffs at /sys/fs/bpf",
      required: true,
      run: async () => (await import("../kernel/bpf.js")).ensureBpffs(),
      fix: "mount -t bpf bpf /sys/fs/bpf",
    },
  ];
  let failures = 0;
  const line = (ok: boolean, name: string, detail: string, fix?: string, required = true) => {
    const mark = ok ? "ok     " : required ? "MISSING" : "absent ";
    process.stdout.write(`${mark} ${name}${detail ? ` (${detail})` : ""}${!ok && fix ? ` — fix: ${fix}` : ""}\n`);
    if (!ok && required) failures++;
  };
  for (const check of checks) {
    try {
      const detail = await check.run();
      line(true, check.name, typeof detail === "string" ? detail : "");
    } catch (err) {
      line(false, check.name, (err as Error).message, check.fix, check.required);
    }
  }
  if (failures > 0) {
    process.stdout.write(`\n${failures} required item(s) missing: kernel feature checks skipped\n`);
    return 1;
  }

  // Kernel features, exercised in a namespace that exists only for this check.
  const { createNetns, deleteNetns } = await import("../kernel/netns.js");
  const { Rtnl } = await import("../kernel/netlink/rtnl.js");
  const { createPersistentTap } = await import("../kernel/tap.js");
  const { nftRun } = await import("../kernel/nft.js");
  const { loadDataplane, removePinned } = await import("../kernel/bpf.js");
  const { conntrackCount } = await import("../kernel/netlink/conntrack.js");
  const pinDir = `/sys/fs/bpf/netslot/${scratch}`;
  const results: Array<[string, boolean, string, string, boolean]> = [];
  const attempt = (name: string, fix: string, fn: () => void, required = true) => {
    try {
      fn();
      results.push([name, true, "", fix, required]);
    } catch (err) {
      results.push([name, false, (err as Error).message, fix, required]);
    }
  };
  let bpf: ReturnType<typeof loadDataplane> | undefined;
  attempt("eBPF: load and pin the NAT programs", "a kernel with BPF syscall, JIT and sched_cls programs", () => {
    bpf = loadDataplane(BPF_OBJECT, pinDir);
  });
  try {
    createNetns(scratch, () => {
      const rtnl = Rtnl.open();
      try {
        attempt("network namespaces and loopback", "CONFIG_NET_NS", () => rtnl.setLink(1, { up: true }));
        attempt("persistent tap devices", "CONFIG_TUN", () => createPersistentTap("tap0"));
        attempt("veth pairs", "CONFIG_VETH", () => rtnl.createVeth({ name: "eth0", peerName: "peer0" }));
        attempt("VXLAN", "CONFIG_VXLAN", () =>
          rtnl.createVxlan({ name: "vx0", vni: 0, remote: "192.0.2.1", port: 4789, learning: false }),
        );
        attempt(
          "Geneve (optional: VXLAN is used without it)",
          "CONFIG_GENEVE",
          () => rtnl.createGeneve({ name: "gn0", vni: 1, remote: "192.0.2.1" }),
          false,
        );
        attempt("nftables (inet and netdev tables)", "CONFIG_NF_TABLES, CONFIG_NF_TABLES_NETDEV", () =>
          nftRun(`add table inet doctor\nadd table netdev doctor\nadd chain netdev doctor in { type filter hook ingress device "tap0" priority 0; }`),
        );
        attempt("conntrack netlink", "CONFIG_NF_CT_NETLINK", () => void conntrackCount());
        attempt("tc clsact with eBPF direct-action filters", "CONFIG_NET_SCH_INGRESS, CONFIG_NET_CLS_BPF", () => {
          if (!bpf) throw new Error("no eBPF programs loaded");
          const eth0 = rtnl.linkByName("eth0");
          if (!eth0) throw new Error("no veth to attach to");
          rtnl.addQdiscClsact(eth0.index);
          rtnl.addBpfFilter(eth0.index, "egress", bpf.egressProgFd, "nat_egress");
          rtnl.addBpfFilter(eth0.index, "ingress", bpf.ingressProgFd, "nat_ingress");
        });
      } finally {
        rtnl.close();
      }
    });
  } catch (err) {
    results.push(["network namespaces", false, (err as Error).message, "CONFIG_NET_NS and root", true]);
  } finally {
    deleteNetns(scratch);
    bpf?.close();
    removePinned(pinDir);
  }
  for (const [name, ok, detail, fix, required] of results) line(ok, name, detail, fix, required);
  process.stdout.write(failures === 0 ? "\nnetslot can run here\n" : `\n${failures} required item(s) missing\n`);
  return failures === 0 ? 0 : 1;
}

function assert(cond: boolean, detail: string): void {
  if (!cond) throw new Error(detail);
}
