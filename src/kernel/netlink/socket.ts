// A synchronous netlink socket. It belongs to the network namespace the calling thread is
// in when it is opened (callers switch with withNetns) and stays there. Every quirk of the
// request/ack and dump protocols lives here: sequence numbers, extended acks, truncated
// datagrams, interrupted dumps.
import * as os from "node:os";
import * as libc from "../libc.js";
import {
  NLMSG_DONE,
  NLMSG_ERROR,
  NLMSG_NOOP,
  NLMSG_OVERRUN,
  NLM_F_ACK,
  NLM_F_DUMP,
  NLM_F_DUMP_INTR,
  NLM_F_REQUEST,
  decodeDone,
  decodeError,
  parseMessages,
  stampMessage,
  type NlMsg,
} from "./codec.js";

export const NETLINK_ROUTE = 0;
export const NETLINK_NETFILTER = 12;

const NETLINK_CAP_ACK = 10;
const MSG_TRUNC = 0x20;
const RECV_BUFFER = 256 * 1024;
const SOCKET_RCVBUF = 4 * 1024 * 1024;
const DUMP_RETRIES = 5;
/** A kernel that does not answer within this is a bug; better an error than a hung daemon. */
const RECV_TIMEOUT_SECONDS = 10;
/** Batched requests are sent in chunks of at most this many bytes. */
const BATCH_BYTES = 64 * 1024;

const errnoNames = new Map<number, string>(Object.entries(os.constants.errno).map(([k, v]) => [v, k]));

/** A negative answer from the kernel: errno plus the extended-ack text if it gave one. */
export class NetlinkError extends Error {
  readonly errno: number;
  /** The kernel's NLMSGERR_ATTR_MSG text, e.g. "Invalid handle". */
  readonly extack: string | undefined;
  /** What was attempted, e.g. "RTM_NEWLINK veth0". */
  readonly operation: string;

  constructor(operation: string, errno: number, extack?: string) {
    const name = errnoNames.get(errno) ?? `errno ${errno}`;
    super(`${operation}: ${libc.strerror(errno)} (${name})${extack ? `: ${extack}` : ""}`);
    this.name = "NetlinkError";
    this.errno = errno;
    this.extack = extack;
    this.operation = operation;
  }

  /** The symbolic errno, e.g. "EEXIST". */
  get code(): string {
    return errnoNames.get(this.errno) ?? `E${this.errno}`;
  }
}

export function isNetlinkErrno(err: unknown, ...errnos: number[]): err is NetlinkError {
  return err instanceof NetlinkError && errnos.includes(err.errno);
}

export class NetlinkSocket {
  readonly protocol: number;
  private fd: number;
  private seq: number;
  // Not zeroed (256 KiB per socket opened): only the bytes recv wrote are ever read.
  private readonly buf = Buffer.allocUnsafe(RECV_BUFFER);

  private constructor(protocol: number, fd: number) {
    this.protocol = protocol;
    this.fd = fd;
    // Random start so a reopened socket never matches stale replies of an old one.
    this.seq = (Math.random() * 0x7fffffff) >>> 0;
  }

  /**
   * Opens a netlink socket of `protocol` (NETLINK_ROUTE, NETLINK_NETFILTER) in the calling
   * thread's current network namespace. `strict` turns on NETLINK_GET_STRICT_CHK, which
   * makes the kernel filter dumps by the header fields and attributes of the request.
   */
  static open(protocol: number, opts: { strict?: boolean } = {}): NetlinkSocket {
    const fd = libc.socket(libc.AF_NETLINK, libc.SOCK_RAW, protocol);
    try {
      try {
        libc.setsockoptInt(fd, libc.SOL_SOCKET, libc.SO_RCVBUFFORCE, SOCKET_RCVBUF);
      } catch {
        libc.setsockoptInt(fd, libc.SOL_SOCKET, libc.SO_RCVBUF, SOCKET_RCVBUF);
      }
      libc.setsockoptInt(fd, libc.SOL_SOCKET, libc.SO_SNDBUF, 1024 * 1024);
      libc.setsockoptInt(fd, libc.SOL_NETLINK, libc.NETLINK_EXT_ACK, 1);
      // Errors need not echo our request back: the extack TLVs say what was wrong.
      libc.setsockoptInt(fd, libc.SOL_NETLINK, NETLINK_CAP_ACK, 1);
      if (opts.strict) libc.setsockoptInt(fd, libc.SOL_NETLINK, libc.NETLINK_GET_STRICT_CHK, 1);
      const tv = Buffer.alloc(16);
      tv.writeBigInt64LE(BigInt(RECV_TIMEOUT_SECONDS), 0);
      libc.setsockopt(fd, libc.SOL_SOCKET, libc.SO_RCVTIMEO, tv);
      const addr = Buffer.alloc(12); // sockaddr_nl, pid 0: the kernel assigns one
      addr.writeUInt16LE(libc.AF_NETLINK, 0);
      libc.bind(fd, addr);
    } catch (err) {
      libc.close(fd);
      throw err;
    }
    return new NetlinkSocket(protocol, fd);
  }

