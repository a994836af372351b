// The durable lease store: slots and leases in one SQLite database (WAL) under the state
// directory. Synchronous like the rest of the daemon: every call is a few microseconds of
// local I/O, and a lease is acknowledged only after its transaction has committed.
//
// Durability: journal_mode=WAL with synchronous=NORMAL. A commit appends the transaction's
// frames to the WAL with write(2) before returning, so it sits in the kernel's page cache
// and survives the process dying at any instant (kill -9, OOM, a crash), which is the
// requirement. What NORMAL gives up against FULL is the fsync per commit: on power loss or
// a kernel crash the last few commits may be lost, but the database stays consistent. Slots
// are rebuilt and reconciled on boot anyway, and an fsync per lease would cost milliseconds
// on the request path.
//
// The store knows nothing about the kernel: slot states are whatever the pool says.
import * as fs from "node:fs";
import * as path from "node:path";
import Database from "better-sqlite3";
import { NetslotError } from "../core/errors.js";
import type { SlotState, TenantNetwork } from "../core/types.js";

export const DB_FILE = "netslot.db";
export const SCHEMA_VERSION = 1;
/** How long a write waits for another connection's lock before failing (SQLITE_BUSY). */
export const BUSY_TIMEOUT_MS = 5000;

/** Slot states that are persisted; "building" is transient and lives only in the pool. */
export type StoredSlotState = Exclude<SlotState, "building">;
export const STORED_SLOT_STATES: readonly StoredSlotState[] = ["free", "leased", "scrubbing", "quarantined", "missing"];

export interface StoredSlot {
  idx: number;
  state: StoredSlotState;
  reason: string | null;
  /** ISO time of the last state change. */
  since: string;
}

export type SlotCounts = Record<StoredSlotState, number> & { total: number };

export interface StoredLease {
  id: string;
  consumer: string;
  slotIndex: number;
  labels: Record<string, string>;
  network?: TenantNetwork;
  /** Name of the network profile; its policy is re-applied when the slot is rebuilt. */
  profile?: string;
  ownerPid?: number;
  /** Start time of ownerPid (field 22 of /proc/PID/stat), so a reused pid is not taken for the owner. */
  ownerStart?: number;
  createdAt: string;
  /** ISO time, stored normalised by Date#toISOString(); null when the lease has no TTL. */
  expiresAt: string | null;
  /** The TTL last asked for, so a renew without one extends by the same amount. */
  ttlSeconds?: number;
}

/** How a lease ended: released by its consumer, expired, its owner process exited, or released by an operator. */
export type EndCause = "released" | "expired" | "owner_exited" | "force_released";

/** A lease that ended, kept for ENDED_RETENTION_MS so GET /v1/leases/{id} can say how. */
export interface EndedLease {
  id: string;
  consumer: string;
  slotIndex: number;
  cause: EndCause;
  /** The operator of a force-release. */
  by?: string;
  endedAt: string;
}

/** How long an ended lease is remembered. */
export const ENDED_RETENTION_MS = 60 * 60 * 1000;

/** The daemon configuration the slots in this store were built for. */
export interface StoreFingerprint {
  prefix: string;
  linkCidr: string;
  poolSize: number;
}

export interface StoreCounters {
  /** Leases ever inserted. */
  leases: number;
  /** Leases ever deleted (released, expired, owner died). */
  releases: number;
}

/** insertLease found the slot not free (or already leased): the pool should pick another. */
export class SlotNotFreeError extends Error {
  readonly slotIndex: number;
  /** The slot's state, or undefined when no such slot exists. */
  readonly state: StoredSlotState | undefined;

  constructor(slotIndex: number, state: StoredSlotState | undefined, opts: { cause?: unknown } = {}) {
    super(state === undefined ? `slot ${slotIndex} does not exist` : `slot ${slotIndex} is ${state}, not free`, opts);
    this.name = "SlotNotFreeError";
    this.slotIndex = slotIndex;
    this.state = state;
  }
}

interface SlotRow {
  idx: number;
  state: StoredSlotState;
  reason: string | null;
  since: string;
}

interface SlotSetParams {
  state: StoredSlotState;
  reason: string | null;
  now: string;
  idx: number;
}

