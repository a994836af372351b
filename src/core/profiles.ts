// Network profiles: what the operator names in the config file and a lease request picks.
// Pure code: parsing and validation (errors name the field), and the egress policy a
// profile compiles to. The kernel side is one eBPF trie of every profile's CIDRs, shared
// by all slots, and a per-slot entry naming the lease's profile (bpf/lib/policy.h).
import { createHash } from "node:crypto";
import { formatCidr, parseCidr, type Cidr } from "./addr.js";
import { NetslotError } from "./errors.js";
import { canonicalDomain } from "./dnsmsg.js";
import type { ProfileConfig, ProfilesConfig } from "./config-schema.js";

export type { BandwidthConfig, EgressPolicyConfig, ProfileConfig, ProfilesConfig } from "./config-schema.js";

/** One direction of a bandwidth as the eBPF token bucket takes it (src/kernel/bpfmaps.ts SlotRate). */
export interface RateLimit {
  bytesPerSecond: number;
  burstBytes: number;
}

export interface Bandwidth {
  egress?: RateLimit;
  ingress?: RateLimit;
}

/** A profile's egress policy in canonical form. */
export interface EgressPolicy {
  /** Canonical CIDRs; undefined = not restricted to a list. */
  allow: string[] | undefined;
  deny: string[];
}

/** A defined profile's policy with the id its CIDRs have in the shared trie. */
export interface ProfilePolicy extends EgressPolicy {
  id: number;
}

/** One entry of the shared trie (src/kernel/bpfmaps.ts PolicyCidr). */
export interface PolicyCidr {
  profile: number;
  base: number;
  prefixLength: number;
  deny: boolean;
}

/** Entries of the shared eBPF trie, every profile's lists together (NETSLOT_MAX_POLICY_CIDRS). */
export const MAX_PROFILE_CIDRS = 262144;

export class ProfileError extends Error {
  override name = "ProfileError";
  /** Where in the config file, e.g. `profiles.mirror.egress.allow[0]`. */
  readonly field: string;
  constructor(field: string, detail: string) {
    super(`${field}: ${detail}`);
    this.field = field;
  }
}

function cidrList(value: readonly string[], field: string): string[] {
  return value.map((item, i) => {
    // A bare address is a /32.
    const text = item.includes("/") ? item : `${item}/32`;
    try {
      return formatCidr(parseCidr(text));
    } catch (err) {
      throw new ProfileError(`${field}[${i}]`, `${JSON.stringify(item)} is not an IPv4 CIDR (${(err as Error).message})`);
    }
  });
}

function domainList(value: readonly string[], field: string): string[] {
  return value.map((item, i) => {
    const d = canonicalDomain(item);
    if (d instanceof Error) throw new ProfileError(`${field}[${i}]`, d.message);
    return d;
  });
}

/**
 * The `profiles` of a config file the schema (core/config-schema.ts) accepted, checked for
 * what it cannot say (CIDRs, names) and in canonical form. Throws ProfileError naming the field.
 */
export function parseProfiles(value: ProfilesConfig | undefined, field = "profiles"): ProfilesConfig {
  const out: ProfilesConfig = {};
  for (const [name, profile] of Object.entries(value ?? {})) {
    const at = `${field}.${name}`;
    const parsed: ProfileConfig = {};
    const egress = profile.egress;
    if (egress !== undefined) {
      parsed.egress = {};
      if (egress.allow !== undefined) parsed.egress.allow = cidrList(egress.allow, `${at}.egress.allow`);
      if (egress.deny !== undefined) parsed.egress.deny = cidrList(egress.deny, `${at}.egress.deny`);
      if (egress.allowDomains !== undefined) parsed.egress.allowDomains = domainList(egress.allowDomains, `${at}.egress.allowDomains`);
    }
    if (profile.bandwidth !== undefined) parsed.bandwidth = { ...profile.bandwidth };
    // false is the same as absent.
    if (profile.ipv6 === true) parsed.ipv6 = true;
    out[name] = parsed;
  }
  const total = Object.values(out).reduce((n, p) => n + (p.egress?.allow?.length ?? 0) + (p.egress?.deny?.length ?? 0), 0);
  if (total > MAX_PROFILE_CIDRS) throw new ProfileError(field, `${total} CIDRs in all profiles together; at most ${MAX_PROFILE_CIDRS} (one eBPF trie holds them all)`);
  return out;
}

