// Live handover (`netslot upgrade`): the running daemon starts a new one from the code now
// installed and hands it the listening socket and the pool. Spawning is fine here: this is
// an operator action, not the request path.
//
//   old                                         new (fork, IPC channel)
//   fork with the running flags + overrides ─▶  parse config, load code
//                                          ◀─   prepared
//   hold new requests, finish running ones,
//   stop expiry / owner watching / scrubs
//   (from here nothing here writes the store
//   or touches a slot)                    ─▶   adopt: open store + dataplane, boot
//                                                (adopts every slot and lease, rebuilds nothing)
//                                          ◀─   booted
//   listening socket (SCM_RIGHTS)         ─▶   serve it; pid file; sd_notify MAINPID+READY
//                                          ◀─   serving
//   stop accepting; relay what this daemon
//   still receives on open keep-alive
//   connections; exit when they are closed
//
// Until "serving", a failure (a message, an exit, a timeout) kills the new process and
// the old one resumes with what it held; requests it held are answered, none failed.
import { fork, type ChildProcess } from "node:child_process";
import type * as net from "node:net";
import { NetslotError } from "../core/errors.js";
import type { ApiServer } from "../api/server.js";
import type { UpgradeResult } from "../core/types.js";
import type { Pool } from "../pool/pool.js";
import type { Logger } from "../core/log.js";

/** Set in the new daemon's environment; nothing else starts a daemon in handover mode. */
export const HANDOVER_ENV = "NETSLOT_HANDOVER";

type ToNew = { type: "adopt" } | { type: "socket" };
type FromNew = { type: "prepared" } | { type: "booted" } | { type: "serving"; pid: number; version: string } | { type: "failed"; message: string };

/** Flags an upgrade may not change: they name the daemon the new one replaces. */
const FIXED_FLAGS = new Set(["--socket", "--state-dir", "--prefix", "--link-cidr"]);

const PREPARE_TIMEOUT_MS = 30_000;
const BOOT_TIMEOUT_MS = 60_000;
const SERVE_TIMEOUT_MS = 10_000;
/**
 * Longest the old daemon waits for clients to close their keep-alive connections: well past
 * the idle timeout it announced (5 s), so that only a client ignoring it meets the close.
 */
const DRAIN_TIMEOUT_MS = 60_000;
/**
 * Test-only: blocks this daemon's event loop this long during the handoff, as a large
 * pool's quiesce and handoff keep it busy.
 */
const TEST_HOLD_MS = Number(process.env.NETSLOT_TEST_HANDOVER_HOLD_MS ?? 0) || 0;

/** `--flag value` / `--flag=value` / `--switch` groups, in order. */
function flagGroups(args: string[]): Array<{ name: string; tokens: string[] }> {
  const groups: Array<{ name: string; tokens: string[] }> = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (!arg.startsWith("--")) throw new NetslotError("invalid_request", `expected a --flag, got "${arg}"`, { field: "/args" });
    const eq = arg.indexOf("=");
    if (eq > 0) {
      groups.push({ name: arg.slice(0, eq), tokens: [arg] });
      continue;
    }
    const next = args[i + 1];
    if (next !== undefined && !next.startsWith("--")) {
      groups.push({ name: arg, tokens: [arg, next] });
      i++;
    } else groups.push({ name: arg, tokens: [arg] });
  }
  return groups;
}

/**
 * The new daemon's flags: the running ones, each flag given in `overrides` replaced by
 * the override. Not validated here: the new code may know flags this one does not.
 */
export function mergeDaemonArgs(running: string[], overrides: string[]): string[] {
  const replacing = flagGroups(overrides);
  for (const g of replacing) {
    if (FIXED_FLAGS.has(g.name)) throw new NetslotError("invalid_request", `${g.name} cannot change in an upgrade: it names the daemon being replaced`, { field: "/args" });
  }
  const names = new Set(replacing.map((g) => g.name));
  return [...flagGroups(running).filter((g) => !names.has(g.name)), ...replacing].flatMap((g) => g.tokens);
}

