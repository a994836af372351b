// A guest stand-in for tests: a network namespace with a full kernel stack, wired to a
// slot's tap0 by test/support/taprelay so it sends and receives exactly what a VM on the
// slot would. Test support only: spawns `ip` and the relay freely.
//
//   slot netns                       guest netns <name>
//   tap0 ◀── taprelay (TUNSETIFF) ──▶ r0 (AF_PACKET) ◀─veth─▶ g0 169.254.0.21/30
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { GATEWAY_IP, GUEST_IP, GUEST_MAC, GUEST_PREFIX_LENGTH } from "../../src/dataplane/topology.js";
import { REPO_ROOT, exited, waitForOutput } from "./env.js";

export interface ExecResult {
  /** Exit code, or -1 when killed by a signal (see `signal`). */
  code: number;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface ExecOptions {
  /** Killed with SIGKILL after this long; default 30 s. */
  timeoutMs?: number;
  /** Written to the command's stdin (then closed). */
  input?: string;
}

/** Runs a command to completion and collects its output (never rejects on a non-zero exit). */
export function run(cmd: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const [file, ...args] = cmd;
  if (file === undefined) return Promise.reject(new Error("run: empty command"));
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ["pipe", "pipe", "pipe"] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (b: Buffer) => out.push(b));
    child.stderr.on("data", (b: Buffer) => err.push(b));
    const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 30_000);
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({
        code: code ?? -1,
        signal,
        stdout: Buffer.concat(out).toString(),
        stderr: Buffer.concat(err).toString(),
      });
    });
    child.stdin.on("error", () => {}); // the command may exit without reading its input
    child.stdin.end(opts.input ?? "");
  });
}

/** Like `run`, but rejects unless the command exits 0. */
export async function runOk(cmd: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const r = await run(cmd, opts);
  if (r.code !== 0) {
    throw new Error(`${cmd.join(" ")} failed (${r.signal ?? r.code}): ${r.stderr.trim() || r.stdout.trim()}`);
  }
  return r;
}

// Last-resort cleanup for kernel objects and processes a test created: runs synchronously
// when the process exits or is interrupted, so a failing or aborted test leaves nothing.
const cleanups = new Set<() => void>();
let hooked = false;

function runCleanups(): void {
  for (const fn of [...cleanups]) {
    cleanups.delete(fn);
    try {
      fn();
    } catch {
      // best effort: keep going with the others
    }
  }
}

/** Registers a synchronous cleanup for process exit; returns its unregister function. */
export function registerCleanup(fn: () => void): () => void {
  if (!hooked) {
    hooked = true;
    process.on("exit", runCleanups);
    for (const sig of ["SIGINT", "SIGTERM"] as const) {
      process.once(sig, () => {
        runCleanups();
        process.kill(process.pid, sig);
      });
    }
  }
  cleanups.add(fn);
  return () => {
    cleanups.delete(fn);
  };
}

/** `ip netns delete NAME`, synchronously; a missing namespace is success. */
function deleteNetnsSync(name: string): void {
  try {
    execFileSync("ip", ["netns", "delete", name], { stdio: "ignore" });
  } catch {
    // already gone
  }
}

let relayBuilt: Promise<string> | undefined;

/** Builds test/support/taprelay if needed (`make -C test/support`) and returns its path. */
export function taprelayPath(): Promise<string> {
  relayBuilt ??= (async () => {
    const dir = path.join(REPO_ROOT, "test", "support");
    await runOk(["make", "-s", "-C", dir], { timeoutMs: 60_000 });
    return path.join(dir, "taprelay");
  })();
  return relayBuilt;
}

export interface GuestStandInOptions {
  /** The slot's namespace, e.g. /run/netns/P-3; must hold a persistent tap0. */
  slotNetnsPath: string;
  /** Name of the guest namespace to create (unique per test). */
  name: string;
  /** g0's MTU (the lease's MTU); default 1500. */
  mtu?: number;
  /** g0's address and default gateway; the slot guest's (GUEST_IP/30 via GATEWAY_IP) unless given. */
  ip?: { address: string; prefixLength: number; gateway: string };
}

