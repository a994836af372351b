// Consumers: who is calling (a bearer token, or the caller's uid/gid as the kernel reports
// it with SO_PEERCRED), what they may attach (VNIs), how many slots they may hold (quota),
// and whether they may act on the whole pool (role). Without configured consumers every
// caller is the implicit "default" consumer with today's rights: any VNI, no quota,
// operator actions (whoever can open the socket is trusted, as before).
import { createHash, timingSafeEqual } from "node:crypto";
import { NetslotError } from "../core/errors.js";
import type { ConsumerConfig } from "../core/config-schema.js";

export type Role = "consumer" | "operator";

/** One entry of the config file's `consumers` (its schema: core/config-schema.ts). */
export type { ConsumerConfig } from "../core/config-schema.js";

/** A consumer as the daemon uses it: parsed, with defaults filled in. */
export interface Consumer {
  name: string;
  role: Role;
  /** Sorted, non-overlapping inclusive ranges; null: any VNI. */
  vnis: [number, number][] | null;
  reserved: number;
  /** null: no cap. */
  max: number | null;
  priority: number;
  /** null: every profile the daemon defines (a profile only narrows what a lease can do). */
  profiles: string[] | null;
}

export const DEFAULT_CONSUMER = "default";

/** The implicit consumer of a daemon without `consumers`: today's behaviour. */
export const DEFAULT: Consumer = { name: DEFAULT_CONSUMER, role: "operator", vnis: null, reserved: 0, max: null, priority: 0, profiles: null };

/** What the kernel says about the process at the other end of the socket (SO_PEERCRED). */
export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

const MAX_VNI = 16_777_215;

/** "100-199", "4242" or 4242 → [from, to]; throws a readable message. */
function parseVniRange(value: string | number, who: string): [number, number] {
  const [from, to = from] = String(value).split("-").map(Number) as [number, number?];
  if (from < 1 || to > MAX_VNI || from > to) {
    throw new Error(`${who}: vnis entry ${JSON.stringify(value)} must lie within 1-${MAX_VNI}, low end first`);
  }
  return [from, to];
}

function mergeRanges(ranges: [number, number][]): [number, number][] {
  const sorted = [...ranges].sort((a, b) => a[0] - b[0]);
  const out: [number, number][] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r[0] <= last[1] + 1) last[1] = Math.max(last[1], r[1]);
    else out.push([r[0], r[1]]);
  }
  return out;
}

/**
 * Checks the `consumers` entries the schema (core/config-schema.ts) accepted against each
 * other and the pool size, and returns them parsed. Throws an Error whose message is one
 * line naming the entry at fault.
 */
export function parseConsumers(entries: readonly ConsumerConfig[], poolSize: number): Consumer[] {
  const names = new Set<string>();
  const tokens = new Set<string>();
  const uids = new Map<number, string>();
  const gids = new Map<number, string>();
  const out: Consumer[] = [];
  let reservedTotal = 0;
  for (const c of entries) {
    const name = c.name;
    const who = `consumer "${name}"`;
    if (names.has(name)) throw new Error(`${who} is configured twice`);
    names.add(name);
    if (c.token !== undefined) {
      if (tokens.has(c.token)) throw new Error(`${who} shares its token with another consumer`);
      tokens.add(c.token);
    }
    for (const [key, seen] of [
      ["uids", uids],
      ["gids", gids],
    ] as const) {
      for (const id of c[key] ?? []) {
        const other = seen.get(id);
        if (other !== undefined) throw new Error(`${who}: ${key.slice(0, 3)} ${id} also names consumer "${other}"`);
        seen.set(id, name);
      }
    }
    if (c.token === undefined && c.uids === undefined && c.gids === undefined) {
      throw new Error(`${who} needs a token, uids or gids to be recognised by`);
    }
    const vnis = mergeRanges((c.vnis ?? []).map((v) => parseVniRange(v, who)));
    const reserved = c.quota?.reserved ?? 0;
    const max = c.quota?.max ?? null;
    if (max !== null && reserved > max) throw new Error(`${who}: quota.reserved ${reserved} is larger than quota.max ${max}`);
    reservedTotal += reserved;
    out.push({ name, role: c.role ?? "consumer", vnis, reserved, max, priority: c.priority ?? 0, profiles: c.profiles ?? null });
  }
  if (reservedTotal > poolSize) {
    throw new Error(`consumers reserve ${reservedTotal} slots in total, more than the pool's ${poolSize}`);
  }
  return out;
}

