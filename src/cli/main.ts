#!/usr/bin/env node
// The netslot command line. Client commands talk to the daemon over its socket; `daemon`,
// `purge`, `doctor` and `check` work on this host directly.
import { parseArgs } from "node:util";
import { ConfigError, DEFAULTS } from "../daemon/config.js";

const USAGE = `netslot — network slots for micro-VMs

Usage:
  netslot daemon [--pool-size N] [--prefix P] [--state-dir DIR] [--socket PATH]
                 [--uplink DEV] [--link-cidr CIDR] [--vtep-remote IP] [--vtep-port N]
                 [--socket-group G] [--config FILE] [--no-progress]
                 [--log-level fatal|error|warn|info|debug|trace] [--log-format auto|json|pretty]
  netslot status                       [--socket PATH]
  netslot lease [--ttl S] [--vni N --cidr CIDR] [--json]   [--socket PATH]
  netslot release ID                   [--socket PATH]
  netslot exec ID -- CMD...            [--socket PATH]
  netslot quarantine release N         [--socket PATH]   (operators)
  netslot drain | undrain              [--socket PATH]   (operators)
  netslot upgrade [--json] [--socket PATH] [-- DAEMON_FLAGS...]   (operators)
                                       hand over to a new daemon from the installed code
  netslot purge [--prefix P] [--state-dir DIR]
  netslot check [--prefix P] [--state-dir DIR] [--link-cidr CIDR]
  netslot doctor
  netslot device-plugin [--kubelet-dir DIR] [--socket API_SOCK] [--token T] [--reconcile-seconds N]
  netslot metrics-exporter --listen HOST:PORT [--socket API_SOCK] [--token T]
  netslot install-service [--root DIR] [--dry-run] [--no-enable] [-- DAEMON-FLAGS...]
  netslot --version

Client commands read the socket from --socket, else NETSLOT_SOCKET, else ${DEFAULTS.socket},
and the bearer token from NETSLOT_TOKEN (a consumer matched by uid or gid needs none).
`;

interface Parsed {
  positional: string[];
  flags: Map<string, string | true>;
  rest: string[];
}

// Each client and host command's flags; parsed by node:util parseArgs in strict mode, so a
// mistyped flag (`--sockt`) is refused with exit code 2 instead of silently ignored.
const SOCKET = { socket: { type: "string" } } as const;
const COMMAND_FLAGS: Record<string, Record<string, { type: "string" | "boolean" }>> = {
  status: { ...SOCKET },
  lease: { ...SOCKET, ttl: { type: "string" }, vni: { type: "string" }, cidr: { type: "string" }, json: { type: "boolean" } },
  release: { ...SOCKET },
  exec: { ...SOCKET },
  quarantine: { ...SOCKET },
  drain: { ...SOCKET, json: { type: "boolean" } },
  undrain: { ...SOCKET, json: { type: "boolean" } },
  upgrade: { ...SOCKET, json: { type: "boolean" } },
  purge: { prefix: { type: "string" }, "state-dir": { type: "string" } },
  check: { prefix: { type: "string" }, "state-dir": { type: "string" }, "link-cidr": { type: "string" } },
  doctor: {},
};

/** This command's lines of the usage text. */
function usageOf(command: string): string {
  const lines = USAGE.split("\n").filter((l) => l.startsWith(`  netslot ${command}`) || (command.endsWith("drain") && l.startsWith("  netslot drain")));
  return `Usage:\n${lines.join("\n")}\n`;
}

function parse(command: string, argv: string[]): Parsed {
  const cut = argv.indexOf("--");
  const own = cut < 0 ? argv : argv.slice(0, cut);
  const rest = cut < 0 ? [] : argv.slice(cut + 1);
  let values: Record<string, string | boolean | undefined>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({ args: own, options: { ...COMMAND_FLAGS[command], help: { type: "boolean" } }, strict: true, allowPositionals: true }));
  } catch (err) {
    // parseArgs' messages run to several lines with a hint; one line is enough here.
    throw new ConfigError(`${command}: ${(err as Error).message.split("\n")[0]!.replace(/\. To specify a positional.*$/, "")} (see netslot ${command} --help)`, { cause: err });
  }
  const flags = new Map<string, string | true>();
  for (const [name, value] of Object.entries(values)) {
    if (typeof value === "string") flags.set(`--${name}`, value);
    else if (value === true) flags.set(`--${name}`, true);
  }
  return { positional: positionals, flags, rest };
}

