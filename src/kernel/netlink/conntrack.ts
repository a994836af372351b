// Connection tracking over NETLINK_NETFILTER (ctnetlink), in the calling thread's current
// network namespace: count, list and flush that namespace's table.
import * as libc from "../libc.js";
import { Attrs, encodeMessage, type NlMsg } from "./codec.js";
import { NETLINK_NETFILTER, NetlinkSocket, isNetlinkErrno } from "./socket.js";
import { AF_UNSPEC, EOPNOTSUPP, fromAf } from "./rtnl.js";

const NFNL_SUBSYS_CTNETLINK = 1;
const IPCTNL_MSG_CT_GET = 1;
const IPCTNL_MSG_CT_DELETE = 2;
const IPCTNL_MSG_CT_GET_STATS = 5;
const CTA_STATS_GLOBAL_ENTRIES = 1;
const NFNETLINK_V0 = 0;

const CTA_TUPLE_ORIG = 1;
const CTA_TUPLE_IP = 1;
const CTA_TUPLE_PROTO = 2;
const CTA_IP_V4_SRC = 1;
const CTA_IP_V4_DST = 2;
const CTA_IP_V6_SRC = 3;
const CTA_IP_V6_DST = 4;
const CTA_PROTO_NUM = 1;
const CTA_PROTO_SRC_PORT = 2;
const CTA_PROTO_DST_PORT = 3;

const EPROTONOSUPPORT = 93;

export interface ConntrackEntry {
  family: 4 | 6;
  /** IP protocol number of the original tuple: 1 icmp, 6 tcp, 17 udp, … */
  proto: number;
  src: string;
  dst: string;
  sport?: number;
  dport?: number;
}

/** nfgenmsg: family, version, res_id (big-endian, 0). AF_UNSPEC covers IPv4 and IPv6. */
function nfgenmsg(family = AF_UNSPEC): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt8(family, 0);
  b.writeUInt8(NFNETLINK_V0, 1);
  return b;
}

const ctType = (msg: number): number => (NFNL_SUBSYS_CTNETLINK << 8) | msg;

/** Errors meaning "no conntrack here": the subsystem is not loaded or has no table. */
const ABSENT = [EOPNOTSUPP, EPROTONOSUPPORT, libc.ENOENT];

function withSocket<T>(fn: (sock: NetlinkSocket) => T): T {
  const sock = NetlinkSocket.open(NETLINK_NETFILTER);
  try {
    return fn(sock);
  } finally {
    sock.close();
  }
}

function dumpTable(sock: NetlinkSocket): NlMsg[] {
  try {
    return sock.dump(encodeMessage(ctType(IPCTNL_MSG_CT_GET), 0, [nfgenmsg()]), "IPCTNL_MSG_CT_GET dump");
  } catch (err) {
    if (isNetlinkErrno(err, ...ABSENT)) return [];
    throw err;
  }
}

/** `conntrack -C` for the current namespace (counted from a dump); 0 without conntrack. */
export function conntrackCount(): number {
  return withSocket((sock) => dumpTable(sock).length);
}

/** `conntrack -L` for the current namespace: the original direction of each entry. */
export function conntrackEntries(): ConntrackEntry[] {
  return withSocket((sock) => {
    const out: ConntrackEntry[] = [];
    for (const m of dumpTable(sock)) {
      const e = parseEntry(m);
      if (e) out.push(e);
    }
    return out;
  });
}

/** Entries in the namespace's table, from the kernel's own count (no dump); 0 without conntrack. */
function tableCount(sock: NetlinkSocket): number {
  try {
    const [reply] = sock.query(encodeMessage(ctType(IPCTNL_MSG_CT_GET_STATS), 0, [nfgenmsg()]), "IPCTNL_MSG_CT_GET_STATS");
    return reply ? (new Attrs(reply.payload.subarray(4)).u32be(CTA_STATS_GLOBAL_ENTRIES) ?? 0) : 0;
  } catch (err) {
    if (isNetlinkErrno(err, ...ABSENT)) return 0;
    throw err;
  }
}

/** The namespace's entry count (`conntrack -C`) without a dump: one round trip. */
export function conntrackTableCount(): number {
  return withSocket(tableCount);
}

/**
 * `conntrack -F` for the current namespace; without conntrack it is a no-op. An empty
 * table is left alone: a flush walks the host-wide hash table, whatever the namespace.
 */
export function conntrackFlush(): void {
  withSocket((sock) => {
    if (tableCount(sock) === 0) return;
    // A delete without a tuple flushes the whole table of the socket's namespace.
    sock.request(encodeMessage(ctType(IPCTNL_MSG_CT_DELETE), 0, [nfgenmsg()]), "IPCTNL_MSG_CT_DELETE flush", ABSENT);
  });
}

function parseEntry(m: NlMsg): ConntrackEntry | undefined {
  const family = fromAf(m.payload.readUInt8(0));
  if (family === undefined) return undefined;
  const tuple = new Attrs(m.payload, 4).nested(CTA_TUPLE_ORIG);
  const ip = tuple?.nested(CTA_TUPLE_IP);
  const proto = tuple?.nested(CTA_TUPLE_PROTO);
  if (!ip || !proto) return undefined;
  const src = ip.ip(CTA_IP_V4_SRC) ?? ip.ip(CTA_IP_V6_SRC);
  const dst = ip.ip(CTA_IP_V4_DST) ?? ip.ip(CTA_IP_V6_DST);
  if (src === undefined || dst === undefined) return undefined;
  const entry: ConntrackEntry = { family, proto: proto.u8(CTA_PROTO_NUM) ?? 0, src, dst };
  const sport = proto.u16be(CTA_PROTO_SRC_PORT);
  const dport = proto.u16be(CTA_PROTO_DST_PORT);
  if (sport !== undefined) entry.sport = sport;
  if (dport !== undefined) entry.dport = dport;
  return entry;
}
