// `netslot daemon`: wires the store, the dataplane, the pool and the API together, boots
// the pool, and stops cleanly on SIGTERM, leaving the slots in place for the next start.
import * as fs from "node:fs";
import * as path from "node:path";
import { createApiServer } from "../api/server.js";
import { SlotDataplane, defaultRouteDevice, linkCidrConflicts, linkCidr6Conflicts } from "../dataplane/dataplane.js";
import { parseCidr, parseCidr6 } from "../dataplane/topology.js";
import { Pool, type BootProgress } from "../pool/pool.js";
import { Scrubber } from "../pool/scrubber.js";
import type { AuditEvent } from "../core/types.js";
import { ConsumerDirectory } from "../tenancy/consumers.js";
import { Quotas } from "../tenancy/quotas.js";
import { createMetrics } from "../core/metrics.js";
import { LeaseStore } from "../store/store.js";
import { ConfigError, parseDaemonArgs, type DaemonConfig } from "./config.js";
import { createLogger, logLine, type Logger } from "../core/log.js";
import { removePidFile, runningDaemon, writePidFile } from "./pidfile.js";
import { faultPoint, useFaultLogger } from "../core/faults.js";
import { kernelBootId, processTree } from "../kernel/procfs.js";
import { PACKAGE_ROOT, packageVersion } from "../core/version.js";
import { sdNotify } from "../kernel/sdnotify.js";
import { listenUnix } from "../kernel/unixsocket.js";
import { Handover, HandoverChild } from "./handover.js";
import type * as net from "node:net";
import { ProfileCatalog } from "../core/profiles.js";
import { DnsForwarder } from "./dns-forwarder.js";
import { resolvConfUpstream } from "./config.js";
import { cidrContains, ipToInt } from "../dataplane/topology.js";
import * as nodeFs from "node:fs";
import { monitorEventLoopDelay } from "node:perf_hooks";

export const BPF_OBJECT = path.join(PACKAGE_ROOT, "bpf", "nat.o");
export { PACKAGE_ROOT, packageVersion };

/**
 * Share of the pool that may fail to build before the daemon refuses to serve: a few
 * broken slots are logged and counted, a pool that mostly cannot be built means the host
 * or the configuration is wrong, and saying "ready" would hide it from systemd.
 */
export const MAX_MISSING_SHARE = 0.1;
/** The event-loop delay monitor's timer period: fine enough to see 1 ms stalls often, cheap (200 wake-ups a second). */
const EVENT_LOOP_RESOLUTION_MS = 5;

/** One line per audited event, msg "audit" (operators filter on it): event, consumer, lease, slot, reason, by; reqId when a request caused it. */
function auditTo(logger: Logger): (event: AuditEvent) => void {
  return (event) => logger.info(event, "audit");
}

/** A group name or gid → gid, from /etc/group (no process spawned). */
export function resolveGroup(group: string): number {
  if (/^[0-9]+$/.test(group)) return Number(group);
  let text = "";
  try {
    text = fs.readFileSync("/etc/group", "utf8");
  } catch {
    // handled below
  }
  for (const line of text.split("\n")) {
    const [name, , gid] = line.split(":");
    if (name === group && gid !== undefined && /^[0-9]+$/.test(gid)) return Number(gid);
  }
  throw new ConfigError(`--socket-group ${group}: no such group in /etc/group`);
}

/** A boot progress line: the text people and bench/ read, the figures as fields. */
function logProgress(logger: Logger, p: BootProgress): void {
  const seconds = p.elapsedMs / 1000;
  const builtThisRun = p.built - p.adopted;
  const rate = seconds > 0 ? builtThisRun / seconds : 0;
  const remaining = p.toBuild - builtThisRun - p.failed;
  const eta = rate > 0 ? remaining / rate : 0;
  logger.info(
    { built: p.built, total: p.total, adopted: p.adopted, failed: p.failed, slotsPerSecond: Math.round(rate), etaSeconds: Number(eta.toFixed(1)) },
    `pool ${p.built}/${p.total} (${p.adopted} adopted) ${rate.toFixed(0)} slots/s ETA ${eta.toFixed(1)}s${p.failed ? ` failed ${p.failed}` : ""}`,
  );
}

/**
 * `netslot daemon ARGS`: runs the daemon until a signal. A daemon that cannot start writes
 * ONE fatal line and exits non-zero: 2 for a bad configuration (the line says which flag or
 * key), 1 when it cannot serve (its data path cannot be set up, boot fails, the pool cannot
 * be built). Started by `netslot upgrade`, it tells the old daemon too, which keeps serving.
 */