export interface HandoverOptions {
  api: ApiServer;
  pool: Pool;
  /** The running daemon's own flags (after `daemon`). */
  args: string[];
  socket: string;
  version: string;
  logger: Logger;
  /** Closes the pool, dataplane and store and exits: the new daemon serves. */
  exit: () => Promise<void>;
}

/** The old daemon's side. */
export class Handover {
  private running = false;

  constructor(private readonly options: HandoverOptions) {}

  async upgrade(overrides: string[]): Promise<UpgradeResult> {
    if (this.running) throw new NetslotError("upgrade_failed", "another upgrade is under way");
    if (this.options.pool.health().status !== "ready") throw new NetslotError("upgrade_failed", "the pool is still being built; upgrade once it is ready");
    const args = mergeDaemonArgs(this.options.args, overrides);
    this.running = true;
    const started = performance.now();
    const { api, pool, logger } = this.options;
    logger.info(`upgrade: starting a new daemon: ${args.join(" ")}`);
    const child = fork(process.argv[1]!, ["daemon", ...args], {
      env: { ...process.env, [HANDOVER_ENV]: "1" },
      stdio: ["ignore", "inherit", "inherit", "ipc"],
      // Its own process group: a signal to this daemon's group (a terminal's ^C) is not for it.
      detached: true,
      execArgv: process.execArgv,
    });
    const channel = new Channel(child);
    let quiesced = false;
    let heldFrom: number;
    try {
      await channel.next("prepared", PREPARE_TIMEOUT_MS);
      heldFrom = performance.now();
      api.keepIdleConnections(true);
      await api.gate.pause();
      await pool.quiesce();
      quiesced = true;
      if (TEST_HOLD_MS > 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, TEST_HOLD_MS);
      logger.info("upgrade: requests held, pool quiesced; the new daemon adopts the pool");
      channel.send({ type: "adopt" });
      await channel.next("booted", BOOT_TIMEOUT_MS);
      channel.send({ type: "socket" }, api.listeningServer());
      const serving = await channel.next("serving", SERVE_TIMEOUT_MS);
      // Committed: the new daemon accepts on the socket. This one stops, and what still
      // reaches it on open connections goes to the new one.
      const drained = api.stopAccepting();
      api.gate.forward(this.options.socket);
      channel.close();
      child.unref();
      const handoverMs = performance.now() - started;
      const heldMs = performance.now() - heldFrom;
      logger.info({ newPid: serving.pid, version: serving.version, handoverMs: Math.round(handoverMs), heldMs: Math.round(heldMs) }, `upgrade: pid ${serving.pid} (${serving.version}) serves after ${handoverMs.toFixed(0)} ms (requests held ${heldMs.toFixed(0)} ms); finishing open connections`);
      void Promise.race([drained, new Promise((r) => setTimeout(r, DRAIN_TIMEOUT_MS).unref())]).then(() => this.options.exit());
      return { previous: { pid: process.pid, version: this.options.version }, current: { pid: serving.pid, version: serving.version }, handoverMs, heldMs };
    } catch (err) {
      channel.close();
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      if (quiesced) pool.resume();
      api.gate.resume();
      api.keepIdleConnections(false);
      this.running = false;
      const message = err instanceof Error ? err.message : String(err);
      logger.warn(`upgrade failed, this daemon keeps serving: ${message}`);
      throw new NetslotError("upgrade_failed", `the new daemon did not take over: ${message}`, { cause: err });
    }
  }
}

/** Messages from the new daemon, one awaited at a time; its exit or "failed" rejects. */
class Channel {
  private queue: FromNew[] = [];
  private waiter: { resolve: (m: FromNew) => void; reject: (e: Error) => void } | undefined;
  private ended: Error | undefined;

