// Change tracking of slots' sysctls, so that proving an untouched slot clean need not read
// its ~500 sysctl files (about 4.5 µs of kernel time each, measured with a C loop here).
//
// One inotify instance watches every directory under each armed slot's /proc/sys/net for
// IN_OPEN, IN_MODIFY and IN_CLOSE_WRITE. Not IN_MODIFY alone: a write through Linux AIO
// (io_submit) changes a sysctl without any modify event (tried on this 6.18 kernel), but
// it needs the file opened for writing first, which IN_OPEN reports (and its close,
// IN_CLOSE_WRITE). Any event in a slot's directories makes that slot's sysctls dirty,
// whoever caused it; the proof then reads them all.
//
// Directory entries of /proc/sys are dentries the kernel prunes under memory pressure and
// re-creates on the next lookup with a new inode, which a watch on the old inode would
// never hear of (tried: `echo 2 > drop_caches` loses every event). So each watched
// directory is held open, without a descriptor of our own: its file goes into an
// io_uring registered-file table (a table entry holds a reference like a descriptor
// would, and does not count against the process's descriptor limit, which a pool of
// 16,384 slots × ~35 directories would exceed many times).
//
// rtnetlink notifications were measured too and are not used: a netlink broadcast walks
// every socket subscribed to its group on the host, whatever its namespace, so one
// subscribed socket per slot makes every rtnetlink change anywhere cost O(slots) (3,000
// link changes took 0.13 s of system time with no such socket, 0.56 s with 4,000, 4-6 s
// with 16,000).
import * as fs from "node:fs";
import * as libc from "./libc.js";

const MASK = libc.IN_OPEN | libc.IN_MODIFY | libc.IN_CLOSE_WRITE;
const O_DIRECTORY = 0o200000;
/** Entries of one registered-file table; several tables when more are needed. */
const TABLE_SIZE = 8192;

interface Armed {
  /** The namespace the watches were taken in (SO_NETNS_COOKIE: never reused while the host runs). */
  cookie: bigint;
  wds: number[];
  /** [table, entry] holding each watched directory. */
  pins: Array<[number, number]>;
  /** Something opened or wrote a sysctl of this slot since the last settle. */
  dirty: boolean;
}

export interface SysctlWatchOptions {
  /** Watches this instance may hold in all (each slot needs about 35); slots beyond are not armed. */
  maxWatches: number;
}

export class SysctlWatches {
  private readonly fd: number;
  private readonly tables: number[] = [];
  private readonly freeEntries: Array<[number, number]> = [];
  private readonly slots = new Map<number, Armed>();
  private readonly slotOfWd = new Map<number, number>();
  private watches = 0;
  private readonly buf = Buffer.alloc(64 * 1024);
  /** Events lost to a full queue: every armed slot counts as dirty once. */
  overflows = 0;

  constructor(private readonly opts: SysctlWatchOptions) {
    this.fd = libc.inotifyInit();
  }

  /** Whether slot `index` has watches taken in the namespace `cookie`. */
  armedIn(index: number, cookie: bigint): boolean {
    return this.slots.get(index)?.cookie === cookie;
  }

  /** Armed slots. */
  get size(): number {
    return this.slots.size;
  }

