// A slot layout's id: a digest of a fresh slot's golden fingerprint, less what is not the
// slot's layout. The eBPF programs are left out (a new version's programs are switched in
// place on every slot at start, upgrade.ts: no rebuild needed), and so is what a fresh
// slot holds only by chance (conntrack entries, sockets, processes, tap holders).
import { createHash } from "node:crypto";
import type { Fingerprint } from "./fingerprint.js";

const NOT_LAYOUT = new Set<keyof Fingerprint>(["tcFilters", "bpf", "conntrack", "sockets", "processes", "tapHolders"]);

/** JSON with object keys sorted, so equal fingerprints give equal digests. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

export function layoutId(golden: Fingerprint): string {
  const kept = Object.fromEntries(Object.entries(golden).filter(([k]) => !NOT_LAYOUT.has(k as keyof Fingerprint)));
  return createHash("sha256").update(canonical(kept)).digest("hex").slice(0, 12);
}
