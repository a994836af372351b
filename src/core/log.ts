// The one structured logger of the daemon and its threads (pino). Off a terminal every line
// is one JSON object with level, time and msg (the journal and log shippers parse it); on a
// terminal, or with --log-format pretty, pino-pretty renders it for people.
//
// Layers below the daemon receive a `Logger` (the interface here), never the daemon's
// instance: the daemon makes the root logger, children add fixed fields (thread, component).
//
// Writes are synchronous (fd 2, no worker transport): a fatal line must be on stderr before
// process.exit, a fault point's before SIGKILL, and the daemon logs events (boot, scrubs,
// audits), not requests, so a write() per line costs nothing on the request path.
import { AsyncLocalStorage } from "node:async_hooks";
import { pino, stdTimeFunctions, type DestinationStream } from "pino";
import pretty from "pino-pretty";

export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const LOG_FORMATS = ["auto", "json", "pretty"] as const;
/** auto: pretty when stderr is a terminal, JSON lines otherwise. */
export type LogFormat = (typeof LOG_FORMATS)[number];

export interface LogFn {
  (msg: string): void;
  (fields: object, msg: string): void;
}

/** What a layer needs to log: pino's methods, structurally (a pino logger is one). */
export interface Logger {
  fatal: LogFn;
  error: LogFn;
  warn: LogFn;
  info: LogFn;
  debug: LogFn;
  trace: LogFn;
  /** A logger whose every line carries `bindings` (e.g. { thread: "scrub" }). */
  child(bindings: Record<string, unknown>): Logger;
}

export interface LogOptions {
  level?: LogLevel;
  format?: LogFormat;
  /** Fields on every line. */
  bindings?: Record<string, unknown>;
  /** Where lines go; fd 2 (synchronously) when not given. Tests pass a stream. */
  destination?: DestinationStream;
}

/**
 * The request a line is logged for. `open` turns false when the request is answered, so
 * that a timer or a background job started while serving it (expiry, scrub) does not carry
 * its id forever.
 */
interface RequestScope {
  reqId: string;
  open: boolean;
}

const requestScope = new AsyncLocalStorage<RequestScope>();

/** Runs `fn` (serving one request) so that every line logged while it runs carries `reqId`. */
export function inRequestScope<T>(reqId: string, fn: () => Promise<T>): Promise<T> {
  const scope: RequestScope = { reqId, open: true };
  return requestScope.run(scope, fn).finally(() => {
    scope.open = false;
  });
}

/** The id of the request being served, if any. */
export function currentRequestId(): string | undefined {
  const scope = requestScope.getStore();
  return scope?.open ? scope.reqId : undefined;
}

function prettyWanted(format: LogFormat): boolean {
  return format === "pretty" || (format === "auto" && process.stderr.isTTY);
}

export function createLogger(options: LogOptions = {}): Logger {
  const format = options.format ?? "auto";
  const destination =
    options.destination ??
    (prettyWanted(format)
      ? pretty({ destination: 2, sync: true, colorize: process.stderr.isTTY, translateTime: "SYS:HH:MM:ss.l", ignore: "pid", singleLine: true })
      : pino.destination({ fd: 2, sync: true }));
  return pino(
    {
      level: options.level ?? "info",
      // Names, not numbers: `"level":"warn"` is what an operator greps for.
      formatters: { level: (label) => ({ level: label }) },
      timestamp: stdTimeFunctions.isoTime,
      // pid tells two daemons of a handover apart on one journal; the host is the journal's.
      base: { pid: process.pid, ...options.bindings },
      mixin: () => {
        const reqId = currentRequestId();
        // A new object each time: pino merges the line's own fields into it.
        return reqId === undefined ? {} : { reqId };
      },
    },
    destination,
  );
}

/** A logger that drops everything (library users and unit tests that do not care). */
export const silentLogger: Logger = pino({ level: "silent" });

/** Adapts a logger to the `(msg) => void` callbacks some layers still take. */
export function logLine(logger: Logger, level: "error" | "warn" | "info" | "debug" = "info"): (msg: string) => void {
  return (msg) => logger[level](msg);
}
