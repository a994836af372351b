// rtnetlink and ctnetlink operations against the real kernel, inside throwaway namespaces.
// Runs as root. Every object lives in namespaces named with a random prefix; the
// namespaces (and with them every device, route, rule, qdisc and nft table) go in after().
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createNetns, deleteNetns, netnsPath, openNetns, withNetns } from "../../src/kernel/netns.js";
import * as libc from "../../src/kernel/libc.js";
import { NUD_NOARP, NUD_PERMANENT, Rtnl, RT_SCOPE_LINK, type Link } from "../../src/kernel/netlink/rtnl.js";
import { NetlinkError } from "../../src/kernel/netlink/socket.js";
import { conntrackCount, conntrackEntries, conntrackFlush } from "../../src/kernel/netlink/conntrack.js";
import { BPF_PROG_TYPE_SCHED_CLS, loadTrivialProgram } from "../support/bpf-prog.js";

const prefix = `t${Math.random().toString(36).slice(2, 7).padEnd(5, "0")}`;
const NS_A = `${prefix}a`;
const NS_B = `${prefix}b`;
const NS_PERF = `${prefix}p`;

// ── helpers ──

function run(cmd: string, args: string[], input?: string): string {
  const r = spawnSync(cmd, args, { encoding: "utf8", input });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")}: ${r.stderr || r.stdout}`);
  return r.stdout;
}

/** `ip -n NS -j ARGS` parsed. */
// eslint-disable-next-line @typescript-eslint/no-unnecessary-type-parameters -- a typed JSON reader: the caller names the shape
function ipj<T = Record<string, unknown>[]>(ns: string, args: string[]): T {
  const out = run("ip", ["-n", ns, "-j", ...args]);
  return (out.trim() === "" ? [] : JSON.parse(out)) as T;
}

function ip(ns: string, args: string[]): void {
  run("ip", ["-n", ns, ...args]);
}

function tcj(ns: string, args: string[]): Record<string, unknown>[] {
  const out = run("ip", ["netns", "exec", ns, "tc", "-j", ...args]);
  return (out.trim() === "" ? [] : JSON.parse(out)) as Record<string, unknown>[];
}

function linkNamed(rtnl: Rtnl, name: string): Link {
  const l = rtnl.linkByName(name);
  assert.ok(l, `link ${name} exists`);
  return l;
}

// ── fixtures ──

let rtA: Rtnl;
let rtB: Rtnl;
let fdB = -1;
const progFds: number[] = [];

before(() => {
  rtA = createNetns(NS_A, () => Rtnl.open());
  rtB = createNetns(NS_B, () => Rtnl.open());
  fdB = openNetns(NS_B);
  rtA.setLink(1, { up: true });
  rtB.setLink(1, { up: true });
});

after(() => {
  rtA?.close();
  rtB?.close();
  if (fdB >= 0) libc.close(fdB);
  for (const fd of progFds) libc.close(fd);
  for (const ns of [NS_A, NS_B, NS_PERF]) deleteNetns(ns);
});

