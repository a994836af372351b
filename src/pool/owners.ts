// Leases bound to an owner process end when it exits. One pidfd per owner, all waited on
// by a single poll(2) that runs off the event loop (libc.pollAsync, on the libuv pool):
// no timer per lease, no polling loop. An eventfd wakes the poll when the set changes.
import * as libc from "../kernel/libc.js";
import { processStartTime } from "../kernel/procfs.js";

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
    this.wakeFd = libc.eventfd(0, libc.EFD_NONBLOCK);
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
      libc.writeRaw(this.wakeFd, one);
    } else {
      this.pollOnce();
    }
  }

  private pollOnce(): void {
    if (this.closed || this.polling || this.watched.size === 0) return;
    this.polling = true;
    const entries = [...this.watched.entries()];
    const fds: libc.PollFd[] = [{ fd: this.wakeFd, events: libc.POLLIN, revents: 0 }, ...entries.map(([, w]) => ({ fd: w.fd, events: libc.POLLIN, revents: 0 }))];
    libc.pollAsync(fds, -1, (err) => {
      this.polling = false;
      if (this.closed) return;
      if (err) {
        setTimeout(() => this.pollOnce(), 100).unref();
        return;
      }
      if (fds[0]!.revents) libc.readRaw(this.wakeFd, Buffer.alloc(8));
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
