// One daemon per state directory: a pid file, checked for a live netslot process. A stale
// file from a crashed daemon (kill -9) is simply taken over.
import * as fs from "node:fs";
import * as path from "node:path";

export function pidFilePath(stateDir: string): string {
  return path.join(stateDir, "daemon.pid");
}

/** The pid of a live daemon using this state dir, if any. */
export function runningDaemon(stateDir: string): number | undefined {
  let pid: number;
  try {
    pid = Number(fs.readFileSync(pidFilePath(stateDir), "utf8").trim());
  } catch {
    return undefined;
  }
  if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid) return undefined;
  try {
    const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, "latin1");
    return cmdline.includes("netslot") || cmdline.includes("main.js") ? pid : undefined;
  } catch {
    return undefined;
  }
}

export function writePidFile(stateDir: string): void {
  fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  fs.writeFileSync(pidFilePath(stateDir), `${process.pid}\n`);
}

export function removePidFile(stateDir: string): void {
  try {
    if (Number(fs.readFileSync(pidFilePath(stateDir), "utf8").trim()) === process.pid) fs.rmSync(pidFilePath(stateDir));
  } catch {
    // Already gone.
  }
}
