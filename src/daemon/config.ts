// Daemon configuration: defaults, an optional JSON file, then flags (flags win).
import * as fs from "node:fs";
import { parseArgs } from "node:util";
import { assertPrefix, formatCidr, formatCidr6, maxSlots, maxSlots6, parseCidr, parseCidr6, ipToInt } from "../dataplane/topology.js";
import { parseConsumers, type ConsumerConfig } from "../tenancy/consumers.js";
import { ProfileError, parseProfiles, type ProfilesConfig } from "../core/profiles.js";
import { LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel } from "../core/log.js";

export type { ConsumerConfig } from "../tenancy/consumers.js";

export interface DaemonConfig {
  poolSize: number;
  prefix: string;
  stateDir: string;
  socket: string;
  /** Device of the default route when not given. */
  uplink: string | undefined;
  linkCidr: string;
  /** Where the slots' outside IPv6 addresses come from (slot n: base + 1 + n); IPv6 profiles need it. */
  linkCidr6: string | undefined;
  vtepRemote: string | undefined;
  vtepPort: number;
  /** Where the DNS forwarder (egress.allowDomains) asks; the first nameserver of /etc/resolv.conf when not given. */
  dnsUpstream: string | undefined;
  /** Group (name or gid) given the API socket, mode 0660, so its members may connect. */
  socketGroup: string | undefined;
  consumers: ConsumerConfig[];
  /** Network profiles a lease request may name (src/core/profiles.ts). */
  profiles: ProfilesConfig;
  /** MTU of tap0 and of the guest (lease.guest.mtu); the uplink's when not given. A slot layout change. */
  guestMtu: number | undefined;
  /** Free slots of an older layout rebuilt per second, in the background. */
  migrationRate: number;
  /** Share of the pool (percent) that migration always leaves free for requests. */
  migrationMinFree: number;
  /** Seconds for the background audit to prove every free slot once with the full fingerprint (0: no audit). */
  auditPeriod: number;
  /** Nice value of the scrub worker thread (per thread on Linux): below the request path's main thread. */
  scrubNice: number;
  /** Seconds between TTL sweeps are not configurable: expiry uses one timer. */
  progress: boolean;
  /** Least severe level logged on stderr. */
  logLevel: LogLevel;
  /** auto: readable on a terminal, JSON lines otherwise. */
  logFormat: LogFormat;
}

export const DEFAULTS: DaemonConfig = {
  poolSize: 256,
  prefix: "nsl",
  stateDir: "/var/lib/netslot",
  socket: "/run/netslot/api.sock",
  uplink: undefined,
  linkCidr: "10.200.0.0/16",
  linkCidr6: undefined,
  vtepRemote: undefined,
  vtepPort: 4789,
  dnsUpstream: undefined,
  socketGroup: undefined,
  consumers: [],
  profiles: {},
  guestMtu: undefined,
  migrationRate: 20,
  migrationMinFree: 25,
  auditPeriod: 3600,
  scrubNice: 5,
  progress: true,
  logLevel: "info",
  logFormat: "auto",
};

const FLAGS: Record<string, keyof DaemonConfig> = {
  "--pool-size": "poolSize",
  "--prefix": "prefix",
  "--state-dir": "stateDir",
  "--socket": "socket",
  "--uplink": "uplink",
  "--link-cidr": "linkCidr",
  "--link-cidr6": "linkCidr6",
  "--vtep-remote": "vtepRemote",
  "--vtep-port": "vtepPort",
  "--dns-upstream": "dnsUpstream",
  "--socket-group": "socketGroup",
  "--guest-mtu": "guestMtu",
  "--migration-rate": "migrationRate",
  "--migration-min-free": "migrationMinFree",
  "--audit-period": "auditPeriod",
  "--scrub-nice": "scrubNice",
  "--log-level": "logLevel",
  "--log-format": "logFormat",
};