  /**
   * Watches every directory under /proc/sys/net of the calling thread's namespace for slot
   * `index` (call inside withNetns). False when the watch budget is spent (the slot is
   * then proven by reading). Replaces the slot's earlier watches.
   */
  arm(index: number, cookie: bigint): boolean {
    this.disarm(index);
    const armed: Armed = { cookie, wds: [], pins: [], dirty: false };
    const release = () => {
      for (const wd of armed.wds) {
        libc.inotifyRmWatch(this.fd, wd);
        this.slotOfWd.delete(wd);
      }
      this.watches -= armed.wds.length;
      this.unpin(armed.pins);
    };
    const watchDir = (dirFd: number): boolean => {
      if (this.watches >= this.opts.maxWatches) return false;
      const wd = libc.inotifyAddWatchRaw(this.fd, `/proc/thread-self/fd/${dirFd}`, MASK);
      if (wd < 0) return false; // ENOSPC: fs.inotify.max_user_watches reached
      armed.wds.push(wd);
      this.slotOfWd.set(wd, index);
      this.watches++;
      armed.pins.push(this.pin(dirFd));
      return true;
    };
    const walk = (dirFd: number): boolean => {
      if (!watchDir(dirFd)) return false;
      for (const e of fs.readdirSync(`/proc/thread-self/fd/${dirFd}`, { withFileTypes: true })) {
        if (!e.isDirectory()) continue;
        const child = libc.openAtRaw(dirFd, e.name, libc.O_RDONLY | O_DIRECTORY);
        if (child < 0) return false;
        try {
          if (!walk(child)) return false;
        } finally {
          libc.close(child);
        }
      }
      return true;
    };
    let ok = true;
    try {
      for (const top of fs.readdirSync("/proc/sys/net", { withFileTypes: true })) {
        if (!top.isDirectory()) continue;
        const dirFd = libc.openRaw(`/proc/sys/net/${top.name}`, libc.O_RDONLY | O_DIRECTORY);
        if (dirFd < 0) {
          ok = false;
          break;
        }
        try {
          ok = walk(dirFd);
        } finally {
          libc.close(dirFd);
        }
        if (!ok) break;
      }
    } catch (err) {
      release();
      throw err;
    }
    if (!ok) {
      release();
      return false;
    }
    this.slots.set(index, armed);
    // Our own walk opened directories: not a tenant's doing.
    this.settle(index);
    return true;
  }

  /** Drops slot `index`'s watches (its namespace is going away, or is rebuilt). */
  disarm(index: number): void {
    const armed = this.slots.get(index);
    if (!armed) return;
    this.drain();
    this.slots.delete(index);
    for (const wd of armed.wds) {
      libc.inotifyRmWatch(this.fd, wd);
      this.slotOfWd.delete(wd);
    }
    this.watches -= armed.wds.length;
    this.unpin(armed.pins);
  }

  /** Whether nothing opened or wrote any sysctl of slot `index` since its last settle (false when not armed). */
  untouched(index: number): boolean {
    this.drain();
    const armed = this.slots.get(index);
    return armed !== undefined && !armed.dirty;
  }

  /** Forgets what happened in slot `index` until now: the proof has just read it (our own opens are events too). */
  settle(index: number): void {
    this.drain();
    const armed = this.slots.get(index);
    if (armed) armed.dirty = false;
  }

  close(): void {
    libc.close(this.fd);
    for (const t of this.tables) libc.close(t);
  }

  /** Reads every queued event and marks the slots they belong to. */
  private drain(): void {
    for (;;) {
      const n = libc.readRaw(this.fd, this.buf);
      if (n <= 0) return; // -EAGAIN: nothing queued
      for (let off = 0; off + 16 <= n; ) {
        const wd = this.buf.readInt32LE(off);
        const mask = this.buf.readUInt32LE(off + 4);
        const len = this.buf.readUInt32LE(off + 12);
        off += 16 + len;
        if (mask & libc.IN_Q_OVERFLOW) {
          this.overflows++;
          for (const s of this.slots.values()) s.dirty = true;
          continue;
        }
        const index = this.slotOfWd.get(wd);
        const armed = index === undefined ? undefined : this.slots.get(index);
        if (!armed) continue;
        armed.dirty = true;
        // The kernel dropped the watch (its inode went away): the slot is no longer watched
        // (re-armed, and its other watches dropped, by the next arm).
        if (mask & libc.IN_IGNORED) armed.cookie = -1n;
      }
    }
  }

  private pin(dirFd: number): [number, number] {
    let entry = this.freeEntries.pop();
    if (!entry) {
      const table = libc.ioUringSetup();
      try {
        libc.ioUringRegisterSparseFiles(table, TABLE_SIZE);
      } catch (err) {
        libc.close(table);
        throw err;
      }
      this.tables.push(table);
      for (let i = TABLE_SIZE - 1; i > 0; i--) this.freeEntries.push([table, i]);
      entry = [table, 0];
    }
    libc.ioUringUpdateFiles(entry[0], entry[1], [dirFd]);
    return entry;
  }

  private unpin(pins: Array<[number, number]>): void {
    for (const [table, entry] of pins) {
      libc.ioUringUpdateFiles(table, entry, [-1]);
      this.freeEntries.push([table, entry]);
    }
    pins.length = 0;
  }
}