/**
 * The bucket holds 250 ms at the rate (at least 128 KiB: frames on a veth reach 64 KiB
 * with GSO). Policing has no queue to absorb a TCP flow's bursts, and a drop that also
 * hits the retransmissions costs a 200 ms retransmission timeout: measured with iperf3
 * through a slot, 20 ms of bucket gave 14 % of the rate, 100 ms 50 %, 250 ms 100 %. The
 * overshoot is bounded by one bucket: +5 % over a 5 s transfer.
 */
export const BURST_SECONDS = 0.25;

export function rateLimit(mbit: number): RateLimit {
  const bytesPerSecond = Math.round((mbit * 1e6) / 8);
  return { bytesPerSecond, burstBytes: Math.max(128 * 1024, Math.round(bytesPerSecond * BURST_SECONDS)) };
}

/** The bandwidth of a profile, or undefined when it limits nothing. */
export function bandwidthOf(profile: ProfileConfig | undefined): Bandwidth | undefined {
  const bw = profile?.bandwidth;
  if (!bw || (bw.egressMbit === undefined && bw.ingressMbit === undefined)) return undefined;
  return {
    ...(bw.egressMbit !== undefined ? { egress: rateLimit(bw.egressMbit) } : {}),
    ...(bw.ingressMbit !== undefined ? { ingress: rateLimit(bw.ingressMbit) } : {}),
  };
}

/** The egress policy of a profile, or undefined when it restricts nothing (as a lease without one). */
export function egressPolicy(profile: ProfileConfig | undefined): EgressPolicy | undefined {
  // Names make an allow-list: what DNS answers admits is added to it.
  const allow = profile?.egress?.allow ?? (profile?.egress?.allowDomains ? [] : undefined);
  const deny = profile?.egress?.deny ?? [];
  if (allow === undefined && deny.length === 0) return undefined;
  return { allow: allow === undefined ? undefined : normalise(allow), deny: normalise(deny) };
}

/** Sorted, without entries covered by another: a covered entry adds nothing to the trie. */
export function normalise(cidrs: readonly string[]): string[] {
  const parsed: Cidr[] = [...new Set(cidrs)].map((c) => parseCidr(c));
  parsed.sort((a, b) => a.base - b.base || a.prefixLength - b.prefixLength);
  const out: Cidr[] = [];
  for (const c of parsed) {
    const last = out[out.length - 1];
    if (last && c.base >= last.base && c.base + c.size <= last.base + last.size) continue;
    out.push(c);
  }
  return out.map(formatCidr);
}

/**
 * A profile's id in the shared trie: derived from its name, so it is the same in every
 * daemon of this config and across restarts (leases of a restarted daemon keep theirs).
 */
export function profileId(name: string): number {
  return createHash("sha256").update(name).digest().readUInt32BE(0);
}

/**
 * A policy's trie entries. The trie answers with the longest matching prefix; an allow
 * CIDR inside a deny CIDR is written as a deny, so that "deny wins over allow" holds for
 * that one lookup too (a longer allow can only lie inside a deny if it is marked).
 */