  constructor(private readonly child: ChildProcess) {
    child.on("message", (m: FromNew) => {
      if (m.type === "failed") this.end(new Error(m.message));
      else if (this.waiter) this.waiter.resolve(m);
      else this.queue.push(m);
    });
    child.once("exit", (code, signal) => this.end(new Error(`it exited (${signal ?? `code ${code}`}) before taking over`)));
    child.once("error", (err) => this.end(err));
  }

  private end(err: Error): void {
    if (this.ended) return;
    this.ended = err;
    this.waiter?.reject(err);
  }

  send(message: ToNew, handle?: net.Server): void {
    this.child.send(message, handle);
  }

  async next<T extends FromNew["type"]>(type: T, timeoutMs: number): Promise<Extract<FromNew, { type: T }>> {
    const got = await new Promise<FromNew>((resolve, reject) => {
      const early = this.queue.shift();
      if (early) return resolve(early);
      if (this.ended) return reject(this.ended);
      const timer = setTimeout(() => reject(new Error(`no "${type}" from it within ${timeoutMs / 1000} s`)), timeoutMs);
      this.waiter = {
        resolve: (m) => {
          clearTimeout(timer);
          this.waiter = undefined;
          resolve(m);
        },
        reject: (e) => {
          clearTimeout(timer);
          this.waiter = undefined;
          reject(e);
        },
      };
    });
    if (got.type !== type) throw new Error(`expected "${type}", got "${got.type}"`);
    return got as Extract<FromNew, { type: T }>;
  }

  close(): void {
    this.child.removeAllListeners("message");
    if (this.child.connected) this.child.disconnect();
  }
}

/** The new daemon's side: present when this process was started by a handover. */
export class HandoverChild {
  private readonly inbox: Array<{ message: ToNew; handle: unknown }> = [];
  private waiting: ((m: { message: ToNew; handle: unknown }) => void) | undefined;

  private constructor(logger: Logger) {
    process.on("message", (message: ToNew, handle: unknown) => {
      const m = { message, handle };
      if (this.waiting) this.waiting(m);
      else this.inbox.push(m);
    });
    // The old daemon gone before the handover completed: it resumed or died; either way
    // this one must not serve.
    process.once("disconnect", () => {
      if (!this.done) {
        logger.fatal({ exitCode: 1 }, "the old daemon left before the handover completed; this one does not serve (run netslot upgrade again)");
        process.exit(1);
      }
    });
  }

  private done = false;

  static fromEnvironment(logger: Logger): HandoverChild | undefined {
    if (process.env[HANDOVER_ENV] !== "1" || !process.send) return undefined;
    delete process.env[HANDOVER_ENV];
    return new HandoverChild(logger);
  }

  /** The old daemon's pid: the pid file names it until this one serves. */
  get parentPid(): number {
    return process.ppid;
  }

  send(message: FromNew): void {
    process.send!(message);
  }

  async next(type: ToNew["type"]): Promise<unknown> {
    const m = this.inbox.shift() ?? (await new Promise<{ message: ToNew; handle: unknown }>((resolve) => (this.waiting = resolve)));
    this.waiting = undefined;
    if (m.message.type !== type) throw new Error(`handover: expected "${type}" from the old daemon, got "${m.message.type}"`);
    return m.handle;
  }

  /** Serving: the channel is no longer needed (and must not keep the old one alive). */
  finish(pid: number, version: string): void {
    this.done = true;
    process.send!({ type: "serving", pid, version } satisfies FromNew, () => process.disconnect());
  }

  /** Tells the old daemon why this one cannot take over (it then keeps serving); resolves once sent. */
  static reportFailure(message: string): Promise<void> {
    if (!process.send || !process.connected) return Promise.resolve();
    return new Promise((resolve) =>
      process.send!({ type: "failed", message } satisfies FromNew, () => {
        process.disconnect();
        resolve();
      }),
    );
  }
}
