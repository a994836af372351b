// Slot fingerprints on real slots: two freshly built slots (0 and 3) fingerprint equal;
// every kind of tenant leftover in slot 3 makes it differ from slot 0 and is named by the
// diff; rebuilding slot 3 makes it equal again (the pool's scrub → compare → rebuild path).
// Runs as root. Spawning ip/nft/tc/python here only sets up and checks kernel state.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { REPO_ROOT, freeLinkCidr, isRoot, nsExec, sh, testPrefix, waitFor, skipUnless } from "../support/env.js";
import { SlotDataplane } from "../../src/dataplane/dataplane.js";
import { parseCidr } from "../../src/dataplane/topology.js";
import { inspectNamespace } from "../../src/kernel/netlink/inspect.js";
import { deviceConfNames, readAllNetSysctls } from "../../src/kernel/sysctl.js";
import { diffFingerprints, fingerprintHash, liveHolders, slotFingerprint, type Fingerprint } from "../../src/dataplane/fingerprint.js";

const skip = skipUnless(isRoot(), "needs root");

interface Case {
  name: string;
  /** Changes slot 3 (namespace name given); may start background processes through `bg`. */
  apply(ns: string, bg: (args: string[]) => ChildProcess): unknown;
  /** Every pattern must match a line of diffFingerprints(slot 0, slot 3). */
  expect: RegExp[];
  /** The diff must consist of exactly these lines' patterns (no carrier/counter noise). */
  exact?: boolean;
  /** liveHolders() must report a reason. */
  live?: boolean;
}

// Holds tap0 of the namespace given as argv[1] and returns to the root namespace, like a
// VMM that opens the tap and leaves; with argv[2] == "stay" it stays in the namespace.
const TAP_HOLDER = `
import ctypes, fcntl, os, struct, sys, time
libc = ctypes.CDLL(None, use_errno=True)
home = os.open("/proc/self/ns/net", os.O_RDONLY)
ns = os.open(sys.argv[1], os.O_RDONLY)
assert libc.setns(ns, 0x40000000) == 0
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454ca, struct.pack("16sH", b"tap0", 0x5002))
if sys.argv[2] != "stay":
    assert libc.setns(home, 0x40000000) == 0
print("held", flush=True)
time.sleep(1000)
`;