export function policyCidrs(id: number, policy: EgressPolicy): PolicyCidr[] {
  const deny = policy.deny.map((c) => parseCidr(c));
  const out: PolicyCidr[] = deny.map((d) => ({ profile: id, base: d.base, prefixLength: d.prefixLength, deny: true }));
  const denied = new Set(policy.deny);
  for (const text of policy.allow ?? []) {
    if (denied.has(text)) continue;
    const a = parseCidr(text);
    const inDeny = deny.some((d) => a.base >= d.base && a.base + a.size <= d.base + d.size);
    out.push({ profile: id, base: a.base, prefixLength: a.prefixLength, deny: inDeny });
  }
  return out;
}

/**
 * The profiles of a running daemon: which exist, which a consumer may use, and the policy
 * each one compiles to (computed once).
 */
export class ProfileCatalog {
  private readonly policies = new Map<string, ProfilePolicy | undefined>();
  private readonly bandwidths = new Map<string, Bandwidth | undefined>();
  private readonly domainLists = new Map<string, string[]>();
  private readonly withIpv6 = new Set<string>();

  constructor(
    profiles: ProfilesConfig = {},
    /** Profiles each consumer may use; a consumer not in the map may use every profile. */
    private readonly consumerProfiles: ReadonlyMap<string, readonly string[]> = new Map(),
  ) {
    const ids = new Map<number, string>();
    for (const [name, profile] of Object.entries(profiles)) {
      const id = profileId(name);
      const clash = ids.get(id);
      // 1 in 2^32 per pair: rename one of them.
      if (clash !== undefined) throw new ProfileError(`profiles.${name}`, `its id collides with profile "${clash}"'s; rename one of them`);
      ids.set(id, name);
      const policy = egressPolicy(profile);
      this.policies.set(name, policy && { ...policy, id });
      this.bandwidths.set(name, bandwidthOf(profile));
      if (profile.egress?.allowDomains) this.domainLists.set(name, profile.egress.allowDomains);
      if (profile.ipv6) this.withIpv6.add(name);
    }
  }

  /** Unknown profile: invalid_request naming /profile; not this consumer's: profile_forbidden. */
  check(consumer: string, profile: string | undefined): void {
    if (profile === undefined) return;
    if (!this.policies.has(profile)) {
      const known = [...this.policies.keys()];
      const hint = known.length === 0 ? "this daemon defines no profiles" : `defined: ${known.join(", ")}`;
      throw new NetslotError("invalid_request", `/profile: no profile "${profile}" (${hint})`, { field: "/profile" });
    }
    const allowed = this.consumerProfiles.get(consumer);
    if (allowed !== undefined && !allowed.includes(profile)) {
      throw new NetslotError("profile_forbidden", `consumer "${consumer}" may not use profile "${profile}"`);
    }
  }

  /** The egress policy of `profile` as defined now; undefined for none (or a profile since removed). */
  policy(profile: string | undefined): ProfilePolicy | undefined {
    return profile === undefined ? undefined : this.policies.get(profile);
  }

  /** Every profile's CIDRs as entries of the shared trie (written once at start). */
  policyCidrs(): PolicyCidr[] {
    return [...this.policies.values()].flatMap((p) => (p ? policyCidrs(p.id, p) : []));
  }

  /** The names `profile` allows through the DNS forwarder; undefined when it names none. */
  domains(profile: string | undefined): readonly string[] | undefined {
    return profile === undefined ? undefined : this.domainLists.get(profile);
  }

  /** Whether any profile names domains (the daemon then runs its DNS forwarder). */
  get usesDomains(): boolean {
    return this.domainLists.size > 0;
  }

  /** Whether `profile` gives the guest IPv6. */
  ipv6(profile: string | undefined): boolean {
    return profile !== undefined && this.withIpv6.has(profile);
  }

  /** Whether any profile gives IPv6 (the daemon then needs --link-cidr6). */
  get usesIpv6(): boolean {
    return this.withIpv6.size > 0;
  }

  /** The bandwidth of `profile` as defined now; undefined for none. */
  bandwidth(profile: string | undefined): Bandwidth | undefined {
    return profile === undefined ? undefined : this.bandwidths.get(profile);
  }
}
