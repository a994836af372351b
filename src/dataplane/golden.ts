// The golden fingerprint store: the fingerprint of a freshly built slot, kept in the state
// dir so that a restart adopts every slot without rebuilding one to learn it, and so that
// `netslot check` can verify free slots. Written by the scrub worker, read by it and by
// the invariant checker; this module is the one place that knows the file.
import * as fs from "node:fs";
import * as path from "node:path";
import type { Fingerprint } from "./fingerprint.js";

export const GOLDEN_FILE = "golden-fingerprint.json";

interface Saved {
  /** What the fingerprint is valid for (see scrub-worker's key: format, version, programs, options). */
  key: string;
  fingerprint: Fingerprint;
}

export function goldenPath(stateDir: string): string {
  return path.join(stateDir, GOLDEN_FILE);
}

/** Writes the golden fingerprint atomically (temp file, rename). */
export function saveGolden(stateDir: string, key: string, fingerprint: Fingerprint): void {
  const file = goldenPath(stateDir);
  const tmp = `${file}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify({ key, fingerprint } satisfies Saved));
  fs.renameSync(tmp, file);
}

/**
 * The saved golden fingerprint; with `key`, only when it was saved for that key.
 * Undefined when none is saved, it is unreadable, or saved for another key.
 */
export function loadGolden(stateDir: string, key?: string): Fingerprint | undefined {
  try {
    const saved = JSON.parse(fs.readFileSync(goldenPath(stateDir), "utf8")) as Saved;
    if (key !== undefined && saved.key !== key) return undefined;
    return saved.fingerprint;
  } catch {
    return undefined;
  }
}