  /** The cookie of the namespace the socket lives in (see libc.netnsCookie). */
  netnsCookie(): bigint {
    return libc.netnsCookie(this.liveFd());
  }

  close(): void {
    if (this.fd >= 0) {
      libc.close(this.fd);
      this.fd = -1;
    }
  }

  private nextSeq(): number {
    this.seq = (this.seq + 1) >>> 0;
    if (this.seq === 0) this.seq = 1;
    return this.seq;
  }

  private liveFd(): number {
    if (this.fd < 0) throw new Error("netlink socket is closed");
    return this.fd;
  }

  /** Receives one datagram and splits it into messages (copied: the buffer is reused). */
  private receive(operation: string): NlMsg[] {
    const fd = this.liveFd();
    for (;;) {
      const n = libc.recv(fd, this.buf, MSG_TRUNC);
      if (n === -libc.EINTR) continue;
      if (n === -libc.EAGAIN) throw new NetlinkError(`${operation}: no answer within ${RECV_TIMEOUT_SECONDS}s`, libc.EAGAIN);
      if (n > this.buf.length) throw new Error(`${operation}: netlink datagram of ${n} bytes truncated to ${this.buf.length}`);
      return parseMessages(Buffer.from(this.buf.subarray(0, n)));
    }
  }

  /**
   * Sends one request with NLM_F_ACK and waits for its ack; throws NetlinkError on a
   * negative ack unless its errno is in `ignore`. Returns the errno ignored, or 0.
   * `msg` is an encoded message; its flags get NLM_F_REQUEST|NLM_F_ACK added.
   */
  request(msg: Buffer, operation = "netlink request", ignore: readonly number[] = []): number {
    const replies: NlMsg[] = [];
    return this.transact(msg, operation, ignore, replies);
  }

  /**
   * A non-dump GET: returns the messages the kernel answers with before its ack
   * (e.g. RTM_GETLINK by name returns one RTM_NEWLINK). Throws NetlinkError on errors.
   */
  query(msg: Buffer, operation = "netlink query"): NlMsg[] {
    const replies: NlMsg[] = [];
    this.transact(msg, operation, [], replies);
    return replies;
  }

  private transact(msg: Buffer, operation: string, ignore: readonly number[], replies: NlMsg[]): number {
    const seq = this.nextSeq();
    stampMessage(msg, msg.readUInt16LE(6) | NLM_F_REQUEST | NLM_F_ACK, seq);
    libc.send(this.liveFd(), msg);
    for (;;) {
      for (const m of this.receive(operation)) {
        if (m.seq !== seq) continue; // stale answer to an earlier, abandoned request
        if (m.type === NLMSG_ERROR) {
          const e = decodeError(m.payload, m.flags);
          if (e.errno === 0) return 0;
          if (ignore.includes(e.errno)) return e.errno;
          throw new NetlinkError(operation, e.errno, e.message);
        }
        if (m.type !== NLMSG_NOOP) replies.push(m);
      }
    }
  }

