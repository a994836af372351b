// Requests that asked to wait (`waitSeconds`) for a slot when none was theirs to take.
// Whenever a slot returns to the pool or a lease ends (a quota frees up), the waiters are
// offered it in order: higher consumer priority first, then first come. An offer is the
// grant itself, run synchronously, so no other request can take the slot in between.
import { NetslotError } from "../core/errors.js";

/** Errors that mean "not now" for a waiter: it keeps waiting. */
const NOT_NOW = new Set(["pool_exhausted", "quota_exceeded"]);

export function isNotNow(err: unknown): err is NetslotError {
  return err instanceof NetslotError && NOT_NOW.has(err.code);
}

interface Waiter<T> {
  priority: number;
  seq: number;
  attempt: () => T;
  resolve: (value: T) => void;
  reject: (err: unknown) => void;
  timer: NodeJS.Timeout;
  /** The refusal to answer with when the wait times out. */
  last: NetslotError;
}

export class WaitQueue<T> {
  private readonly waiters: Waiter<T>[] = [];
  private seq = 0;
  private scheduled = false;

  /** `hasFree`: whether any slot is free at all (else an offer is pointless). */
  constructor(private readonly hasFree: () => boolean) {}

  get size(): number {
    return this.waiters.length;
  }

  /**
   * Waits up to `seconds` for `attempt` to succeed; `refusal` is why it could not at once
   * (answered again if the wait runs out). Other errors from an attempt end the wait.
   */
  wait(priority: number, seconds: number, refusal: NetslotError, attempt: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const waiter: Waiter<T> = {
        priority,
        seq: this.seq++,
        attempt,
        resolve,
        reject,
        last: refusal,
        timer: setTimeout(() => {
          this.remove(waiter);
          const { code, message, retryAfter } = waiter.last;
          reject(new NetslotError(code, `${message} (waited ${seconds} s)`, { ...(retryAfter !== undefined ? { retryAfter } : {}) }));
        }, seconds * 1000),
      };
      // Sorted on entry: priority descending, then arrival.
      let at = this.waiters.findIndex((w) => w.priority < priority);
      if (at === -1) at = this.waiters.length;
      this.waiters.splice(at, 0, waiter);
    });
  }

  /** Something was freed: offer it to the waiters, once the current call stack is done. */
  wake(): void {
    if (this.scheduled || this.waiters.length === 0) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.offer();
    });
  }

  /** Ends every wait (daemon stopping, or drain): each gets `error`. */
  rejectAll(error: NetslotError): void {
    for (const w of this.waiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(error);
    }
  }

  private offer(): void {
    for (const w of [...this.waiters]) {
      if (!this.hasFree()) return;
      let value: T;
      try {
        value = w.attempt();
      } catch (err) {
        if (isNotNow(err)) {
          w.last = err;
          continue;
        }
        this.remove(w);
        w.reject(err);
        continue;
      }
      this.remove(w);
      w.resolve(value);
    }
  }

  private remove(w: Waiter<T>): void {
    clearTimeout(w.timer);
    const i = this.waiters.indexOf(w);
    if (i >= 0) this.waiters.splice(i, 1);
  }
}
