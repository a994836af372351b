// Daemon configuration: defaults, an optional JSON file, then flags (flags win). What the
// keys are, their types, limits, defaults and flags is core/config-schema.ts; this module
// reads the file and the flags, validates both with that schema (ajv, compiled once), and
// runs the checks a schema cannot say.
import * as fs from "node:fs";
import { parseArgs } from "node:util";
import { Ajv, type ErrorObject } from "ajv";
import type { TSchema } from "@sinclair/typebox";
import { assertPrefix, formatCidr, formatCidr6, maxSlots, maxSlots6, parseCidr, parseCidr6, ipToInt } from "../dataplane/topology.js";
import { parseConsumers } from "../tenancy/consumers.js";
import { ProfileError, parseProfiles } from "../core/profiles.js";
import { ConfigFileSchema, DaemonConfigSchema, MAX_POOL_SIZE, settingFlags, type DaemonConfig } from "../core/config-schema.js";

export type { ConsumerConfig, DaemonConfig } from "../core/config-schema.js";
export { MAX_POOL_SIZE };

/** Every setting's `default` in the schema. */
export const DEFAULTS = Object.fromEntries(
  Object.entries(DaemonConfigSchema.properties).flatMap(([key, schema]) => ((schema as TSchema).default === undefined ? [] : [[key, (schema as TSchema).default as unknown]])),
) as DaemonConfig;

const FLAGS = settingFlags();

export class ConfigError extends Error {
  override name = "ConfigError";
}

const ajv = new Ajv({ allErrors: false, verbose: true, strict: true });
// Our annotation for error messages (core/config-schema.ts).
ajv.addKeyword({ keyword: "expected", schemaType: "string" });
const validateFile = ajv.compile<Partial<DaemonConfig>>(ConfigFileSchema);
const validateSetting = new Map(FLAGS.map(({ key, schema }) => [key, ajv.compile(schema)]));

/** `/consumers/0/quota/max` → `consumers[0].quota.max`. */
function dotted(pointer: string): string {
  return pointer
    .split("/")
    .slice(1)
    .map((part) => part.replace(/~1/g, "/").replace(/~0/g, "~"))
    .reduce((path, part) => (/^\d+$/.test(part) ? `${path}[${part}]` : path === "" ? part : `${path}.${part}`), "");
}

/** What a value of `schema` is, in words; by its type alone for a type error. */
function describe(schema: TSchema, typeOnly = false): string {
  if (typeof schema["expected"] === "string" && !typeOnly) return schema["expected"];
  if ("const" in schema) return JSON.stringify(schema["const"]);
  if (Array.isArray(schema["enum"])) return `one of ${(schema["enum"] as unknown[]).join(", ")}`;
  if (Array.isArray(schema["anyOf"])) return (schema["anyOf"] as TSchema[]).map((s) => describe(s)).join(" or ");
  switch (schema["type"]) {
    case "integer":
      return "a whole number";
    case "number":
      return "a number";
    case "string":
      return schema["pattern"] ? `a string matching ${schema["pattern"]}` : "a string";
    case "boolean":
      return "true or false";
    case "array":
      return "a list";
    case "object":
      return "an object";
    default:
      return "something else";
  }
}

/** One line: where (a dotted JSON path) and what was expected. */
export function explain(errors: readonly ErrorObject[], root = ""): string {
  // A union's branches each fail first; the union's own error says what any of them takes.
  const e = errors.find((x) => x.keyword === "anyOf") ?? errors[0]!;
  const at = [root, dotted(e.instancePath)].filter((x) => x !== "").join(".");
  const schema = e.parentSchema as TSchema;
  const p = e.params as Record<string, unknown>;
  let what: string;
  switch (e.keyword) {
    case "additionalProperties": {
      const key = String(p["additionalProperty"]);
      const where = [at, key].filter((x) => x !== "").join(".");
      if (schema["patternProperties"]) return `${where}: a name is ${String(schema["expected"] ?? Object.keys(schema["patternProperties"] as object)[0])}`;
      return `${where}: unknown key; expected one of ${Object.keys((schema["properties"] as object | undefined) ?? {}).join(", ")}`;
    }
    case "required":
      return `${at === "" ? "" : `${at}: `}needs ${String(p["missingProperty"])}`;
    case "minimum":
      what = `must be at least ${String(p["limit"])}`;
      break;
    case "maximum":
      what = `must be at most ${String(p["limit"])}`;
      break;
    case "exclusiveMinimum":
      what = `must be more than ${String(p["limit"])}`;
      break;
    case "minItems":
      what = `must list at least ${String(p["limit"])} ${p["limit"] === 1 ? "entry" : "entries"}`;
      break;
    case "maxItems":
      what = `must list at most ${String(p["limit"])} entries`;
      break;
    case "minLength":
      what = "must not be empty";
      break;
    default:
      what = `must be ${describe(schema, e.keyword === "type")}`;
  }
  return `${at}: ${what}`;
}