interface LeaseRow {
  id: string;
  consumer: string;
  slot_idx: number;
  labels: string;
  network: string | null;
  profile: string | null;
  owner_pid: number | null;
  owner_start: number | null;
  created_at: string;
  expires_at: string | null;
  ttl_seconds: number | null;
}

interface EndedRow {
  id: string;
  consumer: string;
  slot_idx: number;
  cause: string;
  by: string | null;
  ended_at: string;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS slots (
  idx INTEGER PRIMARY KEY,
  state TEXT NOT NULL CHECK (state IN ('free','leased','scrubbing','quarantined','missing')),
  reason TEXT,
  since TEXT
);
CREATE TABLE IF NOT EXISTS leases (
  id TEXT PRIMARY KEY,
  consumer TEXT NOT NULL,
  slot_idx INTEGER NOT NULL UNIQUE REFERENCES slots(idx),
  labels TEXT NOT NULL,
  network TEXT,
  profile TEXT,
  owner_pid INTEGER,
  owner_start INTEGER,
  created_at TEXT NOT NULL,
  expires_at TEXT,
  ttl_seconds INTEGER
);
CREATE INDEX IF NOT EXISTS leases_consumer ON leases(consumer);
CREATE INDEX IF NOT EXISTS leases_expires ON leases(expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS leases_owner ON leases(owner_pid) WHERE owner_pid IS NOT NULL;
CREATE TABLE IF NOT EXISTS ended_leases (
  id TEXT PRIMARY KEY,
  consumer TEXT NOT NULL,
  slot_idx INTEGER NOT NULL,
  cause TEXT NOT NULL,
  by TEXT,
  ended_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ended_leases_at ON ended_leases(ended_at);
CREATE TABLE IF NOT EXISTS layouts (
  id TEXT PRIMARY KEY,
  guest_mtu INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS slot_layouts (
  idx INTEGER PRIMARY KEY,
  layout TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
  name TEXT PRIMARY KEY,
  value INTEGER NOT NULL
);
INSERT OR IGNORE INTO counters(name, value) VALUES ('leases', 0), ('releases', 0);
`;

/**
 * SQLite result codes that mean the store cannot be read or written right now: disk full,
 * I/O error, read-only file or filesystem, file cannot be opened, lock held too long.
 * Extended codes (SQLITE_IOERR_WRITE, SQLITE_READONLY_DBMOVED, SQLITE_BUSY_SNAPSHOT...) too.
 */
const UNAVAILABLE = /^SQLITE_(FULL|IOERR|READONLY|CANTOPEN|BUSY|PROTOCOL)(_|$)/;
/** errno codes from creating the state directory or the database file. */
const UNAVAILABLE_ERRNO = new Set(["ENOSPC", "EROFS", "EACCES", "EPERM", "EIO", "EDQUOT", "ENOTDIR"]);

/** True for an error that `LeaseStore` maps to `store_unavailable`. */
export function isStoreUnavailable(err: unknown): boolean {
  if (err instanceof Database.SqliteError) return UNAVAILABLE.test(err.code);
  if (err instanceof Error && "code" in err && typeof err.code === "string") return UNAVAILABLE_ERRNO.has(err.code);
  return false;
}

function mapError(err: unknown, what: string): unknown {
  if (err instanceof NetslotError || err instanceof SlotNotFreeError) return err;
  if (isStoreUnavailable(err)) {
    const code = (err as { code: string }).code;
    return new NetslotError("store_unavailable", `lease store: ${what} failed (${code}); nothing was changed`, { cause: err });
  }
  return err;
}

function isoTime(value: string, field: string): string {
  const t = Date.parse(value);
  if (Number.isNaN(t)) throw new TypeError(`${field} is not a valid time: ${value}`);
  return new Date(t).toISOString();
}

function rowToLease(row: LeaseRow): StoredLease {
  const lease: StoredLease = {
    id: row.id,
    consumer: row.consumer,
    slotIndex: row.slot_idx,
    labels: JSON.parse(row.labels) as Record<string, string>,
    createdAt: row.created_at,
    expiresAt: row.expires_at,
  };
  if (row.network !== null) lease.network = JSON.parse(row.network) as TenantNetwork;
  if (row.profile !== null) lease.profile = row.profile;
  if (row.owner_pid !== null) lease.ownerPid = row.owner_pid;
  if (row.owner_start !== null) lease.ownerStart = row.owner_start;
  if (row.ttl_seconds !== null) lease.ttlSeconds = row.ttl_seconds;
  return lease;
}

export class LeaseStore {
  readonly file: string;
  private readonly db: Database.Database;
  /** One cached transaction wrapper: tx.immediate(fn) runs fn inside BEGIN IMMEDIATE. */
  private readonly tx: Database.Transaction<<T>(fn: () => T) => T>;
  private closed = false;

  private readonly st: {
    metaGet: Database.Statement<[string], { value: string }>;
    metaSet: Database.Statement<[string, string]>;
    slotInsert: Database.Statement<[number, string]>;
    slotGet: Database.Statement<[number], SlotRow>;
    slotAll: Database.Statement<[], SlotRow>;
    slotBeyond: Database.Statement<[number], SlotRow>;
    slotCounts: Database.Statement<[], { state: StoredSlotState; n: number }>;
    slotSet: Database.Statement<[SlotSetParams]>;
    slotDelete: Database.Statement<[number]>;
    leaseInsert: Database.Statement<[LeaseRow]>;
    leaseGet: Database.Statement<[string], LeaseRow>;
    leaseBySlot: Database.Statement<[number], { id: string }>;
    leaseDelete: Database.Statement<[string]>;
    leaseRenew: Database.Statement<[string | null, number | null, string]>;
    leaseAll: Database.Statement<[], LeaseRow>;
    leaseByConsumer: Database.Statement<[string], LeaseRow>;
    leaseExpired: Database.Statement<[string], LeaseRow>;
    leaseOwned: Database.Statement<[], LeaseRow>;
    endedInsert: Database.Statement<[EndedRow]>;
    endedGet: Database.Statement<[string, string], EndedRow>;
    endedPrune: Database.Statement<[string]>;
    counterAdd: Database.Statement<[string]>;
    counterAll: Database.Statement<[], { name: string; value: number }>;
  };

  private constructor(file: string, db: Database.Database) {
    this.file = file;
    this.db = db;
    this.tx = db.transaction(<T>(fn: () => T): T => fn());
    this.st = {
      metaGet: db.prepare("SELECT value FROM meta WHERE key = ?"),
      metaSet: db.prepare("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value"),
      slotInsert: db.prepare("INSERT OR IGNORE INTO slots(idx, state, reason, since) VALUES (?, 'missing', NULL, ?)"),
      slotGet: db.prepare("SELECT idx, state, reason, since FROM slots WHERE idx = ?"),
      slotAll: db.prepare("SELECT idx, state, reason, since FROM slots ORDER BY idx"),
      slotBeyond: db.prepare("SELECT idx, state, reason, since FROM slots WHERE idx >= ? ORDER BY idx"),
      slotCounts: db.prepare("SELECT state, count(*) AS n FROM slots GROUP BY state"),
      // `since` moves only when the state changes, so a quarantine keeps its start time.
      slotSet: db.prepare(
        "UPDATE slots SET since = CASE WHEN state = @state THEN since ELSE @now END, state = @state, reason = @reason WHERE idx = @idx",
      ),
      slotDelete: db.prepare("DELETE FROM slots WHERE idx = ?"),
      leaseInsert: db.prepare(
        `INSERT INTO leases(id, consumer, slot_idx, labels, network, profile, owner_pid, owner_start, created_at, expires_at, ttl_seconds)
         VALUES (@id, @consumer, @slot_idx, @labels, @network, @profile, @owner_pid, @owner_start, @created_at, @expires_at, @ttl_seconds)`,
      ),
      leaseGet: db.prepare("SELECT * FROM leases WHERE id = ?"),
      leaseBySlot: db.prepare("SELECT id FROM leases WHERE slot_idx = ?"),
      leaseDelete: db.prepare("DELETE FROM leases WHERE id = ?"),
      leaseRenew: db.prepare("UPDATE leases SET expires_at = ?, ttl_seconds = coalesce(?, ttl_seconds) WHERE id = ?"),
      leaseAll: db.prepare("SELECT * FROM leases ORDER BY created_at, id"),
      leaseByConsumer: db.prepare("SELECT * FROM leases WHERE consumer = ? ORDER BY created_at, id"),
      leaseExpired: db.prepare(
        "SELECT * FROM leases WHERE expires_at IS NOT NULL AND expires_at <= ? ORDER BY expires_at, id",
      ),
      leaseOwned: db.prepare("SELECT * FROM leases WHERE owner_pid IS NOT NULL ORDER BY owner_pid, created_at, id"),
      endedInsert: db.prepare(
        "INSERT OR REPLACE INTO ended_leases(id, consumer, slot_idx, cause, by, ended_at) VALUES (@id, @consumer, @slot_idx, @cause, @by, @ended_at)",
      ),
      endedGet: db.prepare("SELECT * FROM ended_leases WHERE id = ? AND ended_at >= ?"),
      endedPrune: db.prepare("DELETE FROM ended_leases WHERE ended_at < ?"),
      counterAdd: db.prepare("UPDATE counters SET value = value + 1 WHERE name = ?"),
      counterAll: db.prepare("SELECT name, value FROM counters"),
    };
  }

  /**
   * Opens (creating if needed) `<stateDir>/netslot.db`. The directory is created 0700 and
   * the database file 0600 (SQLite gives its -wal and -shm files the same mode).
   * Throws NetslotError store_unavailable when the directory or file cannot be created or
   * opened, and a plain Error for a database written by a newer netslot.
   * `busyTimeoutMs` (default BUSY_TIMEOUT_MS) is SQLite's busy_timeout: how long a write
   * waits for another connection's lock before failing with store_unavailable.
   */
  static open(stateDir: string, opts: { busyTimeoutMs?: number } = {}): LeaseStore {
    const busyTimeoutMs = opts.busyTimeoutMs ?? BUSY_TIMEOUT_MS;
    const file = path.join(stateDir, DB_FILE);
    let db: Database.Database | undefined;
    try {
      fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
      try {
        fs.closeSync(fs.openSync(file, "wx", 0o600));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      }
      db = new Database(file, { timeout: busyTimeoutMs });
      const mode = db.pragma("journal_mode = WAL", { simple: true });
      if (mode !== "wal") throw new Error(`lease store: cannot switch ${file} to WAL (journal_mode=${String(mode)})`);
      db.pragma("synchronous = NORMAL");
      db.pragma("foreign_keys = ON");
      const init = db.transaction((conn: Database.Database) => {
        // Check the version before touching the schema: a newer one is left as it is.
        const hasMeta = conn.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").get();
        const row = hasMeta
          ? conn.prepare<[], { value: string }>("SELECT value FROM meta WHERE key = 'schema_version'").get()
          : undefined;
        if (row !== undefined && Number(row.value) > SCHEMA_VERSION) {
          throw new Error(`lease store ${file} has schema version ${row.value}, newer than this netslot's ${SCHEMA_VERSION}`);
        }
        conn.exec(SCHEMA);
        // Added after schema version 1 without a version bump: an older netslot reads the
        // table with SELECT * and ignores the column.
        const columns = conn.prepare<[], { name: string }>("PRAGMA table_info(leases)").all();
        if (!columns.some((c) => c.name === "profile")) conn.exec("ALTER TABLE leases ADD COLUMN profile TEXT");
        if (row === undefined) {
          conn.prepare("INSERT INTO meta(key, value) VALUES ('schema_version', ?)").run(String(SCHEMA_VERSION));
        }
      });
      init.immediate(db);
      return new LeaseStore(file, db);
    } catch (err) {
      try {
        db?.close();
      } catch {
        // Already failing; the original error is the one to report.
      }
      throw mapError(err, `opening ${file}`);
    }
  }

  /** Closes the database (checkpointing the WAL into it). Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.run("close", () => this.db.close());
  }

  // --- configuration fingerprint -------------------------------------------------------

  /** The configuration the slots were built for, or undefined in a new store. */
  fingerprint(): StoreFingerprint | undefined {
    return this.run("reading the fingerprint", () => {
      const row = this.st.metaGet.get("fingerprint");
      return row === undefined ? undefined : (JSON.parse(row.value) as StoreFingerprint);
    });
  }

  setFingerprint(fp: StoreFingerprint): void {
    const value = JSON.stringify({ prefix: fp.prefix, linkCidr: fp.linkCidr, poolSize: fp.poolSize });
    this.write("writing the fingerprint", () => this.st.metaSet.run("fingerprint", value));
  }

  /**
   * Root-namespace settings the daemon changed, each with its value from before the first
   * change (opaque to the store; the dataplane defines them). Purge puts them back.
   */
  rootChanges<T extends { before: string }>(): T[] {
    return this.run("reading root changes", () => JSON.parse(this.st.metaGet.get("root_changes")?.value ?? "[]") as T[]);
  }

  /** Records changes not recorded yet (same `key`): the first value seen is the one to restore. */
  recordRootChanges<T extends { before: string }>(changes: readonly T[], key: (c: T) => string): void {
    const known = this.rootChanges<T>();
    const seen = new Set(known.map(key));
    const added = changes.filter((c) => !seen.has(key(c)));
    if (added.length === 0) return;
    this.write("recording root changes", () => this.st.metaSet.run("root_changes", JSON.stringify([...known, ...added])));
  }

  /** The kernel boot id the leases were granted under (/proc/sys/kernel/random/boot_id). */
  bootId(): string | undefined {
    return this.run("reading the boot id", () => this.st.metaGet.get("boot_id")?.value);
  }

  setBootId(id: string): void {
    this.write("writing the boot id", () => this.st.metaSet.run("boot_id", id));
  }

  schemaVersion(): number {
    return this.run("reading the schema version", () => Number(this.st.metaGet.get("schema_version")?.value));
  }

  // --- slots ---------------------------------------------------------------------------

  /** Adds rows 0..size-1 that do not exist yet, as 'missing' (not built). Returns how many were added. */
  ensureSlots(size: number): number {
    if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`pool size must be a non-negative integer: ${size}`);
    return this.write("adding slots", () => {
      const now = new Date().toISOString();
      let added = 0;
      for (let idx = 0; idx < size; idx++) added += this.st.slotInsert.run(idx, now).changes;
      return added;
    });
  }

  /** Slots with idx >= size: left over from a larger pool. */
  slotsBeyond(size: number): StoredSlot[] {
    return this.run("listing slots", () => this.st.slotBeyond.all(size).map((r) => ({ ...r })));
  }

  /** Removes a slot row (after the pool destroyed it). Throws if a lease still holds it. */
  deleteSlot(idx: number): void {
    this.write("deleting a slot", () => {
      const lease = this.st.leaseBySlot.get(idx);
      if (lease !== undefined) throw new Error(`slot ${idx} is held by lease ${lease.id}; delete the lease first`);
      this.st.slotDelete.run(idx);
    });
  }

  /**
   * Sets one slot's state; reason is kept only when given (e.g. a quarantine's cause).
   * 'leased' is only valid for a slot a lease holds and 'free' only for one none holds:
   * insertLease/deleteLease move slots in and out of 'leased'.
   */
  setSlotState(idx: number, state: StoredSlotState, reason?: string): void {
    this.write("setting a slot state", () => this.setOne(idx, state, reason ?? null, new Date().toISOString()));
  }

  /** Sets many slots to one state in one transaction (boot batches). */
  setSlotStates(idxs: readonly number[], state: StoredSlotState, reason?: string): void {
    this.write("setting slot states", () => {
      const now = new Date().toISOString();
      for (const idx of idxs) this.setOne(idx, state, reason ?? null, now);
    });
  }

  private setOne(idx: number, state: StoredSlotState, reason: string | null, now: string): void {
    if (!STORED_SLOT_STATES.includes(state)) throw new TypeError(`not a stored slot state: ${state}`);
    if (state === "free" || state === "leased") {
      const lease = this.st.leaseBySlot.get(idx);
      if (state === "free" && lease !== undefined) throw new Error(`slot ${idx} cannot be free: lease ${lease.id} holds it`);
      if (state === "leased" && lease === undefined) throw new Error(`slot ${idx} cannot be leased: no lease holds it`);
    }
    if (this.st.slotSet.run({ state, reason, now, idx }).changes !== 1) throw new RangeError(`no slot ${idx} in the store`);
  }

  slot(idx: number): StoredSlot | undefined {
    return this.run("reading a slot", () => {
      const row = this.st.slotGet.get(idx);
      return row === undefined ? undefined : { ...row };
    });
  }

  /** Slot layouts: what each slot was built with, and what each layout means (its guest MTU). */
  layouts(): { slots: Map<number, string>; specs: Map<string, { guestMtu: number }> } {
    return this.run("listing layouts", () => ({
      slots: new Map(
        this.db
          .prepare<[], { idx: number; layout: string }>("SELECT idx, layout FROM slot_layouts")
          .all()
          .map((r) => [r.idx, r.layout]),
      ),
      specs: new Map(
        this.db
          .prepare<[], { id: string; guest_mtu: number }>("SELECT id, guest_mtu FROM layouts")
          .all()
          .map((r) => [r.id, { guestMtu: r.guest_mtu }]),
      ),
    }));
  }

  putLayout(id: string, spec: { guestMtu: number }): void {
    this.write("recording a layout", () => {
      this.db.prepare("INSERT INTO layouts(id, guest_mtu) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET guest_mtu = excluded.guest_mtu").run(id, spec.guestMtu);
    });
  }

  setSlotLayouts(idxs: readonly number[], layout: string): void {
    this.write("recording slot layouts", () => {
      const st = this.db.prepare("INSERT INTO slot_layouts(idx, layout) VALUES (?, ?) ON CONFLICT(idx) DO UPDATE SET layout = excluded.layout");
      for (const idx of idxs) st.run(idx, layout);
    });
  }

  slots(): StoredSlot[] {
    return this.run("listing slots", () => this.st.slotAll.all().map((r) => ({ ...r })));
  }

  slotCounts(): SlotCounts {
    return this.run("counting slots", () => {
      const counts: SlotCounts = { free: 0, leased: 0, scrubbing: 0, quarantined: 0, missing: 0, total: 0 };
      for (const { state, n } of this.st.slotCounts.all()) {
        counts[state] = n;
        counts.total += n;
      }
      return counts;
    });
  }

  // --- leases --------------------------------------------------------------------------

  /**
   * In one transaction: checks the slot is free, marks it leased and inserts the lease.
   * Throws SlotNotFreeError when the slot is not free (nothing changed), NetslotError
   * store_unavailable when the disk cannot take it (nothing changed). Returns the lease as
   * stored (expiresAt normalised).
   */
  insertLease(lease: StoredLease): StoredLease {
    const row: LeaseRow = {
      id: lease.id,
      consumer: lease.consumer,
      slot_idx: lease.slotIndex,
      labels: JSON.stringify(lease.labels),
      network: lease.network === undefined ? null : JSON.stringify({ vni: lease.network.vni, cidr: lease.network.cidr }),
      profile: lease.profile ?? null,
      owner_pid: lease.ownerPid ?? null,
      owner_start: lease.ownerStart ?? null,
      created_at: lease.createdAt,
      expires_at: lease.expiresAt === null ? null : isoTime(lease.expiresAt, "expiresAt"),
      ttl_seconds: lease.ttlSeconds ?? null,
    };
    this.write("inserting a lease", () => {
      const slot = this.st.slotGet.get(row.slot_idx);
      if (slot === undefined || slot.state !== "free") throw new SlotNotFreeError(row.slot_idx, slot?.state);
      this.st.slotSet.run({ state: "leased", reason: null, now: new Date().toISOString(), idx: row.slot_idx });
      try {
        this.st.leaseInsert.run(row);
      } catch (err) {
        // A free slot that a lease still holds: only reachable through a corrupted store.
        if (err instanceof Database.SqliteError && err.code === "SQLITE_CONSTRAINT_UNIQUE" && /slot_idx/.test(err.message)) {
          throw new SlotNotFreeError(row.slot_idx, "leased", { cause: err });
        }
        throw err;
      }
      this.st.counterAdd.run("leases");
    });
    return rowToLease(row);
  }

  /**
   * In one transaction: deletes the lease and moves its slot to 'scrubbing' (a quarantined
   * slot stays quarantined); with `end`, remembers how it ended (and forgets ends older
   * than ENDED_RETENTION_MS). Returns the deleted lease, or undefined when there was none.
   */
  deleteLease(id: string, end?: { cause: EndCause; by?: string }): StoredLease | undefined {
    return this.write("deleting a lease", () => {
      const row = this.st.leaseGet.get(id);
      if (row === undefined) return undefined;
      this.st.leaseDelete.run(id);
      if (end !== undefined) {
        const now = Date.now();
        this.st.endedPrune.run(new Date(now - ENDED_RETENTION_MS).toISOString());
        this.st.endedInsert.run({
          id,
          consumer: row.consumer,
          slot_idx: row.slot_idx,
          cause: end.cause,
          by: end.by ?? null,
          ended_at: new Date(now).toISOString(),
        });
      }
      const slot = this.st.slotGet.get(row.slot_idx);
      if (slot !== undefined && slot.state !== "quarantined") {
        this.st.slotSet.run({ state: "scrubbing", reason: null, now: new Date().toISOString(), idx: row.slot_idx });
      }
      this.st.counterAdd.run("releases");
      return rowToLease(row);
    });
  }

  /**
   * Sets a lease's expiry (null: no TTL) and, when given, its ttlSeconds. Returns the
   * updated lease, or undefined when there is none.
   */
  renewLease(id: string, expiresAt: string | null, ttlSeconds?: number): StoredLease | undefined {
    const value = expiresAt === null ? null : isoTime(expiresAt, "expiresAt");
    return this.write("renewing a lease", () => {
      if (this.st.leaseRenew.run(value, ttlSeconds ?? null, id).changes === 0) return undefined;
      const row = this.st.leaseGet.get(id);
      return row === undefined ? undefined : rowToLease(row);
    });
  }

  getLease(id: string): StoredLease | undefined {
    return this.run("reading a lease", () => {
      const row = this.st.leaseGet.get(id);
      return row === undefined ? undefined : rowToLease(row);
    });
  }

  /** How a lease ended, if it did within ENDED_RETENTION_MS. */
  endedLease(id: string): EndedLease | undefined {
    return this.run("reading an ended lease", () => {
      const row = this.st.endedGet.get(id, new Date(Date.now() - ENDED_RETENTION_MS).toISOString());
      if (row === undefined) return undefined;
      return {
        id: row.id,
        consumer: row.consumer,
        slotIndex: row.slot_idx,
        cause: row.cause as EndCause,
        ...(row.by !== null ? { by: row.by } : {}),
        endedAt: row.ended_at,
      };
    });
  }

  /** Whether an operator stopped new leases (`netslot drain`); survives restarts. */
  draining(): boolean {
    return this.run("reading the drain switch", () => this.st.metaGet.get("draining")?.value === "1");
  }

  setDraining(on: boolean): void {
    this.write("writing the drain switch", () => this.st.metaSet.run("draining", on ? "1" : "0"));
  }

  /** All leases, or one consumer's, oldest first. */
  listLeases(consumer?: string): StoredLease[] {
    return this.run("listing leases", () =>
      (consumer === undefined ? this.st.leaseAll.all() : this.st.leaseByConsumer.all(consumer)).map(rowToLease),
    );
  }

  /** Leases whose expiresAt is at or before now, soonest first. */
  expiredLeases(now: Date): StoredLease[] {
    return this.run("listing expired leases", () => this.st.leaseExpired.all(now.toISOString()).map(rowToLease));
  }

  /** Leases with an owner pid, grouped by pid (for owner-death release). */
  leasesByOwnerPid(): Map<number, StoredLease[]> {
    return this.run("listing owned leases", () => {
      const byPid = new Map<number, StoredLease[]>();
      for (const row of this.st.leaseOwned.all()) {
        const lease = rowToLease(row);
        const list = byPid.get(row.owner_pid!);
        if (list === undefined) byPid.set(row.owner_pid!, [lease]);
        else list.push(lease);
      }
      return byPid;
    });
  }

  /** Lifetime totals. */
  counters(): StoreCounters {
    return this.run("reading counters", () => {
      const out: StoreCounters = { leases: 0, releases: 0 };
      for (const { name, value } of this.st.counterAll.all()) {
        if (name === "leases" || name === "releases") out[name] = value;
      }
      return out;
    });
  }

  // --- plumbing ------------------------------------------------------------------------

  private run<T>(what: string, fn: () => T): T {
    if (this.closed && what !== "close") throw new Error("lease store is closed");
    try {
      return fn();
    } catch (err) {
      throw mapError(err, what);
    }
  }

  /**
   * Runs fn in a BEGIN IMMEDIATE transaction: the write lock is taken up front, so a
   * busy database fails at BEGIN (after busy_timeout) rather than half-way. Any throw
   * rolls the whole transaction back (SQLite itself already rolled back on FULL/IOERR).
   */
  private write<T>(what: string, fn: () => T): T {
    return this.run(what, () => this.tx.immediate(fn) as T);
  }
}