  /**
   * Sends many requests (each with NLM_F_ACK) in as few datagrams as fit, then collects
   * every ack. Errors in `ignore` are skipped; the first other error is thrown after all
   * acks are in, so the socket stays in step.
   */
  requestBatch(msgs: Buffer[], operation = "netlink batch", ignore: readonly number[] = []): void {
    let i = 0;
    let firstError: NetlinkError | undefined;
    while (i < msgs.length) {
      const pending = new Set<number>();
      const chunk: Buffer[] = [];
      let bytes = 0;
      while (i < msgs.length && (chunk.length === 0 || bytes + msgs[i]!.length <= BATCH_BYTES)) {
        const m = msgs[i++]!;
        const seq = this.nextSeq();
        stampMessage(m, m.readUInt16LE(6) | NLM_F_REQUEST | NLM_F_ACK, seq);
        pending.add(seq);
        chunk.push(m);
        bytes += m.length;
      }
      libc.send(this.liveFd(), Buffer.concat(chunk));
      while (pending.size > 0) {
        for (const m of this.receive(operation)) {
          if (m.type !== NLMSG_ERROR || !pending.has(m.seq)) continue;
          pending.delete(m.seq);
          const e = decodeError(m.payload, m.flags);
          if (e.errno !== 0 && !ignore.includes(e.errno) && !firstError) {
            firstError = new NetlinkError(operation, e.errno, e.message);
          }
        }
      }
    }
    if (firstError) throw firstError;
  }

  /**
   * An nfnetlink batch (one nftables transaction): `begin`, `msgs` (each acked) and `end`
   * in one datagram; the kernel applies all or none. Throws the first error after every
   * ack is in. The batch must fit in one datagram (the socket's send buffer).
   */
  transaction(begin: Buffer, msgs: Buffer[], end: Buffer, operation = "netlink transaction"): void {
    const pending = new Set<number>();
    stampMessage(begin, NLM_F_REQUEST, this.nextSeq());
    for (const m of msgs) {
      const seq = this.nextSeq();
      stampMessage(m, m.readUInt16LE(6) | NLM_F_REQUEST | NLM_F_ACK, seq);
      pending.add(seq);
    }
    stampMessage(end, NLM_F_REQUEST, this.nextSeq());
    libc.send(this.liveFd(), Buffer.concat([begin, ...msgs, end]));
    let firstError: NetlinkError | undefined;
    while (pending.size > 0) {
      for (const m of this.receive(operation)) {
        if (m.type !== NLMSG_ERROR || !pending.has(m.seq)) continue;
        pending.delete(m.seq);
        const e = decodeError(m.payload, m.flags);
        if (e.errno !== 0) {
          firstError ??= new NetlinkError(operation, e.errno, e.message);
          // An aborted batch acks only up to the failing message.
          pending.clear();
        }
      }
    }
    if (firstError) throw firstError;
  }

  /**
   * A dump: sends `msg` with NLM_F_DUMP and returns every message up to NLMSG_DONE. A dump
   * the kernel marks NLM_F_DUMP_INTR (the table changed while it was being walked) is
   * repeated, up to 5 times, then returned as is.
   */
  dump(msg: Buffer, operation = "netlink dump"): NlMsg[] {
    let result: NlMsg[] = [];
    for (let attempt = 0; attempt < DUMP_RETRIES; attempt++) {
      const { messages, interrupted } = this.dumpOnce(msg, operation);
      result = messages;
      if (!interrupted) break;
    }
    return result;
  }

  private dumpOnce(msg: Buffer, operation: string): { messages: NlMsg[]; interrupted: boolean } {
    const seq = this.nextSeq();
    stampMessage(msg, (msg.readUInt16LE(6) & ~NLM_F_ACK) | NLM_F_REQUEST | NLM_F_DUMP, seq);
    libc.send(this.liveFd(), msg);
    const messages: NlMsg[] = [];
    let interrupted = false;
    for (;;) {
      for (const m of this.receive(operation)) {
        if (m.seq !== seq) continue;
        if (m.flags & NLM_F_DUMP_INTR) interrupted = true;
        if (m.type === NLMSG_DONE) {
          const done = decodeDone(m.payload, m.flags);
          if (done.errno !== 0) throw new NetlinkError(operation, done.errno, done.message);
          return { messages, interrupted };
        }
        if (m.type === NLMSG_ERROR) {
          const e = decodeError(m.payload, m.flags);
          if (e.errno === 0) return { messages, interrupted }; // acked instead of dumped
          throw new NetlinkError(operation, e.errno, e.message);
        }
        if (m.type === NLMSG_OVERRUN) throw new NetlinkError(operation, libc.ENOBUFS, "overrun");
        if (m.type === NLMSG_NOOP) continue;
        messages.push(m);
      }
    }
  }
}
