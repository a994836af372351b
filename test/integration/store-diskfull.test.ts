// The lease store on a real full filesystem: a 2 MiB tmpfs filled up with dd. Writes must
// fail with store_unavailable and leave nothing half-done, whether the disk fills while
// the WAL grows or while a checkpoint copies the WAL back into the database file.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import Database from "better-sqlite3";
import { NetslotError } from "../../src/core/errors.js";
import { DB_FILE, LeaseStore, type StoredLease } from "../../src/store/store.js";

const isRoot = process.getuid?.() === 0;
const tag = `t${Math.random().toString(36).slice(2, 7).padEnd(5, "0")}`;
let mnt = "";
let mounted = false;
const open: LeaseStore[] = [];

/** Big labels so every lease takes several WAL pages (overflow pages). */
const BIG = "x".repeat(20_000);

function lease(id: string, slotIndex: number, big = true): StoredLease {
  return { id, consumer: tag, slotIndex, labels: big ? { big: BIG } : { small: id }, createdAt: new Date().toISOString(), expiresAt: null };
}

function openStore(dir: string): LeaseStore {
  const store = LeaseStore.open(dir);
  open.push(store);
  return store;
}

function closeStore(store: LeaseStore): void {
  store.close();
  open.splice(open.indexOf(store), 1);
}

/** Fills the tmpfs: dd stops with ENOSPC (exit status 1) once nothing is left. */
function fill(): string {
  const filler = path.join(mnt, "filler");
  const r = spawnSync("dd", ["if=/dev/zero", `of=${filler}`, "bs=4k"], { encoding: "utf8" });
  assert.match(r.stderr, /No space left on device/, `dd did not fill ${mnt}: ${r.stderr}`);
  return filler;
}

function isUnavailable(err: unknown): boolean {
  return (
    err instanceof NetslotError &&
    err.code === "store_unavailable" &&
    err.cause instanceof Database.SqliteError &&
    /^SQLITE_(FULL|IOERR)/.test(err.cause.code)
  );
}

/** Leased slots and lease rows agree one for one, and the file passes integrity_check. */
function assertConsistent(store: LeaseStore, dir: string): void {
  const leases = store.listLeases();
  const leased = store.slots().filter((s) => s.state === "leased").map((s) => s.idx);
  assert.deepEqual(leased, leases.map((l) => l.slotIndex).sort((a, b) => a - b));
  const raw = new Database(path.join(dir, DB_FILE), { readonly: true });
  try {
    assert.equal(raw.pragma("integrity_check", { simple: true }), "ok");
  } finally {
    raw.close();
  }
}