describe("slot fingerprint on real slots", { skip }, () => {
  const prefix = testPrefix();
  const uplink = `${prefix}u`;
  let dp: SlotDataplane | undefined;
  const children: ChildProcess[] = [];
  let golden: Fingerprint;

  const fingerprint = (index: number, timings?: Record<string, number>): Fingerprint => {
    const a = dp!.addressing(index);
    const bpfEntry = dp!.bpfSlotEntries().find((e) => e.mac === a.slotMac);
    return slotFingerprint({ netnsPath: a.netnsPath, addressing: a, bpfEntry }, timings);
  };

  async function stopChildren(): Promise<void> {
    for (const c of children.splice(0)) {
      if (c.exitCode !== null || c.signalCode !== null) continue;
      const exited = new Promise<void>((resolve) => c.once("exit", () => resolve()));
      c.kill("SIGKILL");
      await exited;
    }
  }

  before(() => {
    sh("ip", ["link", "add", uplink, "type", "veth", "peer", "name", `${prefix}v`]);
    sh("ip", ["link", "set", uplink, "up"]);
    dp = SlotDataplane.open({
      prefix,
      linkCidr: parseCidr(freeLinkCidr()),
      uplink,
      vtepRemote: "198.18.250.2",
      vtepPort: 4789,
      bpfObject: path.join(REPO_ROOT, "bpf", "nat.o"),
    });
    dp.buildSlot(0);
    dp.buildSlot(3);
  });

  after(async () => {
    await stopChildren();
    dp?.close();
    SlotDataplane.purge(prefix);
    sh("ip", ["link", "del", uplink], { allowFail: true });
  });

  it("two fresh slots fingerprint equal", () => {
    golden = fingerprint(0);
    const three = fingerprint(3);
    assert.deepEqual(diffFingerprints(golden, three), []);
    assert.equal(fingerprintHash(golden), fingerprintHash(three));
    assert.equal(liveHolders(three), undefined);
    // Sanity: the fingerprint does see the slot's objects.
    assert.ok(golden.links.eth0 && golden.links.tap0 && golden.links.vx0, Object.keys(golden.links).join(","));
    assert.equal(golden.links.eth0.address, "<slot-mac>");
    assert.ok(golden.addresses.some((x) => x.startsWith("inet <slot-addr>/31 dev eth0")), golden.addresses.join("\n"));
    assert.ok(golden.routes.includes("default via <host-addr> dev eth0 table main proto boot scope global"), golden.routes.join("\n"));
    assert.ok(golden.tcFilters.some((x) => /ingress .*nat_ingress tag [0-9a-f]{16}/.test(x)), golden.tcFilters.join("\n"));
    assert.ok(golden.nftables.some((x) => x.startsWith("table ")));
    assert.deepEqual(golden.bpf, ["<slot-mac> outside <outside-addr> vni 0 bound to eth0"]);
    // A new namespace starts with the host's ip_forward (devconf_inherit_init_net=0); the
    // slot routes by per-device forwarding, which the build sets.
    assert.equal(golden.sysctls["net.ipv4.ip_forward"], sh("sysctl", ["-n", "net.ipv4.ip_forward"]).trim());
    assert.equal(golden.sysctls["net.ipv4.conf.eth0.forwarding"], "1");
    assert.ok(Object.keys(golden.sysctls).length > 300);
    assert.equal(JSON.stringify(JSON.parse(JSON.stringify(golden))), JSON.stringify(golden));
  });

  it("takes a few tens of milliseconds (phases reported)", (t) => {
    const runs: number[] = [];
    const phases: Record<string, number> = {};
    const N = 10;
    for (let i = 0; i < N; i++) {
      const t0 = performance.now();
      fingerprint(3, phases);
      runs.push(performance.now() - t0);
    }
    runs.sort((a, b) => a - b);
    const per = Object.fromEntries(Object.entries(phases).map(([k, v]) => [k, +(v / N).toFixed(2)]));
    t.diagnostic(`fingerprint: median ${runs[N >> 1]!.toFixed(1)} ms, min ${runs[0]!.toFixed(1)} ms; per phase ${JSON.stringify(per)}`);
    assert.ok(runs[N >> 1]! < 500, `median ${runs[N >> 1]} ms`);
  });

  const cases: Case[] = [
    {
      name: "an nft rule in the slot's own chain",
      apply: (ns) => nsExec(ns, ["nft", "add", "rule", "inet", "netslot", "output", "ip", "daddr", "192.0.2.1", "drop"]),
      expect: [/^nftables: \+ rule .*"192\.0\.2\.1"/],
      exact: true,
    },
    {
      name: "an extra nft table",
      apply: (ns) => nsExec(ns, ["nft", "add", "table", "ip", "tenant"]),
      expect: [/^nftables: \+ table .*"tenant"/],
    },
    {
      name: "a route",
      apply: (ns) => nsExec(ns, ["ip", "route", "add", "10.9.0.0/16", "dev", "eth0"]),
      expect: [/^routes: \+ 10\.9\.0\.0\/16 dev eth0 table main proto boot scope link$/],
      exact: true,
    },
    {
      name: "a route in another table",
      apply: (ns) => nsExec(ns, ["ip", "route", "add", "blackhole", "10.66.0.0/16", "table", "100"]),
      expect: [/^routes: \+ blackhole 10\.66\.0\.0\/16 table 100/],
    },
    {
      name: "a changed default route (metric only)",
      apply: (ns) => {
        const gw = nsExec(ns, ["ip", "-4", "route", "show", "default"]).match(/via (\S+)/)![1]!;
        nsExec(ns, ["ip", "route", "replace", "default", "via", gw, "dev", "eth0", "mtu", "1300"]);
      },
      expect: [/^routes: \+ default via <host-addr> dev eth0 metrics mtu=1300/],
    },
    {
      name: "a policy rule",
      apply: (ns) => nsExec(ns, ["ip", "rule", "add", "from", "10.1.2.3", "lookup", "100", "priority", "1000"]),
      expect: [/^rules: \+ 1000: from 10\.1\.2\.3\/32 .*lookup 100$/],
      exact: true,
    },
    {
      name: "an address",
      apply: (ns) => nsExec(ns, ["ip", "addr", "add", "10.8.8.8/32", "dev", "eth0"]),
      expect: [/^addresses: \+ inet 10\.8\.8\.8\/32 dev eth0/],
    },
    {
      name: "a permanent neighbour",
      apply: (ns) => nsExec(ns, ["ip", "neigh", "add", "10.9.9.9", "lladdr", "02:00:00:00:00:99", "dev", "eth0", "nud", "permanent"]),
      expect: [/^neighbours: \+ neigh 10\.9\.9\.9 lladdr 02:00:00:00:00:99 dev eth0 permanent$/],
      exact: true,
    },
    {
      name: "a proxy neighbour",
      apply: (ns) => nsExec(ns, ["ip", "neigh", "add", "proxy", "10.1.1.1", "dev", "eth0"]),
      expect: [/^neighbours: \+ proxy 10\.1\.1\.1 dev eth0/],
    },
    {
      name: "a VXLAN forwarding entry",
      apply: (ns) => nsExec(ns, ["bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "vx0", "dst", "198.18.250.9"]),
      expect: [/^neighbours: \+ fdb 00:00:00:00:00:00 dst 198\.18\.250\.9 dev vx0/],
    },
    {
      name: "a qdisc",
      apply: (ns) => nsExec(ns, ["tc", "qdisc", "add", "dev", "vx0", "root", "pfifo", "limit", "10"]),
      expect: [/^qdiscs: \+ dev vx0 pfifo /, /^qdiscs: - dev vx0 noqueue/],
    },
    {
      name: "a removed tc filter",
      apply: (ns) => nsExec(ns, ["tc", "filter", "del", "dev", "eth0", "egress"]),
      expect: [/^tc filters: - dev eth0 egress .* bpf nat_egress tag [0-9a-f]+ direct-action$/],
      exact: true,
    },
    {
      name: "a flipped sysctl",
      apply: (ns) => nsExec(ns, ["sysctl", "-qw", "net.ipv4.conf.eth0.forwarding=0"]),
      expect: [/^sysctl net\.ipv4\.conf\.eth0\.forwarding: 1 → 0$/],
    },
    {
      name: "a per-device sysctl",
      apply: (ns) => nsExec(ns, ["sysctl", "-qw", "net.ipv4.conf.tap0.proxy_arp=1"]),
      expect: [/^sysctl net\.ipv4\.conf\.tap0\.proxy_arp: 0 → 1$/],
      exact: true,
    },
    {
      name: "an MTU",
      apply: (ns) => nsExec(ns, ["ip", "link", "set", "eth0", "mtu", "1280"]),
      expect: [/^links eth0 mtu: \d+ → 1280$/],
    },
    {
      name: "the tap's MAC",
      apply: (ns) => nsExec(ns, ["ip", "link", "set", "tap0", "address", "02:00:00:00:00:01"]),
      expect: [/^links tap0 address: 02:00:a9:fe:00:16 → 02:00:00:00:00:01$/],
      exact: true,
    },
    {
      name: "eth0's MAC",
      apply: (ns) => nsExec(ns, ["ip", "link", "set", "eth0", "address", "02:00:00:00:00:02"]),
      expect: [/^links eth0 address: <slot-mac> → 02:00:00:00:00:02$/],
    },
    {
      name: "a promiscuous flag",
      apply: (ns) => nsExec(ns, ["ip", "link", "set", "eth0", "promisc", "on"]),
      expect: [/^links eth0 flags: .* → .*promisc/],
    },
    {
      name: "an alternative name",
      apply: (ns) => nsExec(ns, ["ip", "link", "property", "add", "dev", "eth0", "altname", "tenantname"]),
      expect: [/^links eth0 altnames: \+ tenantname$/],
    },
    {
      name: "an extra link",
      apply: (ns) => nsExec(ns, ["ip", "link", "add", "xb0", "type", "bridge"]),
      expect: [/^links: \+ xb0 \(kind bridge/],
    },
    {
      name: "a nexthop",
      apply: (ns) => nsExec(ns, ["ip", "nexthop", "add", "id", "7", "dev", "eth0"]),
      expect: [/^nexthops: \+ id 7 dev eth0/],
    },
    {
      name: "an IPsec policy",
      apply: (ns) => nsExec(ns, ["ip", "xfrm", "policy", "add", "src", "10.0.0.1/32", "dst", "10.0.0.2/32", "dir", "out", "priority", "5"]),
      expect: [/^xfrm policies: \+ dir out allow priority 5 .*src 10\.0\.0\.1\/32 dst 10\.0\.0\.2\/32/],
      exact: true,
    },
    {
      name: "a conntrack entry",
      apply: (ns) => nsExec(ns, ["conntrack", "-I", "-p", "udp", "-s", "10.0.0.1", "-d", "10.0.0.2", "--sport", "1000", "--dport", "2000", "-t", "100"]),
      expect: [/^conntrack count: 0 → 1$/, /^conntrack: \+ udp 10\.0\.0\.1:1000 → 10\.0\.0\.2:2000$/],
    },
    {
      name: "the eBPF map entry (a tenant network left on the slot)",
      apply: () => dp!.setTenant(3, { vni: 42, cidr: "10.77.0.0/16" }),
      expect: [/^bpf: \+ <slot-mac> outside <outside-addr> vni 42 bound to eth0$/, /^bpf: - <slot-mac> outside <outside-addr> vni 0 bound to eth0$/, /^routes: \+ 10\.77\.0\.0\/16 dev vx0/],
    },
    {
      name: "a listening socket and its process",
      apply: async (ns, bg) => {
        bg(["ip", "netns", "exec", ns, "socat", "TCP-LISTEN:8080,bind=127.0.0.1,reuseaddr,fork", "EXEC:/bin/cat"]);
      },
      expect: [/^sockets: \+ tcp 127\.0\.0\.1:8080 LISTEN$/, /^processes: \+ \d+ socat$/],
      live: true,
    },
    {
      name: "a UDP socket held from outside the namespace",
      apply: async (ns, bg) => {
        // The process enters, binds, and leaves: only its socket stays in the slot.
        const py = `import ctypes,os,socket,time
libc=ctypes.CDLL(None,use_errno=True)
home=os.open("/proc/self/ns/net",os.O_RDONLY)
assert libc.setns(os.open("/run/netns/${ns}",os.O_RDONLY),0x40000000)==0
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(("0.0.0.0",5353))
assert libc.setns(home,0x40000000)==0
print("bound",flush=True); time.sleep(1000)`;
        bg(["python3", "-c", py]);
      },
      expect: [/^sockets: \+ udp 0\.0\.0\.0:5353 unconnected$/],
      exact: true,
    },
    {
      name: "a process living in the namespace",
      apply: (ns, bg) => void bg(["ip", "netns", "exec", ns, "sleep", "1000"]),
      expect: [/^processes: \+ \d+ sleep$/],
      exact: true,
      live: true,
    },
    {
      name: "tap0 held open by a process that went back to the root namespace",
      apply: (ns, bg) => void bg(["python3", "-c", TAP_HOLDER, `/run/netns/${ns}`, "leave"]),
      // Only the holder: carrier, RUNNING, LOWER_UP and attached queues are left out of links and routes.
      expect: [/^tap holders: \+ tap0: held by \d+ python/],
      exact: true,
      live: true,
    },
    {
      name: "tap0 held open from inside the namespace",
      apply: (ns, bg) => void bg(["ip", "netns", "exec", ns, "python3", "-c", TAP_HOLDER, `/run/netns/${ns}`, "stay"]),
      expect: [/^tap holders: \+ tap0: held by \d+ python/, /^processes: \+ \d+ python/],
      live: true,
    },
  ];

  for (const c of cases) {
    it(`sees ${c.name}, and a rebuild restores the golden fingerprint`, async () => {
      const ns = dp!.addressing(3).name;
      const bg = (args: string[]): ChildProcess => {
        const child = spawn(args[0]!, args.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
        children.push(child);
        return child;
      };
      try {
        await c.apply(ns, bg);
        let diff: string[] = [];
        // Background processes need a moment to exec, bind or attach.
        await waitFor(() => {
          diff = diffFingerprints(golden, fingerprint(3));
          return c.expect.every((re) => diff.some((line) => re.test(line)));
        }, 5000).catch(() => undefined);
        for (const re of c.expect) assert.ok(diff.some((line) => re.test(line)), `expected ${re} in:\n${diff.join("\n")}`);
        if (c.exact) assert.equal(diff.length, c.expect.length, `unexpected extra differences:\n${diff.join("\n")}`);
        const reason = liveHolders(fingerprint(3));
        if (c.live) assert.ok(reason, "liveHolders reports the holder");
        else assert.equal(reason, undefined);
      } finally {
        await stopChildren();
        dp!.destroySlot(3);
        dp!.buildSlot(3);
      }
      assert.deepEqual(diffFingerprints(golden, fingerprint(3)), []);
    });
  }

  it("per-device sysctls from the link dump equal their files, fresh and after a tenant changes each setting of a device", () => {
    const dumpAndFiles = () =>
      dp!.inSlot(3, () => {
        const devices = new Map(inspectNamespace().links.map((l) => [l.name, l.devconf]));
        return { files: readAllNetSysctls(), dump: readAllNetSysctls(undefined, { devices }) };
      });
    const fresh = dumpAndFiles();
    assert.deepEqual(fresh.dump, fresh.files);
    // Most of conf/DEV comes with the link dump (the rest, and neigh/DEV, from files).
    for (const family of ["ipv4", "ipv6"] as const) for (const name of deviceConfNames(family)) assert.ok(fresh.files.has(`net.${family}.conf.tap0.${name}`), `${family} ${name}`);
    // A tenant with the VMM's privileges sets every setting of each device to another value.
    const changed: string[] = [];
    try {
      dp!.inSlot(3, () => {
        for (const [family, dir] of [["ipv4", "conf"], ["ipv6", "conf"], ["ipv4", "neigh"], ["ipv6", "neigh"]] as const) {
          for (const dev of ["lo", "eth0", "tap0", "vx0"]) {
            const prefix = `net.${family}.${dir}.${dev}.`;
            for (const name of [...fresh.files.keys()].filter((k) => k.startsWith(prefix)).map((k) => k.slice(prefix.length))) {
              const file = `/proc/sys/net/${family}/${dir}/${dev}/${name}`;
              const now = fresh.files.get(`net.${family}.${dir}.${dev}.${name}`);
              if (now === undefined || !/^-?\d+$/.test(now)) continue;
              // Steps larger than a tick: times are kept in jiffies, and a seconds file and its
              // _ms twin are one setting.
              const n = Number(now);
              for (const next of n === 0 ? ["1", "2"] : n === 1 ? ["0", "2"] : [2 * n, Math.floor(n / 2), n - 1].map(String)) {
                try {
                  fs.writeFileSync(file, `${next}\n`);
                  changed.push(`net.${family}.${dir}.${dev}.${name}`);
                  break;
                } catch {
                  // out of range, or read-only in a slot (mc_forwarding): try the next value
                }
              }
            }
          }
        }
      });
      const after = dumpAndFiles();
      assert.deepEqual(after.dump, after.files);
      const diff = diffFingerprints(golden, fingerprint(3)).join("\n");
      const seen = changed.filter((k) => after.files.get(k) !== fresh.files.get(k));
      // Some writes change nothing visible (e.g. a value the kernel clamps back); most do.
      assert.ok(seen.length > 420, `${seen.length} of ${changed.length} changed; unchanged: ${changed.filter((k) => !seen.includes(k)).join(" ")}`);
      // The kernel puts some settings back by itself a moment later: a NETDEV_CHANGE (the
      // link watcher runs up to a second after a device event) resets conf/DEV/mtu of IPv6
      // to the device's MTU. A proof cannot be faulted for a value that is back: only what
      // is still changed after it is required of it.
      const stillChanged = () => {
        const now = dumpAndFiles().files;
        return seen.filter((k) => now.get(k) !== fresh.files.get(k));
      };
      for (const k of stillChanged()) assert.ok(diff.includes(`sysctl ${k}:`), `fingerprint misses ${k}`);
      // The proof of a released slot at the default configuration (sysctls read, compared
      // with the reference) sees the same; with --watch-sysctls and no write seen, the
      // settings rtnetlink can also change (the conf arrays, the neighbour parameters).
      const fast = (sysctls: boolean) => {
        const a = dp!.addressing(3);
        const bpfEntry = dp!.bpfSlotEntries().find((e) => e.mac === a.slotMac);
        return diffFingerprints(golden, slotFingerprint({ netnsPath: a.netnsPath, addressing: a, bpfEntry }, undefined, { from: golden, sysctls })).join("\n");
      };
      const byDefault = fast(false);
      for (const k of stillChanged()) assert.ok(byDefault.includes(`sysctl ${k}:`), `the default proof misses ${k}`);
      const watched = fast(true);
      const netlinkSettable = (k: string) => /^net\.ipv[46]\.neigh\./.test(k) || deviceConfNames(k.startsWith("net.ipv4.") ? "ipv4" : "ipv6").includes(k.split(".").pop()!);
      const required = stillChanged().filter(netlinkSettable);
      assert.ok(required.length > 300, `${required.length} netlink-settable changes still in place`);
      for (const k of required) assert.ok(watched.includes(`sysctl ${k}:`), `the watched proof misses ${k}`);
    } finally {
      dp!.destroySlot(3);
      dp!.buildSlot(3);
    }
    assert.deepEqual(diffFingerprints(golden, fingerprint(3)), []);
  });

  it("a fresh slot's fingerprint does not depend on the other slots' state", () => {
    nsExec(dp!.addressing(3).name, ["ip", "route", "add", "10.9.0.0/16", "dev", "eth0"]);
    try {
      assert.deepEqual(diffFingerprints(golden, fingerprint(0)), []);
    } finally {
      dp!.destroySlot(3);
      dp!.buildSlot(3);
    }
    assert.ok(fs.existsSync(dp!.addressing(3).netnsPath));
  });
});
