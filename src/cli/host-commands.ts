// Commands that work on this host's kernel and state directly, without the daemon.
import * as fs from "node:fs";
import { SlotDataplane, type RootChange } from "../dataplane/dataplane.js";
import { assertPrefix } from "../dataplane/topology.js";
import { checkInvariants, type CheckOptions } from "../pool/invariants.js";
import { DB_FILE, LeaseStore } from "../store/store.js";
import { runningDaemon } from "../daemon/pidfile.js";

/**
 * `netslot purge`: removes every kernel object and all state of a prefix, and puts back
 * what the daemon changed in the root namespace (uplink forwarding). Idempotent. Refuses
 * while a daemon still runs on that state dir (it would rebuild what we remove), and
 * refuses a --state-dir that is not a netslot state directory (it is deleted).
 */
export function purge(prefix: string, stateDir: string): number {
  assertPrefix(prefix);
  const refuse = (why: string) => {
    process.stderr.write(`netslot: ${why}\n`);
    return 1;
  };
  const pid = runningDaemon(stateDir);
  if (pid !== undefined) return refuse(`a daemon (pid ${pid}) still runs on ${stateDir}; stop it first`);
  const state = readStateDir(stateDir, prefix);
  if (typeof state === "string") return refuse(state);
  const removed = SlotDataplane.purge(prefix);
  const restored = SlotDataplane.restoreRootChanges(prefix, state.rootChanges);
  if (state.exists) fs.rmSync(stateDir, { recursive: true, force: true });
  process.stdout.write(
    `purged prefix ${prefix}: ${removed.namespaces} namespaces, ${removed.links} host links, root table, pinned eBPF objects, state in ${stateDir}\n` +
      restored.map((line) => `  ${line}\n`).join(""),
  );
  return 0;
}

/** Files a netslot state directory may hold before its store exists (a daemon that stopped early). */
const STATE_MARKERS = [DB_FILE, "daemon.pid"];

/**
 * The root changes recorded in a state dir, or why it must not be purged: it holds no
 * netslot store (it could be any directory), or a store of another prefix.
 */
function readStateDir(stateDir: string, prefix: string): string | { exists: boolean; rootChanges: RootChange[] } {
  let entries: string[];
  try {
    entries = fs.readdirSync(stateDir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return { exists: false, rootChanges: [] };
    return `cannot read --state-dir ${stateDir}: ${(err as Error).message}`;
  }
  if (entries.length > 0 && !entries.some((e) => STATE_MARKERS.includes(e))) {
    return `${stateDir} is not a netslot state directory (no ${DB_FILE}); refusing to delete it`;
  }
  if (!entries.includes(DB_FILE)) return { exists: true, rootChanges: [] };
  const store = LeaseStore.open(stateDir);
  try {
    const owner = store.fingerprint()?.prefix;
    if (owner !== undefined && owner !== prefix) return `${stateDir} belongs to prefix ${owner}, not ${prefix}; refusing to delete it`;
    return { exists: true, rootChanges: store.rootChanges<RootChange>() };
  } finally {
    store.close();
  }
}

/** `netslot check`: prints every broken invariant and exits non-zero when there is one. */
export function check(opts: CheckOptions): number {
  const problems = checkInvariants(opts);
  for (const p of problems) process.stdout.write(`FAIL ${p}\n`);
  process.stdout.write(problems.length === 0 ? "ok: all invariants hold\n" : `${problems.length} invariant(s) broken\n`);
  return problems.length === 0 ? 0 : 1;
}