describe("lease store on a full disk", { skip: isRoot ? false : "needs root (mount)" }, () => {
  before(() => {
    mnt = fs.mkdtempSync(path.join(os.tmpdir(), `netslot-${tag}-`));
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=2m,mode=0700", `${tag}-tmpfs`, mnt]);
    mounted = true;
  });

  after(() => {
    for (const store of open.splice(0)) {
      try {
        store.close();
      } catch {
        // Unmounting is what matters now.
      }
    }
    if (mounted) {
      const r = spawnSync("umount", [mnt]);
      if (r.status !== 0) spawnSync("umount", ["-l", mnt]);
    }
    if (mnt) fs.rmSync(mnt, { recursive: true, force: true });
  });

  it("fails writes with store_unavailable while full, leaves nothing half-done, recovers when space returns", (t) => {
    const dir = path.join(mnt, "a");
    const store = openStore(dir);
    store.ensureSlots(100);
    store.setSlotStates([...Array(100).keys()], "free");
    for (let i = 0; i < 3; i++) store.insertLease(lease(`pre-${i}`, i, false));
    // Grow the WAL, then checkpoint it (RESTART: the next write starts again at its
    // beginning) so the first writes on the full disk reuse WAL space already allocated.
    for (let i = 3; i < 13; i++) store.insertLease(lease(`warm-${i}`, i));
    for (let i = 3; i < 13; i++) store.deleteLease(`warm-${i}`);
    store.setSlotStates([...Array(10).keys()].map((k) => k + 3), "free");
    const raw = new Database(path.join(dir, DB_FILE));
    try {
      const [res] = raw.pragma("wal_checkpoint(RESTART)") as { busy: number; log: number; checkpointed: number }[];
      assert.equal(res!.busy, 0);
      assert.equal(res!.checkpointed, res!.log);
    } finally {
      raw.close();
    }

    let batch: number[];
    let quarantined = false;
    const filler = fill();
    try {
      // The WAL may still have room from earlier frames; write until it has none.
      let failedAt = -1;
      for (let i = 3; i < 100; i++) {
        try {
          store.insertLease(lease(`full-${i}`, i));
        } catch (err) {
          assert.ok(isUnavailable(err), `unexpected error: ${String(err)}`);
          failedAt = i;
          break;
        }
      }
      assert.ok(failedAt >= 3, "no insert failed on a full disk");
      t.diagnostic(`insert ${failedAt - 2} failed on the full disk`);
      // The failed insert left neither its lease nor a leased slot behind.
      assert.equal(store.getLease(`full-${failedAt}`), undefined);
      assert.deepEqual([store.slot(failedAt)!.state, store.slot(failedAt)!.reason], ["free", null]);
      // Everything acknowledged before is still there.
      for (let i = 0; i < 3; i++) assert.equal(store.getLease(`pre-${i}`)!.slotIndex, i);
      for (let i = 3; i < failedAt; i++) assert.equal(store.getLease(`full-${i}`)!.slotIndex, i);
      const leasesBefore = store.counters().leases;

      // Release while full: all or nothing.
      try {
        const gone = store.deleteLease("pre-0");
        assert.equal(gone?.id, "pre-0");
        assert.equal(store.getLease("pre-0"), undefined);
        assert.equal(store.slot(0)!.state, "scrubbing");
        t.diagnostic("release on the full disk went through");
      } catch (err) {
        t.diagnostic("release on the full disk failed cleanly");
        assert.ok(isUnavailable(err), `unexpected error: ${String(err)}`);
        assert.equal(store.getLease("pre-0")!.slotIndex, 0);
        assert.equal(store.slot(0)!.state, "leased");
      }

      // A boot-sized batch: all or nothing.
      batch = [...Array(100 - failedAt - 1).keys()].map((k) => k + failedAt + 1);
      try {
        store.setSlotStates(batch, "quarantined", `full disk ${"r".repeat(2000)}`);
        for (const idx of batch) assert.equal(store.slot(idx)!.state, "quarantined");
        quarantined = true;
        t.diagnostic("batch on the full disk went through");
      } catch (err) {
        t.diagnostic("batch on the full disk failed cleanly");
        assert.ok(isUnavailable(err), `unexpected error: ${String(err)}`);
        for (const idx of batch) assert.equal(store.slot(idx)!.state, "free");
      }
      assert.equal(store.counters().leases, leasesBefore);
      assertConsistent(store, dir);
    } finally {
      fs.rmSync(filler, { force: true });
    }

    // Space is back: the same lease goes in, and a release works.
    if (quarantined) store.setSlotStates(batch, "free");
    const first = store.listLeases().length;
    const idx = store.slots().find((s) => s.state === "free")!.idx;
    store.insertLease(lease(`again-${idx}`, idx));
    assert.equal(store.slot(idx)!.state, "leased");
    store.deleteLease(`again-${idx}`);
    assert.equal(store.slot(idx)!.state, "scrubbing");
    assert.equal(store.listLeases().length, first);
    assertConsistent(store, dir);

    const leases = store.listLeases();
    closeStore(store);
    const reopened = openStore(dir);
    assert.deepEqual(reopened.listLeases(), leases);
    assertConsistent(reopened, dir);
    closeStore(reopened);
    fs.rmSync(dir, { recursive: true });
  });

  it("keeps every lease when the disk fills before the WAL is checkpointed", (t) => {
    const dir = path.join(mnt, "b");
    const store = openStore(dir);
    store.ensureSlots(100);
    store.setSlotStates([...Array(100).keys()], "free");
    // About 1.2 MB of WAL and a database file that has not grown yet: the checkpoint at
    // close needs space the disk no longer has.
    const ids: string[] = [];
    for (let i = 0; i < 25; i++) ids.push(store.insertLease(lease(`wal-${i}`, i)).id);
    assert.ok(fs.statSync(path.join(dir, `${DB_FILE}-wal`)).size > fs.statSync(path.join(dir, DB_FILE)).size);

    const filler = fill();
    try {
      closeStore(store); // checkpoint fails inside SQLite; the WAL stays and still holds the leases
      try {
        const full = openStore(dir);
        assert.deepEqual(full.listLeases().map((l) => l.id).sort(), [...ids].sort());
        assert.throws(() => full.insertLease(lease("wal-x", 50)), isUnavailable);
        assert.equal(full.slot(50)!.state, "free");
        assertConsistent(full, dir);
        closeStore(full);
        t.diagnostic("reopened on the full disk");
      } catch (err) {
        t.diagnostic("reopen on the full disk failed cleanly");
        // Opening may itself need space (WAL recovery): then it must say so.
        assert.ok(err instanceof NetslotError && err.code === "store_unavailable", `unexpected error: ${String(err)}`);
      }
    } finally {
      fs.rmSync(filler, { force: true });
    }

    const reopened = openStore(dir);
    assert.deepEqual(reopened.listLeases().map((l) => l.id).sort(), [...ids].sort());
    assert.equal(reopened.slotCounts().leased, ids.length);
    reopened.insertLease(lease("wal-x", 50));
    assertConsistent(reopened, dir);
    closeStore(reopened);
  });
});