const NUMERIC = new Set<keyof DaemonConfig>(["poolSize", "vtepPort", "guestMtu", "migrationRate", "migrationMinFree", "auditPeriod", "scrubNice"]);

export const MAX_POOL_SIZE = 65536;

export class ConfigError extends Error {
  override name = "ConfigError";
}

/** Parses `netslot daemon` arguments (node:util parseArgs, strict): `--flag value` or `--flag=value`, plus `--config FILE`, `--no-progress`. */
export function parseDaemonArgs(argv: string[]): DaemonConfig {
  const options: Record<string, { type: "string" | "boolean" }> = { config: { type: "string" }, "no-progress": { type: "boolean" } };
  for (const flag of Object.keys(FLAGS)) options[flag.slice(2)] = { type: "string" };
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({ args: argv, options, strict: true, allowPositionals: false }));
  } catch (err) {
    const e = err as Error & { code?: string };
    const flag = /'(-[^' ]+)/.exec(e.message)?.[1] ?? "";
    if (e.code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") throw new ConfigError(`unknown flag ${flag}`, { cause: err });
    if (e.code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE") throw new ConfigError(`${flag} needs a value`, { cause: err });
    throw new ConfigError(e.message.split("\n")[0], { cause: err });
  }
  const configFile = typeof values["config"] === "string" ? values["config"] : undefined;
  const progress = values["no-progress"] === true ? false : undefined;
  const given: Record<string, string> = {};
  for (const flag of Object.keys(FLAGS)) {
    const value = values[flag.slice(2)];
    if (typeof value === "string") given[flag] = value;
  }
  const fromFile = configFile ? readConfigFile(configFile) : {};
  const merged: DaemonConfig = { ...DEFAULTS, ...fromFile };
  for (const [flag, value] of Object.entries(given)) {
    const key = FLAGS[flag]!;
    (merged as unknown as Record<string, unknown>)[key] = NUMERIC.has(key) ? Number(value) : value;
  }
  if (progress !== undefined) merged.progress = progress;
  validateConfig(merged);
  return merged;
}

function readConfigFile(path: string): Partial<DaemonConfig> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(fs.readFileSync(path, "utf8"));
  } catch (err) {
    throw new ConfigError(`cannot read config file ${path}: ${(err as Error).message}`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new ConfigError(`config file ${path} must hold a JSON object`);
  }
  const known = new Set<string>(Object.keys(DEFAULTS));
  for (const key of Object.keys(parsed)) {
    if (!known.has(key)) throw new ConfigError(`config file ${path}: unknown key "${key}"`);
  }
  return parsed;
}