export async function daemonMain(args: string[]): Promise<void> {
  let config: DaemonConfig;
  try {
    config = parseDaemonArgs(args);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    // The configuration is what failed: log with the defaults (JSON off a terminal).
    return exitFatal(createLogger(), err.message, 2);
  }
  const logger = createLogger({ level: config.logLevel, format: config.logFormat });
  useFaultLogger(logger);
  // A bug that escapes every handler still ends as one fatal line (with the stack), not a raw trace.
  process.on("uncaughtException", (err) => {
    logger.fatal({ err, exitCode: 1 }, `uncaught exception, exiting: ${err.message}`);
    process.exit(1);
  });
  // Started by a running daemon's `netslot upgrade`: take over from it rather than start.
  const handover = HandoverChild.fromEnvironment(logger);
  try {
    await serve(config, args, handover, logger);
  } catch (err) {
    if (err instanceof ConfigError) return exitFatal(logger, err.message, 2);
    return exitFatal(logger, `cannot serve: ${(err as Error).message}`, 1);
  }
}

/** The one fatal line (written synchronously: it is on stderr before the exit), told to the old daemon of a handover too. */
async function exitFatal(logger: Logger, message: string, exitCode: 1 | 2): Promise<never> {
  logger.fatal({ exitCode }, message);
  await HandoverChild.reportFailure(message);
  process.exit(exitCode);
}

/** Type=notify: ready, and (after a handover) the main pid is this process now. */
function notifySystemd(logger: Logger): void {
  try {
    sdNotify(`READY=1\nMAINPID=${process.pid}`);
  } catch (err) {
    logger.warn(`could not notify systemd: ${(err as Error).message}`);
  }
}

/**
 * `args` are the daemon's own flags: an upgrade starts the next daemon with them. With
 * `handover`, this process takes the pool and the socket over from a running daemon.
 */