/** Parses `netslot daemon` arguments (node:util parseArgs, strict): `--flag value` or `--flag=value`, plus `--config FILE`, `--no-progress`. */
export function parseDaemonArgs(argv: string[]): DaemonConfig {
  const options: Record<string, { type: "string" | "boolean" }> = { config: { type: "string" } };
  for (const { flag, schema } of FLAGS) options[flag.slice(2)] = { type: schema["type"] === "boolean" ? "boolean" : "string" };
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
  const merged: DaemonConfig = { ...DEFAULTS, ...(configFile ? readConfigFile(configFile) : {}) };
  for (const { key, flag, schema } of FLAGS) {
    const given = values[flag.slice(2)];
    if (given === undefined) continue;
    let value: unknown = given;
    if (schema["type"] === "boolean") value = !flag.startsWith("--no-");
    // A flag's text becomes a number when the setting is one; else ajv says what it must be.
    else if ((schema["type"] === "integer" || schema["type"] === "number") && given !== "" && Number.isFinite(Number(given))) value = Number(given);
    const validate = validateSetting.get(key)!;
    if (!validate(value)) throw new ConfigError(explain(validate.errors ?? [], flag));
    (merged as Record<string, unknown>)[key] = value;
  }
  validateConfig(merged);
  return merged;
}

/** Reads and validates the config file against the schema: one line naming the key at fault. */
export function readConfigFile(path: string): Partial<DaemonConfig> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(fs.readFileSync(path, "utf8"));
  } catch (err) {
    throw new ConfigError(`cannot read config file ${path}: ${(err as Error).message}`);
  }
  return checkConfigFile(parsed, `config file ${path}`);
}

/** Validates a config file's parsed JSON; `where` starts the error message. */
export function checkConfigFile(parsed: unknown, where = "config file"): Partial<DaemonConfig> {
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new ConfigError(`${where} must hold a JSON object`);
  if (!validateFile(parsed)) throw new ConfigError(`${where}: ${explain(validateFile.errors ?? [])}`);
  return parsed;
}

/** The checks the schema cannot make (addresses, sizes that depend on each other, consumers against profiles). */
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
  if (config.poolSize > maxSlots(cidr)) {
    throw new ConfigError(`--pool-size ${config.poolSize} does not fit in ${config.linkCidr} (at most ${maxSlots(cidr)} slots)`);
  }
  for (const [flag, value] of [
    ["--dns-upstream", config.dnsUpstream],
    ["--vtep-remote", config.vtepRemote],
  ] as const) {
    if (value === undefined) continue;
    try {
      ipToInt(value);
    } catch {
      throw new ConfigError(`${flag} must be an IPv4 address, not "${value}"`);
    }
  }
  if (config.linkCidr6 !== undefined) {
    let cidr6;
    try {
      cidr6 = parseCidr6(config.linkCidr6);
    } catch (err) {
      throw new ConfigError(`--link-cidr6: ${(err as Error).message}`);
    }
    if (config.poolSize > maxSlots6(cidr6)) {
      throw new ConfigError(
        `--pool-size ${config.poolSize} does not fit in --link-cidr6 ${formatCidr6(cidr6)} (at most ${maxSlots6(cidr6)} slots: one outside IPv6 address each, the network's own left out)`,
      );
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