function str(p: Parsed, flag: string, fallback: string): string {
  const v = p.flags.get(flag);
  return typeof v === "string" ? v : fallback;
}

function num(p: Parsed, flag: string): number | undefined {
  const v = p.flags.get(flag);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (typeof v !== "string" || !Number.isInteger(n)) throw new ConfigError(`${flag} takes a whole number`);
  return n;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...args] = argv;
  if (command === "--version" || command === "version") {
    const { packageVersion } = await import("../core/version.js");
    process.stdout.write(`netslot ${packageVersion()}\n`);
    return 0;
  }
  if (!command || command === "--help" || command === "help") {
    process.stdout.write(USAGE);
    return command ? 0 : 2;
  }
  if (command === "daemon") {
    // The daemon's stderr is its log: even a bad flag is one fatal JSON line (daemonMain).
    const { daemonMain } = await import("../daemon/daemon.js");
    await daemonMain(args);
    return -1; // keeps running
  }
  if (command === "device-plugin") {
    const { main: devicePlugin } = await import("./device-plugin.js");
    return devicePlugin(args);
  }
  if (command === "metrics-exporter") {
    const { main: metricsExporter } = await import("./metrics-exporter.js");
    return metricsExporter(args);
  }
  if (command === "install-service") {
    const { main: installService } = await import("./install-service.js");
    return installService(args);
  }
  if (!(command in COMMAND_FLAGS)) {
    process.stderr.write(`netslot: unknown command "${command}"\n\n${USAGE}`);
    return 2;
  }
  const p = parse(command, args);
  if (p.flags.get("--help") === true) {
    process.stdout.write(usageOf(command));
    return 0;
  }
  const socket = str(p, "--socket", process.env.NETSLOT_SOCKET ?? DEFAULTS.socket);
  const client = await import("./client-commands.js");
  switch (command) {
    case "status":
      return client.cmdStatus({ socket });
    case "lease": {
      const vni = num(p, "--vni");
      const cidr = p.flags.get("--cidr");
      if ((vni === undefined) !== (cidr === undefined)) throw new ConfigError("--vni and --cidr go together");
      return client.cmdLease({
        socket,
        ttl: num(p, "--ttl"),
        json: p.flags.get("--json") === true,
        ...(vni !== undefined && typeof cidr === "string" ? { network: { vni, cidr } } : {}),
      });
    }
    case "release":
      if (p.positional.length !== 1) throw new ConfigError("usage: netslot release ID");
      return client.cmdRelease({ socket }, p.positional[0]!);
    case "exec":
      if (p.positional.length !== 1 || p.rest.length === 0) throw new ConfigError("usage: netslot exec ID -- CMD...");
      return client.cmdExec({ socket }, p.positional[0]!, p.rest);
    case "upgrade":
      if (p.positional.length !== 0) throw new ConfigError("usage: netslot upgrade [--socket PATH] [-- DAEMON_FLAGS...]");
      return client.cmdUpgrade({ socket, json: p.flags.get("--json") === true }, p.rest);
    case "quarantine": {
      if (p.positional[0] !== "release" || p.positional.length !== 2 || !/^\d+$/.test(p.positional[1]!)) {
        throw new ConfigError("usage: netslot quarantine release N");
      }
      return client.cmdQuarantineRelease({ socket }, Number(p.positional[1]));
    }
    case "drain":
    case "undrain":
      if (p.positional.length !== 0) throw new ConfigError(`usage: netslot ${command}`);
      return client.cmdDrain({ socket, json: p.flags.get("--json") === true }, command === "drain");
    case "purge": {
      const { purge } = await import("./host-commands.js");
      return purge(str(p, "--prefix", DEFAULTS.prefix), str(p, "--state-dir", DEFAULTS.stateDir));
    }
    case "check": {
      const { check } = await import("./host-commands.js");
      return check({
        prefix: str(p, "--prefix", DEFAULTS.prefix),
        stateDir: str(p, "--state-dir", DEFAULTS.stateDir),
        linkCidr: str(p, "--link-cidr", DEFAULTS.linkCidr),
      });
    }
    case "doctor": {
      const { doctor } = await import("./doctor.js");
      return doctor();
    }
    default:
      process.stderr.write(`netslot: unknown command "${command}"\n\n${USAGE}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof ConfigError) {
      process.stderr.write(`netslot: ${err.message}\n`);
      process.exitCode = 2;
    } else {
      process.stderr.write(`netslot: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exitCode = 1;
    }
  },
);
