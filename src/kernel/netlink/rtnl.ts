// Typed rtnetlink operations over one NETLINK_ROUTE socket in the namespace that was
// current when it was opened. Each operation is one request (or one dump); nothing here
// spawns a process. The operations live by object family, as vishvananda/netlink
// organises them: rtnl/link.ts, addr.ts, route.ts (and nexthops), rule.ts, neigh.ts,
// tc.ts; the message headers are encoded and decoded in rtnl/headers.ts, for these
// operations and for the inspection (inspect.ts) alike.
import { NETLINK_ROUTE, NetlinkSocket } from "./socket.js";
import * as addr from "./rtnl/addr.js";
import * as link from "./rtnl/link.js";
import * as neigh from "./rtnl/neigh.js";
import * as route from "./rtnl/route.js";
import * as rule from "./rtnl/rule.js";
import * as tc from "./rtnl/tc.js";
import type { Address } from "./rtnl/addr.js";
import type { Link, LinkChange, VethSpec, VxlanSpec } from "./rtnl/link.js";
import type { Neighbour } from "./rtnl/neigh.js";
import type { Nexthop, Route, RouteSpec } from "./rtnl/route.js";
import type { RoutingRule } from "./rtnl/rule.js";
import type { Qdisc, TcDirection, TcFilter } from "./rtnl/tc.js";

export * from "./rtnl/consts.js";
export { familyHeader, fromAf } from "./rtnl/headers.js";
export type { Address } from "./rtnl/addr.js";
export type { Link, LinkChange, OperState, VethSpec, VxlanInfo, VxlanSpec } from "./rtnl/link.js";
export type { Neighbour } from "./rtnl/neigh.js";
export type { Nexthop, Route, RouteSpec } from "./rtnl/route.js";
export type { RoutingRule } from "./rtnl/rule.js";
export type { Qdisc, TcDirection, TcFilter } from "./rtnl/tc.js";

type BpfFilterOptions = { priority?: number; handle?: number };

export class Rtnl {
  private constructor(private readonly sock: NetlinkSocket) {}

  /** Opens a NETLINK_ROUTE socket in the calling thread's current network namespace. */
  static open(): Rtnl {
    // Strict checking lets the kernel filter dumps (routes by table, neighbours by device).
    return new Rtnl(NetlinkSocket.open(NETLINK_ROUTE, { strict: true }));
  }

  close(): void {
    this.sock.close();
  }

  // ── links (rtnl/link.ts) ──
  links(): Link[] {
    return link.links(this.sock);
  }
  linkByName(name: string): Link | undefined {
    return link.linkByName(this.sock, name);
  }
  createVeth(spec: VethSpec): void {
    link.createVeth(this.sock, spec);
  }
  createVxlan(spec: VxlanSpec): void {
    link.createVxlan(this.sock, spec);
  }
  createGeneve(spec: Parameters<typeof link.createGeneve>[1]): void {
    link.createGeneve(this.sock, spec);
  }
  createDummy(spec: Parameters<typeof link.createDummy>[1]): void {
    link.createDummy(this.sock, spec);
  }
  setLink(index: number, change: LinkChange): void {
    link.setLink(this.sock, index, change);
  }
  deleteLink(index: number): void {
    link.deleteLink(this.sock, index);
  }

  // ── addresses (rtnl/addr.ts) ──
  addAddress(index: number, ip: string, prefixLength: number, opts: addr.AddressOptions = {}): void {
    addr.addAddress(this.sock, index, ip, prefixLength, opts);
  }
  deleteAddress(index: number, ip: string, prefixLength: number): void {
    addr.deleteAddress(this.sock, index, ip, prefixLength);
  }
  addresses(): Address[] {
    return addr.addresses(this.sock);
  }

  // ── routes and nexthops (rtnl/route.ts) ──
  addRoute(spec: RouteSpec): void {
    route.addRoute(this.sock, spec);
  }
  deleteRoute(spec: RouteSpec): void {
    route.deleteRoute(this.sock, spec);
  }
  routes(family: 4 | 6, table?: number): Route[] {
    return route.routes(this.sock, family, table);
  }
  nexthops(): Nexthop[] {
    return route.nexthops(this.sock);
  }
  deleteNexthop(id: number): void {
    route.deleteNexthop(this.sock, id);
  }

  // ── policy rules (rtnl/rule.ts) ──
  rules(family: 4 | 6): RoutingRule[] {
    return rule.rules(this.sock, family);
  }
  deleteRule(r: RoutingRule): void {
    rule.deleteRule(this.sock, r);
  }

  // ── neighbours (rtnl/neigh.ts) ──
  neighbours(family?: 4 | 6, index?: number): Neighbour[] {
    return neigh.neighbours(this.sock, family, index);
  }
  deleteNeighbour(n: Pick<Neighbour, "family" | "index" | "address">): void {
    neigh.deleteNeighbour(this.sock, n);
  }
  flushNeighbours(index?: number): void {
    neigh.flushNeighbours(this.sock, index);
  }

  // ── tc (rtnl/tc.ts) ──
  addQdiscClsact(index: number): void {
    tc.addQdiscClsact(this.sock, index);
  }
  deleteQdiscClsact(index: number): void {
    tc.deleteQdiscClsact(this.sock, index);
  }
  qdiscs(): Qdisc[] {
    return tc.qdiscs(this.sock);
  }
  addBpfFilter(index: number, direction: TcDirection, progFd: number, name: string, opts: BpfFilterOptions = {}): void {
    tc.addBpfFilter(this.sock, index, direction, progFd, name, opts);
  }
  replaceBpfFilter(index: number, direction: TcDirection, progFd: number, name: string, opts: BpfFilterOptions = {}): void {
    tc.replaceBpfFilter(this.sock, index, direction, progFd, name, opts);
  }
  filters(index: number, direction: TcDirection): TcFilter[] {
    return tc.filters(this.sock, index, direction);
  }
  deleteFilters(index: number, direction: TcDirection): void {
    tc.deleteFilters(this.sock, index, direction);
  }
}
