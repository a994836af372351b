// The daemon's configuration, defined once as TypeBox schemas: every key of the config file
// (`netslot daemon --config FILE`), its type and limits, its default and what it means. From
// it come the TypeScript types (DaemonConfig, ConsumerConfig, ProfileConfig), the defaults,
// the flags (a scalar key `fooBar` is the flag `--foo-bar`; a boolean that defaults to true
// is turned off by `--no-foo-bar`), the validation (ajv, compiled once: daemon/config.ts) and
// the reference table of docs/configuration.md (`npm run generate`).
//
// To add a setting: add a property to DaemonConfigSchema (with `default` when it has one) and
// run `npm run generate`. Checks a schema cannot say (CIDRs, VNI ranges, reservations against
// the pool size) stay in the module that owns the value, fed by the typed value.
//
// `expected` is our own annotation: what the error says a value must be when the keyword that
// failed (a pattern, a union) would only print a regular expression.
import { Type, type Static, type TSchema } from "@sinclair/typebox";
import { LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel } from "./log.js";

/** Profile and consumer names. */
export const NAME_PATTERN = "^[A-Za-z0-9_.-]{1,64}$";
/** Entries per profile list: the sets are small by design (the contract is "name a profile"). */
export const MAX_CIDRS = 1024;
export const MAX_MBIT = 100_000;
export const MAX_POOL_SIZE = 65536;
const MAX_ID = 4_294_967_294;

/** One of a list of words: a string to ajv (and a flag), the union to TypeScript. */
const oneOf = <T extends string>(words: readonly T[], options: { default: T; description: string }) =>
  Type.Unsafe<T>({ type: "string", enum: [...words], ...options });
const name = (what: string) => Type.String({ pattern: NAME_PATTERN, expected: "1-64 characters of [A-Za-z0-9_.-]", description: what });
const mbit = (what: string) => Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: MAX_MBIT, description: what }));

export const EgressPolicySchema = Type.Object(
  {
    allow: Type.Optional(
      Type.Array(Type.String(), { maxItems: MAX_CIDRS, description: "IPv4 CIDRs (or addresses) the guest may open connections to; absent: anywhere, []: nowhere" }),
    ),
    deny: Type.Optional(Type.Array(Type.String(), { maxItems: MAX_CIDRS, description: "IPv4 CIDRs (or addresses) the guest may not reach; wins over allow" })),
    allowDomains: Type.Optional(
      Type.Array(Type.String(), {
        maxItems: MAX_CIDRS,
        description: "names (and *.suffix) whose A answers, through the lease's DNS forwarder (guest.dns), the guest may reach for the answer's TTL; implies an allow-list",
      }),
    ),
  },
  { additionalProperties: false, description: "the guest's outbound connections, by destination (stateless, in the slot's nftables sets)" },
);

export const BandwidthSchema = Type.Object(
  {
    egressMbit: mbit("the guest's uploads, megabits of IP packets per second"),
    ingressMbit: mbit("the guest's downloads, megabits of IP packets per second"),
  },
  { additionalProperties: false, description: "token buckets per direction in the eBPF NAT (policing: over the rate is dropped)" },
);

export const ProfileSchema = Type.Object(
  {
    egress: Type.Optional(EgressPolicySchema),
    bandwidth: Type.Optional(BandwidthSchema),
    ipv6: Type.Optional(
      Type.Boolean({ description: "the guest gets IPv6 (lease.guest.ipv6), translated 1:1 to the slot's outside IPv6 address; needs linkCidr6" }),
    ),
  },
  { additionalProperties: false },
);

export const ConsumerSchema = Type.Object(
  {
    name: name("the consumer's name (leases, audit, quotas)"),
    token: Type.Optional(
      Type.String({ pattern: "^[\\x21-\\x7e]{16,4096}$", expected: "16-4096 characters of visible ASCII without spaces", description: "bearer token" }),
    ),
    uids: Type.Optional(
      Type.Array(Type.Integer({ minimum: 0, maximum: MAX_ID }), { minItems: 1, description: "callers with this uid (SO_PEERCRED) are this consumer when they send no token" }),
    ),
    gids: Type.Optional(Type.Array(Type.Integer({ minimum: 0, maximum: MAX_ID }), { minItems: 1, description: "likewise by primary gid" })),
    vnis: Type.Optional(
      Type.Array(Type.Union([Type.Integer(), Type.String({ pattern: "^[0-9]{1,8}(-[0-9]{1,8})?$" })], { expected: 'a VNI or a range "A-B"' }), {
        description: 'VNIs the consumer may attach: numbers, "N" or "A-B"; without it: none',
      }),
    ),
    quota: Type.Optional(
      Type.Object(
        {
          reserved: Type.Optional(Type.Integer({ minimum: 0, description: "slots held for this consumer" })),
          max: Type.Optional(Type.Integer({ minimum: 1, description: "most leases it may hold" })),
        },
        { additionalProperties: false, description: "reservations may add up to at most poolSize" },
      ),
    ),
    priority: Type.Optional(Type.Integer({ minimum: -1000, maximum: 1000, description: "who is served first among waiting requests (higher first; default 0)" })),
    role: Type.Optional(Type.Union([Type.Literal("consumer"), Type.Literal("operator")], { description: 'operators may act on the whole pool (default "consumer")' })),
    profiles: Type.Optional(Type.Array(name("a profile name"), { description: "profiles it may name in a lease request; without it: every profile" })),
  },
  { additionalProperties: false },
);