export interface GuestStandIn {
  /** Name of the guest namespace (for `ip -n`). */
  readonly netns: string;
  readonly netnsPath: string;
  /** Interface configured as the guest: GUEST_MAC, GUEST_IP/30 via GATEWAY_IP (or the `ip` asked for). */
  readonly ifname: string;
  readonly relayPid: number;
  /** Runs `cmd` inside the guest namespace (`ip netns exec`). */
  exec(cmd: string[], opts?: ExecOptions): Promise<ExecResult>;
  /** Kills the relay (tap0 goes NO-CARRIER) and deletes the namespace. Idempotent. */
  stop(): Promise<void>;
}

/** Creates the guest namespace, wires it to the slot's tap0 and waits for the relay. */
export async function startGuestStandIn(opts: GuestStandInOptions): Promise<GuestStandIn> {
  const { slotNetnsPath, name } = opts;
  const mtu = opts.mtu ?? 1500;
  const ip = opts.ip ?? { address: GUEST_IP, prefixLength: GUEST_PREFIX_LENGTH, gateway: GATEWAY_IP };
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$/.test(name)) throw new Error(`bad guest namespace name: ${name}`);
  if (!fs.existsSync(slotNetnsPath)) throw new Error(`slot namespace ${slotNetnsPath} does not exist`);
  const relay = await taprelayPath();
  const netnsPath = `/run/netns/${name}`;

  await runOk(["ip", "netns", "add", name]);
  let child: ChildProcess | undefined;
  // What a test started in the guest in the background (a server) would outlive the
  // namespace's name, and keep the namespace itself alive: killed with it.
  const killInside = () => {
    try {
      for (const pid of execFileSync("ip", ["netns", "pids", name], { encoding: "utf8" }).split("\n").filter(Boolean)) process.kill(Number(pid), "SIGKILL");
    } catch {
      // no such namespace (any more), or the process is gone
    }
  };
  const unregister = registerCleanup(() => {
    if (child && !exited(child)) child.kill("SIGKILL");
    killInside();
    deleteNetnsSync(name);
  });

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (child && !exited(child)) {
        const c = child;
        const gone = new Promise<void>((resolve) => c.once("exit", () => resolve()));
        c.kill("SIGTERM");
        const timer = setTimeout(() => c.kill("SIGKILL"), 2_000);
        await gone;
        clearTimeout(timer);
      }
      killInside();
      await run(["ip", "netns", "delete", name]);
      unregister();
    })();
    return stopping;
  };

  try {
    // r0 carries the relay's frames; g0 is the guest's NIC, with the guest's MAC, address and
    // route. Both get the lease MTU: veth drops frames larger than the receiving end's MTU.
    await runOk(["ip", "-n", name, "-batch", "-"], {
      input: [
        "link set lo up",
        `link add g0 mtu ${mtu} address ${GUEST_MAC} type veth peer name r0 mtu ${mtu}`,
        "link set r0 up",
        "link set g0 up",
        `addr add ${ip.address}/${ip.prefixLength} dev g0`,
        `route add default via ${ip.gateway}`,
        "",
      ].join("\n"),
    });
    const c = spawn(relay, [slotNetnsPath, netnsPath, "r0"], { stdio: ["ignore", "pipe", "pipe"] });
    child = c;
    await waitForOutput(c, "ready\n", { timeoutMs: 5_000, what: "taprelay" });
    // Keep draining the pipes so the relay never blocks on a full one.
    c.stdout?.resume();
    c.stderr?.on("data", (b: Buffer) => process.stderr.write(`[taprelay ${name}] ${b.toString()}`));
    return {
      netns: name,
      netnsPath,
      ifname: "g0",
      relayPid: c.pid ?? -1,
      exec: (cmd, execOpts) => run(["ip", "netns", "exec", name, ...cmd], execOpts),
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
