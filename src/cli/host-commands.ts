// Commands that work on this host's kernel and state directly, without the daemon.
import * as fs from "node:fs";
import { SlotDataplane } from "../dataplane/dataplane.js";
import { assertPrefix } from "../dataplane/topology.js";
import { runningDaemon } from "../daemon/pidfile.js";

/**
 * `netslot purge`: removes every kernel object and all state of a prefix. Idempotent.
 * Refuses while a daemon still runs on that state dir: it would rebuild what we remove.
 */
export function purge(prefix: string, stateDir: string): number {
  assertPrefix(prefix);
  const pid = runningDaemon(stateDir);
  if (pid !== undefined) {
    process.stderr.write(`netslot: a daemon (pid ${pid}) still runs on ${stateDir}; stop it first\n`);
    return 1;
  }
  const removed = SlotDataplane.purge(prefix);
  fs.rmSync(stateDir, { recursive: true, force: true });
  process.stdout.write(`purged prefix ${prefix}: ${removed.namespaces} namespaces, ${removed.links} host links, root table, pinned eBPF objects, state in ${stateDir}\n`);
  return 0;
}