describe("rtnl (integration)", () => {
  it("creates a veth whose peer appears directly in the other namespace, both ends up", () => {
    rtA.createVeth({ name: "va0", peerName: "vb0", peerNetnsFd: fdB, mac: "02:6e:00:00:00:01", peerMac: "02:6e:00:00:00:02", mtu: 1400, up: true, peerUp: true });
    const inA = ipj<{ ifname: string; mtu: number; address: string; flags: string[] }[]>(NS_A, ["link", "show"]);
    const inB = ipj<{ ifname: string; mtu: number; address: string; flags: string[] }[]>(NS_B, ["link", "show"]);
    assert.deepEqual(inA.map((l) => l.ifname).sort(), ["lo", "va0"]);
    assert.deepEqual(inB.map((l) => l.ifname).sort(), ["lo", "vb0"]);
    const va = inA.find((l) => l.ifname === "va0")!;
    const vb = inB.find((l) => l.ifname === "vb0")!;
    assert.equal(va.mtu, 1400);
    assert.equal(vb.mtu, 1400);
    assert.equal(va.address, "02:6e:00:00:00:01");
    assert.equal(vb.address, "02:6e:00:00:00:02");
    assert.ok(va.flags.includes("UP") && va.flags.includes("LOWER_UP"));
    assert.ok(vb.flags.includes("UP") && vb.flags.includes("LOWER_UP"));

    const l = linkNamed(rtA, "va0");
    assert.equal(l.kind, "veth");
    assert.equal(l.mtu, 1400);
    assert.equal(l.mac, "02:6e:00:00:00:01");
    assert.equal(l.up, true);
    assert.equal(l.lowerUp, true);
    assert.equal(l.operstate, "UP");
    assert.equal(l.qdisc, "noqueue");
    assert.equal(typeof l.linkNetnsId, "number");
    assert.deepEqual(rtA.links().map((x) => x.name).sort(), ["lo", "va0"]);
    assert.equal(rtA.linkByName("vb0"), undefined);
    assert.equal(rtA.linkByName("nosuchdev"), undefined);
  });

  it("creates a veth pair in one namespace, peer up only", () => {
    rtA.createVeth({ name: "vl0", peerName: "vl1", peerUp: true });
    const [l0, l1] = [linkNamed(rtA, "vl0"), linkNamed(rtA, "vl1")];
    assert.equal(l0.up, false);
    assert.equal(l1.up, true);
    assert.equal(l1.linkIndex, l0.index);
    assert.throws(() => rtA.createVeth({ name: "vl0", peerName: "vl2" }), (e: unknown) => e instanceof NetlinkError && e.errno === libc.EEXIST);
    rtA.deleteLink(l0.index);
    rtA.deleteLink(l0.index); // idempotent
    assert.equal(rtA.linkByName("vl1"), undefined);
  });

  it("creates a VXLAN device with VNI 0 and a unicast remote", () => {
    const va = linkNamed(rtA, "va0");
    rtA.createVxlan({ name: "vx0", vni: 0, remote: "10.99.0.1", local: "10.0.0.1", port: 4789, linkIndex: va.index, learning: false, mtu: 1350, up: false });
    const [d] = ipj<{ ifname: string; mtu: number; linkinfo: { info_kind: string; info_data: Record<string, unknown> } }[]>(NS_A, ["-d", "link", "show", "vx0"]);
    assert.equal(d!.linkinfo.info_kind, "vxlan");
    assert.equal(d!.linkinfo.info_data.id, 0);
    assert.equal(d!.linkinfo.info_data.remote, "10.99.0.1");
    assert.equal(d!.linkinfo.info_data.local, "10.0.0.1");
    assert.equal(d!.linkinfo.info_data.port, 4789);
    assert.equal(d!.linkinfo.info_data.learning, false);
    assert.equal(d!.mtu, 1350);
    const vx = linkNamed(rtA, "vx0");
    assert.equal(vx.kind, "vxlan");
    assert.deepEqual(vx.vxlan, { vni: 0, remote: "10.99.0.1", local: "10.0.0.1", port: 4789, link: va.index, learning: false });
  });

  it("creates a dummy device where the kernel has CONFIG_DUMMY", (t) => {
    try {
      rtA.createDummy({ name: "dm0" });
    } catch (err) {
      assert.ok(err instanceof NetlinkError);
      assert.equal(err.errno, 95); // EOPNOTSUPP: "Unknown device type"
      t.skip("no dummy driver in this kernel");
      return;
    }
    const dm = linkNamed(rtA, "dm0");
    assert.equal(dm.kind, "dummy");
    rtA.deleteLink(dm.index);
  });

  it("sets MTU, MAC and up/down in one request and reports the kernel's extack text", () => {
    const vx = linkNamed(rtA, "vx0");
    rtA.setLink(vx.index, { up: true, mtu: 1300, mac: "02:11:22:33:44:55" });
    let l = linkNamed(rtA, "vx0");
    assert.equal(l.up, true);
    assert.equal(l.mtu, 1300);
    assert.equal(l.mac, "02:11:22:33:44:55");
    rtA.setLink(vx.index, { up: false });
    l = linkNamed(rtA, "vx0");
    assert.equal(l.up, false);
    assert.equal(l.mtu, 1300);
    assert.throws(
      () => rtA.setLink(vx.index, { mtu: 10 }),
      (e: unknown) => e instanceof NetlinkError && e.errno === libc.EINVAL && /mtu/i.test(e.extack ?? ""),
    );
  });

  it("adds, lists and deletes IPv4 and IPv6 addresses", () => {
    const va = linkNamed(rtA, "va0");
    rtA.addAddress(va.index, "10.0.0.1", 31);
    rtA.addAddress(va.index, "10.1.0.1", 32, { peer: "10.1.0.2" });
    rtA.addAddress(va.index, "fd00:1::1", 64);
    const shown = ipj<{ ifname: string; addr_info: { family: string; local: string; prefixlen: number; address?: string }[] }[]>(NS_A, ["addr", "show", "dev", "va0"]);
    const infos = shown[0]!.addr_info;
    assert.ok(infos.some((a) => a.family === "inet" && a.local === "10.0.0.1" && a.prefixlen === 31));
    assert.ok(infos.some((a) => a.local === "10.1.0.1" && a.address === "10.1.0.2"));
    assert.ok(infos.some((a) => a.family === "inet6" && a.local === "fd00:1::1"));

    const mine = rtA.addresses().filter((a) => a.index === va.index);
    assert.deepEqual(
      mine.filter((a) => a.family === 4).map((a) => [a.address, a.prefixLength, a.peer]),
      [
        ["10.0.0.1", 31, undefined],
        ["10.1.0.1", 32, "10.1.0.2"],
      ],
    );
    const v6 = mine.filter((a) => a.family === 6).map((a) => `${a.address}/${a.prefixLength}`);
    assert.ok(v6.includes("fd00:1::1/64"), v6.join(","));
    assert.ok(v6.some((a) => a.startsWith("fe80::")), "link-local listed");
    assert.ok(rtA.addresses().some((a) => a.index === 1 && a.address === "127.0.0.1" && a.scope === 254));

    assert.throws(() => rtA.addAddress(va.index, "10.0.0.1", 31), (e: unknown) => e instanceof NetlinkError && e.errno === libc.EEXIST);
    rtA.addAddress(va.index, "10.0.0.1", 31, { replace: true });
    rtA.deleteAddress(va.index, "10.1.0.1", 32);
    rtA.deleteAddress(va.index, "10.1.0.1", 32); // idempotent
    rtA.deleteAddress(va.index, "fd00:1::1", 64);
    const after = rtA.addresses().filter((a) => a.index === va.index && !a.address.startsWith("fe80"));
    assert.deepEqual(after.map((a) => a.address), ["10.0.0.1"]);
  });

  it("adds, replaces, lists and deletes routes with protocol 222 in main and other tables", () => {
    const va = linkNamed(rtA, "va0");
    rtB.addAddress(linkNamed(rtB, "vb0").index, "10.0.0.0", 31);
    rtA.addRoute({ dst: "10.50.0.0/16", gateway: "10.0.0.0", protocol: 222 });
    rtA.addRoute({ dst: "10.51.0.7/32", oif: va.index, protocol: 222, src: "10.0.0.1" });
    rtA.addRoute({ dst: "default", gateway: "10.0.0.0", oif: va.index, protocol: 222, table: 100 });
    rtA.addRoute({ dst: "fd00:5::/64", oif: va.index, protocol: 222 });

    const shown = ipj<{ dst: string; gateway?: string; table?: string; prefsrc?: string }[]>(NS_A, ["-4", "route", "show", "table", "all", "proto", "222"]);
    assert.deepEqual(
      shown.map((r) => `${r.dst}|${r.gateway ?? ""}|${r.table ?? "main"}|${r.prefsrc ?? ""}`).sort(),
      ["10.50.0.0/16|10.0.0.0|main|", "10.51.0.7||main|10.0.0.1", "default|10.0.0.0|100|"],
    );

    const all = rtA.routes(4).filter((r) => r.protocol === 222);
    assert.deepEqual(
      all.map((r) => `${r.dst}|${r.gateway ?? ""}|${r.oif ?? ""}|${r.table}|${r.scope}|${r.prefsrc ?? ""}`).sort(),
      [`10.50.0.0/16|10.0.0.0|${va.index}|254|0|`, `10.51.0.7/32||${va.index}|254|${RT_SCOPE_LINK}|10.0.0.1`, `default|10.0.0.0|${va.index}|100|0|`].sort(),
    );
    assert.deepEqual(rtA.routes(4, 100).map((r) => r.dst), ["default"]);
    assert.deepEqual(rtA.routes(4, 4242), []);
    assert.ok(rtA.routes(4).some((r) => r.table === 255 && r.type === 2), "local table included");
    assert.ok(rtA.routes(6).some((r) => r.dst === "fd00:5::/64" && r.protocol === 222));

    assert.throws(() => rtA.addRoute({ dst: "10.50.0.0/16", gateway: "10.0.0.0", protocol: 222 }), (e: unknown) => e instanceof NetlinkError && e.errno === libc.EEXIST);
    rtA.addRoute({ dst: "10.50.0.0/16", oif: va.index, protocol: 222, replace: true });
    const replaced = rtA.routes(4, 254).filter((r) => r.dst === "10.50.0.0/16");
    assert.equal(replaced.length, 1);
    assert.equal(replaced[0]!.gateway, undefined);

    rtA.deleteRoute({ dst: "10.50.0.0/16", protocol: 222 });
    rtA.deleteRoute({ dst: "10.50.0.0/16", protocol: 222 }); // idempotent
    rtA.deleteRoute({ dst: "10.51.0.7/32", oif: va.index });
    rtA.deleteRoute({ dst: "default", table: 100 });
    rtA.deleteRoute({ dst: "fd00:5::/64", oif: va.index });
    assert.deepEqual(ipj(NS_A, ["-4", "route", "show", "table", "all", "proto", "222"]), []);
    assert.deepEqual(ipj(NS_A, ["-6", "route", "show", "table", "all", "proto", "222"]), []);
  });

  it("lists and deletes policy rules", () => {
    ip(NS_A, ["rule", "add", "priority", "1000", "from", "10.9.0.0/16", "iif", "va0", "fwmark", "0x10/0xff", "lookup", "100"]);
    ip(NS_A, ["-6", "rule", "add", "priority", "1001", "to", "fd00::/8", "oif", "va0", "lookup", "101"]);
    const r4 = rtA.rules(4).find((r) => r.priority === 1000);
    assert.deepEqual(r4, { family: 4, priority: 1000, table: 100, action: 1, src: "10.9.0.0/16", iifname: "va0", fwmark: 0x10, fwmask: 0xff });
    const r6 = rtA.rules(6).find((r) => r.priority === 1001);
    assert.deepEqual(r6, { family: 6, priority: 1001, table: 101, action: 1, dst: "fd00::/8", oifname: "va0" });
    assert.ok(rtA.rules(4).some((r) => r.priority === 32766 && r.table === 254));
    rtA.deleteRule(r4);
    rtA.deleteRule(r6);
    rtA.deleteRule(r6); // idempotent
    assert.equal(ipj<unknown[]>(NS_A, ["rule", "show", "priority", "1000"]).length, 0);
    assert.equal(ipj<unknown[]>(NS_A, ["-6", "rule", "show", "priority", "1001"]).length, 0);
    assert.ok(rtA.rules(4).some((r) => r.priority === 32766), "main rule untouched");
  });

  it("lists and deletes nexthops", () => {
    ip(NS_A, ["nexthop", "add", "id", "71", "via", "10.0.0.0", "dev", "va0"]);
    ip(NS_A, ["nexthop", "add", "id", "72", "blackhole"]);
    ip(NS_A, ["nexthop", "add", "id", "73", "group", "71"]);
    const nhs = rtA.nexthops();
    const va = linkNamed(rtA, "va0");
    assert.deepEqual(nhs.find((n) => n.id === 71), { id: 71, family: 4, protocol: nhs.find((n) => n.id === 71)!.protocol, oif: va.index, gateway: "10.0.0.0", blackhole: false, fdb: false });
    assert.equal(nhs.find((n) => n.id === 72)?.blackhole, true);
    assert.deepEqual(nhs.find((n) => n.id === 73)?.group, [{ id: 71, weight: 1 }]);
    rtA.deleteNexthop(73);
    rtA.deleteNexthop(72);
    rtA.deleteNexthop(71);
    rtA.deleteNexthop(71); // idempotent
    assert.deepEqual(rtA.nexthops(), []);
  });

  it("lists, deletes and flushes neighbours, keeping NOARP entries", () => {
    const va = linkNamed(rtA, "va0");
    ip(NS_A, ["neigh", "add", "10.0.0.0", "lladdr", "02:6e:00:00:00:02", "dev", "va0", "nud", "permanent"]);
    ip(NS_A, ["neigh", "add", "10.0.0.5", "lladdr", "02:6e:00:00:00:05", "dev", "va0", "nud", "stale"]);
    ip(NS_A, ["neigh", "add", "10.0.0.6", "lladdr", "02:6e:00:00:00:06", "dev", "va0", "nud", "noarp"]);
    ip(NS_A, ["neigh", "add", "fd00:1::9", "lladdr", "02:6e:00:00:00:09", "dev", "va0", "nud", "reachable"]);
    ip(NS_A, ["neigh", "add", "10.0.0.7", "lladdr", "02:6e:00:00:00:07", "dev", "va0", "nud", "reachable"]);
    const all = rtA.neighbours().filter((n) => n.index === va.index);
    const byAddr = new Map(all.map((n) => [n.address, n]));
    assert.equal(byAddr.get("10.0.0.0")?.mac, "02:6e:00:00:00:02");
    assert.equal(byAddr.get("10.0.0.0")?.state, NUD_PERMANENT);
    assert.equal(byAddr.get("10.0.0.6")?.state, NUD_NOARP);
    assert.equal(byAddr.get("fd00:1::9")?.family, 6);
    assert.ok(rtA.neighbours(4).every((n) => n.family === 4));
    assert.ok(rtA.neighbours(6).some((n) => n.address === "fd00:1::9"));

    rtA.deleteNeighbour(byAddr.get("10.0.0.7")!);
    rtA.deleteNeighbour(byAddr.get("10.0.0.7")!); // idempotent
    assert.equal(rtA.neighbours(4).some((n) => n.address === "10.0.0.7"), false);

    rtA.flushNeighbours(va.index);
    const left = ipj<{ dst: string; state: string[] }[]>(NS_A, ["neigh", "show", "dev", "va0", "nud", "all"]);
    assert.ok(left.every((n) => n.state.includes("NOARP")), JSON.stringify(left));
    assert.ok(left.some((n) => n.dst === "10.0.0.6"));
    rtA.flushNeighbours(); // only NOARP entries (ours, multicast ones) remain: no error
    const kept = rtA.neighbours();
    assert.ok(kept.every((n) => (n.state & NUD_NOARP) !== 0));
    assert.ok(kept.some((n) => n.address === "10.0.0.6"));
    ip(NS_A, ["neigh", "del", "10.0.0.6", "dev", "va0"]);
  });

  it("adds clsact and direct-action BPF filters, replaces them atomically and deletes them", () => {
    const va = linkNamed(rtA, "va0");
    rtA.addQdiscClsact(va.index);
    rtA.addQdiscClsact(va.index); // EEXIST is fine
    assert.ok(rtA.qdiscs().some((q) => q.index === va.index && q.kind === "clsact" && q.handle === 0xffff0000 && q.parent === 0xfffffff1));
    assert.ok(tcj(NS_A, ["qdisc", "show", "dev", "va0"]).some((q) => q.kind === "clsact"));

    const p1 = loadTrivialProgram(BPF_PROG_TYPE_SCHED_CLS, "tc_ok");
    const p2 = loadTrivialProgram(BPF_PROG_TYPE_SCHED_CLS, "tc_ok2");
    progFds.push(p1, p2);
    rtA.addBpfFilter(va.index, "ingress", p1, "nat_ingress");
    rtA.addBpfFilter(va.index, "egress", p1, "nat_egress", { priority: 7, handle: 3 });
    assert.throws(() => rtA.addBpfFilter(va.index, "ingress", p1, "nat_ingress"), (e: unknown) => e instanceof NetlinkError && e.errno === libc.EEXIST);

    const ing = rtA.filters(va.index, "ingress");
    assert.equal(ing.length, 1);
    assert.equal(ing[0]!.kind, "bpf");
    assert.equal(ing[0]!.priority, 1);
    assert.equal(ing[0]!.handle, 1);
    assert.equal(ing[0]!.protocol, 3);
    assert.equal(ing[0]!.bpf?.name, "nat_ingress");
    assert.equal(ing[0]!.bpf?.directAction, true);
    assert.match(ing[0]!.bpf?.tag ?? "", /^[0-9a-f]{16}$/);
    const firstId = ing[0]!.bpf.id!;
    assert.ok(firstId > 0);
    const eg = rtA.filters(va.index, "egress");
    assert.deepEqual(eg.map((f) => [f.priority, f.handle, f.bpf?.name]), [[7, 3, "nat_egress"]]);

    // Cross-check with tc: one filter with options per hook, direct-action, same program id.
    const tcIng = tcj(NS_A, ["filter", "show", "dev", "va0", "ingress"]).filter((f) => f.options !== undefined) as {
      pref: number;
      protocol: string;
      options: { handle: string; bpf_name: string; "direct-action"?: boolean; prog: { id: number } };
    }[];
    assert.equal(tcIng.length, 1);
    assert.equal(tcIng[0]!.pref, 1);
    assert.equal(tcIng[0]!.protocol, "all");
    assert.equal(tcIng[0]!.options.bpf_name, "nat_ingress");
    assert.equal(tcIng[0]!.options["direct-action"], true);
    assert.equal(tcIng[0]!.options.prog.id, firstId);

    rtA.replaceBpfFilter(va.index, "ingress", p2, "nat_ingress2");
    const replaced = rtA.filters(va.index, "ingress");
    assert.equal(replaced.length, 1, "replaced, not added");
    assert.equal(replaced[0]!.handle, 1);
    assert.equal(replaced[0]!.priority, 1);
    assert.equal(replaced[0]!.bpf?.name, "nat_ingress2");
    assert.notEqual(replaced[0]!.bpf?.id, firstId);

    rtA.deleteFilters(va.index, "ingress");
    assert.deepEqual(rtA.filters(va.index, "ingress"), []);
    assert.equal(rtA.filters(va.index, "egress").length, 1);
    rtA.deleteFilters(va.index, "ingress"); // idempotent
    rtA.deleteQdiscClsact(va.index);
    rtA.deleteQdiscClsact(va.index); // idempotent
    assert.equal(rtA.qdiscs().some((q) => q.index === va.index && q.kind === "clsact"), false);
    assert.deepEqual(rtA.filters(va.index, "egress"), []);
  });

  it("counts, lists and flushes conntrack entries of one namespace", () => {
    // A namespace without any conntrack user has an empty table.
    assert.equal(withNetns(netnsPath(NS_B), () => conntrackCount()), 0);
    const table = `${prefix}ct`;
    run("ip", ["netns", "exec", NS_A, "nft", "-f", "-"], `table inet ${table} {\n chain input {\n  type filter hook input priority 0; policy accept;\n  ct state established,related,new accept\n }\n}\n`);
    try {
      run("ip", ["netns", "exec", NS_B, "ping", "-c", "1", "-W", "2", "10.0.0.1"]);
      const count = withNetns(netnsPath(NS_A), () => conntrackCount());
      assert.ok(count >= 1, `count ${count}`);
      assert.equal(count, Number(run("ip", ["netns", "exec", NS_A, "conntrack", "-C"]).trim()));
      const entries = withNetns(netnsPath(NS_A), () => conntrackEntries());
      assert.ok(entries.some((e) => e.family === 4 && e.proto === 1 && e.src === "10.0.0.0" && e.dst === "10.0.0.1"), JSON.stringify(entries));

      run("ip", ["netns", "exec", NS_B, "ping", "-c", "1", "-W", "2", "10.0.0.1"]);
      withNetns(netnsPath(NS_A), () => conntrackFlush());
      assert.equal(withNetns(netnsPath(NS_A), () => conntrackCount()), 0);
      assert.equal(Number(run("ip", ["netns", "exec", NS_A, "conntrack", "-C"]).trim()), 0);
      withNetns(netnsPath(NS_B), () => conntrackFlush()); // nothing there: fine
    } finally {
      run("ip", ["netns", "exec", NS_A, "nft", "delete", "table", "inet", table]);
    }
  });

  it("deletes links idempotently", () => {
    const vx = linkNamed(rtA, "vx0");
    rtA.deleteLink(vx.index);
    rtA.deleteLink(vx.index);
    assert.equal(rtA.linkByName("vx0"), undefined);
  });

  it("measures createVeth + setLink + addAddress per slot (200 iterations)", () => {
    const n = 200;
    const perf = createNetns(NS_PERF, () => Rtnl.open());
    const perfFd = openNetns(NS_PERF);
    try {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < n; i++) {
        // As a slot is built: from inside the slot namespace, eth0 here, its peer in the other.
        rtA.createVeth({ name: `e${i}`, peerName: `${prefix}-${i}`, peerNetnsFd: perfFd, mtu: 1500, mac: `02:6e:00:00:${(i >> 8).toString(16).padStart(2, "0")}:${(i & 255).toString(16).padStart(2, "0")}`, up: true, peerUp: true });
        const l = rtA.linkByName(`e${i}`)!;
        rtA.setLink(l.index, { mtu: 1450 });
        rtA.addAddress(l.index, `10.${200 + (i >> 8)}.${i & 255}.1`, 31);
      }
      const t1 = process.hrtime.bigint();
      const links = perf.links().filter((l) => l.name.startsWith(`${prefix}-`));
      assert.equal(links.length, n);
      assert.ok(links.every((l) => l.up));
      const mine = rtA.links().filter((l) => /^e\d+$/.test(l.name));
      for (const l of mine) rtA.deleteLink(l.index);
      const t2 = process.hrtime.bigint();
      const ms = (a: bigint, b: bigint): string => (Number(b - a) / 1e6 / n).toFixed(3);
      console.log(`rtnl: createVeth(peer in other netns, both up)+linkByName+setLink+addAddress: ${ms(t0, t1)} ms/slot; deleteLink: ${ms(t1, t2)} ms/slot (n=${n})`);
      assert.equal(perf.links().filter((l) => l.name.startsWith(`${prefix}-`)).length, 0);
    } finally {
      perf.close();
      libc.close(perfFd);
    }
  });
});