function digest(text: string): Buffer {
  // Hashing first gives equal-length buffers, so timingSafeEqual never leaks the length.
  return createHash("sha256").update(text, "utf8").digest();
}

/** Whether `vni` is in the consumer's sorted ranges (binary search: a list may be long). */
export function mayAttach(consumer: Consumer, vni: number): boolean {
  const ranges = consumer.vnis;
  if (ranges === null) return true;
  let lo = 0;
  let hi = ranges.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const [from, to] = ranges[mid]!;
    if (vni < from) hi = mid - 1;
    else if (vni > to) lo = mid + 1;
    else return true;
  }
  return false;
}

/** Throws network_forbidden unless the consumer may attach `vni`. */
export function checkNetwork(consumer: Consumer, vni: number): void {
  if (!mayAttach(consumer, vni)) {
    throw new NetslotError("network_forbidden", `consumer "${consumer.name}" may not attach VNI ${vni}; the operator lists its VNIs in the config file`);
  }
}

/** Throws forbidden unless the consumer is an operator. */
export function requireOperator(consumer: Consumer, action: string): void {
  if (consumer.role !== "operator") throw new NetslotError("forbidden", `${action} is an operator action; consumer "${consumer.name}" is not an operator`);
}

/** Tells who is calling: by token first, else by the caller's uid, then its gid. */
export class ConsumerDirectory {
  readonly consumers: readonly Consumer[];
  private readonly byName = new Map<string, Consumer>();
  private readonly tokens: { consumer: Consumer; digest: Buffer }[] = [];
  private readonly byUid = new Map<number, Consumer>();
  private readonly byGid = new Map<number, Consumer>();

  constructor(entries: readonly ConsumerConfig[] = [], poolSize = Number.MAX_SAFE_INTEGER) {
    this.consumers = parseConsumers(entries, poolSize);
    entries.forEach((entry, i) => {
      const consumer = this.consumers[i]!;
      this.byName.set(consumer.name, consumer);
      if (entry.token !== undefined) this.tokens.push({ consumer, digest: digest(entry.token) });
      for (const uid of entry.uids ?? []) this.byUid.set(uid, consumer);
      for (const gid of entry.gids ?? []) this.byGid.set(gid, consumer);
    });
  }

  /** Whether consumers are configured (else every caller is DEFAULT). */
  get configured(): boolean {
    return this.consumers.length > 0;
  }

  get(name: string): Consumer | undefined {
    return this.configured ? this.byName.get(name) : name === DEFAULT_CONSUMER ? DEFAULT : undefined;
  }

  /**
   * The consumer for a request: its bearer token when it sends one (a wrong token is never
   * overridden by the uid), else its uid or gid. null when it names none.
   */
  identify(authorization: string | undefined, peer: PeerCredentials | undefined): Consumer | null {
    if (!this.configured) return DEFAULT;
    if (authorization !== undefined) {
      const match = /^Bearer +(\S+) *$/i.exec(authorization);
      if (!match) return null;
      const presented = digest(match[1]!);
      let found: Consumer | null = null;
      // Look at every entry, so the time taken does not say which one matched.
      for (const entry of this.tokens) {
        if (timingSafeEqual(entry.digest, presented) && found === null) found = entry.consumer;
      }
      return found;
    }
    if (peer === undefined) return null;
    return this.byUid.get(peer.uid) ?? this.byGid.get(peer.gid) ?? null;
  }
}
