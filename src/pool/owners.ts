// Leases bound to an owner process end when it exits. One pidfd per owner, all waited on
// by a single poll(2) that runs off the event loop (koffi's async call on the libuv pool):
// no timer per lease, no polling loop. An eventfd wakes the poll when the set changes.
import * as fs from "node:fs";
import koffi from "koffi";
import * as libc from "../kernel/libc.js";

const lib = koffi.load("libc.so.6");
const PollFd = koffi.struct("netslot_pollfd", { fd: "int", events: "short", revents: "short" });
const poll = lib.func("poll", "int", [koffi.inout(koffi.pointer(PollFd)), "unsigned long", "int"]);
const eventfd = lib.func("int eventfd(unsigned int initval, int flags)");
const writeFd = lib.func("intptr_t write(int fd, const void *buf, size_t len)");
const readFd = lib.func("intptr_t read(int fd, _Out_ void *buf, size_t len)");
const POLLIN = 1;
const EFD_CLOEXEC = 0o2000000;
const EFD_NONBLOCK = 0o4000;

/** The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), to tell a reused pid apart. */
export function processStartTime(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "latin1");
    // comm may contain spaces and parentheses: fields start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return Number(fields[19]);
  } catch {
    return undefined;
  }
}

interface Watched {
  fd: number;
  startTime: number | undefined;
}

export class OwnerWatcher {
  private readonly watched = new Map<number, Watched>();
  private readonly wakeFd: number;
  private polling = false;
  private closed = false;

  constructor(private readonly onExit: (pid: number) => void) {
    this.wakeFd = Number(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (this.wakeFd < 0) throw new libc.SyscallError("eventfd", koffi.errno());
  }

  /**
   * Watches `pid`. Returns false when the process is already gone (or is another process
   * than the one that started at `startTime`): the caller ends its leases right away.
   */
  watch(pid: number, startTime?: number): boolean {
    if (this.watched.has(pid)) return true;
    let fd: number;
    try {
      fd = libc.pidfdOpen(pid);
    } catch {
      return false;
    }
    const current = processStartTime(pid);
    if (current === undefined || (startTime !== undefined && current !== startTime)) {
      libc.close(fd);
      return false;
    }
    this.watched.set(pid, { fd, startTime: current });
    this.wake();
    return true;
  }

  unwatch(pid: number): void {
    const w = this.watched.get(pid);
    if (!w) return;
    this.watched.delete(pid);
    libc.close(w.fd);
    this.wake();
  }

  startTimeOf(pid: number): number | undefined {
    return this.watched.get(pid)?.startTime;
  }

  private wake(): void {
    if (this.polling) {
      const one = Buffer.alloc(8);
      one.writeBigUInt64LE(1n);
      writeFd(this.wakeFd, one, 8);
    } else {
      this.pollOnce();
    }
  }

  private pollOnce(): void {
    if (this.closed || this.polling || this.watched.size === 0) return;
    this.polling = true;
    const entries = [...this.watched.entries()];
    const fds = [{ fd: this.wakeFd, events: POLLIN, revents: 0 }, ...entries.map(([, w]) => ({ fd: w.fd, events: POLLIN, revents: 0 }))];
    poll.async(fds, fds.length, -1, (err: unknown) => {
      this.polling = false;
      if (this.closed) return;
      if (err) {
        setTimeout(() => this.pollOnce(), 100).unref();
        return;
      }
      if (fds[0]!.revents) readFd(this.wakeFd, Buffer.alloc(8), 8);
      fds.slice(1).forEach((p, i) => {
        if (!p.revents) return;
        const [pid, w] = entries[i]!;
        if (this.watched.get(pid) !== w) return;
        this.watched.delete(pid);
        libc.close(w.fd);
        this.onExit(pid);
      });
      this.pollOnce();
    });
  }

  /** Stops watching; the pending poll returns when woken. */
  close(): void {
    this.closed = true;
    this.wake();
    for (const w of this.watched.values()) libc.close(w.fd);
    this.watched.clear();
  }
}