export function validateConfig(config: DaemonConfig): void {
  try {
    assertPrefix(config.prefix);
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }
  let cidr;
  try {
    cidr = parseCidr(config.linkCidr);
  } catch (err) {
    throw new ConfigError(`--link-cidr: ${(err as Error).message}`);
  }
  if (cidr.prefixLength > 28) throw new ConfigError(`--link-cidr ${formatCidr(cidr)} is too small (at most /28)`);
  if (!Number.isInteger(config.poolSize) || config.poolSize < 1) {
    throw new ConfigError("--pool-size must be a whole number of at least 1");
  }
  if (config.poolSize > maxSlots(cidr)) {
    throw new ConfigError(`--pool-size ${config.poolSize} does not fit in ${config.linkCidr} (at most ${maxSlots(cidr)} slots)`);
  }
  // 8-character prefix + "-" + 5 digits stays within the kernel's 15-character names.
  if (config.poolSize > MAX_POOL_SIZE) throw new ConfigError(`--pool-size is at most ${MAX_POOL_SIZE}`);
  if (config.guestMtu !== undefined && (!Number.isInteger(config.guestMtu) || config.guestMtu < 576 || config.guestMtu > 65535)) {
    throw new ConfigError("--guest-mtu must be a whole number from 576 to 65535");
  }
  if (!Number.isFinite(config.migrationRate) || config.migrationRate <= 0 || config.migrationRate > 10000) {
    throw new ConfigError("--migration-rate must be a number of slots per second above 0 (at most 10000)");
  }
  if (!Number.isFinite(config.migrationMinFree) || config.migrationMinFree < 0 || config.migrationMinFree > 100) {
    throw new ConfigError("--migration-min-free must be a percentage from 0 to 100");
  }
  if (!Number.isInteger(config.scrubNice) || config.scrubNice < 0 || config.scrubNice > 19) {
    throw new ConfigError("--scrub-nice must be a whole number from 0 to 19");
  }
  if (!Number.isFinite(config.auditPeriod) || config.auditPeriod < 0) {
    throw new ConfigError("--audit-period must be a number of seconds (0: no background audit)");
  }
  if (!Number.isInteger(config.vtepPort) || config.vtepPort < 1 || config.vtepPort > 65535) {
    throw new ConfigError("--vtep-port must be 1..65535");
  }
  if (!(LOG_LEVELS as readonly string[]).includes(config.logLevel)) throw new ConfigError(`--log-level must be one of ${LOG_LEVELS.join(", ")}`);
  if (!(LOG_FORMATS as readonly string[]).includes(config.logFormat)) throw new ConfigError(`--log-format must be one of ${LOG_FORMATS.join(", ")}`);
  if (config.dnsUpstream !== undefined) {
    try {
      ipToInt(config.dnsUpstream);
    } catch {
      throw new ConfigError(`--dns-upstream must be an IPv4 address, not "${config.dnsUpstream}"`);
    }
  }
  if (config.vtepRemote !== undefined) {
    try {
      ipToInt(config.vtepRemote);
    } catch {
      throw new ConfigError(`--vtep-remote must be an IPv4 address, not "${config.vtepRemote}"`);
    }
  }
  if (config.socketGroup !== undefined && !/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}\$?$/.test(config.socketGroup)) {
    throw new ConfigError(`--socket-group "${config.socketGroup}" is not a group name or gid`);
  }
  if (config.linkCidr6 !== undefined) {
    let cidr6;
    try {
      cidr6 = parseCidr6(config.linkCidr6);
    } catch (err) {
      throw new ConfigError(`--link-cidr6: ${(err as Error).message}`);
    }
    if (config.poolSize > maxSlots6(cidr6)) {
      throw new ConfigError(`--pool-size ${config.poolSize} does not fit in --link-cidr6 ${formatCidr6(cidr6)} (at most ${maxSlots6(cidr6)} slots: one outside IPv6 address each, the network's own left out)`);
    }
  }
  try {
    config.profiles = parseProfiles(config.profiles);
  } catch (err) {
    if (err instanceof ProfileError) throw new ConfigError(`config file: ${err.message}`);
    throw err;
  }
  const dual = Object.entries(config.profiles).find(([, p]) => p.ipv6);
  if (dual && config.linkCidr6 === undefined) throw new ConfigError(`config file: profiles.${dual[0]}.ipv6 needs --link-cidr6 (where the slots' outside IPv6 addresses come from)`);
  let consumers;
  try {
    consumers = parseConsumers(config.consumers, config.poolSize);
  } catch (err) {
    throw new ConfigError(`consumers: ${(err as Error).message}`);
  }
  consumers.forEach((c, i) => {
    const unknown = c.profiles?.findIndex((name) => !Object.hasOwn(config.profiles, name)) ?? -1;
    if (unknown >= 0) throw new ConfigError(`config file: consumers[${i}].profiles[${unknown}]: no profile "${c.profiles![unknown]}" in profiles`);
  });
}

/** The first IPv4 nameserver of a resolv.conf (the forwarder's default upstream). */
export function resolvConfUpstream(text: string): string | undefined {
  for (const line of text.split("\n")) {
    const m = /^\s*nameserver\s+(\d+\.\d+\.\d+\.\d+)\s*$/.exec(line);
    if (m) return m[1];
  }
  return undefined;
}
