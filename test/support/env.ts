// Test and benchmark environment, shared by test/ and bench/: a unique prefix per test
// file, an "upstream" namespace standing in for the internet behind a test uplink, a
// running daemon, waiting, and cleanup that runs even when a test fails. Spawning ip/nft
// here is fine: this is test support, not the request path.
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { before, after } from "node:test";
import { NetslotClient } from "../../src/sdk/index.js";
import { pidFilePath } from "../../src/daemon/pidfile.js";

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
export const CLI = path.join(REPO_ROOT, "dist", "src", "cli", "main.js");

export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/** A prefix no other run uses: "t" + 5 random characters. */
export function testPrefix(): string {
  return "t" + randomBytes(4).toString("hex").slice(0, 5).replace(/^\d/, "a");
}

/** Runs a command synchronously and returns stdout; throws with stderr unless allowFail. */
export function sh(cmd: string, args: string[], opts: { allowFail?: boolean; input?: string; timeoutMs?: number } = {}): string {
  try {
    return execFileSync(cmd, args, {
      encoding: "utf8",
      stdio: ["pipe", "pipe", "pipe"],
      input: opts.input,
      timeout: opts.timeoutMs,
      maxBuffer: 256 * 1024 * 1024,
    });
  } catch (err) {
    if (opts.allowFail) return "";
    const e = err as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(" ")}: ${(e.stderr || e.message).trim()}`, { cause: err });
  }
}

export function nsExec(netns: string, cmd: string[], opts: { allowFail?: boolean } = {}): string {
  return sh("ip", ["netns", "exec", netns, ...cmd], opts);
}

/** Returns an unused /16 under 10.0.0.0/8 for --link-cidr (none of this machine's routes overlap it). */
export function freeLinkCidr(): string {
  const routes = sh("ip", ["-4", "route", "show", "table", "all"]);
  for (let attempt = 0; attempt < 100; attempt++) {
    const second = 100 + Math.floor(Math.random() * 150);
    const prefix = `10.${second}.`;
    if (!routes.includes(prefix)) return `10.${second}.0.0/16`;
  }
  throw new Error("no free 10.x.0.0/16 for the test");
}

export interface Upstream {
  /** Namespace name of the "internet". */
  netns: string;
  /** Root-side device: pass it as the daemon's --uplink. */
  uplink: string;
  /** Root-side address (what the upstream sees after masquerade). */
  hostAddress: string;
  /** Address of the upstream namespace. */
  address: string;
  /** An address the upstream also owns that stands for the metadata service. */
  metadataRouted: boolean;
  /** With `ipv6`: the root side's IPv6 address (what the upstream sees after masquerade) and the upstream's. */
  hostAddress6?: string;
  address6?: string;
  remove(): void;
}

/**
 * Creates `<prefix>-up` (namespace) linked to the root namespace by a veth `<prefix>u`
 * with MTU 1400, addresses from 198.18.0.0/15 (benchmark range, never routed off-host).
 * With `routeMetadata`, 169.254.169.254 is routed to the upstream, which owns it: if the
 * firewall failed, a test would see the answer instead of packets leaving the machine.
 */
export function createUpstream(prefix: string, opts: { routeMetadata?: boolean; mtu?: number; ipv6?: boolean } = {}): Upstream {
  const netns = `${prefix}-up`;
  const uplink = `${prefix}u`;
  const octet = 1 + Math.floor(Math.random() * 250);
  const hostAddress = `198.18.${octet}.1`;
  const address = `198.18.${octet}.2`;
  const mtu = String(opts.mtu ?? 1400);
  let metadataRouted = false;
  let hostAddress6: string | undefined;
  let address6: string | undefined;
  const remove = () => {
    if (metadataRouted) sh("ip", ["route", "del", "169.254.169.254/32", "via", address, "dev", uplink], { allowFail: true });
    sh("ip", ["link", "del", uplink], { allowFail: true });
    sh("ip", ["netns", "del", netns], { allowFail: true });
  };
  try {
    sh("ip", ["netns", "add", netns]);
    sh("ip", ["link", "add", uplink, "mtu", mtu, "type", "veth", "peer", "name", "eth0", "netns", netns, "mtu", mtu]);
    sh("ip", ["addr", "add", `${hostAddress}/24`, "dev", uplink]);
    sh("ip", ["link", "set", uplink, "up"]);
    nsExec(netns, ["ip", "link", "set", "lo", "up"]);
    nsExec(netns, ["ip", "addr", "add", `${address}/24`, "dev", "eth0"]);
    nsExec(netns, ["ip", "link", "set", "eth0", "up"]);
    // The upstream only knows the host's uplink address: anything else it sees was not masqueraded.
    nsExec(netns, ["ip", "route", "add", "default", "via", hostAddress]);
    if (opts.routeMetadata) {
      nsExec(netns, ["ip", "addr", "add", "169.254.169.254/32", "dev", "lo"]);
      sh("ip", ["route", "replace", "169.254.169.254/32", "via", address, "dev", uplink]);
      metadataRouted = true;
    }
    if (opts.ipv6) {
      // A random ULA /64 of the test's own, on the veth only: the upstream routes back to the uplink's address.
      // Groups without leading zeros: the form tcpdump and servers print, which tests compare.
      const group = () => randomBytes(2).readUInt16BE(0).toString(16);
      const net = `fd${randomBytes(1).toString("hex")}:${group()}:${group()}:1`;
      hostAddress6 = `${net}::1`;
      address6 = `${net}::2`;
      sh("ip", ["-6", "addr", "add", `${hostAddress6}/64`, "dev", uplink, "nodad"]);
      nsExec(netns, ["ip", "-6", "addr", "add", `${address6}/64`, "dev", "eth0", "nodad"]);
      nsExec(netns, ["ip", "-6", "route", "add", "default", "via", hostAddress6]);
    }
  } catch (err) {
    remove(); // a half-made upstream would outlive the test that failed to make it
    throw err;
  }
  return {
    netns,
    uplink,
    hostAddress,
    address,
    metadataRouted,
    ...(hostAddress6 !== undefined && address6 !== undefined ? { hostAddress6, address6 } : {}),
    remove,
  };
}

/** A random ULA /112 for --link-cidr6 (test-owned: nothing else on the machine routes it). */
export function freeLinkCidr6(): string {
  const hex = () => randomBytes(2).toString("hex");
  return `fd${randomBytes(1).toString("hex")}:${hex()}:${hex()}:${hex()}::/112`;
}

/** A line the daemon wrote (stdout or stderr), with the time it arrived. */
export interface LogLine {
  /** ms since spawn */
  t: number;
  text: string;
}

/** A spawned daemon, ready or not. */
export interface DaemonProcess {
  prefix: string;
  socket: string;
  stateDir: string;
  linkCidr: string;
  client: NetslotClient;
  process: ChildProcess;
  /** performance.now() at spawn: the origin of `lines[].t`. */
  spawnedAt: number;
  /** Complete lines of stdout and stderr so far, as they arrived. */
  lines: LogLine[];
  output(): string;
  running(): boolean;
  /** SIGTERM and wait for exit (SIGKILL after `killAfterMs`, if given). */
  stop(opts?: { killAfterMs?: number }): Promise<void>;
  /** SIGKILL and wait for exit. */
  kill9(): Promise<void>;
}

export interface DaemonHandle extends DaemonProcess {
  /** Start again with the same options. */
  restart(extraArgs?: string[]): Promise<DaemonHandle>;
  /** Stop if running, purge the prefix, remove the temp dir. */
  cleanup(): Promise<void>;
}

export interface DaemonOptions {
  prefix: string;
  uplink: string;
  poolSize: number;
  linkCidr?: string;
  vtepRemote?: string;
  extraArgs?: string[];
  /** Reuse a state dir (restart tests). */
  stateDir?: string;
  env?: Record<string, string>;
  waitReady?: boolean;
  /** Keep the daemon's boot progress lines (the benchmarks read them); off by default. */
  progress?: boolean;
  /** The client's per-request timeout. */
  clientTimeoutMs?: number;
}

/**
 * Spawns `netslot daemon` with its own temp dir (state dir and socket) unless `stateDir`
 * is given, collecting its output; does not wait for it.
 */
export function spawnDaemon(opts: DaemonOptions): DaemonProcess {
  const dir = opts.stateDir ? path.dirname(opts.stateDir) : fs.mkdtempSync(path.join(os.tmpdir(), `netslot-${opts.prefix}-`));
  const stateDir = opts.stateDir ?? path.join(dir, "state");
  const socket = path.join(dir, "api.sock");
  const linkCidr = opts.linkCidr ?? freeLinkCidr();
  const args = [
    CLI,
    "daemon",
    "--prefix",
    opts.prefix,
    "--pool-size",
    String(opts.poolSize),
    "--state-dir",
    stateDir,
    "--socket",
    socket,
    "--uplink",
    opts.uplink,
    "--link-cidr",
    linkCidr,
    ...(opts.progress ? [] : ["--no-progress"]),
    ...(opts.vtepRemote ? ["--vtep-remote", opts.vtepRemote] : []),
    ...(opts.extraArgs ?? []),
  ];
  const spawnedAt = performance.now();
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...opts.env } });
  let output = "";
  let partial = "";
  const lines: LogLine[] = [];
  const onData = (d: Buffer) => {
    const t = performance.now() - spawnedAt;
    const text = d.toString();
    output += text;
    partial += text;
    let nl: number;
    while ((nl = partial.indexOf("\n")) >= 0) {
      lines.push({ t, text: partial.slice(0, nl) });
      partial = partial.slice(nl + 1);
    }
  };
  child.stdout.on("data", onData);
  child.stderr.on("data", onData);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const running = () => child.exitCode === null && child.signalCode === null;
  const client = new NetslotClient({ socketPath: socket, ...(opts.clientTimeoutMs !== undefined ? { timeoutMs: opts.clientTimeoutMs } : {}) });
  return {
    prefix: opts.prefix,
    socket,
    stateDir,
    linkCidr,
    client,
    process: child,
    spawnedAt,
    lines,
    output: () => output,
    running,
    async stop(stopOpts = {}) {
      if (running()) {
        child.kill("SIGTERM");
        const timer = stopOpts.killAfterMs !== undefined ? setTimeout(() => child.kill("SIGKILL"), stopOpts.killAfterMs) : undefined;
        await exited;
        clearTimeout(timer);
      }
      client.close();
    },
    async kill9() {
      if (running()) {
        child.kill("SIGKILL");
        await exited;
      }
      client.close();
    },
  };
}

/** Spawns a daemon (see spawnDaemon) and, unless `waitReady` is false, waits until it is ready. */
export async function startDaemon(opts: DaemonOptions): Promise<DaemonHandle> {
  const daemon = spawnDaemon(opts);
  const { linkCidr, stateDir } = daemon;
  const handle: DaemonHandle = {
    ...daemon,
    restart(extraArgs) {
      return startDaemon({ ...opts, linkCidr, stateDir, extraArgs: extraArgs ?? opts.extraArgs });
    },
    async cleanup() {
      await daemon.kill9();
      sh(process.execPath, [CLI, "purge", "--prefix", opts.prefix, "--state-dir", stateDir], { allowFail: true });
      fs.rmSync(path.dirname(stateDir), { recursive: true, force: true });
    },
  };
  if (opts.waitReady !== false) {
    try {
      await waitFor(async () => (await daemon.client.health()).status === "ready", 120_000, { abort: () => !daemon.running() });
    } catch (err) {
      throw new Error(`daemon did not become ready: ${(err as Error).message}\n${daemon.output()}`, { cause: err });
    }
  }
  return handle;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** True once the child has exited (by code or by signal). */
export function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/** Sends `signal` unless the child is gone already (SIGINT makes tcpdump flush), SIGKILL after `killAfterMs`; resolves on its exit. */
export async function stopChild(child: ChildProcess, signal: NodeJS.Signals = "SIGTERM", killAfterMs = 3_000): Promise<void> {
  if (exited(child)) return;
  const gone = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill(signal);
  const timer = setTimeout(() => child.kill("SIGKILL"), killAfterMs);
  await gone;
  clearTimeout(timer);
}

/**
 * Resolves once `marker` appears on the child's `stream` (stdout unless said); rejects
 * when the child exits first or after `timeoutMs`, with what it wrote. `what` names the
 * child in the message.
 */
export function waitForOutput(
  child: ChildProcess,
  marker: string,
  opts: { stream?: "stdout" | "stderr"; timeoutMs?: number; what?: string } = {},
): Promise<void> {
  const { stream = "stdout", timeoutMs = 10_000, what = "process" } = opts;
  return new Promise((resolve, reject) => {
    let seen = "";
    let other = "";
    const source = child[stream]!;
    const rest = child[stream === "stdout" ? "stderr" : "stdout"];
    const said = () => [seen.trim(), other.trim()].filter(Boolean).join("; ");
    const finish = (err?: Error) => {
      clearTimeout(timer);
      source.off("data", onData);
      rest?.off("data", onOther);
      child.off("exit", onExit);
      if (err) reject(err);
      else resolve();
    };
    const onData = (b: Buffer) => {
      seen += b.toString();
      if (seen.includes(marker)) finish();
    };
    const onOther = (b: Buffer) => {
      other += b.toString();
    };
    const onExit = (code: number | null, signal: NodeJS.Signals | null) => finish(new Error(`${what} exited (${signal ?? code}) before "${marker.trim()}": ${said()}`));
    const timer = setTimeout(() => finish(new Error(`${what}: no "${marker.trim()}" within ${timeoutMs} ms: ${said()}`)), timeoutMs);
    source.on("data", onData);
    rest?.on("data", onOther);
    child.on("exit", onExit);
  });
}

export interface WaitOptions {
  /** Stop waiting (with an error) once this is true, e.g. the process exited. */
  abort?: () => boolean;
  /** Poll interval; 20 ms by default. */
  intervalMs?: number;
}

/** Polls `cond` every `intervalMs` until it is true, `abort()` is true, or the timeout passes. */
export async function waitFor(cond: () => Promise<boolean> | boolean, timeoutMs: number, opts: WaitOptions = {}): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    if (opts.abort?.()) throw new Error("aborted (process exited)");
    try {
      if (await cond()) return;
    } catch (err) {
      lastError = err;
    }
    await sleep(opts.intervalMs ?? 20);
  }
  throw new Error(`timed out after ${timeoutMs} ms${lastError ? `: ${(lastError as Error).message}` : ""}`);
}

/** `nft -j list table` inside a namespace (or the root one), parsed. */
export function nftJsonIn(netns: string | undefined, args: string[]): { nftables: Array<Record<string, unknown>> } {
  const out = netns ? nsExec(netns, ["nft", "-j", ...args]) : sh("nft", ["-j", ...args]);
  return JSON.parse(out) as { nftables: Array<Record<string, unknown>> };
}

export function rootRuleCount(prefix: string): number {
  const doc = nftJsonIn(undefined, ["list", "table", "inet", prefix]);
  return doc.nftables.filter((e) => "rule" in e).length;
}

/**
 * A suite's `skip` option for a missing capability (root, QEMU): the reason to skip, or
 * false. When CI is set a missing capability is a failure, not a silent skip: this throws,
 * which fails the test file.
 */
export function skipUnless(available: boolean, reason: string): string | false {
  if (available) return false;
  if (process.env["CI"]) throw new Error(`CI is set and a capability is missing: ${reason}`);
  return reason;
}

/**
 * The usual suite fixture: registers hooks that create one upstream for `prefix` before the
 * suite and, after it, clean up every daemon the suite pushed to `daemons`, then the upstream.
 */
export function suiteFixture(prefix: string): { readonly upstream: Upstream; readonly daemons: DaemonHandle[] } {
  let upstream: Upstream | undefined;
  const daemons: DaemonHandle[] = [];
  before(() => {
    upstream = createUpstream(prefix);
  });
  after(async () => {
    for (const d of daemons) await d.cleanup();
    upstream?.remove();
  });
  return {
    get upstream(): Upstream {
      if (!upstream) throw new Error("suiteFixture: the upstream exists only once the suite has started");
      return upstream;
    },
    daemons,
  };
}

export interface DaemonSuiteOptions extends Omit<DaemonOptions, "prefix" | "uplink"> {
  /** createUpstream's options. */
  upstream?: { routeMetadata?: boolean; mtu?: number; ipv6?: boolean };
  /**
   * A config file for the daemon (`--config`), written to a temp dir of the suite's: the
   * document, or a function of the upstream that makes it.
   */
  config?: object | ((upstream: Upstream) => object);
  /** Runs after the suite, before the daemon's cleanup: stop what the suite started on its leases. */
  teardown?: () => unknown;
  /** The daemon may hand over (`netslot upgrade`): clean up whichever serves (cleanupServing). */
  handover?: boolean;
}

export interface DaemonSuite {
  prefix: string;
  /** The suite's upstream and daemon: usable in tests and hooks, once the suite's before hook made them. */
  upstream: Upstream;
  daemon: DaemonHandle;
  /** Where the daemon's config file goes (with `config`). */
  configFile: string;
  /** Starts the daemon again with the same options and state (DaemonHandle.restart); `daemon` stands for the new one from then on. */
  restart: (extraArgs?: string[]) => Promise<DaemonHandle>;
}

/**
 * The usual suite of one daemon: registers a before hook that creates an upstream for a fresh
 * prefix and starts a daemon on it, and an after hook that runs `teardown`, then cleans up
 * the daemon and the upstream, each even when the one before failed. Register the suite's
 * own before hooks after calling this (they run in order); its cleanup goes in `teardown`,
 * since an after hook that throws stops the ones registered after it.
 */
export function daemonSuite(opts: DaemonSuiteOptions): DaemonSuite {
  const { upstream: upstreamOptions, config, teardown, handover, ...daemonOptions } = opts;
  const prefix = testPrefix();
  const configFile = path.join(os.tmpdir(), `netslot-${prefix}-config.json`);
  let upstream: Upstream | undefined;
  let daemon: DaemonHandle | undefined;
  before(async () => {
    upstream = createUpstream(prefix, upstreamOptions);
    const extraArgs = [...(daemonOptions.extraArgs ?? [])];
    if (config !== undefined) {
      fs.writeFileSync(configFile, JSON.stringify(typeof config === "function" ? config(upstream) : config));
      extraArgs.unshift("--config", configFile);
    }
    daemon = await startDaemon({ ...daemonOptions, prefix, uplink: upstream.uplink, extraArgs });
  });
  after(async () => {
    try {
      await teardown?.();
    } finally {
      try {
        await (handover ? cleanupServing(daemon) : daemon?.cleanup());
      } finally {
        upstream?.remove();
        fs.rmSync(configFile, { force: true });
      }
    }
  });
  return {
    prefix,
    upstream: once(() => upstream, "daemonSuite's upstream"),
    daemon: once(() => daemon, "daemonSuite's daemon"),
    configFile,
    restart: async (extraArgs) => (daemon = await (daemon ?? fail("daemonSuite: no daemon to restart")).restart(extraArgs)),
  };
}

/** A server spawned in a namespace: its stdout so far (stderr goes to the test's). */
export interface NetnsServer {
  child: ChildProcess;
  output(): string;
  stop(): void;
}

/** Spawns `argv` in `netns` and waits (10 s at most) until its stdout says `ready`; kills it if it does not. */
export async function startServerIn(netns: string, argv: string[], ready: string): Promise<NetnsServer> {
  const child = spawn("ip", ["netns", "exec", netns, ...argv], { stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  child.stdout.on("data", (b: Buffer) => (out += b.toString()));
  const server = { child, output: () => out, stop: () => void child.kill("SIGKILL") };
  try {
    await waitFor(() => out.includes(ready), 10_000, { abort: () => exited(child) });
  } catch (err) {
    server.stop();
    throw new Error(`${argv.join(" ").slice(0, 80)} in ${netns}: no "${ready}": ${(err as Error).message}`, { cause: err });
  }
  return server;
}

function fail(message: string): never {
  throw new Error(message);
}

/**
 * Stands for the object `get()` returns once a before hook made it, so that a suite's body
 * can name it before it exists (as `const`, without a `let` and a hook of its own). Reads
 * before then fail with a clear error.
 */
function once<T extends object>(get: () => T | undefined, what: string): T {
  const target = (): T => get() ?? fail(`${what} exists only once the suite has started (see its before hook)`);
  return new Proxy({} as T, {
    get(_, key) {
      const obj = target();
      const value: unknown = Reflect.get(obj, key);
      return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(obj) : value;
    },
    has: (_, key) => Reflect.has(target(), key),
    ownKeys: () => Reflect.ownKeys(target()),
    getOwnPropertyDescriptor(_, key) {
      const d = Reflect.getOwnPropertyDescriptor(target(), key);
      return d && { ...d, configurable: true };
    },
  });
}

/**
 * Cleans up after a suite whose daemon may have handed over (`netslot upgrade`): the daemon
 * serving now, named by the pid file, may be a process the test did not start.
 */
export async function cleanupServing(daemon: DaemonHandle | undefined): Promise<void> {
  if (!daemon) return;
  try {
    const pid = Number(fs.readFileSync(pidFilePath(daemon.stateDir), "utf8").trim());
    if (pid !== daemon.process.pid) process.kill(pid, "SIGKILL");
  } catch {
    // No pid file, or no such process: nothing else runs.
  }
  await daemon.cleanup();
}
