// `netslot daemon`: wires the store, the dataplane, the pool and the API together, boots
// the pool, and stops cleanly on SIGTERM, leaving the slots in place for the next start.
import * as fs from "node:fs";
import * as path from "node:path";
import { createApiServer } from "../api/server.js";
import { SlotDataplane, defaultRouteDevice } from "../dataplane/dataplane.js";
import { parseCidr } from "../dataplane/topology.js";
import { Pool, type BootProgress } from "../pool/pool.js";
import { Scrubber } from "../pool/scrubber.js";
import { Gauge } from "../pool/metrics.js";
import { LeaseStore } from "../store/store.js";
import { ConfigError, type DaemonConfig } from "./config.js";
import { removePidFile, runningDaemon, writePidFile } from "./pidfile.js";
import { faultPoint } from "../core/faults.js";
import { PACKAGE_ROOT, packageVersion } from "../core/version.js";

export const BPF_OBJECT = path.join(PACKAGE_ROOT, "bpf", "nat.o");
export { PACKAGE_ROOT, packageVersion };

function log(msg: string): void {
  process.stderr.write(`${new Date().toISOString()} netslot: ${msg}\n`);
}

function renderProgress(p: BootProgress, tty: boolean): string {
  const seconds = p.elapsedMs / 1000;
  const builtThisRun = p.built - p.adopted;
  const rate = seconds > 0 ? builtThisRun / seconds : 0;
  const remaining = p.toBuild - builtThisRun - p.failed;
  const eta = rate > 0 ? remaining / rate : 0;
  const line = `pool ${p.built}/${p.total} (${p.adopted} adopted) ${rate.toFixed(0)} slots/s ETA ${eta.toFixed(1)}s${p.failed ? ` failed ${p.failed}` : ""}`;
  return tty ? `\r\x1b[K${line}` : `${line}\n`;
}

export async function runDaemon(config: DaemonConfig): Promise<void> {
  if (process.getuid?.() !== 0) throw new ConfigError("netslot daemon must run as root");
  if (!fs.existsSync(BPF_OBJECT)) throw new ConfigError(`eBPF object ${BPF_OBJECT} is missing: run npm run build`);
  const uplink = config.uplink ?? defaultRouteDevice();
  if (!uplink) throw new ConfigError("no --uplink given and no default route to take it from");

  const other = runningDaemon(config.stateDir);
  if (other !== undefined) throw new ConfigError(`another daemon (pid ${other}) runs on ${config.stateDir}`);
  writePidFile(config.stateDir);
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
  const dataplaneOptions = {
    prefix: config.prefix,
    linkCidr: parseCidr(config.linkCidr),
    uplink,
    vtepRemote: config.vtepRemote,
    vtepPort: config.vtepPort,
    bpfObject: BPF_OBJECT,
  };
  const dataplane = SlotDataplane.open(dataplaneOptions, log);
  const scrubber = new Scrubber(dataplaneOptions, config.stateDir, packageVersion());
  const tty = config.progress && process.stderr.isTTY;
  let lastPrinted = 0;
  const pool = new Pool({
    size: config.poolSize,
    dataplane,
    scrubber,
    store,
    log,
    onProgress: (p) => {
      const now = performance.now();
      if (!config.progress || (now - lastPrinted < (tty ? 100 : 1000) && p.built < p.total)) return;
      lastPrinted = now;
      process.stderr.write(renderProgress(p, tty));
    },
  });
  pool.registry.add(
    new Gauge("netslot_build_info", "Always 1; the labels say which netslot and Node answer", () => [
      { labels: { version: packageVersion(), node: process.version }, value: 1 },
    ]),
  );
  const api = createApiServer({ service: pool, consumers: config.consumers, admin: pool, version: packageVersion() });
  await api.listen(config.socket);
  log(`listening on ${config.socket}; prefix ${config.prefix}, uplink ${uplink}, pool ${config.poolSize}`);

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log(`${signal}: stopping; slots stay in place for the next start`);
    faultPoint("shutdown.before-close");
    pool.close();
    await api.close();
    dataplane.close();
    store.close();
    removePidFile(config.stateDir);
    process.exit(0);
  };
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));

  const result = await pool.boot();
  if (tty) process.stderr.write("\n");
  const missing = result.total - result.built;
  log(
    `ready: ${result.built}/${result.total} slots (${result.adopted} adopted, ${result.built - result.adopted} built) in ${(result.elapsedMs / 1000).toFixed(2)}s` +
      (result.firstTenthMs !== undefined && result.lastTenthMs !== undefined
        ? `; per slot ${result.firstTenthMs.toFixed(2)} ms (first 10%), ${result.lastTenthMs.toFixed(2)} ms (last 10%)`
        : "") +
      (missing > 0 ? `; ${missing} slots could not be built` : ""),
  );
}