async function serve(config: DaemonConfig, args: string[], handover: HandoverChild | undefined, logger: Logger): Promise<void> {
  if (process.getuid?.() !== 0) throw new ConfigError("netslot daemon must run as root");
  if (!fs.existsSync(BPF_OBJECT)) throw new ConfigError(`eBPF object ${BPF_OBJECT} is missing: run npm run build`);
  const uplink = config.uplink ?? defaultRouteDevice();
  if (!uplink) throw new ConfigError("no --uplink given and no default route to take it from");
  const socketGroup = config.socketGroup === undefined ? undefined : resolveGroup(config.socketGroup);
  const consumers = new ConsumerDirectory(config.consumers, config.poolSize);

  const other = runningDaemon(config.stateDir);
  if (other !== undefined && other !== handover?.parentPid) throw new ConfigError(`another daemon (pid ${other}) runs on ${config.stateDir}`);
  const taken = (flag: string, cidr: string, conflicts: string[]) => {
    if (conflicts.length === 0) return;
    throw new ConfigError(
      `${flag} ${cidr} is already routed on this host (${conflicts.slice(0, 3).join("; ")}${conflicts.length > 3 ? `; ${conflicts.length - 3} more` : ""}); pick a free range`,
    );
  };
  taken("--link-cidr", config.linkCidr, linkCidrConflicts(config.prefix, parseCidr(config.linkCidr)));
  if (config.linkCidr6 !== undefined) taken("--link-cidr6", config.linkCidr6, linkCidr6Conflicts(config.prefix, parseCidr6(config.linkCidr6)));
  if (handover) {
    // The old daemon holds requests and stops changing the pool once it hears this; then
    // the store and the slots are this daemon's.
    handover.send({ type: "prepared" });
    await handover.next("adopt");
  } else writePidFile(config.stateDir);
  fs.mkdirSync(path.dirname(config.socket), { recursive: true, mode: 0o755 });
  const store = LeaseStore.open(config.stateDir);
  const previous = store.fingerprint();
  if (previous && (previous.prefix !== config.prefix || previous.linkCidr !== config.linkCidr)) {
    throw new ConfigError(
      `${config.stateDir} belongs to prefix ${previous.prefix} with --link-cidr ${previous.linkCidr}; purge it or use another --state-dir`,
    );
  }
  store.setFingerprint({ prefix: config.prefix, linkCidr: config.linkCidr, poolSize: config.poolSize });
  faultPoint("boot.after-store-open");
  const profiles = new ProfileCatalog(config.profiles, new Map(consumers.consumers.flatMap((c) => (c.profiles ? [[c.name, c.profiles] as const] : []))));
  // The DNS forwarder runs only when a profile names domains; its port goes into the root table.
  const poolRef: { pool?: Pool } = {};
  let dns: DnsForwarder | undefined;
  let dnsPort: number | undefined;
  if (profiles.usesDomains) {
    const upstream = config.dnsUpstream ?? resolvConfUpstream(readTextOr("/etc/resolv.conf"));
    if (upstream === undefined) throw new ConfigError("a profile names egress.allowDomains but /etc/resolv.conf names no IPv4 nameserver: give --dns-upstream");
    const link = parseCidr(config.linkCidr);
    const outsideBase = link.base + link.size / 2;
    dns = new DnsForwarder({
      upstream,
      slotOf: (address) => {
        const ip = ipToInt(address);
        return cidrContains(link, ip) && ip >= outsideBase && ip - outsideBase < config.poolSize ? ip - outsideBase : undefined;
      },
      policyOf: (slot) => {
        const lease = poolRef.pool?.leaseOnSlot(slot);
        const domains = profiles.domains(lease?.profile);
        if (!lease || !domains) return undefined;
        return { leaseId: lease.id, domains, allow: profiles.policy(lease.profile)?.allow ?? [] };
      },
      admit: (slot, admissions) => dataplane.admitAddresses(slot, admissions),
      log: logLine(logger.child({ component: "dns" }), "warn"),
    });
    dnsPort = await dns.start();
    logger.info({ port: dnsPort, upstream }, `dns forwarder on port ${dnsPort} (guests' port 53), upstream ${upstream}`);
  }
  const dataplaneOptions = {
    prefix: config.prefix,
    linkCidr: parseCidr(config.linkCidr),
    uplink,
    vtepRemote: config.vtepRemote,
    vtepPort: config.vtepPort,
    bpfObject: BPF_OBJECT,
    guestMtu: config.guestMtu,
    dnsPort,
    linkCidr6: config.linkCidr6 === undefined ? undefined : parseCidr6(config.linkCidr6),
  };
  // Recorded before changing: purge puts back what was there before the first start.
  store.recordRootChanges(SlotDataplane.rootChanges(dataplaneOptions), (c) => `${c.family}/${c.device}/${c.name}`);
  // A new NAT map layout is filled from the store: each leased slot's tenant VNI.
  const tenantVnis = new Map(store.listLeases().flatMap((l) => (l.network ? [[l.slotIndex, l.network.vni] as const] : [])));
  const dataplane = SlotDataplane.open(dataplaneOptions, logLine(logger), (index) => tenantVnis.get(index) ?? 0);
  // Every profile's CIDRs, once, before any lease (adopted or new) names its profile.
  const policyCidrs = profiles.policyCidrs();
  const staleCidrs = dataplane.loadEgressPolicies(policyCidrs);
  if (policyCidrs.length > 0 || staleCidrs > 0) logger.info(`egress policies: ${policyCidrs.length} profile CIDRs in the eBPF trie (${staleCidrs} stale removed)`);
  // NETSLOT_TEST_JOB_TIMEOUT_MS: test-only, like NETSLOT_TEST_FAULT (hung-worker tests).
  const jobTimeoutMs = Number(process.env.NETSLOT_TEST_JOB_TIMEOUT_MS) || undefined;
  const scrubber = new Scrubber(dataplaneOptions, config.stateDir, packageVersion(), {
    logger,
    logOptions: { level: config.logLevel, format: config.logFormat },
    nice: config.scrubNice,
    // No watches: every proof reads the sysctls (prover.ts).
    ...(config.watchSysctls ? {} : { maxWatches: 0 }),
    ...(jobTimeoutMs ? { jobTimeoutMs } : {}),
  });
  let lastPrinted = 0;
  const metrics = createMetrics();
  const pool = new Pool({
    metrics: metrics.pool,
    bootId: kernelBootId(),
    migration: { rate: config.migrationRate, minFree: config.migrationMinFree / 100 },
    freeAudit: { periodMs: config.auditPeriod * 1000, minFree: config.migrationMinFree / 100 },
    size: config.poolSize,
    dataplane,
    scrubber,
    store,
    profiles,
    logger,
    audit: auditTo(logger),
    ...(consumers.configured ? { quotas: new Quotas(consumers) } : {}),
    onProgress: (p) => {
      const now = performance.now();
      if (!config.progress || (now - lastPrinted < 1000 && p.built < p.total)) return;
      lastPrinted = now;
      logProgress(logger, p);
    },
  });
  poolRef.pool = pool;
  metrics.daemon.natUnattributedDrops.readFrom(() => [{ labels: {}, value: Number(dataplane.unattributedDrops()) }]);
  if (dns) {
    const stats = dns.stats;
    metrics.daemon.dnsQueries.readFrom(() => [
      { labels: { outcome: "forwarded" }, value: stats.forwarded },
      { labels: { outcome: "refused" }, value: stats.refused },
      { labels: { outcome: "malformed" }, value: stats.queries - stats.forwarded - stats.refused },
    ]);
    metrics.daemon.dnsAdmitted.readFrom(() => [{ labels: {}, value: stats.admitted }]);
    metrics.daemon.dnsTcpConnections.readFrom(() => [
      { labels: { result: "accepted" }, value: stats.tcpConnections },
      { labels: { result: "rejected" }, value: stats.tcpRejected },
    ]);
  }
  // Node's monitor records the time between its timer's runs (period + delay): the period
  // is taken off. Read and reset at each scrape, like prom-client's nodejs_eventloop_lag_*.
  const loopDelay = monitorEventLoopDelay({ resolution: EVENT_LOOP_RESOLUTION_MS });
  loopDelay.enable();
  metrics.daemon.eventLoopDelay.readFrom(() => {
    if (loopDelay.count === 0) return [];
    const delay = (ns: number) => Math.max(0, ns / 1e9 - EVENT_LOOP_RESOLUTION_MS / 1000);
    const samples = [50, 90, 99].map((p) => ({ labels: { percentile: p }, value: delay(loopDelay.percentile(p)) }));
    samples.push({ labels: { percentile: 100 }, value: delay(loopDelay.max) });
    loopDelay.reset();
    return samples;
  });
  const upgrader: { handover?: Handover } = {};
  const api = createApiServer({
    service: pool,
    processes: processTree,
    metrics,
    consumers,
    admin: {
      retryQuarantined: (index, by) => pool.retryQuarantined(index, by),
      setDraining: (on, by) => pool.setDraining(on, by),
      upgrade: (overrides) => upgrader.handover!.upgrade(overrides),
    },
    version: packageVersion(),
    logger: logger.child({ component: "api" }),
    ...(handover ? { trustRelayFrom: handover.parentPid } : {}),
  });
  upgrader.handover = new Handover({ api, pool, args, socket: config.socket, version: packageVersion(), logger, exit: () => stop("handed over") });
  if (!handover) {
    await api.listen(config.socket, { bindFd: listenUnix, ...(socketGroup === undefined ? {} : { group: socketGroup }) });
    logger.info({ socket: config.socket, prefix: config.prefix, uplink, poolSize: config.poolSize }, `listening on ${config.socket}; prefix ${config.prefix}, uplink ${uplink}, pool ${config.poolSize}`);
  }

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, `${signal}: stopping; slots stay in place for the next start`);
    faultPoint("shutdown.before-close");
    pool.close();
    dns?.close();
    await api.close();
    dataplane.close();
    store.close();
    removePidFile(config.stateDir);
    process.exit(0);
  };
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));

  let result: BootProgress;
  try {
    result = await pool.boot();
  } catch (err) {
    return cannotServe(`boot failed: ${(err as Error).message}`);
  }
  const missing = result.total - result.built;
  logger.info(
    {
      built: result.built,
      total: result.total,
      adopted: result.adopted,
      seconds: Number((result.elapsedMs / 1000).toFixed(2)),
      ...(result.firstTenthMs !== undefined && result.lastTenthMs !== undefined ? { firstTenthMsPerSlot: result.firstTenthMs, lastTenthMsPerSlot: result.lastTenthMs } : {}),
    },
    `ready: ${result.built}/${result.total} slots (${result.adopted} adopted, ${result.built - result.adopted} built) in ${(result.elapsedMs / 1000).toFixed(2)}s` +
      (result.firstTenthMs !== undefined && result.lastTenthMs !== undefined
        ? `; per slot ${result.firstTenthMs.toFixed(2)} ms (first 10%), ${result.lastTenthMs.toFixed(2)} ms (last 10%)`
        : "") +
      (missing > 0 ? `; ${missing} slots could not be built` : ""),
  );
  if (missing > result.total * MAX_MISSING_SHARE) {
    return cannotServe(
      `${missing} of ${result.total} slots could not be built (at most ${Math.floor(result.total * MAX_MISSING_SHARE)} may fail): ${pool.firstBuildFailure() ?? "see the log"}`,
    );
  }
  if (handover) {
    handover.send({ type: "booted" });
    api.adopt((await handover.next("socket")) as net.Server, config.socket);
    writePidFile(config.stateDir);
    handover.finish(process.pid, packageVersion());
    logger.info({ oldPid: handover.parentPid }, `took over from pid ${handover.parentPid}: serving on ${config.socket}`);
  }
  notifySystemd(logger);

  /** One fatal line naming the cause, exit 1: systemd restarts or reports us; the slots stay for the next start. */
  async function cannotServe(cause: string): Promise<never> {
    stopping = true;
    pool.close();
    await api.close().catch(() => undefined);
    dataplane.close();
    store.close();
    removePidFile(config.stateDir);
    return exitFatal(logger, `cannot serve: ${cause}`, 1);
  }
}

function readTextOr(file: string): string {
  try {
    return nodeFs.readFileSync(file, "utf8");
  } catch {
    return "";
  }
}
