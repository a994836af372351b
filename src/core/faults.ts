// Named fault-injection points for crash tests. Off unless the daemon was started with the
// test-only environment variable NETSLOT_TEST_FAULT=<point>[@<n>] (kill at the n-th time the
// point is reached, default 1st). Nothing in the API can turn them on. At a point the
// process dies with SIGKILL, exactly as an outside kill -9 would leave it; with
// <point>:throw[@<n>] the point throws an Error instead, from the n-th time on (a kernel
// operation that keeps failing); with :exit the thread exits (in the scrub worker: the
// worker dies, not the daemon) and with :hang it blocks for good (a kernel call that
// never returns), both once: the variable is cleared, and the worker shares it.
import { createLogger, type Logger } from "./log.js";

/** Every fault point, so harnesses can iterate them. Names are stable. */
export const FAULT_POINTS = [
  "boot.after-store-open",
  "boot.after-reconcile",
  "boot.mid-build",
  "build.after-netns",
  "build.after-host-side",
  "acquire.after-store",
  "acquire.after-tenant",
  "release.after-store",
  "scrub.before",
  "scrub.after-kernel",
  "scrub.after-store",
  "expire.before",
  "renew.after-store",
  "shutdown.before-close",
] as const;

export type FaultPoint = (typeof FAULT_POINTS)[number];

let logger: Logger | undefined;

/** The logger a fault point's line goes to (the daemon's, or the scrub worker's); a default one otherwise. */
export function useFaultLogger(l: Logger): void {
  logger = l;
}

const spec = process.env.NETSLOT_TEST_FAULT;
let target: FaultPoint | undefined;
let remaining = 0;
let mode: string | undefined;
if (spec) {
  const [point, count] = spec.split("@");
  const [name, how] = point!.split(":");
  mode = how;
  if ((FAULT_POINTS as readonly string[]).includes(name!)) {
    target = name as FaultPoint;
    remaining = Math.max(1, Number(count ?? 1) || 1);
  }
}

/** Dies here with SIGKILL (or throws) when this point is the armed one and its count is reached. */
export function faultPoint(name: FaultPoint): void {
  if (target !== name) return;
  if (--remaining > 0) return;
  if (mode === "throw") {
    remaining = 1; // every later pass fails too
    throw new Error(`fault point ${name}: injected failure`);
  }
  if (mode === "exit" || mode === "hang") {
    target = undefined;
    delete process.env.NETSLOT_TEST_FAULT;
    (logger ??= createLogger()).warn({ faultPoint: name }, `fault point ${name} reached: ${mode}`);
    if (mode === "exit") process.exit(70);
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
  }
  // The logger writes synchronously: a worker thread's process.stderr is flushed by the main thread, too late.
  (logger ??= createLogger()).warn({ faultPoint: name }, `fault point ${name} reached: SIGKILL`);
  process.kill(process.pid, "SIGKILL");
}
