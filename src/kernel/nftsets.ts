// nftables set elements over raw nfnetlink (NFT_MSG_NEWSETELEM in one batch), in the
// calling thread's network namespace. Hand-written because it is on the lease request
// path: libnftables parses text and fetches the namespace's ruleset cache on every call
// (0.3 ms for one element, tens of ms for a thousand, measured here), this is one
// datagram and one ack. Only what set elements need: no rules, no other objects.
import { Attrs, attrBytes, attrNested, attrString, attrU32be, encodeMessage, NLM_F_CREATE } from "./netlink/codec.js";
import { NETLINK_NETFILTER, NetlinkSocket } from "./netlink/socket.js";

const NFNL_SUBSYS_NFTABLES = 10;
const NFNL_MSG_BATCH_BEGIN = 0x10;
const NFNL_MSG_BATCH_END = 0x11;
const NFT_MSG_NEWSETELEM = 12;
const NFT_MSG_DELSETELEM = 14;
const NFTA_SET_ELEM_LIST_TABLE = 1;
const NFTA_SET_ELEM_LIST_SET = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS = 3;
const NFTA_LIST_ELEM = 1;
const NFTA_SET_ELEM_KEY = 1;
const NFTA_SET_ELEM_FLAGS = 3;
const NFTA_SET_ELEM_TIMEOUT = 4;
const NFTA_DATA_VALUE = 1;
const NFT_SET_ELEM_INTERVAL_END = 1;
const IFNAMSIZ = 16;

export const NFPROTO_INET = 1;

const NFT_MSG_GETGEN = 16;
const NFTA_GEN_ID = 1;

/**
 * The calling thread's namespace: its cookie, and the nftables generation id, which every
 * committed nftables transaction in the namespace advances (one round trip; no ruleset).
 */
export function nftGeneration(): { cookie: bigint; gen: number } {
  const sock = NetlinkSocket.open(NETLINK_NETFILTER);
  try {
    const [reply] = sock.query(encodeMessage((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN, 0, [nfgenmsg(0)]), "NFT_MSG_GETGEN");
    if (!reply) throw new Error("NFT_MSG_GETGEN: no answer");
    const gen = new Attrs(reply.payload.subarray(4)).u32be(NFTA_GEN_ID);
    if (gen === undefined) throw new Error("NFT_MSG_GETGEN: no generation id");
    return { cookie: sock.netnsCookie(), gen };
  } finally {
    sock.close();
  }
}

/** Elements per message: a nested attribute's length is 16 bits. */
const ELEMENTS_PER_MESSAGE = 512;

/** One element to add: a key, and whether it ends an interval (rbtree interval sets). */
export interface SetElement {
  key: Buffer;
  intervalEnd?: boolean;
  /**
   * The kernel removes the element after this many ms (a set with flag `timeout`; on an
   * interval, the start element carries it). Adding an element again sets its timeout anew.
   */
  timeoutMs?: number;
}

export interface SetElements {
  table: string;
  set: string;
  elements: SetElement[];
}

function nfgenmsg(family: number, resId = 0): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt8(family, 0);
  b.writeUInt8(0, 1); // NFNETLINK_V0
  b.writeUInt16BE(resId, 2);
  return b;
}

function element(e: SetElement): Buffer {
  const parts = [attrNested(NFTA_SET_ELEM_KEY, [attrBytes(NFTA_DATA_VALUE, e.key)])];
  if (e.intervalEnd) parts.push(attrU32be(NFTA_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END));
  if (e.timeoutMs !== undefined) {
    const ms = Buffer.alloc(8);
    ms.writeBigUInt64BE(BigInt(Math.max(1, Math.round(e.timeoutMs))), 0);
    parts.push(attrBytes(NFTA_SET_ELEM_TIMEOUT, ms));
  }
  return attrNested(NFTA_LIST_ELEM, parts);
}

/**
 * Adds elements to sets of one family in one transaction (all or nothing), like
 * `nft add element` (existing elements are no error). The sets must exist.
 */
export function addSetElements(family: number, batches: readonly SetElements[]): void {
  setElementsTransaction(NFT_MSG_NEWSETELEM, NLM_F_CREATE, family, batches);
}

/** Deletes elements (an interval: its start and end) in one transaction; a missing one fails it. */
export function deleteSetElements(family: number, batches: readonly SetElements[]): void {
  setElementsTransaction(NFT_MSG_DELSETELEM, 0, family, batches);
}

function setElementsTransaction(type: number, flags: number, family: number, batches: readonly SetElements[]): void {
  const msgs: Buffer[] = [];
  for (const b of batches) {
    for (let i = 0; i < b.elements.length; i += ELEMENTS_PER_MESSAGE) {
      const chunk = b.elements.slice(i, i + ELEMENTS_PER_MESSAGE);
      msgs.push(
        encodeMessage((NFNL_SUBSYS_NFTABLES << 8) | type, flags, [
          nfgenmsg(family),
          attrString(NFTA_SET_ELEM_LIST_TABLE, b.table),
          attrString(NFTA_SET_ELEM_LIST_SET, b.set),
          attrNested(NFTA_SET_ELEM_LIST_ELEMENTS, chunk.map(element)),
        ]),
      );
    }
  }
  if (msgs.length === 0) return;
  const begin = encodeMessage(NFNL_MSG_BATCH_BEGIN, 0, [nfgenmsg(0, NFNL_SUBSYS_NFTABLES)]);
  const end = encodeMessage(NFNL_MSG_BATCH_END, 0, [nfgenmsg(0, NFNL_SUBSYS_NFTABLES)]);
  const sock = NetlinkSocket.open(NETLINK_NETFILTER);
  try {
    sock.transaction(begin, msgs, end, "nftables set elements");
  } finally {
    sock.close();
  }
}

/** The elements of an `ipv4_addr` interval set for these CIDRs (non-overlapping, sorted). */
export function ipv4IntervalElements(cidrs: ReadonlyArray<{ base: number; size: number }>): SetElement[] {
  const out: SetElement[] = [];
  for (const c of cidrs) {
    const start = Buffer.alloc(4);
    start.writeUInt32BE(c.base >>> 0, 0);
    out.push({ key: start });
    const endValue = c.base + c.size;
    // An interval reaching 255.255.255.255 has no end element (nft sends none either).
    if (endValue <= 0xffffffff) {
      const end = Buffer.alloc(4);
      end.writeUInt32BE(endValue >>> 0, 0);
      out.push({ key: end, intervalEnd: true });
    }
  }
  return out;
}

/** The elements of host addresses (/32, /128) in an interval set, each removed by the kernel after its `timeoutMs`. */
export function hostIntervalElements(hosts: ReadonlyArray<{ key: Buffer; timeoutMs: number }>): SetElement[] {
  const out: SetElement[] = [];
  for (const { key, timeoutMs } of hosts) {
    const end = Buffer.from(key);
    // key + 1: the first address after the host. The all-ones address has no end (as above).
    let i = end.length - 1;
    while (i >= 0 && end[i] === 0xff) end[i--] = 0;
    out.push({ key, timeoutMs });
    if (i >= 0) {
      end[i]!++;
      out.push({ key: end, intervalEnd: true });
    }
  }
  return out;
}

/** The key of an `ifname` set element: the name, NUL-padded to IFNAMSIZ. */
export function ifnameKey(name: string): Buffer {
  const key = Buffer.alloc(IFNAMSIZ);
  if (Buffer.byteLength(name) >= IFNAMSIZ) throw new Error(`interface name too long: ${name}`);
  key.write(name, 0, "utf8");
  return key;
}