export const DaemonConfigSchema = Type.Object(
  {
    poolSize: Type.Integer({ minimum: 1, maximum: MAX_POOL_SIZE, default: 256, description: "slots built at boot" }),
    prefix: Type.String({
      pattern: "^[a-z0-9]{1,8}$",
      expected: "1-8 characters of [a-z0-9]",
      default: "nsl",
      description: "carried by every kernel object and pinned path",
    }),
    stateDir: Type.String({ minLength: 1, default: "/var/lib/netslot", description: "SQLite lease store" }),
    socket: Type.String({ minLength: 1, default: "/run/netslot/api.sock", description: "API socket" }),
    uplink: Type.Optional(Type.String({ minLength: 1, description: "where slot traffic leaves, masqueraded; default: the device of the default route" })),
    linkCidr: Type.String({ default: "10.200.0.0/16", description: "lower half: /31 link networks; upper half: outside addresses (at most /28)" }),
    linkCidr6: Type.Optional(
      Type.String({ description: "where the slots' outside IPv6 addresses come from (slot n: base + 1 + n); IPv6 profiles need it" }),
    ),
    vtepRemote: Type.Optional(Type.String({ description: "remote VTEP (IPv4) for tenant tunnels (needed for `network` in leases)" })),
    vtepPort: Type.Integer({ minimum: 1, maximum: 65535, default: 4789, description: "VXLAN UDP port" }),
    dnsUpstream: Type.Optional(
      Type.String({ description: "where the DNS forwarder of egress.allowDomains asks (IPv4, port 53); default: the first nameserver of /etc/resolv.conf" }),
    ),
    socketGroup: Type.Optional(
      Type.String({
        pattern: "^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}\\$?$",
        expected: "a group name or gid",
        description: "group (name or gid) of the API socket (mode 0660), so its members may connect",
      }),
    ),
    guestMtu: Type.Optional(
      Type.Integer({ minimum: 576, maximum: 65535, description: "MTU of tap0 and of the guest (lease.guest.mtu); default: the uplink's; a slot layout change" }),
    ),
    migrationRate: Type.Number({ exclusiveMinimum: 0, maximum: 10000, default: 20, description: "free slots of an older layout rebuilt per second, in the background" }),
    migrationMinFree: Type.Number({
      minimum: 0,
      maximum: 100,
      default: 25,
      description: "percent of the pool that layout migration (and the background audit) always leaves free",
    }),
    scrubNice: Type.Integer({
      minimum: 0,
      maximum: 19,
      default: 5,
      description: "nice value of the scrub worker thread (per thread on Linux): its CPU below the request path's",
    }),
    auditPeriod: Type.Number({
      minimum: 0,
      default: 3600,
      description:
        "seconds for the background audit to prove every free slot once with the full fingerprint (0: none); counted in netslot_audit_proofs_total, netslot_audit_dirty_total",
    }),
    // Off by default: safe against the threat model (a guest escaped into a VMM that runs
    // as root can mount a procfs of its own, whose writes no watch on ours sees).
    watchSysctls: Type.Boolean({
      default: false,
      description:
        "prove an untouched slot's sysctls by inotify (no file of its /proc/sys/net opened since its last clean proof) instead of reading them on every proof (~5 ms of CPU less). Only when VMMs run without CAP_SYS_ADMIN in the slot (e.g. under Firecracker's jailer): a sysctl written through a procfs instance of their own is not seen by the watch",
    }),
    progress: Type.Boolean({ default: true, description: "print boot progress on stderr" }),
    logLevel: oneOf<LogLevel>(LOG_LEVELS, { default: "info", description: "least severe level logged on stderr (debug adds one line per scrub job, from the scrub thread)" }),
    logFormat: oneOf<LogFormat>(LOG_FORMATS, { default: "auto", description: "json: one JSON object per line; pretty: readable; auto: pretty on a terminal, JSON otherwise" }),
    consumers: Type.Array(ConsumerSchema, { default: [], description: "who may call, with what rights (README, Many consumers)" }),
    profiles: Type.Record(Type.String({ pattern: NAME_PATTERN }), ProfileSchema, {
      default: {},
      additionalProperties: false,
      expected: "1-64 characters of [A-Za-z0-9_.-]",
      description: "network profiles a lease request may name (README, Network profiles)",
    }),
  },
  { additionalProperties: false },
);

/** The config file: any of the settings, none required. */
export const ConfigFileSchema = Type.Partial(DaemonConfigSchema);

export type DaemonConfig = Static<typeof DaemonConfigSchema>;
export type ConfigFile = Static<typeof ConfigFileSchema>;
export type ConsumerConfig = Static<typeof ConsumerSchema>;
export type ProfileConfig = Static<typeof ProfileSchema>;
export type ProfilesConfig = Record<string, ProfileConfig>;
export type EgressPolicyConfig = Static<typeof EgressPolicySchema>;
export type BandwidthConfig = Static<typeof BandwidthSchema>;

/** `poolSize` → `--pool-size`. */
export function flagOf(key: string): string {
  return `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

/** The settings that have a flag: scalars (strings, numbers); booleans get `--no-…` when they default to true. */
export function settingFlags(): Array<{ key: keyof DaemonConfig; flag: string; schema: TSchema }> {
  return Object.entries(DaemonConfigSchema.properties).flatMap(([key, schema]) => {
    const s = schema as TSchema;
    if (s["type"] === "string" || s["type"] === "integer" || s["type"] === "number") return [{ key: key as keyof DaemonConfig, flag: flagOf(key), schema: s }];
    if (s["type"] === "boolean") return [{ key: key as keyof DaemonConfig, flag: s["default"] === true ? `--no-${flagOf(key).slice(2)}` : flagOf(key), schema: s }];
    return [];
  });
}
